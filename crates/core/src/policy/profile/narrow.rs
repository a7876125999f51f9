//! What a profile means for one container: it grants at most its capabilities, and the spec
//! and annotations narrow them further, never widen them.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use super::{glob_covers, AllowedDir, Profile};
use crate::error::{Error, Result};
use crate::policy::annotations;
use crate::policy::network::{AddrPattern, NetRule, PortRange};
use crate::policy::{Access, SandboxPolicy, WASM_PAGE};

/// Mounts every container gets from its runtime (containerd's default spec: tmpfs at `/dev`,
/// `/dev/shm` and `/run`; CRI's files), which no pod can opt out of: under a profile that
/// does not name them they are withheld from the guest, not refused.
const RUNTIME_MOUNTS: &[&str] = &[
    "/dev",
    "/dev/shm",
    "/run",
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/dev/termination-log",
];

/// What the profile took away without refusing the container.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Narrowed {
    /// Names of `process.env` entries the guest does not see.
    pub withheld_env: Vec<String>,
    /// Runtime-provided mounts the guest does not see.
    pub withheld_mounts: Vec<String>,
}

/// Narrow `policy`, built from the spec, to what `profile` allows. Refuses the container
/// (naming what was denied) where the spec asks for more than the profile grants.
pub fn narrow(
    profile: &Profile,
    policy: &mut SandboxPolicy,
    annotations: &HashMap<String, String>,
) -> Result<Narrowed> {
    let name = &profile.name;
    let mut why = |what: &str, how: String| {
        policy.provenance.insert(what.to_string(), how);
    };

    if let Some(pages) = profile.max_memory_pages {
        let budget = pages * WASM_PAGE;
        if policy.limits.guest_memory.is_none_or(|m| m > budget) {
            policy.limits.guest_memory = Some(budget);
            why(
                "memory",
                format!("profile {name} max_memory_pages = {pages}"),
            );
        }
    }
    if let Some(ms) = profile.execution_timeout_ms {
        let limit = Duration::from_millis(ms);
        if policy.limits.time_limit.is_none_or(|t| t > limit) {
            policy.limits.time_limit = Some(limit);
            why(
                "time_limit",
                format!("profile {name} execution_timeout_ms = {ms}"),
            );
        }
    }

    let network = &mut policy.network;
    if annotations.contains_key(annotations::NET_CONNECT) {
        if let Some(outside) = network
            .connect
            .iter()
            .find(|r| !profile.allowed_hosts.iter().any(|p| r.within(p)))
        {
            return Err(Error::Denied(format!(
                "host not allowed: {outside} ({}) is outside the allowed_hosts of profile {name}",
                annotations::NET_CONNECT
            )));
        }
    } else {
        network.connect = profile.allowed_hosts.clone();
        why("net_connect", format!("profile {name} allowed_hosts"));
    }
    let listen_ok =
        |r: &NetRule| (r.ports.first..=r.ports.last).all(|p| profile.allowed_listen.contains(&p));
    if annotations.contains_key(annotations::NET_LISTEN) {
        if let Some(outside) = network.listen.iter().find(|r| !listen_ok(r)) {
            return Err(Error::Denied(format!(
                "listen address not allowed: {outside} ({}) is outside the allowed_listen of profile {name}",
                annotations::NET_LISTEN
            )));
        }
    } else {
        network.listen = profile
            .allowed_listen
            .iter()
            .map(|&port| NetRule {
                addr: AddrPattern::Any,
                ports: PortRange {
                    first: port,
                    last: port,
                },
            })
            .collect();
        why("net_listen", format!("profile {name} allowed_listen"));
    }
    if let Some(serve) = &policy.http_serve {
        if !profile.allowed_listen.contains(&serve.port) {
            return Err(Error::Denied(format!(
                "listen address not allowed: port {} ({}) is not in the allowed_listen of profile {name}",
                serve.port,
                annotations::HTTP_PROXY_PORT
            )));
        }
    }
    if let Some(cap) = profile.max_network_requests {
        network.request_cap = Some(cap);
        why(
            "request_cap",
            format!("profile {name} max_network_requests = {cap}"),
        );
    }

    let mut narrowed = Narrowed::default();
    policy.env.retain(|(var, _)| {
        let allowed = profile.env_allowed(var);
        if !allowed && !narrowed.withheld_env.contains(var) {
            narrowed.withheld_env.push(var.clone());
        }
        allowed
    });
    why(
        "env",
        format!("spec process.env, names allowed by profile {name} allowed_env_vars"),
    );

    // The rootfs (`/`, the first preopen) is the image itself, not a mount.
    let mut refused = None;
    let mounts = policy
        .preopens
        .iter_mut()
        .skip(1)
        .map(|p| (&p.guest_path, &mut p.access));
    let files = policy
        .file_binds
        .iter_mut()
        .map(|f| (&f.guest_path, &mut f.access));
    for (guest_path, access) in mounts.chain(files) {
        match allowed_dir(&profile.allowed_dirs, guest_path) {
            Some(dir) if dir.readonly => *access = Access::ReadOnly,
            Some(_) => {}
            None if RUNTIME_MOUNTS.contains(&guest_path.as_str()) => {
                narrowed.withheld_mounts.push(guest_path.clone())
            }
            None => {
                refused.get_or_insert_with(|| guest_path.clone());
            }
        }
    }
    if let Some(path) = refused {
        return Err(Error::Denied(format!(
            "permission denied: {path} is not allowed by profile {name}"
        )));
    }
    // `/` is never a runtime mount: the rootfs stays first.
    let withheld = |path: &String| narrowed.withheld_mounts.contains(path);
    let mut withheld_hosts = Vec::new();
    policy.preopens.retain(|p| {
        let keep = !withheld(&p.guest_path);
        if !keep {
            withheld_hosts.push(p.host_path.clone());
        }
        keep
    });
    policy
        .scratch
        .retain(|s| !withheld_hosts.contains(&s.host_path));
    policy.file_binds.retain(|f| !withheld(&f.guest_path));
    why(
        "mounts",
        format!("spec mounts, within profile {name} allowed_dirs"),
    );
    Ok(narrowed)
}

/// The allowed dir that `guest_path` is, or is below (the deepest, if several).
fn allowed_dir<'a>(dirs: &'a [AllowedDir], guest_path: &str) -> Option<&'a AllowedDir> {
    dirs.iter()
        .filter(|d| Path::new(guest_path).starts_with(&d.guest_path))
        .max_by_key(|d| d.guest_path.len())
}

/// `Ok` if `asked` grants nothing `base` does not; else the first field where it grants more.
pub fn at_least_as_strict(
    asked: &Profile,
    base: &Profile,
) -> std::result::Result<(), &'static str> {
    let bound_ok = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (_, None) => true,
        (None, Some(_)) => false,
        (Some(a), Some(b)) => a <= b,
    };
    let checks: [(&'static str, bool); 7] = [
        (
            "max_memory_pages",
            bound_ok(asked.max_memory_pages, base.max_memory_pages),
        ),
        (
            "execution_timeout_ms",
            bound_ok(asked.execution_timeout_ms, base.execution_timeout_ms),
        ),
        (
            "max_network_requests",
            bound_ok(asked.max_network_requests, base.max_network_requests),
        ),
        (
            "allowed_hosts",
            asked
                .allowed_hosts
                .iter()
                .all(|a| base.allowed_hosts.iter().any(|b| a.within(b))),
        ),
        (
            "allowed_listen",
            asked
                .allowed_listen
                .iter()
                .all(|p| base.allowed_listen.contains(p)),
        ),
        (
            "allowed_env_vars",
            asked
                .allowed_env_vars
                .iter()
                .all(|a| base.allowed_env_vars.iter().any(|b| glob_covers(b, a))),
        ),
        (
            "allowed_dirs",
            asked.allowed_dirs.iter().all(|a| {
                allowed_dir(&base.allowed_dirs, &a.guest_path)
                    .is_some_and(|b| a.readonly || !b.readonly)
            }),
        ),
    ];
    match checks.into_iter().find(|(_, ok)| !ok) {
        Some((field, _)) => Err(field),
        None => Ok(()),
    }
}
