//! The store data of one request's instance: WASI under the container's policy, `wasi:http`
//! with the shim's outgoing requests, and the policy's memory limit.

use std::sync::Arc;
use std::time::Instant;

use wasm_shim_core::policy::HttpServe;
use wasm_shim_core::SandboxPolicy;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use super::outgoing::Outgoing;
use crate::limits::GuestLimiter;

pub struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    outgoing: Outgoing,
    pub limiter: GuestLimiter,
}

impl Host {
    /// The WASI context a command gets from the policy (args, exactly `process.env`,
    /// preopens, the socket allowlist, the container's stdio), for a request that must be
    /// answered by `deadline`.
    pub fn new(
        policy: &SandboxPolicy,
        serve: &HttpServe,
        network: &Arc<wasm_shim_core::policy::NetworkPolicy>,
        deadline: Instant,
    ) -> wasmtime::Result<Self> {
        let mut wasi = crate::wasi_ctx::builder(policy)?;
        // Many requests share each thread: file I/O goes to tokio's blocking pool.
        wasi.allow_blocking_current_thread(false);
        Ok(Host {
            wasi: wasi.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            outgoing: Outgoing::new(network.clone(), serve.max_outgoing, deadline),
            limiter: GuestLimiter::new(&policy.limits),
        })
    }
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for Host {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outgoing,
        }
    }
}
