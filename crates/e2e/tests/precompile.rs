//! The precompile command (`<shim> compile FILE|IMAGE...`) fills the node cache ahead of the
//! first start: it reads an image from the same containerd the shim serves, and the first
//! start of that image then finds the artifact instead of compiling (proved from the shim's
//! own log). Each test uses a module with a fresh digest, so no earlier run cached it.

use e2e::images::{component_layer, import, module, nonce, skip_on_1_6, with_nonce};
use e2e::{cache_outcome, host_dir, run_with_timeout, shim_binary, Input, Ns, Output};
use wasm_image::layer::Layer;
use wasm_image::layout::{self, ExecConfig, Platform};

/// `<shim> compile -a <containerd> -n <ns> TARGETS...`
fn compile(ns: &Ns, targets: &[&str]) -> Output {
    let mut args = vec![
        "compile".to_string(),
        "--address".into(),
        ns.config().address.clone(),
        "--namespace".into(),
        ns.name.clone(),
    ];
    args.extend(targets.iter().map(|t| t.to_string()));
    run_with_timeout(
        shim_binary().to_str().unwrap(),
        &args,
        Input::Null,
        e2e::CTR_TIMEOUT,
    )
}

/// Whether `out` says `what` for the module `digest` ("compiled" or "already cached").
#[track_caller]
fn assert_compile_said(out: &Output, digest: &str, what: &str) {
    out.assert_success();
    assert!(
        out.stdout
            .lines()
            .any(|l| l.contains(digest) && l.contains(&format!(" {what} in "))),
        "expected `{digest} ... {what}`:\n{out}"
    );
}

/// The first start of image `name` says hello and finds module `digest` already compiled.
#[track_caller]
fn assert_first_start_is_a_cache_hit(ns: &Ns, name: &str, digest: &str) {
    let (c, out) = ns.run(name).present().rm_id("first");
    out.assert_success();
    assert_eq!(out.stdout, "hello from wasm\n", "{out}");
    assert_eq!(cache_outcome(&c.id, digest), "cache hit");
}

#[test]
fn compiling_a_compat_image_makes_its_first_start_a_cache_hit() {
    let ns = Ns::new("precompile-compat");
    let wasm = with_nonce(module("hello.wasm"), &nonce());
    let digest = layout::sha256_digest(&wasm);

    // The entrypoint is found as the container finds it: a bare name on the image's PATH,
    // through a symlinked folder.
    let mut layer = Layer::new();
    layer
        .add_file("/app/hello.wasm", wasm.clone(), 0o755)
        .unwrap();
    layer.add_symlink("/bin", "app").unwrap();
    let exec = ExecConfig {
        entrypoint: vec!["hello.wasm".into()],
        env: vec!["PATH=/usr/local/bin:/bin".into()],
        ..Default::default()
    };
    // linux/amd64, as the other compat test images.
    let platform = Platform::default();
    let image = layout::compat_image(&layer, &exec, platform, "1970-01-01T00:00:00Z").unwrap();
    let name = "localhost/test/precompile-compat:latest";
    import(&ns, &image, name);

    // The FILE form and the IMAGE form key the module alike: the image finds the file's entry.
    let dir = host_dir("precompile-file");
    let file = dir.path().join("hello.wasm");
    std::fs::write(&file, &wasm).unwrap();
    assert_compile_said(
        &compile(&ns, &[file.to_str().unwrap()]),
        &digest,
        "compiled",
    );
    let out = compile(&ns, &[name]);
    assert_compile_said(&out, &digest, "already cached");
    assert!(out.stdout.contains("file /bin/hello.wasm"), "{out}");

    assert_first_start_is_a_cache_hit(&ns, name, &digest);
}

#[test]
fn compiling_a_layer_image_makes_its_first_start_a_cache_hit() {
    if skip_on_1_6("compiling_a_layer_image_makes_its_first_start_a_cache_hit") {
        return;
    }
    let ns = Ns::new("precompile-layer");
    let image = component_layer(with_nonce(module("hello.wasm"), &nonce()), "hello.wasm");
    let digest = image.layers[0].descriptor.digest.clone();
    let name = "localhost/test/precompile-layer:latest";
    import(&ns, &image, name);

    assert_compile_said(&compile(&ns, &[name]), &digest, "compiled");
    assert_compile_said(&compile(&ns, &[name]), &digest, "already cached");

    assert_first_start_is_a_cache_hit(&ns, name, &digest);
}

#[test]
fn what_cannot_be_compiled_is_named_and_the_rest_still_is() {
    let ns = Ns::new("precompile-errors");
    let busybox = ns.image("busybox");
    let wasm = with_nonce(module("hello.wasm"), &nonce());
    let dir = host_dir("precompile-errors");
    let file = dir.path().join("ok.wasm");
    std::fs::write(&file, &wasm).unwrap();
    let missing = "localhost/test/no-such-image:1";

    let out = compile(&ns, &[missing, &busybox, file.to_str().unwrap()]);
    assert_eq!(out.code, Some(1), "{out}");
    let errors = out.stderr.as_str();
    assert!(
        errors.contains(&format!("{missing}: ")) && errors.contains("not found"),
        "{out}"
    );
    assert!(
        errors.contains(&format!("{busybox}: ")) && errors.contains("not a WebAssembly module"),
        "{out}"
    );
    assert_compile_said(
        &Output {
            code: Some(0),
            ..out.clone()
        },
        &layout::sha256_digest(&wasm),
        "compiled",
    );
}

/// A module that arrives already compiled by `wasmedge compile` (universal Wasm: native code in
/// a `wasmedge` custom section) runs, but its native code is never used: its first start
/// compiles the module on this node (a fresh digest, so no earlier run cached it), and under
/// WasmEdge, which would run such a section, the shim log says it was cut out first.
#[test]
fn native_code_that_comes_with_a_module_is_never_used() {
    let ns = Ns::new("precompile-universal");
    let wasm = with_nonce(module("hello-universal.wasm"), &nonce());
    let digest = layout::sha256_digest(&wasm);
    let mut layer = Layer::new();
    layer.add_file("/hello.wasm", wasm, 0o755).unwrap();
    let exec = ExecConfig {
        entrypoint: vec!["/hello.wasm".into()],
        ..Default::default()
    };
    let image =
        layout::compat_image(&layer, &exec, Platform::default(), "1970-01-01T00:00:00Z").unwrap();
    let name = "localhost/test/precompile-universal:latest";
    import(&ns, &image, name);

    let (c, out) = ns.run(name).present().rm_id("universal");
    out.assert_success();
    assert_eq!(out.stdout, "hello from wasm\n", "{out}");
    assert_eq!(cache_outcome(&c.id, &digest), "compiled");
    if e2e::capabilities::engine_of_runtime(&e2e::config().runtime) == "wasmedge" {
        let log = e2e::containerd_log().unwrap_or_default();
        assert!(
            log.contains("ignoring 1 native code section(s) that came with the module"),
            "the WasmEdge shim should say it cut the shipped native code out"
        );
    }
}
