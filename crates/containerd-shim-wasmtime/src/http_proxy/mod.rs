//! Serving `wasi:http/proxy` components (annotation `wasm-shim/http-proxy-port`): HTTP/1.1 by
//! hyper on the listeners the core bound, one fresh instance of the component per request.
//!
//! - **Threads.** A multi-threaded tokio runtime with as many workers as the container may
//!   use: `available_parallelism`, which reads the CPU quota of the cgroup the instance
//!   process is in, else the node's cores.
//! - **Instances.** An engine of the server's own, with Wasmtime's pooling allocator sized by
//!   the concurrency bound and copy-on-write memory images, so that a request's instance
//!   costs microseconds; the component is linked once (`ProxyPre`), at Create.
//! - **Limits.** Each request has a wall-time limit (epoch interruption: a spinning guest is
//!   stopped, `504`), the container's memory budget (`500`, `out of memory` in the log) and
//!   a slot of the concurrency bound (`503` when the queue is full too): [`request`].
//! - **Outgoing HTTP** under the network allowlist: [`outgoing`].
//! - **Stop.** SIGTERM stops accepting and lets the requests in flight finish, for at most
//!   the request time limit, then the process exits 0; a second SIGTERM ends it at once.
//! - **Logs and metrics.** An access log line per request (annotation `wasm-shim/access-log`)
//!   and Prometheus counters on the metrics port: [`metrics`].

mod admission;
mod host;
mod metrics;
mod outgoing;
mod request;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use hyper::server::conn::http1;
use hyper::service::service_fn;
use tokio::signal::unix::{signal, SignalKind};
use tokio::task::JoinSet;
use wasm_shim_core::policy::HttpServe;
use wasm_shim_core::{GuestExit, HttpListeners, PreparedInstance, SandboxPolicy};
use wasmtime::component::{Component, Linker};
use wasmtime::error::Context;
use wasmtime::{InstanceAllocationStrategy, PoolingAllocationConfig};
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::ProxyPre;

use host::Host;
use metrics::Metrics;
use request::Handler;

/// The interface a served component must export.
const INCOMING_HANDLER: &str = "wasi:http/incoming-handler";
/// How often the engine's epoch moves: the grain of the request time limit, and how long a
/// busy guest keeps its thread before it yields to the next request.
const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Exit code when a second SIGTERM cut the drain short (as 128 + SIGTERM).
const EXIT_SIGTERM: i32 = 143;

struct Server {
    handler: Arc<Handler>,
    listeners: HttpListeners,
    engine: wasmtime::Engine,
}

/// Link the component against WASI and `wasi:http` in the server's own engine, and check
/// that it is a proxy. `component` was loaded by the command engine; `artifact` is loaded
/// again into the pooling one.
pub fn prepare(
    component: &Component,
    artifact: &Path,
    policy: &SandboxPolicy,
    listeners: HttpListeners,
) -> wasmtime::Result<Box<dyn PreparedInstance>> {
    let serve = policy
        .http_serve
        .context("serving without the annotation's settings")?;
    let exports: Vec<String> = component
        .component_type()
        .exports(component.engine())
        .map(|(name, _)| name.to_string())
        .collect();
    if !exports.iter().any(|e| e.starts_with(INCOMING_HANDLER)) {
        wasmtime::bail!(
            "serving wasi:http/proxy needs a component that exports {INCOMING_HANDLER}; this one exports {}",
            if exports.is_empty() { "nothing".into() } else { exports.join(", ") }
        );
    }
    let engine = serving_engine(&serve, policy)?;
    // SAFETY: the artifact is this node's own, checksum-verified (as for commands).
    let component = unsafe { Component::deserialize_file(&engine, artifact) }
        .context("loading the component into the server's engine")?;
    let mut linker: Linker<Host> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)?;
    let pre = linker
        .instantiate_pre(&component)
        .context("linking the component for wasi:http/proxy")?;
    let pre = ProxyPre::new(pre).context("the component is not a wasi:http/proxy")?;
    let network = Arc::new(policy.network.clone());
    // A policy WASI cannot apply fails the Create, not every request.
    Host::new(policy, &serve, &network, std::time::Instant::now())?;
    Ok(Box::new(Server {
        handler: Arc::new(Handler {
            pre,
            policy: policy.clone(),
            serve,
            network,
            admission: admission::Admission::new(serve.max_concurrent, serve.request_time_limit),
            metrics: Arc::new(Metrics::default()),
        }),
        listeners,
        engine,
    }))
}

/// The command engine's configuration (so the artifact loads) with a pooling allocator: one
/// component instance per concurrent request, and room for the core instances, memories and
/// tables a component made by the WASI adapter holds.
fn serving_engine(serve: &HttpServe, policy: &SandboxPolicy) -> wasmtime::Result<wasmtime::Engine> {
    let n = serve.max_concurrent;
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(n)
        .total_core_instances(n.saturating_mul(16))
        .total_memories(n.saturating_mul(4))
        .total_tables(n.saturating_mul(16))
        .total_stacks(n);
    if let Some(budget) = policy.limits.guest_memory {
        pool.max_memory_size(usize::try_from(budget).unwrap_or(usize::MAX));
    }
    let mut config = crate::engine::config();
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
    wasmtime::Engine::new(&config).context("configuring the server's engine (pooling allocator)")
}

impl PreparedInstance for Server {
    fn run(self: Box<Self>) -> GuestExit {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads)
            .thread_name("http")
            .enable_io()
            .enable_time()
            .build();
        let ticker = self.engine.clone();
        let ticking = std::thread::Builder::new()
            .name("epoch".into())
            .spawn(move || loop {
                std::thread::sleep(EPOCH_TICK);
                ticker.increment_epoch();
            });
        let serve = self.handler.serve;
        log::info!(
            "serving on {threads} threads: at most {} requests at once, {} ms each",
            serve.max_concurrent,
            serve.request_time_limit.as_millis()
        );
        let result = match (runtime, ticking) {
            (Ok(rt), Ok(_)) => rt.block_on(self.serve()),
            (Err(e), _) | (_, Err(e)) => Err(e.into()),
        };
        match result {
            Ok(()) => GuestExit::Exited(0),
            Err(e) => {
                eprintln!("wasi:http/proxy server failed: {e:#}");
                GuestExit::Exited(1)
            }
        }
    }
}

impl Server {
    async fn serve(self: Box<Self>) -> wasmtime::Result<()> {
        let Server {
            handler, listeners, ..
        } = *self;
        let mut sigterm = signal(SignalKind::terminate())?;
        let listener = nonblocking(listeners.requests)?;
        if let Some(metrics) = listeners.metrics {
            tokio::spawn(serve_metrics(
                nonblocking(metrics)?,
                handler.metrics.clone(),
            ));
        }
        let (stop, stopping) = tokio::sync::watch::channel(false);
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        connections.spawn(connection(stream, peer, handler.clone(), stopping.clone()));
                    }
                    Err(e) => {
                        // Out of file descriptors, a connection reset before accept: transient.
                        log::warn!("accepting a connection: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next() => {}
                _ = sigterm.recv() => break,
            }
        }
        // Graceful stop: no new connections; those open finish their request in flight.
        drop(listener);
        let limit = handler.serve.request_time_limit;
        log::info!(
            "SIGTERM: draining {} connections (at most {} ms)",
            connections.len(),
            limit.as_millis()
        );
        let _ = stop.send(true);
        let drained = async { while connections.join_next().await.is_some() {} };
        tokio::select! {
            finished = tokio::time::timeout(limit, drained) => {
                if finished.is_err() {
                    log::warn!("drain: requests still running after {} ms; exiting", limit.as_millis());
                }
                log::info!("drained; exiting 0");
                Ok(())
            }
            _ = sigterm.recv() => {
                log::warn!("second SIGTERM: exiting without draining");
                std::process::exit(EXIT_SIGTERM);
            }
        }
    }
}

fn nonblocking(listener: std::net::TcpListener) -> std::io::Result<tokio::net::TcpListener> {
    listener.set_nonblocking(true)?;
    tokio::net::TcpListener::from_std(listener)
}

/// One keep-alive connection: requests until the client closes it or the server stops.
async fn connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    handler: Arc<Handler>,
    mut stopping: tokio::sync::watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service = service_fn(move |req| {
        let handler = handler.clone();
        async move { Ok::<_, std::convert::Infallible>(handler.handle(req).await) }
    });
    let conn = http1::Builder::new()
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        done = conn.as_mut() => done,
        _ = stopping.changed() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        log::debug!("connection from {peer}: {e}");
    }
}

/// `GET /metrics` in Prometheus text format; anything else `404`.
async fn serve_metrics(listener: tokio::net::TcpListener, metrics: Arc<Metrics>) {
    use bytes::Bytes;
    use http_body_util::Full;
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(50)).await;
            continue;
        };
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let metrics = metrics.clone();
                async move {
                    let mut response = hyper::Response::new(Full::new(Bytes::new()));
                    if req.uri().path() == "/metrics" {
                        *response.body_mut() = Full::new(Bytes::from(metrics.render()));
                        response.headers_mut().insert(
                            hyper::header::CONTENT_TYPE,
                            hyper::header::HeaderValue::from_static("text/plain; version=0.0.4"),
                        );
                    } else {
                        *response.status_mut() = hyper::StatusCode::NOT_FOUND;
                    }
                    Ok::<_, std::convert::Infallible>(response)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}
