//! End-to-end checks of `build`: parse the written tarball back and verify
//! every descriptor against its blob.

use std::collections::BTreeMap;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use serde_json::Value;

use crate::cli::{self, BuildArgs, Command};
use crate::layout::{self, sha256_digest};

fn parse(args: &[&str]) -> BuildArgs {
    let mut all = vec!["build".to_string()];
    all.extend(args.iter().map(|a| a.to_string()));
    match cli::parse(all).unwrap() {
        Command::Build(b) => *b,
        Command::Help => panic!("help"),
    }
}

/// Regular files of a tar archive, by path; checks the fixed metadata.
fn tar_files(tar: &[u8]) -> BTreeMap<String, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in tar::Archive::new(tar).entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header();
        assert_eq!(
            (h.mtime().unwrap(), h.uid().unwrap(), h.gid().unwrap()),
            (0, 0, 0)
        );
        if h.entry_type() == tar::EntryType::Regular {
            let path = entry.path().unwrap().to_string_lossy().into_owned();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            files.insert(path, data);
        }
    }
    files
}

/// The blob a descriptor points at, after checking its digest and size.
fn blob<'a>(files: &'a BTreeMap<String, Vec<u8>>, desc: &Value) -> &'a [u8] {
    let digest = desc["digest"].as_str().unwrap();
    let hex = digest.strip_prefix("sha256:").unwrap();
    let data = files
        .get(&format!("blobs/sha256/{hex}"))
        .unwrap_or_else(|| panic!("missing blob {digest}"));
    assert_eq!(sha256_digest(data), digest, "digest of {digest}");
    assert_eq!(desc["size"].as_u64().unwrap(), data.len() as u64);
    data
}

/// Checks the layout skeleton; returns (index descriptor, manifest, config,
/// layer blobs).
fn open_image(tar: &[u8]) -> (Value, Value, Value, Vec<Vec<u8>>) {
    let files = tar_files(tar);
    let layout: Value = serde_json::from_slice(&files["oci-layout"]).unwrap();
    assert_eq!(layout["imageLayoutVersion"], "1.0.0");
    let index: Value = serde_json::from_slice(&files["index.json"]).unwrap();
    assert_eq!(index["schemaVersion"], 2);
    assert_eq!(index["mediaType"], layout::MEDIA_TYPE_INDEX);
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(manifests.len(), 1);
    let top = manifests[0].clone();
    assert_eq!(top["mediaType"], layout::MEDIA_TYPE_MANIFEST);
    let manifest: Value = serde_json::from_slice(blob(&files, &top)).unwrap();
    assert_eq!(manifest["schemaVersion"], 2);
    assert_eq!(manifest["mediaType"], layout::MEDIA_TYPE_MANIFEST);
    let config: Value = serde_json::from_slice(blob(&files, &manifest["config"])).unwrap();
    let layers = manifest["layers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| blob(&files, d).to_vec())
        .collect();
    // Nothing but the layout files and the referenced blobs.
    assert_eq!(
        files.len(),
        2 + 2 + manifest["layers"].as_array().unwrap().len()
    );
    (top, manifest, config, layers)
}

fn write(dir: &Path, name: &str, data: &[u8], mode: u32) -> String {
    let path = dir.join(name);
    std::fs::write(&path, data).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn compat_image_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let module = write(dir.path(), "m.wasm", b"\0asm\x01\0\0\0", 0o600);
    let exe = write(dir.path(), "busybox", b"\x7fELF", 0o775);
    let data = write(dir.path(), "data.txt", b"data-in-app\n", 0o644);
    let args = parse(&[
        "--name",
        "localhost/test/probe:latest",
        "--out",
        "unused.tar",
        "--entrypoint",
        "/probe.wasm",
        "--cmd",
        "args",
        "--env",
        "PROBE_IMAGE_ENV=from-image",
        "--workdir",
        "/app",
        "--file",
        &format!("{module}:/probe.wasm"),
        "--file",
        &format!("{exe}:/bin/busybox"),
        "--file",
        &format!("{data}:/app/data.txt:0640"),
        "--dir",
        "/tmp:1777",
        "--symlink",
        "/bin/sh:busybox",
    ]);
    let (image, tar) = crate::build(&args).unwrap();
    let (top, manifest, config, layers) = open_image(&tar);

    assert_eq!(top["digest"], image.manifest.descriptor.digest.as_str());
    assert_eq!(
        top["annotations"]["io.containerd.image.name"],
        "localhost/test/probe:latest"
    );
    assert_eq!(
        top["annotations"]["org.opencontainers.image.ref.name"],
        "localhost/test/probe:latest"
    );
    assert_eq!(top["platform"]["os"], "linux");
    assert_eq!(top["platform"]["architecture"], "amd64");

    assert_eq!(manifest["config"]["mediaType"], layout::MEDIA_TYPE_CONFIG);
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        layout::MEDIA_TYPE_LAYER_GZIP
    );
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    let exec = &config["config"];
    assert_eq!(exec["Entrypoint"], serde_json::json!(["/probe.wasm"]));
    assert_eq!(exec["Cmd"], serde_json::json!(["args"]));
    assert_eq!(
        exec["Env"],
        serde_json::json!(["PROBE_IMAGE_ENV=from-image"])
    );
    assert_eq!(exec["WorkingDir"], "/app");
    assert_eq!(config["rootfs"]["type"], "layers");

    // diff_id is the digest of the uncompressed layer.
    let mut layer_tar = Vec::new();
    flate2::read::GzDecoder::new(layers[0].as_slice())
        .read_to_end(&mut layer_tar)
        .unwrap();
    assert_eq!(
        config["rootfs"]["diff_ids"],
        serde_json::json!([sha256_digest(&layer_tar)])
    );

    let mut entries = Vec::new();
    for entry in tar::Archive::new(layer_tar.as_slice()).entries().unwrap() {
        let mut entry = entry.unwrap();
        let h = entry.header().clone();
        let link = entry
            .link_name()
            .unwrap()
            .map(|l| l.to_string_lossy().into_owned());
        let mut contents = Vec::new();
        entry.read_to_end(&mut contents).unwrap();
        entries.push((
            entry.path().unwrap().to_string_lossy().into_owned(),
            h.entry_type(),
            h.mode().unwrap(),
            link.unwrap_or_else(|| String::from_utf8_lossy(&contents).into_owned()),
        ));
    }
    use tar::EntryType::{Directory as D, Regular as F, Symlink as L};
    let expected = [
        ("app/", D, 0o755, ""),
        ("app/data.txt", F, 0o640, "data-in-app\n"),
        ("bin/", D, 0o755, ""),
        ("bin/busybox", F, 0o755, "\x7fELF"),
        ("bin/sh", L, 0o777, "busybox"),
        ("probe.wasm", F, 0o644, "\0asm\x01\0\0\0"),
        ("tmp/", D, 0o1777, ""),
    ];
    let expected: Vec<_> = expected
        .iter()
        .map(|(p, t, m, c)| (p.to_string(), *t, *m, c.to_string()))
        .collect();
    assert_eq!(entries, expected);

    // Same inputs, same bytes.
    assert_eq!(crate::build(&args).unwrap().1, tar);
}

#[test]
fn minimal_compat_image_has_no_optional_fields() {
    let args = parse(&["--name", "n", "--out", "o", "--platform", "linux/arm64/v8"]);
    let (_, tar) = crate::build(&args).unwrap();
    let (top, _, config, _) = open_image(&tar);
    assert_eq!(top["platform"]["variant"], "v8");
    assert_eq!(config["variant"], "v8");
    assert_eq!(config["architecture"], "arm64");
    assert_eq!(config["config"], serde_json::json!({}));
}

#[test]
fn wasm_artifact_for_a_core_module() {
    let dir = tempfile::tempdir().unwrap();
    let module = write(dir.path(), "m.wasm", b"\0asm\x01\0\0\0", 0o644);
    let args = parse(&[
        "--name", "n:1", "--out", "o", "--layout", "wasm", "--module", &module,
    ]);
    let (_, tar) = crate::build(&args).unwrap();
    let (top, manifest, config, layers) = open_image(&tar);
    assert_eq!(top["platform"]["architecture"], "wasm");
    assert_eq!(top["platform"]["os"], "wasip1");
    assert_eq!(
        manifest["config"]["mediaType"],
        layout::MEDIA_TYPE_WASM_CONFIG
    );
    assert_eq!(
        manifest["layers"][0]["mediaType"],
        layout::MEDIA_TYPE_WASM_LAYER
    );
    assert_eq!(layers, [b"\0asm\x01\0\0\0".to_vec()]);
    assert_eq!(config["architecture"], "wasm");
    assert_eq!(config["os"], "wasip1");
    assert_eq!(config["author"], "wasm-image");
    assert_eq!(config["created"], "1970-01-01T00:00:00Z");
    assert_eq!(
        config["layerDigests"],
        serde_json::json!([manifest["layers"][0]["digest"]])
    );
    assert!(config.get("component").is_none());
    assert_eq!(
        manifest["layers"][0]["annotations"][layout::ANNOTATION_TITLE],
        "m.wasm"
    );
}

#[test]
fn component_layer_image_for_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let bytes = crate::wasm::tests::tiny_component();
    let module = write(dir.path(), "c.wasm", &bytes, 0o644);
    let args = parse(&[
        "--name",
        "n",
        "--out",
        "o",
        "--layout",
        "component-layer",
        "--module",
        &module,
        "--env",
        "A=1",
    ]);
    let (_, tar) = crate::build(&args).unwrap();
    let (top, manifest, config, layers) = open_image(&tar);
    assert_eq!(
        top["platform"],
        serde_json::json!({"architecture": "wasm", "os": "wasip2"})
    );
    assert_eq!(manifest["config"]["mediaType"], layout::MEDIA_TYPE_CONFIG);
    let layer = &manifest["layers"][0];
    assert_eq!(layer["mediaType"], layout::MEDIA_TYPE_COMPONENT_LAYER);
    assert_eq!(layer["annotations"][layout::ANNOTATION_TITLE], "c.wasm");
    assert_eq!(layers, [bytes]);
    assert_eq!(
        (config["os"].as_str(), config["architecture"].as_str()),
        (Some("wasip2"), Some("wasm"))
    );
    assert_eq!(
        config["config"],
        serde_json::json!({"Env": ["A=1"], "Entrypoint": ["/c.wasm"]})
    );
    // No diff ids: containerd unpacks no layer of this image.
    assert_eq!(
        config["rootfs"],
        serde_json::json!({"type": "layers", "diff_ids": []})
    );

    // A core module, titled and with its own command.
    let module = write(dir.path(), "m.wasm", b"\0asm\x01\0\0\0", 0o644);
    let args = parse(&[
        "--name",
        "n",
        "--out",
        "o",
        "--layout",
        "component-layer",
        "--module",
        &module,
        "--title",
        "app.wasm",
        "--cmd",
        "/app.wasm",
        "--cmd",
        "x",
    ]);
    let (_, tar) = crate::build(&args).unwrap();
    let (top, manifest, config, _) = open_image(&tar);
    assert_eq!(top["platform"]["os"], "wasip1");
    assert_eq!(
        manifest["layers"][0]["annotations"][layout::ANNOTATION_TITLE],
        "app.wasm"
    );
    assert_eq!(
        config["config"],
        serde_json::json!({"Cmd": ["/app.wasm", "x"]})
    );
}

#[test]
fn wasm_artifact_for_a_component() {
    let dir = tempfile::tempdir().unwrap();
    let module = write(
        dir.path(),
        "c.wasm",
        &crate::wasm::tests::tiny_component(),
        0o644,
    );
    let args = parse(&[
        "--name", "n", "--out", "o", "--layout", "wasm", "--module", &module, "--author", "me",
    ]);
    let (_, tar) = crate::build(&args).unwrap();
    let (top, _, config, _) = open_image(&tar);
    assert_eq!(top["platform"]["os"], "wasip2");
    assert_eq!(config["os"], "wasip2");
    assert_eq!(config["author"], "me");
    assert_eq!(
        config["component"],
        serde_json::json!({"exports": ["run"], "imports": ["wasi:cli/stdout@0.2.0"]})
    );
}

#[test]
fn input_errors_name_the_culprit() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nope.wasm");
    let missing = missing.to_str().unwrap();
    let err = |args: &[&str]| format!("{:#}", crate::build(&parse(args)).unwrap_err());

    let e = err(&[
        "--name",
        "n",
        "--out",
        "o",
        "--file",
        &format!("{missing}:/x"),
    ]);
    assert!(e.contains("--file") && e.contains("nope.wasm"), "{e}");
    assert!(e.contains("No such file"), "{e}");

    let d = dir.path().to_str().unwrap();
    let e = err(&["--name", "n", "--out", "o", "--file", &format!("{d}:/x")]);
    assert!(e.contains("not a regular file"), "{e}");

    let e = err(&[
        "--name", "n", "--out", "o", "--layout", "wasm", "--module", missing,
    ]);
    assert!(e.contains("--module") && e.contains("No such file"), "{e}");

    let text = write(dir.path(), "garbage.wasm", b"not wasm", 0o644);
    let e = err(&[
        "--name", "n", "--out", "o", "--layout", "wasm", "--module", &text,
    ]);
    assert!(e.contains("not a WebAssembly binary"), "{e}");

    let f = write(dir.path(), "f", b"", 0o644);
    let e = err(&[
        "--name",
        "n",
        "--out",
        "o",
        "--file",
        &format!("{f}:/a"),
        "--file",
        &format!("{f}:/a/b"),
    ]);
    assert!(e.contains("cannot hold"), "{e}");
}
