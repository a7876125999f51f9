//! The container's cgroup: cgroup v1 and v2, cgroupfs and systemd drivers, through youki's
//! libcgroups, except what [`cgroup_v1`](super::cgroup_v1) does faster on v1 cgroupfs
//! (joining, the common limits, removal). The instance process joins it; the task service
//! reads and updates it.

use std::cell::OnceCell;

use libcgroups::common::{
    create_cgroup_manager, AnyCgroupManager, CgroupConfig, CgroupManager, CgroupSetup,
    ControllerOpt,
};
use oci_spec::runtime::LinuxResources;

use super::{cgroup_v1, CgroupPlacement};
use crate::error::{Error, Result};

pub use libcgroups::stats::Stats as CgroupStats;

pub struct ContainerCgroup {
    placement: CgroupPlacement,
    id: String,
    /// v1 through cgroupfs: joined, limited (the common limits) and removed by `cgroup_v1`.
    fast_v1: bool,
    /// libcgroups' manager, made on first use (on v1 it reads mountinfo once per controller).
    manager: OnceCell<AnyCgroupManager>,
}

impl ContainerCgroup {
    /// `placement`'s cgroup; creates and reads nothing yet.
    pub fn open(placement: &CgroupPlacement, id: &str) -> Result<Self> {
        let fast_v1 = !placement.systemd
            && matches!(
                libcgroups::common::get_cgroup_setup(),
                Ok(CgroupSetup::Legacy | CgroupSetup::Hybrid)
            );
        Ok(ContainerCgroup {
            placement: placement.clone(),
            id: id.to_string(),
            fast_v1,
            manager: OnceCell::new(),
        })
    }

    fn manager(&self) -> Result<&AnyCgroupManager> {
        if let Some(m) = self.manager.get() {
            return Ok(m);
        }
        let made = create_cgroup_manager(CgroupConfig {
            cgroup_path: self.placement.path.clone(),
            systemd_cgroup: self.placement.systemd,
            container_name: self.id.clone(),
        })
        .map_err(|e| self.error("opening", e))?;
        Ok(self.manager.get_or_init(|| made))
    }

    /// Move the calling process into the cgroup, creating it if needed; on v1 cgroupfs only
    /// the calling thread (call it while the process has one; threads started later follow).
    pub fn join_self(&self) -> Result<()> {
        if self.fast_v1 {
            return cgroup_v1::join_self(&self.placement.path, self.resources());
        }
        self.join(std::process::id())
    }

    /// Move single-threaded process `pid` into the cgroup, creating it if needed.
    pub fn join(&self, pid: u32) -> Result<()> {
        if self.fast_v1 {
            return cgroup_v1::join_pid(&self.placement.path, self.resources(), pid);
        }
        self.manager()?
            .add_task(nix029::unistd::Pid::from_raw(pid as i32))
            .map_err(|e| self.error("joining", e))
    }

    pub fn apply(&self, resources: &LinuxResources) -> Result<()> {
        if self.fast_v1 && cgroup_v1::apply_common(&self.placement.path, resources)? {
            return Ok(());
        }
        self.manager()?
            .apply(&ControllerOpt {
                resources,
                disable_oom_killer: false,
                oom_score_adj: None,
                freezer_state: None,
            })
            .map_err(|e| self.error("applying resources to", e))
    }

    pub fn stats(&self) -> Result<CgroupStats> {
        self.manager()?
            .stats()
            .map_err(|e| self.error("reading statistics of", e))
    }

    pub fn pids(&self) -> Result<Vec<u32>> {
        let pids = self
            .manager()?
            .get_all_pids()
            .map_err(|e| self.error("listing the processes of", e))?;
        Ok(pids.into_iter().map(|p| p.as_raw() as u32).collect())
    }

    /// Remove the cgroup; what is left in it is killed.
    pub fn remove(&self) -> Result<()> {
        if self.fast_v1 {
            return cgroup_v1::remove(&self.placement.path);
        }
        self.manager()?
            .remove()
            .map_err(|e| self.error("removing", e))
    }

    fn resources(&self) -> Option<&LinuxResources> {
        self.placement.resources.as_ref()
    }

    fn error(&self, what: &str, e: impl std::fmt::Display) -> Error {
        Error::Cgroup(format!(
            "{what} cgroup {}: {e}",
            self.placement.path.display()
        ))
    }
}
