//! WASI preview 1 core modules.

use wasm_shim_core::{GuestExit, InstanceRequest, PreparedInstance};
use wasmtime::bail;
use wasmtime::error::Context;
use wasmtime::{Instance, Linker, Module, Store};
use wasmtime_wasi::p1::{self, WasiP1Ctx};

struct Prepared {
    store: Store<WasiP1Ctx>,
    instance: Instance,
    entry: String,
}

pub fn prepare(
    engine: &wasmtime::Engine,
    req: &InstanceRequest<'_>,
) -> wasmtime::Result<Box<dyn PreparedInstance>> {
    // SAFETY: the artifact comes from this node's cache, produced by this engine build and
    // verified against its checksum by the core before the instance was started.
    let module = unsafe { Module::deserialize_file(engine, req.artifact) }
        .context("loading the compiled module")?;
    let entry = match req.entry_function {
        Some(f) => f.to_string(),
        None if module.get_export("_start").is_some() => "_start".to_string(),
        None => bail!(
            "the module has no _start export (it is not a WASI command); name an export to run as MODULE.wasm#FUNCTION"
        ),
    };
    if module.get_export(&entry).is_none() {
        bail!("the module has no export named {entry:?}");
    }
    let mut linker: Linker<WasiP1Ctx> = Linker::new(engine);
    p1::add_to_linker_sync(&mut linker, |ctx| ctx)?;
    let wasi = crate::wasi_ctx::builder(req.policy)?.build_p1();
    let mut store = Store::new(engine, wasi);
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
            .expect("checked in prepare");
        match func.call(&mut self.store, ()) {
            Ok(()) => GuestExit::Exited(0),
            Err(e) => crate::wasi_ctx::exit_of(e),
        }
    }
}
