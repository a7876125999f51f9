//! Wasm OCI images: the module is a layer of its own, not a file in a tar layer. containerd
//! 1.7 and later leave such a layer out of the rootfs; the shim reads it from containerd's
//! content store. Also: the image builder pushing to a real registry on loopback, and what
//! `ctr run` makes of the CNCF artifact (whose config is not an image config).
//!
//! containerd 1.6 cannot unpack an image whose layers are not tars (see
//! `layer_images_need_containerd_1_7`); the other tests skip there, saying so.

use std::io::Read;
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::images::{
    component_layer, import, import_tar, import_test_image, module, nonce, skip_on_1_6, with_nonce,
};
use e2e::{cache_outcome, containerd_version, host_dir, shim_lines, Ns};
use wasm_image::layout;

#[test]
fn layer_images_need_containerd_1_7() {
    // What 1.6 does with a layer that is not a tar: it fails to unpack the image, so the
    // task never reaches the shim. 1.7 and later start it.
    let ns = Ns::new("oci-1-6");
    let tar = e2e::config().images_dir.join("hello-layer.tar");
    let imported = import_tar(&ns, &tar);
    if containerd_version() < (1, 7) {
        // containerd 1.6.20 unpacks every layer, tar or not, so it finds one layer and no
        // diff id (1.7 and later, which skip non-tar layers, need the diff ids empty):
        // "mismatched image rootfs and manifest layers", at import and again at `ctr run`.
        // With the layer's digest as a diff id it gets further and fails on the layer
        // itself: "failed to get stream processor for application/vnd.bytecodealliance.
        // wasm.component.layer.v0+wasm: no processor for media-type: unknown".
        const REFUSAL: &str = "mismatched image rootfs and manifest layers";
        assert!(
            !imported.success() && imported.all_text().contains(REFUSAL),
            "containerd 1.6 was expected to refuse to unpack a non-tar layer:\n{imported}"
        );
        let out = ns
            .run(&e2e::image_ref("hello-layer"))
            .present()
            .rm("layer-16");
        assert!(
            !out.success() && out.all_text().contains(REFUSAL),
            "containerd 1.6 was expected to refuse to unpack a non-tar layer:\n{out}"
        );
        println!("containerd 1.6 refuses the component-layer image:\n{out}");
    } else {
        imported.assert_success();
        let out = ns
            .run(&e2e::image_ref("hello-layer"))
            .present()
            .rm("layer-17");
        out.assert_success();
        assert_eq!(out.stdout, "hello from wasm\n", "{out}");
    }
}

#[test]
fn component_layer_module_runs() {
    if skip_on_1_6("component_layer_module_runs") {
        return;
    }
    let ns = Ns::new("oci-layer-p1");
    let name = import_test_image(&ns, "hello-layer");
    let (c, out) = ns.run(&name).present().rm_id("layer-p1");
    out.assert_success();
    assert_eq!(out.stdout, "hello from wasm\n", "{out}");
    let lines = shim_lines(&c.id);
    let layer = lines
        .iter()
        .find(|l| l.contains("from containerd's content store"));
    assert!(
        layer.is_some_and(|l| l.contains(layout::MEDIA_TYPE_COMPONENT_LAYER)
            && l.contains("localhost/test/hello-layer:latest")),
        "the shim did not log reading the layer from the content store:\n{}",
        lines.join("\n")
    );
}

#[test]
fn component_layer_component_runs_with_args() {
    if skip_on_1_6("component_layer_component_runs_with_args")
        || e2e::capabilities::skip_unless_runtime_has(
            "components",
            "oci::component_layer_component_runs_with_args",
        )
    {
        return;
    }
    let ns = Ns::new("oci-layer-p2");
    let name = import_test_image(&ns, "probe-p2-layer");
    let out = ns
        .run(&name)
        .present()
        .args(["/probe.wasm", "args", "one two"])
        .rm("layer-p2");
    out.assert_success();
    assert_eq!(out.stdout, "/probe.wasm\nargs\none two\n", "{out}");
}

#[test]
fn layer_digest_hits_the_node_cache_on_the_second_start() {
    if skip_on_1_6("layer_digest_hits_the_node_cache_on_the_second_start") {
        return;
    }
    let ns = Ns::new("oci-cache");
    let image = component_layer(with_nonce(module("hello.wasm"), &nonce()), "hello.wasm");
    let name = "localhost/test/oci-cache:latest";
    import(&ns, &image, name);
    let digest = image.layers[0].descriptor.digest.clone();

    let mut outcomes = Vec::new();
    for run in ["first", "second"] {
        let (c, out) = ns.run(name).present().rm_id(&format!("cache-{run}"));
        out.assert_success();
        assert_eq!(out.stdout, "hello from wasm\n", "{out}");
        let lines = shim_lines(&c.id);
        assert!(
            lines
                .iter()
                .any(|l| l.contains("from containerd's content store")
                    && l.contains(&format!("layer {digest}"))),
            "{run} start: the module did not come from the layer:\n{}",
            lines.join("\n")
        );
        outcomes.push(cache_outcome(&c.id, &digest));
    }
    // A digest no run has seen before: compiled once, then found by the layer's digest.
    assert_eq!(outcomes, ["compiled", "cache hit"]);
}

/// A `docker-registry` (Debian's) on a free loopback port with its own storage and config,
/// killed on drop.
struct Registry {
    child: Child,
    port: u16,
    _dir: tempfile::TempDir,
}

impl Registry {
    fn start() -> Registry {
        let bin = ["/usr/bin/docker-registry", "/usr/sbin/docker-registry"]
            .into_iter()
            .find(|p| Path::new(p).exists())
            .expect("docker-registry is not installed (scripts/install-deps installs it)");
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = host_dir("registry");
        let config = dir.path().join("config.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\n\
                 log:\n  level: warn\n\
                 storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
                 http:\n  addr: 127.0.0.1:{port}\n",
                dir.path().join("storage").display()
            ),
        )
        .unwrap();
        let log = std::fs::File::create(dir.path().join("registry.log")).unwrap();
        let child = Command::new(bin)
            .arg("serve")
            .arg(&config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {bin}: {e}"));
        let mut registry = Registry {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while !registry.answers() {
            if let Ok(Some(status)) = registry.child.try_wait() {
                panic!("{bin} exited with {status}: {}", registry.log());
            }
            assert!(
                Instant::now() < deadline,
                "the registry did not answer on 127.0.0.1:{port} within 20 s: {}",
                registry.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        registry
    }

    /// `GET /v2/` answers 200.
    fn answers(&self) -> bool {
        use std::io::Write;
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        let req = format!("GET /v2/ HTTP/1.0\r\nHost: 127.0.0.1:{}\r\n\r\n", self.port);
        if s.write_all(req.as_bytes()).is_err() {
            return false;
        }
        let mut head = [0u8; 12];
        s.read_exact(&mut head).is_ok() && head.ends_with(b"200")
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self._dir.path().join("registry.log")).unwrap_or_default()
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn registry_round_trip() {
    if skip_on_1_6("registry_round_trip") {
        return;
    }
    let registry = Registry::start();
    let host = format!("127.0.0.1:{}", registry.port);
    let name = format!("{host}/e2e/hello-layer:v1");
    let image = component_layer(module("hello.wasm"), "hello.wasm");
    let reference = wasm_image::registry::Reference::parse(&name).unwrap();
    let pushed = wasm_image::registry::push(&image, &reference, "http").expect("push");
    assert_eq!(pushed.uploaded + pushed.present, 2, "config and layer");
    // A second push finds both blobs there.
    let again = wasm_image::registry::push(&image, &reference, "http").expect("second push");
    assert_eq!((again.uploaded, again.present), (0, 2));

    let ns = Ns::new("oci-registry");
    let _ = ns.ctr(&["image", "rm", &name]);
    let pull = ns.ctr_with(
        &[
            "image",
            "pull",
            "--plain-http",
            "--platform",
            "wasip1/wasm",
            &name,
        ],
        e2e::Input::Null,
        Duration::from_secs(60),
    );
    pull.assert_success();
    let out = ns.run(&name).present().rm("registry");
    out.assert_success();
    assert_eq!(out.stdout, "hello from wasm\n", "{out}");
    ns.ctr_ok(&["image", "rm", &name]);
    drop(registry);
}

#[test]
fn ctr_run_cannot_start_the_cncf_artifact() {
    // The CNCF artifact's config (application/vnd.wasm.config.v0+json) is not an image
    // config: ctr refuses it before any runtime is involved. It is for CRI.
    let ns = Ns::new("oci-artifact");
    let tar = e2e::config().images_dir.join("hello-artifact.tar");
    let imported = import_tar(&ns, &tar);
    println!("import of the CNCF artifact:\n{imported}");
    let out = ns
        .run(&e2e::image_ref("hello-artifact"))
        .present()
        .rm("artifact");
    assert!(
        !out.timed_out && !out.success(),
        "ctr run must refuse it:\n{out}"
    );
    println!(
        "ctr run of the CNCF artifact on containerd {:?}:\n{out}",
        containerd_version()
    );
    // 1.7 and 2.x: "ctr: unknown image config media type application/vnd.wasm.config.v0+json";
    // 1.6 fails earlier, unpacking: "mismatched image rootfs and manifest layers".
    let expected = if containerd_version() < (1, 7) {
        "mismatched image rootfs and manifest layers".to_string()
    } else {
        format!(
            "unknown image config media type {}",
            layout::MEDIA_TYPE_WASM_CONFIG
        )
    };
    assert!(
        out.all_text().contains(&expected) && !out.stdout.contains("hello from wasm"),
        "expected ctr to refuse with {expected:?}:\n{out}"
    );
}
