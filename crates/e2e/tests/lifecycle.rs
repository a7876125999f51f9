//! Task lifecycle: exit codes, traps, signals, and what is left after delete.

use std::time::{Duration, Instant};

use e2e::{assert_nothing_left, probe_tests, state_dir, Ns, Probe};

probe_tests! {
    exit_zero => exit_zero_is_success;
    exit_seven => exit_code_is_returned;
    trap => trap_fails_the_task;
    kill_sigterm => sigterm_stops_a_spinning_module;
    kill_sigkill => sigkill_stops_a_spinning_module;
}

fn exit_zero_is_success(probe: Probe) {
    let ns = probe.ns("exit-zero");
    let out = ns
        .run(probe.image())
        .args(["/probe.wasm", "exit", "0"])
        .rm("exit0");
    out.assert_code(0);
}

fn exit_code_is_returned(probe: Probe) {
    let ns = probe.ns("exit-seven");
    let out = ns
        .run(probe.image())
        .args(["/probe.wasm", "exit", "7"])
        .rm("exit7");
    // `ctr run` exits with the task's exit code.
    probe.assert_code(&out, 7);
}

fn trap_fails_the_task(probe: Probe) {
    let ns = probe.ns("trap");
    let out = ns
        .run(probe.image())
        .args(["/probe.wasm", "trap"])
        .rm("trap");
    assert!(
        !out.timed_out && out.code.is_some() && out.code != Some(0),
        "a trapping module must exit non-zero:\n{out}"
    );
    let text = out.all_text().to_lowercase();
    assert!(
        text.contains("unreachable") || text.contains("wasm trap") || text.contains("trap"),
        "the output should say the module trapped:\n{out}"
    );
}

/// Runs `loop` detached, signals it, and checks it stops within a second with
/// `expected` as its exit status.
fn kill_case(probe: Probe, test: &str, signal: &str, expected: i32) {
    let ns = probe.ns(test);
    let mut c = ns
        .run(probe.image())
        .args(["/probe.wasm", "loop"])
        .detach(test);
    assert!(
        c.wait_status("RUNNING", Duration::from_secs(10)).is_some(),
        "the task never showed RUNNING: {:?}",
        ns.task(&c.id)
    );
    // Let it spin inside the module for a moment.
    std::thread::sleep(Duration::from_millis(200));
    let mut kill = vec!["task", "kill"];
    if signal != "SIGTERM" {
        kill.extend(["-s", signal]);
    }
    kill.push(&c.id);
    ns.ctr_ok(&kill);
    let sent = Instant::now();
    let stopped = c.wait_status("STOPPED", Duration::from_secs(10));
    let took = sent.elapsed();
    assert!(
        stopped.is_some(),
        "the task did not stop within 10 s of {signal}: {:?}",
        ns.task(&c.id)
    );
    assert!(
        took <= Duration::from_secs(1),
        "the task took {:.2}s to stop after {signal} (limit 1 s)",
        took.as_secs_f64()
    );
    let (code, out) = c.delete_task();
    assert_eq!(code, expected, "exit status after {signal}:\n{out}");
    ns.ctr_ok(&["container", "rm", &c.id]);
    c.disarm();
}

fn sigterm_stops_a_spinning_module(probe: Probe) {
    kill_case(probe, "kill-term", "SIGTERM", 128 + 15);
}

fn sigkill_stops_a_spinning_module(probe: Probe) {
    kill_case(probe, "kill-kill", "SIGKILL", 128 + 9);
}

#[test]
fn delete_leaves_nothing_behind() {
    let probe = Probe::P1;
    let ns = Ns::new("cleanup-delete");
    let mut c = ns
        .run(probe.image())
        .args(["/probe.wasm", "loop"])
        .detach("cleanup-delete");
    assert!(c.wait_status("RUNNING", Duration::from_secs(10)).is_some());
    let task = ns.task(&c.id).expect("task listed");
    let task_cmdline = std::fs::read(format!("/proc/{}/cmdline", task.pid)).ok();
    let bundle = state_dir()
        .join("io.containerd.runtime.v2.task")
        .join(&ns.name)
        .join(&c.id);
    assert!(
        bundle.is_dir(),
        "expected the bundle at {} while running (is E2E_CONTAINERD_STATE right?)",
        bundle.display()
    );
    ns.ctr_ok(&["task", "kill", "-s", "SIGKILL", &c.id]);
    assert!(c.wait_status("STOPPED", Duration::from_secs(10)).is_some());
    c.delete_task();
    ns.ctr_ok(&["container", "rm", &c.id]);
    c.disarm();
    assert_nothing_left(&ns, &c);
    let now = std::fs::read(format!("/proc/{}/cmdline", task.pid)).ok();
    assert!(
        now.is_none() || now != task_cmdline,
        "the task's process {} still exists",
        task.pid
    );
}

#[test]
fn rm_run_leaves_nothing_behind() {
    let ns = Ns::new("cleanup-rm");
    let (c, out) = ns.run("hello").rm_id("cleanup-rm");
    out.assert_success();
    assert_nothing_left(&ns, &c);
}

/// containerd's `start` of the shim binary for a container that joins a running shim (as
/// every container of a pod after the first) finishes while SIGCHLD keeps arriving. Its server
/// child exits at that moment, and a signal in the framework's teardown of its handlers once
/// made `start` spin forever, so StartContainer hung.
#[test]
fn start_finishes_under_a_sigchld_storm() {
    let config = e2e::config();
    let bundle = tempfile::tempdir().unwrap();
    let sandbox = format!("start-storm-{}", e2e::images::nonce());
    std::fs::write(
        bundle.path().join("config.json"),
        format!(r#"{{"ociVersion":"1.0.2","annotations":{{"io.kubernetes.cri.sandbox-id":"{sandbox}"}}}}"#),
    )
    .unwrap();
    let start = |id: &str| {
        std::process::Command::new(e2e::shim_binary())
            .current_dir(bundle.path())
            .env("TTRPC_ADDRESS", format!("{}.ttrpc", config.address))
            .args(["-namespace", "e2e-start", "-address", &config.address])
            .args(["-publish-binary", "/bin/false", "-id", id, "start"])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("running the shim's start")
    };
    // The first start launches the server the others join.
    let first = start("first").wait_with_output().unwrap();
    assert!(first.status.success(), "first start: {first:?}");
    let address = String::from_utf8_lossy(&first.stdout).into_owned();
    let _server = ServerGuard(address.clone());

    for i in 0..20 {
        let mut child = start(&format!("joining-{i}"));
        let pid = child.id() as libc::pid_t;
        let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let storm = {
            let done = done.clone();
            std::thread::spawn(move || {
                while !done.load(std::sync::atomic::Ordering::SeqCst) {
                    // SAFETY: kill(2) with a pid and a signal number; no memory is shared.
                    unsafe { libc::kill(pid, libc::SIGCHLD) };
                }
            })
        };
        let t0 = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break Some(status);
            }
            if t0.elapsed() > Duration::from_secs(10) {
                break None;
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        storm.join().unwrap();
        let Some(status) = status else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("start {i} did not finish in 10s under SIGCHLD");
        };
        let out = child.wait_with_output().unwrap();
        assert!(status.success(), "start {i}: {status} {out:?}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            address,
            "start {i} joins the running shim"
        );
    }
}

/// Stops the shim server listening at the address and removes its socket.
struct ServerGuard(String);

impl Drop for ServerGuard {
    fn drop(&mut self) {
        let socket = self.0.strip_prefix("unix://").unwrap_or(&self.0);
        for (pid, _) in e2e::processes_mentioning(&format!("-socket {}", self.0)) {
            // SAFETY: kill(2) of the server process this test started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        let _ = std::fs::remove_file(socket);
    }
}

/// The running guest of a container of `ns` and the shim server it is a child of.
fn instance_and_shim(ns: &Ns, c: &e2e::Container) -> (u32, u32) {
    let instance = ns.task(&c.id).expect("task listed").pid;
    let shim = e2e::parent_of(instance).expect("the instance's parent");
    let comm = std::fs::read_to_string(format!("/proc/{shim}/comm")).unwrap_or_default();
    assert!(
        comm.starts_with("containerd-shim"),
        "instance {instance}'s parent {shim} is {comm:?}, not the shim"
    );
    (instance, shim)
}

fn kill9(pid: u32) {
    let _ = std::process::Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status();
}

/// Instances are the shim's children, not the zygote's: killing the zygote leaves running
/// guests running, and the next container gets a new zygote.
#[test]
fn a_killed_zygote_is_replaced_and_running_guests_go_on() {
    let ns = Ns::new("zygote-kill");
    let c = ns
        .run(Probe::P1.image())
        .args(["/probe.wasm", "loop"])
        .detach("zygote-kill");
    assert!(c.wait_status("RUNNING", Duration::from_secs(10)).is_some());
    let (instance, shim) = instance_and_shim(&ns, &c);
    let zygotes: Vec<u32> = e2e::processes_named("wasm-zygote")
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| e2e::parent_of(*pid) == Some(shim))
        .collect();
    assert_eq!(zygotes.len(), 1, "the shim {shim}'s zygote: {zygotes:?}");
    kill9(zygotes[0]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(
        c.status().as_deref(),
        Some("RUNNING"),
        "after the zygote was killed"
    );
    assert!(
        std::path::Path::new(&format!("/proc/{instance}")).exists(),
        "the instance {instance} died with the zygote"
    );
    let out = ns.run("hello").rm("zygote-kill-next");
    out.assert_success();
    assert_eq!(out.stdout.trim_end(), "hello from wasm");
    let again: Vec<u32> = e2e::processes_named("wasm-zygote")
        .into_iter()
        .map(|(pid, _)| pid)
        .filter(|pid| e2e::parent_of(*pid) == Some(shim))
        .collect();
    assert!(
        again.len() == 1 && again[0] != zygotes[0],
        "no new zygote: {again:?}"
    );
    ns.ctr_ok(&["task", "kill", "-s", "SIGKILL", &c.id]);
    assert!(c.wait_status("STOPPED", Duration::from_secs(10)).is_some());
}

/// A killed shim server takes its containers with it, as containerd expects of any shim:
/// containerd sees it gone and reports the task stopped, its `delete` kills the orphaned
/// instance, and nothing is left; the next container starts a new shim.
#[test]
fn a_killed_shim_ends_its_containers_and_leaves_nothing() {
    let ns = Ns::new("shim-kill");
    let mut c = ns
        .run(Probe::P1.image())
        .args(["/probe.wasm", "loop"])
        .detach("shim-kill");
    assert!(c.wait_status("RUNNING", Duration::from_secs(10)).is_some());
    let (instance, shim) = instance_and_shim(&ns, &c);
    kill9(shim);
    let gone = e2e::eventually(Duration::from_secs(10), || {
        !std::path::Path::new(&format!("/proc/{instance}")).exists()
    });
    assert!(gone, "instance {instance} outlived its shim {shim}");
    // containerd reports the task ended (its `delete` ran in the bundle).
    let stopped = e2e::eventually(Duration::from_secs(10), || {
        ns.task(&c.id)
            .is_none_or(|t| t.status == "STOPPED" || t.status == "UNKNOWN")
    });
    assert!(
        stopped,
        "task after its shim was killed: {:?}",
        ns.task(&c.id)
    );
    if ns.task(&c.id).is_some() {
        c.delete_task();
    }
    ns.ctr_ok(&["container", "rm", &c.id]);
    c.disarm();
    // `ctr run -d`'s stdio FIFOs are the client's to remove, at its `task delete`, which a
    // task whose shim died may never get (as under runc).
    if let Some(fifo_root) = &e2e::config().ctd_dir {
        for f in e2e::files_named_like(&fifo_root.join("fifo"), &c.id) {
            let _ = std::fs::remove_file(f);
        }
    }
    e2e::assert_nothing_left(&ns, &c);
    let out = ns.run("hello").rm("shim-kill-next");
    out.assert_success();
    assert_eq!(out.stdout.trim_end(), "hello from wasm");
}
