//! How the zygote forks an instance: `clone3` with `CLONE_PARENT`, so the instance is the
//! shim's child (the shim reaps it and reports its exit, as for every container process),
//! and on cgroup v2 `CLONE_INTO_CGROUP`, so it is born in the container's cgroup and charged
//! from its first page. No `exec`: the child is the warmed zygote, copy-on-write.
//!
//! Where `clone3` is refused (an older kernel, a seccomp profile that answers ENOSYS), two
//! plain `fork`s do the same: the middle process exits at once and the instance is
//! re-parented to the shim, which is a child subreaper.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

/// Which side of the fork this is.
pub enum Forked {
    Child,
    Parent(u32),
}

pub const CLONE_PARENT: u64 = 0x0000_8000;
const CLONE_CHILD_SETTID: u64 = 0x0100_0000;
const CLONE_CHILD_CLEARTID: u64 = 0x0020_0000;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
pub const CLONE_NEWUTS: u64 = 0x0400_0000;
pub const CLONE_NEWIPC: u64 = 0x0800_0000;
pub const CLONE_NEWPID: u64 = 0x2000_0000;
const PR_GET_TID_ADDRESS: libc::c_int = 40;

/// `struct clone_args` (Linux 5.7 and later: with the `cgroup` field).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Fork the calling (single-threaded) process into a child of its parent, in `cgroup` (a
/// cgroup v2 directory) if given. A `cgroup` the fallback cannot honour is left to the child
/// (it joins its cgroup itself, as on cgroup v1).
pub fn fork_instance(cgroup: Option<BorrowedFd<'_>>) -> io::Result<Forked> {
    match clone3(CLONE_PARENT, cgroup) {
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOSYS | libc::EPERM | libc::EINVAL | libc::E2BIG)
            ) =>
        {
            log::warn!("clone3 refused ({e}): forking twice instead");
            double_fork()
        }
        other => other,
    }
}

/// `clone3` with `flags` (and `cgroup`), keeping glibc's record of the thread id right.
/// After it the child of a multi-threaded process may only make system calls.
pub fn clone3(flags: u64, cgroup: Option<BorrowedFd<'_>>) -> io::Result<Forked> {
    // glibc keeps the thread's id in its thread descriptor, and its own fork has the kernel
    // write the child's id there (CLONE_CHILD_SETTID). A raw clone3 must do the same, or
    // glibc's raise() and pthread_kill() in the child would aim at the zygote's thread. The
    // address is the one glibc registered with set_tid_address at start-up.
    let mut tid_address: *mut libc::c_void = std::ptr::null_mut();
    // SAFETY: PR_GET_TID_ADDRESS writes one pointer to the address given.
    if unsafe { libc::prctl(PR_GET_TID_ADDRESS, &mut tid_address as *mut _) } != 0 {
        return Err(io::Error::from_raw_os_error(libc::ENOSYS));
    }
    let mut args = CloneArgs {
        flags: flags | CLONE_CHILD_SETTID | CLONE_CHILD_CLEARTID,
        child_tid: tid_address as u64,
        // With CLONE_PARENT the kernel takes the caller's own exit signal and refuses
        // another (EINVAL).
        exit_signal: if flags & CLONE_PARENT == 0 {
            libc::SIGCHLD as u64
        } else {
            0
        },
        ..CloneArgs::default()
    };
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd.as_raw_fd() as u64;
    }
    // SAFETY: a fork, with the same bookkeeping glibc's fork does for the thread id; no
    // stack is shared (stack = 0). What the child may do is the caller's to respect.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &mut args as *mut CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => Ok(Forked::Child),
        pid => Ok(Forked::Parent(pid as u32)),
    }
}

fn double_fork() -> io::Result<Forked> {
    let (read, write) = nix::unistd::pipe()?;
    // SAFETY: the zygote is single-threaded; the middle process only forks, writes and exits.
    match unsafe { nix::unistd::fork() }? {
        nix::unistd::ForkResult::Child => {
            drop(read);
            // SAFETY: as above.
            match unsafe { nix::unistd::fork() } {
                Ok(nix::unistd::ForkResult::Child) => {
                    drop(write);
                    Ok(Forked::Child)
                }
                Ok(nix::unistd::ForkResult::Parent { child }) => {
                    let _ = nix::unistd::write(&write, &child.as_raw().to_ne_bytes());
                    // SAFETY: leave at once, running nothing of the zygote's.
                    unsafe { libc::_exit(0) }
                }
                // SAFETY: as above; the zygote reads no pid and reports the failure.
                Err(_) => unsafe { libc::_exit(1) },
            }
        }
        nix::unistd::ForkResult::Parent { child } => {
            drop(write);
            let mut pid = [0u8; 4];
            let read_all = nix::unistd::read(&read, &mut pid);
            let _ = nix::sys::wait::waitpid(child, None);
            match read_all {
                Ok(4) => Ok(Forked::Parent(i32::from_ne_bytes(pid) as u32)),
                Ok(_) => Err(io::Error::other("the second fork failed")),
                Err(e) => Err(e.into()),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsFd;

    /// The cgroup v2 hierarchy's mount point (`/sys/fs/cgroup`, or `.../unified` on a hybrid
    /// host).
    fn cgroup2_mount() -> std::path::PathBuf {
        let mounts = std::fs::read_to_string("/proc/self/mounts").unwrap();
        mounts
            .lines()
            .map(|l| l.split(' ').collect::<Vec<_>>())
            .find(|f| f.len() > 2 && f[2] == "cgroup2")
            .map(|f| std::path::PathBuf::from(f[1]))
            .expect("a cgroup2 mount (every systemd host has one)")
    }

    #[test]
    fn a_clone_is_born_in_the_cgroup_it_is_given() {
        let name = format!("wasm-shim-fork-test-{}", std::process::id());
        let dir = cgroup2_mount().join(&name);
        std::fs::create_dir(&dir).unwrap();
        let fd: std::os::fd::OwnedFd = std::fs::File::open(&dir).unwrap().into();
        let forked = clone3(0, Some(fd.as_fd()));
        let Forked::Parent(pid) = forked.unwrap() else {
            // The child of a multi-threaded test process: system calls only.
            unsafe {
                let second = libc::timespec {
                    tv_sec: 5,
                    tv_nsec: 0,
                };
                libc::nanosleep(&second, std::ptr::null_mut());
                libc::_exit(0)
            }
        };
        let cgroup = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
        std::fs::remove_dir(&dir).unwrap();
        assert!(
            cgroup.lines().any(|l| l == format!("0::/{name}")),
            "child {pid} is not in /{name}:\n{cgroup}"
        );
    }
}
