//! The instance process becomes what the policy says before any guest code runs: its file
//! descriptor limit, umask, user and groups, and `no_new_privs`.
//!
//! What needs root is opened first: the artifact (the node cache is root-only; the engine
//! loads it before this runs) and the preopened folders (inside containerd's private state folder). The preopens are then
//! reached through `/proc/self/fd`, so the guest's user needs rights on the folders
//! themselves, as under runc, but not on the bundle's ancestors.

use std::os::fd::{AsRawFd, OwnedFd};

use nix::fcntl::OFlag;
use nix::sys::stat::Mode;

use crate::policy::{Identity, SandboxPolicy};

/// Open the preopened folders now; keep the returned fds for the life of the process.
pub fn pin_preopens(policy: &mut SandboxPolicy) -> anyhow::Result<Vec<OwnedFd>> {
    let mut pinned = Vec::with_capacity(policy.preopens.len());
    for preopen in &mut policy.preopens {
        let fd = nix::fcntl::open(
            &preopen.host_path,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| {
            anyhow::anyhow!(
                "opening {} for {}: {e}",
                preopen.host_path.display(),
                preopen.guest_path
            )
        })?;
        preopen.host_path = format!("/proc/self/fd/{}", fd.as_raw_fd()).into();
        pinned.push(fd);
    }
    Ok(pinned)
}

/// Apply limits and identity; irreversible. Must run while the process is single-threaded.
pub fn drop_privileges(identity: &Identity, max_open_files: u64) -> anyhow::Result<()> {
    let nofile = libc::rlimit {
        rlim_cur: max_open_files,
        rlim_max: max_open_files,
    };
    // SAFETY: plain syscalls on this process with valid arguments.
    unsafe {
        check(
            libc::setrlimit(libc::RLIMIT_NOFILE, &nofile),
            "limiting open files",
        )?;
        if let Some(umask) = identity.umask {
            libc::umask(umask as libc::mode_t);
        }
        let groups: Vec<libc::gid_t> = identity.additional_gids.clone();
        check(
            libc::setgroups(groups.len(), groups.as_ptr()),
            "setting supplementary groups",
        )?;
        check(
            libc::setresgid(identity.gid, identity.gid, identity.gid),
            "setting the group",
        )?;
        check(
            libc::setresuid(identity.uid, identity.uid, identity.uid),
            "setting the user",
        )?;
        if identity.no_new_privileges {
            check(
                libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0),
                "setting no_new_privs",
            )?;
        }
    }
    Ok(())
}

fn check(rc: libc::c_int, what: &str) -> anyhow::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(anyhow::anyhow!(
            "{what}: {}",
            std::io::Error::last_os_error()
        ))
    }
}
