//! The socket a `wasi:http/proxy` guest is served on. The core binds it, in the container's
//! network and before the process takes the container's user, so that a bind failure is the
//! same clear error for every engine and a port below 1024 works whatever `process.user` is
//! (the annotation names the port; the guest never holds the socket).

use std::net::TcpListener;

use crate::error::{IoContext, Result};
use crate::policy::{annotations, HttpServe};

pub fn bind(serve: &HttpServe) -> Result<TcpListener> {
    let addr = serve.listen_addr();
    TcpListener::bind(addr).io_context(|| {
        format!(
            "cannot listen on {addr} to serve wasi:http/proxy (annotation {})",
            annotations::HTTP_PROXY_PORT
        )
    })
}
