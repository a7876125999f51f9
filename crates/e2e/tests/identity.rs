//! `process.user`: the guest acts on the host as the spec's user. ctr 1.6 has no `--user`, so
//! these runs hand ctr a whole spec (`ctr oci spec`, edited) with `--config`; its root is a
//! host folder holding the probe module.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use e2e::{config, host_dir, Ns, Output};

/// Run the p1 probe with `args` as `uid:gid`, with the host folders `mounts` (guest path,
/// host path, read-only).
fn run_as(ns: &Ns, uid: u32, gid: u32, args: &[&str], mounts: &[(&str, &Path, bool)]) -> Output {
    let root = host_dir("identity-root");
    let module = config().images_dir.join("modules/probe-p1.wasm");
    std::fs::copy(&module, root.path().join("probe.wasm"))
        .unwrap_or_else(|e| panic!("copying {}: {e}", module.display()));
    std::fs::set_permissions(root.path(), std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut spec: serde_json::Value = serde_json::from_str(&ns.ctr_ok(&["oci", "spec"]).stdout)
        .expect("ctr oci spec prints JSON");
    spec["root"] = serde_json::json!({ "path": root.path(), "readonly": true });
    spec["process"]["user"] = serde_json::json!({ "uid": uid, "gid": gid });
    spec["process"]["args"] = serde_json::json!(args);
    let list = spec["mounts"]
        .as_array_mut()
        .expect("the default spec has mounts");
    for (guest, host, read_only) in mounts {
        let access = if *read_only { "ro" } else { "rw" };
        list.push(serde_json::json!({
            "destination": guest, "type": "bind", "source": host, "options": ["rbind", access]
        }));
    }
    let spec_file = root.path().join("config.json");
    std::fs::write(&spec_file, spec.to_string()).unwrap();

    let mut c = ns.container("identity");
    let runtime = &config().runtime;
    let spec_path = spec_file.to_string_lossy();
    let out = ns.ctr(&[
        "run",
        "--rm",
        "--runtime",
        runtime,
        "--config",
        &spec_path,
        &c.id,
    ]);
    if !out.timed_out {
        c.disarm();
    }
    out
}

#[test]
fn files_created_through_a_preopen_belong_to_the_spec_user() {
    let ns = Ns::new("identity-owner");
    let dir = host_dir("identity-own");
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = run_as(
        &ns,
        1234,
        2345,
        &["/probe.wasm", "write", "/own/f", "hi"],
        &[("/own", dir.path(), false)],
    );
    out.assert_success();
    let meta = std::fs::metadata(dir.path().join("f")).expect("the guest wrote the file");
    assert_eq!((meta.uid(), meta.gid()), (1234, 2345), "{out}");
}

#[test]
fn host_permissions_apply_to_the_spec_user() {
    let ns = Ns::new("identity-perms");
    let dir = host_dir("identity-secret");
    std::fs::write(dir.path().join("s"), "top secret").unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    // As root the folder is readable; as uid 1234 it is not.
    let out = run_as(
        &ns,
        0,
        0,
        &["/probe.wasm", "cat", "/secret/s"],
        &[("/secret", dir.path(), true)],
    );
    out.assert_success();
    assert_eq!(out.stdout, "top secret", "{out}");
    let out = run_as(
        &ns,
        1234,
        1234,
        &["/probe.wasm", "cat", "/secret/s"],
        &[("/secret", dir.path(), true)],
    );
    out.assert_code(2);
    assert!(!out.stdout.contains("secret"), "{out}");
}
