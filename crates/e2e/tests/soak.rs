//! Many containers started and deleted in a row leave nothing behind: no process, no open
//! file of containerd, no mount, no bundle, FIFO or shim socket. Its own test binary, so that
//! nothing else runs beside it while it counts.

use std::path::Path;

use e2e::{config, eventually, mounts_mentioning, processes_mentioning, Ns};

/// What a container could leak, counted on the host.
#[derive(Debug, Clone)]
struct Footprint {
    shim_processes: usize,
    containerd_fds: usize,
    mounts: usize,
    bundles: usize,
    fifos: usize,
    shim_sockets: usize,
}

impl Footprint {
    /// Whether anything is counted more often than in `before`. (Fewer is no leak: containerd
    /// may still have been closing the warm-up shim's connection when `before` was taken.)
    fn grew_from(&self, before: &Footprint) -> bool {
        let counts = |f: &Footprint| {
            [
                f.shim_processes,
                f.containerd_fds,
                f.mounts,
                f.bundles,
                f.fifos,
                f.shim_sockets,
            ]
        };
        counts(self).iter().zip(counts(before)).any(|(a, b)| *a > b)
    }
}

fn count_entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

fn footprint(ns: &Ns) -> Footprint {
    let cfg = config();
    let ctd_dir = cfg.ctd_dir.as_ref().expect("the soak test needs CTD_DIR");
    let state = cfg
        .state_dir
        .as_ref()
        .expect("the soak test needs the state dir");
    // Written by scripts/lib/containerd.sh.
    let containerd = std::fs::read_to_string(ctd_dir.join("containerd.pid"))
        .expect("the soak test needs $CTD_DIR/containerd.pid")
        .trim()
        .to_string();
    Footprint {
        shim_processes: processes_mentioning("containerd-shim-wasm")
            .iter()
            .filter(|(_, cmd)| cmd.contains(&ns.name))
            .count(),
        containerd_fds: count_entries(&Path::new("/proc").join(&containerd).join("fd")),
        mounts: mounts_mentioning(&ctd_dir.to_string_lossy()).len(),
        bundles: count_entries(&state.join("io.containerd.runtime.v2.task").join(&ns.name)),
        fifos: count_entries(&ctd_dir.join("fifo")),
        shim_sockets: count_entries(Path::new("/run/containerd/s")),
    }
}

#[test]
fn a_thousand_containers_leave_nothing_behind() {
    let count: usize = std::env::var("E2E_SOAK_COUNT")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(1000);
    let ns = Ns::new("soak");
    // One run first, so that the image is imported and the artifact cached.
    ns.run("hello").rm("warm").assert_success();
    // Count from rest: the warm-up container's shim may still be exiting.
    assert!(
        eventually(std::time::Duration::from_secs(10), || footprint(&ns)
            .shim_processes
            == 0),
        "the warm-up container's shim did not exit"
    );
    let before = footprint(&ns);
    let t0 = std::time::Instant::now();
    for i in 0..count {
        let out = ns.run("hello").rm("soak");
        assert!(
            out.success() && out.stdout.trim_end() == "hello from wasm",
            "run {i} of {count} failed:\n{out}"
        );
    }
    let took = t0.elapsed();
    // containerd closes a finished shim's connection asynchronously; give it a moment.
    let mut after = footprint(&ns);
    for _ in 0..50 {
        if !after.grew_from(&before) {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
        after = footprint(&ns);
    }
    eprintln!(
        "soak: {count} containers in {:.1} s ({:.1}/s)\n  before: {before:?}\n  after:  {after:?}",
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64()
    );
    assert!(
        !after.grew_from(&before),
        "{count} containers leaked something: before {before:?}, after {after:?}"
    );
}
