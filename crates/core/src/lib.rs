//! The engine-agnostic core of the containerd Wasm shims.
//!
//! A Wasm container, step by step:
//! 1. [`bundle`]: the OCI bundle containerd hands over;
//! 2. [`policy`]: the sandbox policy derived from its spec alone (preopens, env, args, cwd);
//! 3. [`source`]: the module the entrypoint names, read through the policy, or else
//!    [`image_layers`]: the Wasm layer of the container's image, from containerd's content store;
//! 4. [`artifact`]: native code compiled once per node and cached;
//! 5. [`instance`]: a process that enters the container's [`placement`] (cgroup, network
//!    namespace), loads the artifact and runs the guest under the policy.
//!
//! [`task`] is the containerd runtime v2 task service that drives these steps; [`engine`] is
//! all an engine implements; [`shim`] is the binary's entry point.

pub mod artifact;
pub mod audit;
pub mod bundle;
mod changed;
pub mod config;
pub mod engine;
pub mod error;
pub mod image_layers;
pub mod image_rootfs;
pub mod instance;
pub mod placement;
pub mod policy;
pub mod precompile;
pub mod runtime_options;
pub mod sandbox;
mod server;
pub mod shim;
mod shim_log;
pub mod source;
pub mod task;

pub use engine::{Capability, Engine, GuestExit, HttpListeners, LoadedArtifact, PreparedInstance};
pub use error::{Error, Result};
pub use policy::{Access, Preopen, SandboxPolicy};
pub use source::ModuleKind;
