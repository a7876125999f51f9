//! The container's cgroup, through youki's libcgroups: cgroup v1 and v2, cgroupfs and
//! systemd drivers. The instance process joins it; the task service reads and updates it.

use libcgroups::common::{
    create_cgroup_manager, AnyCgroupManager, CgroupConfig, CgroupManager, ControllerOpt,
};
use oci_spec::runtime::LinuxResources;

use super::CgroupPlacement;
use crate::error::{Error, Result};

pub use libcgroups::stats::Stats as CgroupStats;

pub struct ContainerCgroup {
    manager: AnyCgroupManager,
    path: String,
}

impl ContainerCgroup {
    /// The manager of `placement`'s cgroup; creates nothing yet.
    pub fn open(placement: &CgroupPlacement, id: &str) -> Result<Self> {
        let path = placement.path.display().to_string();
        let manager = create_cgroup_manager(CgroupConfig {
            cgroup_path: placement.path.clone(),
            systemd_cgroup: placement.systemd,
            container_name: id.to_string(),
        })
        .map_err(|e| cgroup_error(&path, "opening", e))?;
        Ok(ContainerCgroup { manager, path })
    }

    /// Move `pid` into the cgroup, creating it if needed, in every hierarchy.
    pub fn join(&self, pid: u32) -> Result<()> {
        self.manager
            .add_task(nix029::unistd::Pid::from_raw(pid as i32))
            .map_err(|e| cgroup_error(&self.path, "joining", e))
    }

    pub fn apply(&self, resources: &LinuxResources) -> Result<()> {
        self.manager
            .apply(&ControllerOpt {
                resources,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .map_err(|e| cgroup_error(&self.path, "applying resources to", e))
    }

    pub fn stats(&self) -> Result<CgroupStats> {
        self.manager
            .stats()
            .map_err(|e| cgroup_error(&self.path, "reading statistics of", e))
    }

    pub fn pids(&self) -> Result<Vec<u32>> {
        let pids = self
            .manager
            .get_all_pids()
            .map_err(|e| cgroup_error(&self.path, "listing the processes of", e))?;
        Ok(pids.into_iter().map(|p| p.as_raw() as u32).collect())
    }

    /// Remove the cgroup; its processes must have exited.
    pub fn remove(&self) -> Result<()> {
        self.manager
            .remove()
            .map_err(|e| cgroup_error(&self.path, "removing", e))
    }
}

fn cgroup_error(path: &str, what: &str, e: impl std::fmt::Display) -> Error {
    Error::Cgroup(format!("{what} cgroup {path}: {e}"))
}
