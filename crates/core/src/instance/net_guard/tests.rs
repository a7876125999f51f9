//! The guard on a real kernel: each case starts this test binary again (the `child` test,
//! told what to do through an environment variable), which installs the guard and makes
//! the calls; a filter cannot be taken off, so never in the test process itself. The child
//! prints one outcome per probe, `ok` or the errno's name, and the lines the guard logged.

use super::*;

use std::io::Read;
use std::net::{TcpListener, ToSocketAddrs};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::policy::network::parse_rules;

const CHILD_ENV: &str = "WASM_SHIM_NET_GUARD_CHILD";
const CHILD_TEST: &str = "instance::net_guard::tests::child";
const CHILD_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Serialize, Deserialize)]
struct Spec {
    policy: NetworkPolicy,
    resolvers: Vec<IpAddr>,
    probes: Vec<Probe>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
enum Probe {
    /// TCP connect (IPv4 or IPv6 socket after the address).
    TcpConnect(SocketAddr),
    /// UDP connect, then a send without an address.
    UdpConnect(SocketAddr),
    /// UDP `sendto` with the address.
    UdpSendTo(SocketAddr),
    /// UDP `sendmsg` with `msg_name`.
    UdpSendMsg(SocketAddr),
    /// UDP `sendmmsg`: a message to the first address, then one to the second.
    UdpSendMmsg(SocketAddr, SocketAddr),
    /// `connect(AF_UNSPEC)` on a UDP socket.
    UdpDisconnect,
    /// TCP bind.
    Bind(SocketAddr),
    /// TCP bind (which must succeed), then listen: the listen's outcome.
    BindListen(SocketAddr),
    /// listen on a TCP socket never bound.
    ListenUnbound,
    /// `bind` with an AF_UNSPEC address of port N on an IPv4 TCP socket.
    BindUnspec(u16),
    /// `socket(domain, type, protocol)`.
    Socket(i32, i32, i32),
    Socketpair,
    /// `setsockopt(level, name)` with a 4-byte value (for IP_OPTIONS: NOPs and an end).
    SetSockOpt(i32, i32),
    UnixConnect(String),
    IoUringSetup,
}

/// Not a test of its own: the body of the child process (a no-op in the normal run).
#[test]
fn child() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let spec: Spec = serde_json::from_str(&spec).unwrap();
    log::set_logger(&PRINT_LOGGER).unwrap();
    log::set_max_level(log::LevelFilter::Info);
    let guard = install_with(&spec.policy, "c1", spec.resolvers).unwrap();
    println!("net_guard mode {:?}", guard.mode());
    for (i, probe) in spec.probes.iter().enumerate() {
        let outcome = match run_probe(probe) {
            Ok(()) => "ok".to_string(),
            Err(e) => e,
        };
        println!("net_guard probe {i}: {outcome}");
    }
}

struct PrintLogger;
static PRINT_LOGGER: PrintLogger = PrintLogger;
impl log::Log for PrintLogger {
    fn enabled(&self, _: &log::Metadata) -> bool {
        true
    }
    fn log(&self, record: &log::Record) {
        println!("net_guard log: {}", record.args());
    }
    fn flush(&self) {}
}

struct Report {
    mode: String,
    outcomes: Vec<String>,
    logs: Vec<String>,
}

/// Run `probes` in a child process under the guard for `policy`.
fn run_child(policy: NetworkPolicy, resolvers: Vec<IpAddr>, probes: &[Probe]) -> Report {
    let spec = Spec {
        policy,
        resolvers,
        probes: probes.to_vec(),
    };
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([CHILD_TEST, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, serde_json::to_string(&spec).unwrap())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let deadline = Instant::now() + CHILD_TIMEOUT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "the guarded child hung for {CHILD_TIMEOUT:?}; stdout:\n{}",
                out.join().unwrap()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (out.join().unwrap(), err.join().unwrap());
    assert!(
        status.success(),
        "child failed ({status}); stdout:\n{out}\nstderr:\n{err}"
    );
    assert!(
        out.contains("1 passed"),
        "the child test did not run:\n{out}"
    );
    let mut report = Report {
        mode: String::new(),
        outcomes: Vec::new(),
        logs: Vec::new(),
    };
    for line in out.lines() {
        // libtest may have started the line with `test ... `.
        let Some(at) = line.find("net_guard ") else {
            continue;
        };
        let line = &line[at..];
        if let Some(mode) = line.strip_prefix("net_guard mode ") {
            report.mode = mode.to_string();
        } else if let Some(rest) = line.strip_prefix("net_guard probe ") {
            let (_, outcome) = rest.split_once(": ").unwrap();
            report.outcomes.push(outcome.to_string());
        } else if let Some(msg) = line.strip_prefix("net_guard log: ") {
            report.logs.push(msg.to_string());
        }
    }
    assert_eq!(report.outcomes.len(), probes.len(), "stdout:\n{out}");
    report
}

fn check(report: &Report, probes: &[(Probe, &[&str])]) {
    for (i, (probe, expected)) in probes.iter().enumerate() {
        assert!(
            expected.contains(&report.outcomes[i].as_str()),
            "probe {i} {probe:?}: got {}, expected one of {expected:?}; guard log: {:#?}",
            report.outcomes[i],
            report.logs
        );
    }
}

fn sa(s: &str) -> SocketAddr {
    s.to_socket_addrs().unwrap().next().unwrap()
}

fn policy(connect: &str, listen: &str, name_lookup: bool) -> NetworkPolicy {
    NetworkPolicy {
        connect: parse_rules(connect).unwrap(),
        listen: parse_rules(listen).unwrap(),
        name_lookup,
        request_cap: None,
    }
}

const OK: &[&str] = &["ok"];
const EACCES: &[&str] = &["EACCES"];
/// A probe's `socket(2)` failed (before the call it makes).
const SOCKET_EACCES: &[&str] = &["socket: EACCES"];

#[test]
fn open_policy_lets_through_only_the_allowlist() {
    let allowed = TcpListener::bind("127.0.0.1:0").unwrap();
    let other = TcpListener::bind("127.0.0.1:0").unwrap();
    let p = allowed.local_addr().unwrap().port();
    let q = other.local_addr().unwrap().port();
    let at = |s: &str| sa(&s.replace("P", &p.to_string()).replace("Q", &q.to_string()));
    // An AF_INET6 socket may be missing here: then those probes cannot say anything.
    let v6_ok: &[&str] = &["ok", "socket: EAFNOSUPPORT"];
    let v6_denied: &[&str] = &["EACCES", "socket: EAFNOSUPPORT"];
    let cases: Vec<(Probe, &[&str])> = vec![
        (Probe::TcpConnect(at("127.0.0.1:P")), OK),
        (Probe::TcpConnect(at("127.0.0.2:P")), EACCES),
        (Probe::TcpConnect(at("127.0.0.1:Q")), EACCES),
        (Probe::TcpConnect(at("[::ffff:127.0.0.1]:P")), v6_ok),
        (Probe::TcpConnect(at("[::ffff:127.0.0.2]:P")), v6_denied),
        (Probe::TcpConnect(at("[::1]:P")), v6_denied),
        (Probe::UdpConnect(at("127.0.0.1:P")), OK),
        (Probe::UdpConnect(at("127.0.0.2:P")), EACCES),
        (Probe::UdpSendTo(at("127.0.0.1:P")), OK),
        (Probe::UdpSendTo(at("127.0.0.2:P")), EACCES),
        (Probe::UdpSendMsg(at("127.0.0.1:P")), OK),
        (Probe::UdpSendMsg(at("127.0.0.2:P")), EACCES),
        (Probe::UdpSendMmsg(at("127.0.0.1:P"), at("127.0.0.1:P")), OK),
        (
            Probe::UdpSendMmsg(at("127.0.0.1:P"), at("127.0.0.2:P")),
            EACCES,
        ),
        (Probe::UdpDisconnect, OK),
        // Listening: 127.0.0.1, any port.
        (Probe::BindListen(at("127.0.0.1:0")), OK),
        (Probe::Bind(at("127.0.0.2:0")), EACCES),
        // The port-0 bind of an outbound socket is allowed, but it may not listen.
        (Probe::Bind(at("0.0.0.0:0")), OK),
        (Probe::BindListen(at("0.0.0.0:0")), EACCES),
        (Probe::ListenUnbound, EACCES),
        (Probe::BindUnspec(0), OK),
        (Probe::BindUnspec(q), EACCES),
        (Probe::UnixConnect("/nonexistent/sock".into()), EACCES),
        (Probe::UnixConnect("@abstract".into()), EACCES),
        (
            Probe::Socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0),
            OK,
        ),
        (
            Probe::Socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP),
            SOCKET_EACCES,
        ),
        (
            Probe::Socket(libc::AF_INET, libc::SOCK_DGRAM, libc::IPPROTO_ICMP),
            SOCKET_EACCES,
        ),
        (
            Probe::Socket(libc::AF_PACKET, libc::SOCK_RAW, 0),
            SOCKET_EACCES,
        ),
        (
            Probe::Socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
            OK,
        ),
        (
            Probe::Socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_AUDIT),
            SOCKET_EACCES,
        ),
        (Probe::Socket(libc::AF_UNIX, libc::SOCK_STREAM, 0), OK),
        (Probe::Socketpair, OK),
        (Probe::IoUringSetup, &["ENOSYS"]),
        (Probe::SetSockOpt(libc::SOL_SOCKET, libc::SO_REUSEADDR), OK),
        (Probe::SetSockOpt(libc::IPPROTO_IP, libc::IP_TOS), OK),
        (
            Probe::SetSockOpt(libc::IPPROTO_IP, libc::IP_OPTIONS),
            EACCES,
        ),
        (
            Probe::SetSockOpt(libc::IPPROTO_IPV6, libc::IPV6_RTHDR),
            v6_denied,
        ),
    ];
    let probes: Vec<Probe> = cases.iter().map(|(p, _)| p.clone()).collect();
    let report = run_child(
        policy(&format!("127.0.0.1:{p}"), "127.0.0.1:*", false),
        Vec::new(),
        &probes,
    );
    assert_eq!(report.mode, "Supervised");
    check(&report, &cases);
    for expected in [
        format!("c1: host not allowed: 127.0.0.2:{p}"),
        format!("c1: host not allowed: 127.0.0.1:{q}"),
        "c1: listen address not allowed: 127.0.0.2:0".to_string(),
        format!("c1: listen address not allowed: 0.0.0.0:{q}"),
        "c1: unix socket not allowed: /nonexistent/sock".to_string(),
        "c1: unix socket not allowed: @abstract".to_string(),
    ] {
        assert!(
            report.logs.contains(&expected),
            "missing {expected:?} in {:#?}",
            report.logs
        );
    }
}

#[test]
fn closed_policy_makes_no_socket() {
    let cases: Vec<(Probe, &[&str])> = vec![
        (
            Probe::Socket(libc::AF_INET, libc::SOCK_STREAM, 0),
            SOCKET_EACCES,
        ),
        (
            Probe::Socket(libc::AF_INET6, libc::SOCK_DGRAM, 0),
            SOCKET_EACCES,
        ),
        (
            Probe::Socket(libc::AF_UNIX, libc::SOCK_STREAM, 0),
            SOCKET_EACCES,
        ),
        (
            Probe::Socket(libc::AF_NETLINK, libc::SOCK_RAW, libc::NETLINK_ROUTE),
            SOCKET_EACCES,
        ),
        (Probe::TcpConnect(sa("127.0.0.1:9")), SOCKET_EACCES),
        (Probe::Socketpair, OK),
        (Probe::IoUringSetup, &["ENOSYS"]),
    ];
    let probes: Vec<Probe> = cases.iter().map(|(p, _)| p.clone()).collect();
    let report = run_child(NetworkPolicy::default(), Vec::new(), &probes);
    assert_eq!(report.mode, "Closed");
    // The Socket probe reports its socket() failure as "socket: ...".
    check(&report, &cases);
}

#[test]
fn name_lookup_reaches_port_53_of_the_resolvers_only() {
    // Nothing may listen on 127.0.0.1:53 here: a TCP connect that passes the guard is
    // then refused by the kernel.
    let passes: &[&str] = &["ok", "ECONNREFUSED"];
    let cases: Vec<(Probe, &[&str])> = vec![
        (Probe::UdpConnect(sa("127.0.0.1:53")), OK),
        (Probe::TcpConnect(sa("127.0.0.1:53")), passes),
        (Probe::UdpConnect(sa("127.0.0.2:53")), EACCES),
        (Probe::UdpConnect(sa("127.0.0.1:54")), EACCES),
        (Probe::UdpSendTo(sa("127.0.0.2:53")), EACCES),
        (Probe::Bind(sa("0.0.0.0:8080")), EACCES),
    ];
    let probes: Vec<Probe> = cases.iter().map(|(p, _)| p.clone()).collect();
    let report = run_child(
        policy("", "", true),
        vec![IpAddr::V4(Ipv4Addr::LOCALHOST)],
        &probes,
    );
    assert_eq!(report.mode, "Supervised");
    check(&report, &cases);
    assert!(report
        .logs
        .contains(&"c1: host not allowed: 127.0.0.1:54".to_string()));
}

// --- The probes, with raw calls so each errno is the one of the call that failed --------

fn errno_name(e: i32) -> String {
    match e {
        libc::EACCES => "EACCES".into(),
        libc::ENOSYS => "ENOSYS".into(),
        libc::EINVAL => "EINVAL".into(),
        libc::ECONNREFUSED => "ECONNREFUSED".into(),
        libc::EAFNOSUPPORT => "EAFNOSUPPORT".into(),
        libc::EPERM => "EPERM".into(),
        libc::ENOENT => "ENOENT".into(),
        libc::EADDRINUSE => "EADDRINUSE".into(),
        other => format!("errno {other}"),
    }
}

fn last_errno() -> String {
    errno_name(io::Error::last_os_error().raw_os_error().unwrap_or(0))
}

fn rc(rc: isize) -> Result<(), String> {
    if rc < 0 {
        Err(last_errno())
    } else {
        Ok(())
    }
}

fn socket(domain: i32, ty: i32, protocol: i32) -> Result<OwnedFd, String> {
    // SAFETY: plain syscall; a non-negative result is a new fd we own.
    let fd = unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, protocol) };
    if fd < 0 {
        return Err(format!("socket: {}", last_errno()));
    }
    // SAFETY: `fd` was just returned by socket(2).
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ip_socket(addr: SocketAddr, ty: i32) -> Result<OwnedFd, String> {
    let domain = if addr.is_ipv4() {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    socket(domain, ty, 0)
}

/// `addr` as a sockaddr and its length.
fn raw(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut storage: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut bytes = Vec::new();
    match addr {
        SocketAddr::V4(a) => {
            bytes.extend((libc::AF_INET as libc::sa_family_t).to_ne_bytes());
            bytes.extend(a.port().to_be_bytes());
            bytes.extend(a.ip().octets());
            bytes.extend([0u8; 8]);
        }
        SocketAddr::V6(a) => {
            bytes.extend((libc::AF_INET6 as libc::sa_family_t).to_ne_bytes());
            bytes.extend(a.port().to_be_bytes());
            bytes.extend(a.flowinfo().to_be_bytes());
            bytes.extend(a.ip().octets());
            bytes.extend(a.scope_id().to_ne_bytes());
        }
    }
    put(&mut storage, &bytes);
    (storage, bytes.len() as libc::socklen_t)
}

fn put(storage: &mut libc::sockaddr_storage, bytes: &[u8]) {
    assert!(bytes.len() <= std::mem::size_of::<libc::sockaddr_storage>());
    // SAFETY: `bytes` fits in `storage`, which is plain bytes to the kernel.
    unsafe {
        std::ptr::copy_nonoverlapping(
            bytes.as_ptr(),
            (storage as *mut libc::sockaddr_storage).cast::<u8>(),
            bytes.len(),
        )
    };
}

fn connect_raw(fd: &OwnedFd, addr: &libc::sockaddr_storage, len: libc::socklen_t) -> isize {
    // SAFETY: `addr` is valid for `len` bytes.
    unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (addr as *const libc::sockaddr_storage).cast(),
            len,
        ) as isize
    }
}

fn bind_raw(fd: &OwnedFd, addr: &libc::sockaddr_storage, len: libc::socklen_t) -> isize {
    // SAFETY: `addr` is valid for `len` bytes.
    unsafe {
        libc::bind(
            fd.as_raw_fd(),
            (addr as *const libc::sockaddr_storage).cast(),
            len,
        ) as isize
    }
}

fn listen(fd: &OwnedFd) -> isize {
    // SAFETY: plain syscall on our fd.
    unsafe { libc::listen(fd.as_raw_fd(), 4) as isize }
}

fn run_probe(probe: &Probe) -> Result<(), String> {
    let payload = b"probe";
    match probe {
        Probe::TcpConnect(to) => {
            let fd = ip_socket(*to, libc::SOCK_STREAM)?;
            let (a, len) = raw(*to);
            rc(connect_raw(&fd, &a, len))
        }
        Probe::UdpConnect(to) => {
            let fd = ip_socket(*to, libc::SOCK_DGRAM)?;
            let (a, len) = raw(*to);
            rc(connect_raw(&fd, &a, len))?;
            // SAFETY: `payload` is valid for its length.
            rc(unsafe { libc::send(fd.as_raw_fd(), payload.as_ptr().cast(), payload.len(), 0) })
                .map_err(|e| format!("send: {e}"))
        }
        Probe::UdpSendTo(to) => {
            let fd = ip_socket(*to, libc::SOCK_DGRAM)?;
            let (a, len) = raw(*to);
            // SAFETY: `payload` and `a` are valid for their lengths.
            rc(unsafe {
                libc::sendto(
                    fd.as_raw_fd(),
                    payload.as_ptr().cast(),
                    payload.len(),
                    0,
                    (&a as *const libc::sockaddr_storage).cast(),
                    len,
                )
            })
        }
        Probe::UdpSendMsg(to) => {
            let fd = ip_socket(*to, libc::SOCK_DGRAM)?;
            let (mut a, len) = raw(*to);
            let mut iov = libc::iovec {
                iov_base: payload.as_ptr().cast_mut().cast(),
                iov_len: payload.len(),
            };
            // SAFETY: all-zero is a valid msghdr.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_name = (&mut a as *mut libc::sockaddr_storage).cast();
            msg.msg_namelen = len;
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            // SAFETY: `msg` points at live buffers.
            rc(unsafe { libc::sendmsg(fd.as_raw_fd(), &msg, 0) })
        }
        Probe::UdpSendMmsg(first, second) => {
            let fd = ip_socket(*first, libc::SOCK_DGRAM)?;
            let mut names = [raw(*first), raw(*second)];
            let mut iov = libc::iovec {
                iov_base: payload.as_ptr().cast_mut().cast(),
                iov_len: payload.len(),
            };
            // SAFETY: all-zero is a valid mmsghdr.
            let mut msgs: [libc::mmsghdr; 2] = unsafe { std::mem::zeroed() };
            for (m, (a, len)) in msgs.iter_mut().zip(names.iter_mut()) {
                m.msg_hdr.msg_name = (a as *mut libc::sockaddr_storage).cast();
                m.msg_hdr.msg_namelen = *len;
                m.msg_hdr.msg_iov = &mut iov;
                m.msg_hdr.msg_iovlen = 1;
            }
            // SAFETY: `msgs` points at live buffers.
            let n = unsafe { libc::sendmmsg(fd.as_raw_fd(), msgs.as_mut_ptr(), 2, 0) };
            rc(n as isize)?;
            if n != 2 {
                return Err(format!("sent {n} of 2"));
            }
            Ok(())
        }
        Probe::UdpDisconnect => {
            let fd = socket(libc::AF_INET, libc::SOCK_DGRAM, 0)?;
            // SAFETY: all-zero is a valid sockaddr_storage; AF_UNSPEC is 0.
            let a: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            rc(connect_raw(&fd, &a, 16))
        }
        Probe::Bind(at) => {
            let fd = ip_socket(*at, libc::SOCK_STREAM)?;
            let (a, len) = raw(*at);
            rc(bind_raw(&fd, &a, len))
        }
        Probe::BindListen(at) => {
            let fd = ip_socket(*at, libc::SOCK_STREAM)?;
            let (a, len) = raw(*at);
            rc(bind_raw(&fd, &a, len)).map_err(|e| format!("bind: {e}"))?;
            rc(listen(&fd))
        }
        Probe::ListenUnbound => {
            let fd = socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
            rc(listen(&fd))
        }
        Probe::BindUnspec(port) => {
            let fd = socket(libc::AF_INET, libc::SOCK_STREAM, 0)?;
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut a: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut bytes = vec![0u8; 16];
            bytes[2..4].copy_from_slice(&port.to_be_bytes());
            put(&mut a, &bytes);
            rc(bind_raw(&fd, &a, 16))
        }
        Probe::Socket(domain, ty, protocol) => socket(*domain, *ty, *protocol).map(drop),
        Probe::Socketpair => {
            let mut fds = [0; 2];
            // SAFETY: `fds` has room for the two fds.
            let r = unsafe {
                libc::socketpair(
                    libc::AF_UNIX,
                    libc::SOCK_STREAM | libc::SOCK_CLOEXEC,
                    0,
                    fds.as_mut_ptr(),
                )
            };
            rc(r as isize)?;
            // SAFETY: both were just returned by socketpair(2).
            drop(unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) });
            Ok(())
        }
        Probe::SetSockOpt(level, name) => {
            let domain = if *level == libc::IPPROTO_IPV6 {
                libc::AF_INET6
            } else {
                libc::AF_INET
            };
            let fd = socket(domain, libc::SOCK_STREAM, 0)?;
            let value = [1u8, 1, 1, 0];
            // SAFETY: `value` is valid for its length.
            rc(unsafe {
                libc::setsockopt(
                    fd.as_raw_fd(),
                    *level,
                    *name,
                    value.as_ptr().cast(),
                    value.len() as libc::socklen_t,
                )
            } as isize)
        }
        Probe::UnixConnect(path) => {
            let fd = socket(libc::AF_UNIX, libc::SOCK_STREAM, 0)?;
            // SAFETY: all-zero is a valid sockaddr_storage.
            let mut a: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
            let mut bytes = (libc::AF_UNIX as libc::sa_family_t).to_ne_bytes().to_vec();
            match path.strip_prefix('@') {
                Some(name) => {
                    bytes.push(0);
                    bytes.extend(name.as_bytes());
                }
                None => {
                    bytes.extend(path.as_bytes());
                    bytes.push(0);
                }
            }
            put(&mut a, &bytes);
            rc(connect_raw(&fd, &a, bytes.len() as libc::socklen_t))
        }
        Probe::IoUringSetup => {
            // SAFETY: all-zero io_uring_params is what the call takes.
            let mut params = [0u8; 120];
            // SAFETY: `params` has the size of struct io_uring_params.
            let r = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1, params.as_mut_ptr()) };
            if r >= 0 {
                // SAFETY: a new fd we own.
                drop(unsafe { OwnedFd::from_raw_fd(r as RawFd) });
            }
            rc(r as isize)
        }
    }
}

// --- Without a kernel ---------------------------------------------------------------------

#[test]
fn programs_assemble() {
    for closed in [true, false] {
        let prog = program(0xC000_003E, closed);
        assert!(prog.len() < 64, "{} instructions", prog.len());
        let ret = (libc::BPF_RET | libc::BPF_K) as u16;
        assert_eq!(prog.last().unwrap().code, ret);
    }
}

fn bytes_v4(family: i32, port: u16, ip: [u8; 4]) -> Vec<u8> {
    let mut b = (family as libc::sa_family_t).to_ne_bytes().to_vec();
    b.extend(port.to_be_bytes());
    b.extend(ip);
    b.extend([0u8; 8]);
    b
}

#[test]
fn sockaddrs_parse_as_the_kernel_reads_them() {
    let (a, len) = raw(sa("10.0.0.5:443"));
    // SAFETY: `a` is sockaddr_storage, plain bytes, `len` of them written.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&a as *const libc::sockaddr_storage).cast::<u8>(),
            len as usize,
        )
    };
    assert_eq!(parse_sockaddr(bytes), Peer::Ip(sa("10.0.0.5:443")));
    let (a, len) = raw(sa("[fd00::1]:8080"));
    // SAFETY: as above.
    let bytes = unsafe {
        std::slice::from_raw_parts(
            (&a as *const libc::sockaddr_storage).cast::<u8>(),
            len as usize,
        )
    };
    assert_eq!(parse_sockaddr(bytes), Peer::Ip(sa("[fd00::1]:8080")));
    assert_eq!(
        parse_sockaddr(&bytes[..24]),
        Peer::Ip(sa("[fd00::1]:8080")),
        "RFC 2133 length"
    );
    assert_eq!(parse_sockaddr(&bytes[..20]), Peer::Short);
    assert_eq!(
        parse_sockaddr(&bytes_v4(libc::AF_INET, 1, [1, 2, 3, 4])[..8]),
        Peer::Short
    );
    assert_eq!(parse_sockaddr(&[]), Peer::Short);
    assert_eq!(
        parse_sockaddr(&bytes_v4(libc::AF_UNSPEC, 53, [1, 1, 1, 1])),
        Peer::Unspec(Some("1.1.1.1:53".parse().unwrap()))
    );
    assert_eq!(parse_sockaddr(&[0, 0]), Peer::Unspec(None));
    let unix = |tail: &[u8]| {
        let mut b = (libc::AF_UNIX as libc::sa_family_t).to_ne_bytes().to_vec();
        b.extend(tail);
        parse_sockaddr(&b)
    };
    assert_eq!(unix(b"/run/x.sock\0junk"), Peer::Unix("/run/x.sock".into()));
    assert_eq!(unix(b"\0name"), Peer::Unix("@name".into()));
    assert_eq!(unix(b""), Peer::Unix("(unnamed)".into()));
    let family = |f: i32| parse_sockaddr(&(f as libc::sa_family_t).to_ne_bytes());
    assert_eq!(family(libc::AF_NETLINK), Peer::Netlink);
    assert_eq!(family(libc::AF_PACKET), Peer::Other(libc::AF_PACKET as u16));
}

#[test]
fn decisions_follow_the_policy() {
    let s = Supervisor {
        id: "c".into(),
        policy: policy("10.0.0.0/8:443", "*:8080", true),
        resolvers: vec!["10.96.0.10".parse().unwrap()],
    };
    let ip = |a: &str| Peer::Ip(sa(a));
    let deny = Verdict::Fail(libc::EACCES);
    assert_eq!(
        s.check_connect(&ip("10.1.2.3:443"), false),
        Verdict::Continue
    );
    assert_eq!(s.check_connect(&ip("10.1.2.3:80"), false), deny);
    assert_eq!(
        s.check_connect(&ip("10.96.0.10:53"), true),
        Verdict::Continue,
        "DNS"
    );
    assert_eq!(
        s.check_connect(&ip("[::ffff:10.96.0.10]:53"), false),
        Verdict::Continue
    );
    assert_eq!(
        s.check_connect(&ip("11.0.0.1:53"), true),
        deny,
        "not a resolver"
    );
    assert_eq!(
        s.check_connect(&Peer::Unspec(None), false),
        Verdict::Continue
    );
    let unspec = Peer::Unspec(Some("11.0.0.1:443".parse().unwrap()));
    assert_eq!(
        s.check_connect(&unspec, false),
        Verdict::Continue,
        "disconnect"
    );
    assert_eq!(s.check_connect(&unspec, true), deny, "a datagram to it");
    assert_eq!(s.check_connect(&Peer::Unix("/x".into()), false), deny);
    assert_eq!(s.check_connect(&Peer::Netlink, true), Verdict::Continue);
    assert_eq!(s.check_connect(&Peer::Other(40), false), deny);
    assert_eq!(
        s.check_connect(&Peer::Short, false),
        Verdict::Fail(libc::EINVAL)
    );
    assert_eq!(s.check_bind(&ip("0.0.0.0:8080")), Verdict::Continue);
    assert_eq!(
        s.check_bind(&ip("0.0.0.0:0")),
        Verdict::Continue,
        "outbound"
    );
    assert_eq!(s.check_bind(&ip("0.0.0.0:22")), deny);
    let unspec_22 = Peer::Unspec(Some("0.0.0.0:22".parse().unwrap()));
    assert_eq!(s.check_bind(&unspec_22), deny);
    assert_eq!(s.check_bind(&Peer::Unix("/x".into())), deny);

    let no_lookup = Supervisor {
        policy: policy("10.0.0.0/8:443", "", false),
        ..s
    };
    assert_eq!(no_lookup.check_connect(&ip("10.96.0.10:53"), true), deny);
}

#[test]
fn resolv_conf_nameservers() {
    let conf = "# comment\nsearch svc.cluster.local\nnameserver 10.96.0.10\n\
                nameserver fe80::1%eth0\nnameserver bogus\noptions ndots:5\n";
    assert_eq!(
        nameservers(conf),
        vec![
            "10.96.0.10".parse::<IpAddr>().unwrap(),
            "fe80::1".parse().unwrap()
        ]
    );
    assert_eq!(
        nameservers("search x\n"),
        vec![
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            IpAddr::V6(Ipv6Addr::LOCALHOST)
        ],
        "glibc's default"
    );
}

#[test]
fn source_routes_are_found_in_control_messages() {
    let cmsg = |level: i32, kind: i32, data: &[u8]| {
        let hdr = std::mem::size_of::<libc::cmsghdr>();
        let mut b = (hdr + data.len()).to_ne_bytes().to_vec();
        b.extend(level.to_ne_bytes());
        b.extend(kind.to_ne_bytes());
        b.extend(data);
        while !b.len().is_multiple_of(std::mem::size_of::<usize>()) {
            b.push(0);
        }
        b
    };
    let tos = cmsg(libc::IPPROTO_IP, libc::IP_TOS, &[0x10, 0, 0, 0]);
    let retopts = cmsg(libc::IPPROTO_IP, libc::IP_RETOPTS, &[1, 1, 1, 0]);
    let rthdr = cmsg(libc::IPPROTO_IPV6, libc::IPV6_RTHDR, &[0; 8]);
    assert_eq!(source_route(&tos), Ok(None));
    assert_eq!(
        source_route(&[tos.clone(), retopts].concat()),
        Ok(Some((libc::IPPROTO_IP, libc::IP_RETOPTS)))
    );
    assert_eq!(
        source_route(&[tos.clone(), rthdr].concat()),
        Ok(Some((libc::IPPROTO_IPV6, libc::IPV6_RTHDR)))
    );
    let mut bad = tos.clone();
    bad[0] = 200;
    assert_eq!(source_route(&bad), Err(libc::EINVAL));
    assert_eq!(source_route(&tos[..4]), Ok(None), "shorter than a header");
}
