//! cgroup v1 through cgroupfs, done quickly.
//!
//! The instance process migrates only into the hierarchies that account for or limit what a
//! Wasm guest can use (memory, CPU, pids, and any the spec sets limits in); for the others it
//! only creates the folder, so the container's cgroup looks the same to anyone who reads it. A
//! guest reaches no device, so `devices` has nothing to police, and freezing is not supported.
//!
//! The hierarchies' mount points are read from /proc/self/mountinfo once per process (the
//! zygote reads them before it forks, so instances inherit them). libcgroups' v1 manager reads
//! mountinfo again for each controller, to the end for a controller that is not mounted, and
//! on a node running a thousand pods (a rootfs and a network namespace mount each) one read
//! costs about 15 ms. So joining, the common limits and removal are done here; anything else
//! goes through libcgroups.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use oci_spec::runtime::{LinuxCpu, LinuxMemory, LinuxResources};

use crate::error::{IoContext, Result};

/// A v1 hierarchy: its mount point and its controllers (none for a named one).
type Hierarchy = (PathBuf, Vec<String>);

static HIERARCHIES: OnceLock<Vec<Hierarchy>> = OnceLock::new();

/// The v1 hierarchies mounted here, read once per process.
fn hierarchies() -> Result<&'static [Hierarchy]> {
    if let Some(h) = HIERARCHIES.get() {
        return Ok(h);
    }
    let read = read_hierarchies()?;
    Ok(HIERARCHIES.get_or_init(|| read))
}

/// Read the hierarchies now, so that processes forked later find them read.
pub fn warm() {
    if let Err(e) = hierarchies() {
        log::debug!("cgroup v1 hierarchies: {e}");
    }
}

fn read_hierarchies() -> Result<Vec<Hierarchy>> {
    let info = std::fs::read_to_string("/proc/self/mountinfo")
        .io_context(|| "reading /proc/self/mountinfo".into())?;
    let mut out = Vec::new();
    for line in info.lines() {
        // "<id> <parent> <dev> <root> <mount point> <opts> [optional...] - <fstype> <source> <super opts>"
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let mut r = right.split(' ');
        if r.next() != Some("cgroup") {
            continue;
        }
        let super_opts = r.nth(1).unwrap_or("");
        let controllers: Vec<String> = super_opts
            .split(',')
            .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
            .map(str::to_string)
            .collect();
        if let Some(mount_point) = left.split(' ').nth(4) {
            out.push((PathBuf::from(mount_point), controllers));
        }
    }
    Ok(out)
}

/// Controllers the process must be in: what accounts for a guest, plus what the spec limits.
fn needed(resources: Option<&LinuxResources>) -> BTreeSet<&'static str> {
    let mut set: BTreeSet<&'static str> = ["memory", "cpu", "cpuacct", "pids"].into();
    if let Some(r) = resources {
        if r.cpu()
            .as_ref()
            .is_some_and(|c| c.cpus().is_some() || c.mems().is_some())
        {
            set.insert("cpuset");
        }
        if r.hugepage_limits().as_ref().is_some_and(|h| !h.is_empty()) {
            set.insert("hugetlb");
        }
        if r.block_io().is_some() {
            set.insert("blkio");
        }
        if r.network().is_some() {
            set.insert("net_cls");
            set.insert("net_prio");
        }
    }
    set
}

/// Create `cgroup_path` in every hierarchy and move the calling thread into the needed ones
/// (the process, if it is single-threaded; threads it starts later follow it).
pub fn join_self(cgroup_path: &Path, resources: Option<&LinuxResources>) -> Result<()> {
    join(cgroup_path, resources, "0")
}

/// Create `cgroup_path` in every hierarchy and move single-threaded process `pid` into the
/// needed ones.
pub fn join_pid(cgroup_path: &Path, resources: Option<&LinuxResources>, pid: u32) -> Result<()> {
    join(cgroup_path, resources, &pid.to_string())
}

fn join(cgroup_path: &Path, resources: Option<&LinuxResources>, task: &str) -> Result<()> {
    let relative = relative(cgroup_path);
    let needed = needed(resources);
    let mut joins = Vec::new();
    for (mount_point, controllers) in hierarchies()? {
        if controllers.is_empty() {
            continue; // named hierarchies (name=systemd) carry no controller
        }
        let dir = mount_point.join(relative);
        std::fs::create_dir_all(&dir).io_context(|| format!("creating {}", dir.display()))?;
        if !controllers.iter().any(|c| needed.contains(c.as_str())) {
            continue;
        }
        if controllers.iter().any(|c| c == "cpuset") {
            inherit_cpuset(mount_point, relative)?;
        }
        joins.push(dir.join("tasks"));
    }
    // "0" into `tasks` moves the calling thread alone, and the kernel takes no global lock
    // for it. Any pid (even the caller's own) or a thread group (`cgroup.procs`) makes it
    // take the threadgroup lock, an RCU grace period: 5-20 ms here, against well under 1 ms.
    for tasks in joins {
        std::fs::write(&tasks, task)
            .io_context(|| format!("moving {task} into {}", tasks.display()))?;
    }
    Ok(())
}

fn relative(cgroup_path: &Path) -> &Path {
    cgroup_path.strip_prefix("/").unwrap_or(cgroup_path)
}

/// Set the limits of `resources` that are written here (CPU shares and quota, the memory
/// limit, the pids limit); `false`, having written nothing, if it holds any other, which is
/// then libcgroups' to apply. Device rules are not: the guest is in no devices cgroup.
pub fn apply_common(cgroup_path: &Path, resources: &LinuxResources) -> Result<bool> {
    if !only_common(resources) {
        return Ok(false);
    }
    let mut writes: Vec<(&str, &str, String)> = Vec::new();
    if let Some(cpu) = resources.cpu() {
        if let Some(shares) = cpu.shares().filter(|s| *s != 0) {
            writes.push(("cpu", "cpu.shares", shares.to_string()));
        }
        // The period first: a quota is checked against the period in place.
        if let Some(period) = cpu.period().filter(|p| *p != 0) {
            writes.push(("cpu", "cpu.cfs_period_us", period.to_string()));
        }
        if let Some(quota) = cpu.quota().filter(|q| *q != 0) {
            writes.push(("cpu", "cpu.cfs_quota_us", quota.to_string()));
        }
    }
    if let Some(limit) = resources.memory().as_ref().and_then(|m| m.limit()) {
        writes.push(("memory", "memory.limit_in_bytes", limit.to_string()));
    }
    if let Some(pids) = resources.pids() {
        let limit = pids.limit();
        let value = if limit > 0 {
            limit.to_string()
        } else {
            "max".into()
        };
        writes.push(("pids", "pids.max", value));
    }
    let relative = relative(cgroup_path);
    for (controller, file, value) in writes {
        let Some((mount_point, _)) = hierarchies()?
            .iter()
            .find(|(_, cs)| cs.iter().any(|c| c == controller))
        else {
            return Err(crate::Error::Cgroup(format!(
                "no cgroup v1 hierarchy has the {controller} controller, needed for {file}"
            )));
        };
        let path = mount_point.join(relative).join(file);
        std::fs::write(&path, &value)
            .io_context(|| format!("writing {value} to {}", path.display()))?;
    }
    Ok(true)
}

/// Whether every limit `resources` sets is one [`apply_common`] writes.
fn only_common(r: &LinuxResources) -> bool {
    let cpu_common = r.cpu().as_ref().is_none_or(|c| {
        c == &LinuxCpu::default()
            .set_shares(c.shares())
            .set_quota(c.quota())
            .set_period(c.period())
            .clone()
    });
    let memory_common = r
        .memory()
        .as_ref()
        .is_none_or(|m| m == &LinuxMemory::default().set_limit(m.limit()).clone());
    cpu_common
        && memory_common
        && r.hugepage_limits().as_ref().is_none_or(|h| h.is_empty())
        && r.block_io().is_none()
        && r.network().is_none()
        && r.rdma().as_ref().is_none_or(|m| m.is_empty())
        && r.unified().as_ref().is_none_or(|m| m.is_empty())
}

/// Remove `cgroup_path` from every hierarchy, killing what is left in it, as libcgroups does.
pub fn remove(cgroup_path: &Path) -> Result<()> {
    let relative = relative(cgroup_path);
    for (mount_point, _) in hierarchies()? {
        let dir = mount_point.join(relative);
        if !dir.exists() {
            continue;
        }
        let procs = std::fs::read_to_string(dir.join("cgroup.procs")).unwrap_or_default();
        for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        remove_dir_with_retry(&dir)?;
    }
    Ok(())
}

/// A cgroup whose last process was just killed is busy until the kernel has reaped it.
fn remove_dir_with_retry(dir: &Path) -> Result<()> {
    let mut tries = 0;
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && tries < 20 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(25));
            }
            Err(e) => return Err(e).io_context(|| format!("removing {}", dir.display())),
        }
    }
}

/// A new cpuset cgroup starts with no CPUs and no memory nodes, and nothing can join it until
/// it has some: give each new level its parent's.
fn inherit_cpuset(mount_point: &Path, relative: &Path) -> Result<()> {
    let mut parent = mount_point.to_path_buf();
    for part in relative.components() {
        let dir = parent.join(part);
        for file in ["cpuset.cpus", "cpuset.mems"] {
            let current = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
            if current.trim().is_empty() {
                let from = std::fs::read_to_string(parent.join(file))
                    .io_context(|| format!("reading {}", parent.join(file).display()))?;
                std::fs::write(dir.join(file), from.trim())
                    .io_context(|| format!("writing {}", dir.join(file).display()))?;
            }
        }
        parent = dir;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_add_their_controllers() {
        let r: LinuxResources = serde_json::from_value(serde_json::json!({
            "cpu": {"cpus": "0"},
            "blockIO": {"weight": 100},
        }))
        .unwrap();
        let set = needed(Some(&r));
        for c in ["memory", "cpu", "cpuacct", "pids", "cpuset", "blkio"] {
            assert!(set.contains(c), "{c} missing from {set:?}");
        }
        assert!(!set.contains("devices"));
        assert!(!needed(None).contains("cpuset"));
    }

    fn resources(json: serde_json::Value) -> LinuxResources {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn the_common_limits_are_written_here_and_others_go_to_libcgroups() {
        // What CRI gives a container with requests and limits, and device rules.
        assert!(only_common(&resources(serde_json::json!({
            "devices": [{"allow": false, "access": "rwm"}],
            "cpu": {"shares": 512, "quota": 50000, "period": 100000},
            "memory": {"limit": 268435456},
            "pids": {"limit": 100},
        }))));
        assert!(only_common(&resources(
            serde_json::json!({"cpu": {}, "memory": {}})
        )));
        for other in [
            serde_json::json!({"memory": {"limit": 1048576, "swap": 1048576}}),
            serde_json::json!({"cpu": {"shares": 2, "cpus": "0"}}),
            serde_json::json!({"blockIO": {"weight": 100}}),
            serde_json::json!({"hugepageLimits": [{"pageSize": "2MB", "limit": 0}]}),
            serde_json::json!({"unified": {"memory.high": "1000000"}}),
        ] {
            assert!(!only_common(&resources(other.clone())), "{other}");
        }
    }
}
