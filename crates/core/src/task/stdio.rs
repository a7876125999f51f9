//! The container's stdio: the FIFOs containerd (or `ctr`) created, connected to the instance
//! process's fds 0, 1, 2.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::error::{IoContext, Result};

/// The paths containerd passed in the Create request (empty when not wanted).
#[derive(Debug, Clone, Default)]
pub struct StdioPaths {
    pub stdin: String,
    pub stdout: String,
    pub stderr: String,
}

/// The fds the instance process gets, plus the thread feeding its stdin.
pub struct Stdio {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    pub stdin_feeder: Option<StdinFeeder>,
}

impl Stdio {
    pub fn open(paths: &StdioPaths) -> Result<Self> {
        let (stdin, stdin_feeder) = if paths.stdin.is_empty() {
            (dev_null(false)?, None)
        } else {
            let (reader, feeder) = StdinFeeder::start(PathBuf::from(&paths.stdin))?;
            (reader, Some(feeder))
        };
        Ok(Stdio {
            stdin,
            stdout: open_output(&paths.stdout)?,
            stderr: open_output(&paths.stderr)?,
            stdin_feeder,
        })
    }
}

/// Output FIFOs are opened read-write, as containerd's own shims do: the open cannot block
/// on a reader, and the guest is not killed by SIGPIPE when a client detaches.
fn open_output(path: &str) -> Result<OwnedFd> {
    if path.is_empty() {
        return dev_null(true);
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(path)
        .io_context(|| format!("opening stdio {path}"))?;
    Ok(file.into())
}

/// The output FIFOs of a process, held so that its exit is reported only once containerd has
/// read what the process wrote.
///
/// containerd closes its end of the FIFOs soon after it learns of the exit (CRI does so
/// within milliseconds), and what is still in the pipe's buffer (up to 64 KiB) is lost from
/// the log. runc's shim copies output itself and waits for its copy before Delete; here the
/// process writes into the FIFOs directly, so the shim waits until the pipes are empty
/// (`FIONREAD`) before it reports the exit, then lets go of them.
pub struct OutputDrain {
    fifos: Vec<File>,
}

impl OutputDrain {
    /// Holds `stdout` and `stderr` if they are FIFOs (a log file or nothing needs no drain).
    pub fn open(paths: &StdioPaths) -> Self {
        let fifos = [&paths.stdout, &paths.stderr]
            .into_iter()
            .filter(|p| !p.is_empty())
            .filter(|p| {
                use std::os::unix::fs::FileTypeExt;
                std::fs::metadata(p).is_ok_and(|m| m.file_type().is_fifo())
            })
            // Read-write: the open cannot block on a reader, and nothing is ever read here.
            .filter_map(|p| {
                OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
                    .open(p)
                    .ok()
            })
            .collect();
        OutputDrain { fifos }
    }

    /// Waits until the reader has taken everything from the pipes, or `limit` passes (a
    /// reader that went away); then closes them.
    pub fn wait(self, limit: Duration) {
        let start = Instant::now();
        while self.fifos.iter().any(|f| unread(f) > 0) {
            if start.elapsed() >= limit {
                log::warn!(
                    "output not read within {} ms of the exit: what is left may be lost",
                    limit.as_millis()
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }
}

/// Bytes waiting in a pipe (0 if it cannot tell).
fn unread(fifo: &File) -> i32 {
    use std::os::fd::AsRawFd;
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int through the pointer.
    let rc = unsafe { libc::ioctl(fifo.as_raw_fd(), libc::FIONREAD, &mut n) };
    if rc == 0 {
        n
    } else {
        0
    }
}

fn dev_null(write: bool) -> Result<OwnedFd> {
    let file = OpenOptions::new()
        .read(!write)
        .write(write)
        .open("/dev/null")
        .io_context(|| "opening /dev/null".into())?;
    Ok(file.into())
}

/// Copies the stdin FIFO into a pipe, so the guest sees EOF when the client closes its end
/// (a FIFO handed over directly would read EOF before the client had even opened it).
pub struct StdinFeeder {
    fifo: PathBuf,
    thread: Option<JoinHandle<()>>,
}

impl StdinFeeder {
    fn start(fifo: PathBuf) -> Result<(OwnedFd, Self)> {
        let (reader, writer) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
            .io_context(|| "creating the stdin pipe".into())?;
        let path = fifo.clone();
        let thread = std::thread::Builder::new()
            .name("stdin".into())
            .spawn(move || {
                let mut writer = File::from(writer);
                // Blocks until the client opens its end.
                match File::open(&path) {
                    Ok(mut fifo) => {
                        if let Err(e) = io::copy(&mut fifo, &mut writer) {
                            if e.kind() != io::ErrorKind::BrokenPipe {
                                log::debug!("stdin {}: {e}", path.display());
                            }
                        }
                    }
                    Err(e) => log::warn!("opening stdin {}: {e}", path.display()),
                }
            })
            .io_context(|| "starting the stdin thread".into())?;
        Ok((
            reader,
            StdinFeeder {
                fifo,
                thread: Some(thread),
            },
        ))
    }

    /// End the copy: the guest reads EOF. Used by CloseIO and on delete.
    pub fn close(&mut self) {
        if let Some(thread) = self.thread.take() {
            if !thread.is_finished() {
                unblock_fifo_open(&self.fifo);
            }
            // The thread ends once the client's writer is gone; do not wait on a live client.
            drop(thread);
        }
    }
}

impl Drop for StdinFeeder {
    fn drop(&mut self) {
        self.close();
    }
}

/// A reader blocked in open(2) on a FIFO returns once a writer opens it; open and close one.
fn unblock_fifo_open(fifo: &Path) {
    let _ = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(fifo);
}
