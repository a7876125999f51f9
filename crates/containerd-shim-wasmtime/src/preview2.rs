//! WASI preview 2 command components.

use wasm_shim_core::{GuestExit, InstanceRequest, PreparedInstance};
use wasmtime::bail;
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::error::Context;
use wasmtime::Store;
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

struct Host {
    ctx: WasiCtx,
    table: ResourceTable,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

struct Prepared {
    store: Store<Host>,
    command: Command,
}

pub fn prepare(
    engine: &wasmtime::Engine,
    req: &InstanceRequest<'_>,
) -> wasmtime::Result<Box<dyn PreparedInstance>> {
    if let Some(f) = req.entry_function {
        bail!("#{f}: choosing an export is supported for core modules only; a component runs wasi:cli/run");
    }
    // SAFETY: as for core modules, the artifact is this node's own, checksum-verified.
    let component = unsafe { Component::deserialize_file(engine, req.artifact) }
        .context("loading the compiled component")?;
    let mut linker: Linker<Host> = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    let host = Host {
        ctx: crate::wasi_ctx::builder(req.policy)?.build(),
        table: ResourceTable::new(),
    };
    let mut store = Store::new(engine, host);
    let command = Command::instantiate(&mut store, &component, &linker)
        .context("instantiating the component (is it a wasi:cli/command?)")?;
    Ok(Box::new(Prepared { store, command }))
}

impl PreparedInstance for Prepared {
    fn run(mut self: Box<Self>) -> GuestExit {
        match self.command.wasi_cli_run().call_run(&mut self.store) {
            Ok(Ok(())) => GuestExit::Exited(0),
            Ok(Err(())) => GuestExit::Exited(1),
            Err(e) => crate::wasi_ctx::exit_of(e),
        }
    }
}
