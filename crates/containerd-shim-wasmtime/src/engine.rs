//! How Wasmtime compiles and runs; everything else comes from the core.

use std::hash::Hash;

use sha2_hasher::Sha256Hasher;
use std::path::Path;

use wasm_shim_core::{Engine, LoadedArtifact, ModuleKind};
use wasmtime::error::Context;
use wasmtime::{Config, OptLevel};

/// What compiled code depends on, shared by the engine that compiles and every engine that
/// loads the artifact (the HTTP server's adds a pooling allocator, which code does not see).
pub fn config() -> Config {
    let mut config = Config::new();
    config
        .cranelift_opt_level(OptLevel::Speed)
        .wasm_component_model(true)
        // Served requests are stopped at their time limit by epoch interruption, which the
        // code must check for; a command never sees the epoch move (`NO_DEADLINE`).
        .epoch_interruption(true)
        .parallel_compilation(true);
    config
}

/// The epoch deadline of a store that has none (commands: their time limit is the core's
/// watchdog). Far beyond any epoch: nothing increments the epoch of a command's engine.
pub const NO_DEADLINE: u64 = u64::MAX / 2;

pub struct WasmtimeEngine {
    engine: wasmtime::Engine,
}

impl Engine for WasmtimeEngine {
    const NAME: &'static str = "wasmtime";
    // WASI sockets ask `network::apply`'s check for every address.
    const CHECKS_SOCKET_ADDRESSES: bool = true;

    fn new() -> anyhow::Result<Self> {
        let engine = wasmtime::Engine::new(&config()).context("configuring Wasmtime")?;
        Ok(WasmtimeEngine { engine })
    }

    fn fingerprint(&self) -> String {
        // Wasmtime's own notion of "artifacts are interchangeable": version, target triple,
        // CPU feature flags, tunables and enabled proposals.
        let mut h = Sha256Hasher::default();
        self.engine.precompile_compatibility_hash().hash(&mut h);
        format!("wasmtime/{}", h.hex())
    }

    fn precompile(&self, wasm: &[u8], kind: ModuleKind) -> anyhow::Result<Vec<u8>> {
        match kind {
            ModuleKind::Module => self.engine.precompile_module(wasm),
            ModuleKind::Component => self.engine.precompile_component(wasm),
        }
        .context("compiling the module")
        .map_err(Into::into)
    }

    fn load(&self, artifact: &Path, kind: ModuleKind) -> anyhow::Result<Box<dyn LoadedArtifact>> {
        match kind {
            ModuleKind::Module => crate::preview1::load(&self.engine, artifact),
            ModuleKind::Component => crate::preview2::load(&self.engine, artifact),
        }
        .map_err(Into::into)
    }
}

mod sha2_hasher {
    use sha2::{Digest, Sha256};

    /// A `Hasher` feeding SHA-256, so the fingerprint does not depend on std's hasher.
    #[derive(Default)]
    pub struct Sha256Hasher(Sha256);

    impl Sha256Hasher {
        pub fn hex(self) -> String {
            hex::encode(self.0.finalize())
        }
    }

    impl std::hash::Hasher for Sha256Hasher {
        fn write(&mut self, bytes: &[u8]) {
            self.0.update(bytes);
        }

        fn finish(&self) -> u64 {
            let digest = self.0.clone().finalize();
            u64::from_le_bytes(digest[..8].try_into().expect("8 bytes"))
        }
    }
}
