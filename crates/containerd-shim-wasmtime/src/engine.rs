//! How Wasmtime compiles and runs; everything else comes from the core.

use std::hash::Hash;

use sha2_hasher::Sha256Hasher;
use std::path::Path;

use wasm_shim_core::{Engine, LoadedArtifact, ModuleKind};
use wasmtime::error::Context;
use wasmtime::{Config, OptLevel};

pub struct WasmtimeEngine {
    engine: wasmtime::Engine,
}

impl Engine for WasmtimeEngine {
    const NAME: &'static str = "wasmtime";
    // WASI sockets ask `network::apply`'s check for every address.
    const CHECKS_SOCKET_ADDRESSES: bool = true;

    fn new() -> anyhow::Result<Self> {
        let mut config = Config::new();
        config
            .cranelift_opt_level(OptLevel::Speed)
            .wasm_component_model(true)
            // Artifacts are loaded from the node cache by path and mapped, not copied.
            .parallel_compilation(true);
        let engine = wasmtime::Engine::new(&config).context("configuring Wasmtime")?;
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
