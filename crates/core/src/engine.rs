//! What an engine must provide: compile a module ahead of time, and run a compiled artifact
//! under a sandbox policy. Everything else (the spec, the bundle, stdio, the task lifecycle,
//! the cache) belongs to the core.

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
}

/// What an engine needs to instantiate a module.
pub struct InstanceRequest<'a> {
    /// The artifact this node compiled, from the cache.
    pub artifact: &'a Path,
    pub kind: ModuleKind,
    pub policy: &'a SandboxPolicy,
    /// Export to call instead of the command entry (`module.wasm#function`).
    pub entry_function: Option<&'a str>,
}

/// An instantiated guest waiting for the task's Start.
pub trait PreparedInstance {
    /// Run the guest to completion on the calling thread. Stdio is the process's fds 0, 1, 2,
    /// which the core has connected to the container's FIFOs.
    fn run(self: Box<Self>) -> GuestExit;
}

pub trait Engine: Sized + 'static {
    /// Short name used in logs, the runtime name and the cache key, e.g. `wasmtime`.
    const NAME: &'static str;

    fn new() -> anyhow::Result<Self>;

    /// Everything besides the module bytes that shapes the compiled code: engine version,
    /// codegen settings, target CPU features. Artifacts are only reused when it is equal.
    fn fingerprint(&self) -> String;

    /// Validate and compile a module or component to this engine's native artifact.
    fn precompile(&self, wasm: &[u8], kind: ModuleKind) -> anyhow::Result<Vec<u8>>;

    /// Load an artifact from the cache and instantiate it under the policy, ready to run.
    /// Fails for a module whose imports the engine cannot satisfy or whose start traps.
    fn prepare(&self, request: InstanceRequest<'_>) -> anyhow::Result<Box<dyn PreparedInstance>>;
}
