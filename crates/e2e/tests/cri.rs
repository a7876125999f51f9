//! Pods through CRI, as kubelet runs them: gRPC to containerd's CRI plugin
//! (`e2e::cri`), against a private containerd started with
//! `CTD_ENABLE_CRI=1` (scripts/test's `cri-<version>` phases).
//!
//! - `runc_*`: the harness itself, with the `runc` handler: pause + busybox
//!   pods, exec, logs, stats, the memory limit, a containerd restart and the
//!   clean-up checks. They must pass on every containerd version.
//! - `wasm_*`: pods under the Wasm handler (`E2E_CRI_HANDLER`, default
//!   `wasmtime`; e.g. `wasmedge`): the pause container and the busybox
//!   sidecar run natively under that same handler, beside Wasm containers of
//!   the `cri` guest (test-images/guests/cri) and the `http-proxy` guest, a
//!   `wasi:http/proxy` component served by the shim.
//!
//! Tests that restart containerd take a write lock that every other test
//! holds for reading, so a restart never lands in the middle of another
//! test's calls.

use std::sync::RwLock;
use std::time::{Duration, Instant};

use e2e::cri::*;
use e2e::{config, eventually, mounts_mentioning, processes_mentioning, shim_socket_path};

static RESTART: RwLock<()> = RwLock::new(());

fn shared() -> std::sync::RwLockReadGuard<'static, ()> {
    RESTART.read().unwrap_or_else(|e| e.into_inner())
}

fn exclusive() -> std::sync::RwLockWriteGuard<'static, ()> {
    RESTART.write().unwrap_or_else(|e| e.into_inner())
}

/// The runtime handler of the Wasm pods.
fn wasm_handler() -> String {
    std::env::var("E2E_CRI_HANDLER")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "wasmtime".into())
}

fn cri() -> Cri {
    let cri = Cri::connect().expect("connecting to containerd's CRI");
    let (name, version, api) = cri.version().expect("CRI Version");
    assert_eq!(name, "containerd", "runtime name");
    assert_eq!(api, "v1", "CRI API version of containerd {version}");
    cri
}

/// A busybox container that runs `script` with sh; it exits 0 on SIGTERM.
fn busybox(name: &str, script: &str) -> ContainerConfigT {
    let image = cri_image("busybox");
    let script = format!("trap 'exit 0' TERM; {script}");
    container_config(name, &image, &["sh", "-c", &script], &[])
}

type ContainerConfigT = k8s_cri::v1::ContainerConfig;

/// Whether the engine of the Wasm pods lacks `capability`; if so, `test` is skipped and says
/// why (see `e2e::capabilities`).
fn skip_unless_handler_has(capability: &str, test: &str) -> bool {
    e2e::capabilities::skip_unless(&wasm_handler(), capability, test)
}

/// A container of the `cri` Wasm guest: `/cri.wasm ARGS...`. The guest is a WASI preview 2
/// component (`cri`), or for an engine without components the same program as a preview 1
/// core module (`cri-p1`).
fn wasm(name: &str, args: &[&str]) -> ContainerConfigT {
    let components = !e2e::capabilities::lacks(&wasm_handler()).contains_key("components");
    let image = cri_image(if components { "cri" } else { "cri-p1" });
    container_config(name, &image, &["/cri.wasm"], args)
}

/// The sidecar of the pods: idles, answering SIGTERM within a second.
fn sidecar() -> ContainerConfigT {
    busybox("sidecar", "while true; do sleep 1; done")
}

fn state_of(cri: &Cri, id: &str) -> ContainerState {
    let s = cri.container_status(id).expect("ContainerStatus");
    ContainerState::try_from(s.state).unwrap_or(ContainerState::ContainerUnknown)
}

/// The lines `stream` of a container's CRI log, partial lines joined.
fn log_lines(pod: &Pod<'_>, name: &str, stream: &str) -> Vec<String> {
    let lines = read_log(&pod.log_path(name)).unwrap_or_else(|e| panic!("{e}"));
    log_text_lines(&lines, stream)
}

/// Polls the CRI log of container `name` until a line of `stream` satisfies `f`.
#[track_caller]
fn wait_log(pod: &Pod<'_>, name: &str, stream: &str, what: &str, f: impl Fn(&str) -> bool) {
    let found = eventually(Duration::from_secs(20), || {
        log_lines(pod, name, stream).iter().any(|l| f(l))
    });
    assert!(
        found,
        "no {stream} line of {name} is {what} within 20s; the log:\n{}",
        std::fs::read_to_string(pod.log_path(name)).unwrap_or_default()
    );
}

/// What [`assert_nothing_left`] checks for, captured while the pod ran.
struct PodTrace {
    pod: String,
    containers: Vec<String>,
    netns: String,
    sandbox_pid: u32,
    ip: String,
    cgroup_parent: String,
}

/// Records what the running `pod` holds on the host.
fn trace(cri: &Cri, pod: &Pod<'_>, containers: &[&str]) -> PodTrace {
    let (status, info) = cri.pod_status(&pod.id).expect("PodSandboxStatus");
    let ip = status.network.map(|n| n.ip).unwrap_or_default();
    let info: serde_json::Value = info
        .get("info")
        .and_then(|i| serde_json::from_str(i).ok())
        .unwrap_or_else(|| {
            panic!(
                "PodSandboxStatus of {} has no verbose info: {info:?}",
                pod.id
            )
        });
    // The sandbox's network namespace, as its OCI spec names it.
    let netns = info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|n| n["type"] == "network")
        .and_then(|n| n["path"].as_str())
        .unwrap_or("")
        .to_string();
    let sandbox_pid = info["pid"].as_u64().unwrap_or(0) as u32;
    assert!(
        !netns.is_empty() && sandbox_pid > 0,
        "no netns path or pid in {info}"
    );
    PodTrace {
        pod: pod.id.clone(),
        containers: containers.iter().map(|c| c.to_string()).collect(),
        netns,
        sandbox_pid,
        ip,
        cgroup_parent: pod.cgroup_parent(),
    }
}

/// After the pod was stopped and removed: no netns, veth, mount, process,
/// cgroup, IPAM lease or shim state of it is left.
#[track_caller]
fn assert_nothing_left(cri: &Cri, t: &PodTrace) {
    let mut left = Vec::new();
    if cri.list_pods().expect("ListPodSandbox").contains(&t.pod) {
        left.push(format!("pod {} is still listed", t.pod));
    }
    let containers = cri.list_containers(None).expect("ListContainers");
    for (id, name, _) in &containers {
        if t.containers.contains(id) {
            left.push(format!("container {name} ({id}) is still listed"));
        }
    }
    if std::path::Path::new(&t.netns).exists() {
        left.push(format!("netns file {}", t.netns));
    }
    for id in std::iter::once(&t.pod).chain(&t.containers) {
        for m in mounts_mentioning(id) {
            left.push(format!("mount: {m}"));
        }
        // The Wasm shim's server serves the node's pods (its command line names the
        // container it was first started for); what a pod must not leave is its own.
        for (pid, cmd) in processes_mentioning(id) {
            if !(cmd.contains("containerd-shim-wasm") && cmd.contains("-socket")) {
                left.push(format!("process {pid}: {cmd}"));
            }
        }
        for (pid, name) in e2e::processes_named(&e2e::instance_name(id)) {
            left.push(format!("instance process {pid}: {name}"));
        }
        if shim_socket_path("k8s.io", id).exists() {
            left.push(format!("shim socket of {id}"));
        }
        if let Some(state) = &config().state_dir {
            for ns in [
                "io.containerd.runtime.v2.task/k8s.io",
                "io.containerd.runtime.v1.linux/k8s.io",
            ] {
                let p = state.join(ns).join(id);
                if p.exists() {
                    left.push(format!("shim state {}", p.display()));
                }
            }
        }
    }
    for m in mounts_mentioning(&t.netns) {
        left.push(format!("netns mount: {m}"));
    }
    if std::path::Path::new(&format!("/proc/{}", t.sandbox_pid)).exists() {
        let cmd = std::fs::read(format!("/proc/{}/cmdline", t.sandbox_pid)).unwrap_or_default();
        let comm =
            std::fs::read_to_string(format!("/proc/{}/comm", t.sandbox_pid)).unwrap_or_default();
        // A pause container, or the shim's holder of a pause-less pod.
        if String::from_utf8_lossy(&cmd).contains("pause") || comm.trim_end() == "wasm-pod" {
            left.push(format!("sandbox process {}", t.sandbox_pid));
        }
    }
    for d in cgroup_dirs(&t.cgroup_parent) {
        left.push(format!("cgroup {}", d.display()));
    }
    let env = cri_env();
    if let Some(bridge) = &env.bridge {
        let out = std::process::Command::new("ip")
            .args(["-o", "link", "show", "master", bridge])
            .output()
            .expect("running ip link");
        let text = String::from_utf8_lossy(&out.stdout);
        // Only this pod's veth: other tests' pods share the bridge.
        let netns_name = std::path::Path::new(&t.netns)
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let mine = format!("link-netns {netns_name} ");
        for l in text
            .lines()
            .filter(|l| !netns_name.is_empty() && format!("{l} ").contains(&mine))
        {
            left.push(format!("interface on {bridge}: {l}"));
        }
    }
    if let (Some(dir), false) = (&env.ipam_dir, t.ip.is_empty()) {
        for lease in e2e::files_named_like(dir, &t.ip) {
            if lease
                .file_name()
                .map(|n| n == t.ip.as_str())
                .unwrap_or(false)
            {
                left.push(format!("IPAM lease {}", lease.display()));
            }
        }
    }
    assert!(
        left.is_empty(),
        "left behind by pod {}:\n  {}",
        t.pod,
        left.join("\n  ")
    );
}

/// Restarts the private containerd (scripts/lib/containerd.sh ctd_restart).
fn restart_containerd() {
    let lib = e2e::repo_root().join("scripts/lib/containerd.sh");
    let out = e2e::run_with_timeout(
        "bash",
        &[
            "-c".into(),
            "source \"$1\" && ctd_restart".into(),
            "bash".into(),
            lib.to_string_lossy().into_owned(),
        ],
        e2e::Input::Null,
        Duration::from_secs(60),
    );
    out.assert_success();
}

fn ip_in_subnet(ip: &str) {
    if let Some(subnet) = cri_env().subnet {
        let prefix = subnet.trim_end_matches("0/24");
        assert!(
            ip.starts_with(prefix),
            "pod IP {ip} is not in the pod network {subnet}"
        );
    }
}

/// Checks CPU and memory figures of a running container's stats.
#[track_caller]
fn check_stats(what: &str, s: &ContainerStats, limit: Option<u64>) {
    let cpu = s
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    assert!(
        cpu > 0,
        "{what}: CPU usage is 0 for a busy container: {s:?}"
    );
    let mem = s
        .memory
        .as_ref()
        .unwrap_or_else(|| panic!("{what}: no memory stats: {s:?}"));
    let ws = mem.working_set_bytes.as_ref().map(|v| v.value).unwrap_or(0);
    assert!(ws > 0, "{what}: working set is 0: {s:?}");
    if let Some(limit) = limit {
        let avail = mem.available_bytes.as_ref().map(|v| v.value).unwrap_or(0);
        assert!(
            avail > 0 && avail <= limit && ws <= limit,
            "{what}: availableBytes {avail} / workingSet {ws} not within the limit {limit}: {s:?}"
        );
    }
}

/// A pod under `handler` where the busy container `busy` runs with a memory
/// limit: ContainerStats, ListContainerStats and PodSandboxStats.
fn check_all_stats(cri: &Cri, pod: &Pod<'_>, busy: &str, limit: u64) {
    // CPU accounting needs a moment of work.
    std::thread::sleep(Duration::from_millis(1500));
    let s = cri.container_stats(busy).expect("ContainerStats");
    check_stats("ContainerStats", &s, Some(limit));
    let first = s
        .cpu
        .and_then(|c| c.usage_core_nano_seconds)
        .map(|v| v.value)
        .unwrap_or(0);
    let all = cri
        .list_container_stats(&pod.id)
        .expect("ListContainerStats");
    let listed = all
        .iter()
        .find(|s| s.attributes.as_ref().map(|a| a.id.as_str()) == Some(busy))
        .unwrap_or_else(|| panic!("ListContainerStats has no entry for {busy}: {all:?}"));
    check_stats("ListContainerStats", listed, Some(limit));
    // Usage grows while it runs (polled for 10s: the machine may be loaded).
    let mut again = first;
    let grew = eventually(Duration::from_secs(10), || {
        again = cri
            .container_stats(busy)
            .ok()
            .and_then(|s| s.cpu)
            .and_then(|c| c.usage_core_nano_seconds)
            .map(|v| v.value)
            .unwrap_or(0);
        again > first
    });
    assert!(
        grew,
        "CPU usage of a busy container did not grow in 10s: {first} then {again}"
    );
    let ps = cri.pod_stats(&pod.id).expect("PodSandboxStats");
    let linux = ps
        .linux
        .unwrap_or_else(|| panic!("PodSandboxStats without linux stats"));
    let pod_cpu = linux
        .cpu
        .as_ref()
        .and_then(|c| c.usage_core_nano_seconds.as_ref())
        .map(|v| v.value)
        .unwrap_or(0);
    assert!(pod_cpu > 0, "PodSandboxStats: pod CPU usage is 0");
    assert!(
        linux
            .containers
            .iter()
            .any(|c| c.attributes.as_ref().map(|a| a.id.as_str()) == Some(busy)),
        "PodSandboxStats does not list {busy}: {:?}",
        linux.containers
    );
}

// ---------------------------------------------------------------------------
// The harness with runc.

/// A runc pod with pause + busybox: network, exec, logs, stats, the memory
/// limit, stop, remove and the clean-up checks.
#[test]
fn runc_pod_lifecycle() {
    let _g = shared();
    let cri = cri();
    let pod = Pod::run(&cri, "runc-pod", "runc").expect("RunPodSandbox");
    let ip = pod.ip().expect("pod IP");
    ip_in_subnet(&ip);

    // Logs: a long line (split into P parts), a burst, stderr, and a last
    // line without a line end (a P line).
    let spew = busybox(
        "spew",
        "s=xxxxxxxxxx; for i in 1 2 3 4 5 6 7 8 9 10 11 12; do s=$s$s; done; echo $s; \
         i=1; while [ $i -le 20000 ]; do echo burst $i; i=$((i+1)); done; \
         echo to stderr >&2; printf 'no newline at the end'",
    );
    let spew_id = pod.start(&spew).expect("starting spew");
    let busy = with_memory_limit(
        busybox(
            "busy",
            "i=0; while true; do i=$((i+1)); [ $((i % 100000)) = 0 ] && echo tick $i; done",
        ),
        64 << 20,
    );
    let busy_id = pod.start(&busy).expect("starting busy");
    let side_id = pod.start(&sidecar()).expect("starting sidecar");

    // ExecSync into the sidecar.
    let r = cri
        .exec_sync(
            &side_id,
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            10,
        )
        .expect("ExecSync");
    assert_eq!(
        (r.stdout.as_str(), r.stderr.as_str(), r.code),
        ("out\n", "err\n", 3),
        "{r:?}"
    );

    let st = cri
        .wait_container_state(
            &spew_id,
            ContainerState::ContainerExited,
            Duration::from_secs(60),
        )
        .expect("spew exits");
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (0, "Completed"),
        "{}",
        describe_status(&st)
    );
    check_spew_log(&pod, "spew", 40960, Some(&spew_id));

    check_all_stats(&cri, &pod, &busy_id, 64 << 20);

    // The memory limit: a shell string doubling until the cgroup's OOM
    // killer ends it; CRI says why.
    let hog = with_memory_limit(
        busybox("hog", "s=xxxxxxxxxxxxxxxx; while true; do s=$s$s; done"),
        32 << 20,
    );
    let hog_id = pod.start(&hog).expect("starting hog");
    let st = cri
        .wait_exit_reason(&hog_id, "OOMKilled", Duration::from_secs(60))
        .expect("hog is stopped by the OOM killer");
    assert_ne!(st.exit_code, 0, "{}", describe_status(&st));

    let t = trace(&cri, &pod, &[&spew_id, &busy_id, &side_id, &hog_id]);
    assert_eq!(state_of(&cri, &side_id), ContainerState::ContainerRunning);
    pod.remove().expect("stopping and removing the pod");
    assert_nothing_left(&cri, &t);
}

/// What the `spew` containers wrote, as the CRI log shows it.
#[track_caller]
/// `runc_id`: the container is runc's, whose log tail containerd 1.6 may lose (below).
fn check_spew_log(pod: &Pod<'_>, name: &str, long: usize, runc_id: Option<&str>) {
    // Complete when the exit is reported: the shim reports it once containerd has read the
    // FIFOs (containerd closes them right after), so nothing waits here.
    let path = pod.log_path(name);
    let raw = read_log(&path).unwrap_or_else(|e| panic!("{e}"));
    let out = log_text_lines(&raw, "stdout");
    assert!(
        raw.iter().any(|l| l.partial && l.text.starts_with('x')),
        "the 40000-byte line was not split into partial (P) lines"
    );
    let first = out.first().map(String::as_str).unwrap_or("");
    assert!(
        first.len() == long && first.bytes().all(|b| b == b'x'),
        "the first line should be {long} x, it is {} bytes: {:?}...",
        first.len(),
        first.chars().take(50).collect::<String>()
    );
    let burst: Vec<&String> = out.iter().filter(|l| l.starts_with("burst ")).collect();
    if burst.len() < 20000 && runc_id.is_some_and(containerd_16_cut_the_log) {
        // What is there must still be the start of the burst, in order.
        for (i, l) in burst.iter().enumerate() {
            assert_eq!(
                **l,
                format!("burst {}", i + 1),
                "runc's log is out of order"
            );
        }
        println!(
            "NOTE: containerd {:?} closed runc's output FIFO before reading it all ('Failed to \
             pipe stdout' in its log): the runc container's log has {} of 20000 burst lines",
            e2e::containerd_version(),
            burst.len()
        );
        return;
    }
    if burst.len() != 20000 {
        let seen: std::collections::HashSet<&str> = burst.iter().map(|l| l.as_str()).collect();
        let missing: Vec<usize> = (1..=20000)
            .filter(|i| !seen.contains(format!("burst {i}").as_str()))
            .collect();
        panic!(
            "{} burst lines in the log, not 20000; missing {} of them, first {:?}, last {:?}; \
             last line of the log: {:?}",
            burst.len(),
            missing.len(),
            &missing[..missing.len().min(5)],
            missing.last(),
            raw.last()
        );
    }
    for (i, l) in burst.iter().enumerate() {
        assert_eq!(
            **l,
            format!("burst {}", i + 1),
            "burst line {} out of order",
            i + 1
        );
    }
    let last = raw
        .iter()
        .rfind(|l| l.stream == "stdout")
        .expect("stdout lines");
    assert!(
        last.partial && last.text == "no newline at the end",
        "the last stdout line should be a P line 'no newline at the end': {last:?}"
    );
    assert_eq!(log_text_lines(&raw, "stderr"), ["to stderr"]);
}

/// containerd 1.6 closes a container's output FIFOs as soon as it learns of the exit, and
/// runc's shim does not wait for it to read them: under load the log of a runc container can
/// lose its tail, and containerd then logs `Failed to pipe stdout of container "<id>"`. The
/// Wasm shim waits until containerd has read its output, so its logs are checked in full.
fn containerd_16_cut_the_log(id: &str) -> bool {
    e2e::containerd_version() < (1, 7)
        && e2e::containerd_log().is_some_and(|log| {
            log.contains(&format!("Failed to pipe stdout of container \"{id}\""))
        })
}

/// containerd restarts with a runc pod running: it stays RUNNING, keeps
/// logging, exec works, and stop/remove afterwards leave nothing.
#[test]
fn runc_pod_survives_containerd_restart() {
    let _g = exclusive();
    let cri = cri();
    let pod = Pod::run(&cri, "runc-restart", "runc").expect("RunPodSandbox");
    let ticker = pod
        .start(&busybox(
            "ticker",
            "i=0; while true; do i=$((i+1)); echo tick $i; sleep 0.2; done",
        ))
        .expect("starting ticker");
    wait_log(&pod, "ticker", "stdout", "a tick", |l| {
        l.starts_with("tick ")
    });
    check_restart(&cri, pod, &ticker, None);
}

/// Restarts containerd and checks the pod `pod` with the logging container
/// `ticker` (and `sidecar`, if any) afterwards, then removes it.
fn check_restart(cri: &Cri, pod: Pod<'_>, ticker: &str, sidecar: Option<&str>) {
    let mut ids = vec![ticker];
    ids.extend(sidecar);
    let t = trace(cri, &pod, &ids);
    restart_containerd();
    let cri2 = cri.reconnect().expect("reconnecting");
    // Pods and containers are reloaded from containerd's store.
    let ok = eventually(Duration::from_secs(20), || {
        cri2.container_status(ticker)
            .map(|s| s.state == ContainerState::ContainerRunning as i32)
            .unwrap_or(false)
    });
    assert!(
        ok,
        "{ticker} is not RUNNING after the restart: {:?}",
        cri2.container_status(ticker).map(|s| describe_status(&s))
    );
    let (status, _) = cri2
        .pod_status(&pod.id)
        .expect("PodSandboxStatus after the restart");
    assert_eq!(
        status.state, 0,
        "pod is not SANDBOX_READY after the restart: {status:?}"
    );
    let before = log_lines(&pod, "ticker", "stdout").len();
    let grew = eventually(Duration::from_secs(10), || {
        log_lines(&pod, "ticker", "stdout").len() > before + 2
    });
    assert!(
        grew,
        "{ticker} stopped logging after the restart ({before} lines)"
    );
    if let Some(side) = sidecar {
        let r = cri2
            .exec_sync(side, &["echo", "after restart"], 10)
            .expect("ExecSync after the restart");
        assert_eq!((r.stdout.as_str(), r.code), ("after restart\n", 0), "{r:?}");
    }
    // Remove through the new connection.
    let mut pod = pod;
    pod.disarm();
    cri2.stop_pod(&pod.id)
        .expect("StopPodSandbox after the restart");
    cri2.remove_pod(&pod.id)
        .expect("RemovePodSandbox after the restart");
    remove_cgroup(&pod.cgroup_parent()).expect("removing the pod cgroup");
    assert_nothing_left(&cri2, &t);
}

// ---------------------------------------------------------------------------
// Wasm pods: the pause container and the busybox sidecar run natively under
// the Wasm handler, next to Wasm containers.

/// A Wasm pod whose guests may listen on port 8080, with `annotations` besides. As a
/// Kubernetes user grants it: pod annotations, which CRI copies into the spec of the pod's
/// containers because the runtime lists `pod_annotations = ["wasm-shim/*"]`.
fn listening_pod<'a>(cri: &'a Cri, name: &str, annotations: &[(&str, &str)]) -> Pod<'a> {
    let mut config = e2e::cri::pod_config(name);
    config
        .annotations
        .insert("wasm-shim/net-listen".into(), "*:8080".into());
    for (k, v) in annotations {
        config.annotations.insert(k.to_string(), v.to_string());
    }
    Pod::run_with(cri, config, &wasm_handler()).expect("RunPodSandbox")
}

/// Waits until the pod's `server` container (the guest's `serve 8080`) listens.
fn wait_listening(pod: &Pod<'_>) {
    wait_log(
        pod,
        "server",
        "stdout",
        "'listening on 0.0.0.0:8080'",
        |l| l == "listening on 0.0.0.0:8080",
    );
}

/// The Wasm HTTP server guest answers on the pod IP from the host and on
/// localhost from the sidecar; its log has the requests; exec into it fails
/// clearly, exec into the sidecar works.
#[test]
fn wasm_pod_serves_http() {
    if skip_unless_handler_has("sockets", "wasm_pod_serves_http") {
        return;
    }
    let _g = shared();
    let cri = cri();
    let pod = listening_pod(&cri, "wasm-http", &[]);
    let ip = pod.ip().expect("pod IP");
    ip_in_subnet(&ip);
    let greeting = format!("from-{}", pod.id.get(..12).unwrap_or(&pod.id));
    let server = with_env(wasm("server", &["serve", "8080"]), "GREETING", &greeting);
    let server_id = pod.start(&server).expect("starting the Wasm server");
    let side_id = pod.start(&sidecar()).expect("starting the sidecar");
    wait_listening(&pod);

    let (head, body) = http_get(&format!("{ip}:8080"), "/from-host", Duration::from_secs(10))
        .unwrap_or_else(|e| panic!("GET from the host: {e}"));
    assert!(head.contains("200"), "status line {head:?}");
    assert_eq!(
        body,
        format!("hello from the cri guest\nGREETING={greeting}\npath=/from-host\n")
    );

    let r = cri
        .exec_sync(
            &side_id,
            &[
                "wget",
                "-q",
                "-O",
                "-",
                "http://127.0.0.1:8080/from-sidecar",
            ],
            20,
        )
        .expect("ExecSync wget in the sidecar");
    assert_eq!(r.code, 0, "wget from the sidecar: {r:?}");
    assert_eq!(
        r.stdout,
        format!("hello from the cri guest\nGREETING={greeting}\npath=/from-sidecar\n")
    );
    wait_log(&pod, "server", "stdout", "'request /from-sidecar'", |l| {
        l == "request /from-sidecar"
    });
    assert!(log_lines(&pod, "server", "stdout")
        .iter()
        .any(|l| l == "request /from-host"));

    match cri.exec_sync(&server_id, &["/cri.wasm", "spew"], 10) {
        Ok(r) => panic!("exec into a Wasm container should fail, it returned {r:?}"),
        Err(e) => assert!(
            e.to_string().to_lowercase().contains("not supported"),
            "exec into a Wasm container should fail as not supported: {e}"
        ),
    }
    assert_eq!(state_of(&cri, &server_id), ContainerState::ContainerRunning);

    let t = trace(&cri, &pod, &[&server_id, &side_id]);
    pod.remove().expect("stopping and removing the pod");
    assert_nothing_left(&cri, &t);
}

/// Outbound connections obey the pod's allowlist, on every engine (under WasmEdge the kernel
/// holds its socket extension to it): a guest allowed `127.0.0.1:8080` reaches the pod's own
/// server there, and is refused the same server through the pod IP (reachable, not allowed),
/// which the shim log names as `host not allowed: IP:8080`; a guest of a pod with no
/// allowlist gets no network at all.
#[test]
fn wasm_connect_obeys_the_allowlist() {
    if skip_unless_handler_has("sockets", "wasm_connect_obeys_the_allowlist") {
        return;
    }
    let _g = shared();
    let cri = cri();
    let handler = wasm_handler();
    let pod = listening_pod(
        &cri,
        "wasm-net",
        &[("wasm-shim/net-connect", "127.0.0.1:8080")],
    );
    let ip = pod.ip().expect("pod IP");
    let server_id = pod
        .start(&wasm("server", &["serve", "8080"]))
        .expect("starting the Wasm server");
    wait_listening(&pod);

    let exited = |id: &str| {
        let st = cri
            .wait_container_state(id, ContainerState::ContainerExited, Duration::from_secs(30))
            .expect("the client exits");
        st.exit_code
    };
    // The guest's exit code for a failed connect: 3, or 1 from a preview 2 component
    // (`wasi:cli/exit` carries only failure).
    let refused_code = if e2e::capabilities::lacks(&handler).contains_key("components") {
        3
    } else {
        1
    };
    let allowed = pod
        .start(&wasm("allowed", &["connect", "127.0.0.1:8080"]))
        .expect("starting the allowed client");
    assert_eq!(
        exited(&allowed),
        0,
        "{:?}",
        log_lines(&pod, "allowed", "stderr")
    );
    assert!(
        log_lines(&pod, "allowed", "stdout")
            .iter()
            .any(|l| l.starts_with("HTTP/1.0 200")),
        "the allowed client got no answer: {:?}",
        log_lines(&pod, "allowed", "stdout")
    );

    let target = format!("{ip}:8080");
    let refused = pod
        .start(&wasm("refused", &["connect", &target]))
        .expect("starting the refused client");
    assert_eq!(
        exited(&refused),
        refused_code,
        "{:?}",
        log_lines(&pod, "refused", "stdout")
    );
    let wanted = format!("host not allowed: {target}");
    let log = e2e::containerd_log().unwrap_or_default();
    assert!(
        log.lines().any(|l| l.contains(&wanted)),
        "the shim log should say {wanted:?}"
    );

    // No allowlist: no network, not even to a server that answers the pod above.
    let closed = Pod::run(&cri, "wasm-no-net", &handler).expect("RunPodSandbox");
    let lonely = closed
        .start(&wasm("lonely", &["connect", &target]))
        .expect("starting the client without network");
    assert_eq!(
        exited(&lonely),
        refused_code,
        "{:?}",
        log_lines(&closed, "lonely", "stdout")
    );
    assert!(
        log_lines(&closed, "lonely", "stderr")
            .iter()
            .any(|l| l.starts_with(&format!("error: connect {target}"))),
        "{:?}",
        log_lines(&closed, "lonely", "stderr")
    );

    let t = trace(&cri, &pod, &[&server_id, &allowed, &refused]);
    pod.remove().expect("stopping and removing the pod");
    assert_nothing_left(&cri, &t);
    let t = trace(&cri, &closed, &[&lonely]);
    closed.remove().expect("stopping and removing the pod");
    assert_nothing_left(&cri, &t);
}

/// A Wasm pod whose annotation `wasm-shim/http-proxy-port` names `port`.
fn http_proxy_pod<'a>(cri: &'a Cri, name: &str, port: u16) -> Pod<'a> {
    let mut config = e2e::cri::pod_config(name);
    config
        .annotations
        .insert("wasm-shim/http-proxy-port".into(), port.to_string());
    Pod::run_with(cri, config, &wasm_handler()).expect("RunPodSandbox")
}

/// A pod annotated `wasm-shim/http-proxy-port` serves the `http-proxy` guest, a
/// `wasi:http/proxy` component, on that port of the pod IP: one fresh instance per request
/// (each request sees the container's env, each prints its line into the CRI log), a trap
/// answers 500 and the next request is served, and StopContainer is prompt (a graceful stop
/// with nothing in flight: exit 0).
#[test]
fn wasm_pod_serves_wasi_http_proxy() {
    if skip_unless_handler_has("wasi-http", "wasm_pod_serves_wasi_http_proxy") {
        return;
    }
    let _g = shared();
    let cri = cri();
    let pod = http_proxy_pod(&cri, "wasm-http-proxy", 8081);
    let ip = pod.ip().expect("pod IP");
    let greeting = format!("from-{}", pod.id.get(..12).unwrap_or(&pod.id));
    let image = cri_image("http-proxy");
    let proxy = with_env(
        container_config("proxy", &image, &["/http-proxy.wasm"], &[]),
        "GREETING",
        &greeting,
    );
    let id = pod
        .start(&proxy)
        .expect("starting the wasi:http/proxy container");
    let get = |path: &str| {
        http_get(&format!("{ip}:8081"), path, Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("GET {path} from the host: {e}"))
    };

    for path in ["/x", "/second?n=2"] {
        let (head, body) = get(path);
        assert!(head.contains(" 200 "), "GET {path}: status line {head:?}");
        assert_eq!(
            body,
            format!("hello from wasi:http {path}\nGREETING={greeting}\n")
        );
    }
    let (head, _) = get("/trap");
    assert!(head.contains(" 500 "), "GET /trap: status line {head:?}");
    let (head, body) = get("/after-trap");
    assert!(head.contains(" 200 "), "GET /after-trap: {head:?} {body:?}");

    wait_log(&pod, "proxy", "stdout", "'request GET /after-trap'", |l| {
        l == "request GET /after-trap"
    });
    let out = log_lines(&pod, "proxy", "stdout");
    for line in [
        "request GET /x",
        "request GET /second?n=2",
        "request GET /trap",
    ] {
        assert!(out.iter().any(|l| l == line), "no {line:?} in {out:?}");
    }
    // stderr is its own pipe: its lines may reach the log after stdout's.
    wait_log(&pod, "proxy", "stderr", "the trap", |l| {
        l.contains("asked to trap")
    });
    assert_eq!(state_of(&cri, &id), ContainerState::ContainerRunning);

    // SIGTERM with nothing in flight: the server drains at once and exits 0.
    let start = Instant::now();
    cri.stop_container(&id, 30).expect("StopContainer");
    let st = cri.container_status(&id).expect("ContainerStatus");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "StopContainer took {:?}",
        start.elapsed()
    );
    assert_eq!(st.exit_code, 0, "{}", describe_status(&st));
    let t = trace(&cri, &pod, &[&id]);
    pod.remove().expect("stopping and removing the pod");
    assert_nothing_left(&cri, &t);
}

/// StopContainer with a 30 s grace period ends a Wasm guest well within it: SIGTERM
/// interrupts the instance, which exits 143.
#[track_caller]
fn assert_stop_is_prompt(cri: &Cri, id: &str) {
    let start = Instant::now();
    cri.stop_container(id, 30).expect("StopContainer");
    let took = start.elapsed();
    let st = cri.container_status(id).expect("ContainerStatus");
    assert!(
        took < Duration::from_secs(5),
        "StopContainer took {took:?} of a 30s grace period"
    );
    assert_eq!(st.exit_code, 143, "{}", describe_status(&st));
}

/// Samples per figure of the `*_figures` runs: `CRI_FIGURES_N`, else `default`.
fn figures_n(default: usize) -> usize {
    std::env::var("CRI_FIGURES_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Not a test: request latency of a served `wasi:http/proxy` component, as the host sees
/// it: `CRI_FIGURES_N` (default 50) sequential GETs, each on a new connection (a fresh
/// instance each), after one warm-up request. Run with `--ignored wasi_http_figures`.
#[test]
#[ignore]
fn wasi_http_figures() {
    if skip_unless_handler_has("wasi-http", "wasi_http_figures") {
        return;
    }
    let _g = shared();
    let cri = cri();
    let n = figures_n(50);
    let pod = http_proxy_pod(&cri, "wasi-http-figures", 8083);
    let addr = format!("{}:8083", pod.ip().expect("pod IP"));
    let image = cri_image("http-proxy");
    pod.start(&container_config(
        "proxy",
        &image,
        &["/http-proxy.wasm"],
        &[],
    ))
    .expect("starting the wasi:http/proxy container");
    let mut ms = Vec::with_capacity(n);
    for i in 0..=n {
        let t0 = Instant::now();
        let (head, _) = http_get(&addr, &format!("/r{i}"), Duration::from_secs(10))
            .unwrap_or_else(|e| panic!("GET /r{i}: {e}"));
        assert!(head.contains(" 200 "), "GET /r{i}: {head:?}");
        if i > 0 {
            ms.push(t0.elapsed().as_secs_f64() * 1e3);
        }
    }
    ms.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "wasi:http/proxy, {n} GETs on new connections: median {:.2} ms, p90 {:.2} ms, max {:.2} ms",
        ms[n / 2],
        ms[n * 9 / 10],
        ms[n - 1]
    );
    pod.remove().expect("removing the pod");
}

/// The annotation on a module that is no `wasi:http/proxy` component (the `cri` guest, a
/// command): the container fails to start, saying what the module lacks (or, on an engine
/// that cannot serve `wasi:http/proxy`, why it cannot).
#[test]
fn wasm_http_proxy_port_needs_a_proxy_component() {
    let _g = shared();
    let cri = cri();
    let pod = http_proxy_pod(&cri, "wasm-not-a-proxy", 8082);
    let id = cri
        .create_container(&pod.id, &pod.config, &wasm("command", &["serve", "8082"]))
        .expect("CreateContainer");
    let err = cri
        .start_container(&id)
        .expect_err("a command component cannot be served as wasi:http/proxy");
    // An engine that cannot serve at all says that instead, with its reason.
    let wanted = e2e::capabilities::lacks(&wasm_handler())
        .get("wasi-http")
        .cloned()
        .unwrap_or_else(|| "needs a component that exports wasi:http/incoming-handler".into());
    assert!(err.to_string().contains(&wanted), "StartContainer: {err}");
    let st = cri.container_status(&id).expect("ContainerStatus");
    assert_ne!(
        ContainerState::try_from(st.state),
        Ok(ContainerState::ContainerRunning),
        "{}",
        describe_status(&st)
    );
    let t = trace(&cri, &pod, &[&id]);
    pod.remove().expect("stopping and removing the pod");
    assert_nothing_left(&cri, &t);
}

/// The CRI log of a Wasm guest: a long line as P parts, a burst of 20000
/// lines in order, stderr, a last line without a line end.
#[test]
fn wasm_logs() {
    let _g = shared();
    let cri = cri();
    let pod = Pod::run(&cri, "wasm-logs", &wasm_handler()).expect("RunPodSandbox");
    let id = pod.start(&wasm("spew", &["spew"])).expect("starting spew");
    let st = cri
        .wait_container_state(
            &id,
            ContainerState::ContainerExited,
            Duration::from_secs(60),
        )
        .expect("spew exits");
    assert_eq!(
        (st.exit_code, st.reason.as_str()),
        (0, "Completed"),
        "{}",
        describe_status(&st)
    );
    check_spew_log(&pod, "spew", 40000, None);
    let t = trace(&cri, &pod, &[&id]);
    pod.remove().expect("stopping and removing the pod");
    assert_nothing_left(&cri, &t);
}

/// Stats of a busy Wasm guest with a memory limit, through all three calls.
#[test]
fn wasm_stats() {
    let _g = shared();
    let cri = cri();
    let pod = Pod::run(&cri, "wasm-stats", &wasm_handler()).expect("RunPodSandbox");
    let limit = 64u64 << 20;
    let id = pod
        .start(&with_memory_limit(
            wasm("busy", &["tick", "500"]),
            limit as i64,
        ))
        .expect("starting busy");
    wait_log(&pod, "busy", "stdout", "a tick", |l| l.starts_with("tick "));
    check_all_stats(&cri, &pod, &id, limit);
    let t = trace(&cri, &pod, &[&id]);
    pod.remove().expect("stopping and removing the pod");
    assert_nothing_left(&cri, &t);
}

/// A Wasm guest that grows its memory past the container's limit is stopped,
/// and ContainerStatus says it was the memory limit (OOMKilled, as for a
/// Linux container).
#[test]
fn wasm_memory_limit() {
    let _g = shared();
    let cri = cri();
    let pod = Pod::run(&cri, "wasm-oom", &wasm_handler()).expect("RunPodSandbox");
    let id = pod
        .start(&with_memory_limit(wasm("grow", &["grow"]), 48 << 20))
        .expect("starting grow");
    let st = cri
        .wait_exit_reason(&id, "OOMKilled", Duration::from_secs(60))
        .expect("grow is stopped at its memory limit");
    assert_ne!(st.exit_code, 0, "{}", describe_status(&st));
    assert!(
        log_lines(&pod, "grow", "stdout")
            .iter()
            .any(|l| l.starts_with("grew ")),
        "the guest did not get to allocate anything"
    );
    let t = trace(&cri, &pod, &[&id]);
    pod.remove().expect("stopping and removing the pod");
    assert_nothing_left(&cri, &t);
}

/// Stopping a long-running (busy) Wasm guest with a 30 s grace period ends it
/// in well under that: SIGTERM interrupts it (exit 143).
#[test]
fn wasm_stop_is_prompt() {
    let _g = shared();
    let cri = cri();
    let pod = Pod::run(&cri, "wasm-stop", &wasm_handler()).expect("RunPodSandbox");
    let id = pod
        .start(&wasm("busy", &["tick", "1000"]))
        .expect("starting busy");
    wait_log(&pod, "busy", "stdout", "a tick", |l| l.starts_with("tick "));
    assert_stop_is_prompt(&cri, &id);
    let t = trace(&cri, &pod, &[&id]);
    let start = Instant::now();
    pod.remove().expect("stopping and removing the pod");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "StopPodSandbox + Remove took {:?}",
        start.elapsed()
    );
    assert_nothing_left(&cri, &t);
}

/// containerd restarts with a Wasm pod (a logging Wasm guest and the busybox
/// sidecar) running: both stay RUNNING, the log keeps growing, exec into the
/// sidecar works, and stop/remove afterwards leave nothing.
#[test]
fn wasm_pod_survives_containerd_restart() {
    let _g = exclusive();
    let cri = cri();
    let pod = Pod::run(&cri, "wasm-restart", &wasm_handler()).expect("RunPodSandbox");
    let ticker = pod
        .start(&wasm("ticker", &["tick", "200"]))
        .expect("starting ticker");
    let side = pod.start(&sidecar()).expect("starting the sidecar");
    wait_log(&pod, "ticker", "stdout", "a tick", |l| {
        l.starts_with("tick ")
    });
    check_restart(&cri, pod, &ticker, Some(&side));
}

/// The CNCF Wasm OCI artifact (config `application/vnd.wasm.config.v0+json`, one
/// `application/wasm` layer): `ctr run` cannot start it (its config is not an image config),
/// CRI can, and the shim reads the module from containerd's content store. containerd 1.6
/// cannot unpack a layer that is not a tar, so it runs on 1.7 and 2.x.
#[test]
fn wasm_cncf_artifact_runs() {
    let (major, minor) = e2e::containerd_version();
    if (major, minor) < (1, 7) {
        eprintln!("skipped: containerd {major}.{minor} cannot unpack non-tar image layers");
        return;
    }
    let _g = shared();
    let cri = cri();
    let ns = e2e::Ns::named(CRI_NAMESPACE);
    let tar = config().images_dir.join("hello-artifact.tar");
    ns.ctr_with(
        &["image", "import", "--all-platforms", tar.to_str().unwrap()],
        e2e::Input::Null,
        e2e::CTR_TIMEOUT * 2,
    )
    .assert_success();
    let image = e2e::image_ref("hello-artifact");
    let pod = Pod::run(&cri, "wasm-artifact", &wasm_handler()).expect("RunPodSandbox");
    // The artifact's config names no entrypoint: the pod spec gives the command.
    let id = pod
        .start(&container_config("hello", &image, &["/hello.wasm"], &[]))
        .expect("starting the artifact");
    let st = cri
        .wait_container_state(
            &id,
            ContainerState::ContainerExited,
            Duration::from_secs(30),
        )
        .expect("hello exits");
    assert_eq!(st.exit_code, 0, "{}", describe_status(&st));
    assert_eq!(log_lines(&pod, "hello", "stdout"), ["hello from wasm"]);
    let t = trace(&cri, &pod, &[&id]);
    pod.remove().expect("stopping and removing the pod");
    assert_nothing_left(&cri, &t);
}

/// Not a test: the CRI figures of docs/benchmarks-cri.md. Alternates runc and Wasm pods, each
/// a sandbox plus one sleeping container (busybox `sleep` under runc, the Wasm `tick` guest
/// under the Wasm handler), and prints medians of RunPodSandbox, CreateContainer and
/// StartContainer as the client sees them, plus the PSS of the pod's shim and of the
/// processes serving its container. Run with `--ignored cri_figures`.
#[test]
#[ignore]
fn cri_figures() {
    let _g = shared();
    let cri = cri();
    let n = figures_n(10);
    /// Per handler, the samples of each column.
    #[derive(Default)]
    struct Row {
        handler: &'static str,
        run_pod: Vec<f64>,
        create: Vec<f64>,
        start: Vec<f64>,
        shim_pss: Vec<f64>,
        serving_pss: Vec<f64>,
    }
    let mut rows = ["runc", "wasm"].map(|handler| Row {
        handler,
        ..Row::default()
    });
    for i in 0..n + 1 {
        for row in rows.iter_mut() {
            let handler = if row.handler == "runc" {
                "runc".to_string()
            } else {
                wasm_handler()
            };
            let t0 = Instant::now();
            let pod = Pod::run(&cri, &format!("fig-{}-{i}", row.handler), &handler)
                .expect("RunPodSandbox");
            let run_pod = t0.elapsed();
            let config = if row.handler == "runc" {
                busybox("c", "sleep 600")
            } else {
                wasm("c", &["tick", "100000"])
            };
            let t1 = Instant::now();
            let id = cri
                .create_container(&pod.id, &pod.config, &config)
                .expect("CreateContainer");
            let create = t1.elapsed();
            let t2 = Instant::now();
            cri.start_container(&id).expect("StartContainer");
            let start = t2.elapsed();
            std::thread::sleep(Duration::from_millis(300));
            // The pod's shim is the process whose -id is the sandbox's id.
            let shim: Vec<u32> = processes_mentioning(&pod.id)
                .into_iter()
                .filter(|(_, cmd)| cmd.contains("-id ") && cmd.contains("shim"))
                .map(|(pid, _)| pid)
                .collect();
            // The container's own process: the instance process of a Wasm container.
            let serving: Vec<u32> = e2e::Ns::named(CRI_NAMESPACE)
                .task(&id)
                .map(|t| t.pid)
                .into_iter()
                .collect();
            if i > 0 {
                // The first round warms images and the node cache.
                row.run_pod.push(run_pod.as_secs_f64() * 1e3);
                row.create.push(create.as_secs_f64() * 1e3);
                row.start.push(start.as_secs_f64() * 1e3);
                row.shim_pss.push(pss_kib(&shim) / 1024.0);
                row.serving_pss.push(pss_kib(&serving) / 1024.0);
            }
            pod.remove().expect("removing the pod");
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[v.len() / 2]
    };
    println!("| handler | RunPodSandbox ms | CreateContainer ms | StartContainer ms | PSS of the pod's shim MB | PSS of the container's own processes MB |");
    println!("|---|---|---|---|---|---|");
    for row in rows.iter_mut() {
        println!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.1} |",
            row.handler,
            median(&mut row.run_pod),
            median(&mut row.create),
            median(&mut row.start),
            median(&mut row.shim_pss),
            median(&mut row.serving_pss)
        );
    }
}

/// Sum of the PSS (KiB) of `pids`, from /proc/PID/smaps_rollup.
fn pss_kib(pids: &[u32]) -> f64 {
    pids.iter()
        .filter_map(|p| std::fs::read_to_string(format!("/proc/{p}/smaps_rollup")).ok())
        .filter_map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("Pss:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        })
        .sum()
}

/// UpdateContainerResources on a running Wasm container rewrites its cgroup's limits, as
/// kubelet's in-place resize does: the kernel then holds the guest to them.
#[test]
fn wasm_update_resources() {
    let _g = shared();
    let cri = cri();
    let pod = Pod::run(&cri, "wasm-update", &wasm_handler()).expect("RunPodSandbox");
    let id = pod
        .start(&with_memory_limit(
            wasm("busy", &["tick", "1000"]),
            64 << 20,
        ))
        .expect("starting busy");
    wait_log(&pod, "busy", "stdout", "a tick", |l| l.starts_with("tick "));
    // cgroup v2 (unified) or v1.
    let (root, file) = if std::path::Path::new("/sys/fs/cgroup/cgroup.controllers").exists() {
        ("/sys/fs/cgroup", "memory.max")
    } else {
        ("/sys/fs/cgroup/memory", "memory.limit_in_bytes")
    };
    let limit_file = std::path::PathBuf::from(root)
        .join(pod.cgroup_parent().trim_start_matches('/'))
        .join(&id)
        .join(file);
    let read_limit = || {
        std::fs::read_to_string(&limit_file)
            .unwrap_or_else(|e| panic!("reading {}: {e}", limit_file.display()))
            .trim()
            .parse::<u64>()
            .unwrap()
    };
    assert_eq!(read_limit(), 64 << 20, "the limit at start");
    cri.update_container_resources(
        &id,
        k8s_cri::v1::LinuxContainerResources {
            memory_limit_in_bytes: 96 << 20,
            cpu_shares: 512,
            ..Default::default()
        },
    )
    .expect("UpdateContainerResources");
    assert_eq!(read_limit(), 96 << 20, "the limit after the update");
    assert_eq!(state_of(&cri, &id), ContainerState::ContainerRunning);
    let t = trace(&cri, &pod, &[&id]);
    pod.remove().expect("stopping and removing the pod");
    assert_nothing_left(&cri, &t);
}

/// A RuntimeClass whose containerd runtime entry names a sandbox profile (`<engine>-strict`:
/// options `ConfigPath` = edge-strict.toml, as `runtimeclass/install.sh` writes it): the
/// guest sees only the env vars the profile names, the others said in its log as
/// `env var not allowed: NAME`; a host outside the profile is refused (`host not allowed:`);
/// memory stops at the profile's 256 pages (`out of memory`, OOMKilled); and a pod
/// annotation cannot choose a looser profile.
#[test]
fn wasm_pod_under_a_profile_runtime_class() {
    if skip_unless_handler_has("sockets", "wasm_pod_under_a_profile_runtime_class") {
        return;
    }
    let _g = shared();
    let cri = cri();
    let handler = format!("{}-strict", wasm_handler());
    let pod = Pod::run(&cri, "wasm-strict", &handler).expect("RunPodSandbox");
    let target = format!("{}:8080", pod.ip().expect("pod IP"));
    let client = with_env(
        with_env(wasm("client", &["connect", &target]), "APP_MODE", "edge"),
        "SECRET",
        "hunter2",
    );
    let client = pod.start(&client).expect("starting the client");
    let st = cri
        .wait_container_state(
            &client,
            ContainerState::ContainerExited,
            Duration::from_secs(30),
        )
        .expect("the client exits");
    assert_ne!(st.exit_code, 0, "{}", describe_status(&st));
    let stderr = log_lines(&pod, "client", "stderr");
    for wanted in [
        "env var not allowed: SECRET".to_string(),
        format!("host not allowed: {target}"),
    ] {
        assert!(
            stderr.iter().any(|l| l.contains(&wanted)),
            "the log lacks {wanted:?}: {stderr:?}"
        );
    }

    let grow = pod.start(&wasm("grow", &["grow"])).expect("starting grow");
    cri.wait_exit_reason(&grow, "OOMKilled", Duration::from_secs(60))
        .expect("grow is stopped at the profile's page limit");
    let stderr = log_lines(&pod, "grow", "stderr");
    assert!(
        stderr
            .iter()
            .any(|l| l.contains("out of memory: memory page limit of 256 pages (16 MiB) reached")),
        "{stderr:?}"
    );

    let mut config = e2e::cri::pod_config("wasm-looser");
    config
        .annotations
        .insert("wasm-shim/profile".into(), "edge-moderate".into());
    // The pod's pause container carries the annotation too, so the pod is refused at
    // RunPodSandbox; were it not, its first container would be.
    let refused = match Pod::run_with(&cri, config, &handler) {
        Err(e) => format!("{e:#}"),
        Ok(looser) => {
            let e = looser
                .start(&wasm("refused", &["tick", "1000"]))
                .expect_err("a looser profile than the runtime class's is refused");
            let t = trace(&cri, &looser, &[]);
            looser.remove().expect("stopping and removing the pod");
            assert_nothing_left(&cri, &t);
            format!("{e:#}")
        }
    };
    assert!(
        refused.contains(
            "permission denied: profile edge-moderate (annotation wasm-shim/profile) is looser than profile edge-strict"
        ),
        "{refused}"
    );

    let t = trace(&cri, &pod, &[&client, &grow]);
    pod.remove().expect("stopping and removing the pod");
    assert_nothing_left(&cri, &t);
}

/// The namespace inode a process is in, e.g. `net:[4026532301]`.
fn namespace_of(pid: u32, kind: &str) -> String {
    std::fs::read_link(format!("/proc/{pid}/ns/{kind}"))
        .map(|p| p.display().to_string())
        .unwrap_or_else(|e| panic!("/proc/{pid}/ns/{kind}: {e}"))
}

/// Who holds a Wasm pod. On containerd 2.x the shim holds the sandbox itself (Sandbox API,
/// `sandboxer = "shim"`): no pause container, a `wasm-pod` holder process in the pod's
/// network, UTS and IPC namespaces, which the Wasm instance and a native sidecar join. On 1.x
/// the pod has its pause container. Either way: status and stats through CRI, and Stop then
/// Remove leave nothing.
#[test]
fn wasm_pod_is_held_without_a_pause_container_on_2x() {
    let _g = shared();
    let cri = cri();
    let pod = Pod::run(&cri, "wasm-held", &wasm_handler()).expect("RunPodSandbox");
    let ticker = pod
        .start(&wasm("ticker", &["tick", "300"]))
        .expect("starting ticker");
    let side = pod.start(&sidecar()).expect("starting the sidecar");
    wait_log(&pod, "ticker", "stdout", "a tick", |l| {
        l.starts_with("tick ")
    });
    let t = trace(&cri, &pod, &[&ticker, &side]);
    let holder = t.sandbox_pid;
    let comm = std::fs::read_to_string(format!("/proc/{holder}/comm")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(
        &std::fs::read(format!("/proc/{holder}/cmdline")).unwrap_or_default(),
    )
    .replace('\0', " ");
    let (major, _) = e2e::containerd_version();
    if major >= 2 {
        assert_eq!(
            comm.trim_end(),
            "wasm-pod",
            "sandbox pid {holder} is not the shim's holder: {cmdline}"
        );
        let cgroup_dir = t.cgroup_parent.trim_start_matches('/');
        let pause: Vec<_> = processes_mentioning("pause")
            .into_iter()
            .filter(|(pid, _)| {
                std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
                    .unwrap_or_default()
                    .contains(cgroup_dir)
            })
            .collect();
        assert!(pause.is_empty(), "a pause process in the pod: {pause:?}");
    } else {
        assert!(
            cmdline.contains("pause"),
            "containerd {major}.x keeps the pause container, sandbox pid {holder}: {cmdline}"
        );
    }
    // The instance and the sidecar live in the holder's namespaces.
    let instance = e2e::processes_named(&e2e::instance_name(&ticker));
    assert_eq!(instance.len(), 1, "the ticker's instance: {instance:?}");
    // The sidecar's init execs its shell just after StartContainer returns.
    let in_pod = |shells: &[(u32, String)]| {
        shells
            .iter()
            .find(|(pid, _)| namespace_of(*pid, "net") == namespace_of(holder, "net"))
            .map(|(pid, _)| *pid)
    };
    let mut shells = Vec::new();
    eventually(Duration::from_secs(10), || {
        shells = processes_mentioning("while true; do sleep 1; done");
        in_pod(&shells).is_some()
    });
    let side_pid = in_pod(&shells).unwrap_or_else(|| {
        let seen: Vec<String> = shells
            .iter()
            .map(|(pid, cmd)| format!("{pid} {} {cmd}", namespace_of(*pid, "net")))
            .collect();
        panic!(
            "no sidecar shell in the holder {holder}'s network {}: {seen:?}",
            namespace_of(holder, "net")
        )
    });
    assert_eq!(
        namespace_of(instance[0].0, "net"),
        namespace_of(holder, "net")
    );
    for kind in ["uts", "ipc"] {
        assert_eq!(
            namespace_of(side_pid, kind),
            namespace_of(holder, kind),
            "{kind}"
        );
    }
    let hostname = cri
        .exec_sync(&side, &["hostname"], 10)
        .expect("ExecSync hostname");
    assert_eq!(hostname.stdout.trim(), pod.config.hostname, "{hostname:?}");
    let (status, _) = cri.pod_status(&pod.id).expect("PodSandboxStatus");
    assert_eq!(status.state, PodSandboxState::SandboxReady as i32);
    ip_in_subnet(&t.ip);
    let stats = cri.pod_stats(&pod.id).expect("PodSandboxStats");
    let linux = stats.linux.expect("linux pod stats");
    assert!(
        linux
            .memory
            .and_then(|m| m.working_set_bytes)
            .is_some_and(|w| w.value > 0),
        "pod memory stats: {linux:?}"
    );
    cri.stop_pod(&pod.id).expect("StopPodSandbox");
    let (status, _) = cri.pod_status(&pod.id).expect("PodSandboxStatus");
    assert_eq!(status.state, PodSandboxState::SandboxNotready as i32);
    pod.remove().expect("removing the pod");
    assert_nothing_left(&cri, &t);
}

/// Pods created and removed in a loop, 4 at a time as kubelet would, leave nothing behind
/// (E2E_POD_SOAK_COUNT, default 200).
#[test]
fn wasm_pods_created_and_removed_in_a_loop_leave_nothing() {
    let _g = shared();
    let count: usize = std::env::var("E2E_POD_SOAK_COUNT")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200);
    let next = std::sync::atomic::AtomicUsize::new(0);
    let t0 = Instant::now();
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                let cri = cri();
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    if i >= count {
                        return;
                    }
                    let pod = Pod::run(&cri, "wasm-soak", &wasm_handler())
                        .unwrap_or_else(|e| panic!("pod {i}: RunPodSandbox: {e}"));
                    let id = pod
                        .start(&wasm("ticker", &["tick", "1000"]))
                        .unwrap_or_else(|e| panic!("pod {i}: starting ticker: {e}"));
                    let t = trace(&cri, &pod, &[&id]);
                    pod.remove()
                        .unwrap_or_else(|e| panic!("pod {i}: removing: {e}"));
                    assert_nothing_left(&cri, &t);
                }
            });
        }
    });
    eprintln!("{count} pods in {:.1} s", t0.elapsed().as_secs_f64());
}
