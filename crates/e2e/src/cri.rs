//! A blocking CRI client for the CRI end-to-end tests (`tests/cri.rs`).
//!
//! It speaks the Kubernetes CRI (v1, gRPC) to containerd's CRI plugin over
//! containerd's unix socket, as kubelet does, with the `k8s-cri` crate's
//! protobufs and tonic. Every call has a timeout and fails with the method,
//! the object it was about and containerd's status.
//!
//! The private containerd must run with the CRI plugin (`CTD_ENABLE_CRI=1`,
//! see `scripts/lib/containerd.sh`), which also exports what the tests use
//! here: `CTD_CGROUP_PARENT` (pods' cgroups go under it), `CTD_CNI_SUBNET`,
//! `CTD_CNI_BRIDGE`, `CTD_CNI_DATA_DIR` and `CTD_SANDBOX_IMAGE`.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hyper_util::rt::TokioIo;
use k8s_cri::v1 as api;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;
use tonic::transport::{Channel, Endpoint, Uri};

use crate::{config, identifier, Ns};

pub use api::{ContainerState, ContainerStats, ContainerStatus, PodSandboxState, PodSandboxStats};

/// How long one CRI call may take (RunPodSandbox and StopPodSandbox with a
/// grace period included).
pub const CRI_TIMEOUT: Duration = Duration::from_secs(60);

/// The containerd namespace of CRI.
pub const CRI_NAMESPACE: &str = "k8s.io";

/// A failed CRI call: which call, about what, and containerd's answer.
pub struct CriError {
    pub call: String,
    pub status: Option<tonic::Status>,
    pub message: String,
}

impl CriError {
    /// The gRPC code, if containerd answered.
    pub fn code(&self) -> Option<tonic::Code> {
        self.status.as_ref().map(|s| s.code())
    }
}

impl fmt::Display for CriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "CRI {} failed: {}", self.call, self.message)
    }
}

// Debug as Display: `expect` and `unwrap` then print a readable message.
impl fmt::Debug for CriError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for CriError {}

pub type CriResult<T> = Result<T, CriError>;

/// A connection to containerd's CRI services.
pub struct Cri {
    rt: tokio::runtime::Runtime,
    channel: Channel,
    address: PathBuf,
}

impl Cri {
    /// Connects to the containerd of the test run (`CONTAINERD_ADDRESS`).
    pub fn connect() -> CriResult<Cri> {
        Cri::connect_to(Path::new(&config().address))
    }

    /// Connects to the CRI services on the unix socket `path`.
    pub fn connect_to(path: &Path) -> CriResult<Cri> {
        let err = |message: String| CriError {
            call: format!("connect({})", path.display()),
            status: None,
            message,
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| err(format!("tokio runtime: {e}")))?;
        let socket = path.to_path_buf();
        // The URI is required by tonic but unused: the connector dials the socket.
        let endpoint = Endpoint::try_from("http://localhost")
            .map_err(|e| err(e.to_string()))?
            .connect_timeout(Duration::from_secs(10));
        let channel = {
            let _guard = rt.enter();
            endpoint.connect_with_connector_lazy(tower::service_fn(move |_: Uri| {
                let socket = socket.clone();
                async move {
                    Ok::<_, std::io::Error>(TokioIo::new(
                        tokio::net::UnixStream::connect(socket).await?,
                    ))
                }
            }))
        };
        Ok(Cri {
            rt,
            channel,
            address: path.to_path_buf(),
        })
    }

    /// A new connection to the same socket (e.g. after containerd restarted).
    pub fn reconnect(&self) -> CriResult<Cri> {
        Cri::connect_to(&self.address)
    }

    fn runtime(&self) -> RuntimeServiceClient<Channel> {
        RuntimeServiceClient::new(self.channel.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    fn images(&self) -> ImageServiceClient<Channel> {
        ImageServiceClient::new(self.channel.clone())
    }

    fn call<T, F>(&self, call: impl Into<String>, timeout: Duration, fut: F) -> CriResult<T>
    where
        F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let call = call.into();
        match self
            .rt
            .block_on(async { tokio::time::timeout(timeout, fut).await })
        {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(CriError {
                call,
                message: format!("{:?}: {}", status.code(), status.message()),
                status: Some(status),
            }),
            Err(_) => Err(CriError {
                call,
                status: None,
                message: format!(
                    "no answer within {}s; the shims' processes now:\n{}",
                    timeout.as_secs(),
                    crate::where_processes_wait("containerd-shim-")
                ),
            }),
        }
    }

    /// `Version`: (runtime name, runtime version, CRI API version).
    pub fn version(&self) -> CriResult<(String, String, String)> {
        let v = self.call(
            "Version",
            CRI_TIMEOUT,
            self.runtime().version(api::VersionRequest {
                version: "v1".into(),
            }),
        )?;
        Ok((v.runtime_name, v.runtime_version, v.runtime_api_version))
    }

    /// `ImageStatus`: whether containerd's CRI knows the image `reference`.
    pub fn image_present(&self, reference: &str) -> CriResult<bool> {
        let r = self.call(
            format!("ImageStatus({reference})"),
            CRI_TIMEOUT,
            self.images().image_status(api::ImageStatusRequest {
                image: Some(api::ImageSpec {
                    image: reference.into(),
                    ..Default::default()
                }),
                verbose: false,
            }),
        )?;
        Ok(r.image.is_some())
    }

    /// `RunPodSandbox`: returns the pod sandbox id.
    pub fn run_pod(&self, config: &api::PodSandboxConfig, handler: &str) -> CriResult<String> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let r = self.call(
            format!("RunPodSandbox({name}, handler {handler})"),
            CRI_TIMEOUT,
            self.runtime().run_pod_sandbox(api::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: handler.into(),
            }),
        )?;
        Ok(r.pod_sandbox_id)
    }

    pub fn stop_pod(&self, pod: &str) -> CriResult<()> {
        self.call(
            format!("StopPodSandbox({pod})"),
            CRI_TIMEOUT * 2,
            self.runtime().stop_pod_sandbox(api::StopPodSandboxRequest {
                pod_sandbox_id: pod.into(),
            }),
        )
        .map(drop)
    }

    pub fn remove_pod(&self, pod: &str) -> CriResult<()> {
        self.call(
            format!("RemovePodSandbox({pod})"),
            CRI_TIMEOUT,
            self.runtime()
                .remove_pod_sandbox(api::RemovePodSandboxRequest {
                    pod_sandbox_id: pod.into(),
                }),
        )
        .map(drop)
    }

    /// `PodSandboxStatus` (verbose: `info` holds containerd's details, e.g.
    /// the network namespace path and the sandbox's pid).
    pub fn pod_status(
        &self,
        pod: &str,
    ) -> CriResult<(api::PodSandboxStatus, HashMap<String, String>)> {
        let r = self.call(
            format!("PodSandboxStatus({pod})"),
            CRI_TIMEOUT,
            self.runtime()
                .pod_sandbox_status(api::PodSandboxStatusRequest {
                    pod_sandbox_id: pod.into(),
                    verbose: true,
                }),
        )?;
        let status = r.status.ok_or_else(|| CriError {
            call: format!("PodSandboxStatus({pod})"),
            status: None,
            message: "the answer has no status".into(),
        })?;
        Ok((status, r.info))
    }

    /// `ListPodSandbox`: ids of all pod sandboxes.
    pub fn list_pods(&self) -> CriResult<Vec<String>> {
        let r = self.call(
            "ListPodSandbox",
            CRI_TIMEOUT,
            self.runtime()
                .list_pod_sandbox(api::ListPodSandboxRequest { filter: None }),
        )?;
        Ok(r.items.into_iter().map(|p| p.id).collect())
    }

    /// `CreateContainer` in `pod` (whose config is `pod_config`): the container id.
    pub fn create_container(
        &self,
        pod: &str,
        pod_config: &api::PodSandboxConfig,
        config: &api::ContainerConfig,
    ) -> CriResult<String> {
        let name = config
            .metadata
            .as_ref()
            .map(|m| m.name.clone())
            .unwrap_or_default();
        let r = self.call(
            format!("CreateContainer({name} in {pod})"),
            CRI_TIMEOUT,
            self.runtime()
                .create_container(api::CreateContainerRequest {
                    pod_sandbox_id: pod.into(),
                    config: Some(config.clone()),
                    sandbox_config: Some(pod_config.clone()),
                }),
        )?;
        Ok(r.container_id)
    }

    pub fn start_container(&self, id: &str) -> CriResult<()> {
        self.call(
            format!("StartContainer({id})"),
            CRI_TIMEOUT,
            self.runtime().start_container(api::StartContainerRequest {
                container_id: id.into(),
            }),
        )
        .map(drop)
    }

    /// `UpdateContainerResources` with new Linux resources.
    pub fn update_container_resources(
        &self,
        id: &str,
        resources: api::LinuxContainerResources,
    ) -> CriResult<()> {
        self.call(
            format!("UpdateContainerResources({id})"),
            CRI_TIMEOUT,
            self.runtime()
                .update_container_resources(api::UpdateContainerResourcesRequest {
                    container_id: id.into(),
                    linux: Some(resources),
                    ..Default::default()
                }),
        )
        .map(drop)
    }

    /// `StopContainer` with a grace period of `grace` seconds.
    pub fn stop_container(&self, id: &str, grace: i64) -> CriResult<()> {
        self.call(
            format!("StopContainer({id}, timeout {grace}s)"),
            CRI_TIMEOUT + Duration::from_secs(grace.max(0) as u64),
            self.runtime().stop_container(api::StopContainerRequest {
                container_id: id.into(),
                timeout: grace,
            }),
        )
        .map(drop)
    }

    pub fn remove_container(&self, id: &str) -> CriResult<()> {
        self.call(
            format!("RemoveContainer({id})"),
            CRI_TIMEOUT,
            self.runtime()
                .remove_container(api::RemoveContainerRequest {
                    container_id: id.into(),
                }),
        )
        .map(drop)
    }

    pub fn container_status(&self, id: &str) -> CriResult<api::ContainerStatus> {
        let call = format!("ContainerStatus({id})");
        let r = self.call(
            call.clone(),
            CRI_TIMEOUT,
            self.runtime()
                .container_status(api::ContainerStatusRequest {
                    container_id: id.into(),
                    verbose: false,
                }),
        )?;
        r.status.ok_or_else(|| CriError {
            call,
            status: None,
            message: "the answer has no status".into(),
        })
    }

    /// `ListContainers` of one pod (all pods with `None`): (id, name, state).
    pub fn list_containers(
        &self,
        pod: Option<&str>,
    ) -> CriResult<Vec<(String, String, ContainerState)>> {
        let r = self.call(
            "ListContainers",
            CRI_TIMEOUT,
            self.runtime().list_containers(api::ListContainersRequest {
                filter: pod.map(|p| api::ContainerFilter {
                    pod_sandbox_id: p.into(),
                    ..Default::default()
                }),
            }),
        )?;
        Ok(r.containers
            .into_iter()
            .map(|c| {
                let name = c.metadata.map(|m| m.name).unwrap_or_default();
                let state =
                    ContainerState::try_from(c.state).unwrap_or(ContainerState::ContainerUnknown);
                (c.id, name, state)
            })
            .collect())
    }

    pub fn container_stats(&self, id: &str) -> CriResult<api::ContainerStats> {
        let call = format!("ContainerStats({id})");
        let r = self.call(
            call.clone(),
            CRI_TIMEOUT,
            self.runtime().container_stats(api::ContainerStatsRequest {
                container_id: id.into(),
            }),
        )?;
        r.stats.ok_or_else(|| CriError {
            call,
            status: None,
            message: "the answer has no stats".into(),
        })
    }

    /// `ListContainerStats` of one pod's containers.
    pub fn list_container_stats(&self, pod: &str) -> CriResult<Vec<api::ContainerStats>> {
        let r = self.call(
            format!("ListContainerStats(pod {pod})"),
            CRI_TIMEOUT,
            self.runtime()
                .list_container_stats(api::ListContainerStatsRequest {
                    filter: Some(api::ContainerStatsFilter {
                        pod_sandbox_id: pod.into(),
                        ..Default::default()
                    }),
                }),
        )?;
        Ok(r.stats)
    }

    pub fn pod_stats(&self, pod: &str) -> CriResult<api::PodSandboxStats> {
        let call = format!("PodSandboxStats({pod})");
        let r = self.call(
            call.clone(),
            CRI_TIMEOUT,
            self.runtime()
                .pod_sandbox_stats(api::PodSandboxStatsRequest {
                    pod_sandbox_id: pod.into(),
                }),
        )?;
        r.stats.ok_or_else(|| CriError {
            call,
            status: None,
            message: "the answer has no stats".into(),
        })
    }

    /// `ExecSync` of `cmd` in container `id`, with a timeout of `timeout` seconds.
    pub fn exec_sync(&self, id: &str, cmd: &[&str], timeout: i64) -> CriResult<ExecResult> {
        let r = self.call(
            format!("ExecSync({id}, {cmd:?})"),
            CRI_TIMEOUT + Duration::from_secs(timeout.max(0) as u64),
            self.runtime().exec_sync(api::ExecSyncRequest {
                container_id: id.into(),
                cmd: cmd.iter().map(|s| s.to_string()).collect(),
                timeout,
            }),
        )?;
        Ok(ExecResult {
            stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
            code: r.exit_code,
        })
    }

    /// Polls ContainerStatus until the container is in `state`; the status
    /// then, or an error naming the last state seen.
    pub fn wait_container_state(
        &self,
        id: &str,
        state: ContainerState,
        timeout: Duration,
    ) -> CriResult<api::ContainerStatus> {
        let start = Instant::now();
        loop {
            let status = self.container_status(id)?;
            if status.state == state as i32 {
                return Ok(status);
            }
            if start.elapsed() >= timeout {
                return Err(CriError {
                    call: format!("ContainerStatus({id})"),
                    status: None,
                    message: format!(
                        "not {state:?} within {}s; last status: {}",
                        timeout.as_secs(),
                        describe_status(&status)
                    ),
                });
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the container to exit with `reason`. containerd learns of an
    /// exit (the task's Wait) and of an OOM kill (an event) on separate paths,
    /// so the reason may follow the exit by a moment, as kubelet's next look
    /// would see; it must be there within 5 s of the exit.
    pub fn wait_exit_reason(
        &self,
        id: &str,
        reason: &str,
        timeout: Duration,
    ) -> CriResult<api::ContainerStatus> {
        let exited = self.wait_container_state(id, ContainerState::ContainerExited, timeout)?;
        let start = Instant::now();
        let mut status = exited;
        while status.reason != reason && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(100));
            status = self.container_status(id)?;
        }
        if status.reason == reason {
            return Ok(status);
        }
        Err(CriError {
            call: format!("ContainerStatus({id})"),
            status: None,
            message: format!(
                "exited, but not with reason {reason:?} within 5s: {}",
                describe_status(&status)
            ),
        })
    }
}

/// What ExecSync returned.
#[derive(Debug, Clone)]
pub struct ExecResult {
    pub stdout: String,
    pub stderr: String,
    pub code: i32,
}

/// A one-line summary of a container status, for failure messages.
pub fn describe_status(s: &api::ContainerStatus) -> String {
    let state = ContainerState::try_from(s.state).unwrap_or(ContainerState::ContainerUnknown);
    format!(
        "{} {:?} exit {} reason {:?} message {:?}",
        s.id, state, s.exit_code, s.reason, s.message
    )
}

/// One line of a CRI container log file:
/// `<RFC 3339 time> <stdout|stderr> <F|P> <text>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: String,
    pub stream: String,
    /// `P`: a part of a line, continued by the next line of the same stream.
    pub partial: bool,
    pub text: String,
}

/// Parses the CRI log file at `path` (missing file: no lines); a line that
/// is not in the CRI format is an error naming it.
pub fn read_log(path: &Path) -> Result<Vec<LogLine>, String> {
    let raw = match std::fs::read(path) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(format!("reading {}: {e}", path.display())),
    };
    let text = String::from_utf8_lossy(&raw);
    text.lines()
        .enumerate()
        .map(|(n, line)| {
            parse_log_line(line).ok_or_else(|| {
                format!(
                    "{} line {}: not a CRI log line: {:?}",
                    path.display(),
                    n + 1,
                    line.chars().take(200).collect::<String>()
                )
            })
        })
        .collect()
}

/// Parses one CRI log line.
pub fn parse_log_line(line: &str) -> Option<LogLine> {
    let mut parts = line.splitn(4, ' ');
    let time = parts.next()?;
    let stream = parts.next()?;
    let tag = parts.next()?;
    let text = parts.next().unwrap_or("");
    if !time.contains('T') || !matches!(stream, "stdout" | "stderr") {
        return None;
    }
    // The tag may carry more flags after the first, separated by ':'.
    let partial = match tag.split(':').next()? {
        "F" => false,
        "P" => true,
        _ => return None,
    };
    Some(LogLine {
        time: time.into(),
        stream: stream.into(),
        partial,
        text: text.into(),
    })
}

/// The lines a program wrote on `stream`, with partial lines joined; a last
/// partial line with no continuation is returned as it is.
pub fn log_text_lines(lines: &[LogLine], stream: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut pending = String::new();
    let mut open = false;
    for l in lines.iter().filter(|l| l.stream == stream) {
        pending.push_str(&l.text);
        open = true;
        if !l.partial {
            out.push(std::mem::take(&mut pending));
            open = false;
        }
    }
    if open {
        out.push(pending);
    }
    out
}

/// Imports the test image `name` into CRI's namespace (once per process) and
/// returns its reference.
pub fn cri_image(name: &str) -> String {
    Ns::named(CRI_NAMESPACE).image(name)
}

/// The private containerd's CRI settings that ctd_start exports.
#[derive(Debug, Clone)]
pub struct CriEnv {
    /// Cgroup under which pods put their cgroup_parent (e.g. `/ctd-1a2b3c4d`).
    pub cgroup_parent: String,
    pub subnet: Option<String>,
    pub bridge: Option<String>,
    pub ipam_dir: Option<PathBuf>,
    /// Where the tests put pod log folders (under `$CTD_DIR`).
    pub log_root: PathBuf,
}

/// Reads [`CriEnv`] from the environment; panics with what to do when the
/// containerd was not started with CRI.
pub fn cri_env() -> CriEnv {
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let cgroup_parent = var("CTD_CGROUP_PARENT").unwrap_or_else(|| {
        panic!(
            "CTD_CGROUP_PARENT is not set: the CRI tests need a private containerd started \
             with CTD_ENABLE_CRI=1 (scripts/test's cri phases do that; by hand: source \
             scripts/lib/containerd.sh, CTD_ENABLE_CRI=1 ctd_start)"
        )
    });
    let log_root = config()
        .ctd_dir
        .as_ref()
        .map(|d| d.join("cri-logs"))
        .unwrap_or_else(|| std::env::temp_dir().join("cri-logs"));
    CriEnv {
        cgroup_parent,
        subnet: var("CTD_CNI_SUBNET"),
        bridge: var("CTD_CNI_BRIDGE"),
        ipam_dir: var("CTD_CNI_DATA_DIR").map(PathBuf::from),
        log_root,
    }
}

/// A pod sandbox config: name and uid from `name` (plus a process-unique
/// suffix), namespace `e2e`, its log folder under [`CriEnv::log_root`], its
/// cgroup parent under [`CriEnv::cgroup_parent`].
pub fn pod_config(name: &str) -> api::PodSandboxConfig {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(1);
    let env = cri_env();
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    let name = format!("{}-{}-{n}", identifier(name), std::process::id());
    let uid = format!("uid-{name}");
    let log_dir = env.log_root.join(&name);
    std::fs::create_dir_all(&log_dir)
        .unwrap_or_else(|e| panic!("mkdir {}: {e}", log_dir.display()));
    api::PodSandboxConfig {
        metadata: Some(api::PodSandboxMetadata {
            name: name.clone(),
            uid: uid.clone(),
            namespace: "e2e".into(),
            attempt: 0,
        }),
        hostname: name.chars().take(63).collect(),
        log_directory: log_dir.to_string_lossy().into_owned(),
        linux: Some(api::LinuxPodSandboxConfig {
            cgroup_parent: format!("{}/pod{uid}", env.cgroup_parent),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// A container config: `image` (a reference), command and args, its log file
/// `<name>.log` in the pod's log folder.
pub fn container_config(
    name: &str,
    image: &str,
    command: &[&str],
    args: &[&str],
) -> api::ContainerConfig {
    api::ContainerConfig {
        metadata: Some(api::ContainerMetadata {
            name: name.into(),
            attempt: 0,
        }),
        image: Some(api::ImageSpec {
            image: image.into(),
            ..Default::default()
        }),
        command: command.iter().map(|s| s.to_string()).collect(),
        args: args.iter().map(|s| s.to_string()).collect(),
        log_path: format!("{name}.log"),
        linux: Some(api::LinuxContainerConfig {
            resources: Some(api::LinuxContainerResources::default()),
            security_context: None,
        }),
        ..Default::default()
    }
}

/// Adds `K=V` to a container config's environment.
pub fn with_env(mut c: api::ContainerConfig, key: &str, value: &str) -> api::ContainerConfig {
    c.envs.push(api::KeyValue {
        key: key.into(),
        value: value.into(),
    });
    c
}

/// Adds an annotation to a container config (CRI passes it into the OCI spec).
pub fn with_annotation(
    mut c: api::ContainerConfig,
    key: &str,
    value: &str,
) -> api::ContainerConfig {
    c.annotations.insert(key.into(), value.into());
    c
}

/// Sets the memory limit of a container config.
pub fn with_memory_limit(mut c: api::ContainerConfig, bytes: i64) -> api::ContainerConfig {
    let linux = c.linux.get_or_insert_with(Default::default);
    linux
        .resources
        .get_or_insert_with(Default::default)
        .memory_limit_in_bytes = bytes;
    c
}

/// A running pod sandbox owned by a test: stopped and removed on drop (and
/// its pod cgroup parent removed, as kubelet would) unless [`Pod::remove`]
/// already did.
pub struct Pod<'a> {
    pub cri: &'a Cri,
    pub id: String,
    pub config: api::PodSandboxConfig,
    pub handler: String,
    armed: bool,
}

impl<'a> Pod<'a> {
    /// RunPodSandbox with `handler`; the sandbox image is imported first.
    pub fn run(cri: &'a Cri, name: &str, handler: &str) -> CriResult<Pod<'a>> {
        Pod::run_with(cri, pod_config(name), handler)
    }

    pub fn run_with(
        cri: &'a Cri,
        config: api::PodSandboxConfig,
        handler: &str,
    ) -> CriResult<Pod<'a>> {
        cri_image("pause");
        let id = cri.run_pod(&config, handler)?;
        Ok(Pod {
            cri,
            id,
            config,
            handler: handler.into(),
            armed: true,
        })
    }

    /// The pod's log folder.
    pub fn log_dir(&self) -> PathBuf {
        PathBuf::from(&self.config.log_directory)
    }

    /// The pod's cgroup parent (`CTD_CGROUP_PARENT/pod<uid>`).
    pub fn cgroup_parent(&self) -> String {
        self.config
            .linux
            .as_ref()
            .map(|l| l.cgroup_parent.clone())
            .unwrap_or_default()
    }

    /// The log file of container `name` (as [`container_config`] names it).
    pub fn log_path(&self, name: &str) -> PathBuf {
        self.log_dir().join(format!("{name}.log"))
    }

    /// CreateContainer + StartContainer: the container id.
    pub fn start(&self, config: &api::ContainerConfig) -> CriResult<String> {
        let id = self.cri.create_container(&self.id, &self.config, config)?;
        self.cri.start_container(&id)?;
        Ok(id)
    }

    /// The pod's IPv4 address from PodSandboxStatus.
    pub fn ip(&self) -> CriResult<String> {
        Ok(self
            .cri
            .pod_status(&self.id)?
            .0
            .network
            .map(|n| n.ip)
            .unwrap_or_default())
    }

    /// StopPodSandbox + RemovePodSandbox, then removes the pod's cgroup
    /// parent (empty by then; CRI leaves it, kubelet removes it).
    pub fn remove(mut self) -> CriResult<()> {
        self.armed = false;
        self.cri.stop_pod(&self.id)?;
        self.cri.remove_pod(&self.id)?;
        remove_cgroup(&self.cgroup_parent()).map_err(|message| CriError {
            call: format!("removing the pod cgroup of {}", self.id),
            status: None,
            message,
        })
    }

    /// Do not stop and remove the pod on drop.
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for Pod<'_> {
    fn drop(&mut self) {
        if self.armed {
            let _ = self.cri.stop_pod(&self.id);
            let _ = self.cri.remove_pod(&self.id);
            let _ = remove_cgroup(&self.cgroup_parent());
        }
    }
}

/// The folders of cgroup `path` (e.g. `/ctd-1a2b/poduid`) that exist: the
/// unified one on cgroup v2, one per hierarchy on v1.
pub fn cgroup_dirs(path: &str) -> Vec<PathBuf> {
    let rel = path.trim_start_matches('/');
    let root = Path::new("/sys/fs/cgroup");
    let mut found = Vec::new();
    if rel.is_empty() {
        return found;
    }
    if root.join("cgroup.controllers").exists() {
        let p = root.join(rel);
        if p.is_dir() {
            found.push(p);
        }
        return found;
    }
    if let Ok(entries) = std::fs::read_dir(root) {
        for entry in entries.flatten() {
            // Skip the symlinks of joined hierarchies (cpu -> cpu,cpuacct).
            if entry.file_type().map(|t| t.is_symlink()).unwrap_or(true) {
                continue;
            }
            let p = entry.path().join(rel);
            if p.is_dir() {
                found.push(p);
            }
        }
    }
    found
}

/// Removes cgroup `path` and the cgroups under it, deepest first, in every
/// hierarchy; fails naming what could not be removed.
pub fn remove_cgroup(path: &str) -> Result<(), String> {
    let mut failed = Vec::new();
    for dir in cgroup_dirs(path) {
        let mut dirs = Vec::new();
        let mut stack = vec![dir];
        while let Some(d) = stack.pop() {
            if let Ok(entries) = std::fs::read_dir(&d) {
                for e in entries.flatten() {
                    if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                        stack.push(e.path());
                    }
                }
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            if let Err(e) = std::fs::remove_dir(d) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    failed.push(format!("{}: {e}", d.display()));
                }
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(format!("could not remove cgroups: {}", failed.join("; ")))
    }
}

/// A plain HTTP/1.0 GET of `http://addr/path` from this host: (status line, body).
pub fn http_get(addr: &str, path: &str, timeout: Duration) -> Result<(String, String), String> {
    use std::io::{Read, Write};
    let sock: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| format!("bad address {addr}: {e}"))?;
    let mut s = std::net::TcpStream::connect_timeout(&sock, timeout)
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    s.set_read_timeout(Some(timeout)).ok();
    s.set_write_timeout(Some(timeout)).ok();
    write!(s, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")
        .map_err(|e| format!("sending to {addr}: {e}"))?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)
        .map_err(|e| format!("reading from {addr}: {e}"))?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("no HTTP response head from {addr}: {text:?}"))?;
    Ok((
        head.lines().next().unwrap_or("").to_string(),
        body.to_string(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_lines_parse_and_join() {
        let raw = "2024-01-01T00:00:00.000000001Z stdout P abc\n\
                   2024-01-01T00:00:00.000000002Z stderr F err line\n\
                   2024-01-01T00:00:00.000000003Z stdout F def\n\
                   2024-01-01T00:00:00.000000004Z stdout F \n\
                   2024-01-01T00:00:00.000000005Z stdout P tail";
        let lines: Vec<LogLine> = raw.lines().map(|l| parse_log_line(l).unwrap()).collect();
        assert!(lines[0].partial && !lines[1].partial);
        assert_eq!(log_text_lines(&lines, "stdout"), ["abcdef", "", "tail"]);
        assert_eq!(log_text_lines(&lines, "stderr"), ["err line"]);
        assert_eq!(parse_log_line("garbage"), None);
        assert_eq!(parse_log_line("2024-01-01T00:00:00Z stdin F x"), None);
        assert_eq!(parse_log_line("2024-01-01T00:00:00Z stdout X x"), None);
    }
}
