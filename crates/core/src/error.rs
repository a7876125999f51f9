//! Typed errors of the core. Each names what was wrong in terms a containerd user can act on;
//! the task service turns them into ttrpc statuses that `ctr` and kubelet print.

use std::path::PathBuf;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The bundle's `config.json` is missing, unreadable or not an OCI runtime spec.
    #[error("invalid bundle {path}: {reason}")]
    Bundle { path: PathBuf, reason: String },

    /// A field of the OCI spec (or an annotation) has a value the sandbox cannot honour.
    #[error("invalid spec field `{field}`: {reason}")]
    Spec { field: String, reason: String },

    /// The entrypoint does not name a Wasm module the container can reach.
    #[error("entrypoint {path}: {reason}")]
    Entrypoint { path: String, reason: String },

    /// The image does not hold a module the container can run as a Wasm layer.
    #[error("image {image}: {reason}")]
    Image { image: String, reason: String },

    /// containerd's API, asked for the container's image, did not answer as expected.
    #[error("containerd at {address}: {reason}")]
    Containerd { address: String, reason: String },

    /// The file is not WebAssembly at all (no `\0asm` magic) or is empty.
    #[error("{path} is not a WebAssembly module: {reason}")]
    NotWasm { path: String, reason: String },

    /// The engine rejected or failed on the module.
    #[error("{0:#}")]
    Engine(anyhow::Error),

    /// The container's cgroup could not be created, joined, read or removed.
    #[error("{0}")]
    Cgroup(String),

    /// The node's artifact cache could not be used.
    #[error("artifact cache: {0}")]
    Cache(String),

    /// A native (non-Wasm) container could not be run by libcontainer.
    #[error("native container: {context}: {reason}")]
    Native { context: String, reason: String },

    /// A sandbox profile file is missing or malformed; the reason names the key.
    #[error("sandbox profile {file}: {reason}")]
    Profile { file: PathBuf, reason: String },

    /// The container asks for more than its sandbox profile grants. The message starts with
    /// the words operators search for (`permission denied: ...`, `host not allowed: ...`).
    #[error("{0}")]
    Denied(String),

    /// The request is valid but this shim does not support it (answered `UNIMPLEMENTED`).
    #[error("{0}")]
    Unsupported(String),

    /// The cause is in the message and not a `source`: a chain printed with `{:#}` would
    /// say it twice.
    #[error("{context}: {cause}")]
    Io {
        context: String,
        cause: std::io::Error,
    },
}

impl Error {
    pub fn spec(field: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::Spec {
            field: field.into(),
            reason: reason.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Attach a context sentence to an io::Error.
pub(crate) trait IoContext<T> {
    fn io_context(self, context: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn io_context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|cause| Error::Io {
            context: context(),
            cause,
        })
    }
}

impl<T> IoContext<T> for nix::Result<T> {
    fn io_context(self, context: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|errno| Error::Io {
            context: context(),
            cause: std::io::Error::from(errno),
        })
    }
}
