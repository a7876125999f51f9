//! `http-proxy`: a `wasi:http/proxy` component for the serving tests and the HTTP benchmark.
//! By path:
//!
//! - `/hello`: `200 OK`, body `hello\n`, nothing printed (the benchmark's handler);
//! - `/cpu/MS`: spins the CPU for MS milliseconds, then answers `spun MS ms` (nothing printed);
//! - `/sleep/MS`: sleeps MS milliseconds (the host's clock, not the CPU), then answers;
//! - `/spin`: spins forever (the request time limit must stop it);
//! - `/alloc/MB`: allocates and touches MB MiB, then answers (past the memory limit the
//!   allocator fails, which aborts: a trap);
//! - `/fetch/HOST:PORT/PATH?n=N`: N times (default 1) `GET http://HOST:PORT/PATH` through
//!   `wasi:http/outgoing-handler`; answers `200` with one line per request,
//!   `upstream STATUS BODY-BYTES` or `error CODE` (e.g. `error HttpRequestDenied`);
//! - `/trap`: panics (a trap) before answering;
//! - anything else: `200 OK` with `hello from wasi:http <path>\nGREETING=<$GREETING>\n`, and
//!   one line `request <METHOD> <path>` on stdout.
#![cfg(all(target_os = "wasi", target_env = "p2"))]

use std::io::Write as _;
use std::time::{Duration, Instant};

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    Fields, IncomingRequest, Method, OutgoingBody, OutgoingRequest, OutgoingResponse,
    ResponseOutparam, Scheme,
};

wasip2::http::proxy::export!(Proxy);

struct Proxy;

impl wasip2::exports::http::incoming_handler::Guest for Proxy {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        let path = request.path_with_query().unwrap_or_default();
        let body = match route(&path) {
            Some(body) => body,
            None => {
                println!("request {} {path}", method_name(&request.method()));
                if path == "/trap" {
                    panic!("asked to trap");
                }
                let greeting = std::env::var("GREETING").unwrap_or_default();
                format!("hello from wasi:http {path}\nGREETING={greeting}\n")
            }
        };
        respond(response_out, 200, &body);
    }
}

/// The special paths; `None` for the default answer.
fn route(path: &str) -> Option<String> {
    let number = |rest: &str| rest.parse::<u64>().unwrap_or(0);
    if path == "/hello" {
        Some("hello\n".into())
    } else if let Some(ms) = path.strip_prefix("/cpu/") {
        let ms = number(ms);
        spin(Some(Duration::from_millis(ms)));
        Some(format!("spun {ms} ms\n"))
    } else if let Some(ms) = path.strip_prefix("/sleep/") {
        std::thread::sleep(Duration::from_millis(number(ms)));
        Some(format!("slept {} ms\n", number(ms)))
    } else if path == "/spin" {
        spin(None);
        unreachable!()
    } else if let Some(mb) = path.strip_prefix("/alloc/") {
        let mut held: Vec<Vec<u8>> = Vec::new();
        for _ in 0..number(mb) {
            held.push(vec![1u8; 1 << 20]);
        }
        Some(format!("allocated {} MiB\n", held.len()))
    } else {
        path.strip_prefix("/fetch/").map(fetch)
    }
}

fn spin(limit: Option<Duration>) {
    let t0 = Instant::now();
    let mut x = 0u64;
    while limit.is_none_or(|l| t0.elapsed() < l) {
        for i in 0..10_000u64 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
        }
    }
}

fn fetch(target: &str) -> String {
    let (target, times) = match target.split_once("?n=") {
        Some((t, n)) => (t, n.parse().unwrap_or(1)),
        None => (target, 1),
    };
    let (authority, path) = match target.split_once('/') {
        Some((a, p)) => (a, format!("/{p}")),
        None => (target, "/".to_string()),
    };
    (0..times)
        .map(|_| match get(authority, &path) {
            Ok((status, bytes)) => format!("upstream {status} {bytes}\n"),
            Err(code) => format!("error {code}\n"),
        })
        .collect()
}

/// `GET http://AUTHORITY/PATH`: the status and the body's length, or the error's name.
fn get(authority: &str, path: &str) -> Result<(u16, usize), String> {
    use wasip2::io::streams::StreamError;
    let request = OutgoingRequest::new(Fields::new());
    let _ = request.set_scheme(Some(&Scheme::Http));
    let _ = request.set_authority(Some(authority));
    let _ = request.set_path_with_query(Some(path));
    let name = |e: &dyn std::fmt::Debug| {
        let s = format!("{e:?}");
        let head = s.split(['(', ' ', '{']).next().unwrap_or_default();
        head.rsplit("::").next().unwrap_or(head).to_string()
    };
    let future = outgoing_handler::handle(request, None).map_err(|e| name(&e))?;
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(e))) => return Err(name(&e)),
        _ => return Err("no-response".into()),
    };
    let status = response.status();
    let body = response.consume().map_err(|_| "no-body")?;
    let stream = body.stream().map_err(|_| "no-body-stream")?;
    let mut bytes = 0;
    loop {
        match stream.blocking_read(64 << 10) {
            Ok(chunk) => bytes += chunk.len(),
            Err(StreamError::Closed) => break,
            Err(e) => return Err(name(&e)),
        }
    }
    Ok((status, bytes))
}

fn respond(out: ResponseOutparam, status: u16, text: &str) {
    let headers = Fields::new();
    let _ = headers.set("content-type", &[b"text/plain".to_vec()]);
    let response = OutgoingResponse::new(headers);
    let _ = response.set_status_code(status);
    let body = response.body().expect("the body of a new response");
    ResponseOutparam::set(out, Ok(response));
    let mut stream = body.write().expect("the body's stream");
    stream.write_all(text.as_bytes()).expect("writing the body");
    stream.flush().expect("flushing the body");
    drop(stream);
    OutgoingBody::finish(body, None).expect("finishing the body");
}

fn method_name(method: &Method) -> &str {
    match method {
        Method::Get => "GET",
        Method::Head => "HEAD",
        Method::Post => "POST",
        Method::Put => "PUT",
        Method::Delete => "DELETE",
        Method::Connect => "CONNECT",
        Method::Options => "OPTIONS",
        Method::Trace => "TRACE",
        Method::Patch => "PATCH",
        Method::Other(other) => other,
    }
}
