//! Sandbox profiles: the node operator's named, reviewed WASI policies.
//!
//! A profile is a TOML file on the node (`/etc/containerd-shim-wasm/profiles/<name>.toml`,
//! the folder overridable by `WASM_SHIM_PROFILE_DIR`) that says the most a container may get.
//! The spec and the annotations then narrow it, never widen it ([`narrow`]). Which profile
//! applies ([`choose`]):
//! 1. the runtime class's: the containerd runtime entry's options name a file (`ConfigPath`);
//! 2. the annotation `wasm-shim/profile: NAME`, only if at least as strict as the runtime
//!    class's (or else the node default's);
//! 3. the node default, `WASM_SHIM_DEFAULT_PROFILE=NAME`.
//!
//! No profile at all: the spec and annotations alone decide, as without this module.

mod narrow;
mod parse;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::annotations;
use super::network::NetRule;
use crate::config::NodeConfig;
use crate::error::{Error, Result};
use crate::runtime_options::RuntimeOptions;

pub use narrow::{at_least_as_strict, narrow, Narrowed};

/// The most a container under this profile may get. A list left out grants nothing; a
/// number left out sets no bound of the profile's own (the node's defaults still apply).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    /// The file's name without `.toml`.
    pub name: String,
    /// Linear memory, in 64 KiB pages.
    pub max_memory_pages: Option<u64>,
    pub execution_timeout_ms: Option<u64>,
    /// Outbound destinations, as in `wasm-shim/net-connect`.
    pub allowed_hosts: Vec<NetRule>,
    /// Ports the guest (or the shim's HTTP server for it) may listen on.
    pub allowed_listen: Vec<u16>,
    /// Names of `process.env` entries the guest sees; `PREFIX*` allows a prefix.
    pub allowed_env_vars: Vec<String>,
    /// Mount destinations (and everything below them) the container may have.
    pub allowed_dirs: Vec<AllowedDir>,
    pub max_network_requests: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowedDir {
    pub guest_path: String,
    /// Preopened read-only whatever the mount says.
    pub readonly: bool,
}

/// A profile and what chose it, for the log and the `policy` command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Chosen {
    pub profile: Profile,
    pub chosen_by: String,
}

impl Profile {
    /// Read and check a profile file; errors name the file and the key.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::Profile {
            file: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        parse::parse(path, &text)
    }

    /// The profile `name` of the node's profile folder.
    pub fn named(name: &str, node: &NodeConfig) -> Result<Self> {
        Self::load(&path_of(name, &node.profile_dir)?)
    }

    fn env_allowed(&self, name: &str) -> bool {
        self.allowed_env_vars.iter().any(|p| glob_covers(p, name))
    }
}

/// `pattern` (`NAME` or `PREFIX*`) allows every name `name` (itself a name or a pattern)
/// stands for.
fn glob_covers(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some(prefix) => name.starts_with(prefix),
        None => pattern == name,
    }
}

/// A profile name is a file name in the profile folder, nothing that could leave it.
pub fn path_of(name: &str, dir: &Path) -> Result<PathBuf> {
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(Error::Profile {
            file: dir.to_path_buf(),
            reason: format!("{name:?} is not a profile name (letters, digits, '-', '_', '.')"),
        });
    }
    Ok(dir.join(format!("{name}.toml")))
}

/// The profile that applies to a container, if any (see the module's documentation).
pub fn choose(
    annotations: &HashMap<String, String>,
    options: &RuntimeOptions,
    node: &NodeConfig,
) -> Result<Option<Chosen>> {
    let baseline = match (&options.config_path, &node.default_profile) {
        (Some(path), _) => Some(Chosen {
            profile: Profile::load(path)?,
            chosen_by: format!("runtime class (ConfigPath {})", path.display()),
        }),
        (None, Some(name)) => Some(Chosen {
            profile: Profile::named(name, node)?,
            chosen_by: format!(
                "node default ({}={name})",
                crate::config::DEFAULT_PROFILE_ENV
            ),
        }),
        (None, None) => None,
    };
    let Some(name) = annotations.get(annotations::PROFILE) else {
        return Ok(baseline);
    };
    let asked = Profile::named(name.trim(), node).map_err(|e| {
        Error::spec(
            format!("annotations[{}]", annotations::PROFILE),
            e.to_string(),
        )
    })?;
    if let Some(base) = &baseline {
        at_least_as_strict(&asked, &base.profile).map_err(|field| {
            Error::Denied(format!(
                "permission denied: profile {} (annotation {}) is looser than profile {} of the {} in {field}",
                asked.name,
                annotations::PROFILE,
                base.profile.name,
                base.chosen_by
            ))
        })?;
    }
    Ok(Some(Chosen {
        profile: asked,
        chosen_by: format!("annotation {}", annotations::PROFILE),
    }))
}

#[cfg(test)]
mod tests;
