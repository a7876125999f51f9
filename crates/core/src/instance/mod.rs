//! The instance process: one per container, forked from the shim's [`zygote`].
//!
//! Like `runc init`, it is created at the task's Create: it enters the container's place,
//! takes the guest's identity and instantiates the artifact the zygote has mapped, reports
//! `ready` (or the error) on its status pipe, then blocks on its start pipe until the task's
//! Start. A process of its own means a signal stops the guest as it would stop any process, a
//! guest's crash or OOM kills nothing else, and the shim server never holds an engine's
//! memory.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{FromRawFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::{Deserialize, Serialize};

mod confine;
pub(crate) mod fork;
mod listen;
mod net_guard;
pub mod notice;
pub mod request_cap;
mod watchdog;
pub mod zygote;

pub use watchdog::EXIT_TIME_LIMIT;

use crate::engine::{Engine, GuestExit, LoadedArtifact};
use crate::placement::Placement;
use crate::policy::SandboxPolicy;
use crate::source::ModuleKind;

/// Written into the bundle by the task service at Create, read by the zygote.
#[derive(Debug, Serialize, Deserialize)]
pub struct InstanceConfig {
    pub id: String,
    pub policy: SandboxPolicy,
    pub placement: Placement,
    pub artifact: PathBuf,
    pub kind: ModuleKind,
    pub entry_function: Option<String>,
}

pub const CONFIG_FILE: &str = "wasm-instance.json";
/// Read end of the start pipe: one byte means "run", EOF means "never run".
pub const START_FD: RawFd = 3;
/// Write end of the status pipe: `ready\n` or `error: <message>\n`; after the guest ran,
/// [`OOM_NOTE`] if it failed at the memory limit.
pub const STATUS_FD: RawFd = 4;

/// Exit code when the guest trapped (as 128 + SIGABRT, what a crashing native process gives).
pub const EXIT_TRAP: i32 = 134;
/// Exit code and status note when the guest failed at the memory limit (as 128 + SIGKILL,
/// what an OOM-killed native process gives; the note tells it from a plain SIGKILL).
pub const EXIT_OOM: i32 = 137;
pub const OOM_NOTE: &str = "oom";
/// Exit code when the guest could not be set up at all.
pub const EXIT_SETUP: i32 = 126;

pub fn read_config(bundle: &Path) -> anyhow::Result<InstanceConfig> {
    use anyhow::Context;
    let path = bundle.join(CONFIG_FILE);
    serde_json::from_slice(
        &std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?,
    )
    .with_context(|| format!("parsing {}", path.display()))
}

/// Entry of the instance process, just forked, with its fds in place and its artifact
/// mapped; `in_cgroup` when it was born in its cgroup. Returns the process exit code.
///
/// Placement and confinement happen on this (the main) thread; the engine's work runs on a
/// thread of its own, which inherits them. glibc gives a new thread a malloc arena of its
/// own, so the engine's allocations for this instance land in fresh pages instead of in free
/// chunks scattered over the heap inherited from the zygote, each of whose pages a write
/// copies (WasmEdge: about 0.7 MB per instance).
fn run<E: Engine>(config: InstanceConfig, loaded: Box<dyn LoadedArtifact>, in_cgroup: bool) -> i32 {
    // SAFETY: the zygote put exactly these two fds in place; nothing else owns them here.
    let mut status = unsafe { File::from_raw_fd(STATUS_FD) };
    let start = unsafe { File::from_raw_fd(START_FD) };

    let t0 = Instant::now();
    let placed = match place::<E>(config, in_cgroup) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(status, "error: {}", one_line(&format!("{e:#}")));
            return EXIT_SETUP;
        }
    };
    let loaded = Handover(loaded);
    let guest = std::thread::Builder::new()
        .name("guest".into())
        .stack_size(GUEST_STACK)
        .spawn(move || {
            let loaded = loaded;
            run_guest::<E>(placed, loaded.0, status, start, t0)
        });
    match guest.map(|g| g.join()) {
        Ok(Ok(code)) => code,
        Ok(Err(_)) => EXIT_TRAP,
        Err(e) => {
            eprintln!("instance: starting the guest's thread: {e}");
            EXIT_SETUP
        }
    }
}

/// The guest's thread's stack: what the main thread of a process gets (`ulimit -s`).
const GUEST_STACK: usize = 8 << 20;

/// The mapped artifact, handed from the main thread to the guest's, which alone uses it
/// from then on.
struct Handover(Box<dyn LoadedArtifact>);

// SAFETY: the artifact moves to the guest's thread and is never touched by the main thread
// again. The engines keep no thread-affine state in it: it was made on the zygote's main
// thread and is used, after the fork, on whichever thread instantiates it.
unsafe impl Send for Handover {}

/// Instantiate, report `ready`, wait for Start, run the guest; the process exit code.
fn run_guest<E: Engine>(
    placed: Placed,
    loaded: Box<dyn LoadedArtifact>,
    mut status: File,
    mut start: File,
    t0: Instant,
) -> i32 {
    let prepared = match instantiate(placed, loaded) {
        Ok(p) => p,
        Err(e) => {
            let _ = writeln!(status, "error: {}", one_line(&format!("{e:#}")));
            return EXIT_SETUP;
        }
    };
    let Prepared {
        id: config_id,
        instance: prepared,
        time_limit,
        withheld_env,
        _pinned,
    } = prepared;
    log::info!(
        "{config_id}: engine {} instance ready in {} us",
        E::NAME,
        t0.elapsed().as_micros()
    );
    let _ = status.write_all(b"ready\n");

    let mut go = [0u8; 1];
    if !matches!(start.read(&mut go), Ok(1)) {
        // The task was deleted before it was started.
        log::info!("{config_id}: start pipe closed before Start: not running the guest");
        return 0;
    }
    drop(start);
    // Said when the guest starts, so that the container's log (from Start on) has it.
    for name in &withheld_env {
        notice::refused(&format!("env var not allowed: {name}"));
    }
    if let Some(limit) = time_limit {
        watchdog::arm(config_id.clone(), limit);
    }
    let t_start = Instant::now();
    let exit = prepared.run();
    log::info!(
        "{config_id}: guest ran {} us, {exit:?}",
        t_start.elapsed().as_micros()
    );
    match exit {
        GuestExit::Exited(code) => code,
        GuestExit::Trapped(message) => {
            eprintln!("{message}");
            EXIT_TRAP
        }
        GuestExit::MemoryLimit(message) => {
            eprintln!("{message}");
            let _ = writeln!(status, "{OOM_NOTE}");
            EXIT_OOM
        }
    }
}

struct Prepared {
    id: String,
    instance: Box<dyn crate::engine::PreparedInstance>,
    time_limit: Option<std::time::Duration>,
    withheld_env: Vec<String>,
    /// The preopened folders, held open for the guest's whole life.
    _pinned: Vec<std::os::fd::OwnedFd>,
}

/// The instance in its place and confined, not yet instantiated.
struct Placed {
    config: InstanceConfig,
    listener: Option<crate::engine::HttpListeners>,
    pinned: Vec<std::os::fd::OwnedFd>,
    t_enter: std::time::Duration,
    t_confine: std::time::Duration,
}

/// Enter the container's cgroup and namespaces, take the guest's identity and install the
/// network guard: all of it the calling thread's and inherited by threads it starts.
fn place<E: Engine>(mut config: InstanceConfig, in_cgroup: bool) -> anyhow::Result<Placed> {
    notice::set_container(&config.id);
    request_cap::set(config.policy.network.request_cap);
    // First, so the kernel charges everything the engine does to the container.
    let t_enter = Instant::now();
    config
        .placement
        .enter(&config.id, config.policy.needs_network(), in_cgroup)?;
    let t_enter = t_enter.elapsed();
    let t_confine = Instant::now();
    let listener = config
        .policy
        .http_serve
        .as_ref()
        .map(listen::bind)
        .transpose()?;
    let pinned = confine::pin_preopens(&mut config.policy)?;
    confine::drop_privileges(&config.policy.identity, config.policy.limits.max_open_files)?;
    // Names in the network allowlist resolve in the container's own network.
    config.policy.network.resolve_hosts();
    // From here on the kernel holds the guest to the network allowlist: all of it for an
    // engine with no address check of its own, else the closed case (no sockets at all).
    if !E::CHECKS_SOCKET_ADDRESSES || config.policy.network.is_closed() {
        let guard = net_guard::install(&config.policy.network, &config.id)?;
        log::debug!("{}: network guard {:?}", config.id, guard.mode());
    }
    Ok(Placed {
        config,
        listener,
        pinned,
        t_enter,
        t_confine: t_confine.elapsed(),
    })
}

fn instantiate(placed: Placed, loaded: Box<dyn LoadedArtifact>) -> anyhow::Result<Prepared> {
    let Placed {
        config,
        listener,
        pinned,
        t_enter,
        t_confine,
    } = placed;
    let t1 = Instant::now();
    let instance = match listener {
        Some(listeners) => {
            let addr = listeners.requests.local_addr()?;
            let server = loaded.serve_http(&config.policy, listeners)?;
            log::info!(
                "{}: serving wasi:http/proxy on {addr} from Start",
                config.id
            );
            server
        }
        None => loaded.instantiate(&config.policy, config.entry_function.as_deref())?,
    };
    log::info!(
        "{}: cgroup + netns {} us, confinement {} us, instantiate {} us",
        config.id,
        t_enter.as_micros(),
        t_confine.as_micros(),
        t1.elapsed().as_micros()
    );
    Ok(Prepared {
        id: config.id,
        instance,
        time_limit: config.policy.limits.time_limit,
        withheld_env: config.policy.withheld_env,
        _pinned: pinned,
    })
}

fn one_line(s: &str) -> String {
    s.replace('\n', " ")
}
