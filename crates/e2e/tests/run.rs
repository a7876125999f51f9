//! Running modules: the simplest images, the C guest and its `#function`
//! entrypoint, repeated runs, and runc beside the shim.

use e2e::{Ns, RUNC_RUNTIME};

#[track_caller]
fn assert_prints(ns: &Ns, image: &str, expected: &str) {
    let out = ns.run(image).rm(image);
    out.assert_success();
    assert_eq!(out.stdout.trim_end(), expected, "unexpected stdout:\n{out}");
}

#[test]
fn hello_prints_and_exits_zero() {
    let ns = Ns::new("hello");
    assert_prints(&ns, "hello", "hello from wasm");
}

#[test]
fn c_hello() {
    let ns = Ns::new("c-hello");
    assert_prints(&ns, "c-hello", "hello from C");
}

#[test]
fn c_greet_function_entrypoint() {
    // The image's entrypoint is `/hello.wasm#greet`: the shim calls the
    // exported function `greet` instead of `_start`, so `main` does not run.
    let ns = Ns::new("c-greet");
    assert_prints(&ns, "c-greet", "greet called");
}

#[test]
fn twenty_sequential_runs() {
    let ns = Ns::new("many-runs");
    for i in 0..20 {
        let out = ns.run("hello").rm("many");
        assert!(
            out.success() && out.stdout.trim_end() == "hello from wasm",
            "run {} of 20 failed:\n{out}",
            i + 1
        );
    }
    let left = ns.container_ids();
    assert!(left.is_empty(), "containers left after --rm runs: {left:?}");
}

#[test]
fn runc_still_works_beside_the_shim() {
    let ns = Ns::new("runc");
    let out = ns
        .run("busybox")
        .runtime(RUNC_RUNTIME)
        .args(["echo", "hi"])
        .rm("runc");
    out.assert_success();
    assert_eq!(out.stdout.trim_end(), "hi", "unexpected stdout:\n{out}");
}
