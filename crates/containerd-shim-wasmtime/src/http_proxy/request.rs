//! One request: a fresh store and instance of the pre-instantiated component, its
//! `wasi:http/incoming-handler.handle` called, its response handed back to hyper. Whatever
//! goes wrong becomes a 500 for this request only; the server keeps serving.

use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use wasm_shim_core::{GuestExit, SandboxPolicy};
use wasmtime::Store;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use super::host::Host;

pub struct Handler {
    pub pre: ProxyPre<Host>,
    pub policy: SandboxPolicy,
}

impl Handler {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<HyperOutgoingBody> {
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let t0 = Instant::now();
        let response = match self.call_guest(req).await {
            Ok(response) => response,
            Err(why) => {
                log::warn!("{method} {path}: {why}");
                internal_error()
            }
        };
        log::debug!(
            "{method} {path}: {} in {} us",
            response.status(),
            t0.elapsed().as_micros()
        );
        response
    }

    async fn call_guest(
        &self,
        req: Request<Incoming>,
    ) -> Result<Response<HyperOutgoingBody>, String> {
        let host = Host::new(&self.policy).map_err(|e| format!("setting up WASI: {e:#}"))?;
        let mut store = Store::new(self.pre.engine(), host);
        store.limiter(|host| &mut host.limiter);
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut http = store.data_mut().http();
        let (req, out) = http
            .new_incoming_request(Scheme::Http, req)
            .and_then(|req| Ok((req, http.new_response_outparam(tx)?)))
            .map_err(|e| format!("passing the request to the guest: {e:#}"))?;
        let pre = self.pre.clone();
        // A task of its own: the guest may go on writing the body after it set the response.
        let guest = tokio::task::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await?;
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
                .map_err(|e| report(e, &store))
        });
        match rx.await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(code)) => Err(format!("the guest answered with error {code:?}")),
            // The guest dropped the response outparam without setting it: see why.
            Err(_) => Err(match guest.await {
                Ok(Ok(())) => "the guest returned without setting a response".into(),
                Ok(Err(e)) => format!("{e:#}"),
                Err(e) => format!("the request's task failed: {e}"),
            }),
        }
    }
}

/// A trap, as a command's would be: its message on the container's stderr.
fn report(err: wasmtime::Error, store: &Store<Host>) -> wasmtime::Error {
    match crate::wasi_ctx::exit_of(err, &store.data().limiter) {
        GuestExit::Trapped(message) | GuestExit::MemoryLimit(message) => {
            eprintln!("{message}");
            wasmtime::format_err!("the guest trapped: {}", first_line(&message))
        }
        GuestExit::Exited(code) => wasmtime::format_err!("the guest exited with {code}"),
    }
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or(s)
}

fn internal_error() -> Response<HyperOutgoingBody> {
    let body = Full::new(Bytes::from_static(b"internal server error\n"))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = StatusCode::INTERNAL_SERVER_ERROR;
    response
}
