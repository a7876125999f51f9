//! The network allowlist, enforced by the kernel on the instance process.
//!
//! An engine whose sockets have no hook to check addresses (WasmEdge's socket extension:
//! `sock_open`, `sock_bind`, `sock_connect`, `sock_getaddrinfo`, ...) calls the host's
//! `socket(2)`, `connect(2)`, `bind(2)`, ... directly. This module puts a seccomp filter on
//! the whole instance process so those calls obey [`NetworkPolicy`] whatever the engine:
//!
//! - **Closed policy** (no allowlist, no name lookup): `socket(2)` of every family fails with
//!   `EACCES` straight from the filter, and so do `connect(2)` and `bind(2)` (on a socket
//!   the process already had). No supervisor thread. The shim's logging writes to a FIFO that
//!   is already open; nothing in the instance process makes sockets of its own after setup.
//! - **Open policy**: `socket(2)` is allowed for `AF_INET`/`AF_INET6` stream and datagram
//!   sockets (TCP, UDP), `AF_UNIX` (glibc's resolver asks nscd through one; every address it
//!   could reach is refused below) and `AF_NETLINK` with `NETLINK_ROUTE` (getaddrinfo's
//!   `AI_ADDRCONFIG` reads the interfaces' addresses); every other family, raw sockets and
//!   other protocols fail with `EACCES`. `connect`, `bind`, `listen`, `sendmsg`, `sendmmsg`
//!   and `sendto` with an address go to a supervisor thread (seccomp user notification),
//!   which reads the address and lets the call go on or fails it with `EACCES`.
//!   - connect / sendto: [`NetworkPolicy::allows_connect`], or, when
//!     [`NetworkPolicy::name_lookup`] is set, port 53 (UDP or TCP) of a nameserver of
//!     `/etc/resolv.conf`, which is what the host's resolver behind `getaddrinfo` talks to.
//!     Refused: `host not allowed: ADDR:PORT` in the log.
//!   - bind: [`NetworkPolicy::allows_bind`]; refused: `listen address not allowed: ADDR:PORT`.
//!   - listen: the socket's local address (an unbound socket as `0.0.0.0:0`) against
//!     [`NetworkPolicy::allows_listen`], so a port bound for an outbound connection does not
//!     become a listening one.
//!   - `AF_UNIX` addresses (paths and abstract names reach outside the container's network)
//!     are refused, `AF_NETLINK` ones allowed (only `NETLINK_ROUTE` sockets exist).
//!
//! Source routing, which would carry a packet to another host than the one checked, is
//! refused too: `setsockopt` of `IP_OPTIONS` or an IPv6 routing header (`EACCES` from the
//! filter) and the same as control messages of `sendmsg`.
//!
//! In both modes `io_uring_setup(2)` fails with `ENOSYS` (io_uring's connect and send would
//! not pass through the filter), a syscall of another ABI (i386, x32) kills the process.

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;

use crate::policy::network::NetworkPolicy;

/// Why the guard could not be installed. The instance must then not run: without the guard
/// the engine's sockets would reach any address.
#[derive(Debug, thiserror::Error)]
pub enum NetGuardError {
    #[error("the network guard needs x86_64 or aarch64")]
    UnsupportedArch,
    #[error("setting no_new_privs for the network guard: {0}")]
    NoNewPrivs(io::Error),
    #[error("starting the network guard's supervisor thread: {0}")]
    Supervisor(io::Error),
    /// `seccomp(2)` refused the filter (a kernel before 5.7 lacks TSYNC_ESRCH with a
    /// listener; a kernel without seccomp fails with EINVAL or ENOSYS).
    #[error("installing the network guard's seccomp filter: {0}")]
    Filter(io::Error),
}

/// What [`install`] put in place. The filter holds for the life of the process whatever
/// becomes of this value; dropping it changes nothing.
#[derive(Debug)]
pub struct NetGuard {
    mode: GuardMode,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuardMode {
    /// No network: socket creation fails in the filter itself.
    Closed,
    /// Addresses are checked by the supervisor thread.
    Supervised,
}

impl NetGuard {
    pub fn mode(&self) -> GuardMode {
        self.mode
    }
}

/// Enforce `policy` on this process's sockets, for good.
///
/// Call it in the instance process after `confine::drop_privileges` and after
/// [`NetworkPolicy::resolve_hosts`] (which itself talks to the resolver), before the guest
/// is instantiated. The process must otherwise be single-threaded (other threads would get
/// the filter too, through TSYNC, but must not be running guest code set up before it) and
/// must not fork afterwards: a child would inherit the filter, and its calls are refused.
/// Under an open policy this starts a supervisor thread that lives as long as the process;
/// nothing in the process may take a lock that thread needs (the logger's) while making a
/// network call.
///
/// Needs Linux 5.7 or later (seccomp user notification with TSYNC).
pub fn install(policy: &NetworkPolicy, container_id: &str) -> Result<NetGuard, NetGuardError> {
    let resolvers = if policy.name_lookup {
        match std::fs::read_to_string(RESOLV_CONF) {
            Ok(text) => nameservers(&text),
            Err(e) => {
                log::warn!("{container_id}: network guard: reading {RESOLV_CONF}: {e}");
                nameservers("")
            }
        }
    } else {
        Vec::new()
    };
    install_with(policy, container_id, resolvers)
}

const RESOLV_CONF: &str = "/etc/resolv.conf";

/// [`install`] with the resolvers given (the tests' own, not the machine's).
fn install_with(
    policy: &NetworkPolicy,
    container_id: &str,
    resolvers: Vec<IpAddr>,
) -> Result<NetGuard, NetGuardError> {
    let arch = AUDIT_ARCH.ok_or(NetGuardError::UnsupportedArch)?;
    // SAFETY: prctl with integer arguments only changes this process's flags.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
        return Err(NetGuardError::NoNewPrivs(io::Error::last_os_error()));
    }
    if policy.is_closed() {
        load(&program(arch, true), libc::SECCOMP_FILTER_FLAG_TSYNC)
            .map_err(NetGuardError::Filter)?;
        log::info!("{container_id}: network guard: no network");
        return Ok(NetGuard {
            mode: GuardMode::Closed,
        });
    }

    // The thread first, so a failure to start it leaves no filter without a supervisor.
    let (fd_tx, fd_rx) = mpsc::channel::<OwnedFd>();
    let supervisor = Supervisor {
        id: container_id.to_string(),
        policy: policy.clone(),
        resolvers,
    };
    std::thread::Builder::new()
        .name("net-guard".into())
        .spawn(move || {
            // Err: the filter was not installed; nothing to supervise.
            if let Ok(listener) = fd_rx.recv() {
                supervisor.serve(listener);
            }
        })
        .map_err(NetGuardError::Supervisor)?;
    let flags = libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
        | libc::SECCOMP_FILTER_FLAG_TSYNC
        | libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
    let listener = load(&program(arch, false), flags)
        .map_err(NetGuardError::Filter)?
        .expect("NEW_LISTENER gives a listener");
    // The receiver lives until it got the fd: the thread only ends after recv.
    fd_tx
        .send(listener)
        .expect("the network guard's thread waits for its listener");
    log::info!(
        "{container_id}: network guard: connect {}, listen {}, name lookup {}",
        policy.connect.len(),
        policy.listen.len(),
        policy.name_lookup
    );
    Ok(NetGuard {
        mode: GuardMode::Supervised,
    })
}

// --- The filter ------------------------------------------------------------------------

#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_003E); // AUDIT_ARCH_X86_64
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: Option<u32> = Some(0xC000_00B7); // AUDIT_ARCH_AARCH64
#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const AUDIT_ARCH: Option<u32> = None;

/// Offsets in `struct seccomp_data`: nr, arch, instruction pointer, then six 64-bit args.
const OFF_NR: u32 = 0;
const OFF_ARCH: u32 = 4;
const fn arg_lo(i: u32) -> u32 {
    if cfg!(target_endian = "little") {
        16 + 8 * i
    } else {
        16 + 8 * i + 4
    }
}
const fn arg_hi(i: u32) -> u32 {
    if cfg!(target_endian = "little") {
        16 + 8 * i + 4
    } else {
        16 + 8 * i
    }
}

const RET_ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
const RET_NOTIFY: u32 = libc::SECCOMP_RET_USER_NOTIF;
const RET_KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;
const fn ret_errno(errno: i32) -> u32 {
    libc::SECCOMP_RET_ERRNO | (errno as u32 & libc::SECCOMP_RET_DATA)
}

/// A jump target: the next instruction or a label further down.
#[derive(Clone, Copy)]
enum To {
    Next,
    L(&'static str),
}

/// A small classic-BPF assembler with forward labels.
#[derive(Default)]
struct Bpf {
    code: Vec<(u16, u32, To, To)>,
    labels: Vec<(&'static str, usize)>,
}

impl Bpf {
    fn label(&mut self, name: &'static str) {
        self.labels.push((name, self.code.len()));
    }
    fn load(&mut self, offset: u32) {
        let op = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
        self.code.push((op, offset, To::Next, To::Next));
    }
    fn and(&mut self, k: u32) {
        let op = (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16;
        self.code.push((op, k, To::Next, To::Next));
    }
    fn jeq(&mut self, k: u32, yes: To, no: To) {
        let op = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
        self.code.push((op, k, yes, no));
    }
    #[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
    fn jge(&mut self, k: u32, yes: To, no: To) {
        let op = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
        self.code.push((op, k, yes, no));
    }
    fn ret(&mut self, k: u32) {
        let op = (libc::BPF_RET | libc::BPF_K) as u16;
        self.code.push((op, k, To::Next, To::Next));
    }
    /// Resolve the labels; a bad program is a bug here, hence the panics.
    fn finish(self) -> Vec<libc::sock_filter> {
        let offset = |at: usize, to: To| -> u8 {
            match to {
                To::Next => 0,
                To::L(name) => {
                    let (_, target) = self
                        .labels
                        .iter()
                        .find(|(n, _)| *n == name)
                        .unwrap_or_else(|| panic!("BPF label {name} undefined"));
                    let delta = target
                        .checked_sub(at + 1)
                        .unwrap_or_else(|| panic!("BPF label {name} is backwards"));
                    u8::try_from(delta).expect("BPF jump too far")
                }
            }
        };
        self.code
            .iter()
            .enumerate()
            .map(|(at, &(code, k, yes, no))| libc::sock_filter {
                code,
                jt: offset(at, yes),
                jf: offset(at, no),
                k,
            })
            .collect()
    }
}

/// The filter program: `closed` for a policy that allows nothing.
fn program(arch: u32, closed: bool) -> Vec<libc::sock_filter> {
    use To::{Next, L};
    let nr = |n: libc::c_long| n as u32;
    let mut b = Bpf::default();
    b.load(OFF_ARCH);
    b.jeq(arch, Next, L("kill"));
    b.load(OFF_NR);
    // x32 syscalls carry __X32_SYSCALL_BIT and the x86_64 audit arch.
    #[cfg(target_arch = "x86_64")]
    b.jge(0x4000_0000, L("kill"), Next);
    b.jeq(nr(libc::SYS_io_uring_setup), L("enosys"), Next);
    if closed {
        b.jeq(nr(libc::SYS_socket), L("deny"), Next);
        b.jeq(nr(libc::SYS_connect), L("deny"), Next);
        b.jeq(nr(libc::SYS_bind), L("deny"), Next);
        b.ret(RET_ALLOW);
    } else {
        b.jeq(nr(libc::SYS_socket), L("socket"), Next);
        b.jeq(nr(libc::SYS_connect), L("notify"), Next);
        b.jeq(nr(libc::SYS_bind), L("notify"), Next);
        b.jeq(nr(libc::SYS_listen), L("notify"), Next);
        b.jeq(nr(libc::SYS_sendmsg), L("notify"), Next);
        b.jeq(nr(libc::SYS_sendmmsg), L("notify"), Next);
        b.jeq(nr(libc::SYS_sendto), L("sendto"), Next);
        b.jeq(nr(libc::SYS_setsockopt), L("setsockopt"), Next);
        b.ret(RET_ALLOW);

        // setsockopt(fd, level, name, ...): no source routing, which would send a packet
        // to another host than the address checked (IPv4 options LSRR/SSRR, IPv6 routing
        // headers such as SRv6's).
        b.label("setsockopt");
        b.load(arg_lo(1));
        b.jeq(libc::IPPROTO_IP as u32, Next, L("setsockopt6"));
        b.load(arg_lo(2));
        b.jeq(libc::IP_OPTIONS as u32, L("deny"), L("allow"));
        b.label("setsockopt6");
        b.jeq(libc::IPPROTO_IPV6 as u32, Next, L("allow"));
        b.load(arg_lo(2));
        b.jeq(libc::IPV6_RTHDR as u32, L("deny"), Next);
        b.jeq(libc::IPV6_2292RTHDR as u32, L("deny"), L("allow"));

        // sendto(fd, buf, len, flags, dest_addr, addrlen): only with an address.
        b.label("sendto");
        b.load(arg_lo(4));
        b.jeq(0, Next, L("notify"));
        b.load(arg_hi(4));
        b.jeq(0, L("allow"), L("notify"));

        // socket(domain, type, protocol); the kernel reads them as ints.
        b.label("socket");
        b.load(arg_lo(0));
        b.jeq(libc::AF_INET as u32, L("inet"), Next);
        b.jeq(libc::AF_INET6 as u32, L("inet"), Next);
        b.jeq(libc::AF_UNIX as u32, L("allow"), Next);
        b.jeq(libc::AF_NETLINK as u32, L("netlink"), L("deny"));
        b.label("inet");
        b.load(arg_lo(1));
        b.and(0xf); // SOCK_TYPE_MASK: without SOCK_NONBLOCK, SOCK_CLOEXEC
        b.jeq(libc::SOCK_STREAM as u32, L("protocol"), Next);
        b.jeq(libc::SOCK_DGRAM as u32, L("protocol"), L("deny"));
        b.label("protocol");
        b.load(arg_lo(2));
        b.jeq(0, L("allow"), Next);
        b.jeq(libc::IPPROTO_TCP as u32, L("allow"), Next);
        b.jeq(libc::IPPROTO_UDP as u32, L("allow"), L("deny"));
        b.label("netlink");
        b.load(arg_lo(2));
        b.jeq(libc::NETLINK_ROUTE as u32, L("allow"), L("deny"));

        b.label("allow");
        b.ret(RET_ALLOW);
        b.label("notify");
        b.ret(RET_NOTIFY);
    }
    b.label("deny");
    b.ret(ret_errno(libc::EACCES));
    b.label("enosys");
    b.ret(ret_errno(libc::ENOSYS));
    b.label("kill");
    b.ret(RET_KILL);
    b.finish()
}

/// Install `filter` on every thread of the process; the listener's fd when `flags` ask
/// for one.
fn load(filter: &[libc::sock_filter], flags: libc::c_ulong) -> io::Result<Option<OwnedFd>> {
    let prog = libc::sock_fprog {
        len: u16::try_from(filter.len()).expect("a BPF program under 64K instructions"),
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `prog` points at `filter`, alive for the call; the kernel copies the program.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            flags,
            &prog as *const libc::sock_fprog,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER == 0 {
        // TSYNC without TSYNC_ESRCH: a positive result names a thread that could not take
        // the filter (it has one of its own), and none was installed.
        if rc > 0 {
            return Err(io::Error::other(format!(
                "thread {rc} has a seccomp filter of its own"
            )));
        }
        return Ok(None);
    }
    // SAFETY: with NEW_LISTENER, a non-negative result is a new fd (O_CLOEXEC) we own.
    Ok(Some(unsafe { OwnedFd::from_raw_fd(rc as RawFd) }))
}

// --- The supervisor ----------------------------------------------------------------------

/// What the supervisor answers.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    /// Let the kernel carry out the call as the caller made it.
    Continue,
    /// Fail the call with this errno.
    Fail(i32),
}

struct Supervisor {
    id: String,
    policy: NetworkPolicy,
    /// Nameservers whose port 53 is reachable when the policy allows name lookup.
    resolvers: Vec<IpAddr>,
}

impl Supervisor {
    /// Answer notifications until the listener fails. Returning drops the listener, after
    /// which every call the filter sends here fails with ENOSYS: the guard fails closed.
    ///
    /// Why CONTINUE is safe here: the kernel reads the address again after we answer, so a
    /// writer between our check and its read could swap it. The addresses the guest's calls
    /// pass are in the engine's own host memory (it builds the `sockaddr` from the guest's
    /// arguments), which Wasm code cannot write, and the engine runs the guest on one thread,
    /// blocked in this very call while we decide. Only trusted host code of this process
    /// could race us. The caveat: an engine that ran guest code on several threads and
    /// passed a pointer into shared linear memory to `connect` would defeat the check.
    fn serve(self, listener: OwnedFd) {
        let fd = listener.as_raw_fd();
        loop {
            // SAFETY: all-zero is a valid seccomp_notif, and RECV wants it zeroed.
            let mut req: libc::seccomp_notif = unsafe { std::mem::zeroed() };
            // SAFETY: `req` is a seccomp_notif the ioctl fills in.
            if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_RECV, &mut req) } != 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    // A signal, or the caller went away before we read the notification.
                    Some(libc::EINTR) | Some(libc::ENOENT) => continue,
                    _ => {
                        log::error!("{}: network guard stopped: {e}", self.id);
                        return;
                    }
                }
            }
            let verdict = self.decide(&req);
            // The caller is still blocked in that call (it was not interrupted and its
            // thread id not reused): what we read belongs to it.
            // SAFETY: the ioctl reads the u64 id.
            if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_ID_VALID, &req.id) } != 0 {
                continue;
            }
            let mut resp = libc::seccomp_notif_resp {
                id: req.id,
                val: 0,
                error: 0,
                flags: 0,
            };
            match verdict {
                Verdict::Continue => resp.flags = libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32,
                Verdict::Fail(errno) => resp.error = -errno,
            }
            // SAFETY: `resp` is a seccomp_notif_resp the ioctl reads.
            if unsafe { libc::ioctl(fd, libc::SECCOMP_IOCTL_NOTIF_SEND, &mut resp) } != 0 {
                let e = io::Error::last_os_error();
                if e.raw_os_error() != Some(libc::ENOENT) {
                    log::warn!("{}: network guard: answering a call: {e}", self.id);
                }
            }
        }
    }

    fn decide(&self, req: &libc::seccomp_notif) -> Verdict {
        let tid = req.pid as libc::pid_t;
        // Only this process's threads: a forked child would have its own memory and fds.
        // SAFETY: signal 0 checks that thread `tid` is in our thread group, sends nothing.
        if tid == 0 || unsafe { libc::syscall(libc::SYS_tgkill, libc::getpid(), tid, 0) } != 0 {
            log::warn!(
                "{}: network guard: call from task {tid}, not of this process: refused",
                self.id
            );
            return Verdict::Fail(libc::EACCES);
        }
        let args = req.data.args;
        let nr = libc::c_long::from(req.data.nr);
        let result = match nr {
            libc::SYS_connect => read_sockaddr(tid, args[1], args[2], false)
                .map(|peer| self.check_connect(&peer, false)),
            libc::SYS_bind => {
                read_sockaddr(tid, args[1], args[2], false).map(|peer| self.check_bind(&peer))
            }
            libc::SYS_listen => Ok(self.check_listen(args[0] as RawFd)),
            libc::SYS_sendto => read_sockaddr(tid, args[4], args[5], false)
                .map(|peer| self.check_connect(&peer, true)),
            libc::SYS_sendmsg => read_msghdr(tid, args[1]).and_then(|m| self.check_msghdr(tid, &m)),
            libc::SYS_sendmmsg => self.check_sendmmsg(tid, args[1], args[2]),
            _ => Err(libc::ENOSYS),
        };
        result.unwrap_or_else(Verdict::Fail)
    }

    /// An outgoing connection (`send`: a datagram's destination).
    fn check_connect(&self, peer: &Peer, send: bool) -> Verdict {
        match peer {
            Peer::Ip(to) => {
                if self.is_resolver(*to) {
                    Verdict::Continue
                } else if !self.policy.allows_connect(*to) {
                    super::notice::refused_in(&self.id, &format!("host not allowed: {to}"));
                    Verdict::Fail(libc::EACCES)
                } else if send || super::request_cap::claim() {
                    // A datagram is not a request; a connection (TCP, or UDP's) is.
                    Verdict::Continue
                } else {
                    Verdict::Fail(libc::EACCES)
                }
            }
            // connect(AF_UNSPEC) dissolves an association; a datagram to AF_UNSPEC goes, on
            // an IPv4 socket, to the IPv4 address that follows.
            Peer::Unspec(None) => Verdict::Continue,
            Peer::Unspec(Some(_)) if !send => Verdict::Continue,
            Peer::Unspec(Some(v4)) => self.check_connect(&Peer::Ip(SocketAddr::V4(*v4)), send),
            Peer::Unix(path) => {
                log::warn!("{}: unix socket not allowed: {path}", self.id);
                Verdict::Fail(libc::EACCES)
            }
            Peer::Netlink => Verdict::Continue,
            Peer::Other(family) => {
                log::warn!("{}: address family {family} not allowed", self.id);
                Verdict::Fail(libc::EACCES)
            }
            Peer::Short => Verdict::Fail(libc::EINVAL),
        }
    }

    fn check_bind(&self, addr: &Peer) -> Verdict {
        match addr {
            Peer::Ip(at) => self.bind_ip(*at),
            // An IPv4 socket takes AF_UNSPEC with INADDR_ANY as AF_INET: the port counts.
            Peer::Unspec(Some(v4)) => self.bind_ip(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::UNSPECIFIED,
                v4.port(),
            ))),
            Peer::Unspec(None) | Peer::Short => Verdict::Fail(libc::EINVAL),
            Peer::Unix(path) => {
                log::warn!(
                    "{}: listen address not allowed: unix socket {path}",
                    self.id
                );
                Verdict::Fail(libc::EACCES)
            }
            Peer::Netlink => Verdict::Continue,
            Peer::Other(family) => {
                log::warn!("{}: address family {family} not allowed", self.id);
                Verdict::Fail(libc::EACCES)
            }
        }
    }

    fn bind_ip(&self, at: SocketAddr) -> Verdict {
        if self.policy.allows_bind(at) {
            Verdict::Continue
        } else {
            super::notice::refused_in(&self.id, &format!("listen address not allowed: {at}"));
            Verdict::Fail(libc::EACCES)
        }
    }

    /// `listen(fd)`: the fd is in this process's table (the caller is one of its threads,
    /// blocked in the call), so its local address is read here directly.
    fn check_listen(&self, fd: RawFd) -> Verdict {
        let mut storage = [0u8; std::mem::size_of::<libc::sockaddr_storage>()];
        let mut len = storage.len() as libc::socklen_t;
        // SAFETY: `storage` has `len` writable bytes; getsockname writes at most that.
        let rc = unsafe { libc::getsockname(fd, storage.as_mut_ptr().cast(), &mut len) };
        if rc != 0 {
            // Not a socket, or not an open fd: the kernel would fail the same way.
            return Verdict::Fail(
                io::Error::last_os_error()
                    .raw_os_error()
                    .unwrap_or(libc::EBADF),
            );
        }
        let len = (len as usize).min(storage.len());
        match parse_sockaddr(&storage[..len]) {
            Peer::Ip(at) if self.policy.allows_listen(at) => Verdict::Continue,
            Peer::Ip(at) => {
                super::notice::refused_in(&self.id, &format!("listen address not allowed: {at}"));
                Verdict::Fail(libc::EACCES)
            }
            Peer::Netlink => Verdict::Continue,
            _ => Verdict::Fail(libc::EACCES),
        }
    }

    /// `sendmmsg(fd, msgvec, vlen, flags)`: every message's destination must pass.
    fn check_sendmmsg(&self, tid: libc::pid_t, msgvec: u64, vlen: u64) -> Result<Verdict, i32> {
        // The kernel sends at most UIO_MAXIOV messages per call.
        let count = vlen.min(1024) as usize;
        let size = std::mem::size_of::<libc::mmsghdr>();
        let mut raw = vec![0u8; count * size];
        read_memory(tid, msgvec, &mut raw)?;
        for chunk in raw.chunks_exact(size) {
            // SAFETY: `chunk` holds size_of::<mmsghdr>() bytes; any bits are a valid mmsghdr
            // (integers and raw pointers), read unaligned.
            let m: libc::mmsghdr = unsafe { std::ptr::read_unaligned(chunk.as_ptr().cast()) };
            let verdict = self.check_msghdr(tid, &m.msg_hdr)?;
            if verdict != Verdict::Continue {
                return Ok(verdict);
            }
        }
        Ok(Verdict::Continue)
    }

    /// One message of `sendmsg`/`sendmmsg`: its destination, and no source route among its
    /// control messages.
    fn check_msghdr(&self, tid: libc::pid_t, hdr: &libc::msghdr) -> Result<Verdict, i32> {
        if let Some(peer) = msghdr_name(tid, hdr)? {
            let verdict = self.check_connect(&peer, true);
            if verdict != Verdict::Continue {
                return Ok(verdict);
            }
        }
        if hdr.msg_control.is_null() || hdr.msg_controllen == 0 {
            return Ok(Verdict::Continue);
        }
        // The kernel refuses more control data than its socket option memory (optmem_max,
        // 20 KiB to 128 KiB).
        if hdr.msg_controllen > MAX_CONTROL {
            return Err(libc::ENOBUFS);
        }
        let mut control = vec![0u8; hdr.msg_controllen];
        read_memory(tid, hdr.msg_control as usize as u64, &mut control)?;
        if let Some((level, kind)) = source_route(&control)? {
            log::warn!(
                "{}: source routing not allowed (control message {level}/{kind})",
                self.id
            );
            return Ok(Verdict::Fail(libc::EACCES));
        }
        Ok(Verdict::Continue)
    }

    fn is_resolver(&self, to: SocketAddr) -> bool {
        self.policy.name_lookup
            && to.port() == 53
            && self.resolvers.contains(&to.ip().to_canonical())
    }
}

// --- Reading the caller's arguments ------------------------------------------------------

/// Copy `buf.len()` bytes at `addr` of thread `tid` (of this process): a bad pointer from
/// the caller is EFAULT here, not a crash of the supervisor.
fn read_memory(tid: libc::pid_t, addr: u64, buf: &mut [u8]) -> Result<(), i32> {
    if buf.is_empty() {
        return Ok(());
    }
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` covers `buf`, writable; `remote` is only read, by the kernel, which
    // checks it against the target's address space.
    let n = unsafe { libc::process_vm_readv(tid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EFAULT));
    }
    if n as usize != buf.len() {
        return Err(libc::EFAULT);
    }
    Ok(())
}

/// The address `connect`/`bind`/`sendto` were given. `clamp`: a longer length is cut to a
/// `sockaddr_storage` (what `sendmsg` does) instead of failing (what the others do).
fn read_sockaddr(tid: libc::pid_t, ptr: u64, len: u64, clamp: bool) -> Result<Peer, i32> {
    let max = std::mem::size_of::<libc::sockaddr_storage>() as u64;
    let len = match len {
        l if l > max && clamp => max,
        l if l > max => return Err(libc::EINVAL),
        l => l,
    };
    if ptr == 0 {
        return Err(libc::EFAULT);
    }
    let mut buf = vec![0u8; len as usize];
    read_memory(tid, ptr, &mut buf)?;
    Ok(parse_sockaddr(&buf))
}

/// The `msghdr` a `sendmsg` was given.
fn read_msghdr(tid: libc::pid_t, msg: u64) -> Result<libc::msghdr, i32> {
    let mut raw = [0u8; std::mem::size_of::<libc::msghdr>()];
    read_memory(tid, msg, &mut raw)?;
    // SAFETY: `raw` holds size_of::<msghdr>() bytes; any bits are a valid msghdr (integers
    // and raw pointers, never dereferenced here), read unaligned.
    Ok(unsafe { std::ptr::read_unaligned(raw.as_ptr().cast()) })
}

const MAX_CONTROL: usize = 256 * 1024;

/// The first control message that sets a source route (`IP_RETOPTS`, which carries IPv4
/// options, or an IPv6 routing header), as (level, type). A malformed buffer is EINVAL,
/// as the kernel would answer.
fn source_route(control: &[u8]) -> Result<Option<(i32, i32)>, i32> {
    const HDR: usize = std::mem::size_of::<libc::cmsghdr>();
    const ALIGN: usize = std::mem::size_of::<usize>();
    let mut at = 0;
    while control.len() - at >= HDR {
        let field = |from: usize, len: usize| &control[at + from..at + from + len];
        let len = usize::from_ne_bytes(field(0, ALIGN).try_into().unwrap());
        let level = i32::from_ne_bytes(field(ALIGN, 4).try_into().unwrap());
        let kind = i32::from_ne_bytes(field(ALIGN + 4, 4).try_into().unwrap());
        if len < HDR || len > control.len() - at {
            return Err(libc::EINVAL);
        }
        let routing = match level {
            libc::IPPROTO_IP => kind == libc::IP_RETOPTS,
            libc::IPPROTO_IPV6 => kind == libc::IPV6_RTHDR || kind == libc::IPV6_2292RTHDR,
            _ => false,
        };
        if routing {
            return Ok(Some((level, kind)));
        }
        at += len.div_ceil(ALIGN) * ALIGN;
        if at >= control.len() {
            break;
        }
    }
    Ok(None)
}

fn msghdr_name(tid: libc::pid_t, hdr: &libc::msghdr) -> Result<Option<Peer>, i32> {
    // As the kernel: no name, or a zero length, is no destination.
    if hdr.msg_name.is_null() || hdr.msg_namelen == 0 {
        return Ok(None);
    }
    read_sockaddr(
        tid,
        hdr.msg_name as usize as u64,
        u64::from(hdr.msg_namelen),
        true,
    )
    .map(Some)
}

/// A socket address as the kernel will read it.
#[derive(Debug, PartialEq, Eq)]
enum Peer {
    Ip(SocketAddr),
    /// `AF_UNSPEC`, with the IPv4 address that follows when it is long enough for one.
    Unspec(Option<SocketAddrV4>),
    /// A path, `@name` for an abstract name, or `(unnamed)`.
    Unix(String),
    Netlink,
    Other(u16),
    /// Too short for its family: the kernel fails it with EINVAL.
    Short,
}

fn parse_sockaddr(b: &[u8]) -> Peer {
    if b.len() < 2 {
        return Peer::Short;
    }
    let family = i32::from(u16::from_ne_bytes([b[0], b[1]]));
    let v4 = |b: &[u8]| {
        SocketAddrV4::new(
            Ipv4Addr::new(b[4], b[5], b[6], b[7]),
            u16::from_be_bytes([b[2], b[3]]),
        )
    };
    match family {
        libc::AF_INET if b.len() >= 16 => Peer::Ip(SocketAddr::V4(v4(b))),
        libc::AF_INET => Peer::Short,
        // The kernel takes 24 bytes (RFC 2133's sockaddr_in6, without the scope id).
        libc::AF_INET6 if b.len() >= 24 => {
            let port = u16::from_be_bytes([b[2], b[3]]);
            let flowinfo = u32::from_be_bytes([b[4], b[5], b[6], b[7]]);
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&b[8..24]);
            let scope = match b.get(24..28) {
                Some(s) => u32::from_ne_bytes([s[0], s[1], s[2], s[3]]),
                None => 0,
            };
            Peer::Ip(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                flowinfo,
                scope,
            )))
        }
        libc::AF_INET6 => Peer::Short,
        libc::AF_UNSPEC => Peer::Unspec((b.len() >= 16).then(|| v4(b))),
        libc::AF_UNIX => {
            let path = &b[2..];
            Peer::Unix(match path.first() {
                None => "(unnamed)".into(),
                Some(0) => format!("@{}", String::from_utf8_lossy(&path[1..])),
                Some(_) => {
                    let end = path.iter().position(|&c| c == 0).unwrap_or(path.len());
                    String::from_utf8_lossy(&path[..end]).into_owned()
                }
            })
        }
        libc::AF_NETLINK => Peer::Netlink,
        other => Peer::Other(other as u16),
    }
}

/// The nameservers of a resolv.conf; glibc's default, the loopback, when none is listed.
fn nameservers(resolv_conf: &str) -> Vec<IpAddr> {
    let mut found: Vec<IpAddr> = resolv_conf
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            if words.next() != Some("nameserver") {
                return None;
            }
            let addr = words.next()?;
            // A link-local IPv6 resolver may carry a zone: fe80::1%eth0.
            let addr = addr.split('%').next().unwrap_or(addr);
            addr.parse::<IpAddr>().ok().map(|ip| ip.to_canonical())
        })
        .collect();
    if found.is_empty() {
        found = vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST),
        ];
    }
    found
}

#[cfg(test)]
mod tests;
