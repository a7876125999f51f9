//! One Wasm container of this shim: created from a bundle, backed by an instance process
//! forked from the shim's zygote.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::fcntl::OFlag;
use oci_spec::runtime::Spec;

use crate::artifact::Outcome;
use crate::config::NodeConfig;
use crate::error::{Error, IoContext, Result};
use crate::image_layers::Containerd;
use crate::instance::zygote::wire;
use crate::instance::{self, InstanceConfig};
use crate::placement::{ContainerCgroup, Placement};
use crate::policy::SandboxPolicy;
use crate::source::ModuleSource;
use crate::task::compile::Compiler;
use crate::task::rootfs::Rootfs;
use crate::task::sandbox_fs::{probe_source, SandboxMounts};
use crate::task::stdio::{StdinFeeder, Stdio, StdioPaths};
use crate::task::zygote::Zygote;

/// Where a task's process is in its life (the init process or an exec process).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Created,
    Running,
    Stopped,
}

pub struct Container {
    bundle: PathBuf,
    pub pid: u32,
    start_pipe: Option<File>,
    /// The instance's status pipe after `ready`: a note on how the guest ended, if any.
    status_pipe: Option<File>,
    stdin_feeder: Option<StdinFeeder>,
    // Dropped (unmounted) before the rootfs they may sit in.
    sandbox_mounts: SandboxMounts,
    rootfs: Rootfs,
}

/// What Create needs from the request.
pub struct CreateRequest<'a> {
    pub id: &'a str,
    pub bundle: &'a Path,
    pub spec: &'a Spec,
    /// The cgroup and network namespace the instance process enters.
    pub placement: &'a Placement,
    pub stdio: &'a StdioPaths,
    pub terminal: bool,
    /// containerd's API, for modules carried as image layers.
    pub containerd: &'a Containerd,
    /// The sandbox profile that applies, if any.
    pub profile: Option<&'a crate::policy::Chosen>,
}

impl Container {
    /// spec -> policy -> module source -> artifact -> instance process, ready to start.
    /// `rootfs` is already mounted: the task service looked at the entrypoint in it.
    pub fn create(
        req: CreateRequest<'_>,
        rootfs: Rootfs,
        compiler: &Compiler,
        zygote: &Zygote,
        node: &NodeConfig,
    ) -> Result<Self> {
        if req.terminal {
            return Err(Error::spec(
                "process.terminal",
                "a terminal (tty) is not supported for Wasm containers; run without -t",
            ));
        }
        let t0 = Instant::now();
        let spec = req.spec;
        let mut policy =
            SandboxPolicy::from_spec(spec, req.bundle, node, req.profile, &probe_source)?;
        let entry_function = SandboxPolicy::entry_function(spec);
        let t_policy = t0.elapsed();

        let sandbox_mounts = SandboxMounts::set_up(&mut policy, req.bundle)?;
        let t1 = Instant::now();
        let source = module_source(&req, &policy)?;
        let t_source = t1.elapsed();
        let t2 = Instant::now();
        let (artifact, outcome) = compiler.artifact_for(&source)?;
        let t_artifact = t2.elapsed();
        log::info!(
            "{}: {} ({:?}, {} bytes, {}) policy {} us, read {} us, {} {} us",
            req.id,
            source.guest_path,
            source.kind,
            source.bytes.len(),
            source.digest,
            t_policy.as_micros(),
            t_source.as_micros(),
            match outcome {
                Outcome::Hit => "cache hit",
                Outcome::Compiled => "compiled",
            },
            t_artifact.as_micros()
        );

        let config = InstanceConfig {
            id: req.id.to_string(),
            policy,
            placement: req.placement.clone(),
            artifact: artifact.path,
            kind: source.kind,
            entry_function,
        };
        let config_path = req.bundle.join(instance::CONFIG_FILE);
        std::fs::write(
            &config_path,
            serde_json::to_vec(&config).expect("instance config serialises"),
        )
        .io_context(|| format!("writing {}", config_path.display()))?;

        let mut stdio = Stdio::open(req.stdio)?;
        let stdin_feeder = stdio.stdin_feeder.take();
        let t3 = Instant::now();
        let cgroup = req
            .placement
            .cgroup
            .as_ref()
            .and_then(|cg| cg.prepare_v2(req.id));
        let (pid, start_pipe, status_pipe) = spawn_instance(req.bundle, stdio, cgroup, zygote)
            .inspect_err(|_| {
                // The instance may have made its cgroup before it failed.
                if let Some(Err(e)) = req
                    .placement
                    .cgroup
                    .as_ref()
                    .map(|cg| ContainerCgroup::open(cg, req.id).and_then(|c| c.remove()))
                {
                    log::warn!("{}: {e}", req.id);
                }
            })?;
        crate::shim::write_pid_file(req.bundle, pid)?;
        // Warm start: the artifact's cache lookup, then the fork, placement and
        // instantiation up to `ready`; the guest's first instruction follows Start.
        log::info!(
            "{}: instance pid {pid} ready in {} us (cache lookup {} us)",
            req.id,
            t3.elapsed().as_micros(),
            t_artifact.as_micros()
        );
        Ok(Container {
            bundle: req.bundle.to_path_buf(),
            pid,
            start_pipe: Some(start_pipe),
            status_pipe: Some(status_pipe),
            stdin_feeder,
            sandbox_mounts,
            rootfs,
        })
    }

    pub fn start(&mut self) -> Result<()> {
        let mut pipe = self.start_pipe.take().ok_or_else(|| Error::Spec {
            field: "task".into(),
            reason: "already started".into(),
        })?;
        pipe.write_all(b"s")
            .io_context(|| format!("starting instance {}", self.pid))?;
        Ok(())
    }

    /// Whether the guest failed at its memory limit; asked once its process has exited.
    pub fn hit_memory_limit(&mut self) -> bool {
        let Some(mut pipe) = self.status_pipe.take() else {
            return false;
        };
        let mut note = String::new();
        // Non-blocking: whatever the instance wrote before it exited is in the pipe already.
        let _ = nix::fcntl::fcntl(&pipe, nix::fcntl::FcntlArg::F_SETFL(OFlag::O_NONBLOCK));
        let _ = std::io::Read::read_to_string(&mut pipe, &mut note);
        note.lines().any(|l| l == instance::OOM_NOTE)
    }

    pub fn close_stdin(&mut self) {
        if let Some(feeder) = self.stdin_feeder.as_mut() {
            feeder.close();
        }
    }

    /// Release everything the container holds on the host. The process must have exited.
    pub fn cleanup(&mut self) -> Result<()> {
        self.start_pipe = None;
        self.stdin_feeder = None;
        let _ = std::fs::remove_file(self.bundle.join(instance::CONFIG_FILE));
        let _ = std::fs::remove_file(self.bundle.join(crate::shim::PID_FILE));
        let mounts = self.sandbox_mounts.tear_down();
        for staging in ["scratch", "mounts"] {
            let _ = std::fs::remove_dir_all(self.bundle.join(staging));
        }
        mounts.and(self.rootfs.unmount())
    }
}

/// The module the entrypoint names: a file of the rootfs, or else (a Wasm OCI image, whose
/// module containerd does not unpack) the Wasm layer of the container's image. Only the
/// second asks containerd anything, so compat images pay nothing for it.
fn module_source(req: &CreateRequest<'_>, policy: &SandboxPolicy) -> Result<ModuleSource> {
    let missing = match ModuleSource::from_entrypoint(policy) {
        Err(Error::Entrypoint { path, reason }) if reason == crate::source::NO_SUCH_FILE => path,
        other => return other,
    };
    let arg0 = &policy.args[0];
    match req.containerd.layer_module(req.id, arg0) {
        Ok(layer) => {
            log::info!(
                "{}: {arg0} is not in the rootfs: layer {} ({}, {} bytes) of image {} \
                 from containerd's content store in {} us (connect {} us)",
                req.id,
                layer.source.digest,
                layer.media_type,
                layer.source.bytes.len(),
                layer.image,
                layer.total.as_micros(),
                layer.connect.as_micros()
            );
            Ok(layer.source)
        }
        // Neither a file nor a layer: say both, the file first (the usual mistake).
        Err(e @ (Error::Image { .. } | Error::Containerd { .. })) => Err(Error::Entrypoint {
            path: missing,
            reason: format!(
                "{}, and it is not a Wasm layer of the image either: {e}",
                crate::source::NO_SUCH_FILE
            ),
        }),
        Err(e) => Err(e),
    }
}

/// Have the zygote fork the instance process and wait until it reports ready (or why it
/// cannot be).
fn spawn_instance(
    bundle: &Path,
    stdio: Stdio,
    cgroup: Option<OwnedFd>,
    zygote: &Zygote,
) -> Result<(u32, File, File)> {
    let (start_r, start_w) = pipe()?;
    let (status_r, status_w) = pipe()?;
    let fds = wire::Fds {
        stdin: stdio.stdin,
        stdout: stdio.stdout,
        stderr: stdio.stderr,
        start: start_r,
        status: status_w,
    };
    let pid = zygote.spawn(bundle, &fds, cgroup.as_ref())?;
    // The instance has its copies; the status pipe must see EOF when it exits.
    drop(fds);

    // Byte by byte up to the newline, so that nothing after `ready` is consumed here.
    let mut status = File::from(status_r);
    let mut line = Vec::new();
    let mut byte = [0u8; 1];
    let read = loop {
        match status.read(&mut byte) {
            Ok(1) if byte[0] == b'\n' => break Ok(()),
            Ok(1) => line.push(byte[0]),
            Ok(_) => break Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => break Err(e),
        }
    };
    let line = String::from_utf8_lossy(&line);
    match (read, line.trim_end()) {
        (Ok(_), "ready") => Ok((pid, File::from(start_w), status)),
        (_, msg) => {
            // Whatever happened, the process must not outlive the failed create.
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            let reason = msg.strip_prefix("error: ").unwrap_or(msg);
            Err(Error::Engine(anyhow::anyhow!(
                "{}",
                if reason.is_empty() {
                    "the instance process exited before it was ready"
                } else {
                    reason
                }
            )))
        }
    }
}

fn pipe() -> Result<(OwnedFd, OwnedFd)> {
    nix::unistd::pipe2(OFlag::O_CLOEXEC).io_context(|| "creating a pipe".into())
}

/// How long Delete waits for a killed, never-started instance to be reaped.
pub const REAP_TIMEOUT: Duration = Duration::from_secs(5);
