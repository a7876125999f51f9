//! The zygote: one warmed process per shim, from which every Wasm instance is forked.
//!
//! The shim starts it once (`containerd-shim-<engine>-v1 zygote`, the only `exec` of the
//! shim binary an instance costs). It starts the engine and keeps each module it has been
//! asked for mapped, so a new instance shares the binary's touched pages, the engine's state
//! and the module's native code with the zygote copy-on-write; its own pages are only its
//! linear memory, WASI context and stack. Per request it forks (see [`super::fork`]): the
//! child is the container's instance process, a child of the shim, and does its placement,
//! confinement and instantiation itself before the guest runs, as an instance always has.
//!
//! It stays single-threaded: a fork copies only the calling thread, so a thread of the
//! zygote's holding a lock would leave the child stuck on it.

use std::collections::VecDeque;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use anyhow::Context;

use super::fork::{fork_instance, Forked};
use crate::engine::{Engine, LoadedArtifact};

pub mod wire;

/// The argument that turns the shim binary into the zygote.
pub const SUBCOMMAND: &str = "zygote";
/// The zygote's end of its socket to the shim.
pub const SOCKET_FD: RawFd = 3;
/// Modules kept mapped: the most recently used ones. A module not among them is mapped
/// again by the zygote on its next request.
const MODULES_KEPT: usize = 32;

/// Entry of the zygote process; returns its exit code.
pub fn main<E: Engine>(log_level: log::LevelFilter) -> i32 {
    // SAFETY: the shim passes exactly this fd; nothing else owns it here.
    let sock = unsafe { OwnedFd::from_raw_fd(SOCKET_FD) };
    // fds 0-4 stay taken (0-2 are /dev/null, 3 the socket, 4 this), so every fd opened or
    // received later (the log FIFO included) lies above the ones a child puts its stdio and
    // pipes on.
    let _placeholder = std::fs::File::open("/dev/null");
    crate::shim_log::init_fifo_logger(log_level);
    set_process_name("wasm-zygote");
    let t0 = Instant::now();
    let engine = match E::new() {
        Ok(engine) => engine,
        Err(e) => {
            log::error!("zygote: starting the engine: {e:#}");
            return 1;
        }
    };
    log::info!(
        "zygote pid {}: engine {} started in {} us",
        std::process::id(),
        E::NAME,
        t0.elapsed().as_micros()
    );
    // Every instance would read them, and mountinfo grows with the node's pods.
    crate::placement::CgroupPlacement::warm();
    let mut modules = Modules::default();
    loop {
        let request = match wire::receive_request(sock.as_fd()) {
            Ok(Some(request)) => request,
            // The shim is gone, and with it anyone to fork for.
            Ok(None) => return 0,
            Err(e) => {
                log::error!("zygote: reading a request: {e}");
                return 1;
            }
        };
        let forked = match request {
            wire::Request::Instance(request) => spawn::<E>(&engine, &mut modules, request),
            wire::Request::Hold(request) => hold(request),
        };
        let reply = match forked {
            Ok(pid) => wire::Reply::Pid(pid),
            Err(e) => wire::Reply::Error(format!("{e:#}")),
        };
        if let Err(e) = wire::send_reply(sock.as_fd(), &reply) {
            log::error!("zygote: replying: {e}");
            return 1;
        }
    }
}

/// Fork the instance of the request's bundle; in the parent, its pid. The child never
/// returns from here.
fn spawn<E: Engine>(
    engine: &E,
    modules: &mut Modules,
    request: wire::InstanceRequest,
) -> anyhow::Result<u32> {
    // containerd reads the log FIFO of the bundle being created; the child inherits it.
    crate::shim_log::use_bundle_log(&request.bundle);
    let config = super::read_config(&request.bundle)?;
    let key = ModuleKey::of(&config.artifact)?;
    if !modules.contains(&key) {
        let t0 = Instant::now();
        let loaded = engine.load(&config.artifact, config.kind)?;
        log::info!(
            "zygote: mapped {} in {} us",
            config.artifact.display(),
            t0.elapsed().as_micros()
        );
        modules.insert(key.clone(), loaded);
    }
    ensure_single_threaded()?;
    match fork_instance(request.cgroup.as_ref().map(|fd| fd.as_fd()))
        .context("forking the instance")?
    {
        Forked::Parent(pid) => Ok(pid),
        Forked::Child => {
            let loaded = modules.take(&key).expect("mapped above");
            let in_cgroup = request.cgroup.is_some();
            install_fds(request.fds);
            drop(request.cgroup);
            // `ps` tells instances apart by container (the command line is the zygote's).
            set_process_name(&format!("wasm:{}", config.id));
            std::process::exit(super::run::<E>(config, loaded, in_cgroup))
        }
    }
}

/// Fork a pod's holder: a child of the shim in new namespaces, a copy of this small process
/// rather than of the shim (whose page tables grow with its threads).
fn hold(request: wire::HoldRequest) -> anyhow::Result<u32> {
    match super::fork::clone3(super::fork::CLONE_PARENT | request.namespaces, None)
        .context("cloning the pod's holder")?
    {
        super::fork::Forked::Parent(pid) => Ok(pid),
        super::fork::Forked::Child => crate::sandbox::holder::hold(
            request.netns.as_ref().map(|fd| fd.as_raw_fd()),
            &request.hostname,
        ),
    }
}

/// Put the instance's stdio and pipes on the fds it expects. Each target (0-4) is taken in
/// the zygote and each source lies above them, so `dup2` replaces the zygote's without
/// closing anything the child still needs; the `OwnedFd`s of the zygote's socket and
/// placeholder are never dropped in the child (it ends in `exit`).
fn install_fds(fds: wire::Fds) {
    let pairs = [
        (&fds.stdin, 0),
        (&fds.stdout, 1),
        (&fds.stderr, 2),
        (&fds.start, super::START_FD),
        (&fds.status, super::STATUS_FD),
    ];
    for (from, to) in pairs {
        // SAFETY: dup2 onto a number this process owns; it also clears close-on-exec.
        if unsafe { libc::dup2(from.as_raw_fd(), to) } < 0 {
            eprintln!(
                "instance: installing fd {to}: {}",
                std::io::Error::last_os_error()
            );
            std::process::exit(super::EXIT_SETUP);
        }
    }
}

/// The process's `comm` (at most 15 bytes are kept).
fn set_process_name(name: &str) {
    let mut bytes: Vec<u8> = name.bytes().filter(|b| *b != 0).take(15).collect();
    bytes.push(0);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, bytes.as_ptr()) };
}

/// A fork copies the calling thread only: refuse rather than leave a child on a lock that
/// another thread held (an engine that starts threads would have to be forked from before
/// it does).
fn ensure_single_threaded() -> anyhow::Result<()> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(1);
    anyhow::ensure!(
        threads == 1,
        "the zygote has {threads} threads and cannot fork safely"
    );
    Ok(())
}

/// An artifact file as mapped: the cache replaces a file (a new inode) rather than
/// rewriting it, so path, inode and modification time name its contents.
#[derive(Clone, PartialEq, Eq)]
struct ModuleKey {
    path: PathBuf,
    inode: u64,
    modified: Option<SystemTime>,
}

impl ModuleKey {
    fn of(path: &Path) -> anyhow::Result<Self> {
        use std::os::unix::fs::MetadataExt;
        let meta =
            std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
        Ok(ModuleKey {
            path: path.to_path_buf(),
            inode: meta.ino(),
            modified: meta.modified().ok(),
        })
    }
}

/// The modules the zygote keeps mapped, most recently used last.
#[derive(Default)]
struct Modules {
    kept: VecDeque<(ModuleKey, Box<dyn LoadedArtifact>)>,
}

impl Modules {
    fn contains(&mut self, key: &ModuleKey) -> bool {
        let Some(i) = self.kept.iter().position(|(k, _)| k == key) else {
            return false;
        };
        let entry = self.kept.remove(i).expect("found");
        self.kept.push_back(entry);
        true
    }

    fn insert(&mut self, key: ModuleKey, loaded: Box<dyn LoadedArtifact>) {
        // Another file at the same path is stale now.
        self.kept.retain(|(k, _)| k.path != key.path);
        if self.kept.len() == MODULES_KEPT {
            self.kept.pop_front();
        }
        self.kept.push_back((key, loaded));
    }

    /// Used in a child only: the module is its own copy from there on.
    fn take(&mut self, key: &ModuleKey) -> Option<Box<dyn LoadedArtifact>> {
        let i = self.kept.iter().position(|(k, _)| k == key)?;
        self.kept.remove(i).map(|(_, loaded)| loaded)
    }
}
