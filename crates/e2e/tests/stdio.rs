//! What the module sees of its process: argv, environment, stdin, and where
//! its stdout and stderr go; for the preview 1 module and the preview 2
//! component alike.

use std::time::Duration;

use e2e::{probe_tests, Probe};

probe_tests! {
    args => args_are_passed_verbatim;
    env => env_is_exactly_the_spec_env;
    stdin => stdin_is_forwarded;
    stderr => stderr_is_separate;
    many_lines => all_output_arrives;
    attach => attach_to_detached_task;
}

fn args_are_passed_verbatim(probe: Probe) {
    let ns = probe.ns("args");
    let out = ns
        .run(probe.image())
        .args(["/probe.wasm", "args", "a", "b c"])
        .rm("args");
    out.assert_success();
    // argv[0] is the module path; the probe command itself is argv[1].
    assert_eq!(out.lines(), ["/probe.wasm", "args", "a", "b c"], "{out}");
}

fn env_is_exactly_the_spec_env(probe: Probe) {
    let ns = probe.ns("env");
    // Without --rm: the container stays so that its spec can be read.
    let (c, out) = ns
        .run(probe.image())
        .env("FOO=bar")
        .args(["/probe.wasm", "env"])
        .keep("env");
    out.assert_success();
    let mut printed: Vec<&str> = out.lines();
    printed.sort_unstable();
    assert!(printed.contains(&"FOO=bar"), "FOO=bar missing:\n{out}");
    assert!(
        printed.contains(&"PROBE_IMAGE_ENV=from-image"),
        "the image's env is missing:\n{out}"
    );

    let spec = ns.ctr_ok(&["container", "info", "--spec", &c.id]);
    let spec: serde_json::Value = serde_json::from_str(&spec.stdout)
        .unwrap_or_else(|e| panic!("container info --spec is not JSON ({e}):\n{spec}"));
    let mut expected: Vec<&str> = spec["process"]["env"]
        .as_array()
        .unwrap_or_else(|| panic!("no process.env in the spec: {spec}"))
        .iter()
        .map(|v| v.as_str().expect("env entries are strings"))
        .collect();
    expected.sort_unstable();
    assert_eq!(
        printed, expected,
        "the module's environment must be exactly the spec's process.env \
         (nothing from the shim's or containerd's environment)"
    );
}

fn stdin_is_forwarded(probe: Probe) {
    let ns = probe.ns("stdin");
    let out = ns
        .run(probe.image())
        .args(["/probe.wasm", "stdin"])
        .stdin(b"piped")
        .rm("stdin");
    out.assert_success();
    assert_eq!(out.stdout, "stdin=piped", "{out}");
}

fn stderr_is_separate(probe: Probe) {
    let ns = probe.ns("stderr");
    let out = ns
        .run(probe.image())
        .args(["/probe.wasm", "stderr", "to-stderr"])
        .rm("stderr");
    out.assert_success();
    assert!(
        out.stderr.contains("to-stderr"),
        "text missing on stderr:\n{out}"
    );
    assert!(
        !out.stdout.contains("to-stderr"),
        "stderr text on stdout:\n{out}"
    );
}

fn all_output_arrives(probe: Probe) {
    // Many small writes right before exit: none may be lost when the task ends.
    let ns = probe.ns("many-lines");
    let n = 5000;
    let out = ns
        .run(probe.image())
        .args(["/probe.wasm", "print-lines", &n.to_string()])
        .rm("lines");
    out.assert_success();
    let lines = out.lines();
    assert_eq!(
        lines.len(),
        n,
        "expected {n} lines, got {}; last: {:?}; stderr: {}",
        lines.len(),
        lines.last(),
        out.stderr
    );
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(*line, format!("line {}", i + 1));
    }
}

fn attach_to_detached_task(probe: Probe) {
    let ns = probe.ns("attach");
    let c = ns
        .run(probe.image())
        .args(["/probe.wasm", "sleep", "1500"])
        .detach("attach");
    // ctr 1.6's attach waits for the task to exit, returns its exit code, and
    // deletes the task.
    let out = ns.ctr(&["task", "attach", &c.id]);
    out.assert_success();
    assert_eq!(out.stdout.trim_end(), "slept", "{out}");
    assert!(
        out.elapsed < Duration::from_secs(10),
        "attach took too long:\n{out}"
    );
}
