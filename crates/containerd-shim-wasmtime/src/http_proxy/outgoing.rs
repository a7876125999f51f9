//! `wasi:http/outgoing-handler` for served components: plain HTTP/1.1 to addresses the
//! container's network allowlist (`wasm-shim/net-connect`, a profile's `allowed_hosts`)
//! allows, counted against the container's request cap and the per-request cap
//! (`wasm-shim/max-outgoing-requests`), bounded by the request's own time limit.
//!
//! The shim connects to the very address it checked (no second lookup to rebind). A refused
//! request fails with `HTTP-request-denied` and the log (and the container's stderr) says
//! `host not allowed: HOST:PORT`. `https` is refused loudly: the shim carries no TLS stack.

use std::future::Future;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use wasm_shim_core::instance::{notice, request_cap};
use wasm_shim_core::policy::NetworkPolicy;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

pub struct Outgoing {
    network: Arc<NetworkPolicy>,
    /// Outgoing requests this incoming request may make (`None`: no cap), and has made.
    max: Option<u32>,
    made: u32,
    deadline: Instant,
}

impl Outgoing {
    pub fn new(network: Arc<NetworkPolicy>, max: Option<u32>, deadline: Instant) -> Self {
        Outgoing {
            network,
            max,
            made: 0,
            deadline,
        }
    }
}

type Sent = (
    http::Response<WasiBody>,
    Box<dyn Future<Output = Result<(), Error>> + Send>,
);

impl WasiHttpHooks for Outgoing {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = wasmtime_wasi_http::Result<Sent>> + Send> {
        if let Some(max) = self.max.filter(|max| self.made >= *max) {
            notice::refused(&format!(
                "outgoing request limit of {max} per request reached"
            ));
            return Box::new(async { Err(Error::HttpRequestDenied) });
        }
        self.made += 1;
        let network = self.network.clone();
        let deadline = self.deadline;
        Box::new(async move { send(request, &network, options, deadline).await })
    }
}

async fn send(
    mut request: http::Request<WasiBody>,
    network: &NetworkPolicy,
    options: Option<RequestOptions>,
    deadline: Instant,
) -> wasmtime_wasi_http::Result<Sent> {
    let uri = request.uri().clone();
    let authority = uri.authority().ok_or(Error::HttpRequestUriInvalid)?;
    if uri.scheme() == Some(&http::uri::Scheme::HTTPS) {
        notice::refused(&format!(
            "https not supported for outgoing requests of served components: {uri}"
        ));
        return Err(Error::HttpProtocolError);
    }
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let port = authority.port_u16().unwrap_or(80);
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host((host, port))
        .await
        .map_err(|_| Error::DestinationNotFound)?
        .collect();
    let Some(&addr) = addrs.iter().find(|a| network.allows_connect(**a)) else {
        notice::refused(&format!("host not allowed: {host}:{port}"));
        return Err(Error::HttpRequestDenied);
    };
    if !request_cap::claim() {
        return Err(Error::HttpRequestDenied);
    }
    let left = || deadline.saturating_duration_since(Instant::now());
    let within = |limit: Option<Duration>| limit.map_or(left(), |l| l.min(left()));

    let connect = tokio::time::timeout(
        within(options.and_then(|o| o.connect_timeout)),
        tokio::net::TcpStream::connect(addr),
    );
    let stream = match connect.await {
        Err(_) => return Err(Error::ConnectionTimeout),
        Ok(Err(e)) if e.kind() == ErrorKind::ConnectionRefused => {
            return Err(Error::ConnectionRefused)
        }
        Ok(Err(e)) => return Err(Error::Connect(e)),
        Ok(Ok(stream)) => stream,
    };
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(Error::from)?;
    let driver = tokio::spawn(connection);
    // On the wire the request names its path only; the authority is in the Host header.
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| Error::HttpRequestUriInvalid)?;
    let response = tokio::time::timeout(
        within(options.and_then(|o| o.first_byte_timeout)),
        sender.send_request(request),
    )
    .await
    .map_err(|_| Error::ConnectionReadTimeout)?
    .map_err(Error::from)?;
    let response = response.map(|body| body.map_err(Error::from).boxed_unsync());
    let io = async move {
        match driver.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(Error::from(e)),
            Err(_) => Err(Error::ConnectionTerminated),
        }
    };
    Ok((response, Box::new(io)))
}
