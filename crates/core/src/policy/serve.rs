//! Serving `wasi:http/proxy`: the instance process listens on a port of the pod's network and
//! hands each request to a fresh instance of the guest's `wasi:http/incoming-handler`.
//!
//! The listening socket is the host's, never the guest's: the capability allows listening on
//! exactly this port, by the shim, and gives the guest no socket of its own (its WASI sockets
//! stay what the `wasm-shim/net-*` allowlists say). The server's own limits (per request time,
//! concurrency, outgoing requests) and its access log and metrics come from annotations too.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::annotations;

/// Requests served at once when the annotation does not say.
pub const DEFAULT_MAX_CONCURRENT: u32 = 100;
/// A request's wall time when neither the annotation nor the node says.
pub const DEFAULT_REQUEST_TIME_LIMIT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpServe {
    pub port: u16,
    /// Wall time of one request, from its arrival; past it the guest is stopped and the
    /// client gets `504`. Also bounds the drain at SIGTERM and the wait for a free slot.
    pub request_time_limit: Duration,
    /// Requests served at once; as many more wait (at most `request_time_limit`), and the
    /// rest get `503` at once.
    pub max_concurrent: u32,
    /// Outgoing HTTP requests one incoming request may make (`None`: no cap of its own).
    pub max_outgoing: Option<u32>,
    /// One line per request on the container's stdout.
    pub access_log: bool,
    /// A second port with the server's counters in Prometheus text format.
    pub metrics_port: Option<u16>,
}

/// The annotations that only mean something with `wasm-shim/http-proxy-port`.
const SERVING_ONLY: &[&str] = &[
    annotations::REQUEST_TIME_LIMIT_MS,
    annotations::MAX_CONCURRENT_REQUESTS,
    annotations::MAX_OUTGOING_REQUESTS,
    annotations::ACCESS_LOG,
    annotations::METRICS_PORT,
];

impl HttpServe {
    /// The serving settings of the annotations, or `None` when the container is not served.
    /// The error names the annotation and what is wrong with it.
    pub fn from_annotations(
        annotations: &HashMap<String, String>,
        node_request_time_limit: Option<Duration>,
    ) -> Result<Option<Self>, (&'static str, String)> {
        let Some(port) = annotations.get(annotations::HTTP_PROXY_PORT) else {
            return match SERVING_ONLY.iter().find(|a| annotations.contains_key(**a)) {
                Some(a) => Err((
                    a,
                    format!("only applies with {}", annotations::HTTP_PROXY_PORT),
                )),
                None => Ok(None),
            };
        };
        let get = |name: &'static str| annotations.get(name).map(|v| (name, v.trim()));
        let port = parse_port(port).map_err(|e| (annotations::HTTP_PROXY_PORT, e))?;
        let positive = |(name, v): (&'static str, &str)| match v.parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err((name, format!("{v:?} is not a positive number"))),
        };
        let request_time_limit = match get(annotations::REQUEST_TIME_LIMIT_MS) {
            Some(a) => Duration::from_millis(positive(a)?),
            None => node_request_time_limit.unwrap_or(DEFAULT_REQUEST_TIME_LIMIT),
        };
        let count = |a| {
            positive(a)
                .and_then(|n| u32::try_from(n).map_err(|_| (a.0, format!("{n} is too large"))))
        };
        let max_concurrent = get(annotations::MAX_CONCURRENT_REQUESTS)
            .map(count)
            .transpose()?
            .unwrap_or(DEFAULT_MAX_CONCURRENT);
        let max_outgoing = match get(annotations::MAX_OUTGOING_REQUESTS) {
            // 0 is meaningful here: no outgoing request at all.
            Some((name, v)) => Some(
                v.parse::<u32>()
                    .map_err(|_| (name, format!("{v:?} is not a number")))?,
            ),
            None => None,
        };
        let access_log = match get(annotations::ACCESS_LOG) {
            None | Some((_, "false")) => false,
            Some((_, "true")) => true,
            Some((name, v)) => return Err((name, format!("{v:?} is not true or false"))),
        };
        let metrics_port = get(annotations::METRICS_PORT)
            .map(|(name, v)| parse_port(v).map_err(|e| (name, e)))
            .transpose()?;
        if metrics_port == Some(port) {
            return Err((
                annotations::METRICS_PORT,
                format!("{port} is the port requests are served on"),
            ));
        }
        Ok(Some(HttpServe {
            port,
            request_time_limit,
            max_concurrent,
            max_outgoing,
            access_log,
            metrics_port,
        }))
    }

    /// Every address of the container's network, as a Service or a probe reaches a pod.
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::UNSPECIFIED, self.port))
    }

    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_port
            .map(|port| SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
    }
}

/// A TCP port, 1 to 65535.
fn parse_port(value: &str) -> Result<u16, String> {
    match value.trim().parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err(format!("{value:?} is not a TCP port (1-65535)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve(pairs: &[(&str, &str)]) -> Result<Option<HttpServe>, (&'static str, String)> {
        let map = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        HttpServe::from_annotations(&map, None)
    }

    #[test]
    fn ports_parse_and_bad_values_are_refused() {
        let s = serve(&[(annotations::HTTP_PROXY_PORT, " 80 ")])
            .unwrap()
            .unwrap();
        assert_eq!(s.port, 80);
        assert_eq!(s.listen_addr(), "0.0.0.0:80".parse().unwrap());
        for bad in ["0", "65536", "-1", "http", "", "8080/tcp", "*:8080"] {
            let (name, err) = serve(&[(annotations::HTTP_PROXY_PORT, bad)]).unwrap_err();
            assert_eq!(name, annotations::HTTP_PROXY_PORT);
            assert!(err.contains("not a TCP port"), "{bad}: {err}");
        }
    }

    #[test]
    fn defaults_and_every_setting() {
        let s = serve(&[(annotations::HTTP_PROXY_PORT, "8080")])
            .unwrap()
            .unwrap();
        assert_eq!(
            s,
            HttpServe {
                port: 8080,
                request_time_limit: DEFAULT_REQUEST_TIME_LIMIT,
                max_concurrent: DEFAULT_MAX_CONCURRENT,
                max_outgoing: None,
                access_log: false,
                metrics_port: None,
            }
        );
        let node = HttpServe::from_annotations(
            &[(annotations::HTTP_PROXY_PORT.to_string(), "8080".to_string())].into(),
            Some(Duration::from_millis(250)),
        );
        assert_eq!(
            node.unwrap().unwrap().request_time_limit,
            Duration::from_millis(250)
        );
        let s = serve(&[
            (annotations::HTTP_PROXY_PORT, "8080"),
            (annotations::REQUEST_TIME_LIMIT_MS, "1500"),
            (annotations::MAX_CONCURRENT_REQUESTS, "4"),
            (annotations::MAX_OUTGOING_REQUESTS, "0"),
            (annotations::ACCESS_LOG, "true"),
            (annotations::METRICS_PORT, "9090"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(s.request_time_limit, Duration::from_millis(1500));
        assert_eq!(
            (s.max_concurrent, s.max_outgoing, s.access_log),
            (4, Some(0), true)
        );
        assert_eq!(s.metrics_addr(), Some("0.0.0.0:9090".parse().unwrap()));
    }

    #[test]
    fn bad_settings_and_settings_without_serving_are_refused() {
        let with = |k, v| {
            serve(&[(annotations::HTTP_PROXY_PORT, "8080"), (k, v)])
                .unwrap_err()
                .0
        };
        assert_eq!(
            with(annotations::REQUEST_TIME_LIMIT_MS, "0"),
            annotations::REQUEST_TIME_LIMIT_MS
        );
        assert_eq!(
            with(annotations::MAX_CONCURRENT_REQUESTS, "x"),
            annotations::MAX_CONCURRENT_REQUESTS
        );
        assert_eq!(
            with(annotations::MAX_OUTGOING_REQUESTS, "-1"),
            annotations::MAX_OUTGOING_REQUESTS
        );
        assert_eq!(
            with(annotations::ACCESS_LOG, "yes"),
            annotations::ACCESS_LOG
        );
        assert_eq!(
            with(annotations::METRICS_PORT, "8080"),
            annotations::METRICS_PORT
        );
        let (name, why) = serve(&[(annotations::ACCESS_LOG, "true")]).unwrap_err();
        assert_eq!(name, annotations::ACCESS_LOG);
        assert!(why.contains("only applies with"), "{why}");
    }
}
