//! The policy's network allowlist applied to WASI sockets (preview 2). Closed by default:
//! with no rules TCP and UDP are off entirely.

use wasm_shim_core::instance::{notice, request_cap};
use wasm_shim_core::policy::NetworkPolicy;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::WasiCtxBuilder;

pub fn apply(builder: &mut WasiCtxBuilder, policy: &NetworkPolicy) {
    let open = !policy.is_closed();
    builder
        .allow_tcp(open)
        .allow_udp(open)
        .allow_ip_name_lookup(policy.name_lookup);
    let policy = policy.clone();
    builder.socket_addr_check(move |addr, usage| {
        let allowed = match usage {
            SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend => policy.allows_connect(addr),
            SocketAddrUse::TcpBind | SocketAddrUse::TcpListen | SocketAddrUse::UdpBind => {
                policy.allows_bind(addr)
            }
            // Peers of an allowed listener or socket.
            SocketAddrUse::TcpAccept | SocketAddrUse::UdpReceive => true,
        };
        // The same words as the kernel's network guard under other engines.
        let allowed = match (allowed, usage) {
            (false, SocketAddrUse::TcpConnect | SocketAddrUse::UdpSend) => {
                notice::refused(&format!("host not allowed: {addr}"));
                false
            }
            (false, _) => {
                notice::refused(&format!("listen address not allowed: {addr}"));
                false
            }
            // A connection is a request; a datagram is not.
            (true, SocketAddrUse::TcpConnect) => request_cap::claim(),
            (true, _) => true,
        };
        Box::pin(async move { allowed })
    });
}
