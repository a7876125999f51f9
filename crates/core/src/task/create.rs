//! Create: mount the rootfs, choose the sandbox profile, look at the entrypoint and make
//! the task's backend, a Wasm container (instance process) or a native one (libcontainer).

use std::collections::HashMap;
use std::path::Path;

use containerd_shim::api;
use oci_spec::runtime::Spec;

use super::container::{Container, CreateRequest};
use super::native::NativeContainer;
use super::rootfs::Rootfs;
use super::stdio::StdioPaths;
use super::table::Backend;
use super::TaskService;
use crate::error::Error;
use crate::placement::{CgroupPlacement, Placement};
use crate::policy::profile;
use crate::runtime_options::RuntimeOptions;
use crate::source::probe_entrypoint;

impl TaskService {
    /// Mount the rootfs, look at the entrypoint in it and create the Wasm or native task.
    pub(super) fn create_backend(
        &self,
        req: &api::CreateTaskRequest,
        stdio: &StdioPaths,
    ) -> crate::Result<(Backend, u32, Option<CgroupPlacement>)> {
        let bundle = Path::new(&req.bundle);
        let spec = crate::bundle::load_spec(bundle)?;
        let placement = Placement::from_spec(&spec)?;
        let options = RuntimeOptions::from_any(req.options.as_ref())?;
        let annotations = spec.annotations().clone().unwrap_or_default();
        let profile = profile::choose(&annotations, &options, &self.node)?;
        let rootfs = Rootfs::mount(bundle, &req.rootfs)?;
        if runs_natively(&req.id, &spec, bundle)? {
            // A profile confines Wasm guests; a native process would escape it. The pod's
            // pause container (containerd 1.x) is the runtime's own and runs natively.
            if let Some(chosen) = profile.filter(|_| !is_pod_sandbox(&annotations)) {
                return Err(Error::Denied(format!(
                    "permission denied: the entrypoint is a native program, and profile {} runs WebAssembly only",
                    chosen.profile.name
                )));
            }
            let (c, pid) = NativeContainer::create(
                &req.id,
                bundle,
                &spec,
                placement.cgroup.as_ref(),
                rootfs,
                stdio,
                &self.node.instance_env,
            )?;
            return Ok((Backend::Native(c), pid, placement.cgroup));
        }
        if let Some(chosen) = &profile {
            log::info!(
                "{}: sandbox profile {} (chosen by {})",
                req.id,
                chosen.profile.name,
                chosen.chosen_by
            );
        }
        let c = Container::create(
            CreateRequest {
                id: &req.id,
                bundle,
                spec: &spec,
                placement: &placement,
                stdio,
                terminal: req.terminal,
                containerd: &self.containerd,
                profile: profile.as_ref(),
            },
            rootfs,
            self.compiler()?,
            &self.zygote,
            &self.node,
        )?;
        let pid = c.pid;
        Ok((Backend::Wasm(c), pid, placement.cgroup))
    }
}

/// The pause container of a CRI pod.
fn is_pod_sandbox(annotations: &HashMap<String, String>) -> bool {
    annotations
        .get("io.kubernetes.cri.container-type")
        .is_some_and(|t| t == "sandbox")
}

/// Whether the container's entrypoint, found in its rootfs, is an ELF binary or a `#!`
/// script. A file of no known kind is an error that says so; an entrypoint that is not in
/// the rootfs (it may sit in a mount) is left to the Wasm path, which reports what is wrong.
fn runs_natively(id: &str, spec: &Spec, bundle: &Path) -> crate::Result<bool> {
    let Some(process) = spec.process() else {
        return Ok(false);
    };
    let root = spec
        .root()
        .as_ref()
        .map(|r| bundle.join(r.path()))
        .unwrap_or_else(|| bundle.join("rootfs"));
    match probe_entrypoint(process, &root) {
        Ok((path, kind)) => {
            log::info!("{id}: entrypoint {path} is {kind:?}");
            Ok(kind.is_native())
        }
        Err(e @ Error::NotWasm { .. }) => Err(e),
        Err(e) => {
            log::debug!("{id}: {e}; trying it as Wasm");
            Ok(false)
        }
    }
}
