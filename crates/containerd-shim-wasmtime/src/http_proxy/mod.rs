//! Serving `wasi:http/proxy` components (annotation `wasm-shim/http-proxy-port`): HTTP/1.1 by
//! hyper on the listener the core bound, one fresh instance of the component per request.
//!
//! The server runs on a single-threaded tokio runtime in the instance process, so it is in
//! the container's cgroup and network like a command would be; requests interleave while
//! they wait on I/O. SIGTERM ends the process as it ends a command (exit 143), dropping
//! requests in flight.

mod host;
mod request;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use wasm_shim_core::{GuestExit, PreparedInstance, SandboxPolicy};
use wasmtime::component::{Component, Linker};
use wasmtime::error::Context;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use host::Host;
use request::Handler;

/// The interface a served component must export.
const INCOMING_HANDLER: &str = "wasi:http/incoming-handler";

struct Server {
    handler: Arc<Handler>,
    listener: TcpListener,
}

/// Link the component against WASI and `wasi:http`, and check that it is a proxy.
pub fn prepare(
    component: Component,
    policy: &SandboxPolicy,
    listener: TcpListener,
) -> wasmtime::Result<Box<dyn PreparedInstance>> {
    let engine = component.engine().clone();
    let mut linker: Linker<Host> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    let exports: Vec<String> = component
        .component_type()
        .exports(&engine)
        .map(|(name, _)| name.to_string())
        .collect();
    if !exports.iter().any(|e| e.starts_with(INCOMING_HANDLER)) {
        wasmtime::bail!(
            "serving wasi:http/proxy needs a component that exports {INCOMING_HANDLER}; this one exports {}",
            if exports.is_empty() { "nothing".into() } else { exports.join(", ") }
        );
    }
    let pre = linker
        .instantiate_pre(&component)
        .context("linking the component for wasi:http/proxy")?;
    let pre = ProxyPre::new(pre).context("the component is not a wasi:http/proxy")?;
    // A policy WASI cannot apply fails the Create, not every request.
    Host::new(policy)?;
    Ok(Box::new(Server {
        handler: Arc::new(Handler {
            pre,
            policy: policy.clone(),
        }),
        listener,
    }))
}

impl PreparedInstance for Server {
    fn run(self: Box<Self>) -> GuestExit {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_io()
            .enable_time()
            .build();
        let result = runtime
            .map_err(wasmtime::Error::from)
            .and_then(|rt| rt.block_on(self.serve()));
        match result {
            Err(e) => {
                eprintln!("wasi:http/proxy server failed: {e:#}");
                GuestExit::Exited(1)
            }
        }
    }
}

impl Server {
    async fn serve(self: Box<Self>) -> wasmtime::Result<std::convert::Infallible> {
        self.listener.set_nonblocking(true)?;
        let listener = tokio::net::TcpListener::from_std(self.listener)?;
        loop {
            let (stream, peer) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, a connection reset before accept: transient.
                    log::warn!("accepting a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let handler = self.handler.clone();
            tokio::task::spawn(async move {
                let service = service_fn(move |req| {
                    let handler = handler.clone();
                    async move { Ok::<_, std::convert::Infallible>(handler.handle(req).await) }
                });
                if let Err(e) = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    log::debug!("connection from {peer}: {e}");
                }
            });
        }
    }
}
