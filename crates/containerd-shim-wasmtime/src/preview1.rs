//! WASI preview 1 core modules.

use std::path::Path;

use wasm_shim_core::{GuestExit, LoadedArtifact, PreparedInstance, SandboxPolicy};
use wasmtime::error::Context;
use wasmtime::{bail, Instance, Linker, Module, Store};
use wasmtime_wasi::p1::{self, WasiP1Ctx};

use crate::limits::GuestLimiter;

struct Host {
    wasi: WasiP1Ctx,
    limiter: GuestLimiter,
}

struct Loaded {
    module: Module,
}

struct Prepared {
    store: Store<Host>,
    instance: Instance,
    entry: String,
}

pub fn load(
    engine: &wasmtime::Engine,
    artifact: &Path,
) -> wasmtime::Result<Box<dyn LoadedArtifact>> {
    // SAFETY: the artifact comes from this node's cache, produced by this engine build and
    // verified against its checksum by the core before the instance process started.
    let module = unsafe { Module::deserialize_file(engine, artifact) }
        .context("loading the compiled module")?;
    Ok(Box::new(Loaded { module }))
}

impl LoadedArtifact for Loaded {
    fn instantiate(
        self: Box<Self>,
        policy: &SandboxPolicy,
        entry_function: Option<&str>,
    ) -> anyhow::Result<Box<dyn PreparedInstance>> {
        Ok(instantiate(self.module, policy, entry_function)?)
    }

    fn serve_http(
        self: Box<Self>,
        _policy: &SandboxPolicy,
        _listeners: wasm_shim_core::HttpListeners,
    ) -> anyhow::Result<Box<dyn PreparedInstance>> {
        anyhow::bail!(
            "serving wasi:http/proxy needs a component that exports wasi:http/incoming-handler; this is a core module (WASI preview 1)"
        )
    }
}

fn instantiate(
    module: Module,
    policy: &SandboxPolicy,
    entry_function: Option<&str>,
) -> wasmtime::Result<Box<dyn PreparedInstance>> {
    let entry = match entry_function {
        Some(f) => f.to_string(),
        None if module.get_export("_start").is_some() => "_start".to_string(),
        None => bail!(
            "the module has no _start export (it is not a WASI command); name an export to run as MODULE.wasm#FUNCTION"
        ),
    };
    if module.get_export(&entry).is_none() {
        bail!("the module has no export named {entry:?}");
    }
    let engine = module.engine().clone();
    let mut linker: Linker<Host> = Linker::new(&engine);
    p1::add_to_linker_sync(&mut linker, |host| &mut host.wasi)?;
    let host = Host {
        wasi: crate::wasi_ctx::builder(policy)?.build_p1(),
        limiter: GuestLimiter::new(&policy.limits),
    };
    let mut store = Store::new(&engine, host);
    store.limiter(|host| &mut host.limiter);
    store.set_epoch_deadline(crate::engine::NO_DEADLINE);
    let instance = linker
        .instantiate(&mut store, &module)
        .context("instantiating the module")?;
    // A reactor initialises itself before any other export is called.
    if entry != "_start" {
        if let Some(init) = instance.get_func(&mut store, "_initialize") {
            init.typed::<(), ()>(&store)?.call(&mut store, ())?;
        }
    }
    instance
        .get_typed_func::<(), ()>(&mut store, &entry)
        .with_context(|| format!("export {entry:?} must take no parameters and return nothing"))?;
    Ok(Box::new(Prepared {
        store,
        instance,
        entry,
    }))
}

impl PreparedInstance for Prepared {
    fn run(mut self: Box<Self>) -> GuestExit {
        let func = self
            .instance
            .get_typed_func::<(), ()>(&mut self.store, &self.entry)
            .expect("checked in instantiate");
        match func.call(&mut self.store, ()) {
            Ok(()) => GuestExit::Exited(0),
            Err(e) => crate::wasi_ctx::exit_of(e, &self.store.data().limiter),
        }
    }
}
