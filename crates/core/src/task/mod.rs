//! The containerd runtime v2 task service: the ttrpc API containerd calls on the shim.
//!
//! One shim process may serve several containers (a pod's, grouped by the CRI sandbox id),
//! so the service keeps a table of tasks ([`table`]). A task is either a Wasm container
//! (backed by an instance process, [`container`]) or a native one (an ELF or `#!` entrypoint
//! run by libcontainer, [`native`]); which one is decided at Create ([`create`]) from the
//! entrypoint file. The lifecycle bookkeeping (status, exits, events) is the same for both.

pub mod compile;
mod container;
mod create;
mod events;
mod metrics;
pub mod native;
mod rootfs;
mod sandbox_fs;
mod status;
mod stdio;
mod table;
mod zygote;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use containerd_shim::api;
use containerd_shim::monitor::{monitor_subscribe, ExitEvent, Subject, Topic};
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecAdded, TaskExecStarted, TaskIO, TaskStart,
};
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::{Message, MessageField};
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc::Code;
use containerd_shim::publisher::RemotePublisher;
use containerd_shim::{ExitSignal, TtrpcContext, TtrpcResult};

use crate::changed::Changed;
use crate::config::NodeConfig;
use crate::error::Error;
use crate::image_layers::Containerd;
use crate::sandbox::Pods;
use container::{Status, REAP_TIMEOUT};
use status::{now, parse_signal, status, timestamp, unimplemented};
use stdio::StdioPaths;
use table::{
    claim_early_exit, record_exit_now, take_output, Backend, Exit, Process, State, Task,
    OUTPUT_DRAIN_LIMIT,
};

pub use compile::Compiler;
pub use rootfs::unmount_all;
pub use sandbox_fs::probe_source;
pub use zygote::Zygote;

/// Makes the compiler on first use, so that a broken engine set-up fails a Create with its
/// reason instead of killing the shim at start.
pub type CompilerFactory = Box<dyn Fn() -> crate::Result<Compiler> + Send + Sync>;

pub struct TaskService {
    state: Arc<(Mutex<State>, Changed)>,
    events: Arc<events::Events>,
    compiler: OnceLock<Compiler>,
    make_compiler: CompilerFactory,
    node: NodeConfig,
    exit_signal: Arc<ExitSignal>,
    containerd: Containerd,
    zygote: Arc<zygote::Zygote>,
    /// Pods whose sandbox this shim holds (containerd 2.x): the server lives while any does.
    pods: Arc<Pods>,
}

impl TaskService {
    pub fn new(
        publisher: RemotePublisher,
        containerd: Containerd,
        make_compiler: CompilerFactory,
        node: NodeConfig,
        exit_signal: Arc<ExitSignal>,
        pods: Arc<Pods>,
    ) -> Self {
        let service = TaskService {
            pods,
            zygote: Arc::new(zygote::Zygote::new(
                node.instance_env.clone(),
                &containerd.namespace,
            )),
            state: Arc::default(),
            events: Arc::new(events::Events::new(
                publisher,
                std::env::var("TTRPC_ADDRESS").ok(),
                containerd.namespace.clone(),
            )),
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
                    let output = take_output(&mut state.0.lock().unwrap(), pid as u32);
                    let Some(output) = output else {
                        record_exit_now(&state, pid as u32, exit, &events);
                        continue;
                    };
                    // Off this thread: other exits are not held up by a slow reader.
                    let (drain_state, drain_events) = (state.clone(), events.clone());
                    let spawned =
                        std::thread::Builder::new()
                            .name("drain".into())
                            .spawn(move || {
                                output.wait(OUTPUT_DRAIN_LIMIT);
                                record_exit_now(&drain_state, pid as u32, exit, &drain_events);
                            });
                    if let Err(e) = spawned {
                        log::warn!("process {pid}: output not drained ({e})");
                        record_exit_now(&state, pid as u32, exit, &events);
                    }
                }
            })
            .expect("starting the exits thread");
    }

    /// What to call when the server may have nothing left to serve: unless a container or a
    /// pod comes within [`crate::shim::LINGER`], the server exits.
    pub fn idle_hook(&self) -> Box<dyn Fn() + Send + Sync> {
        let (state, pods, events, exit) = (
            self.state.clone(),
            self.pods.clone(),
            self.events.clone(),
            self.exit_signal.clone(),
        );
        Box::new(move || {
            let idle = || state.0.lock().unwrap().containers.is_empty() && pods.is_empty();
            if !idle() {
                return;
            }
            let (state, pods, events, exit) =
                (state.clone(), pods.clone(), events.clone(), exit.clone());
            std::thread::spawn(move || loop {
                std::thread::sleep(crate::shim::LINGER);
                let st = state.0.lock().unwrap();
                if !st.containers.is_empty() || !pods.is_empty() {
                    return;
                }
                if st.claimed.elapsed() >= crate::shim::LINGER {
                    drop(st);
                    log::info!("no containers or pods left: shutting down");
                    events.flush(Duration::from_secs(5));
                    exit.signal();
                    return;
                }
            });
        })
    }

    /// The zygote instances (and pod holders) are forked from.
    pub fn zygote(&self) -> Arc<zygote::Zygote> {
        self.zygote.clone()
    }

    /// Start the zygote in the background, so that the first container does not wait for it.
    pub fn warm_zygote(&self) {
        let zygote = self.zygote.clone();
        std::thread::spawn(move || zygote.warm());
    }

    /// Signalled whenever a task's state changes (an exit recorded, a task deleted).
    pub fn changed(&self) -> &Changed {
        &self.state.1
    }

    /// Wait's answer if the process has exited, `None` while it runs.
    pub fn try_wait(&self, req: &api::WaitRequest) -> TtrpcResult<Option<api::WaitResponse>> {
        wait_answer(&self.lock(), req)
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

impl containerd_shim::Task for TaskService {
    fn create(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateTaskRequest,
    ) -> TtrpcResult<api::CreateTaskResponse> {
        {
            let mut st = self.lock();
            if st.containers.contains_key(&req.id) {
                return Err(status(
                    Code::ALREADY_EXISTS,
                    format!("container {} already exists", req.id),
                ));
            }
            st.claimed = Instant::now();
        }
        // containerd reads this bundle's log FIFO for as long as the task lives.
        crate::shim_log::use_bundle_log(Path::new(&req.bundle));
        let spawned = Instant::now();
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        };
        let (backend, pid, cgroup) = self
            .create_backend(&req, &stdio)
            .inspect_err(|e| log::warn!("{}: create failed: {e}", req.id))?;
        {
            let mut st = self.lock();
            st.containers.insert(
                req.id.clone(),
                Task {
                    id: req.id.clone(),
                    bundle: PathBuf::from(&req.bundle),
                    init: Process::new(stdio, pid),
                    execs: HashMap::new(),
                    backend,
                    cgroup,
                },
            );
            claim_early_exit(&mut st, pid, spawned, &self.events);
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
        let mut st = self.lock();
        let task = st.container_mut(&req.id)?;
        if task.process(&req.exec_id)?.status != Status::Created {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!(
                    "{} is not in the created state",
                    describe(&req.id, &req.exec_id)
                ),
            ));
        }
        let spawned = Instant::now();
        let pid = if req.exec_id.is_empty() {
            task.backend.start()?;
            task.init.pid
        } else {
            task.backend.native()?.start_exec(&req.exec_id)?
        };
        let process = task.process_mut(&req.exec_id)?;
        process.pid = pid;
        process.status = Status::Running;
        claim_early_exit(&mut st, pid, spawned, &self.events);
        drop(st);
        if req.exec_id.is_empty() {
            self.events.send(
                topics::TASK_START_EVENT_TOPIC,
                TaskStart {
                    container_id: req.id.clone(),
                    pid,
                    ..Default::default()
                },
            );
        } else {
            self.events.send(
                topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                TaskExecStarted {
                    container_id: req.id.clone(),
                    exec_id: req.exec_id.clone(),
                    pid,
                    ..Default::default()
                },
            );
        }
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
        let st = self.lock();
        let task = st.container(&req.id)?;
        let p = task.process(&req.exec_id)?;
        let mut resp = api::StateResponse {
            id: if req.exec_id.is_empty() {
                task.id.clone()
            } else {
                req.exec_id.clone()
            },
            bundle: task.bundle.to_string_lossy().into_owned(),
            pid: p.pid,
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        };
        resp.set_status(match p.status {
            Status::Created => api::Status::CREATED,
            Status::Running => api::Status::RUNNING,
            Status::Stopped => api::Status::STOPPED,
        });
        if let Some(exit) = p.exit {
            resp.exit_status = exit.code;
            resp.exited_at = MessageField::some(timestamp(exit.at));
        }
        Ok(resp)
    }

    fn wait(&self, _ctx: &TtrpcContext, req: api::WaitRequest) -> TtrpcResult<api::WaitResponse> {
        let (lock, changed) = &*self.state;
        let mut st = lock.lock().unwrap();
        loop {
            if let Some(answer) = wait_answer(&st, &req)? {
                return Ok(answer);
            }
            st = changed.wait(st).unwrap();
        }
    }

    fn kill(&self, _ctx: &TtrpcContext, req: api::KillRequest) -> TtrpcResult<api::Empty> {
        let signal = parse_signal(req.signal)?;
        let st = self.lock();
        let task = st.container(&req.id)?;
        let p = task.process(&req.exec_id)?;
        // A native container's remaining processes can be signalled after its init exited.
        let native_all = req.all && req.exec_id.is_empty();
        if let (Backend::Native(c), true) = (&task.backend, native_all) {
            log::info!("{}: sending {signal} to all its processes", req.id);
            c.kill(signal, true)?;
            return Ok(api::Empty::default());
        }
        if p.status == Status::Stopped || p.pid == 0 {
            return Err(status(
                Code::NOT_FOUND,
                format!(
                    "{}: process already finished",
                    describe(&req.id, &req.exec_id)
                ),
            ));
        }
        log::info!(
            "{}: sending {signal} to process {}",
            describe(&req.id, &req.exec_id),
            p.pid
        );
        match &task.backend {
            Backend::Native(c) if req.exec_id.is_empty() => c.kill(signal, false)?,
            _ => nix::sys::signal::kill(nix::unistd::Pid::from_raw(p.pid as i32), signal)
                .map_err(|e| status(Code::INTERNAL, format!("killing {}: {e}", p.pid)))?,
        }
        Ok(api::Empty::default())
    }

    fn delete(
        &self,
        _ctx: &TtrpcContext,
        req: api::DeleteRequest,
    ) -> TtrpcResult<api::DeleteResponse> {
        if !req.exec_id.is_empty() {
            return self.delete_exec(&req.id, &req.exec_id);
        }
        let (lock, changed) = &*self.state;
        let mut st = lock.lock().unwrap();
        let task = st.container(&req.id)?;
        match task.init.status {
            Status::Running => {
                return Err(status(
                    Code::FAILED_PRECONDITION,
                    format!("container {} is running; kill it first", req.id),
                ))
            }
            Status::Created => {
                // Never started: stop the waiting process and collect its exit.
                let pid = task.init.pid;
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let deadline = Instant::now() + REAP_TIMEOUT;
                while st.container(&req.id)?.init.exit.is_none() && Instant::now() < deadline {
                    st = changed
                        .wait_timeout(st, Duration::from_millis(100))
                        .unwrap()
                        .0;
                }
            }
            Status::Stopped => {}
        }
        let mut task = st.containers.remove(&req.id).expect("checked above");
        // containerd stops reading this bundle's log FIFO now: log into another's.
        if let Some(other) = st.containers.values().next() {
            crate::shim_log::use_bundle_log(&other.bundle);
        }
        drop(st);
        changed.notify_all();
        // libcontainer removes a native container's cgroup itself; then this finds none.
        let cleaned = task.backend.cleanup();
        let cgroup_removed = task
            .open_cgroup()
            .and_then(|cg| cg.map_or(Ok(()), |c| c.remove()));
        cleaned.and(cgroup_removed)?;
        let pid = task.init.pid;
        let (code, at) = task
            .init
            .exit
            .map(|e| (e.code, e.at))
            .unwrap_or((137, now()));
        log::info!("{}: deleted", req.id);
        self.events.send(
            topics::TASK_DELETE_EVENT_TOPIC,
            TaskDelete {
                container_id: req.id.clone(),
                id: req.id.clone(),
                pid,
                exit_status: code,
                exited_at: MessageField::some(timestamp(at)),
                ..Default::default()
            },
        );
        Ok(api::DeleteResponse {
            pid,
            exit_status: code,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        })
    }

    fn pids(&self, _ctx: &TtrpcContext, req: api::PidsRequest) -> TtrpcResult<api::PidsResponse> {
        let (pid, status, cgroup) = {
            let st = self.lock();
            let task = st.container(&req.id)?;
            (task.init.pid, task.init.status, task.open_cgroup())
        };
        // The cgroup's members when there is one (containerd 1.7+ asks after a restart, and
        // CRI's PodSandboxStats counts them): a native container's exec processes and their
        // children too; else the init process while it lives.
        // The init process always: a Wasm instance is not in every v1 hierarchy, and the
        // cgroup may be read from one it is not in. containerd 1.7+ takes an empty list after a
        // restart for a leaked shim and deletes the task.
        let mut pids = match cgroup? {
            Some(cg) if status != Status::Stopped => cg.pids()?,
            _ => Vec::new(),
        };
        if status != Status::Stopped && !pids.contains(&pid) {
            pids.insert(0, pid);
        }
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
            let task = st.container(&req.id)?;
            if task.init.status == Status::Stopped {
                return Err(status(
                    Code::NOT_FOUND,
                    format!("container {}: process already finished", req.id),
                ));
            }
            (task.init.pid, task.open_cgroup())
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
        let mut st = self.lock();
        // `start` of a container still to come asks too (see `shim::claim_running_server`).
        st.claimed = Instant::now();
        // containerd reconnects to a pod this shim holds by the pod's id.
        if let Some(holder) = self.pods.holder(&req.id) {
            return Ok(api::ConnectResponse {
                shim_pid: std::process::id(),
                task_pid: holder,
                version: env!("CARGO_PKG_VERSION").into(),
                ..Default::default()
            });
        }
        let task = st.container(&req.id)?;
        Ok(api::ConnectResponse {
            shim_pid: std::process::id(),
            task_pid: task.init.pid,
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    fn close_io(&self, _ctx: &TtrpcContext, req: api::CloseIORequest) -> TtrpcResult<api::Empty> {
        let mut st = self.lock();
        let task = st.container_mut(&req.id)?;
        task.process(&req.exec_id)?;
        if req.stdin {
            task.backend.close_stdin(&req.exec_id);
        }
        Ok(api::Empty::default())
    }

    /// containerd asks after each Delete. The server serves the node's pods, so it exits
    /// only once it has had no container and no pod for [`crate::shim::LINGER`] and none was
    /// announced.
    fn shutdown(&self, _ctx: &TtrpcContext, _req: api::ShutdownRequest) -> TtrpcResult<api::Empty> {
        (self.idle_hook())();
        Ok(api::Empty::default())
    }

    fn exec(&self, _ctx: &TtrpcContext, req: api::ExecProcessRequest) -> TtrpcResult<api::Empty> {
        let mut st = self.lock();
        let task = st.container_mut(&req.id)?;
        let native = task.backend.native()?;
        if task.execs.contains_key(&req.exec_id) {
            return Err(status(
                Code::ALREADY_EXISTS,
                format!("{} already exists", describe(&req.id, &req.exec_id)),
            ));
        }
        if req.terminal {
            return Err(Error::Unsupported(
                "a terminal (tty) is not supported for exec into native containers yet; \
                 run without -t"
                    .into(),
            )
            .into());
        }
        let stdio = StdioPaths {
            stdin: req.stdin.clone(),
            stdout: req.stdout.clone(),
            stderr: req.stderr.clone(),
        };
        let process = req
            .spec
            .as_ref()
            .map(|any| any.value.as_slice())
            .unwrap_or(b"");
        native.add_exec(&req.exec_id, process, stdio.clone())?;
        task.execs
            .insert(req.exec_id.clone(), Process::new(stdio, 0));
        drop(st);
        self.events.send(
            topics::TASK_EXEC_ADDED_EVENT_TOPIC,
            TaskExecAdded {
                container_id: req.id.clone(),
                exec_id: req.exec_id.clone(),
                ..Default::default()
            },
        );
        Ok(api::Empty::default())
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

impl TaskService {
    /// Delete an exec process that has exited (or never started).
    fn delete_exec(&self, id: &str, exec_id: &str) -> TtrpcResult<api::DeleteResponse> {
        let mut st = self.lock();
        let task = st.container_mut(id)?;
        let p = task.process(exec_id)?;
        if p.status == Status::Running {
            return Err(status(
                Code::FAILED_PRECONDITION,
                format!("{} is running; kill it first", describe(id, exec_id)),
            ));
        }
        let p = task.execs.remove(exec_id).expect("checked above");
        if let Backend::Native(c) = &mut task.backend {
            c.remove_exec(exec_id);
        }
        let (code, at) = p.exit.map(|e| (e.code, e.at)).unwrap_or((137, now()));
        Ok(api::DeleteResponse {
            pid: p.pid,
            exit_status: code,
            exited_at: MessageField::some(timestamp(at)),
            ..Default::default()
        })
    }
}

/// Wait's answer once the process has exited.
fn wait_answer(st: &State, req: &api::WaitRequest) -> TtrpcResult<Option<api::WaitResponse>> {
    let exit = st.container(&req.id)?.process(&req.exec_id)?.exit;
    Ok(exit.map(|exit| api::WaitResponse {
        exit_status: exit.code,
        exited_at: MessageField::some(timestamp(exit.at)),
        ..Default::default()
    }))
}

/// `container ID` or `exec EXEC of container ID`, for messages.
fn describe(id: &str, exec_id: &str) -> String {
    if exec_id.is_empty() {
        format!("container {id}")
    } else {
        format!("exec {exec_id} of container {id}")
    }
}
