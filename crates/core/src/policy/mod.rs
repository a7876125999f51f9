//! The sandbox policy: everything a guest may see or do, derived from the OCI spec alone.
//!
//! `SandboxPolicy::from_spec` is a pure function (no I/O) so that every rule here is unit-tested;
//! engines only apply the resulting value and never look at the spec themselves.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::{Mount, Spec};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Whether a preopened directory may be written through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Access {
    ReadOnly,
    ReadWrite,
}

/// One host directory made visible to the guest at `guest_path`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preopen {
    pub guest_path: String,
    pub host_path: PathBuf,
    pub access: Access,
}

/// The capabilities of one Wasm container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxPolicy {
    /// argv as the guest sees it; `argv[0]` is the module path without any `#function`.
    pub args: Vec<String>,
    /// Exactly `process.env`, in order; nothing of the shim's own environment.
    pub env: Vec<(String, String)>,
    /// `process.cwd`, absolute.
    pub cwd: String,
    /// The rootfs as `/` first, then one entry per exposed mount, in spec order.
    pub preopens: Vec<Preopen>,
}

/// Filesystems that describe the kernel, not data: never exposed to a guest.
const KERNEL_FILESYSTEMS: &[&str] = &[
    "proc",
    "sysfs",
    "devpts",
    "mqueue",
    "cgroup",
    "cgroup2",
    "securityfs",
    "debugfs",
];

impl SandboxPolicy {
    /// Build the policy for a container whose bundle is at `bundle`.
    pub fn from_spec(spec: &Spec, bundle: &Path) -> Result<Self> {
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| Error::spec("process", "missing"))?;

        let mut args = process.args().clone().unwrap_or_default();
        if args.is_empty() {
            return Err(Error::spec(
                "process.args",
                "empty: the image has no entrypoint or command naming a .wasm module",
            ));
        }
        // `module.wasm#function` selects an export; the guest's argv[0] is the plain path.
        if let Some((path, _)) = args[0].split_once('#') {
            args[0] = path.to_string();
        }

        let env = process
            .env()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .map(|kv| parse_env(kv))
            .collect::<Result<Vec<_>>>()?;

        let cwd = process.cwd().to_string_lossy().into_owned();
        if !cwd.starts_with('/') {
            return Err(Error::spec(
                "process.cwd",
                format!("{cwd:?} is not absolute"),
            ));
        }

        let root = spec
            .root()
            .as_ref()
            .ok_or_else(|| Error::spec("root", "missing"))?;
        let root_path = if root.path().is_absolute() {
            root.path().clone()
        } else {
            bundle.join(root.path())
        };
        let root_access = if root.readonly().unwrap_or(false) {
            Access::ReadOnly
        } else {
            Access::ReadWrite
        };
        let mut preopens = vec![Preopen {
            guest_path: "/".to_string(),
            host_path: root_path,
            access: root_access,
        }];

        for (index, mount) in spec
            .mounts()
            .as_deref()
            .unwrap_or_default()
            .iter()
            .enumerate()
        {
            if let Some(preopen) = mount_preopen(index, mount)? {
                // A later mount at the same destination shadows an earlier one, as in Linux.
                preopens.retain(|p| p.guest_path != preopen.guest_path);
                preopens.push(preopen);
            }
        }

        Ok(SandboxPolicy {
            args,
            env,
            cwd,
            preopens,
        })
    }

    /// The function to call instead of the command's `_start`, from `path#function`.
    pub fn entry_function(spec: &Spec) -> Option<String> {
        let arg0 = spec.process().as_ref()?.args().as_ref()?.first()?;
        arg0.split_once('#').map(|(_, f)| f.to_string())
    }
}

fn parse_env(kv: &str) -> Result<(String, String)> {
    match kv.split_once('=') {
        Some((k, _)) if k.is_empty() => Err(Error::spec(
            "process.env",
            format!("{kv:?} has an empty name"),
        )),
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        // `FOO` with no `=` is unset-by-name in Docker's CLI; in a spec it means an empty value.
        None => Ok((kv.to_string(), String::new())),
    }
}

/// How one OCI mount appears to the guest, if at all.
fn mount_preopen(index: usize, mount: &Mount) -> Result<Option<Preopen>> {
    let field = |name: &str| format!("mounts[{index}].{name}");
    let destination = normalize_guest_path(mount.destination()).ok_or_else(|| {
        Error::spec(
            field("destination"),
            format!("{:?} is not an absolute path", mount.destination()),
        )
    })?;
    let options = mount.options().as_deref().unwrap_or_default();
    let is_bind = mount.typ().as_deref() == Some("bind")
        || options.iter().any(|o| o == "bind" || o == "rbind");
    let typ = mount.typ().as_deref().unwrap_or("");

    if is_bind {
        let source = mount
            .source()
            .as_ref()
            .filter(|s| s.is_absolute())
            .ok_or_else(|| Error::spec(field("source"), "a bind mount needs an absolute source"))?;
        let access = if options.iter().any(|o| o == "ro") {
            Access::ReadOnly
        } else {
            Access::ReadWrite
        };
        return Ok(Some(Preopen {
            guest_path: destination,
            host_path: source.clone(),
            access,
        }));
    }
    if KERNEL_FILESYSTEMS.contains(&typ) {
        return Ok(None);
    }
    if typ == "tmpfs" {
        // Scratch space is provided by the sandbox (see README); until then the guest writes
        // below the same path in its own rootfs layer, never on the host.
        log::debug!("tmpfs mount at {destination} is not exposed separately");
        return Ok(None);
    }
    Err(Error::spec(
        field("type"),
        format!("mount type {typ:?} at {destination} is not supported by the Wasm sandbox (only bind mounts and tmpfs)"),
    ))
}

/// `/a/./b/` -> `/a/b`; rejects relative paths and `..`, which a destination must not contain.
fn normalize_guest_path(path: &Path) -> Option<String> {
    if !path.is_absolute() {
        return None;
    }
    let mut parts = Vec::new();
    for component in path.components() {
        match component {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(part) => parts.push(part.to_str()?),
            Component::ParentDir | Component::Prefix(_) => return None,
        }
    }
    Some(format!("/{}", parts.join("/")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).expect("test spec parses")
    }

    fn base(process: &str, mounts: &str) -> Spec {
        spec(&format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"process":{process},"mounts":{mounts}}}"#
        ))
    }

    const PROCESS: &str =
        r#"{"cwd":"/","args":["/app.wasm","x"],"env":["A=1","B=two=2","EMPTY="]}"#;

    #[test]
    fn args_env_cwd_come_from_the_spec_exactly() {
        let p = SandboxPolicy::from_spec(&base(PROCESS, "[]"), Path::new("/b")).unwrap();
        assert_eq!(p.args, ["/app.wasm", "x"]);
        assert_eq!(
            p.env,
            [
                ("A".into(), "1".into()),
                ("B".into(), "two=2".into()),
                ("EMPTY".into(), String::new())
            ]
        );
        assert_eq!(p.cwd, "/");
    }

    #[test]
    fn rootfs_is_root_preopen_relative_to_bundle() {
        let p = SandboxPolicy::from_spec(&base(PROCESS, "[]"), Path::new("/b")).unwrap();
        assert_eq!(
            p.preopens,
            [Preopen {
                guest_path: "/".into(),
                host_path: "/b/rootfs".into(),
                access: Access::ReadWrite
            }]
        );
    }

    #[test]
    fn readonly_root_is_readonly_preopen() {
        let s = spec(&format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"/r","readonly":true}},"process":{PROCESS}}}"#
        ));
        let p = SandboxPolicy::from_spec(&s, Path::new("/b")).unwrap();
        assert_eq!(p.preopens[0].host_path, PathBuf::from("/r"));
        assert_eq!(p.preopens[0].access, Access::ReadOnly);
    }

    #[test]
    fn function_fragment_is_stripped_from_argv0() {
        let s = base(r#"{"cwd":"/","args":["/m.wasm#greet"]}"#, "[]");
        let p = SandboxPolicy::from_spec(&s, Path::new("/b")).unwrap();
        assert_eq!(p.args, ["/m.wasm"]);
        assert_eq!(SandboxPolicy::entry_function(&s).as_deref(), Some("greet"));
        assert_eq!(SandboxPolicy::entry_function(&base(PROCESS, "[]")), None);
    }

    #[test]
    fn bind_mounts_become_preopens_with_their_access() {
        let mounts = r#"[
            {"destination":"/proc","type":"proc","source":"proc"},
            {"destination":"/dev/shm","type":"tmpfs","source":"shm","options":["size=64k"]},
            {"destination":"/data/","type":"bind","source":"/host/rw","options":["rbind","rw"]},
            {"destination":"/cfg","source":"/host/ro","options":["rbind","ro"]},
            {"destination":"/sys","type":"sysfs","source":"sysfs"}
        ]"#;
        let p = SandboxPolicy::from_spec(&base(PROCESS, mounts), Path::new("/b")).unwrap();
        let got: Vec<_> = p
            .preopens
            .iter()
            .map(|p| {
                (
                    p.guest_path.as_str(),
                    p.host_path.to_str().unwrap(),
                    p.access,
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("/", "/b/rootfs", Access::ReadWrite),
                ("/data", "/host/rw", Access::ReadWrite),
                ("/cfg", "/host/ro", Access::ReadOnly),
            ]
        );
    }

    #[test]
    fn later_mount_shadows_earlier_at_same_destination() {
        let mounts = r#"[
            {"destination":"/d","type":"bind","source":"/one","options":["rbind"]},
            {"destination":"/d","type":"bind","source":"/two","options":["rbind","ro"]}
        ]"#;
        let p = SandboxPolicy::from_spec(&base(PROCESS, mounts), Path::new("/b")).unwrap();
        assert_eq!(p.preopens.len(), 2);
        assert_eq!(p.preopens[1].host_path, PathBuf::from("/two"));
        assert_eq!(p.preopens[1].access, Access::ReadOnly);
    }

    #[test]
    fn bad_inputs_are_rejected_naming_the_field() {
        let cases = [
            (base(r#"{"cwd":"/","args":[]}"#, "[]"), "process.args"),
            (
                base(r#"{"cwd":"rel","args":["/m.wasm"]}"#, "[]"),
                "process.cwd",
            ),
            (
                base(r#"{"cwd":"/","args":["/m.wasm"],"env":["=x"]}"#, "[]"),
                "process.env",
            ),
            (
                base(
                    PROCESS,
                    r#"[{"destination":"/d","type":"bind","source":"rel","options":["rbind"]}]"#,
                ),
                "mounts[0].source",
            ),
            (
                base(
                    PROCESS,
                    r#"[{"destination":"/a/../b","type":"bind","source":"/x"}]"#,
                ),
                "mounts[0].destination",
            ),
            (
                base(
                    PROCESS,
                    r#"[{"destination":"/n","type":"nfs","source":"h:/x"}]"#,
                ),
                "mounts[0].type",
            ),
        ];
        for (spec, field) in cases {
            match SandboxPolicy::from_spec(&spec, Path::new("/b")) {
                Err(Error::Spec { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected error on {field}, got {other:?}"),
            }
        }
    }

    #[test]
    fn missing_process_or_root_is_an_error() {
        let s = spec(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"}}"#);
        assert!(matches!(
            SandboxPolicy::from_spec(&s, Path::new("/b")),
            Err(Error::Spec { field, .. }) if field == "process"
        ));
        let s = spec(&format!(r#"{{"ociVersion":"1.0.2","process":{PROCESS}}}"#));
        assert!(matches!(
            SandboxPolicy::from_spec(&s, Path::new("/b")),
            Err(Error::Spec { field, .. }) if field == "root"
        ));
    }
}
