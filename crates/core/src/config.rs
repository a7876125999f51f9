//! Node-wide settings of the shim, from its environment (containerd passes its own
//! environment to the shims it starts).

use std::path::PathBuf;
use std::time::Duration;

/// Where compiled artifacts are kept on this node.
pub const CACHE_DIR_ENV: &str = "WASM_SHIM_CACHE_DIR";
pub const DEFAULT_CACHE_DIR: &str = "/var/lib/containerd-shim-wasm/cache";
/// Bytes of compiled artifacts the node cache may hold before evicting the least recently used.
pub const CACHE_MAX_BYTES_ENV: &str = "WASM_SHIM_CACHE_MAX_BYTES";
pub const DEFAULT_CACHE_MAX_BYTES: u64 = 2 << 30;
/// Log level of the shim and its instance processes (`error` .. `trace`).
pub const LOG_LEVEL_ENV: &str = "WASM_SHIM_LOG";
/// Memory limit in bytes for containers whose spec sets none (`0`: unlimited).
pub const MEMORY_LIMIT_ENV: &str = "WASM_SHIM_MEMORY_LIMIT";
pub const DEFAULT_MEMORY_LIMIT: u64 = 1 << 30;
/// Wall-time limit in milliseconds for containers without the annotation (unset: none).
pub const TIME_LIMIT_ENV: &str = "WASM_SHIM_TIME_LIMIT_MS";
/// Wall-time limit in milliseconds of one served HTTP request without the annotation.
pub const REQUEST_TIME_LIMIT_ENV: &str = "WASM_SHIM_REQUEST_TIME_LIMIT_MS";
/// Folder of the node's sandbox profiles (`<name>.toml`).
pub const PROFILE_DIR_ENV: &str = "WASM_SHIM_PROFILE_DIR";
pub const DEFAULT_PROFILE_DIR: &str = "/etc/containerd-shim-wasm/profiles";
/// Profile of containers whose runtime class names none (unset: no profile).
pub const DEFAULT_PROFILE_ENV: &str = "WASM_SHIM_DEFAULT_PROFILE";
/// How many shim servers a node's Wasm pods share, per runtime and containerd namespace
/// (default 1: one shim per node). A pod's containers always share one.
pub const SHIMS_PER_NODE_ENV: &str = "WASM_SHIM_SHIMS_PER_NODE";
/// Memory of a container's limit kept for the runtime itself (engine, WASI, stacks); the
/// guest's linear memory gets the rest.
pub const RUNTIME_ALLOWANCE: u64 = 8 << 20;
/// Size of a tmpfs mount that does not say (`size=`).
pub const DEFAULT_SCRATCH_SIZE: u64 = 64 << 20;
/// File descriptors an instance process may hold.
pub const MAX_OPEN_FILES: u64 = 1024;

#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub cache_dir: PathBuf,
    pub cache_max_bytes: u64,
    pub log_level: log::LevelFilter,
    pub default_memory_limit: Option<u64>,
    pub default_time_limit: Option<Duration>,
    pub runtime_allowance: u64,
    pub scratch_size: u64,
    pub max_open_files: u64,
    pub default_request_time_limit: Option<Duration>,
    pub profile_dir: PathBuf,
    pub default_profile: Option<String>,
    pub shims_per_node: u64,
    /// The node settings instance processes see (see `keep_for_instances`).
    pub instance_env: Vec<(String, String)>,
}

impl NodeConfig {
    pub fn from_env() -> Self {
        NodeConfig {
            cache_dir: std::env::var_os(CACHE_DIR_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_CACHE_DIR)),
            cache_max_bytes: env_u64(CACHE_MAX_BYTES_ENV).unwrap_or(DEFAULT_CACHE_MAX_BYTES),
            log_level: std::env::var(LOG_LEVEL_ENV)
                .ok()
                .and_then(|l| l.parse().ok())
                .unwrap_or(log::LevelFilter::Info),
            default_memory_limit: match env_u64(MEMORY_LIMIT_ENV) {
                Some(0) => None,
                Some(n) => Some(n),
                None => Some(DEFAULT_MEMORY_LIMIT),
            },
            default_time_limit: env_u64(TIME_LIMIT_ENV)
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
            runtime_allowance: RUNTIME_ALLOWANCE,
            scratch_size: DEFAULT_SCRATCH_SIZE,
            max_open_files: MAX_OPEN_FILES,
            default_request_time_limit: env_u64(REQUEST_TIME_LIMIT_ENV)
                .filter(|ms| *ms > 0)
                .map(Duration::from_millis),
            profile_dir: std::env::var_os(PROFILE_DIR_ENV)
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| PathBuf::from(DEFAULT_PROFILE_DIR)),
            default_profile: std::env::var(DEFAULT_PROFILE_ENV)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(|v| v.trim().to_string()),
            shims_per_node: env_u64(SHIMS_PER_NODE_ENV).unwrap_or(1).max(1),
            instance_env: Vec::new(),
        }
    }

    /// Keep the node's `WASM_SHIM_*` settings, `RUST_LOG` and the engine's own variables
    /// for instance processes, which otherwise start with an empty environment.
    pub fn keep_for_instances(mut self, engine_vars: &[&str]) -> Self {
        self.instance_env = std::env::vars()
            .filter(|(k, _)| {
                k.starts_with("WASM_SHIM_") || k == "RUST_LOG" || engine_vars.contains(&k.as_str())
            })
            .collect();
        self
    }

    /// The built-in defaults, whatever the environment says.
    #[cfg(test)]
    pub fn for_tests() -> Self {
        NodeConfig {
            cache_dir: PathBuf::from(DEFAULT_CACHE_DIR),
            cache_max_bytes: DEFAULT_CACHE_MAX_BYTES,
            log_level: log::LevelFilter::Info,
            default_memory_limit: Some(DEFAULT_MEMORY_LIMIT),
            default_time_limit: None,
            runtime_allowance: RUNTIME_ALLOWANCE,
            scratch_size: DEFAULT_SCRATCH_SIZE,
            max_open_files: MAX_OPEN_FILES,
            default_request_time_limit: None,
            profile_dir: PathBuf::from(DEFAULT_PROFILE_DIR),
            default_profile: None,
            shims_per_node: 1,
            instance_env: Vec::new(),
        }
    }
}

/// A numeric setting; a malformed value is reported and ignored rather than guessed at.
fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => {
            log::warn!("{name}={value:?} is not a number; using the default");
            None
        }
    }
}
