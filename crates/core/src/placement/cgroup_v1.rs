//! Joining a cgroup v1 hierarchy set quickly.
//!
//! The instance process migrates only into the hierarchies that account for or limit what a
//! Wasm guest can use (memory, CPU, pids, and any the spec sets limits in); for the others it
//! only creates the folder, so the container's cgroup looks the same to anyone who reads it. A
//! guest reaches no device, so `devices` has nothing to police, and freezing is not supported.
//! libcgroups' own v1 manager would migrate into every hierarchy and re-read mountinfo for
//! each, which costs milliseconds on every start.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use oci_spec::runtime::LinuxResources;

use crate::error::{IoContext, Result};

/// The v1 hierarchies mounted here: (mount point, controllers), from /proc/self/mountinfo.
fn hierarchies() -> Result<Vec<(PathBuf, Vec<String>)>> {
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

/// Create `cgroup_path` in every hierarchy and move the calling process into the needed
/// ones. The caller must be single-threaded: it moves its one thread.
pub fn join_self(cgroup_path: &Path, resources: Option<&LinuxResources>) -> Result<()> {
    let relative = cgroup_path.strip_prefix("/").unwrap_or(cgroup_path);
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
            inherit_cpuset(&mount_point, relative)?;
        }
        joins.push(dir.join("tasks"));
    }
    // "0" into `tasks` moves the calling thread alone. Moving a whole thread group (through
    // `cgroup.procs`, or any pid) makes the kernel wait for an RCU grace period: 5-20 ms
    // here, against well under 1 ms for the thread. With one thread, it is the process.
    for tasks in joins {
        std::fs::write(&tasks, "0")
            .io_context(|| format!("moving this process into {}", tasks.display()))?;
    }
    Ok(())
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
}
