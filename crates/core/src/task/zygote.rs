//! The shim's side of its zygote ([`crate::instance::zygote`]): started once, asked for one
//! instance per Wasm container, started again if it died.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};

use crate::error::{Error, IoContext, Result};
use crate::instance::zygote::{self, wire};

pub struct Zygote {
    running: Mutex<Option<Running>>,
    /// The environment of the zygote, hence of every instance.
    env: Vec<(String, String)>,
    /// The containerd namespace served, shown in the zygote's command line.
    namespace: String,
}

struct Running {
    sock: OwnedFd,
    pid: u32,
}

impl Zygote {
    pub fn new(env: Vec<(String, String)>, namespace: &str) -> Self {
        Zygote {
            running: Mutex::new(None),
            env,
            namespace: namespace.to_string(),
        }
    }

    /// Start the zygote now, so that the first container does not wait for it.
    pub fn warm(&self) {
        let mut running = self.lock();
        if running.is_none() {
            match self.start() {
                Ok(r) => *running = Some(r),
                Err(e) => log::warn!("starting the zygote: {e}"),
            }
        }
    }

    /// Fork the instance of `bundle` (its `wasm-instance.json` written) with these fds, born
    /// in `cgroup` if given. Returns its pid; it is this process's child.
    pub fn spawn(&self, bundle: &Path, fds: &wire::Fds, cgroup: Option<&OwnedFd>) -> Result<u32> {
        self.ask(|sock| wire::send_instance_request(sock, bundle, fds, cgroup.map(|fd| fd.as_fd())))
    }

    /// Fork a pod's holder into new `namespaces` (`CLONE_NEW*`), joining `netns`, with
    /// `hostname`. Returns its pid; it is this process's child.
    pub fn hold(&self, namespaces: u64, hostname: &[u8], netns: Option<&OwnedFd>) -> Result<u32> {
        self.ask(|sock| {
            wire::send_hold_request(sock, namespaces, hostname, netns.map(|fd| fd.as_fd()))
        })
    }

    /// Send a request and read the pid it made.
    fn ask(&self, send: impl Fn(BorrowedFd<'_>) -> std::io::Result<()>) -> Result<u32> {
        let mut running = self.lock();
        // A zygote that died (killed, or crashed mapping a module) is replaced once.
        for attempt in 0..2 {
            if running.is_none() {
                *running = Some(self.start()?);
            }
            let r = running.as_ref().expect("started above");
            let asked = send(r.sock.as_fd()).and_then(|()| wire::receive_reply(r.sock.as_fd()));
            match asked {
                Ok(wire::Reply::Pid(pid)) => return Ok(pid),
                Ok(wire::Reply::Error(message)) => {
                    return Err(Error::Engine(anyhow::anyhow!("{message}")))
                }
                Err(e) if attempt == 0 => {
                    log::warn!("zygote pid {} is gone ({e}): starting another", r.pid);
                    *running = None;
                }
                Err(e) => {
                    *running = None;
                    return Err(Error::Io {
                        context: "asking the zygote for a process".into(),
                        cause: e,
                    });
                }
            }
        }
        unreachable!("the second attempt returns")
    }

    fn lock(&self) -> MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn start(&self) -> Result<Running> {
        let t0 = Instant::now();
        let (ours, theirs) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .io_context(|| "creating the zygote's socket".into())?;
        let exe = std::env::current_exe().io_context(|| "locating the shim binary".into())?;
        let mut cmd = Command::new(exe);
        cmd.args([zygote::SUBCOMMAND, "-namespace", &self.namespace])
            .env_clear()
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let fd = theirs.as_raw_fd();
        // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 clears close-on-exec on the new fd, so exactly this one is inherited.
                let ok = if fd == zygote::SOCKET_FD {
                    libc::fcntl(fd, libc::F_SETFD, 0) >= 0
                } else {
                    libc::dup2(fd, zygote::SOCKET_FD) >= 0
                };
                if ok {
                    Ok(())
                } else {
                    Err(std::io::Error::last_os_error())
                }
            });
        }
        let child = cmd.spawn().io_context(|| "starting the zygote".into())?;
        let pid = child.id();
        // The shim's reaper collects its exit; the handle must not wait itself.
        drop(child);
        log::info!(
            "zygote pid {pid} started in {} us",
            t0.elapsed().as_micros()
        );
        Ok(Running { sock: ours, pid })
    }
}
