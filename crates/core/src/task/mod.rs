//! The containerd runtime v2 task service: the ttrpc API containerd calls on the shim.
//!
//! One shim process may serve several containers (a pod's, grouped by the CRI sandbox id),
//! so the service keeps a table of containers, each backed by an instance process.

pub mod compile;
mod container;
mod events;
mod metrics;
mod rootfs;
mod sandbox_fs;
mod stdio;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use containerd_shim::api;
use containerd_shim::monitor::{monitor_subscribe, ExitEvent, Subject, Topic};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExit, TaskIO, TaskOOM, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::{self, Code};
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, TtrpcContext, TtrpcResult};

use crate::config::NodeConfig;
use crate::error::Error;
use crate::image_layers::Containerd;
use container::{Container, CreateRequest, Status, REAP_TIMEOUT};
use stdio::StdioPaths;

pub use compile::Compiler;
pub use rootfs::unmount_all;

#[derive(Clone, Copy)]
struct Exit {
    code: u32,
    at: (i64, i32),
}

#[derive(Default)]
struct State {
    containers: HashMap<String, Container>,
    exits: HashMap<String, Exit>,
    /// Exits of processes not (or no longer) known as a container, kept briefly in case the
    /// exit overtakes the container's registration.
    unclaimed: HashMap<u32, (Exit, Instant)>,
}

/// Makes the compiler on first use, so that a broken engine set-up fails a Create with its
/// reason instead of killing the shim at start.
pub type CompilerFactory = Box<dyn Fn() -> crate::Result<Compiler> + Send + Sync>;

pub struct TaskService {
    state: Arc<(Mutex<State>, Condvar)>,
    events: Arc<events::Events>,
    compiler: OnceLock<Compiler>,
    make_compiler: CompilerFactory,
    node: NodeConfig,
    exit_signal: Arc<ExitSignal>,
    containerd: Containerd,
}

impl TaskService {
    pub fn new(
        publisher: RemotePublisher,
        containerd: Containerd,
        make_compiler: CompilerFactory,
        node: NodeConfig,
        exit_signal: Arc<ExitSignal>,
    ) -> Self {
        let service = TaskService {
            state: Arc::default(),
            events: Arc::new(events::Events::new(publisher, containerd.namespace.clone())),
            containerd,
            compiler: OnceLock::new(),
            make_compiler,
            node,
            exit_signal,
        };
        service.watch_exits();
        service
    }

    fn watch_exits(&self) {
        let subscription = monitor_subscribe(Topic::Pid).expect("subscribing to process exits");
        let state = self.state.clone();
        let events = self.events.clone();
        std::thread::Builder::new()
            .name("exits".into())
            .spawn(move || {
                for ExitEvent { subject, exit_code } in subscription.rx.iter() {
                    let Subject::Pid(pid) = subject else { continue };
                    let exit = Exit {
                        code: exit_code as u32,
                        at: now(),
                    };
                    let (lock, cvar) = &*state;
                    let mut st = lock.lock().unwrap();
                    record_exit(&mut st, pid as u32, exit, &events);
                    cvar.notify_all();
                }
            })
            .expect("starting the exits thread");
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.0.lock().unwrap()
    }

    fn compiler(&self) -> crate::Result<&Compiler> {
        if let Some(c) = self.compiler.get() {
            return Ok(c);
        }
        let made = (self.make_compiler)()?;
        Ok(self.compiler.get_or_init(|| made))
    }
}

impl State {
    fn container(&self, id: &str) -> TtrpcResult<&Container> {
        self.containers.get(id).ok_or_else(|| not_found(id))
    }

    fn container_mut(&mut self, id: &str) -> TtrpcResult<&mut Container> {
        self.containers.get_mut(id).ok_or_else(|| not_found(id))
    }
}

fn record_exit(st: &mut State, pid: u32, exit: Exit, events: &events::Events) {
    let found = st
        .containers
        .values_mut()
        .find(|c| c.pid == pid && c.status != Status::Stopped);
    let Some(container) = found else {
        st.unclaimed
            .retain(|_, (_, t)| t.elapsed() < Duration::from_secs(60));
        st.unclaimed.insert(pid, (exit, Instant::now()));
        return;
    };
    container.status = Status::Stopped;
    let id = container.id.clone();
    let oom = container.hit_memory_limit();
    log::info!(
        "{id}: instance {pid} exited with status {}{}",
        exit.code,
        if oom { " at its memory limit" } else { "" }
    );
    st.exits.insert(id.clone(), exit);
    if oom {
        // CRI reports the container's reason as OOMKilled on this event, as for runc.
        events.send(
            topics::TASK_OOM_EVENT_TOPIC,
            TaskOOM {
                container_id: id.clone(),
                ..Default::default()
            },
        );
    }
    events.send(
        topics::TASK_EXIT_EVENT_TOPIC,
        TaskExit {
            container_id: id.clone(),
            id,
            pid,
            exit_status: exit.code,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        },
    );
}

fn now() -> (i64, i32) {
    let d = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_secs() as i64, d.subsec_nanos() as i32)
}

fn timestamp((seconds, nanos): (i64, i32)) -> Timestamp {
    Timestamp {
        seconds,
        nanos,
        ..Default::default()
    }
}

fn status(code: Code, message: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message.into()))
}

fn not_found(id: &str) -> ttrpc::Error {
    status(Code::NOT_FOUND, format!("container {id} not found"))
}

fn unimplemented(what: &str) -> ttrpc::Error {
    status(
        Code::UNIMPLEMENTED,
        format!("{what} is not supported for Wasm containers"),
    )
}

/// Exec processes are not supported: a Wasm container has one guest.
fn reject_exec(exec_id: &str) -> TtrpcResult<()> {
    if exec_id.is_empty() {
        Ok(())
    } else {
        Err(unimplemented("exec"))
    }
}

impl From<Error> for ttrpc::Error {
    fn from(e: Error) -> Self {
        let code = match &e {
            Error::Io { .. } | Error::Cache(_) | Error::Cgroup(_) => Code::INTERNAL,
            _ => Code::INVALID_ARGUMENT,
        };
        status(code, e.to_string())
    }
}

impl containerd_shim::Task for TaskService {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        if self.lock().containers.contains_key(&req.id) {
            return Err(status(
                Code::ALREADY_EXISTS,
                format!("container {} already exists", req.id),
            ));
        }
        let bundle = PathBuf::from(&req.bundle);
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        };
        let container = Container::create(
            CreateRequest {
                id: &req.id,
                bundle: &bundle,
                rootfs: &req.rootfs,
                stdio,
                terminal: req.terminal,
                containerd: &self.containerd,
            },
            self.compiler()?,
            &self.node,
        )
        .inspect_err(|e| log::warn!("{}: create failed: {e}", req.id))?;
        let pid = container.pid;
        {
            let mut st = self.lock();
            let early_exit = st.unclaimed.remove(&pid);
            st.containers.insert(req.id.clone(), container);
            if let Some((exit, _)) = early_exit {
                record_exit(&mut st, pid, exit, &self.events);
            }
        }
        self.events.send(
            topics::TASK_CREATE_EVENT_TOPIC,
            TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                }),
                pid,
                ..Default::default()
            },
        );
        Ok(api::CreateTaskResponse {
            pid,
            ..Default::default()
        })
    }

    fn start(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartRequest,
    ) -> TtrpcResult<api::StartResponse> {
        reject_exec(&req.exec_id)?;
        let mut st = self.lock();
        let c = st.container_mut(&req.id)?;
        if c.status != Status::Created {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("container {} is not in the created state", req.id),
            ));
        }
        c.start()?;
        let pid = c.pid;
        drop(st);
        self.events.send(
            topics::TASK_START_EVENT_TOPIC,
            TaskStart {
                container_id: req.id.clone(),
                pid,
                ..Default::default()
            },
        );
        Ok(api::StartResponse {
            pid,
            ..Default::default()
        })
    }

    fn state(
        &self,
        _ctx: &TtrpcContext,
        req: api::StateRequest,
    ) -> TtrpcResult<api::StateResponse> {
        reject_exec(&req.exec_id)?;
        let st = self.lock();
        let c = st.container(&req.id)?;
        let mut resp = api::StateResponse {
            id: c.id.clone(),
            bundle: c.bundle.to_string_lossy().into_owned(),
            pid: c.pid,
            stdin: c.stdio.stdin.clone(),
            stdout: c.stdio.stdout.clone(),
            stderr: c.stdio.stderr.clone(),
            ..Default::default()
        };
        resp.set_status(match c.status {
            Status::Created => api::Status::CREATED,
            Status::Running => api::Status::RUNNING,
            Status::Stopped => api::Status::STOPPED,
        });
        if let Some(exit) = st.exits.get(&req.id) {
            resp.exit_status = exit.code;
            resp.exited_at = MessageField::some(timestamp(exit.at));
        }
        Ok(resp)
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        reject_exec(&req.exec_id)?;
        let (lock, cvar) = &*self.state;
        let mut st = lock.lock().unwrap();
        loop {
            if !st.containers.contains_key(&req.id) {
                return Err(not_found(&req.id));
            }
            if let Some(exit) = st.exits.get(&req.id) {
                return Ok(api::WaitResponse {
                    exit_status: exit.code,
                    exited_at: MessageField::some(timestamp(exit.at)),
                    ..Default::default()
                });
            }
            st = cvar.wait(st).unwrap();
        }
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        reject_exec(&req.exec_id)?;
        let st = self.lock();
        let c = st.container(&req.id)?;
        if c.status == Status::Stopped {
            return Err(status(
                Code::NOT_FOUND,
                format!("container {}: process already finished", req.id),
            ));
        }
        let signal = nix::sys::signal::Signal::try_from(req.signal as i32).map_err(|_| {
            status(
                Code::INVALID_ARGUMENT,
                format!("invalid signal {}", req.signal),
            )
        })?;
        log::info!("{}: sending {signal} to instance {}", req.id, c.pid);
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.pid as i32), signal)
            .map_err(|e| status(Code::INTERNAL, format!("killing {}: {e}", c.pid)))?;
        Ok(api::Empty::default())
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        reject_exec(&req.exec_id)?;
        let (lock, cvar) = &*self.state;
        let mut st = lock.lock().unwrap();
        let c = st.container(&req.id)?;
        match c.status {
            Status::Running => {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("container {} is running; kill it first", req.id),
                ))
            }
            Status::Created => {
                // Never started: stop the waiting instance and collect its exit.
                let pid = c.pid;
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let deadline = Instant::now() + REAP_TIMEOUT;
                while !st.exits.contains_key(&req.id) && Instant::now() < deadline {
                    st = cvar.wait_timeout(st, Duration::from_millis(100)).unwrap().0;
                }
            }
            Status::Stopped => {}
        }
        let mut c = st.containers.remove(&req.id).expect("checked above");
        let exit = st.exits.remove(&req.id);
        drop(st);
        cvar.notify_all();
        c.cleanup()?;
        let (code, at) = exit.map(|e| (e.code, e.at)).unwrap_or((137, now()));
        log::info!("{}: deleted", req.id);
        self.events.send(
            topics::TASK_DELETE_EVENT_TOPIC,
            TaskDelete {
                container_id: req.id.clone(),
                id: req.id.clone(),
                pid: c.pid,
                exit_status: code,
                exited_at: MessageField::some(timestamp(at)),
                ..Default::default()
            },
        );
        Ok(api::DeleteResponse {
            pid: c.pid,
            exit_status: code,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let (pid, status, cgroup) = {
            let st = self.lock();
            let c = st.container(&req.id)?;
            (c.pid, c.status, c.open_cgroup())
        };
        // The cgroup's members when there is one (containerd 1.7+ asks after a restart, and
        // CRI's PodSandboxStats counts them); else the instance process while it lives.
        let pids = match cgroup? {
            Some(cg) if status != Status::Stopped => cg.pids()?,
            _ if status != Status::Stopped => vec![pid],
            _ => Vec::new(),
        };
        Ok(api::PidsResponse {
            processes: pids
                .into_iter()
                .map(|pid| containerd_shim::protos::types::task::ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
    }

    fn stats(
        &self,
        _ctx: &TtrpcContext,
        req: api::StatsRequest,
    ) -> TtrpcResult<api::StatsResponse> {
        let (pid, cgroup) = {
            let st = self.lock();
            let c = st.container(&req.id)?;
            if c.status == Status::Stopped {
                return Err(status(
                    Code::NOT_FOUND,
                    format!("container {}: process already finished", req.id),
                ));
            }
            (c.pid, c.open_cgroup())
        };
        let metrics = match cgroup? {
            Some(cg) => metrics::from_cgroup(&cg.stats()?),
            None => metrics::from_proc(pid)?,
        };
        let mut any = Any::new();
        any.type_url = "io.containerd.cgroups.v1.Metrics".into();
        any.value = metrics
            .write_to_bytes()
            .map_err(|e| status(Code::INTERNAL, e.to_string()))?;
        Ok(api::StatsResponse {
            stats: MessageField::some(any),
            ..Default::default()
        })
    }

    fn connect(
        &self,
        _ctx: &TtrpcContext,
        req: api::ConnectRequest,
    ) -> TtrpcResult<api::ConnectResponse> {
        let st = self.lock();
        let c = st.container(&req.id)?;
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: c.pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        reject_exec(&req.exec_id)?;
        let mut st = self.lock();
        let c = st.container_mut(&req.id)?;
        if req.stdin {
            c.close_stdin();
        }
        Ok(api::Empty::default())
    }

    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        if self.lock().containers.is_empty() {
            log::info!("no containers left: shutting down");
            self.events.flush(Duration::from_secs(5));
            self.exit_signal.signal();
        }
        Ok(api::Empty::default())
    }

    fn exec(&self, _ctx: &TtrpcContext, _req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        Err(unimplemented("exec into a Wasm container"))
    }

    fn resize_pty(
        &self,
        _ctx: &TtrpcContext,
        _req: api::ResizePtyRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(unimplemented("a terminal"))
    }

    fn pause(&self, _ctx: &TtrpcContext, _req: api::PauseRequest) -> TtrpcResult<api::Empty> {
        Err(unimplemented("pause"))
    }

    fn resume(&self, _ctx: &TtrpcContext, _req: api::ResumeRequest) -> TtrpcResult<api::Empty> {
        Err(unimplemented("resume"))
    }

    fn checkpoint(
        &self,
        _ctx: &TtrpcContext,
        _req: api::CheckpointTaskRequest,
    ) -> TtrpcResult<api::Empty> {
        Err(unimplemented("checkpoint"))
    }

    /// New cgroup limits (CRI's UpdateContainerResources). The engine's linear-memory cap was
    /// fixed when the instance was prepared: a lower memory limit is then enforced by the
    /// kernel alone (the cgroup's OOM killer), a higher one does not raise the cap.
    fn update(&self, _ctx: &TtrpcContext, req: api::UpdateTaskRequest) -> TtrpcResult<api::Empty> {
        let resources: oci_spec::runtime::LinuxResources = match req.resources.as_ref() {
            Some(any) => serde_json::from_slice(&any.value).map_err(|e| {
                status(
                    Code::INVALID_ARGUMENT,
                    format!("resources of {}: not OCI LinuxResources JSON: {e}", req.id),
                )
            })?,
            None => return Ok(api::Empty::new()),
        };
        let cgroup = {
            let st = self.lock();
            st.container(&req.id)?.open_cgroup()?
        };
        let Some(cgroup) = cgroup else {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!(
                    "container {} has no cgroup (linux.cgroupsPath) to update",
                    req.id
                ),
            ));
        };
        cgroup.apply(&resources)?;
        log::info!("{}: resources updated", req.id);
        Ok(api::Empty::new())
    }
}
