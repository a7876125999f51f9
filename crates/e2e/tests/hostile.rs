//! Hostile guests: each is contained by the sandbox policy, ends with a clear reason, and
//! leaves the shim and containerd serving the next container (checked by running hello in
//! the same namespace afterwards) and the host untouched.

use std::time::{Duration, Instant};

use e2e::{host_dir, probe_tests, Ns, Output, Probe};

const MIB: u64 = 1 << 20;

probe_tests! {
    memory_bomb => memory_bomb_is_refused_growth;
    loop_time_limit => endless_loop_stops_at_time_limit;
    sleep_time_limit => blocked_guest_stops_at_time_limit;
    recursion => deep_recursion_traps;
    fd_exhaustion => fd_exhaustion_is_bounded;
    tmpfs_fill => tmpfs_scratch_is_bounded_and_private;
    dotdot => dotdot_cannot_leave_the_rootfs;
    planted_symlink => symlinks_in_a_mount_cannot_leave_it;
    guest_symlink => guest_cannot_plant_an_escaping_symlink;
    cross_preopen => renames_and_links_across_mounts_fail;
}

/// The shim and containerd still serve: hello runs in the same namespace.
#[track_caller]
fn still_serving(ns: &Ns) {
    let out = ns.run("hello").rm("after");
    out.assert_success();
    assert_eq!(out.stdout.trim_end(), "hello from wasm", "{out}");
}

fn mentions(out: &Output, words: &str) -> bool {
    out.all_text().to_lowercase().contains(words)
}

fn memory_bomb_is_refused_growth(probe: Probe) {
    let ns = probe.ns("memory-bomb");
    let out = ns
        .run(probe.image())
        .memory_limit(32 * MIB)
        .args(["/probe.wasm", "alloc", "200"])
        .rm("bomb");
    // memory.grow failed inside the guest (its allocator reported it), rather than the
    // node's OOM killer ending anything.
    probe.assert_code(&out, 4);
    assert!(out.stderr.contains("alloc failed after"), "{out}");
    let got: u64 = out
        .stderr
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .expect("the guest says how much it got");
    assert!(
        got < 32,
        "the guest got {got} MiB under a 32 MiB limit:\n{out}"
    );
    // Within the limit the same guest allocates fine.
    let out = ns
        .run(probe.image())
        .memory_limit(32 * MIB)
        .args(["/probe.wasm", "alloc", "8"])
        .rm("fits");
    out.assert_success();
    still_serving(&ns);
}

fn endless_loop_stops_at_time_limit(probe: Probe) {
    let ns = probe.ns("loop-limit");
    let t0 = Instant::now();
    let out = ns
        .run(probe.image())
        .annotation("wasm-shim/time-limit-ms", "500")
        .args(["/probe.wasm", "loop"])
        .rm("loop");
    let took = t0.elapsed();
    probe.assert_code(&out, 124);
    assert!(
        mentions(
            &out,
            "time limit exceeded: the wasm guest was stopped at its limit of 500 ms"
        ),
        "{out}"
    );
    assert!(took < Duration::from_secs(5), "took {took:?}:\n{out}");
    still_serving(&ns);
}

fn blocked_guest_stops_at_time_limit(probe: Probe) {
    // A guest blocked in a host call (sleep) is stopped too, not only running wasm code.
    let ns = probe.ns("sleep-limit");
    let out = ns
        .run(probe.image())
        .annotation("wasm-shim/time-limit-ms", "300")
        .args(["/probe.wasm", "sleep", "60000"])
        .rm("sleep");
    probe.assert_code(&out, 124);
    assert!(!out.stdout.contains("slept"), "{out}");
    still_serving(&ns);
}

fn deep_recursion_traps(probe: Probe) {
    let ns = probe.ns("recursion");
    let out = ns
        .run(probe.image())
        .args(["/probe.wasm", "recurse"])
        .rm("recurse");
    probe.assert_code(&out, 134);
    assert!(mentions(&out, "wasm trap"), "{out}");
    still_serving(&ns);
}

fn fd_exhaustion_is_bounded(probe: Probe) {
    let ns = probe.ns("fds");
    let out = ns
        .run(probe.image())
        .args(["/probe.wasm", "openfiles", "/probe.wasm", "100000"])
        .rm("fds");
    out.assert_success();
    let opened: u64 = out
        .stdout
        .trim()
        .strip_prefix("opened ")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("unexpected output:\n{out}"));
    assert!(
        (100..1024).contains(&opened),
        "the guest opened {opened} files; the node limit is 1024:\n{out}"
    );
    still_serving(&ns);
}

fn tmpfs_scratch_is_bounded_and_private(probe: Probe) {
    let ns = probe.ns("tmpfs");
    let out = ns
        .run(probe.image())
        .tmpfs("/scratch", "1m")
        .args(["/probe.wasm", "fill", "/scratch/big", "50"])
        .rm("fill");
    probe.assert_code(&out, 3);
    assert!(
        out.stderr.contains("after 1024 KiB"),
        "bounded at its size:\n{out}"
    );
    // Preview 1 reports ENOSPC; a preview 2 output stream only reports that the write failed.
    let reason = if probe == Probe::P1 {
        "no space left"
    } else {
        "i/o error"
    };
    assert!(mentions(&out, reason), "{out}");
    // A tmpfs is private to its container: the next one starts with it empty.
    let out = ns
        .run(probe.image())
        .tmpfs("/scratch", "1m")
        .args(["/probe.wasm", "ls", "/scratch"])
        .rm("ls");
    out.assert_success();
    assert_eq!(out.stdout.trim(), "", "{out}");
    still_serving(&ns);
}

fn dotdot_cannot_leave_the_rootfs(probe: Probe) {
    let ns = probe.ns("dotdot");
    for path in [
        "/../../../../etc/shadow",
        "../../../../../etc/passwd",
        "/app/../../etc/hostname",
    ] {
        let out = ns
            .run(probe.image())
            .cwd("/app")
            .args(["/probe.wasm", "cat", path])
            .rm("dotdot");
        probe.assert_code(&out, 2);
        assert!(out.stdout.is_empty(), "{path} leaked host content:\n{out}");
    }
    still_serving(&ns);
}

fn symlinks_in_a_mount_cannot_leave_it(probe: Probe) {
    let ns = probe.ns("planted-symlink");
    let dir = host_dir("planted");
    std::os::unix::fs::symlink("/etc/passwd", dir.path().join("abs")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc/passwd", dir.path().join("rel")).unwrap();
    for link in ["/rw/abs", "/rw/rel"] {
        let out = ns
            .run(probe.image())
            .bind(dir.path(), "/rw", false)
            .args(["/probe.wasm", "cat", link])
            .rm("cat-link");
        probe.assert_code(&out, 2);
        assert!(
            !out.stdout.contains("root:"),
            "{link} reached the host:\n{out}"
        );
    }
    still_serving(&ns);
}

fn guest_cannot_plant_an_escaping_symlink(probe: Probe) {
    let ns = probe.ns("guest-symlink");
    let dir = host_dir("guest-link");
    let out = ns
        .run(probe.image())
        .bind(dir.path(), "/rw", false)
        .args(["/probe.wasm", "symlink", "/etc/passwd", "/rw/evil"])
        .rm("plant");
    probe.assert_code(&out, 3);
    // Nothing the host would follow was created.
    assert!(
        std::fs::symlink_metadata(dir.path().join("evil")).is_err(),
        "the guest planted a link pointing at a host path"
    );
    still_serving(&ns);
}

fn renames_and_links_across_mounts_fail(probe: Probe) {
    // Two writable mounts of folders on the same host filesystem: moving or linking a file
    // from one to the other would let it outlive the mount it was granted through.
    let ns = probe.ns("cross-preopen");
    let (a, b) = (host_dir("cross-a"), host_dir("cross-b"));
    std::fs::write(a.path().join("f"), "kept").unwrap();
    for op in ["rename", "link"] {
        let out = ns
            .run(probe.image())
            .bind(a.path(), "/a", false)
            .bind(b.path(), "/b", false)
            .args(["/probe.wasm", op, "/a/f", "/b/f"])
            .rm(op);
        probe.assert_code(&out, 3);
        assert!(!b.path().join("f").exists(), "{op} crossed mounts:\n{out}");
        assert_eq!(std::fs::read_to_string(a.path().join("f")).unwrap(), "kept");
    }
    // Within one mount both work.
    let out = ns
        .run(probe.image())
        .bind(a.path(), "/a", false)
        .args(["/probe.wasm", "rename", "/a/f", "/a/g"])
        .rm("rename-within");
    out.assert_success();
    assert!(a.path().join("g").exists(), "{out}");
    still_serving(&ns);
}

/// Modules that fail at instantiation: an import no WASI host provides, a start function
/// that traps. Create fails with the reason; nothing is left.
#[test]
fn unknown_import_and_trapping_start_fail_at_create() {
    let ns = Ns::new("instantiate-fails");
    for (image, words) in [
        ("bad-import", "unknown import"),
        ("start-trap", "unreachable"),
    ] {
        let (c, out) = ns.run(image).rm_id(image);
        assert!(
            !out.timed_out && out.code != Some(0),
            "{image} must fail:\n{out}"
        );
        assert!(mentions(&out, words), "{image}: expected {words:?}:\n{out}");
        assert!(ns.task(&c.id).is_none(), "{image}: a task was left");
    }
    still_serving(&ns);
}

/// How one invalid setting is applied to a run.
type Misconfigure = fn(e2e::Run<'_>) -> e2e::Run<'_>;

/// Invalid sandbox settings are refused at create, naming what is wrong.
#[test]
fn invalid_annotations_and_limits_are_rejected_at_create() {
    let ns = Ns::new("invalid-policy");
    let cases: [(&str, Misconfigure); 4] = [
        ("wasm-shim/time-limit-ms", |r| {
            r.annotation("wasm-shim/time-limit-ms", "soon")
        }),
        ("wasm-shim/timelimit", |r| {
            r.annotation("wasm-shim/timelimit", "5")
        }),
        ("wasm-shim/net-connect", |r| {
            r.annotation("wasm-shim/net-connect", "10.0.0.0/99:443")
        }),
        ("linux.resources.memory.limit", |r| r.memory_limit(MIB)),
    ];
    for (field, misconfigure) in cases {
        let out = misconfigure(ns.run("probe").args(["/probe.wasm", "args"])).rm("invalid");
        assert!(
            out.code != Some(0) && !out.timed_out,
            "{field}: must fail:\n{out}"
        );
        assert!(out.all_text().contains(field), "{field}: not named:\n{out}");
    }
    still_serving(&ns);
}
