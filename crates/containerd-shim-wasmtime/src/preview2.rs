//! WASI preview 2 command components (and the loaded component that `http_proxy` serves).

use std::path::Path;

use wasm_shim_core::{GuestExit, LoadedArtifact, PreparedInstance, SandboxPolicy};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::error::Context;
use wasmtime::{bail, Store};
use wasmtime_wasi::p2::bindings::sync::Command;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use crate::limits::GuestLimiter;

struct Host {
    ctx: WasiCtx,
    table: ResourceTable,
    limiter: GuestLimiter,
}

impl WasiView for Host {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.ctx,
            table: &mut self.table,
        }
    }
}

struct Loaded {
    component: Component,
    /// The server loads it again into its own (pooling) engine.
    artifact: std::path::PathBuf,
}

struct Prepared {
    store: Store<Host>,
    command: Command,
}

pub fn load(
    engine: &wasmtime::Engine,
    artifact: &Path,
) -> wasmtime::Result<Box<dyn LoadedArtifact>> {
    // SAFETY: as for core modules, the artifact is this node's own, checksum-verified.
    let component = unsafe { Component::deserialize_file(engine, artifact) }
        .context("loading the compiled component")?;
    Ok(Box::new(Loaded {
        component,
        artifact: artifact.to_path_buf(),
    }))
}

impl LoadedArtifact for Loaded {
    fn instantiate(
        self: Box<Self>,
        policy: &SandboxPolicy,
        entry_function: Option<&str>,
    ) -> anyhow::Result<Box<dyn PreparedInstance>> {
        Ok(instantiate(self.component, policy, entry_function)?)
    }

    fn serve_http(
        self: Box<Self>,
        policy: &SandboxPolicy,
        listeners: wasm_shim_core::HttpListeners,
    ) -> anyhow::Result<Box<dyn PreparedInstance>> {
        Ok(crate::http_proxy::prepare(
            &self.component,
            &self.artifact,
            policy,
            listeners,
        )?)
    }
}

fn instantiate(
    component: Component,
    policy: &SandboxPolicy,
    entry_function: Option<&str>,
) -> wasmtime::Result<Box<dyn PreparedInstance>> {
    if let Some(f) = entry_function {
        bail!("#{f}: choosing an export is supported for core modules only; a component runs wasi:cli/run");
    }
    let engine = component.engine().clone();
    let mut linker: Linker<Host> = Linker::new(&engine);
    wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
    let host = Host {
        ctx: crate::wasi_ctx::builder(policy)?.build(),
        table: ResourceTable::new(),
        limiter: GuestLimiter::new(&policy.limits),
    };
    let mut store = Store::new(&engine, host);
    store.limiter(|host| &mut host.limiter);
    store.set_epoch_deadline(crate::engine::NO_DEADLINE);
    let command = Command::instantiate(&mut store, &component, &linker)
        .context("instantiating the component (is it a wasi:cli/command?)")?;
    Ok(Box::new(Prepared { store, command }))
}

impl PreparedInstance for Prepared {
    fn run(mut self: Box<Self>) -> GuestExit {
        match self.command.wasi_cli_run().call_run(&mut self.store) {
            Ok(Ok(())) => GuestExit::Exited(0),
            Ok(Err(())) => GuestExit::Exited(1),
            Err(e) => crate::wasi_ctx::exit_of(e, &self.store.data().limiter),
        }
    }
}
