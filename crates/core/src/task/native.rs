//! A native container: an entrypoint that is not Wasm (an ELF binary or a `#!` script), run
//! as an ordinary Linux container with youki's libcontainer, so that a pod's pause container
//! and sidecars work under the same runtime handler.
//!
//! Everything of libcontainer that forks or changes the working directory (create, start,
//! exec) runs in a short-lived helper process (the shim binary re-executed with
//! [`SUBCOMMAND`]), as `runc create` / `runc start` / `runc exec` run beside runc's shim: the
//! shim server is multi-threaded, and libcontainer also sets the calling process's
//! `oom_score_adj` and makes it non-dumpable. The container's init (and exec) processes are
//! children of the helper; when it exits they are re-parented to the shim, a child
//! subreaper, whose reaper sees their exits. Kill, Pids and Delete neither fork nor change
//! directory and run in the shim itself.
//!
//! libcontainer's state lives in `<bundle>/native/<id>`, under containerd's state directory
//! for the namespace, and goes with the bundle.

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as ProcessStdio};

use containerd_shim::monitor::{monitor_subscribe, wait_pid, Topic};
use libcontainer::container::builder::ContainerBuilder;
use libcontainer::container::Container as Libcontainer;
use libcontainer::syscall::syscall::SyscallType;
use libcontainer::workload::default::DefaultExecutor;
use libcontainer::workload::{Executor, ExecutorError, ExecutorValidationError};
use nix::fcntl::OFlag;
use oci_spec::runtime::Spec;

use crate::error::{Error, IoContext, Result};
use crate::placement::CgroupPlacement;
use crate::source::DEFAULT_PATH;
use crate::task::rootfs::Rootfs;
use crate::task::stdio::{StdinFeeder, Stdio, StdioPaths};

/// The helper's subcommand: `native create|start|exec ...`.
pub const SUBCOMMAND: &str = "native";
/// libcontainer's root folder inside the bundle.
pub const STATE_DIR: &str = "native";
/// The helper reports on this fd: `ok <pid>` or `error: <reason>`.
const STATUS_FD: i32 = 3;

pub struct NativeContainer {
    id: String,
    bundle: PathBuf,
    root: PathBuf,
    node_env: Vec<(String, String)>,
    stdin_feeder: Option<StdinFeeder>,
    execs: HashMap<String, Exec>,
    // Unmounted last, once libcontainer is done with it.
    rootfs: Rootfs,
}

/// An exec process: added by Exec, spawned by Start.
struct Exec {
    process_json: PathBuf,
    stdio: StdioPaths,
    stdin_feeder: Option<StdinFeeder>,
}

impl NativeContainer {
    /// Create the container: its init process waits for [`NativeContainer::start`].
    pub fn create(
        id: &str,
        bundle: &Path,
        spec: &Spec,
        cgroup: Option<&CgroupPlacement>,
        rootfs: Rootfs,
        stdio: &StdioPaths,
        node_env: &[(String, String)],
    ) -> Result<(Self, u32)> {
        if spec.process().as_ref().and_then(|p| p.terminal()) == Some(true) {
            return Err(Error::Unsupported(
                "a terminal (tty) is not supported for native containers yet; run without -t"
                    .into(),
            ));
        }
        if spec.linux().is_none() {
            return Err(Error::spec(
                "linux",
                "a native container needs the linux section",
            ));
        }
        // `slice:prefix:name` is the systemd driver's form (CRI with SystemdCgroup).
        let systemd = cgroup.is_some_and(|c| c.systemd);
        let root = bundle.join(STATE_DIR);
        let mut container = NativeContainer {
            id: id.to_string(),
            bundle: bundle.to_path_buf(),
            root,
            node_env: node_env.to_vec(),
            stdin_feeder: None,
            execs: HashMap::new(),
            rootfs,
        };
        let mut io = Stdio::open(stdio)?;
        container.stdin_feeder = io.stdin_feeder.take();
        let mut args = vec![
            "create".to_string(),
            container.root.to_string_lossy().into_owned(),
            id.to_string(),
            bundle.to_string_lossy().into_owned(),
        ];
        if systemd {
            args.push("--systemd".into());
        }
        let t0 = std::time::Instant::now();
        let pid = match container.helper(&args, Some(io)) {
            Ok(pid) => pid,
            Err(e) => {
                // libcontainer cleans up after a failed create; what is left is ours.
                let _ = std::fs::remove_dir_all(&container.root);
                return Err(e);
            }
        };
        log::info!(
            "{id}: native container created, init pid {pid} in {} us",
            t0.elapsed().as_micros()
        );
        Ok((container, pid))
    }

    /// Release the init process into the container's entrypoint.
    pub fn start(&mut self) -> Result<()> {
        let args = [
            "start".to_string(),
            self.root.to_string_lossy().into_owned(),
            self.id.clone(),
        ];
        self.helper(&args, None).map(|_| ())
    }

    /// Signal the init process, or with `all` every process of the container's cgroup.
    pub fn kill(&self, signal: nix::sys::signal::Signal, all: bool) -> Result<()> {
        let mut container = self.load()?;
        let number = libcontainer::signal::Signal::try_from(signal as i32)
            .map_err(|e| native_error(format!("sending {signal}"), e))?;
        container
            .kill(number, all)
            .map_err(|e| native_error(format!("sending {signal}"), e))
    }

    pub fn close_stdin(&mut self, exec_id: &str) {
        let feeder = if exec_id.is_empty() {
            self.stdin_feeder.as_mut()
        } else {
            self.execs
                .get_mut(exec_id)
                .and_then(|e| e.stdin_feeder.as_mut())
        };
        if let Some(feeder) = feeder {
            feeder.close();
        }
    }

    /// Record an exec process (`process` is the OCI process as JSON); it runs at
    /// [`NativeContainer::start_exec`].
    pub fn add_exec(&mut self, exec_id: &str, process: &[u8], stdio: StdioPaths) -> Result<()> {
        let parsed: oci_spec::runtime::Process = serde_json::from_slice(process)
            .map_err(|e| Error::spec("exec process", e.to_string()))?;
        if parsed.terminal() == Some(true) {
            return Err(Error::Unsupported(
                "a terminal (tty) is not supported for exec into native containers yet; \
                 run without -t"
                    .into(),
            ));
        }
        if exec_id.is_empty() || exec_id.contains('/') || exec_id.starts_with('.') {
            return Err(Error::spec(
                "exec id",
                format!("invalid exec id {exec_id:?}"),
            ));
        }
        std::fs::create_dir_all(&self.root)
            .io_context(|| format!("creating {}", self.root.display()))?;
        let process_json = self.root.join(format!("exec-{exec_id}.json"));
        std::fs::write(&process_json, process)
            .io_context(|| format!("writing {}", process_json.display()))?;
        self.execs.insert(
            exec_id.to_string(),
            Exec {
                process_json,
                stdio,
                stdin_feeder: None,
            },
        );
        Ok(())
    }

    /// Run the exec process in the container; returns its pid.
    pub fn start_exec(&mut self, exec_id: &str) -> Result<u32> {
        let exec = self
            .execs
            .get(exec_id)
            .ok_or_else(|| Error::spec("exec id", format!("no exec process {exec_id}")))?;
        let mut io = Stdio::open(&exec.stdio)?;
        let feeder = io.stdin_feeder.take();
        let args = [
            "exec".to_string(),
            self.root.to_string_lossy().into_owned(),
            self.id.clone(),
            exec.process_json.to_string_lossy().into_owned(),
        ];
        let pid = self.helper(&args, Some(io))?;
        if let Some(exec) = self.execs.get_mut(exec_id) {
            exec.stdin_feeder = feeder;
        }
        log::info!("{}: exec {exec_id} runs as pid {pid}", self.id);
        Ok(pid)
    }

    pub fn remove_exec(&mut self, exec_id: &str) {
        if let Some(exec) = self.execs.remove(exec_id) {
            let _ = std::fs::remove_file(exec.process_json);
        }
    }

    /// Remove everything the container holds: its processes (if any are left), cgroup,
    /// libcontainer state, exec files and the rootfs mount.
    pub fn cleanup(&mut self) -> Result<()> {
        self.stdin_feeder = None;
        self.execs.clear();
        let deleted = match self.load() {
            Ok(mut container) => container
                .delete(true)
                .map_err(|e| native_error("deleting the container", e)),
            // Nothing was created (or it is gone already).
            Err(_) => Ok(()),
        };
        let _ = std::fs::remove_dir_all(&self.root);
        let unmounted = self.rootfs.unmount();
        log::info!(
            "{}: native container removed from {}",
            self.id,
            self.bundle.display()
        );
        deleted.and(unmounted)
    }

    fn load(&self) -> Result<Libcontainer> {
        Libcontainer::load(self.root.join(&self.id))
            .map_err(|e| native_error("loading the container's state", e))
    }

    /// Run the helper with `args`; `io` becomes its fds 0, 1, 2 (else /dev/null).
    fn helper(&self, args: &[String], io: Option<Stdio>) -> Result<u32> {
        run_helper(args, io, &self.node_env, &self.bundle)
    }
}

/// Delete what a native container left when its shim died (`delete` action of the binary).
pub fn delete_orphan(bundle: &Path, id: &str) {
    let root = bundle.join(STATE_DIR);
    if let Ok(mut container) = Libcontainer::load(root.join(id)) {
        if let Err(e) = container.delete(true) {
            log::warn!("{id}: deleting the orphaned native container: {e}");
        }
    }
    let _ = std::fs::remove_dir_all(root);
}

fn native_error(context: impl Into<String>, e: impl std::fmt::Display) -> Error {
    Error::Native {
        context: context.into(),
        reason: e.to_string(),
    }
}

/// The helper runs in the container's bundle: its log goes to that bundle's `log` FIFO, and
/// libcontainer needs a working directory that exists (the shim's own, the first bundle it
/// served, may be gone: one shim serves many pods).
fn run_helper(
    args: &[String],
    io: Option<Stdio>,
    node_env: &[(String, String)],
    bundle: &Path,
) -> Result<u32> {
    let exe = std::env::current_exe().io_context(|| "locating the shim binary".into())?;
    let (status_r, status_w) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).io_context(|| "creating a pipe".into())?;
    let mut cmd = Command::new(exe);
    cmd.arg(SUBCOMMAND)
        .args(args)
        .current_dir(bundle)
        .env_clear()
        .envs(node_env.iter().map(|(k, v)| (k, v)));
    match io {
        Some(io) => {
            cmd.stdin(io.stdin).stdout(io.stdout).stderr(io.stderr);
        }
        None => {
            cmd.stdin(ProcessStdio::null())
                .stdout(ProcessStdio::null())
                .stderr(ProcessStdio::null());
        }
    }
    let status_fd = status_w.as_raw_fd();
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let ok = if status_fd == STATUS_FD {
                libc::fcntl(STATUS_FD, libc::F_SETFD, 0) >= 0
            } else {
                libc::dup2(status_fd, STATUS_FD) >= 0
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    // Subscribe before spawning: the shim's reaper may collect the helper at any moment.
    let exits = monitor_subscribe(Topic::Pid)
        .map_err(|e| native_error("watching the helper process", e))?;
    let child = cmd
        .spawn()
        .io_context(|| "starting the native helper process".into())?;
    let pid = child.id() as i32;
    // The shim's reaper collects the exit; the Child handle must not wait itself.
    drop(child);
    drop(status_w);
    let code = wait_pid(pid, exits);
    // The container's processes may hold the write end: read what is there, never to EOF.
    let mut report = String::new();
    let flags = nix::fcntl::fcntl(&status_r, nix::fcntl::FcntlArg::F_GETFL)
        .io_context(|| "reading the helper's report".into())?;
    nix::fcntl::fcntl(
        &status_r,
        nix::fcntl::FcntlArg::F_SETFL(OFlag::from_bits_truncate(flags) | OFlag::O_NONBLOCK),
    )
    .io_context(|| "reading the helper's report".into())?;
    let _ = File::from(status_r).read_to_string(&mut report);
    let line = report.lines().next().unwrap_or("").trim();
    if let Some(pid) = line.strip_prefix("ok ") {
        if code == 0 {
            return pid
                .parse()
                .map_err(|_| native_error(args[0].clone(), format!("bad helper report {line:?}")));
        }
    }
    let reason = match line.strip_prefix("error: ") {
        Some(reason) => reason.to_string(),
        None => format!("the helper process exited with status {code}"),
    };
    Err(native_error(args[0].clone(), reason))
}

/// The helper process: `native create ROOT ID BUNDLE [--systemd]`, `native start ROOT ID`,
/// `native exec ROOT ID PROCESS.json`. Reports `ok <pid>` or `error: <reason>` on fd 3.
pub fn helper_main(args: &[String]) -> i32 {
    // SAFETY: the shim server passed fd 3 open for this purpose.
    let mut status = unsafe { File::from_raw_fd(STATUS_FD) };
    let result = run_op(args);
    let (line, code) = match &result {
        Ok(pid) => (format!("ok {pid}\n"), 0),
        Err(e) => {
            log::error!("native {}: {e}", args.first().map_or("", |s| s.as_str()));
            (format!("error: {}\n", e.replace('\n', " ")), 1)
        }
    };
    let _ = status.write_all(line.as_bytes());
    code
}

fn run_op(args: &[String]) -> std::result::Result<i32, String> {
    let arg = |i: usize| {
        args.get(i)
            .map(String::as_str)
            .ok_or_else(|| format!("usage: {SUBCOMMAND} create|start|exec ROOT ID ..."))
    };
    let (op, root, id) = (arg(0)?, arg(1)?, arg(2)?);
    let builder = || -> std::result::Result<ContainerBuilder, String> {
        let builder = ContainerBuilder::new(id.to_string(), SyscallType::default())
            .with_root_path(root)
            .map_err(|e| e.to_string())?
            .with_executor(Entrypoint);
        // Our own copies of fds 0, 1, 2: libcontainer moves them onto 0, 1, 2 of the
        // container's process and closes the originals.
        let dup = |fd| nix::unistd::dup(unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) });
        let (i, o, e) = (dup(0), dup(1), dup(2));
        let (i, o, e): (OwnedFd, OwnedFd, OwnedFd) = (
            i.map_err(|e| e.to_string())?,
            o.map_err(|e| e.to_string())?,
            e.map_err(|e| e.to_string())?,
        );
        Ok(builder.with_stdin(i).with_stdout(o).with_stderr(e))
    };
    match op {
        "create" => {
            let bundle = arg(3)?;
            let systemd = args.get(4).is_some_and(|a| a == "--systemd");
            let container = builder()?
                .validate_id()
                .map_err(|e| e.to_string())?
                .as_init(bundle)
                .with_systemd(systemd)
                .with_detach(true)
                .build()
                .map_err(|e| error_chain(&e))?;
            container
                .pid()
                .map(|p| p.as_raw())
                .ok_or_else(|| "libcontainer reported no init pid".to_string())
        }
        "start" => {
            let mut container =
                Libcontainer::load(Path::new(root).join(id)).map_err(|e| error_chain(&e))?;
            container.start().map_err(|e| error_chain(&e))?;
            Ok(container.pid().map_or(0, |p| p.as_raw()))
        }
        "exec" => {
            let process = arg(3)?;
            let pid = builder()?
                .as_tenant()
                .with_process(Some(process))
                .with_detach(true)
                .build()
                .map_err(|e| error_chain(&e))?;
            Ok(pid.as_raw())
        }
        other => Err(format!("unknown operation {other}")),
    }
}

/// Runs the process's `args` as runc does. libcontainer's default executor insists on a
/// `PATH` in the environment even for an absolute entrypoint, which pause images do not set.
#[derive(Clone)]
struct Entrypoint;

impl Executor for Entrypoint {
    fn exec(&self, spec: &Spec) -> std::result::Result<(), ExecutorError> {
        DefaultExecutor {}.exec(spec)
    }

    /// Runs in the container, after its root is in place: the entrypoint must be an
    /// executable file there.
    fn validate(&self, spec: &Spec) -> std::result::Result<(), ExecutorValidationError> {
        let invalid = ExecutorValidationError::ArgValidationError;
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| invalid("the spec has no process".into()))?;
        let arg0 = process
            .args()
            .as_ref()
            .and_then(|a| a.first())
            .ok_or_else(|| invalid("process.args is empty".into()))?;
        let found = if arg0.contains('/') {
            Some(PathBuf::from(arg0))
        } else {
            let path_var = process
                .env()
                .iter()
                .flatten()
                .find_map(|kv| kv.strip_prefix("PATH="))
                .unwrap_or(DEFAULT_PATH);
            path_var
                .split(':')
                .map(|dir| Path::new(dir).join(arg0))
                .find(|p| p.is_file())
        };
        let path = found.ok_or_else(|| invalid(format!("executable {arg0:?} not found")))?;
        let executable = std::fs::metadata(&path)
            .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
            .unwrap_or(false);
        if executable {
            Ok(())
        } else {
            Err(invalid(format!(
                "{} is not an executable file",
                path.display()
            )))
        }
    }
}

/// An error with its sources, on one line: libcontainer's top-level messages are terse.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(args: &[&str], env: &[&str]) -> Spec {
        let process = oci_spec::runtime::ProcessBuilder::default()
            .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
            .env(env.iter().map(|e| e.to_string()).collect::<Vec<_>>())
            .build()
            .unwrap();
        let mut spec = Spec::default();
        spec.set_process(Some(process));
        spec
    }

    #[test]
    fn entrypoints_are_found_as_runc_finds_them() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("data");
        std::fs::write(&plain, b"not a program").unwrap();
        let plain = plain.to_string_lossy().into_owned();

        // An absolute entrypoint needs no PATH (pause images set none).
        assert!(Entrypoint.validate(&spec(&["/bin/sh"], &[])).is_ok());
        // A bare name is looked up in PATH, or in the default search path without one.
        assert!(Entrypoint.validate(&spec(&["sh"], &[])).is_ok());
        assert!(Entrypoint.validate(&spec(&["sh"], &["PATH=/bin"])).is_ok());
        let err = Entrypoint
            .validate(&spec(&["sh"], &["PATH=/nowhere"]))
            .unwrap_err();
        assert!(err.to_string().contains("\"sh\" not found"), "{err}");
        let err = Entrypoint.validate(&spec(&[&plain], &[])).unwrap_err();
        assert!(err.to_string().contains("not an executable file"), "{err}");
        assert!(Entrypoint.validate(&spec(&[], &[])).is_err());
    }
}
