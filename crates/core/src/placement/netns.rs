//! Entering the container's network namespace.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use nix::sched::CloneFlags;

use crate::error::{IoContext, Result};

pub fn join(path: &Path) -> Result<()> {
    let ns = std::fs::File::open(path)
        .io_context(|| format!("opening the network namespace {}", path.display()))?;
    nix::sched::setns(ns, CloneFlags::CLONE_NEWNET)
        .io_context(|| format!("joining the network namespace {}", path.display()))
}

/// A new namespace with loopback up, as runc sets one up.
pub fn unshare() -> Result<()> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET)
        .io_context(|| "creating a network namespace".into())?;
    loopback_up().io_context(|| "bringing up loopback in the new network namespace".into())
}

fn loopback_up() -> std::io::Result<()> {
    // SAFETY: a plain socket and two ioctls on a zeroed, NUL-terminated ifreq.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let sock = OwnedFd::from_raw_fd(fd);
        let mut req: libc::ifreq = std::mem::zeroed();
        for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
            *dst = *src as libc::c_char;
        }
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
        if libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}
