//! The task table: each task's processes (init and exec), what runs them, and how their
//! exits are recorded and reported (an exit waits for the process's output to be read, and
//! one that overtakes its process's registration is kept until it is claimed).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use containerd_shim::protos::events::task::{TaskExit, TaskOOM};
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::topics;
use containerd_shim::TtrpcResult;

use super::container::{Container, Status};
use super::events;
use super::native::NativeContainer;
use super::status::{not_found, timestamp, unimplemented};
use super::stdio::{OutputDrain, StdioPaths};
use crate::placement::{CgroupPlacement, ContainerCgroup};

#[derive(Clone, Copy)]
pub(super) struct Exit {
    pub(super) code: u32,
    pub(super) at: (i64, i32),
}

/// One process of a task: its init process or an exec process.
pub(super) struct Process {
    pub(super) stdio: StdioPaths,
    /// 0 for an exec process that has not been started.
    pub(super) pid: u32,
    pub(super) status: Status,
    pub(super) exit: Option<Exit>,
    /// Taken when the process exits: the exit is reported once its output is read.
    pub(super) output: Option<OutputDrain>,
}

impl Process {
    pub(super) fn new(stdio: StdioPaths, pid: u32) -> Self {
        Process {
            output: Some(OutputDrain::open(&stdio)),
            stdio,
            pid,
            status: Status::Created,
            exit: None,
        }
    }
}

/// How long an exit waits for containerd to read the process's output, as runc's shim
/// waits for its output copy at Delete.
pub(super) const OUTPUT_DRAIN_LIMIT: Duration = Duration::from_secs(2);

/// What runs a task's processes.
pub(super) enum Backend {
    Wasm(Container),
    Native(NativeContainer),
}

impl Backend {
    pub(super) fn start(&mut self) -> crate::Result<()> {
        match self {
            Backend::Wasm(c) => c.start(),
            Backend::Native(c) => c.start(),
        }
    }

    pub(super) fn close_stdin(&mut self, exec_id: &str) {
        match self {
            Backend::Wasm(c) => c.close_stdin(),
            Backend::Native(c) => c.close_stdin(exec_id),
        }
    }

    pub(super) fn cleanup(&mut self) -> crate::Result<()> {
        match self {
            Backend::Wasm(c) => c.cleanup(),
            Backend::Native(c) => c.cleanup(),
        }
    }

    /// Whether the Wasm guest failed at its memory limit (native: the kernel's OOM killer,
    /// whose events containerd does not get from this shim).
    fn hit_memory_limit(&mut self) -> bool {
        match self {
            Backend::Wasm(c) => c.hit_memory_limit(),
            Backend::Native(_) => false,
        }
    }

    /// Exec processes exist only in native containers.
    pub(super) fn native(&mut self) -> TtrpcResult<&mut NativeContainer> {
        match self {
            Backend::Native(c) => Ok(c),
            Backend::Wasm(_) => Err(unimplemented("exec")),
        }
    }
}

pub(super) struct Task {
    pub(super) id: String,
    pub(super) bundle: PathBuf,
    pub(super) init: Process,
    pub(super) execs: HashMap<String, Process>,
    pub(super) backend: Backend,
    /// `linux.cgroupsPath`: the instance process joins it, libcontainer creates it.
    pub(super) cgroup: Option<CgroupPlacement>,
}

impl Task {
    /// The container's cgroup, for Pids, Stats, Update and its removal.
    pub(super) fn open_cgroup(&self) -> crate::Result<Option<ContainerCgroup>> {
        self.cgroup
            .as_ref()
            .map(|cg| ContainerCgroup::open(cg, &self.id))
            .transpose()
    }

    /// The init process for an empty `exec_id`, else that exec process.
    pub(super) fn process(&self, exec_id: &str) -> TtrpcResult<&Process> {
        if exec_id.is_empty() {
            return Ok(&self.init);
        }
        self.execs
            .get(exec_id)
            .ok_or_else(|| not_found(&format!("{}/{exec_id}", self.id)))
    }

    pub(super) fn process_mut(&mut self, exec_id: &str) -> TtrpcResult<&mut Process> {
        if exec_id.is_empty() {
            return Ok(&mut self.init);
        }
        let id = &self.id;
        self.execs
            .get_mut(exec_id)
            .ok_or_else(|| not_found(&format!("{id}/{exec_id}")))
    }
}

pub(super) struct State {
    pub(super) containers: HashMap<String, Task>,
    /// Exits of processes not (or no longer) known as a task's process, kept briefly in case
    /// the exit overtakes the process's registration.
    pub(super) unclaimed: HashMap<u32, (Exit, Instant)>,
    /// When a container last came or was announced: the server does not exit right after.
    pub(super) claimed: Instant,
}

impl Default for State {
    fn default() -> Self {
        State {
            containers: HashMap::new(),
            unclaimed: HashMap::new(),
            claimed: Instant::now(),
        }
    }
}

impl State {
    pub(super) fn container(&self, id: &str) -> TtrpcResult<&Task> {
        self.containers.get(id).ok_or_else(|| not_found(id))
    }

    pub(super) fn container_mut(&mut self, id: &str) -> TtrpcResult<&mut Task> {
        self.containers.get_mut(id).ok_or_else(|| not_found(id))
    }
}

pub(super) fn record_exit_now(
    state: &(Mutex<State>, crate::changed::Changed),
    pid: u32,
    exit: Exit,
    events: &events::Events,
) {
    let (lock, changed) = state;
    record_exit(&mut lock.lock().unwrap(), pid, exit, events);
    changed.notify_all();
}

/// The output of the running process `pid`, to drain before its exit is recorded.
pub(super) fn take_output(st: &mut State, pid: u32) -> Option<OutputDrain> {
    st.containers.values_mut().find_map(|t| {
        std::iter::once(&mut t.init)
            .chain(t.execs.values_mut())
            .find(|p| p.pid == pid && p.status == Status::Running)
            .and_then(|p| p.output.take())
    })
}

fn record_exit(st: &mut State, pid: u32, exit: Exit, events: &events::Events) {
    let found = st.containers.values_mut().find_map(|t| {
        if t.init.pid == pid && t.init.status != Status::Stopped {
            return Some((t.id.clone(), String::new(), &mut t.init));
        }
        t.execs
            .iter_mut()
            .find(|(_, p)| p.pid == pid && p.status == Status::Running)
            .map(|(exec_id, p)| (t.id.clone(), exec_id.clone(), p))
    });
    let Some((id, exec_id, process)) = found else {
        st.unclaimed
            .retain(|_, (_, t)| t.elapsed() < Duration::from_secs(10));
        st.unclaimed.insert(pid, (exit, Instant::now()));
        return;
    };
    process.status = Status::Stopped;
    process.exit = Some(exit);
    if exec_id.is_empty() {
        log::info!("{id}: process {pid} exited with status {}", exit.code);
    } else {
        log::info!(
            "{id}: exec {exec_id} ({pid}) exited with status {}",
            exit.code
        );
    }
    let oom = exec_id.is_empty()
        && st
            .containers
            .get_mut(&id)
            .is_some_and(|t| t.backend.hit_memory_limit());
    if oom {
        log::info!("{id}: the guest failed at its memory limit");
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
            id: if exec_id.is_empty() { id } else { exec_id },
            pid,
            exit_status: exit.code,
            exited_at: MessageField::some(timestamp(exit.at)),
            ..Default::default()
        },
    );
}

/// Register `pid` as started and collect an exit that overtook the registration.
/// Give the process `pid`, spawned at `spawned`, an exit that arrived before it was
/// registered. Only an exit seen after the spawn is its own: an older one under the same pid
/// is another process's, whose pid the kernel has since reused (thousands of processes and
/// threads come and go on a node shim).
pub(super) fn claim_early_exit(
    st: &mut State,
    pid: u32,
    spawned: Instant,
    events: &events::Events,
) {
    match st.unclaimed.remove(&pid) {
        Some((exit, seen)) if seen >= spawned => record_exit(st, pid, exit, events),
        _ => {}
    }
}
