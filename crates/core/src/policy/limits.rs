//! Resource limits of the guest: linear memory (and tables), wall time, open files.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Size of a WebAssembly page.
pub const WASM_PAGE: u64 = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// The container's memory limit in bytes, as the spec (or the node default) gives it.
    pub memory_limit: Option<u64>,
    /// Linear memory the guest may hold, summed over all its memories and tables: the limit
    /// minus the runtime allowance, in bytes. Growth past it fails (`memory.grow` = -1).
    pub guest_memory: Option<u64>,
    /// Wall time from Start after which the guest is stopped.
    pub time_limit: Option<Duration>,
    /// File descriptors the instance process may hold (`RLIMIT_NOFILE`).
    pub max_open_files: u64,
}

impl Limits {
    /// `guest_memory` in whole pages.
    pub fn guest_memory_pages(&self) -> Option<u64> {
        self.guest_memory.map(|b| b / WASM_PAGE)
    }
}
