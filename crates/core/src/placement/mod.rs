//! Where a container's processes live on the host: its cgroup and its network namespace, from
//! `linux.cgroupsPath`, `linux.resources` and `linux.namespaces`.
//!
//! The instance process moves itself there before the engine starts, as `runc init` does, so
//! the kernel charges the guest's memory and CPU to the container (and, under CRI, to the pod)
//! and its sockets live in the pod's network. This is placement, not capability: what the guest
//! may do is the [`SandboxPolicy`](crate::SandboxPolicy)'s business.

use std::path::PathBuf;

use libcgroups::common::CgroupSetup;
use oci_spec::runtime::{LinuxNamespaceType, LinuxResources, Spec};
use serde::{Deserialize, Serialize};

mod cgroup;
mod cgroup_v1;
mod netns;

pub use cgroup::{CgroupStats, ContainerCgroup};

use crate::error::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Placement {
    pub cgroup: Option<CgroupPlacement>,
    pub network: NetworkNamespace,
}

/// The container's cgroup and the limits set on it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CgroupPlacement {
    /// `linux.cgroupsPath` as given: a path (cgroupfs driver) or `slice:prefix:name` (systemd).
    pub path: PathBuf,
    pub systemd: bool,
    pub resources: Option<LinuxResources>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub enum NetworkNamespace {
    /// The spec asks for no network namespace: the host's.
    Host,
    /// An existing one: CRI's pinned sandbox netns, or `/proc/<pause>/ns/net`.
    Join(PathBuf),
    /// A new, empty one (only loopback), as runc would create.
    New,
}

impl Placement {
    pub fn from_spec(spec: &Spec) -> Result<Placement> {
        let linux = spec.linux().as_ref();
        let cgroup = linux
            .and_then(|l| l.cgroups_path().clone())
            .filter(|p| !p.as_os_str().is_empty())
            .map(|path| {
                let systemd = is_systemd_path(&path);
                CgroupPlacement {
                    path,
                    systemd,
                    resources: linux.and_then(|l| l.resources().clone()),
                }
            });
        let mut network = NetworkNamespace::Host;
        for ns in linux
            .and_then(|l| l.namespaces().as_ref())
            .into_iter()
            .flatten()
        {
            if ns.typ() != LinuxNamespaceType::Network {
                continue;
            }
            network = match ns.path() {
                Some(path) if !path.is_absolute() => {
                    return Err(Error::spec(
                        "linux.namespaces[network].path",
                        format!("{} is not an absolute path", path.display()),
                    ))
                }
                Some(path) => NetworkNamespace::Join(path.clone()),
                None => NetworkNamespace::New,
            };
        }
        Ok(Placement { cgroup, network })
    }

    /// Move the calling process into its cgroup (unless it was born there: `in_cgroup`) and
    /// network namespace. Must run before the process starts threads: a namespace switch and
    /// a v1 cgroup move through `tasks` only hold for the thread that makes them (and the
    /// threads it starts later).
    pub fn enter(&self, id: &str, needs_network: bool, in_cgroup: bool) -> Result<()> {
        if let Some(cg) = self.cgroup.as_ref().filter(|_| !in_cgroup) {
            let cgroup = ContainerCgroup::open(cg, id)?;
            cgroup.join_self()?;
            let limits = cg
                .resources
                .as_ref()
                .filter(|r| *r != &LinuxResources::default());
            if let Some(resources) = limits {
                cgroup.apply(resources)?;
            }
        }
        match &self.network {
            NetworkNamespace::Host => Ok(()),
            NetworkNamespace::Join(path) => netns::join(path),
            // A guest the policy denies all network access cannot tell an empty namespace
            // from none, so spare the kernel a namespace it would only have to tear down.
            NetworkNamespace::New if !needs_network => Ok(()),
            NetworkNamespace::New => netns::unshare(),
        }
    }
}

impl CgroupPlacement {
    /// Read the cgroup v1 hierarchies now: a process forked later (an instance, from the
    /// zygote) then has them without reading /proc/self/mountinfo itself.
    pub fn warm() {
        cgroup_v1::warm();
    }

    /// The container's cgroup made ready to be born into (`CLONE_INTO_CGROUP`): created with
    /// its limits, and its directory opened. Only for a cgroup v2 path of the cgroupfs
    /// driver; `None` otherwise (or if that fails), and the instance joins its cgroup itself.
    pub fn prepare_v2(&self, id: &str) -> Option<std::os::fd::OwnedFd> {
        let unified = matches!(
            libcgroups::common::get_cgroup_setup(),
            Ok(CgroupSetup::Unified)
        );
        if self.systemd || !unified {
            return None;
        }
        let relative = self.path.strip_prefix("/").unwrap_or(&self.path);
        let dir = std::path::Path::new(libcgroups::common::DEFAULT_CGROUP_ROOT).join(relative);
        let prepared = std::fs::create_dir_all(&dir)
            .map_err(|e| format!("creating {}: {e}", dir.display()))
            .and_then(|()| match &self.resources {
                Some(resources) => ContainerCgroup::open(self, id)
                    .and_then(|c| c.apply(resources))
                    .map_err(|e| e.to_string()),
                None => Ok(()),
            })
            .and_then(|()| {
                std::fs::File::open(&dir).map_err(|e| format!("opening {}: {e}", dir.display()))
            });
        match prepared {
            Ok(fd) => Some(fd.into()),
            // The instance joins it itself, as on v1, and says what is wrong if it cannot.
            Err(e) => {
                log::debug!("{id}: not born into its cgroup: {e}");
                None
            }
        }
    }
}

/// runc's rule: the systemd driver's `slice:prefix:name` form, never an absolute path.
fn is_systemd_path(path: &std::path::Path) -> bool {
    let s = path.to_string_lossy();
    !s.starts_with('/') && s.split(':').count() == 3
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(linux: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "linux": linux,
        }))
        .unwrap()
    }

    #[test]
    fn cri_pod_container() {
        let p = Placement::from_spec(&spec(serde_json::json!({
            "cgroupsPath": "/kubepods/besteffort/pod1/c1",
            "resources": {"memory": {"limit": 67108864}},
            "namespaces": [
                {"type": "pid"},
                {"type": "network", "path": "/proc/42/ns/net"},
            ],
        })))
        .unwrap();
        let cg = p.cgroup.unwrap();
        assert_eq!(cg.path, PathBuf::from("/kubepods/besteffort/pod1/c1"));
        assert!(!cg.systemd);
        assert_eq!(
            cg.resources.unwrap().memory().unwrap().limit(),
            Some(67108864)
        );
        assert_eq!(
            p.network,
            NetworkNamespace::Join(PathBuf::from("/proc/42/ns/net"))
        );
    }

    #[test]
    fn systemd_driver_path() {
        let p = Placement::from_spec(&spec(serde_json::json!({
            "cgroupsPath": "system.slice:cri-containerd:c1",
            "namespaces": [{"type": "network"}],
        })))
        .unwrap();
        assert!(p.cgroup.unwrap().systemd);
        assert_eq!(p.network, NetworkNamespace::New);
    }

    #[test]
    fn no_linux_section_means_host() {
        let p = Placement::from_spec(&spec(serde_json::json!({}))).unwrap();
        assert_eq!(p.cgroup, None);
        assert_eq!(p.network, NetworkNamespace::Host);
    }

    #[test]
    fn relative_netns_path_is_refused() {
        let err = Placement::from_spec(&spec(serde_json::json!({
            "namespaces": [{"type": "network", "path": "ns/net"}],
        })))
        .unwrap_err();
        assert!(
            err.to_string().contains("linux.namespaces[network].path"),
            "{err}"
        );
    }
}
