//! The guest's linear memory against the container's limit.
//!
//! WasmEdge's `max_memory_pages` makes `memory.grow` past the limit return -1, but a module that
//! declares more *initial* memory than the limit is silently clamped to it rather than refused,
//! and then fails in confusing ways. So the declared minimums, read from the binary by
//! [`crate::inspect`], are checked here first.

use anyhow::{bail, Result};
use wasmedge_sdk::config::RuntimeConfigOptions;

use crate::inspect::{DeclaredMemory, WASM_PAGE};
/// Pages a 32-bit memory can have (4 GiB), also WasmEdge's default `max_memory_pages`.
const MAX_PAGES_32: u64 = 65536;

/// WasmEdge's runtime options for a guest limited to `limit_pages` pages of linear memory
/// (the policy's `limits.guest_memory_pages()`; `None`: only WebAssembly's own 4 GiB), after
/// checking that what the module declares fits. Tables are not counted (Wasmtime's limiter
/// counts them): WasmEdge has no limit for them.
pub fn runtime_options(
    limit_pages: Option<u64>,
    declared: &[DeclaredMemory],
) -> Result<RuntimeConfigOptions> {
    let Some(limit) = limit_pages else {
        return Ok(RuntimeConfigOptions::new().max_memory_pages(MAX_PAGES_32 as u32));
    };
    let limit_bytes = limit.saturating_mul(WASM_PAGE);
    let total: u64 = declared.iter().map(|m| m.initial_bytes).sum();
    if total > limit_bytes {
        bail!(
            "the module declares {} of initial linear memory, more than the container's limit of {} ({limit} pages)",
            mib(total),
            mib(limit_bytes)
        );
    }
    // WasmEdge applies the limit to each memory; without multi-memory there is at most one.
    let pages = effective_pages(Some(limit)) as u32;
    Ok(RuntimeConfigOptions::new().max_memory_pages(pages))
}

/// The page limit WasmEdge actually applies for a policy limit of `limit_pages`.
pub fn effective_pages(limit_pages: Option<u64>) -> u64 {
    limit_pages.map_or(MAX_PAGES_32, |l| l.min(MAX_PAGES_32))
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mem(pages: u64) -> DeclaredMemory {
        DeclaredMemory {
            imported: false,
            initial_bytes: pages * WASM_PAGE,
        }
    }

    #[test]
    fn declared_memory_over_the_limit_is_refused() {
        let mems = [mem(2), mem(3)];
        assert!(runtime_options(Some(5), &mems).is_ok());
        let err = runtime_options(Some(4), &mems).unwrap_err().to_string();
        assert!(
            err.contains("0.3 MiB") && err.contains("(4 pages)"),
            "{err}"
        );
        assert!(runtime_options(None, &mems).is_ok());
        assert!(runtime_options(Some(0), &[]).is_ok());
    }
}
