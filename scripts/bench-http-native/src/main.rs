//! Native reference server of `scripts/bench-http`: the benchmark's two paths of the
//! `http-proxy` guest (test-images/guests/http-proxy), answered the same way, by plain
//! hyper 1.x (HTTP/1.1, keep-alive) on a multi-threaded tokio runtime (one worker per core).
//!
//! - `/hello`: `200 OK`, `content-type: text/plain`, body `hello\n`;
//! - `/cpu/MS`: spins the CPU for MS milliseconds on the worker thread that serves the
//!   request (as the guest spins inside its handler), then answers `spun MS ms\n`;
//! - anything else: `404`.
//!
//! Usage: `bench-http-native ADDR` (e.g. `127.0.0.1:18082`). It prints `listening on ADDR`
//! once bound and serves until killed.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

fn main() {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:18082".to_string());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_io()
        .build()
        .expect("tokio runtime");
    runtime.block_on(serve(&addr));
}

async fn serve(addr: &str) {
    let listener = match TcpListener::bind(addr).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("bench-http-native: cannot bind {addr}: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "listening on {}",
        listener.local_addr().expect("local address")
    );
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(s) => s,
            Err(e) => {
                eprintln!("bench-http-native: accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service_fn(handle))
                .await;
        });
    }
}

async fn handle(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let (status, body) = if path == "/hello" {
        (StatusCode::OK, "hello\n".to_string())
    } else if let Some(ms) = path.strip_prefix("/cpu/") {
        let ms = ms.parse::<u64>().unwrap_or(0);
        spin(Duration::from_millis(ms));
        (StatusCode::OK, format!("spun {ms} ms\n"))
    } else {
        (StatusCode::NOT_FOUND, "not found\n".to_string())
    };
    let response = Response::builder()
        .status(status)
        .header("content-type", "text/plain")
        .body(Full::new(Bytes::from(body)))
        .expect("a response");
    Ok(response)
}

/// The guest's spin: rounds of 10 000 multiply-adds until `limit` has passed.
fn spin(limit: Duration) {
    let t0 = Instant::now();
    let mut x = 0u64;
    while t0.elapsed() < limit {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
}
