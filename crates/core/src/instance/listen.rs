//! The sockets a `wasi:http/proxy` guest is served on: the requests' port and, when asked,
//! the metrics port. The core binds them, in the container's network and before the process
//! takes the container's user, so that a bind failure is the same clear error for every
//! engine and a port below 1024 works whatever `process.user` is (the annotations name the
//! ports; the guest never holds a socket).

use std::net::{SocketAddr, TcpListener};

use crate::engine::HttpListeners;
use crate::error::{IoContext, Result};
use crate::policy::{annotations, HttpServe};

pub fn bind(serve: &HttpServe) -> Result<HttpListeners> {
    let listen = |addr: SocketAddr, annotation: &str, what: &str| {
        TcpListener::bind(addr).io_context(|| {
            format!("cannot listen on {addr} to serve {what} (annotation {annotation})")
        })
    };
    Ok(HttpListeners {
        requests: listen(
            serve.listen_addr(),
            annotations::HTTP_PROXY_PORT,
            "wasi:http/proxy",
        )?,
        metrics: serve
            .metrics_addr()
            .map(|addr| listen(addr, annotations::METRICS_PORT, "metrics"))
            .transpose()?,
    })
}
