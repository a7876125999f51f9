//! WasmEdge plugins (wasi_nn, wasi_crypto, wasi_logging, ...), when the node asks for them.
//!
//! Node settings, from the shim's environment like the core's `NodeConfig`:
//! - `WASM_SHIM_WASMEDGE_PLUGINS=1` loads the plugins WasmEdge finds (`WASMEDGE_PLUGIN_PATH`,
//!   then its default folders) and lets guests import their modules. Off by default: a plugin
//!   is native code running with the shim's privileges, outside the WASI sandbox.
//! - `WASMEDGE_PLUGIN_PATH`: where the plugins are, as for the `wasmedge` CLI.
//!
//! The core passes the node's `WASM_SHIM_*` settings and the engine's `NODE_ENV` variables
//! (see `engine.rs`) from the shim's environment to the instance processes.
//!
//! Container settings: entries of the spec's `process.env` named `WASMEDGE_*` are settings for
//! the plugin host, not for the guest. They are removed from the guest's environment and, when
//! plugins are on, set in the instance process's environment before the plugins are loaded
//! (plugins read them with `getenv`). That process is dedicated to this container, and its
//! guest's thread is the only one running at that point (the main thread waits for it), so
//! setting its environment is safe. The spec cannot choose
//! *which* plugins load: its `WASMEDGE_PLUGIN_PATH` is ignored, the node's applies.

use std::collections::BTreeSet;
use std::ffi::{OsStr, OsString};

use anyhow::{bail, Result};
use wasmedge_sdk::plugin::PluginManager;
use wasmedge_sdk::Instance;

/// Node switch: load WasmEdge plugins.
pub const PLUGINS_ENV: &str = "WASM_SHIM_WASMEDGE_PLUGINS";
/// Where WasmEdge looks for plugins first.
pub const PLUGIN_PATH_ENV: &str = "WASMEDGE_PLUGIN_PATH";
/// Spec environment entries with this prefix go to the plugin host, not the guest.
pub const HOST_ENV_PREFIX: &str = "WASMEDGE_";

/// The node's plugin settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NodePlugins {
    pub enabled: bool,
    pub plugin_path: Option<OsString>,
}

impl NodePlugins {
    /// From the instance process's environment (see the module comment).
    pub fn from_env() -> Self {
        Self::from_values(
            std::env::var_os(PLUGINS_ENV),
            std::env::var_os(PLUGIN_PATH_ENV),
        )
    }

    fn from_values(switch: Option<OsString>, plugin_path: Option<OsString>) -> Self {
        let enabled = switch
            .as_deref()
            .and_then(OsStr::to_str)
            .is_some_and(|v| matches!(v.trim(), "1" | "true" | "yes" | "on"));
        NodePlugins {
            enabled,
            plugin_path: plugin_path.filter(|p| !p.is_empty()),
        }
    }
}

/// Environment entries, `(name, value)`, in spec order.
pub type Env = Vec<(String, String)>;

/// The spec's environment split into the guest's and the plugin host's (`WASMEDGE_*`).
pub fn split_env(env: &[(String, String)]) -> (Env, Env) {
    env.iter()
        .cloned()
        .partition(|(k, _)| !k.starts_with(HOST_ENV_PREFIX))
}

/// The plugin modules this guest imports, to register beside WASI. `imported` are the module
/// names the guest imports other than WASI; when there are any (and plugins are on), the
/// container's `WASMEDGE_*` settings are applied and the node's plugins loaded into this
/// (instance) process. A module importing something no plugin provides is refused here, with
/// a clearer message than WasmEdge's unknown-import error.
pub fn instances_for(
    node: &NodePlugins,
    host_env: &[(String, String)],
    imported: &BTreeSet<String>,
) -> Result<Vec<Instance>> {
    if !needs_plugins(node, host_env, imported)? {
        return Ok(Vec::new());
    }

    // Only the guest's thread runs in the instance process now (the main thread waits for it,
    // and the core starts no other before the task's Start), so setting its environment is
    // safe.
    for (key, value) in host_env {
        if key == PLUGIN_PATH_ENV {
            log::warn!(
                "ignoring {PLUGIN_PATH_ENV} from the spec: the node decides which plugins load"
            );
            continue;
        }
        std::env::set_var(key, value);
    }
    match &node.plugin_path {
        Some(path) => std::env::set_var(PLUGIN_PATH_ENV, path),
        None => std::env::remove_var(PLUGIN_PATH_ENV),
    }
    // `None`: WASMEDGE_PLUGIN_PATH, then WasmEdge's default plugin folders.
    PluginManager::load(None)?;

    let mut instances = Vec::new();
    let mut provided = BTreeSet::new();
    for plugin_name in PluginManager::names() {
        let plugin = PluginManager::find(&plugin_name)?;
        for module in plugin.mod_names() {
            if imported.contains(&module) && provided.insert(module.clone()) {
                log::debug!("plugin {plugin_name} provides module {module}");
                instances.push(plugin.mod_instance(&module)?);
            }
        }
    }
    if let Some(missing) = imported.difference(&provided).next() {
        bail!(
            "the module imports `{missing}`, which is neither WASI preview 1 nor a module of a loaded WasmEdge plugin (loaded: {})",
            describe_loaded()
        );
    }
    Ok(instances)
}

/// Whether plugins must be loaded for `imported` (the non-WASI modules the guest imports):
/// no for none, an error if the node has them off.
fn needs_plugins(
    node: &NodePlugins,
    host_env: &[(String, String)],
    imported: &BTreeSet<String>,
) -> Result<bool> {
    let Some(first) = imported.iter().next() else {
        // Nothing to provide: no plugin is loaded into this process at all.
        if !host_env.is_empty() {
            log::debug!("the module imports no plugin module; its WASMEDGE_* settings are unused");
        }
        return Ok(false);
    };
    if !node.enabled {
        bail!(
            "unknown import: the module imports `{first}`, which is not WASI preview 1; WasmEdge plugins, which could provide it, are off on this node (set {PLUGINS_ENV}=1 in containerd's environment)"
        );
    }
    Ok(true)
}

fn describe_loaded() -> String {
    let names = PluginManager::names();
    if names.is_empty() {
        "none".to_string()
    } else {
        names.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(k: &str, v: &str) -> (String, String) {
        (k.to_string(), v.to_string())
    }

    #[test]
    fn wasmedge_settings_are_taken_out_of_the_guest_env() {
        let env = [
            kv("PATH", "/bin"),
            kv("WASMEDGE_WASINN_PRELOAD", "default:GGML:AUTO:/m.gguf"),
            kv("WASMEDGEX", "guest"),
            kv("HOME", "/"),
        ];
        let (guest, host) = split_env(&env);
        assert_eq!(
            guest,
            [
                kv("PATH", "/bin"),
                kv("WASMEDGEX", "guest"),
                kv("HOME", "/")
            ]
        );
        assert_eq!(
            host,
            [kv("WASMEDGE_WASINN_PRELOAD", "default:GGML:AUTO:/m.gguf")]
        );
    }

    #[test]
    fn plugins_are_needed_only_for_non_wasi_imports() {
        let on = NodePlugins {
            enabled: true,
            plugin_path: None,
        };
        let host_env = [kv("WASMEDGE_X", "1")];
        // No plugin module imported: nothing is loaded, whatever the node says.
        assert!(!needs_plugins(&on, &host_env, &BTreeSet::new()).unwrap());
        let imported = BTreeSet::from(["wasi_ephemeral_nn".to_string()]);
        assert!(needs_plugins(&on, &host_env, &imported).unwrap());
        let err = needs_plugins(&NodePlugins::default(), &host_env, &imported)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("`wasi_ephemeral_nn`") && err.contains(PLUGINS_ENV),
            "{err}"
        );
    }

    #[test]
    fn node_switch_and_path() {
        let on = |v: &str| NodePlugins::from_values(Some(v.into()), None).enabled;
        assert!(on("1") && on("true") && on(" yes "));
        assert!(!on("0") && !on("") && !on("no"));
        assert_eq!(NodePlugins::from_values(None, None), NodePlugins::default());
        let p = NodePlugins::from_values(Some("1".into()), Some("/opt/wasmedge/plugin".into()));
        assert_eq!(
            p.plugin_path.as_deref(),
            Some(OsStr::new("/opt/wasmedge/plugin"))
        );
        assert_eq!(
            NodePlugins::from_values(None, Some("".into())).plugin_path,
            None
        );
    }
}
