//! The sandbox policy applied to a WASI context: exactly the policy's args, env, preopens
//! the network allowlist and the container's stdio (the process's fds 0-2). Nothing is
//! inherited from the host.

use wasm_shim_core::{Access, SandboxPolicy};
use wasmtime::error::Context;
use wasmtime_wasi::{FsPerms, WasiCtxBuilder};

pub fn builder(policy: &SandboxPolicy) -> wasmtime::Result<WasiCtxBuilder> {
    let mut b = WasiCtxBuilder::new();
    b.args(&policy.args)
        .envs(&policy.env)
        .initial_cwd(&policy.cwd)
        .inherit_stdio()
        // The instance process is dedicated to this guest: blocking its thread is fine.
        .allow_blocking_current_thread(true);
    crate::network::apply(&mut b, &policy.network);
    for p in &policy.preopens {
        let perms = match p.access {
            Access::ReadOnly => FsPerms::ReadOnly,
            Access::ReadWrite => FsPerms::ReadWrite,
        };
        b.preopened_dir(&p.host_path, &p.guest_path, perms)
            .with_context(|| format!("preopening {} at {}", p.host_path.display(), p.guest_path))?;
    }
    Ok(b)
}

/// A guest error as the container's exit: WASI exit codes pass through, traps are reported
/// (with the memory limit when a refused growth is the likely cause).
pub fn exit_of(
    err: wasmtime::Error,
    limiter: &crate::limits::GuestLimiter,
) -> wasm_shim_core::GuestExit {
    if let Some(exit) = err.downcast_ref::<wasmtime_wasi::I32Exit>() {
        return wasm_shim_core::GuestExit::Exited(exit.0);
    }
    let message = describe_trap(&err);
    match limiter.explain() {
        Some(why) => wasm_shim_core::GuestExit::MemoryLimit(format!("{message}\n{why}")),
        None => wasm_shim_core::GuestExit::Trapped(message),
    }
}

fn describe_trap(err: &wasmtime::Error) -> String {
    let cause = err.root_cause().to_string();
    let backtrace = err
        .downcast_ref::<wasmtime::WasmBacktrace>()
        .map(|bt| format!("\n{bt}"))
        .unwrap_or_default();
    // Wasmtime's trap messages already read "wasm trap: ...".
    format!("{cause}{backtrace}")
}
