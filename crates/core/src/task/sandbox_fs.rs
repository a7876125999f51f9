//! Host-side filesystem set-up the policy asks for before the guest starts: each folder mount
//! bound at a staging folder of its own in the bundle (so that every preopen is a mount of
//! its own: renames and hard links between preopens fail with `EXDEV`, and `ro` is enforced
//! by the kernel too), size-bounded tmpfs scratch folders, and single files bound into the
//! rootfs. Every mount made here is undone at delete (or when create fails).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::mount::{mount, MsFlags};
use nix::sys::stat::Mode;

use crate::error::{Error, IoContext, Result};
use crate::policy::{Access, SandboxPolicy, SourceKind};
use crate::task::rootfs::unmount_all;

/// What a bind mount's source is on the host, for the policy.
pub fn probe_source(path: &Path) -> Option<SourceKind> {
    std::fs::metadata(path).ok().map(|m| {
        if m.is_dir() {
            SourceKind::Directory
        } else {
            SourceKind::File
        }
    })
}

/// Mounts made for one container, unmounted in reverse order.
#[derive(Default)]
pub struct SandboxMounts {
    mounted: Vec<PathBuf>,
}

impl SandboxMounts {
    /// Make the mounts; the policy's folder preopens are pointed at their staging folders.
    pub fn set_up(policy: &mut SandboxPolicy, bundle: &Path) -> Result<Self> {
        let mut mounts = SandboxMounts::default();
        let scratch: Vec<PathBuf> = policy.scratch.iter().map(|s| s.host_path.clone()).collect();
        for (index, preopen) in policy.preopens.iter_mut().enumerate().skip(1) {
            if scratch.contains(&preopen.host_path) {
                continue;
            }
            let staging = bundle.join("mounts").join(index.to_string());
            std::fs::create_dir_all(&staging)
                .io_context(|| format!("creating {}", staging.display()))?;
            let rbind = MsFlags::MS_BIND | MsFlags::MS_REC;
            mount(
                Some(&preopen.host_path),
                &staging,
                None::<&str>,
                rbind,
                None::<&str>,
            )
            .io_context(|| {
                format!(
                    "binding {} for {}",
                    preopen.host_path.display(),
                    preopen.guest_path
                )
            })?;
            mounts.mounted.push(staging.clone());
            if preopen.access == Access::ReadOnly {
                remount_read_only(&staging, &preopen.guest_path)?;
            }
            preopen.host_path = staging;
        }
        for scratch in &policy.scratch {
            std::fs::create_dir_all(&scratch.host_path)
                .io_context(|| format!("creating {}", scratch.host_path.display()))?;
            let data = format!("size={},mode=1777", scratch.size_bytes);
            mount(
                Some("tmpfs"),
                &scratch.host_path,
                Some("tmpfs"),
                MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                Some(data.as_str()),
            )
            .io_context(|| format!("mounting a tmpfs at {}", scratch.host_path.display()))?;
            mounts.mounted.push(scratch.host_path.clone());
        }
        let root = &policy.preopens[0];
        for bind in &policy.file_binds {
            let (target, real_path) = bind_target(&root.host_path, &bind.guest_path)?;
            mount(
                Some(&bind.source),
                &fd_path(&target),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
            .io_context(|| format!("binding {} onto {}", bind.source.display(), bind.guest_path))?;
            mounts.mounted.push(real_path.clone());
            if bind.access == Access::ReadOnly {
                remount_read_only(&real_path, &bind.guest_path)?;
            }
        }
        Ok(mounts)
    }

    pub fn tear_down(&mut self) -> Result<()> {
        let mut first_error = None;
        while let Some(target) = self.mounted.pop() {
            if let Err(e) = unmount_all(&target) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl Drop for SandboxMounts {
    fn drop(&mut self) {
        if let Err(e) = self.tear_down() {
            log::warn!("{e}");
        }
    }
}

fn remount_read_only(target: &Path, guest_path: &str) -> Result<()> {
    let ro = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
    mount(None::<&str>, target, None::<&str>, ro, None::<&str>)
        .io_context(|| format!("making {guest_path} read-only"))
}

/// The file inside the rootfs to bind onto, created (with its folders) if the image lacks
/// it. Every step is resolved with `RESOLVE_IN_ROOT`, so a symlink in the image cannot
/// redirect the mount to a host path. Returns the open target and its real host path.
fn bind_target(rootfs: &Path, guest_path: &str) -> Result<(OwnedFd, PathBuf)> {
    let fail = |reason: String| Error::Spec {
        field: format!("mounts[{guest_path}]"),
        reason,
    };
    let root = nix::fcntl::open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .io_context(|| format!("opening {}", rootfs.display()))?;
    let in_root = |path: &str, flags: OFlag| {
        // openat2 refuses a mode without O_CREAT (EINVAL).
        let mode = if flags.contains(OFlag::O_CREAT) {
            Mode::from_bits_truncate(0o644)
        } else {
            Mode::empty()
        };
        let how = OpenHow::new()
            .flags(flags | OFlag::O_CLOEXEC)
            .mode(mode)
            .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
        openat2(root.as_fd(), path, how)
    };
    let inner = guest_path.trim_start_matches('/');
    let (parent, name) = inner.rsplit_once('/').unwrap_or(("", inner));
    let mut done = String::new();
    for part in parent.split('/').filter(|p| !p.is_empty()) {
        let here = if done.is_empty() { "." } else { done.as_str() };
        let dir = in_root(here, OFlag::O_PATH | OFlag::O_DIRECTORY)
            .map_err(|e| fail(format!("opening /{done} in the rootfs: {e}")))?;
        match nix::sys::stat::mkdirat(dir.as_fd(), part, Mode::from_bits_truncate(0o755)) {
            Ok(()) | Err(nix::Error::EEXIST) => {}
            Err(e) => return Err(fail(format!("creating /{done}/{part} in the rootfs: {e}"))),
        }
        done = if done.is_empty() {
            part.to_string()
        } else {
            format!("{done}/{part}")
        };
    }
    let path = if done.is_empty() {
        name.to_string()
    } else {
        format!("{done}/{name}")
    };
    let file = in_root(&path, OFlag::O_CREAT | OFlag::O_RDONLY | OFlag::O_NOFOLLOW)
        .map_err(|e| fail(format!("creating the mount target in the rootfs: {e}")))?;
    let is_file = nix::sys::stat::fstat(file.as_fd())
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
        .unwrap_or(false);
    if !is_file {
        return Err(fail(
            "the rootfs has something other than a file there".into(),
        ));
    }
    let real =
        std::fs::read_link(fd_path(&file)).io_context(|| format!("locating {guest_path}"))?;
    Ok((file, real))
}

/// The magic-link path of an open file, which mount(2) follows to exactly that file.
fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}
