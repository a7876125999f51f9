//! The container's root filesystem: the snapshot mounts containerd passes at Create, mounted
//! at `<bundle>/rootfs` (as runc's shim does) and unmounted at delete.

use std::path::{Path, PathBuf};

use containerd_shim::protos::types::mount::Mount;
use nix::mount::{umount2, MntFlags};

use crate::error::{Error, IoContext, Result};

/// A mounted rootfs; unmounted explicitly by `unmount` (delete) or on drop (failed create).
pub struct Rootfs {
    target: Option<PathBuf>,
}

impl Rootfs {
    pub fn mount(bundle: &Path, mounts: &[Mount]) -> Result<Self> {
        if mounts.is_empty() {
            // The bundle already holds a rootfs folder (e.g. created by hand).
            return Ok(Rootfs { target: None });
        }
        let target = bundle.join("rootfs");
        std::fs::create_dir_all(&target).io_context(|| format!("creating {}", target.display()))?;
        let mut rootfs = Rootfs { target: None };
        for m in mounts {
            let fs_type = (!m.type_.is_empty()).then_some(m.type_.as_str());
            let source = (!m.source.is_empty()).then_some(m.source.as_str());
            containerd_shim::mount::mount_rootfs(fs_type, source, &m.options, &target).map_err(
                |e| Error::Io {
                    context: format!("mounting the rootfs ({} {})", m.type_, m.source),
                    cause: std::io::Error::other(e.to_string()),
                },
            )?;
            rootfs.target = Some(target.clone());
        }
        Ok(rootfs)
    }

    pub fn unmount(&mut self) -> Result<()> {
        if let Some(target) = self.target.take() {
            unmount_all(&target)?;
        }
        Ok(())
    }
}

impl Drop for Rootfs {
    fn drop(&mut self) {
        if let Err(e) = self.unmount() {
            log::warn!("{e}");
        }
    }
}

/// Unmount everything stacked at `target` (a rootfs can be several mounts deep).
pub fn unmount_all(target: &Path) -> Result<()> {
    loop {
        match umount2(target, MntFlags::MNT_DETACH) {
            Ok(()) => continue,
            Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => return Ok(()),
            Err(e) => return Err(e).io_context(|| format!("unmounting {}", target.display())),
        }
    }
}
