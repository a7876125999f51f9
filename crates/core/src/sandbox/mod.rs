//! Pods whose sandbox this shim holds itself: containerd 2.x's Sandbox API, for a runtime
//! configured with `sandboxer = "shim"`. CRI then starts no pause container: it makes the
//! pod's network namespace and runs CNI, then asks the shim (CreateSandbox, StartSandbox)
//! for a process whose namespaces the pod's containers join, and waits on it (WaitSandbox).
//! The shim answers with a [`holder`]. On containerd 1.x the pod keeps its pause container,
//! which the shim runs natively.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard};

use crate::changed::Changed;
use std::time::{Duration, SystemTime};

pub mod holder;
mod pod_config;
mod service;

pub use pod_config::{NamespaceMode, PodConfig};
pub use service::{wait_answer, SandboxService};

/// The pods of this shim, shared by the Sandbox and the Task service.
#[derive(Default)]
pub struct Pods {
    pods: Mutex<HashMap<String, Pod>>,
    /// Signalled when a holder exits or is stopped.
    changed: Changed,
}

struct Pod {
    bundle: PathBuf,
    netns: Option<PathBuf>,
    config: PodConfig,
    /// The holder, from StartSandbox on.
    pid: Option<u32>,
    created_at: SystemTime,
    /// Exit status and time, once the holder is gone.
    exit: Option<(u32, SystemTime)>,
}

impl Pods {
    /// Whether the shim holds no pod (then it may exit once it has no container either).
    pub fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// The holder of pod `id`, if this shim holds that pod (containerd asks Task.Connect
    /// with the pod's id when it reconnects after a restart).
    pub fn holder(&self, id: &str) -> Option<u32> {
        self.lock().get(id).map(|p| p.pid.unwrap_or(0))
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Pod>> {
        self.pods.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A process of this shim exited: if it held a pod, the pod is stopped.
    fn exited(&self, pid: u32, code: u32) {
        let mut pods = self.lock();
        for (id, pod) in pods.iter_mut() {
            if pod.pid == Some(pid) && pod.exit.is_none() {
                log::info!("pod {id}: holder {pid} exited with {code}");
                pod.exit = Some((code, SystemTime::now()));
                self.changed.notify_all();
            }
        }
    }

    /// Signalled when a holder exits or a pod is stopped or removed.
    pub fn changed(&self) -> &Changed {
        &self.changed
    }

    /// Pod `id`'s exit once it has stopped (or is gone), `None` while it runs.
    pub fn exit(&self, id: &str) -> Option<(u32, SystemTime)> {
        exit_of(&self.lock(), id)
    }

    /// Wait until pod `id` has stopped (or is gone); its exit.
    fn wait(&self, id: &str, limit: Option<Duration>) -> Option<(u32, SystemTime)> {
        let deadline = limit.map(|l| std::time::Instant::now() + l);
        let mut pods = self.lock();
        loop {
            if let Some(exit) = exit_of(&pods, id) {
                return Some(exit);
            }
            let wait = deadline.map_or(Duration::from_secs(3600), |d| {
                d.saturating_duration_since(std::time::Instant::now())
            });
            if wait.is_zero() {
                return None;
            }
            pods = self
                .changed
                .wait_timeout(pods, wait)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }
}

fn exit_of(pods: &HashMap<String, Pod>, id: &str) -> Option<(u32, SystemTime)> {
    match pods.get(id) {
        None => Some((0, SystemTime::now())),
        Some(pod) => pod.exit,
    }
}
