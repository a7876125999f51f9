//! The shim binary: containerd's `start` / `delete` actions and the ttrpc server, plus the
//! subcommands the server runs itself as (`zygote`, `compile-artifact`, the native helper)
//! and the node commands `compile` (fill the node cache), `policy` (print a container's
//! sandbox) and `capabilities`.
//!
//! One server serves all the Wasm pods of a node (per runtime and containerd namespace;
//! `WASM_SHIM_SHIMS_PER_NODE` splits them by pod): `start` returns the running server's
//! address, and the server outlives its last container by [`LINGER`], so a pod that comes
//! right after finds it.

use std::io::Read;
use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use containerd_shim::api::DeleteResponse;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{Config, ExitSignal, Flags, StartOpts};

use crate::artifact::ArtifactCache;
use crate::config::NodeConfig;
use crate::engine::{Capability, Engine};
use crate::image_layers::Containerd;
use crate::task::{compile, native, Compiler, TaskService};
use crate::{audit, instance, precompile, shim_log};

/// CRI groups a pod's containers under one shim with this annotation.
const SANDBOX_ID_ANNOTATION: &str = "io.kubernetes.cri.sandbox-id";
/// The instance's pid and start time, for `delete` after a shim crash.
pub const PID_FILE: &str = "instance.pid";
/// How long a server with no containers left waits for another before it exits.
pub const LINGER: std::time::Duration = std::time::Duration::from_secs(2);

/// Run the shim binary of engine `E`; `runtime_id` is e.g. `io.containerd.wasmtime.v1`.
pub fn main<E: Engine>(runtime_id: &str) {
    let args: Vec<String> = std::env::args().collect();
    let node = NodeConfig::from_env();
    let code = match args.get(1).map(String::as_str) {
        Some(instance::zygote::SUBCOMMAND) => instance::zygote::main::<E>(node.log_level),
        Some(compile::SUBCOMMAND) => {
            // The shim's log, as for an instance: what the engine says while compiling.
            shim_log::init_fifo_logger(node.log_level);
            compile_artifact::<E>(&args[2..])
        }
        Some(native::SUBCOMMAND) => {
            shim_log::init_fifo_logger(node.log_level);
            native::helper_main(&args[2..])
        }
        Some(precompile::SUBCOMMAND) => precompile::main::<E>(&node, &args[2..]),
        Some(audit::SUBCOMMAND) => audit::main(&node, &args[2..]),
        Some("--version") | Some("version") => {
            println!("{} {} ({})", runtime_id, env!("CARGO_PKG_VERSION"), E::NAME);
            0
        }
        Some("capabilities") => {
            println!("{}", capabilities::<E>());
            0
        }
        _ => {
            let config = Config {
                // The crate's logger writes a line in several writes, which containerd's log
                // interleaves with other shims' lines; ours writes each line at once (set up
                // in `create_task_service`, for the server only).
                no_setup_logger: true,
                default_log_level: node.log_level.to_string().to_lowercase(),
                ..Default::default()
            };
            let args_os: Vec<std::ffi::OsString> = std::env::args_os().collect();
            match containerd_shim::parse(&args_os[1..]) {
                // No action: the server (ours, with the Sandbox service beside the Task one).
                Ok(flags) if flags.action.is_empty() => {
                    crate::server::run::<E>(runtime_id, flags, config)
                }
                // `start` and `delete`, through containerd-shim.
                _ => {
                    containerd_shim::run::<WasmShim<E>>(runtime_id, Some(config));
                    0
                }
            }
        }
    };
    std::process::exit(code);
}

/// What the engine offers, as JSON: `{"engine": NAME, "capabilities": {CAP: true|false},
/// "lacks": {CAP: REASON}}`.
fn capabilities<E: Engine>() -> serde_json::Value {
    let has = |c: Capability| !E::LACKS.iter().any(|(l, _)| *l == c);
    serde_json::json!({
        "engine": E::NAME,
        "capabilities": Capability::ALL
            .iter()
            .map(|&c| (c.name().to_string(), has(c).into()))
            .collect::<serde_json::Map<_, _>>(),
        "lacks": E::LACKS
            .iter()
            .map(|&(c, why)| (c.name().to_string(), why.into()))
            .collect::<serde_json::Map<_, _>>(),
    })
}

/// `compile-artifact --kind K --out PATH`: module on stdin, artifact to PATH.
fn compile_artifact<E: Engine>(args: &[String]) -> i32 {
    let (Some(kind), Some(out)) = (flag(args, "--kind"), flag(args, "--out")) else {
        eprintln!(
            "usage: {} --kind module|component --out PATH < module.wasm",
            compile::SUBCOMMAND
        );
        return 2;
    };
    let Some(kind) = compile::parse_kind(kind) else {
        eprintln!("unknown module kind {kind}");
        return 2;
    };
    let mut wasm = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut wasm) {
        eprintln!("reading the module: {e}");
        return 1;
    }
    let result = E::new()
        .and_then(|engine| engine.precompile(&wasm, kind))
        .and_then(|artifact| std::fs::write(out, artifact).map_err(Into::into));
    match result {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("{e:#}");
            1
        }
    }
}

fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .map(String::as_str)
}

pub struct WasmShim<E> {
    namespace: String,
    /// The container id containerd started (or deletes) this shim for.
    id: String,
    /// containerd's gRPC socket, for reading Wasm layers from its content store.
    address: String,
    /// The ttrpc socket this server listens on (`unix:///run/containerd/s/...`).
    socket: String,
    exit: Arc<ExitSignal>,
    /// Pods whose sandbox this shim holds (containerd 2.x), shared by both services.
    pods: Arc<crate::sandbox::Pods>,
    engine: PhantomData<fn() -> E>,
}

impl<E> WasmShim<E> {
    pub fn pods(&self) -> Arc<crate::sandbox::Pods> {
        self.pods.clone()
    }
}

impl<E: Engine> containerd_shim::Shim for WasmShim<E> {
    type T = TaskService;

    fn new(_runtime_id: &str, args: &Flags, _config: &mut Config) -> Self {
        WasmShim {
            namespace: args.namespace.clone(),
            id: args.id.clone(),
            address: args.address.clone(),
            socket: args.socket.clone(),
            exit: Arc::default(),
            pods: Arc::default(),
            engine: PhantomData,
        }
    }

    fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        // containerd runs `start` in the bundle folder.
        let pod = crate::bundle::annotations(Path::new("."))
            .remove(SANDBOX_ID_ANNOTATION)
            .unwrap_or_else(|| opts.id.clone());
        let grouping = server_group(E::NAME, &pod, NodeConfig::from_env().shims_per_node);
        let address = containerd_shim::socket_address(&opts.address, &opts.namespace, &grouping);
        // Before any thread starts (the ttrpc client below has one): every thread of `start`
        // must have them blocked.
        block_signals_until_exit();
        // A running server is told a container is coming, so that it does not exit between
        // this answer and containerd's Create; then its address is the answer. Otherwise a
        // server is started.
        let address = if claim_running_server(&address, &opts.id) {
            address
        } else {
            containerd_shim::spawn(opts, &grouping, Vec::new())?.1
        };
        // containerd reconnects through this file after it restarts (1.6 reads nothing else).
        containerd_shim::util::write_address(&address)?;
        Ok(address)
    }

    fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        // containerd runs `delete` in the bundle folder when the shim is gone.
        let bundle = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
        kill_orphan_instance(&bundle);
        // A native container's processes, cgroup and libcontainer state.
        native::delete_orphan(&bundle, &self.id);
        // Staged mounts and tmpfs scratch folders first; a lazy unmount of the rootfs takes
        // file binds with it.
        let staging = [bundle.join("mounts"), bundle.join("scratch")];
        let staged = staging
            .iter()
            .flat_map(|d| std::fs::read_dir(d).into_iter().flatten().flatten())
            .map(|e| e.path());
        let targets: Vec<PathBuf> = staged.chain([bundle.join("rootfs")]).collect();
        for target in targets {
            if let Err(e) = crate::task::unmount_all(&target) {
                log::warn!("{e}");
            }
        }
        for dir in staging {
            let _ = std::fs::remove_dir_all(dir);
        }
        remove_orphan_cgroup(&bundle, &self.id);
        remove_dead_server_socket(&bundle);
        let _ = std::fs::remove_file(bundle.join(instance::CONFIG_FILE));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Ok(DeleteResponse {
            exit_status: 137,
            exited_at: MessageField::some(
                containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp {
                    seconds: now.as_secs() as i64,
                    nanos: now.subsec_nanos() as i32,
                    ..Default::default()
                },
            ),
            ..Default::default()
        })
    }

    fn wait(&mut self) {
        self.exit.wait();
        // The framework removes the socket by reading `./address`, but containerd may already
        // have deleted the bundle (our working directory) by now: remove it here.
        let path = self.socket.strip_prefix("unix://").unwrap_or(&self.socket);
        if !path.is_empty() {
            if let Err(e) = std::fs::remove_file(path) {
                log::debug!("removing {path}: {e}");
            }
        }
    }

    fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        let node = NodeConfig::from_env().keep_for_instances(E::NODE_ENV);
        shim_log::init_fifo_logger(node.log_level);
        let (cache_dir, cache_max, node_env) = (
            node.cache_dir.clone(),
            node.cache_max_bytes,
            node.instance_env.clone(),
        );
        TaskService::new(
            publisher,
            Containerd {
                address: self.address.clone(),
                namespace: self.namespace.clone(),
            },
            Box::new(move || {
                let engine = E::new().map_err(crate::Error::Engine)?;
                let cache = ArtifactCache::with_limit(&cache_dir, Some(cache_max))?;
                Compiler::new(engine.fingerprint(), cache, node_env.clone())
            }),
            node,
            self.exit.clone(),
            self.pods.clone(),
        )
    }
}

/// The server a pod's containers go to: one of `servers` per node for this engine, by the
/// pod's id. (containerd names a server's socket by its namespace and this group only.)
fn server_group(engine: &str, pod: &str, servers: u64) -> String {
    if servers <= 1 {
        return format!("{engine}-pods");
    }
    use sha2::Digest;
    let digest = sha2::Sha256::digest(pod.as_bytes());
    let n = u64::from_be_bytes(digest[..8].try_into().expect("8 bytes")) % servers;
    format!("{engine}-pods-{n}")
}

/// Ask the server at `address`, if one runs, for the task `id`: it does not know it yet, but
/// the request keeps it from exiting for [`LINGER`] more. Whether a server answered.
fn claim_running_server(address: &str, id: &str) -> bool {
    use containerd_shim::protos::shim::shim_ttrpc::TaskClient;
    let Ok(client) = containerd_shim::protos::ttrpc::Client::connect(address) else {
        return false;
    };
    let request = containerd_shim::api::ConnectRequest {
        id: id.to_string(),
        ..Default::default()
    };
    let answer = TaskClient::new(client).connect(
        containerd_shim::protos::ttrpc::context::with_timeout(2_000_000_000),
        &request,
    );
    // NOT_FOUND is the answer for a task it does not know yet: a live server all the same.
    match answer {
        Ok(_) => true,
        Err(containerd_shim::protos::ttrpc::Error::RpcStatus(_)) => true,
        Err(_) => false,
    }
}

/// `start` runs with its signals blocked. The framework drops its signal handlers at the
/// end, closing their socket first: a SIGCHLD (the server child just exited) arriving in
/// between made the handler's write raise SIGPIPE, whose handler wrote again, forever, and
/// containerd's StartContainer hung until it killed `start`. The server child inherits the
/// mask and clears it first thing (`server::serve`).
fn block_signals_until_exit() {
    use nix::sys::signal::{pthread_sigmask, SigSet, SigmaskHow};
    if let Err(e) = pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&SigSet::all()), None) {
        log::warn!("blocking signals: {e}");
    }
}

/// Kill an instance process whose shim died, if it is still the one of this bundle.
/// The cgroup a dead shim's Wasm container made (libcontainer's own cleanup covers native
/// ones). Removing it also kills what is left in it.
fn remove_orphan_cgroup(bundle: &Path, id: &str) {
    let Ok(config) = std::fs::read(bundle.join(instance::CONFIG_FILE)) else {
        return;
    };
    let Ok(config) = serde_json::from_slice::<instance::InstanceConfig>(&config) else {
        return;
    };
    if let Some(cg) = &config.placement.cgroup {
        if let Err(e) = crate::placement::ContainerCgroup::open(cg, id).and_then(|c| c.remove()) {
            log::warn!("{id}: {e}");
        }
    }
}

/// The socket of the server this bundle's task was on, if that server is dead (it could not
/// remove it). One server serves many bundles: a live one keeps its socket.
fn remove_dead_server_socket(bundle: &Path) {
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let path = Path::new(
        address
            .trim()
            .strip_prefix("unix://")
            .unwrap_or(address.trim()),
    );
    if path.exists() && std::os::unix::net::UnixStream::connect(path).is_err() {
        let _ = std::fs::remove_file(path);
    }
}

/// Record the instance's pid with its start time, so that `delete` after a shim crash kills
/// that process and never another that got its pid since.
pub fn write_pid_file(bundle: &Path, pid: u32) -> crate::Result<()> {
    use crate::error::IoContext;
    let path = bundle.join(PID_FILE);
    let started = start_time(pid).unwrap_or_default();
    std::fs::write(&path, format!("{pid} {started}"))
        .io_context(|| format!("writing {}", path.display()))
}

/// Field 22 of `/proc/PID/stat`: when the process started, in clock ticks since boot.
fn start_time(pid: u32) -> Option<u64> {
    stat_after_name(pid)?
        .split_whitespace()
        .nth(19)?
        .parse()
        .ok()
}

/// `/proc/PID/stat` from field 3 (the state) on: the command name (field 2) may hold
/// spaces, and ends at the last ')'.
fn stat_after_name(pid: u32) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    Some(stat[stat.rfind(')')? + 1..].to_string())
}

fn kill_orphan_instance(bundle: &Path) {
    let recorded = std::fs::read_to_string(bundle.join(PID_FILE)).unwrap_or_default();
    let mut fields = recorded.split_whitespace().map(|f| f.parse::<u64>().ok());
    if let (Some(Some(pid)), Some(Some(started))) = (fields.next(), fields.next()) {
        if start_time(pid as u32) == Some(started) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
            // Not our child: wait until it has left its cgroup (dead or a zombie), so that
            // the cgroup can be removed next.
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
            while is_running(pid as u32, started) && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
        }
    }
    let _ = std::fs::remove_file(bundle.join(PID_FILE));
}

/// Whether the process `pid` that started at `started` is still alive (not a zombie).
fn is_running(pid: u32, started: u64) -> bool {
    let Some(stat) = stat_after_name(pid) else {
        return false;
    };
    let mut fields = stat.split_whitespace();
    let state = fields.next();
    let start = fields.nth(18).and_then(|f| f.parse::<u64>().ok());
    start == Some(started) && state != Some("Z")
}
