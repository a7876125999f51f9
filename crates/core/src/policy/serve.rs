//! Serving `wasi:http/proxy`: the instance process listens on a port of the pod's network and
//! hands each request to a fresh instance of the guest's `wasi:http/incoming-handler`.
//!
//! The listening socket is the host's, never the guest's: the capability allows listening on
//! exactly this port, by the shim, and gives the guest no socket of its own (its WASI sockets
//! stay what the `wasm-shim/net-*` allowlists say).

use std::net::{Ipv4Addr, SocketAddr};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpServe {
    pub port: u16,
}

impl HttpServe {
    /// The annotation's value: a TCP port, 1 to 65535.
    pub fn parse(value: &str) -> Result<Self, String> {
        match value.trim().parse::<u16>() {
            Ok(port) if port > 0 => Ok(HttpServe { port }),
            _ => Err(format!("{value:?} is not a TCP port (1-65535)")),
        }
    }

    /// Every address of the container's network, as a Service or a probe reaches a pod.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, self.port))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_parse_and_bad_values_are_refused() {
        assert_eq!(HttpServe::parse("8080"), Ok(HttpServe { port: 8080 }));
        assert_eq!(HttpServe::parse(" 80 ").unwrap().port, 80);
        assert_eq!(
            HttpServe::parse("65535").unwrap().listen_addr(),
            "0.0.0.0:65535".parse().unwrap()
        );
        for bad in ["0", "65536", "-1", "http", "", "8080/tcp", "*:8080"] {
            let err = HttpServe::parse(bad).unwrap_err();
            assert!(err.contains("not a TCP port"), "{bad}: {err}");
        }
    }
}
