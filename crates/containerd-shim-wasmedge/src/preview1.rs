//! WASI preview 1 core modules: load the artifact, check it against the policy, instantiate it
//! beside WASI (and any plugin modules it imports), run it at Start.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;

use anyhow::{bail, Context, Result};
use wasm_shim_core::{GuestExit, LoadedArtifact, PreparedInstance, SandboxPolicy};
use wasmedge_sdk::error::{CoreCommonError, CoreError, WasmEdgeError};
use wasmedge_sdk::vm::SyncInst;
use wasmedge_sdk::wasi::WasiModule;
use wasmedge_sdk::{AsInstance, ExternalInstanceType, Instance, Module, Store, Vm, WasmValue};

use crate::inspect::Inspected;
use crate::plugins::{self, NodePlugins};
use crate::wasi::{self, WasiStrings, WASI_MODULE};

/// A module instance registered beside the guest for it to import from.
enum HostModule {
    Wasi(WasiModule),
    Plugin(Instance),
}

impl AsRef<Instance> for HostModule {
    fn as_ref(&self) -> &Instance {
        match self {
            HostModule::Wasi(w) => w.as_ref(),
            HostModule::Plugin(i) => i,
        }
    }
}

impl AsMut<Instance> for HostModule {
    fn as_mut(&mut self) -> &mut Instance {
        match self {
            HostModule::Wasi(w) => w.as_mut(),
            HostModule::Plugin(i) => i,
        }
    }
}

// `AsInstance` comes with `AsRef<Instance> + AsMut<Instance>`; a `Vm` holds any `SyncInst`.
impl SyncInst for HostModule {}

struct Prepared {
    /// Borrows the host modules for `'static`: they are leaked, see [`Loaded`]'s `instantiate`.
    vm: Vm<'static, HostModule>,
    entry: String,
    /// The page limit the guest runs under, for the memory-limit message.
    memory_pages: u64,
}

/// An artifact read and loaded (native code mapped, module validated), not yet instantiated.
///
/// The core loads while the instance process may still read the node's cache and the shim's
/// environment, then pins the preopens, takes the guest's identity and instantiates.
pub struct Loaded {
    module: Module,
    inspected: Inspected,
    node_plugins: NodePlugins,
}

/// Read and load an artifact from this node's cache.
pub fn load(artifact: &Path) -> Result<Loaded> {
    let bytes = std::fs::read(artifact)
        .with_context(|| format!("reading the compiled module {}", artifact.display()))?;
    // What the module imports from where, and the memories it declares.
    let inspected = crate::inspect::inspect(&bytes)?;
    // From memory: universal Wasm loads from bytes (see `engine`), and the SDK's `from_file`
    // would refuse the cache's `.bin` name. Maps the native code (AOT run mode) and validates.
    let module = Module::from_bytes(Some(&crate::engine::load_config()?), &bytes).map_err(|e| {
        crate::engine_log::error(format!("failed to load module {}", artifact.display()), e)
    })?;
    // The node's plugin settings, read now: instantiation may come after the instance process
    // has given up the rights to read them (see `plugins`). Only needed for plugin imports.
    let node_plugins = if inspected.imports.iter().any(|i| i.module != WASI_MODULE) {
        NodePlugins::from_env()
    } else {
        NodePlugins::default()
    };
    Ok(Loaded {
        module,
        inspected,
        node_plugins,
    })
}

impl LoadedArtifact for Loaded {
    /// WasmEdge 0.17 has no `wasi:http` (nor components): refused, which fails the Create.
    fn serve_http(
        self: Box<Self>,
        _policy: &SandboxPolicy,
        _listeners: wasm_shim_core::HttpListeners,
    ) -> Result<Box<dyn PreparedInstance>> {
        bail!(
            "wasi:http/proxy serving is not supported by the WasmEdge engine (annotation {}): {}",
            wasm_shim_core::policy::annotations::HTTP_PROXY_PORT,
            crate::engine::NO_WASI_HTTP
        )
    }

    /// Instantiate beside WASI (and the plugin modules it imports) under the policy, ready to
    /// run `entry_function` (else `_start`).
    fn instantiate(
        self: Box<Self>,
        policy: &SandboxPolicy,
        entry_function: Option<&str>,
    ) -> Result<Box<dyn PreparedInstance>> {
        let Loaded {
            module,
            inspected,
            node_plugins,
        } = *self;

        // WASI (standard functions only) and, otherwise, plugin modules.
        let mut other_modules = BTreeSet::new();
        let mut wasi_functions = Vec::new();
        for import in &inspected.imports {
            if import.module == WASI_MODULE {
                wasi_functions.push(import.name.as_str());
            } else {
                other_modules.insert(import.module.clone());
            }
        }
        wasi::check_wasi_imports(wasi_functions)?;

        let entry = entry_function_of(&module, entry_function)?;
        // A reactor initialises itself before any other export is called.
        let initialize = entry != "_start"
            && matches!(
                module.get_export("_initialize"),
                Some(ExternalInstanceType::Func(_))
            );

        let memory_pages = policy.limits.guest_memory_pages();
        let runtime = crate::memory::runtime_options(memory_pages, &inspected.memories)?;
        let config = crate::engine::runtime_config(runtime)?;

        let (guest_env, host_env) = plugins::split_env(&policy.env);
        // May set this process's environment: no other thread of the instance runs now.
        let plugin_instances = plugins::instances_for(&node_plugins, &host_env, &other_modules)?;

        for p in &policy.preopens {
            // `/proc/self/fd/N` by now (the core pins them). WasmEdge skips a preopen it
            // cannot open with only a log line; fail clearly instead.
            if !p.host_path.is_dir() {
                bail!(
                    "cannot preopen {} at {}: not a directory",
                    p.host_path.display(),
                    p.guest_path
                );
            }
        }
        let strings = WasiStrings::new(&policy.args, &guest_env, &policy.preopens)?;
        let wasi = WasiModule::create(
            Some(strings.args.iter().map(String::as_str).collect()),
            Some(strings.envs.iter().map(String::as_str).collect()),
            Some(strings.preopens.iter().map(String::as_str).collect()),
        )
        .context("creating the WASI module")?;

        // The store borrows its host modules for as long as the VM lives, which is as long
        // as this process: an instance process runs one guest and exits. Leaking them gives
        // that borrow a `'static` lifetime without any unsafe code.
        let mut hosts = vec![HostModule::Wasi(wasi)];
        hosts.extend(plugin_instances.into_iter().map(HostModule::Plugin));
        let hosts: &'static mut [HostModule] = Vec::leak(hosts);
        let mut registered: HashMap<String, &'static mut HostModule> = HashMap::new();
        for host in hosts.iter_mut() {
            let name = match host {
                HostModule::Wasi(_) => WASI_MODULE.to_string(),
                HostModule::Plugin(i) => i.name().context("a plugin module without a name")?,
            };
            registered.insert(name, host);
        }

        let store = Store::new(Some(&config), registered).context("creating the WasmEdge store")?;
        let mut vm = Vm::new(store);
        vm.register_module(None, module)
            .map_err(|e| crate::engine_log::error("instantiating the module", e))?;
        if initialize {
            vm.run_func(None, "_initialize", Vec::<WasmValue>::new())
                .map_err(|e| crate::engine_log::error("running the module's _initialize", e))?;
        }
        Ok(Box::new(Prepared {
            vm,
            entry,
            memory_pages: crate::memory::effective_pages(memory_pages),
        }))
    }
}

/// The export to run: the one asked for, else the command entry `_start`; it must take and
/// return nothing.
fn entry_function_of(module: &Module, requested: Option<&str>) -> Result<String> {
    let entry = match requested {
        Some(f) => f,
        None if module.get_export("_start").is_some() => "_start",
        None => bail!(
            "the module has no _start export (it is not a WASI command); name an export to run as MODULE.wasm#FUNCTION"
        ),
    };
    match module.get_export(entry) {
        Some(ExternalInstanceType::Func(ty)) if ty.args_len() == 0 && ty.returns_len() == 0 => {
            Ok(entry.to_string())
        }
        Some(ExternalInstanceType::Func(_)) => {
            bail!("export {entry:?} must take no parameters and return nothing")
        }
        Some(_) => bail!("export {entry:?} is not a function"),
        None => bail!("the module has no export named {entry:?}"),
    }
}

impl PreparedInstance for Prepared {
    fn run(mut self: Box<Self>) -> GuestExit {
        let result = self.vm.run_func(None, &self.entry, Vec::<WasmValue>::new());
        match result {
            Ok(_) => GuestExit::Exited(self.wasi_exit_code()),
            // WasmEdge reports `proc_exit` as success, with the code in the WASI module; be
            // ready for it to surface as `Terminated` too.
            Err(e) if is_terminated(&e) => GuestExit::Exited(self.wasi_exit_code()),
            // A trap after WasmEdge refused `memory.grow` at the page limit: the guest ran out
            // of its memory budget (a Rust guest aborts on a failed allocation).
            Err(e) if crate::engine_log::memory_limit_hit() => GuestExit::MemoryLimit(format!(
                "wasm trap: {e} (running {})\n{}",
                self.entry,
                wasm_shim_core::engine::out_of_memory(
                    self.memory_pages,
                    "; WasmEdge refused to grow linear memory past it"
                )
            )),
            Err(e) => GuestExit::Trapped(format!(
                "wasm trap: {e} (running {}){}",
                self.entry,
                crate::engine_log::reasons()
            )),
        }
    }
}

impl Prepared {
    /// `proc_exit`'s code, 0 when the entry returned without calling it.
    fn wasi_exit_code(&mut self) -> i32 {
        match self.vm.store_mut().get_instance_and_executor(WASI_MODULE) {
            // WASI's exit code is a u32; a process exit status is what the core wants, and it
            // keeps the low bits either way.
            Some((HostModule::Wasi(wasi), _)) => wasi.exit_code() as i32,
            _ => unreachable!("the WASI module is registered in instantiate"),
        }
    }
}

fn is_terminated(e: &WasmEdgeError) -> bool {
    matches!(
        e,
        WasmEdgeError::Core(CoreError::Common(CoreCommonError::Terminated))
    )
}
