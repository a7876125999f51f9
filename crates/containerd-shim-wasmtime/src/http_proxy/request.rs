//! One request: a slot (the concurrency bound), a fresh store and instance of the
//! pre-instantiated component, its `wasi:http/incoming-handler.handle` called under the
//! request's time limit, its response handed back to hyper. A failure is this request's
//! only: `504` past the time limit, `500` for a trap (`out of memory: ...` when the memory
//! limit caused it), `503` when the server is full; the server keeps serving.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use wasm_shim_core::policy::{HttpServe, NetworkPolicy};
use wasm_shim_core::{GuestExit, SandboxPolicy};
use wasmtime::{Store, Trap, UpdateDeadline};
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use super::admission::Admission;
use super::host::Host;
use super::metrics::Metrics;

pub struct Handler {
    pub pre: ProxyPre<Host>,
    pub policy: SandboxPolicy,
    pub serve: HttpServe,
    pub network: Arc<NetworkPolicy>,
    pub admission: Admission,
    pub metrics: Arc<Metrics>,
}

/// How a request failed, and so its status.
enum Failure {
    Busy(String),
    TimedOut,
    OutOfMemory(String),
    Trapped(String),
    Other(String),
}

impl Failure {
    fn status(&self) -> StatusCode {
        match self {
            Failure::Busy(_) => StatusCode::SERVICE_UNAVAILABLE,
            Failure::TimedOut => StatusCode::GATEWAY_TIMEOUT,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// Aborts the guest's task unless disarmed: a request given up on must not run on.
struct AbortOnDrop(Option<tokio::task::JoinHandle<Result<(), Failure>>>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

impl Handler {
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<HyperOutgoingBody> {
        let (method, path) = (req.method().clone(), req.uri().path().to_string());
        let t0 = Instant::now();
        let _in_flight = self.metrics.enter();
        let limit = self.serve.request_time_limit;
        let outcome = match self.admission.admit().await {
            Err(busy) => Err(Failure::Busy(busy.to_string())),
            Ok(_slot) => {
                // The limit counts from arrival, time waiting for a slot included.
                let deadline = t0 + limit;
                let left = deadline.saturating_duration_since(Instant::now());
                match tokio::time::timeout(left, self.call_guest(req, deadline)).await {
                    Ok(outcome) => outcome,
                    Err(_) => Err(Failure::TimedOut),
                }
            }
        };
        let response = match outcome {
            Ok(response) => response,
            Err(failure) => {
                let status = failure.status();
                match &failure {
                    Failure::TimedOut => say(&format!(
                        "{method} {path}: time limit exceeded: the request was stopped at its limit of {} ms",
                        limit.as_millis()
                    )),
                    Failure::OutOfMemory(why) | Failure::Trapped(why) => {
                        say(&format!("{method} {path}: {why}"))
                    }
                    Failure::Busy(why) => log::warn!("{method} {path}: 503: {why}"),
                    Failure::Other(why) => log::warn!("{method} {path}: {why}"),
                }
                plain(status)
            }
        };
        let took = t0.elapsed();
        self.metrics.handler.observe(took);
        self.metrics.answered(response.status().as_u16());
        if self.serve.access_log {
            access_line(&method, &path, response.status(), took);
        }
        response
    }

    async fn call_guest(
        &self,
        req: Request<Incoming>,
        deadline: Instant,
    ) -> Result<Response<HyperOutgoingBody>, Failure> {
        let t0 = Instant::now();
        let host = Host::new(&self.policy, &self.serve, &self.network, deadline)
            .map_err(|e| Failure::Other(format!("setting up WASI: {e:#}")))?;
        let mut store = Store::new(self.pre.engine(), host);
        store.limiter(|host| &mut host.limiter);
        // Each epoch tick (10 ms) the guest yields its thread to other requests; past the
        // deadline it is stopped.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            Ok(if Instant::now() >= deadline {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        let (tx, rx) = tokio::sync::oneshot::channel();
        let mut http = store.data_mut().http();
        let (req, out) = http
            .new_incoming_request(Scheme::Http, req)
            .and_then(|req| Ok((req, http.new_response_outparam(tx)?)))
            .map_err(|e| Failure::Other(format!("passing the request to the guest: {e:#}")))?;
        let pre = self.pre.clone();
        let metrics = self.metrics.clone();
        // A task of its own: the guest may go on writing the body after it set the response.
        let mut guest = AbortOnDrop(Some(tokio::task::spawn(async move {
            let proxy = pre.instantiate_async(&mut store).await.map_err(|e| {
                let e = format!("{e:#}");
                // The pooling allocator's slots are the server's capacity.
                if e.contains("concurrent") {
                    Failure::Busy(e)
                } else {
                    Failure::Other(format!("instantiating the component: {e}"))
                }
            })?;
            metrics.instantiate.observe(t0.elapsed());
            proxy
                .wasi_http_incoming_handler()
                .call_handle(&mut store, req, out)
                .await
                .map_err(|e| failure_of(e, &store))
        })));
        match rx.await {
            Ok(Ok(response)) => {
                // The guest goes on with the body.
                guest.0.take();
                Ok(response)
            }
            Ok(Err(code)) => Err(Failure::Other(format!(
                "the guest answered with error {code:?}"
            ))),
            // The guest dropped the response outparam without setting it: see why.
            Err(_) => {
                let task = guest.0.take().expect("the guest's task");
                match task.await {
                    Ok(Ok(())) => Err(Failure::Other(
                        "the guest returned without setting a response".into(),
                    )),
                    Ok(Err(failure)) => Err(failure),
                    Err(e) => Err(Failure::Other(format!("the request's task failed: {e}"))),
                }
            }
        }
    }
}

fn failure_of(err: wasmtime::Error, store: &Store<Host>) -> Failure {
    if err.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        return Failure::TimedOut;
    }
    match crate::wasi_ctx::exit_of(err, &store.data().limiter) {
        GuestExit::MemoryLimit(message) => Failure::OutOfMemory(one_line(&message)),
        GuestExit::Trapped(message) => Failure::Trapped(one_line(&message)),
        GuestExit::Exited(code) => Failure::Other(format!("the guest exited with {code}")),
    }
}

/// A trap message's lines (the backtrace's too) as one log line.
fn one_line(s: &str) -> String {
    s.lines().collect::<Vec<_>>().join(" | ")
}

/// What went wrong with a request, in the shim log and on the container's stderr.
fn say(message: &str) {
    log::warn!("{message}");
    eprintln!("{message}");
}

/// `METHOD PATH STATUS MS`, one write per line on the container's stdout.
fn access_line(method: &hyper::Method, path: &str, status: StatusCode, took: Duration) {
    use std::io::Write as _;
    let line = format!(
        "{method} {path} {} {:.3}ms\n",
        status.as_u16(),
        took.as_secs_f64() * 1e3
    );
    let _ = std::io::stdout().lock().write_all(line.as_bytes());
}

fn plain(status: StatusCode) -> Response<HyperOutgoingBody> {
    let text = format!(
        "{} {}\n",
        status.as_u16(),
        status.canonical_reason().unwrap_or_default()
    );
    let body = Full::new(Bytes::from(text))
        .map_err(|never| match never {})
        .boxed_unsync();
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}
