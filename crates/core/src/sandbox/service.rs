//! The Sandbox ttrpc service (`containerd.runtime.sandbox.v1.Sandbox`), on the same socket
//! as the Task service.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use containerd_shim::monitor::{monitor_subscribe, ExitEvent, Subject, Topic};
use containerd_shim::protos::protobuf::well_known_types::timestamp::Timestamp;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::ttrpc::{self, Code, TtrpcContext};
use containerd_shim_protos::sandbox_api as api;
use containerd_shim_protos::types::platform::Platform;

use super::{holder, Pod, PodConfig, Pods};
use crate::placement::ContainerCgroup;
use crate::task::Zygote;

/// How long StopSandbox waits for a killed holder to be reaped.
const STOP_WAIT: Duration = Duration::from_secs(5);

pub struct SandboxService {
    pods: Arc<Pods>,
    /// Forks the pods' holders.
    zygote: Arc<Zygote>,
    /// Called once a pod is shut down: the server may exit if it has nothing left.
    on_idle: Box<dyn Fn() + Send + Sync>,
}

impl SandboxService {
    pub fn new(pods: Arc<Pods>, zygote: Arc<Zygote>, on_idle: Box<dyn Fn() + Send + Sync>) -> Self {
        let subscription = monitor_subscribe(Topic::Pid).expect("subscribing to process exits");
        let watched = pods.clone();
        std::thread::Builder::new()
            .name("pod-exits".into())
            .spawn(move || {
                for ExitEvent { subject, exit_code } in subscription.rx.iter() {
                    if let Subject::Pid(pid) = subject {
                        watched.exited(pid as u32, exit_code as u32);
                    }
                }
            })
            .expect("starting the pod exits thread");
        SandboxService {
            pods,
            zygote,
            on_idle,
        }
    }
}

impl SandboxService {
    pub fn pods(&self) -> &Pods {
        &self.pods
    }

    /// Not found unless this shim holds pod `id`.
    pub fn ensure_held(&self, id: &str) -> ttrpc::Result<()> {
        match self.pods.lock().contains_key(id) {
            true => Ok(()),
            false => Err(not_found(id)),
        }
    }
}

/// WaitSandbox's answer for a pod that stopped with `(code, at)`.
pub fn wait_answer((code, at): (u32, SystemTime)) -> api::WaitSandboxResponse {
    api::WaitSandboxResponse {
        exit_status: code,
        exited_at: timestamp(at),
        ..Default::default()
    }
}

fn status(code: Code, message: String) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, message))
}

fn not_found(id: &str) -> ttrpc::Error {
    status(Code::NOT_FOUND, format!("pod sandbox {id} not found"))
}

fn timestamp(t: SystemTime) -> MessageField<Timestamp> {
    let d = t.duration_since(SystemTime::UNIX_EPOCH).unwrap_or_default();
    MessageField::some(Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
        ..Default::default()
    })
}

impl containerd_shim_protos::sandbox_sync::Sandbox for SandboxService {
    fn create_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: api::CreateSandboxRequest,
    ) -> ttrpc::Result<api::CreateSandboxResponse> {
        let config = match req.options.as_ref() {
            Some(any) => PodConfig::decode(&any.value).map_err(|e| {
                status(
                    Code::INVALID_ARGUMENT,
                    format!(
                        "pod sandbox {}: reading its PodSandboxConfig: {e}",
                        req.sandbox_id
                    ),
                )
            })?,
            None => PodConfig::default(),
        };
        let mut pods = self.pods.lock();
        if pods.contains_key(&req.sandbox_id) {
            return Err(status(
                Code::ALREADY_EXISTS,
                format!("pod sandbox {} already exists", req.sandbox_id),
            ));
        }
        log::info!(
            "pod {} ({}): sandbox created, network namespace {:?}",
            req.sandbox_id,
            config.name,
            req.netns_path
        );
        pods.insert(
            req.sandbox_id.clone(),
            Pod {
                bundle: PathBuf::from(&req.bundle_path),
                netns: (!req.netns_path.is_empty()).then(|| PathBuf::from(&req.netns_path)),
                config,
                pid: None,
                created_at: SystemTime::now(),
                exit: None,
            },
        );
        Ok(api::CreateSandboxResponse::default())
    }

    fn start_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: api::StartSandboxRequest,
    ) -> ttrpc::Result<api::StartSandboxResponse> {
        let id = &req.sandbox_id;
        let mut pods = self.pods.lock();
        let pod = pods.get_mut(id).ok_or_else(|| not_found(id))?;
        if let Some(pid) = pod.pid {
            return Ok(api::StartSandboxResponse {
                pid,
                created_at: timestamp(pod.created_at),
                ..Default::default()
            });
        }
        let t0 = std::time::Instant::now();
        let pid = holder::spawn(id, pod.netns.as_deref(), &pod.config, &self.zygote)
            .inspect_err(|e| log::warn!("pod {id}: {e}"))?;
        // For `delete` after a shim crash: the holder must not outlive its pod.
        if let Err(e) = crate::shim::write_pid_file(&pod.bundle, pid) {
            log::warn!("pod {id}: {e}");
        }
        pod.pid = Some(pid);
        log::info!(
            "pod {id}: holder pid {pid} started in {} us",
            t0.elapsed().as_micros()
        );
        Ok(api::StartSandboxResponse {
            pid,
            created_at: timestamp(pod.created_at),
            ..Default::default()
        })
    }

    fn platform(
        &self,
        _ctx: &TtrpcContext,
        _req: api::PlatformRequest,
    ) -> ttrpc::Result<api::PlatformResponse> {
        let architecture = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        Ok(api::PlatformResponse {
            platform: MessageField::some(Platform {
                os: "linux".into(),
                architecture: architecture.into(),
                ..Default::default()
            }),
            ..Default::default()
        })
    }

    fn stop_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: api::StopSandboxRequest,
    ) -> ttrpc::Result<api::StopSandboxResponse> {
        let id = &req.sandbox_id;
        let pid = {
            let pods = self.pods.lock();
            let pod = pods.get(id).ok_or_else(|| not_found(id))?;
            if pod.exit.is_some() {
                return Ok(api::StopSandboxResponse::default());
            }
            pod.pid
        };
        match pid {
            Some(pid) => {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid as i32),
                    nix::sys::signal::Signal::SIGKILL,
                );
                if self.pods.wait(id, Some(STOP_WAIT)).is_none() {
                    return Err(status(
                        Code::DEADLINE_EXCEEDED,
                        format!("pod sandbox {id}: holder {pid} did not exit"),
                    ));
                }
            }
            // Created, never started: nothing runs.
            None => {
                if let Some(pod) = self.pods.lock().get_mut(id) {
                    pod.exit = Some((0, SystemTime::now()));
                }
                self.pods.changed.notify_all();
            }
        }
        log::info!("pod {id}: sandbox stopped");
        Ok(api::StopSandboxResponse::default())
    }

    fn wait_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: api::WaitSandboxRequest,
    ) -> ttrpc::Result<api::WaitSandboxResponse> {
        self.ensure_held(&req.sandbox_id)?;
        let exit = self
            .pods
            .wait(&req.sandbox_id, None)
            .expect("an unlimited wait ends with an exit");
        Ok(wait_answer(exit))
    }

    fn sandbox_status(
        &self,
        _ctx: &TtrpcContext,
        req: api::SandboxStatusRequest,
    ) -> ttrpc::Result<api::SandboxStatusResponse> {
        let id = &req.sandbox_id;
        let pods = self.pods.lock();
        let pod = pods.get(id).ok_or_else(|| not_found(id))?;
        // CRI reads these exact words (its PodSandboxState names).
        let ready = pod.pid.is_some() && pod.exit.is_none();
        // `crictl inspectp`'s verbose info, shaped as for a pause container: the holder's
        // pid and the namespace the pod's containers join.
        let mut info = std::collections::HashMap::new();
        if req.verbose {
            let netns = pod.netns.as_ref().map(|p| p.display().to_string());
            let details = serde_json::json!({
                "sandboxer": "shim",
                "pid": pod.pid.unwrap_or(0),
                "holder": "wasm-pod",
                "config": {"name": pod.config.name, "hostname": pod.config.hostname},
                "runtimeSpec": {"linux": {"namespaces": [
                    {"type": "network", "path": netns},
                ]}},
            });
            info.insert("info".to_string(), details.to_string());
        }
        Ok(api::SandboxStatusResponse {
            sandbox_id: id.clone(),
            pid: pod.pid.unwrap_or(0),
            state: if ready {
                "SANDBOX_READY"
            } else {
                "SANDBOX_NOTREADY"
            }
            .into(),
            info,
            created_at: timestamp(pod.created_at),
            exited_at: pod.exit.map(|(_, at)| timestamp(at)).unwrap_or_default(),
            ..Default::default()
        })
    }

    fn ping_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: api::PingRequest,
    ) -> ttrpc::Result<api::PingResponse> {
        match self.pods.lock().contains_key(&req.sandbox_id) {
            true => Ok(api::PingResponse::default()),
            false => Err(not_found(&req.sandbox_id)),
        }
    }

    fn shutdown_sandbox(
        &self,
        _ctx: &TtrpcContext,
        req: api::ShutdownSandboxRequest,
    ) -> ttrpc::Result<api::ShutdownSandboxResponse> {
        let id = &req.sandbox_id;
        let Some(pod) = self.pods.lock().remove(id) else {
            return Ok(api::ShutdownSandboxResponse::default());
        };
        if let (Some(pid), None) = (pod.pid, pod.exit) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = std::fs::remove_file(pod.bundle.join(crate::shim::PID_FILE));
        if let Some(cgroup) = holder::cgroup_of(id, &pod.config) {
            if let Err(e) = ContainerCgroup::open(&cgroup, id).and_then(|c| c.remove()) {
                log::warn!("pod {id}: {e}");
            }
        }
        self.pods.changed.notify_all();
        log::info!("pod {id}: sandbox shut down");
        (self.on_idle)();
        Ok(api::ShutdownSandboxResponse::default())
    }
}
