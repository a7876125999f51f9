//! The module source: which bytes a container runs, found the way a guest would find them.
//!
//! The entrypoint is a guest path, so it is resolved through the policy's preopens and opened
//! with `RESOLVE_IN_ROOT`: a symlink in the image cannot make the shim read a host file.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::policy::SandboxPolicy;

/// What kind of Wasm binary this is, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModuleKind {
    /// A core module (WASI preview 1 command).
    Module,
    /// A component (WASI preview 2 command).
    Component,
}

/// The bytes of the module a container runs, with their digest.
#[derive(Debug)]
pub struct ModuleSource {
    /// The guest path it was found at, for messages.
    pub guest_path: String,
    pub bytes: Vec<u8>,
    pub kind: ModuleKind,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
}

/// The reason of an [`Error::Entrypoint`] when the rootfs has no file there: the module may
/// then be a layer of the image (see [`crate::image_layers`]).
pub const NO_SUCH_FILE: &str = "no such file in the container";

const WASM_MAGIC: &[u8; 4] = b"\0asm";

impl ModuleSource {
    /// Read the module named by `argv[0]` of the policy.
    pub fn from_entrypoint(policy: &SandboxPolicy) -> Result<Self> {
        let guest_path = resolve_guest_path(policy)?;
        let (root, inner) = policy
            .preopens
            .iter()
            .filter_map(|p| strip_guest_prefix(&guest_path, &p.guest_path).map(|inner| (p, inner)))
            .max_by_key(|(p, _)| p.guest_path.len())
            .ok_or_else(|| Error::Entrypoint {
                path: guest_path.clone(),
                reason: "not inside the rootfs or any mount".into(),
            })?;
        let file = open_in_root(&root.host_path, &inner).map_err(|errno| Error::Entrypoint {
            path: guest_path.clone(),
            reason: match errno {
                nix::Error::ENOENT => NO_SUCH_FILE.to_string(),
                other => other.desc().to_string(),
            },
        })?;
        let mut bytes = Vec::new();
        File::from(file)
            .read_to_end(&mut bytes)
            .io_context(|| format!("reading {guest_path}"))?;
        Self::from_bytes(guest_path, bytes)
    }

    /// Like [`Self::from_bytes`] with a `sha256:<hex>` digest the caller already knows to be
    /// the bytes' (a content-addressed store verified it), so they are not hashed again.
    pub fn with_digest(guest_path: String, bytes: Vec<u8>, digest: String) -> Result<Self> {
        let kind = classify(&bytes).map_err(|reason| Error::NotWasm {
            path: guest_path.clone(),
            reason,
        })?;
        Ok(ModuleSource {
            guest_path,
            bytes,
            kind,
            digest,
        })
    }

    /// Classify bytes read from anywhere (a file, a content-store layer).
    pub fn from_bytes(guest_path: String, bytes: Vec<u8>) -> Result<Self> {
        let kind = classify(&bytes).map_err(|reason| Error::NotWasm {
            path: guest_path.clone(),
            reason,
        })?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        Ok(ModuleSource {
            guest_path,
            bytes,
            kind,
            digest,
        })
    }
}

/// Module or component, from the 8-byte preamble; anything else is not Wasm.
pub fn classify(bytes: &[u8]) -> Result<ModuleKind, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        return Err("missing the \\0asm magic number".into());
    }
    // Core modules have version 1 and layer 0; components have layer 1.
    match (
        u16::from_le_bytes([bytes[4], bytes[5]]),
        u16::from_le_bytes([bytes[6], bytes[7]]),
    ) {
        (1, 0) => Ok(ModuleKind::Module),
        (_, 1) => Ok(ModuleKind::Component),
        (version, layer) => Err(format!(
            "unsupported binary version {version} (layer {layer})"
        )),
    }
}

/// `argv[0]` as an absolute guest path: as given when it has a `/`, else looked up in the
/// spec's `PATH`, as a shell would, and finally in the working directory.
fn resolve_guest_path(policy: &SandboxPolicy) -> Result<String> {
    let arg0 = &policy.args[0];
    if arg0.starts_with('/') {
        return Ok(arg0.clone());
    }
    if arg0.contains('/') {
        return Ok(join_guest(&policy.cwd, arg0));
    }
    let path_var = policy
        .env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    for dir in path_var.split(':').filter(|d| d.starts_with('/')) {
        let candidate = join_guest(dir, arg0);
        if guest_file_exists(policy, &candidate) {
            return Ok(candidate);
        }
    }
    Ok(join_guest(&policy.cwd, arg0))
}

fn guest_file_exists(policy: &SandboxPolicy, guest_path: &str) -> bool {
    policy
        .preopens
        .iter()
        .filter_map(|p| strip_guest_prefix(guest_path, &p.guest_path).map(|inner| (p, inner)))
        .max_by_key(|(p, _)| p.guest_path.len())
        .is_some_and(|(p, inner)| open_in_root(&p.host_path, &inner).is_ok())
}

fn join_guest(dir: &str, rel: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), rel)
}

/// The rest of `path` below the preopen `prefix`, if `path` is inside it.
fn strip_guest_prefix(path: &str, prefix: &str) -> Option<PathBuf> {
    let rest = if prefix == "/" {
        path.strip_prefix('/')?
    } else {
        let rest = path.strip_prefix(prefix)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        rest.trim_start_matches('/')
    };
    Some(PathBuf::from(rest))
}

/// Open `inner` below `root` as if `root` were `/`: `..` and symlinks cannot leave it.
fn open_in_root(root: &Path, inner: &Path) -> nix::Result<OwnedFd> {
    let dir = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let file = openat2(dir.as_fd(), inner, how)?;
    let is_file = nix::sys::stat::fstat(file.as_fd())
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
        .unwrap_or(false);
    if is_file {
        Ok(file)
    } else {
        Err(nix::Error::EISDIR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Access, Identity, Limits, NetworkPolicy, Preopen};

    fn policy(root: &Path, arg0: &str, env: &[(&str, &str)]) -> SandboxPolicy {
        SandboxPolicy {
            args: vec![arg0.into()],
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd: "/app".into(),
            preopens: vec![Preopen {
                guest_path: "/".into(),
                host_path: root.into(),
                access: Access::ReadOnly,
            }],
            scratch: Vec::new(),
            file_binds: Vec::new(),
            limits: Limits {
                memory_limit: None,
                guest_memory: None,
                time_limit: None,
                max_open_files: 64,
            },
            network: NetworkPolicy::default(),
            identity: Identity::default(),
        }
    }

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";
    const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn classifies_modules_components_and_garbage() {
        assert_eq!(classify(MODULE), Ok(ModuleKind::Module));
        assert_eq!(classify(COMPONENT), Ok(ModuleKind::Component));
        assert!(classify(b"").unwrap_err().contains("empty"));
        assert!(classify(b"#!/bin/sh\necho").unwrap_err().contains("magic"));
        assert!(classify(b"\0asm\x02\0\0\0")
            .unwrap_err()
            .contains("version"));
    }

    #[test]
    fn entrypoint_resolves_absolute_relative_and_path() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("app")).unwrap();
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        std::fs::write(root.path().join("app/m.wasm"), MODULE).unwrap();
        std::fs::write(root.path().join("bin/tool.wasm"), COMPONENT).unwrap();

        let src = ModuleSource::from_entrypoint(&policy(root.path(), "/app/m.wasm", &[])).unwrap();
        assert_eq!(
            (src.guest_path.as_str(), src.kind),
            ("/app/m.wasm", ModuleKind::Module)
        );
        let src = ModuleSource::from_entrypoint(&policy(root.path(), "./m.wasm", &[])).unwrap();
        assert_eq!(src.guest_path, "/app/./m.wasm");
        let src = ModuleSource::from_entrypoint(&policy(
            root.path(),
            "tool.wasm",
            &[("PATH", "/usr/bin:/bin")],
        ))
        .unwrap();
        assert_eq!(
            (src.guest_path.as_str(), src.kind),
            ("/bin/tool.wasm", ModuleKind::Component)
        );
        assert_eq!(
            src.digest,
            format!("sha256:{}", hex::encode(Sha256::digest(COMPONENT)))
        );
    }

    #[test]
    fn symlinks_and_dotdot_stay_inside_the_rootfs() {
        let host = tempfile::tempdir().unwrap();
        let root = host.path().join("rootfs");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(host.path().join("outside.wasm"), MODULE).unwrap();
        std::os::unix::fs::symlink(host.path().join("outside.wasm"), root.join("abs.wasm"))
            .unwrap();
        std::os::unix::fs::symlink("../outside.wasm", root.join("rel.wasm")).unwrap();
        for arg0 in ["/abs.wasm", "/rel.wasm", "/../outside.wasm"] {
            let err = ModuleSource::from_entrypoint(&policy(&root, arg0, &[])).unwrap_err();
            assert!(matches!(err, Error::Entrypoint { .. }), "{arg0}: {err}");
        }
    }

    #[test]
    fn missing_directory_and_non_wasm_entrypoints_are_clear_errors() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("dir.wasm")).unwrap();
        std::fs::write(root.path().join("empty.wasm"), b"").unwrap();
        let err =
            ModuleSource::from_entrypoint(&policy(root.path(), "/nope.wasm", &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "entrypoint /nope.wasm: no such file in the container"
        );
        let err =
            ModuleSource::from_entrypoint(&policy(root.path(), "/dir.wasm", &[])).unwrap_err();
        assert!(matches!(err, Error::Entrypoint { .. }), "{err}");
        let err =
            ModuleSource::from_entrypoint(&policy(root.path(), "/empty.wasm", &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/empty.wasm is not a WebAssembly module: the file is empty"
        );
    }
}
