//! `cri`: the Wasm guest of the CRI end-to-end tests, built for WASI preview 2
//! (Wasmtime) and for preview 1 (WasmEdge, whose sockets are its own extension:
//! the `wasmedge_wasi_socket` crate), chosen by `argv[1]`:
//!
//! - `serve [PORT]`: an HTTP/1.0 server on `0.0.0.0:PORT` (else `$PORT`, else
//!   8080). Every request gets `200 OK` with the body
//!   `hello from the cri guest\nGREETING=<$GREETING>\npath=<request path>\n`,
//!   so a client can tell it reached this guest, with this environment. It
//!   prints `listening on <addr>` once bound and one `request <path>` line per
//!   request. Exits 2 when it cannot listen.
//! - `connect HOST:PORT [N]`: N times (default 1) opens a TCP connection, sends
//!   `GET / HTTP/1.0`, prints the first line of the response; on failure prints
//!   `error: connect HOST:PORT: <error>` (`... : request K: <error>` when N > 1)
//!   on stderr and exits 3 (what the network allowlist and request cap tests
//!   look for).
//! - `spew`: log output patterns: a 40000-byte line of `x`, then `burst N`
//!   lines `burst 1` .. `burst 20000` (one write each), `to stderr` on
//!   stderr, then `no newline at the end` without a line end; exits 0.
//! - `tick MS`: spins the CPU, printing `tick N` every MS milliseconds, forever.
//! - `grow`: allocates and touches 1 MiB after another, printing `grew N MiB`
//!   every 16 MiB, until the allocator fails (which aborts: a trap).
//!
//! Unknown commands exit 64.

use std::hint::black_box;
use std::io::{self, BufRead, BufReader, Write};
use std::time::{Duration, Instant};

use net::{TcpListener, TcpStream};

/// The sockets of each target, behind one interface: `listen` and `connect`.
#[cfg(not(all(target_os = "wasi", target_env = "p1")))]
mod net {
    pub use std::net::{TcpListener, TcpStream};

    pub fn listen(addr: &str) -> std::io::Result<TcpListener> {
        TcpListener::bind(addr)
    }

    pub fn connect(addr: &str) -> std::io::Result<TcpStream> {
        TcpStream::connect(addr)
    }
}

/// WasmEdge's socket extension (preview 1 has no sockets of its own).
#[cfg(all(target_os = "wasi", target_env = "p1"))]
mod net {
    pub use wasmedge_wasi_socket::{TcpListener, TcpStream};

    pub fn listen(addr: &str) -> std::io::Result<TcpListener> {
        TcpListener::bind(addr, false)
    }

    pub fn connect(addr: &str) -> std::io::Result<TcpStream> {
        TcpStream::connect(addr)
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let command = args.get(1).map(String::as_str).unwrap_or("");
    match command {
        "serve" => serve(args.get(2).cloned()),
        "connect" => connect(
            args.get(2).map(String::as_str).unwrap_or(""),
            args.get(3).and_then(|n| n.parse().ok()).unwrap_or(1),
        ),
        "spew" => spew(),
        "tick" => tick(args.get(2).and_then(|s| s.parse().ok()).unwrap_or(500)),
        "grow" => grow(),
        _ => {
            eprintln!(
                "usage: cri serve [PORT] | connect HOST:PORT [N] | spew | tick MS | grow (got {command:?})"
            );
            std::process::exit(64);
        }
    }
}

fn serve(port: Option<String>) {
    let port = port
        .or_else(|| std::env::var("PORT").ok())
        .unwrap_or_else(|| "8080".into());
    let addr = format!("0.0.0.0:{port}");
    let listener: TcpListener = match net::listen(&addr) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {addr}: {e}");
            std::process::exit(2);
        }
    };
    println!("listening on {addr}");
    let greeting = std::env::var("GREETING").unwrap_or_default();
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                if let Err(e) = answer(s, &greeting) {
                    eprintln!("error: answering a request: {e}");
                }
            }
            Err(e) => eprintln!("error: accept: {e}"),
        }
    }
}

fn connect(addr: &str, times: u32) {
    for k in 1..=times {
        match get(addr) {
            Ok(status_line) => println!("{status_line}"),
            Err(e) if times == 1 => {
                eprintln!("error: connect {addr}: {e}");
                std::process::exit(3);
            }
            Err(e) => {
                eprintln!("error: connect {addr}: request {k}: {e}");
                std::process::exit(3);
            }
        }
    }
}

/// `GET /` on `addr`: the response's first line.
fn get(addr: &str) -> io::Result<String> {
    let mut stream = net::connect(addr)?;
    stream.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    stream.flush()?;
    let mut line = String::new();
    BufReader::new(stream).read_line(&mut line)?;
    if line.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the connection closed without a response",
        ));
    }
    Ok(line.trim_end().to_string())
}

fn answer(stream: TcpStream, greeting: &str) -> io::Result<()> {
    let mut reader = BufReader::new(stream);
    let mut request = String::new();
    reader.read_line(&mut request)?;
    let path = request.split_whitespace().nth(1).unwrap_or("/").to_string();
    // The rest of the request head, up to the empty line.
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line.trim_end().is_empty() {
            break;
        }
    }
    println!("request {path}");
    let body = format!("hello from the cri guest\nGREETING={greeting}\npath={path}\n");
    let mut stream = reader.into_inner();
    write!(
        stream,
        "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    stream.flush()
}

fn spew() {
    let mut out = io::stdout().lock();
    let long = "x".repeat(40_000);
    let _ = writeln!(out, "{long}");
    let _ = out.flush();
    for i in 1..=20_000 {
        let _ = writeln!(out, "burst {i}");
        let _ = out.flush();
    }
    eprintln!("to stderr");
    let _ = write!(out, "no newline at the end");
    let _ = out.flush();
}

fn tick(ms: u64) -> ! {
    let every = Duration::from_millis(ms.max(1));
    let mut n = 0u64;
    let mut next = Instant::now();
    let mut x = 0u64;
    loop {
        x = black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
        if Instant::now() >= next {
            n += 1;
            println!("tick {n}");
            next += every;
        }
    }
}

fn grow() {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        // A plain allocation: on failure Rust's allocator aborts (a trap).
        let mut chunk = vec![0u8; 1 << 20];
        for page in (0..chunk.len()).step_by(4096) {
            chunk[page] = 1;
        }
        chunks.push(black_box(chunk));
        if chunks.len() % 16 == 0 {
            println!("grew {} MiB", chunks.len());
        }
    }
}
