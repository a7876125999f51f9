//! The annotations a pod or `ctr run --annotation` may set to tighten or open the sandbox.

/// Wall-time limit of the guest in milliseconds, counted from the task's Start.
pub const TIME_LIMIT_MS: &str = "wasm-shim/time-limit-ms";
/// Outbound connections the guest may make: `ADDR:PORTS,...` (see `network`).
pub const NET_CONNECT: &str = "wasm-shim/net-connect";
/// Addresses the guest may bind and listen on: `ADDR:PORTS,...`.
pub const NET_LISTEN: &str = "wasm-shim/net-listen";
/// `true` lets the guest resolve names (`wasi:sockets/ip-name-lookup`).
pub const NET_LOOKUP: &str = "wasm-shim/net-lookup";

/// Serve the module, a `wasi:http/proxy` component, on this TCP port of the container's
/// network: one fresh instance per request. Listening on it is implied (by the shim, not the
/// guest); no other network capability is.
pub const HTTP_PROXY_PORT: &str = "wasm-shim/http-proxy-port";

/// The wall time of one served request in milliseconds; past it the guest is stopped and the
/// client gets `504` (node default `WASM_SHIM_REQUEST_TIME_LIMIT_MS`, else 60 s).
pub const REQUEST_TIME_LIMIT_MS: &str = "wasm-shim/request-time-limit-ms";
/// Requests served at once (default 100); as many more wait, the rest get `503`.
pub const MAX_CONCURRENT_REQUESTS: &str = "wasm-shim/max-concurrent-requests";
/// Outgoing HTTP requests one incoming request may make.
pub const MAX_OUTGOING_REQUESTS: &str = "wasm-shim/max-outgoing-requests";
/// `true`: one line per served request on the container's stdout.
pub const ACCESS_LOG: &str = "wasm-shim/access-log";
/// A second port serving the server's metrics in Prometheus text format at `/metrics`.
pub const METRICS_PORT: &str = "wasm-shim/metrics-port";

/// A sandbox profile of the node, by name: only one at least as strict as the runtime
/// class's (or the node default's) is accepted.
pub const PROFILE: &str = "wasm-shim/profile";

/// Every annotation above, so that a misspelt one is an error rather than silently ignored.
pub const ALL: &[&str] = &[
    TIME_LIMIT_MS,
    NET_CONNECT,
    NET_LISTEN,
    NET_LOOKUP,
    HTTP_PROXY_PORT,
    REQUEST_TIME_LIMIT_MS,
    MAX_CONCURRENT_REQUESTS,
    MAX_OUTGOING_REQUESTS,
    ACCESS_LOG,
    METRICS_PORT,
    PROFILE,
];
/// The prefix the annotations above share.
pub const PREFIX: &str = "wasm-shim/";
