//! Node-wide settings of the shim, from its environment (containerd passes its own
//! environment to the shims it starts).

use std::path::PathBuf;

/// Where compiled artifacts are kept on this node.
pub const CACHE_DIR_ENV: &str = "WASM_SHIM_CACHE_DIR";
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/containerd-shim-wasm/cache";
/// Log level of the shim and its instance processes (`error` .. `trace`).
pub const LOG_LEVEL_ENV: &str = "WASM_SHIM_LOG";

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub cache_dir: PathBuf,
    pub log_level: log::LevelFilter,
}

impl NodeConfig {
    pub fn from_env() -> Self {
        NodeConfig {
            cache_dir: std::env::var_os(CACHE_DIR_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR)),
            log_level: std::env::var(LOG_LEVEL_ENV)
                .ok()
                .and_then(|l| l.parse().ok())
                .unwrap_or(log::LevelFilter::Info),
        }
    }
}
