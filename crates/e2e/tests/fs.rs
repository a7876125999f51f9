//! The module's file system: the image's rootfs, the working directory, bind
//! mounts (read-write and read-only), and nothing else of the host.

use e2e::{host_dir, probe_tests, Probe};

probe_tests! {
    cwd => cwd_is_the_spec_cwd;
    relative_entrypoint => relative_entrypoint_resolves_from_cwd;
    rootfs => rootfs_is_the_image;
    mount_rw => rw_mount_is_writable;
    mount_ro => ro_mount_is_read_only;
    host_hidden => host_files_are_not_visible;
}

fn cwd_is_the_spec_cwd(probe: Probe) {
    let ns = probe.ns("cwd");
    let out = ns
        .run(probe.image())
        .cwd("/app")
        .args(["/probe.wasm", "cwd", "data.txt"])
        .rm("cwd");
    match probe {
        // The host passes process.cwd as wasi:cli/environment.initial-cwd.
        Probe::P2 => {
            out.assert_success();
            assert_eq!(out.lines(), ["cwd=/app", "read=data-in-app"], "{out}");
        }
        // Known limit (README, "Limits"): WASI preview 1 has no working directory and
        // wasi-libc starts every program in `/`; the relative read then fails cleanly
        // instead of finding another file.
        Probe::P1 => {
            probe.assert_code(&out, 2);
            assert_eq!(out.lines(), ["cwd=/"], "{out}");
            assert!(out.stderr.contains("error:"), "{out}");
        }
    }
}

fn relative_entrypoint_resolves_from_cwd(probe: Probe) {
    // process.args[0] without a leading slash names the module relative to
    // process.cwd.
    let ns = probe.ns("relative-entry");
    let out = ns
        .run(probe.image())
        .cwd("/")
        .args(["probe.wasm", "args", "x"])
        .rm("relative");
    out.assert_success();
    let lines = out.lines();
    assert_eq!(lines.get(1..), Some(&["args", "x"][..]), "{out}");
    assert!(lines[0].ends_with("probe.wasm"), "{out}");
}

fn rootfs_is_the_image(probe: Probe) {
    let ns = probe.ns("rootfs");
    let out = ns
        .run(probe.image())
        .args(["/probe.wasm", "cat", "/app/data.txt"])
        .rm("cat");
    out.assert_success();
    assert_eq!(out.stdout.trim_end(), "data-in-app", "{out}");

    let out = ns
        .run(probe.image())
        .args(["/probe.wasm", "ls", "/"])
        .rm("ls");
    out.assert_success();
    let names = out.lines();
    for expected in ["app", "probe.wasm"] {
        assert!(names.contains(&expected), "{expected} missing in /:\n{out}");
    }
    // The host's root has these; the image does not.
    for host_only in ["usr", "home", "root", "var"] {
        assert!(
            !names.contains(&host_only),
            "/{host_only} is visible: is the module seeing the host's root?\n{out}"
        );
    }
}

/// Accepted stderr for a write to a read-only mount: an OS error that means
/// "read-only" or "not allowed", as text or as its WASI errno
/// (2 EACCES, 63 EPERM, 69 EROFS, 76 ENOTCAPABLE).
fn is_denied_error(stderr: &str) -> bool {
    let s = stderr.to_lowercase();
    s.contains("os error")
        && [
            "read-only file system",
            "permission denied",
            "operation not permitted",
            "not permitted",
            "(os error 2)",
            "(os error 63)",
            "(os error 69)",
            "(os error 76)",
        ]
        .iter()
        .any(|m| s.contains(m))
}

fn rw_mount_is_writable(probe: Probe) {
    let ns = probe.ns("mount-rw");
    let host = host_dir("mount-rw");
    let out = ns
        .run(probe.image())
        .bind(host.path(), "/rw", false)
        .args(["/probe.wasm", "write", "/rw/x", "hello-rw"])
        .rm("rw");
    out.assert_success();
    assert!(out.stdout.contains("wrote /rw/x"), "{out}");
    let written = std::fs::read_to_string(host.path().join("x"))
        .unwrap_or_else(|e| panic!("the file did not appear on the host ({e}):\n{out}"));
    assert_eq!(written, "hello-rw");

    // And the module reads back what the host put there.
    std::fs::write(host.path().join("from-host.txt"), "host-data").unwrap();
    let out = ns
        .run(probe.image())
        .bind(host.path(), "/rw", false)
        .args(["/probe.wasm", "cat", "/rw/from-host.txt"])
        .rm("rw-read");
    out.assert_success();
    assert_eq!(out.stdout, "host-data", "{out}");
}

fn ro_mount_is_read_only(probe: Probe) {
    let ns = probe.ns("mount-ro");
    let host = host_dir("mount-ro");
    std::fs::write(host.path().join("in.txt"), "ro-data").unwrap();

    let out = ns
        .run(probe.image())
        .bind(host.path(), "/ro", true)
        .args(["/probe.wasm", "cat", "/ro/in.txt"])
        .rm("ro-read");
    out.assert_success();
    assert_eq!(out.stdout, "ro-data", "{out}");

    let out = ns
        .run(probe.image())
        .bind(host.path(), "/ro", true)
        .args(["/probe.wasm", "write", "/ro/x", "nope"])
        .rm("ro-write");
    assert!(
        !host.path().join("x").exists(),
        "the write through a read-only mount reached the host:\n{out}"
    );
    probe.assert_code(&out, 3);
    assert!(
        is_denied_error(&out.stderr),
        "expected a read-only/permission error on stderr:\n{out}"
    );

    // Deeper down too: a folder opened through the read-only mount can neither make, remove
    // nor rename entries. (An engine's own read-only rights may stop at the preopen itself;
    // the mount is read-only in the kernel, so these fail whatever the engine lets through.)
    let sub = host.path().join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("keep.txt"), "kept").unwrap();
    for (label, args) in [
        (
            "ro-sub-write",
            ["/probe.wasm", "write", "/ro/sub/new.txt", "nope"].as_slice(),
        ),
        (
            "ro-sub-mkdir",
            ["/probe.wasm", "mkdir", "/ro/sub/newdir"].as_slice(),
        ),
        (
            "ro-sub-rm",
            ["/probe.wasm", "rm", "/ro/sub/keep.txt"].as_slice(),
        ),
        (
            "ro-sub-rename",
            [
                "/probe.wasm",
                "rename",
                "/ro/sub/keep.txt",
                "/ro/sub/moved.txt",
            ]
            .as_slice(),
        ),
    ] {
        let out = ns
            .run(probe.image())
            .bind(host.path(), "/ro", true)
            .args(args.iter().copied())
            .rm(label);
        probe.assert_code(&out, 3);
        assert!(
            is_denied_error(&out.stderr),
            "{label}: expected a read-only/permission error on stderr:\n{out}"
        );
        assert_only_keep_txt(&sub, label, &out);
        assert_eq!(
            std::fs::read_to_string(sub.join("keep.txt")).unwrap(),
            "kept"
        );
    }

    // Both kinds side by side in one container.
    let rw = host_dir("mount-both");
    let out = ns
        .run(probe.image())
        .bind(rw.path(), "/rw", false)
        .bind(host.path(), "/ro", true)
        .args(["/probe.wasm", "write", "/rw/y", "ok"])
        .rm("both");
    out.assert_success();
    assert_eq!(std::fs::read_to_string(rw.path().join("y")).unwrap(), "ok");
}

/// A folder opened below a read-only mount, and then written through its own descriptor (not
/// through the preopen, which is what wasi-libc's path functions use): the WASI rights such a
/// descriptor inherits may allow it (WasmEdge's read-only preopens pass on create, rename and
/// remove rights), but the mount is read-only in the kernel, so nothing changes on the host.
#[test]
fn ro_mount_holds_for_a_folder_opened_below_it() {
    let ns = e2e::Ns::new("mount-ro-dirfd");
    let host = host_dir("mount-ro-dirfd");
    let sub = host.path().join("sub");
    std::fs::create_dir_all(&sub).unwrap();
    std::fs::write(sub.join("keep.txt"), "kept").unwrap();
    for (label, op, name) in [
        ("dirfd-mkdir", "mkdirat", "made"),
        ("dirfd-unlink", "unlinkat", "keep.txt"),
    ] {
        let out = ns
            .run("c-hello")
            .bind(host.path(), "/ro", true)
            .args(["/hello.wasm", op, "/ro/sub", name])
            .rm(label);
        out.assert_code(3);
        let err = out.stderr.to_lowercase();
        assert!(
            [
                "read-only file system",
                "permission denied",
                "not permitted",
                "capabilities insufficient"
            ]
            .iter()
            .any(|m| err.contains(m)),
            "{label}: expected a refusal:\n{out}"
        );
        println!(
            "{label} under {}: {}",
            e2e::config().runtime,
            out.stderr.trim()
        );
        assert_only_keep_txt(&sub, label, &out);
    }
}

/// Fails unless the read-only folder `sub` still holds `keep.txt` alone after `label`.
#[track_caller]
fn assert_only_keep_txt(sub: &std::path::Path, label: &str, out: &e2e::Output) {
    let mut names: Vec<String> = std::fs::read_dir(sub)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["keep.txt"],
        "{label} changed the read-only folder:\n{out}"
    );
}

fn host_files_are_not_visible(probe: Probe) {
    let ns = probe.ns("host-hidden");
    for path in [
        "/etc/shadow",
        "/etc/passwd",
        "/../../etc/passwd",
        "/app/../../etc/passwd",
        "/proc/self/environ",
    ] {
        let out = ns
            .run(probe.image())
            .args(["/probe.wasm", "cat", path])
            .rm("hidden");
        probe.assert_code(&out, 2);
        assert!(out.stdout.is_empty(), "{path} printed something:\n{out}");
        assert!(out.stderr.contains("error:"), "{out}");
    }
}
