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
