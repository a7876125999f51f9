//! What an engine must provide: compile a module ahead of time, and run a compiled artifact
//! under a sandbox policy. Everything else (the spec, the bundle, stdio, the task lifecycle,
//! the cache) belongs to the core.

use std::net::TcpListener;
use std::path::Path;

use crate::policy::SandboxPolicy;
use crate::source::ModuleKind;

/// How a guest's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuestExit {
    /// `proc_exit(code)`, a command's `main` returning, or `wasi:cli/exit`.
    Exited(i32),
    /// The guest trapped; the message says where and why.
    Trapped(String),
    /// The guest failed (trapped) after the memory limit refused it linear memory: what
    /// the kernel's OOM killer is to a native process.
    MemoryLimit(String),
}

/// The words of a guest stopped at its memory limit, the same under every engine:
/// `out of memory: memory page limit of N pages (M MiB) reached`, then the engine's detail.
pub fn out_of_memory(limit_pages: u64, detail: &str) -> String {
    format!(
        "out of memory: memory page limit of {limit_pages} pages ({} MiB) reached{detail}",
        (limit_pages * crate::policy::WASM_PAGE) >> 20
    )
}

/// A compiled artifact mapped into the instance process, not yet instantiated.
pub trait LoadedArtifact {
    /// Instantiate under the policy (preopens, env, args, limits, network), ready to run.
    /// Fails for a module whose imports the engine cannot satisfy or whose start traps.
    /// Preopens in the policy are `/proc/self/fd/N` paths by then; open them as given.
    fn instantiate(
        self: Box<Self>,
        policy: &SandboxPolicy,
        entry_function: Option<&str>,
    ) -> anyhow::Result<Box<dyn PreparedInstance>>;

    /// Prepare to serve the module as a `wasi:http/proxy` component on `listeners` (bound by
    /// the core, in the container's network; settings in `policy.http_serve`): check that it
    /// exports `wasi:http/incoming-handler` and pre-instantiate it. Each request then gets a
    /// fresh instance under the policy. `run` serves until SIGTERM, then drains. An engine
    /// that cannot serve says so here, which fails the container's Create.
    fn serve_http(
        self: Box<Self>,
        policy: &SandboxPolicy,
        listeners: HttpListeners,
    ) -> anyhow::Result<Box<dyn PreparedInstance>>;
}

/// The sockets a served component is reached on.
pub struct HttpListeners {
    pub requests: TcpListener,
    /// `/metrics`, when the annotation `wasm-shim/metrics-port` asks for it.
    pub metrics: Option<TcpListener>,
}

/// An instantiated guest waiting for the task's Start.
pub trait PreparedInstance {
    /// Run the guest to completion on the calling thread (a server: until the process is
    /// stopped). Stdio is the process's fds 0, 1, 2, which the core has connected to the
    /// container's FIFOs.
    fn run(self: Box<Self>) -> GuestExit;
}

/// What a Wasm container may need beyond a WASI preview 1 core module, which every engine
/// runs. An engine declares what it lacks ([`Engine::LACKS`]) and refuses such a container at
/// Create with a clear error; `containerd-shim-<engine>-v1 capabilities` prints the list, so
/// that tooling (and the end-to-end suites) can tell "cannot" from "broken".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Capability {
    /// WASI preview 2 components (`wasi:cli/command`).
    Components,
    /// Serving `wasi:http/proxy` components (annotation `wasm-shim/http-proxy-port`).
    WasiHttp,
    /// TCP/UDP sockets for the guest, under the `wasm-shim/net-*` allowlists.
    Sockets,
}

impl Capability {
    pub const ALL: [Capability; 3] = [
        Capability::Components,
        Capability::WasiHttp,
        Capability::Sockets,
    ];

    /// The name `capabilities` prints and the e2e suites ask for.
    pub fn name(self) -> &'static str {
        match self {
            Capability::Components => "components",
            Capability::WasiHttp => "wasi-http",
            Capability::Sockets => "sockets",
        }
    }
}

pub trait Engine: Sized + 'static {
    /// Short name used in logs, the runtime name and the cache key, e.g. `wasmtime`.
    const NAME: &'static str;

    /// The capabilities this engine cannot offer, each with the reason an operator is told.
    const LACKS: &'static [(Capability, &'static str)] = &[];

    /// Whether the engine checks every socket address its guests use against the policy's
    /// allowlists itself (Wasmtime's WASI sockets have a hook for it). If not, the core has
    /// the kernel check them ([`crate::instance`]'s network guard). A guest with no network
    /// gets the kernel's refusal under every engine.
    const CHECKS_SOCKET_ADDRESSES: bool = false;

    /// Variables of the node's environment (besides `WASM_SHIM_*` and `RUST_LOG`) that
    /// instance processes keep; everything else is cleared.
    const NODE_ENV: &'static [&'static str] = &[];

    fn new() -> anyhow::Result<Self>;

    /// Everything besides the module bytes that shapes the compiled code: engine version,
    /// codegen settings, target CPU features. Artifacts are only reused when it is equal.
    fn fingerprint(&self) -> String;

    /// Validate and compile a module or component to this engine's native artifact.
    fn precompile(&self, wasm: &[u8], kind: ModuleKind) -> anyhow::Result<Vec<u8>>;

    /// Map an artifact from this node's cache (checksum-verified by the core). Called while
    /// the instance process still has the rights to read the cache; instantiation comes
    /// after it has taken the guest's identity.
    fn load(&self, artifact: &Path, kind: ModuleKind) -> anyhow::Result<Box<dyn LoadedArtifact>>;
}
