//! What the shim and its zygote say to each other, over a `SOCK_SEQPACKET` socket pair: one
//! message per request and per reply, so no framing is needed.
//!
//! - Request: a kind byte, then
//!   - `0` / `1` (an instance; `1`: a cgroup directory fd follows the others): the bundle
//!     path, with the fds of [`Fds`] in that order, then the cgroup's;
//!   - `2` / `3` (a pod holder; `3`: with the pod's network namespace fd): the clone flags
//!     (u64, little-endian), then the hostname.
//! - Reply: `pid N` or `error: MESSAGE`.

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use nix::sys::socket::{recvmsg, sendmsg, ControlMessage, ControlMessageOwned, MsgFlags};

/// The fds an instance gets, in the order they are sent.
pub struct Fds {
    pub stdin: OwnedFd,
    pub stdout: OwnedFd,
    pub stderr: OwnedFd,
    /// Read end of the start pipe (its fd [`super::super::START_FD`] in the instance).
    pub start: OwnedFd,
    /// Write end of the status pipe (its fd [`super::super::STATUS_FD`]).
    pub status: OwnedFd,
}

const FDS: usize = 5;
/// Longest request: a bundle path is at most PATH_MAX.
const MAX_MESSAGE: usize = 4096 + 1;

pub enum Request {
    Instance(InstanceRequest),
    Hold(HoldRequest),
}

pub struct InstanceRequest {
    pub bundle: PathBuf,
    pub fds: Fds,
    /// The container's cgroup v2 directory, for `CLONE_INTO_CGROUP`.
    pub cgroup: Option<OwnedFd>,
}

/// A pod holder ([`crate::sandbox::holder`]).
pub struct HoldRequest {
    /// The namespaces to clone it into (`CLONE_NEW*`).
    pub namespaces: u64,
    pub hostname: Vec<u8>,
    pub netns: Option<OwnedFd>,
}

pub enum Reply {
    Pid(u32),
    Error(String),
}

pub fn send_instance_request(
    sock: BorrowedFd<'_>,
    bundle: &Path,
    fds: &Fds,
    cgroup: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    let mut message = vec![u8::from(cgroup.is_some())];
    message.extend_from_slice(bundle.as_os_str().as_bytes());
    let mut raw: Vec<RawFd> = [
        &fds.stdin,
        &fds.stdout,
        &fds.stderr,
        &fds.start,
        &fds.status,
    ]
    .iter()
    .map(|f| f.as_raw_fd())
    .collect();
    raw.extend(cgroup.map(|f| f.as_raw_fd()));
    send(sock, &message, &raw)
}

pub fn send_hold_request(
    sock: BorrowedFd<'_>,
    namespaces: u64,
    hostname: &[u8],
    netns: Option<BorrowedFd<'_>>,
) -> std::io::Result<()> {
    let mut message = vec![2 + u8::from(netns.is_some())];
    message.extend_from_slice(&namespaces.to_le_bytes());
    message.extend_from_slice(hostname);
    let raw: Vec<RawFd> = netns.map(|f| f.as_raw_fd()).into_iter().collect();
    send(sock, &message, &raw)
}

fn send(sock: BorrowedFd<'_>, message: &[u8], fds: &[RawFd]) -> std::io::Result<()> {
    let rights = [ControlMessage::ScmRights(fds)];
    let control: &[ControlMessage] = if fds.is_empty() { &[] } else { &rights };
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(message)],
        control,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

/// The next request, or `None` when the shim has closed its end.
pub fn receive_request(sock: BorrowedFd<'_>) -> std::io::Result<Option<Request>> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let (len, mut fds) = receive(sock, &mut buf)?;
    if len == 0 {
        return Ok(None);
    }
    let kind = buf[0];
    let expected = match kind {
        0 => FDS,
        1 => FDS + 1,
        2 => 0,
        3 => 1,
        other => {
            return Err(std::io::Error::other(format!(
                "unknown request kind {other}"
            )))
        }
    };
    if fds.len() != expected {
        return Err(std::io::Error::other(format!(
            "a request with {} fds, expected {expected}",
            fds.len()
        )));
    }
    if kind >= 2 {
        let flags: [u8; 8] = buf
            .get(1..9)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| std::io::Error::other("a hold request without flags"))?;
        return Ok(Some(Request::Hold(HoldRequest {
            namespaces: u64::from_le_bytes(flags),
            hostname: buf[9..len].to_vec(),
            netns: fds.pop(),
        })));
    }
    let cgroup = (kind == 1).then(|| fds.pop().expect("counted"));
    let mut fds = fds.into_iter();
    let mut next = || fds.next().expect("counted");
    Ok(Some(Request::Instance(InstanceRequest {
        bundle: PathBuf::from(std::ffi::OsStr::from_bytes(&buf[1..len])),
        fds: Fds {
            stdin: next(),
            stdout: next(),
            stderr: next(),
            start: next(),
            status: next(),
        },
        cgroup,
    })))
}

pub fn send_reply(sock: BorrowedFd<'_>, reply: &Reply) -> std::io::Result<()> {
    let text = match reply {
        Reply::Pid(pid) => format!("pid {pid}"),
        Reply::Error(message) => format!("error: {}", message.replace('\n', " ")),
    };
    sendmsg::<()>(
        sock.as_raw_fd(),
        &[IoSlice::new(text.as_bytes())],
        &[],
        MsgFlags::MSG_NOSIGNAL,
        None,
    )?;
    Ok(())
}

pub fn receive_reply(sock: BorrowedFd<'_>) -> std::io::Result<Reply> {
    let mut buf = vec![0u8; MAX_MESSAGE];
    let (len, _) = receive(sock, &mut buf)?;
    let text = String::from_utf8_lossy(&buf[..len]);
    if let Some(pid) = text.strip_prefix("pid ").and_then(|p| p.parse().ok()) {
        return Ok(Reply::Pid(pid));
    }
    match text.strip_prefix("error: ") {
        Some(message) => Ok(Reply::Error(message.to_string())),
        None if len == 0 => Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof)),
        None => Err(std::io::Error::other(format!("unexpected reply {text:?}"))),
    }
}

fn receive(sock: BorrowedFd<'_>, buf: &mut [u8]) -> std::io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; FDS + 1]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(
            sock.as_fd().as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other?,
        }
    };
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(received) = cmsg {
            // SAFETY: the kernel just installed these fds in this process; nothing else owns them.
            fds.extend(
                received
                    .into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok((msg.bytes, fds))
}
