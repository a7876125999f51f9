//! The process that holds a shim-held pod's namespaces: what the pause container is to a
//! runc pod, without an image, a rootfs, a container or an `exec`.
//!
//! containerd 2.x's CRI gives a pod's containers `/proc/<sandbox pid>/ns/{net,ipc,uts,pid}`,
//! so some process must live in them. The shim's zygote clones it straight into new UTS, IPC
//! and PID namespaces (as pause gets them); it joins the pod's network namespace (CRI made it
//! and runs CNI in it), sets the pod's hostname, and sleeps. It is a copy of the zygote's
//! pages, so it costs a few private pages and page tables, not a process image. (A clone of
//! the shim server would copy the page tables of its thousands of connection threads: 40 MB
//! per holder at 1000 pods.)

use std::os::fd::{OwnedFd, RawFd};
use std::path::Path;

use super::pod_config::{NamespaceMode, PodConfig};
use crate::error::{Error, IoContext, Result};
use crate::instance::fork;
use crate::placement::{CgroupPlacement, ContainerCgroup};
use crate::task::Zygote;

/// `comm` of a holder, as `ps` shows it.
const NAME: &[u8] = b"wasm-pod\0";

/// Start the holder of pod `id`; returns its pid (a child of this process).
pub fn spawn(id: &str, netns: Option<&Path>, config: &PodConfig, zygote: &Zygote) -> Result<u32> {
    let netns: Option<OwnedFd> = match netns.filter(|_| config.network != NamespaceMode::Node) {
        Some(path) => Some(
            std::fs::File::open(path)
                .io_context(|| format!("opening the pod's network namespace {}", path.display()))?
                .into(),
        ),
        None => None,
    };
    let hostname = if config.network != NamespaceMode::Node {
        config.hostname.as_bytes()
    } else {
        &[]
    };
    if hostname.contains(&0) {
        return Err(Error::spec("hostname", "contains a NUL byte"));
    }
    let mut namespaces = 0;
    if config.network != NamespaceMode::Node {
        namespaces |= fork::CLONE_NEWUTS;
    }
    if config.ipc != NamespaceMode::Node {
        namespaces |= fork::CLONE_NEWIPC;
    }
    if config.pid != NamespaceMode::Node {
        namespaces |= fork::CLONE_NEWPID;
    }
    let pid = zygote.hold(namespaces, hostname, netns.as_ref())?;
    join_cgroup(id, config, pid);
    Ok(pid)
}

/// The holder, just cloned: join the pod's network, name the host, let go of every fd (a
/// socket of the shim held here would outlive the shim), and sleep until killed.
pub(crate) fn hold(netns: Option<RawFd>, hostname: &[u8]) -> ! {
    // SAFETY: plain system calls on values the zygote received.
    unsafe {
        if let Some(fd) = netns {
            if libc::setns(fd, libc::CLONE_NEWNET) != 0 {
                libc::_exit(1);
            }
        }
        if !hostname.is_empty() && libc::sethostname(hostname.as_ptr().cast(), hostname.len()) != 0
        {
            libc::_exit(1);
        }
        libc::syscall(libc::SYS_close_range, 0u32, u32::MAX, 0u32);
        libc::prctl(libc::PR_SET_NAME, NAME.as_ptr());
        // As PID 1 of its namespace it ignores every signal it has no handler for; only
        // SIGKILL from the shim's namespace stops it.
        loop {
            libc::pause();
        }
    }
}

/// Charge the holder to the pod, as the pause container is: `<cgroup_parent>/<id>`.
fn join_cgroup(id: &str, config: &PodConfig, pid: u32) {
    let Some(placement) = cgroup_of(id, config) else {
        return;
    };
    if let Err(e) = ContainerCgroup::open(&placement, id).and_then(|c| c.join(pid)) {
        log::warn!("pod {id}: holder not in the pod's cgroup: {e}");
    }
}

pub fn cgroup_of(id: &str, config: &PodConfig) -> Option<CgroupPlacement> {
    let parent = &config.cgroup_parent;
    if parent.is_empty() {
        return None;
    }
    // containerd's rule: a systemd slice gets `slice:cri-containerd:id`, a path `path/id`.
    let (path, systemd) = if parent.ends_with(".slice") {
        (format!("{parent}:cri-containerd:{id}"), true)
    } else {
        (format!("{}/{id}", parent.trim_end_matches('/')), false)
    };
    Some(CgroupPlacement {
        path: path.into(),
        systemd,
        resources: None,
    })
}
