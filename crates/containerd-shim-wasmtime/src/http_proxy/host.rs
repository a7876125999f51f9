//! The store data of one request's instance: WASI under the container's policy, `wasi:http`,
//! and the policy's memory limit.

use std::future::Future;

use wasm_shim_core::SandboxPolicy;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks,
    WasiHttpView,
};

use crate::limits::GuestLimiter;

pub struct Host {
    wasi: WasiCtx,
    table: ResourceTable,
    http: WasiHttpCtx,
    hooks: RefuseOutgoing,
    pub limiter: GuestLimiter,
}

impl Host {
    /// The same WASI context a command gets from the policy: args, exactly `process.env`,
    /// preopens, the socket allowlist and the container's stdio.
    pub fn new(policy: &SandboxPolicy) -> wasmtime::Result<Self> {
        Ok(Host {
            wasi: crate::wasi_ctx::builder(policy)?.build(),
            table: ResourceTable::new(),
            http: WasiHttpCtx::new(),
            hooks: RefuseOutgoing,
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
            hooks: &mut self.hooks,
        }
    }
}

/// `wasi:http/outgoing-handler` answers every request `HTTP-request-denied`: the network
/// allowlist (`wasm-shim/net-connect`) is not applied to outgoing HTTP yet, and default deny
/// means no way out rather than an unchecked one. The guest's WASI sockets keep their allowlist.
struct RefuseOutgoing;

type SendResult = wasmtime_wasi_http::Result<(
    http::Response<WasiBody>,
    Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
)>;

impl WasiHttpHooks for RefuseOutgoing {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Box<dyn Future<Output = SendResult> + Send> {
        log::info!(
            "outgoing HTTP request {} {} refused: not supported for served components",
            request.method(),
            request.uri()
        );
        Box::new(async { Err(HttpError::HttpRequestDenied) })
    }
}
