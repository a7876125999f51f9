//! Broken images: each fails with a message that names the problem, and the
//! runtime keeps serving afterwards.

use e2e::Ns;

/// Words that say what is wrong with a module that is not valid wasm; looked
/// for in the message with the file name (`bad.wasm`) and the runtime's name
/// taken out.
const BROKEN_WORDS: &[&str] = &[
    "wasm",
    "module",
    "magic",
    "compile",
    "parse",
    "component",
    "empty",
];
/// Taken out of the message first: the file name and the runtime's name say
/// nothing about the problem.
const BROKEN_STRIP: &[&str] = &["bad.wasm", "wasmtime", "wasmedge"];
const MISSING_WORDS: &[&str] = &["nope.wasm", "not found", "no such file"];
/// Messages of failures that are not about the image: the shim did not start
/// or went away. They must not pass for an error report.
const INFRASTRUCTURE_FAILURES: &[&str] = &[
    "failed to start shim",
    "binary not installed",
    "ttrpc: closed",
    "connection refused",
    "shim disconnected",
];

fn fails_with_message(image: &str, words: &[&str], strip: &[&str]) {
    let ns = Ns::new(&format!("error-{image}"));
    let (c, out) = ns.run(image).rm_id(image);
    assert!(!out.timed_out, "a broken image must fail, not hang:\n{out}");
    assert!(
        out.code.is_some() && out.code != Some(0),
        "running {image} must fail:\n{out}"
    );
    let mut message = out.all_text().to_lowercase();
    for bad in INFRASTRUCTURE_FAILURES {
        assert!(
            !message.contains(bad),
            "running {image} failed, but not because of the image ({bad}):\n{out}"
        );
    }
    for s in strip {
        message = message.replace(s, "");
    }
    assert!(
        words.iter().any(|w| message.contains(w)),
        "the error for {image} should mention one of {words:?}; it was:\n{out}"
    );
    // ctr --rm removed the container; no task or container may be left.
    assert!(
        ns.task(&c.id).is_none(),
        "a task was left: {:?}",
        ns.task(&c.id)
    );
    assert!(
        !ns.container_ids().contains(&c.id),
        "the container was left"
    );
    // containerd and the runtime keep working in the same namespace.
    let out = ns.run("hello").rm("after");
    out.assert_success();
    assert_eq!(out.stdout.trim_end(), "hello from wasm", "{out}");
}

#[test]
fn malformed_module() {
    fails_with_message("malformed", BROKEN_WORDS, BROKEN_STRIP);
}

#[test]
fn garbage_module() {
    fails_with_message("garbage", BROKEN_WORDS, BROKEN_STRIP);
}

#[test]
fn empty_module() {
    fails_with_message("empty", BROKEN_WORDS, BROKEN_STRIP);
}

#[test]
fn missing_module() {
    fails_with_message("missing", MISSING_WORDS, &[]);
}

/// An engine that lacks components refuses one at Create with the reason it declares (the
/// reason `capabilities` prints), and keeps serving. On an engine that runs components the
/// probe suites' `p2` tests run them instead.
#[test]
fn a_component_is_refused_by_an_engine_without_components() {
    let engine = e2e::capabilities::engine_of_runtime(&e2e::config().runtime).to_string();
    let Some(why) = e2e::capabilities::lacks(&engine).get("components").cloned() else {
        println!("{engine} runs components: the p2 probe tests cover them");
        return;
    };
    let ns = Ns::new("error-component");
    let (_c, out) = ns.run("probe-p2").rm_id("component");
    assert!(
        !out.success(),
        "{engine} lacks components, yet ran one:\n{out}"
    );
    assert!(
        out.all_text().contains(&why),
        "the refusal should give the engine's reason {why:?}:\n{out}"
    );
    let out = ns.run("hello").rm("after");
    out.assert_success();
}
