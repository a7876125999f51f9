//! The shim's ttrpc server: the Task service and, for pods whose sandbox the shim holds
//! (containerd 2.x, `sandboxer = "shim"`), the Sandbox service, on one socket. containerd
//! talks to both over the address `start` returned.
//!
//! containerd-shim's own bootstrap registers the Task service only, so its server half is
//! done here, to the same contract: the socket from `-socket`, a second server for a socket
//! already served only reports its address, stdout is handed back to `start` once serving,
//! and every child's exit reaches the crate's exit monitor (the shim is their subreaper).
//!
//! The server is ttrpc's async one ([`services`]): a node's pods open thousands of
//! connections to this one process, and each costs a task, not threads.

mod services;

use std::os::fd::IntoRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, Result};
use containerd_shim::monitor::monitor_notify_by_pid;
use containerd_shim::protos::ttrpc::asynchronous::Server;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, Flags, Shim};
use containerd_shim_protos::sandbox_async::create_sandbox;
use containerd_shim_protos::shim_async::create_task;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use signal_hook::consts::{SIGCHLD, SIGINT, SIGPIPE, SIGTERM};
use signal_hook::iterator::Signals;

use crate::engine::Engine;
use crate::sandbox::SandboxService;
use crate::shim::WasmShim;
use services::{AsyncSandboxes, AsyncTasks};

/// Serve until the shim is told to exit; returns the process exit code.
pub fn run<E: Engine>(runtime_id: &str, flags: Flags, config: Config) -> i32 {
    match serve::<E>(runtime_id, flags, config) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{runtime_id}: {e:#}");
            1
        }
    }
}

fn serve<E: Engine>(runtime_id: &str, flags: Flags, mut config: Config) -> Result<()> {
    anyhow::ensure!(
        !flags.namespace.is_empty(),
        "shim namespace cannot be empty"
    );
    anyhow::ensure!(!flags.socket.is_empty(), "shim socket cannot be empty");
    let ttrpc_address = std::env::var("TTRPC_ADDRESS").context("TTRPC_ADDRESS")?;
    // `start` spawned this process with every signal blocked (see `shim::start_shim`).
    nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::empty()),
        None,
    )
    .context("unblocking signals")?;
    // Before any thread starts, so that every thread has them routed to the iterator.
    let signals = Signals::new([SIGTERM, SIGINT, SIGPIPE, SIGCHLD]).context("signals")?;
    // Instances forked by the zygote, and holders, are re-parented to this process.
    // SAFETY: prctl with integer arguments.
    if unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) } != 0 {
        return Err(std::io::Error::last_os_error()).context("becoming a subreaper");
    }

    let Some(listener) = listen(&flags.socket)? else {
        // Another server serves this socket: `start` reports its address.
        containerd_shim::util::write_address(&flags.socket)?;
        handed_back();
        return Ok(());
    };

    crate::placement::CgroupPlacement::warm();
    let mut shim = WasmShim::<E>::new(runtime_id, &flags, &mut config);
    let publisher = RemotePublisher::new(&ttrpc_address)?;
    let tasks = shim.create_task_service(publisher);
    tasks.warm_zygote();
    let sandboxes = SandboxService::new(shim.pods(), tasks.zygote(), tasks.idle_hook());
    // Two workers for the connections (the machines are small); the calls themselves run
    // on the runtime's blocking pool, which grows with the calls in flight.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("ttrpc")
        .enable_all()
        .build()
        .context("starting the ttrpc runtime")?;
    let mut server = Server::new()
        .set_domain_unix()
        .add_listener(listener.into_raw_fd())?
        .register_service(create_task(Arc::new(AsyncTasks(Arc::new(tasks)))))
        .register_service(create_sandbox(Arc::new(AsyncSandboxes(Arc::new(
            sandboxes,
        )))));
    runtime.block_on(server.start())?;
    handed_back();
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || handle_signals(signals))?;
    log::info!("serving on {}", flags.socket);
    shim.wait();
    // Connections still open (containerd's, to a server it no longer needs) are dropped.
    let closed = runtime.block_on(tokio::time::timeout(SHUTDOWN_WAIT, server.shutdown()));
    if !matches!(closed, Ok(Ok(()))) {
        log::warn!("closing the ttrpc server: {closed:?}");
    }
    runtime.shutdown_timeout(SHUTDOWN_WAIT);
    Ok(())
}

/// How long the exiting server waits for its connections and calls to end.
const SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// Bind the socket; `None` if a live server already serves it (a stale file is replaced).
fn listen(socket: &str) -> Result<Option<UnixListener>> {
    let path = Path::new(socket.strip_prefix("unix://").unwrap_or(socket));
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    match UnixListener::bind(path) {
        Ok(listener) => Ok(Some(listener)),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => {
            if UnixStream::connect(path).is_ok() {
                return Ok(None);
            }
            std::fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
            Ok(Some(
                UnixListener::bind(path).with_context(|| format!("binding {}", path.display()))?,
            ))
        }
        Err(e) => Err(e).with_context(|| format!("binding {}", path.display())),
    }
}

/// `start` copies this process's stdout until it closes: point it at stderr (as the crate's
/// bootstrap does) once the server serves.
fn handed_back() {
    // SAFETY: dup2 of the process's own standard fds.
    unsafe { libc::dup2(libc::STDERR_FILENO, libc::STDOUT_FILENO) };
}

/// Reap every child and tell the exit monitor, with a signal's death as 128 + the signal,
/// as containerd expects; other signals are only noted (containerd stops the shim through
/// Shutdown).
fn handle_signals(mut signals: Signals) {
    for signal in signals.forever() {
        if signal != SIGCHLD {
            log::debug!("received signal {signal}");
            continue;
        }
        loop {
            let (pid, code) = match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => (pid, code),
                Ok(WaitStatus::Signaled(pid, signal, _)) => (pid, 128 + signal as i32),
                Ok(WaitStatus::StillAlive) | Err(nix::errno::Errno::ECHILD) => break,
                Ok(_) => continue,
                Err(e) => {
                    log::warn!("reaping children: {e}");
                    break;
                }
            };
            if let Err(e) = monitor_notify_by_pid(pid.as_raw(), code) {
                log::error!("reporting the exit of {pid}: {e}");
            }
        }
    }
}
