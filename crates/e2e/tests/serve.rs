//! The wasi:http/proxy server (annotation `wasm-shim/http-proxy-port`) through `ctr run
//! --net-host`: requests run in parallel, each within its own time limit, memory budget and
//! the concurrency bound; outgoing HTTP obeys the allowlist; SIGTERM drains; the access log
//! and the metrics port say what happened. The server runs in the foreground (`ctr run
//! --rm`) in a thread, so its stdout and stderr are the test's to read once it stopped.

use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use e2e::cri::http_get;
use e2e::{Ns, Output};

/// One server at a time: the timing tests measure the cores a neighbour would take.
static ALONE: Mutex<()> = Mutex::new(());

fn alone() -> std::sync::MutexGuard<'static, ()> {
    ALONE.lock().unwrap_or_else(|e| e.into_inner())
}

fn skip(test: &str) -> bool {
    e2e::capabilities::skip_unless_runtime_has("wasi-http", &format!("serve::{test}"))
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Served {
    ns: Ns,
    port: u16,
    server: JoinHandle<Output>,
}

/// Serve the http-proxy guest with these annotations (and `flags`), until it answers.
fn serve(test: &str, annotations: &[(&str, &str)], flags: &[&str]) -> Served {
    let ns = Ns::new(test);
    let port = free_port();
    let annotations: Vec<(String, String)> = annotations
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut flags: Vec<String> = flags.iter().map(|f| f.to_string()).collect();
    flags.push("--net-host".into());
    let runner = ns.clone();
    let server = std::thread::spawn(move || {
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let mut run = runner
            .run("http-proxy")
            .flags(&flags)
            .annotation("wasm-shim/http-proxy-port", &port.to_string())
            .timeout(Duration::from_secs(180));
        for (k, v) in &annotations {
            run = run.annotation(k, v);
        }
        run.rm("server")
    });
    let served = Served { ns, port, server };
    let up = e2e::eventually(Duration::from_secs(30), || {
        served.server.is_finished() || served.try_get("/hello").is_ok()
    });
    assert!(
        up && !served.server.is_finished(),
        "the server never answered"
    );
    served
}

impl Served {
    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn try_get(&self, path: &str) -> Result<(u16, String), String> {
        let (head, body) = http_get(&self.addr(), path, Duration::from_secs(30))?;
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| format!("no status in {head:?}"))?;
        Ok((status, body))
    }

    #[track_caller]
    fn get(&self, path: &str) -> (u16, String) {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("GET {path}: {e}"))
    }

    fn task_id(&self) -> String {
        let tasks = self.ns.tasks();
        assert_eq!(tasks.len(), 1, "{tasks:?}");
        tasks[0].id.clone()
    }

    /// SIGTERM, then what the server printed and how it ended.
    fn stop(self) -> Output {
        let id = self.task_id();
        self.ns.ctr_ok(&["task", "kill", &id]);
        self.server.join().expect("the ctr thread")
    }
}

/// GET `path` on `addr` in a thread: (status, body, when it was answered).
fn get_in_thread(addr: String, path: &str) -> JoinHandle<(u16, String, Instant)> {
    let path = path.to_string();
    std::thread::spawn(move || {
        let (head, body) = http_get(&addr, &path, Duration::from_secs(60))
            .unwrap_or_else(|e| panic!("GET {path}: {e}"));
        let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
        (status, body, Instant::now())
    })
}

#[test]
fn concurrent_requests_run_in_parallel() {
    if skip("concurrent_requests_run_in_parallel") {
        return;
    }
    let _alone = alone();
    let s = serve("serve-parallel", &[], &[]);
    s.get("/cpu/50"); // warm
    let t0 = Instant::now();
    let a = get_in_thread(s.addr(), "/cpu/300");
    let b = get_in_thread(s.addr(), "/cpu/300");
    let (a, b) = (a.join().unwrap(), b.join().unwrap());
    let took = t0.elapsed();
    assert_eq!((a.0, b.0), (200, 200), "{a:?} {b:?}");
    assert_eq!(a.1, "spun 300 ms\n");
    // One thread would take 600 ms for both.
    assert!(
        took < Duration::from_millis(500),
        "two 300 ms handlers took {took:?}: not in parallel"
    );
    let out = s.stop();
    out.assert_success();
}

#[test]
fn a_spinning_request_gets_504_while_others_are_answered() {
    if skip("a_spinning_request_gets_504_while_others_are_answered") {
        return;
    }
    let _alone = alone();
    let s = serve(
        "serve-spin",
        &[("wasm-shim/request-time-limit-ms", "1000")],
        &[],
    );
    let t0 = Instant::now();
    let spin = get_in_thread(s.addr(), "/spin");
    std::thread::sleep(Duration::from_millis(100));
    let (status, body) = s.get("/hello");
    assert_eq!((status, body.as_str()), (200, "hello\n"));
    assert!(
        t0.elapsed() < Duration::from_millis(900),
        "the hello waited for the spinner: {:?}",
        t0.elapsed()
    );
    let (status, _, at) = spin.join().unwrap();
    assert_eq!(status, 504);
    let took = at - t0;
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_millis(3000),
        "504 after {took:?}, limit 1000 ms"
    );
    assert_eq!(s.get("/hello").0, 200, "the server goes on");
    let out = s.stop();
    out.assert_success();
    assert!(
        out.stderr.contains(
            "GET /spin: time limit exceeded: the request was stopped at its limit of 1000 ms"
        ),
        "{out}"
    );
}

#[test]
fn a_memory_hungry_request_gets_500_and_the_next_succeeds() {
    if skip("a_memory_hungry_request_gets_500_and_the_next_succeeds") {
        return;
    }
    let _alone = alone();
    let s = serve(
        "serve-memory",
        &[],
        &["--memory-limit", &(64u64 << 20).to_string()],
    );
    assert_eq!(s.get("/alloc/8").0, 200, "within the budget");
    assert_eq!(s.get("/alloc/200").0, 500);
    let (status, body) = s.get("/hello");
    assert_eq!((status, body.as_str()), (200, "hello\n"));
    let out = s.stop();
    out.assert_success();
    assert!(out.stderr.contains("GET /alloc/200: "), "{out}");
    assert!(
        out.stderr.contains("out of memory: memory page limit of"),
        "{out}"
    );
}

#[test]
fn past_the_concurrency_bound_and_its_queue_requests_get_503() {
    if skip("past_the_concurrency_bound_and_its_queue_requests_get_503") {
        return;
    }
    let _alone = alone();
    let s = serve(
        "serve-bound",
        &[
            ("wasm-shim/max-concurrent-requests", "1"),
            ("wasm-shim/request-time-limit-ms", "5000"),
        ],
        &[],
    );
    let running = get_in_thread(s.addr(), "/sleep/1500");
    std::thread::sleep(Duration::from_millis(300));
    let waiting = get_in_thread(s.addr(), "/sleep/100");
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let (status, _) = s.get("/hello");
    assert_eq!(
        status, 503,
        "one running and one waiting: the third is refused"
    );
    assert!(t0.elapsed() < Duration::from_millis(500), "refused at once");
    assert_eq!(running.join().unwrap().0, 200);
    assert_eq!(
        waiting.join().unwrap().0,
        200,
        "the queued request got its slot"
    );
    assert_eq!(s.get("/hello").0, 200);
    s.stop().assert_success();
}

#[test]
fn outgoing_requests_obey_the_allowlist_and_the_caps() {
    if skip("outgoing_requests_obey_the_allowlist_and_the_caps") {
        return;
    }
    let _alone = alone();
    let (port, served) = e2e::counting_http_server();
    let allowed = format!("127.0.0.1:{port}");
    let s = serve(
        "serve-outgoing",
        &[
            ("wasm-shim/net-connect", &allowed),
            ("wasm-shim/max-outgoing-requests", "2"),
        ],
        &[],
    );
    let (status, body) = s.get(&format!("/fetch/{allowed}/x?n=3"));
    assert_eq!(status, 200);
    assert_eq!(
        body, "upstream 200 3\nupstream 200 3\nerror HttpRequestDenied\n",
        "two allowed, the third past the per-request cap"
    );
    assert_eq!(served.load(Ordering::SeqCst), 2);
    let other = format!("127.0.0.2:{port}");
    let (_, body) = s.get(&format!("/fetch/{other}/x"));
    assert_eq!(body, "error HttpRequestDenied\n");
    assert_eq!(
        served.load(Ordering::SeqCst),
        2,
        "the denied host was never reached"
    );
    let out = s.stop();
    out.assert_success();
    assert!(
        out.stderr.contains(&format!("host not allowed: {other}")),
        "{out}"
    );
    assert!(
        out.stderr
            .contains("outgoing request limit of 2 per request reached"),
        "{out}"
    );
}

#[test]
fn without_an_allowlist_outgoing_requests_are_denied() {
    if skip("without_an_allowlist_outgoing_requests_are_denied") {
        return;
    }
    let _alone = alone();
    let (port, served) = e2e::counting_http_server();
    let s = serve("serve-no-outgoing", &[], &[]);
    let (status, body) = s.get(&format!("/fetch/127.0.0.1:{port}/x"));
    assert_eq!((status, body.as_str()), (200, "error HttpRequestDenied\n"));
    assert_eq!(served.load(Ordering::SeqCst), 0);
    let out = s.stop();
    assert!(
        out.stderr
            .contains(&format!("host not allowed: 127.0.0.1:{port}")),
        "{out}"
    );
}

#[test]
fn sigterm_lets_the_request_in_flight_finish_then_exits_0() {
    if skip("sigterm_lets_the_request_in_flight_finish_then_exits_0") {
        return;
    }
    let _alone = alone();
    let s = serve("serve-drain", &[], &[]);
    let addr = s.addr();
    let in_flight = get_in_thread(addr.clone(), "/sleep/1500");
    std::thread::sleep(Duration::from_millis(300));
    let t0 = Instant::now();
    let out = s.stop();
    let (status, body, _) = in_flight.join().unwrap();
    assert_eq!((status, body.as_str()), (200, "slept 1500 ms\n"));
    out.assert_success();
    assert!(
        t0.elapsed() >= Duration::from_millis(1000),
        "the server stopped before its request finished: {:?}",
        t0.elapsed()
    );
    assert!(
        http_get(&addr, "/hello", Duration::from_secs(2)).is_err(),
        "still answering after it stopped"
    );
}

#[test]
fn the_access_log_and_the_metrics_port_say_what_happened() {
    if skip("the_access_log_and_the_metrics_port_say_what_happened") {
        return;
    }
    let _alone = alone();
    let metrics_port = free_port();
    let s = serve(
        "serve-observe",
        &[
            ("wasm-shim/access-log", "true"),
            ("wasm-shim/metrics-port", &metrics_port.to_string()),
        ],
        &[],
    );
    assert_eq!(s.get("/hello").0, 200);
    assert_eq!(s.get("/trap").0, 500);
    let (head, metrics) = http_get(
        &format!("127.0.0.1:{metrics_port}"),
        "/metrics",
        Duration::from_secs(10),
    )
    .expect("GET /metrics");
    assert!(head.contains(" 200 "), "{head}");
    // The warm-up GET /hello of `serve` counts too: two 200s.
    for line in [
        "wasm_shim_http_requests_total{status=\"200\"} 2",
        "wasm_shim_http_requests_total{status=\"500\"} 1",
        "wasm_shim_http_requests_in_flight 0",
        "wasm_shim_http_handler_seconds_count 3",
        "wasm_shim_http_instantiate_seconds_count 3",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "no {line:?} in\n{metrics}"
        );
    }
    let out = s.stop();
    out.assert_success();
    let lines: Vec<&str> = out
        .stdout
        .lines()
        .filter(|l| l.starts_with("GET "))
        .collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(
        lines[1].starts_with("GET /hello 200 ") && lines[1].ends_with("ms"),
        "{lines:?}"
    );
    assert!(lines[2].starts_with("GET /trap 500 "), "{lines:?}");
}
