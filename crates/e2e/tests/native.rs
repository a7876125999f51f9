//! Native fallback: an image whose entrypoint is not Wasm (busybox) runs as an ordinary Linux
//! container under the Wasm runtime, and behaves as it does under runc.

use std::time::Duration;

use e2e::{assert_nothing_left, eventually, host_dir, state_dir, Ns, Output, RUNC_RUNTIME};

const BUSYBOX: &str = "busybox";

/// The same command under the runtime under test and under runc.
fn both(ns: &Ns, label: &str, args: &[&str], stdin: Option<&[u8]>) -> (Output, Output) {
    both_with(ns, label, &[], args, stdin)
}

/// As [`both`], with further `ctr run` flags.
fn both_with(
    ns: &Ns,
    label: &str,
    flags: &[&str],
    args: &[&str],
    stdin: Option<&[u8]>,
) -> (Output, Output) {
    let run = |runtime: Option<&str>| {
        let mut r = ns.run(BUSYBOX).flags(flags).args(args);
        if let Some(rt) = runtime {
            r = r.runtime(rt);
        }
        if let Some(bytes) = stdin {
            r = r.stdin(bytes);
        }
        r.rm(label)
    };
    (run(None), run(Some(RUNC_RUNTIME)))
}

#[test]
fn output_stdin_and_exit_codes_match_runc() {
    let ns = Ns::new("native-output");
    let (ours, runc) = both(&ns, "echo", &["echo", "hello from native"], None);
    ours.assert_code(0);
    runc.assert_code(0);
    assert_eq!(ours.stdout, "hello from native\n", "{ours}");
    assert_eq!(ours.stdout, runc.stdout);

    let script = "echo out; echo err >&2; exit 7";
    let (ours, runc) = both(&ns, "exit7", &["sh", "-c", script], None);
    ours.assert_code(7);
    runc.assert_code(7);
    assert_eq!(ours.stdout, runc.stdout);
    assert_eq!(ours.stdout, "out\n", "{ours}");
    assert!(ours.stderr.contains("err"), "stderr lost:\n{ours}");

    let (ours, runc) = both(&ns, "cat", &["cat"], Some(b"piped in\n"));
    ours.assert_code(0);
    runc.assert_code(0);
    assert_eq!(ours.stdout, "piped in\n", "{ours}");
    assert_eq!(ours.stdout, runc.stdout);
}

#[test]
fn seccomp_profiles_are_enforced_as_under_runc() {
    let ns = Ns::new("native-seccomp");
    let dir = host_dir("native-seccomp");
    let profile = dir.path().join("no-mkdir.json");
    std::fs::write(
        &profile,
        r#"{"defaultAction": "SCMP_ACT_ALLOW",
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]}"#,
    )
    .unwrap();
    let script = ["sh", "-c", "mkdir /made && echo made"];

    // Without a profile mkdir works; containerd's default profile allows it too.
    let (ours, runc) = both(&ns, "no-profile", &script, None);
    ours.assert_code(0);
    runc.assert_code(0);
    assert_eq!(ours.stdout, "made\n", "{ours}");
    let (ours, runc) = both_with(&ns, "default-profile", &["--seccomp"], &script, None);
    ours.assert_code(0);
    runc.assert_code(0);
    assert_eq!(ours.stdout, runc.stdout);

    // A profile that refuses mkdir with EPERM: refused in the container.
    let flags = ["--seccomp", "--seccomp-profile", profile.to_str().unwrap()];
    let (ours, runc) = both_with(&ns, "no-mkdir", &flags, &script, None);
    assert!(
        runc.code.is_some_and(|c| c != 0) && runc.stderr.contains("not permitted"),
        "runc was expected to refuse mkdir:\n{runc}"
    );
    assert_eq!(ours.code, runc.code, "{ours}");
    assert!(ours.stderr.contains("not permitted"), "{ours}");
    assert_eq!(ours.stdout, "", "{ours}");
}

#[test]
fn exec_kill_pids_and_delete_in_a_native_container() {
    let ns = Ns::new("native-exec");
    let mut c = ns.run(BUSYBOX).args(["sleep", "300"]).detach("native-exec");
    assert!(
        c.wait_status("RUNNING", Duration::from_secs(10)).is_some(),
        "never RUNNING: {:?}",
        ns.task(&c.id)
    );
    // libcontainer's state is kept in the bundle, under containerd's state dir.
    let bundle = state_dir()
        .join("io.containerd.runtime.v2.task")
        .join(&ns.name)
        .join(&c.id);
    let libcontainer_state = bundle.join("native").join(&c.id).join("state.json");
    assert!(
        libcontainer_state.is_file(),
        "no libcontainer state at {}",
        libcontainer_state.display()
    );

    let out = c.exec("e1", &["sh", "-c", "echo in exec; exit 3"]);
    out.assert_code(3);
    assert_eq!(out.stdout, "in exec\n", "{out}");
    // The exec process is inside the container: its pid namespace, where sleep is pid 1.
    let out = c.exec("e2", &["ps"]);
    out.assert_success();
    assert!(
        out.lines()
            .iter()
            .any(|l| l.trim_start().starts_with("1 ") && l.contains("sleep 300")),
        "ps in the container should show sleep as pid 1:\n{out}"
    );

    // Pids lists the container's cgroup: the init process, then also an exec'd one.
    let init = ns.task(&c.id).expect("task listed").pid;
    let pids = |ns: &Ns| -> Vec<u32> {
        ns.ctr_ok(&["task", "ps", &c.id])
            .lines()
            .iter()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect()
    };
    assert_eq!(pids(&ns), vec![init]);
    let (ns2, id) = (ns.clone(), c.id.clone());
    let sleeper = std::thread::spawn(move || ns2.task_exec(&id, "e3", &["sleep", "300"]));
    assert!(
        eventually(Duration::from_secs(10), || pids(&ns).len() == 2),
        "the exec'd sleep never showed in ctr task ps: {:?}",
        pids(&ns)
    );
    // SIGTERM ends a sleep that is not the namespace's init (which, as under runc, ignores
    // signals it has no handler for): 128 + 15.
    ns.ctr_ok(&["task", "kill", "--exec-id", "e3", &c.id]);
    let out = sleeper.join().unwrap();
    out.assert_code(143);
    assert_eq!(c.status().as_deref(), Some("RUNNING"));

    ns.ctr_ok(&["task", "kill", "-s", "SIGKILL", &c.id]);
    assert!(c.wait_status("STOPPED", Duration::from_secs(10)).is_some());
    let (code, out) = c.delete_task();
    assert_eq!(code, 137, "{out}");
    ns.ctr_ok(&["container", "rm", &c.id]);
    c.disarm();
    assert_nothing_left(&ns, &c);
}

#[test]
fn exec_into_a_wasm_container_is_unsupported() {
    let ns = Ns::new("wasm-exec");
    let c = ns
        .run("probe")
        .args(["/probe.wasm", "loop"])
        .detach("wasm-exec");
    assert!(c.wait_status("RUNNING", Duration::from_secs(10)).is_some());
    let out = c.exec("e1", &["/probe.wasm", "exit", "0"]);
    assert!(!out.timed_out && !out.success(), "exec must fail:\n{out}");
    let text = out.all_text();
    assert!(
        text.contains("exec is not supported for Wasm containers"),
        "the error should say exec is not supported:\n{out}"
    );
    assert!(
        !text.contains("not found"),
        "must not read as a missing task:\n{out}"
    );
    // The guest keeps running.
    assert_eq!(c.status().as_deref(), Some("RUNNING"));
}

#[test]
fn native_run_rm_leaves_nothing_behind() {
    let ns = Ns::new("native-cleanup");
    let (c, out) = ns
        .run(BUSYBOX)
        .args(["sh", "-c", "echo bye"])
        .rm_id("native-rm");
    out.assert_success();
    assert_nothing_left(&ns, &c);
}
