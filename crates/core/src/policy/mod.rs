//! The sandbox policy: everything a guest may see or do, derived from the OCI spec (and the
//! node's defaults) alone.
//!
//! `SandboxPolicy::from_spec` is a pure function, with the one host fact it needs (whether a
//! bind mount's source is a file or a folder) passed in, so that every rule is unit-tested;
//! engines only apply the resulting value and never look at the spec themselves.

pub mod annotations;
mod fs;
mod identity;
mod limits;
pub mod network;
pub mod profile;
mod serve;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::Duration;

use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

use crate::config::NodeConfig;
use crate::error::{Error, Result};

pub use fs::{normalize_guest_path, Access, FileBind, Preopen, ScratchDir, SourceKind};
pub use identity::Identity;
pub use limits::{Limits, WASM_PAGE};
pub use network::NetworkPolicy;
pub use profile::{Chosen, Profile};
pub use serve::HttpServe;

/// The capabilities of one Wasm container.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxPolicy {
    /// argv as the guest sees it; `argv[0]` is the module path without any `#function`.
    pub args: Vec<String>,
    /// Exactly `process.env`, in order; nothing of the shim's own environment.
    pub env: Vec<(String, String)>,
    /// `process.cwd`, absolute.
    pub cwd: String,
    /// The rootfs as `/` first, then one entry per exposed directory mount, in spec order.
    pub preopens: Vec<Preopen>,
    /// tmpfs mounts, backed by size-bounded scratch folders (also listed in `preopens`).
    pub scratch: Vec<ScratchDir>,
    /// Bind mounts of single files, bound into the rootfs.
    pub file_binds: Vec<FileBind>,
    pub limits: Limits,
    pub network: NetworkPolicy,
    /// Serve the module as a `wasi:http/proxy` component instead of running it as a command.
    pub http_serve: Option<HttpServe>,
    pub identity: Identity,
    /// The sandbox profile the container runs under, and what chose it.
    pub profile: Option<String>,
    /// `process.env` names the profile withholds from the guest (said once, at start).
    pub withheld_env: Vec<String>,
    /// Where each capability came from (spec, annotation, node default, profile), by
    /// capability: what `policy` prints.
    pub provenance: BTreeMap<String, String>,
}

impl SandboxPolicy {
    /// The policy of the container whose bundle is at `bundle`, within `profile` if one
    /// applies. `probe` tells what a bind mount's source is on the host (`None`: it does not
    /// exist).
    pub fn from_spec(
        spec: &Spec,
        bundle: &Path,
        node: &NodeConfig,
        profile: Option<&Chosen>,
        probe: &dyn Fn(&Path) -> Option<SourceKind>,
    ) -> Result<Self> {
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
        args[0] = crate::source::split_entrypoint(&args[0]).0.to_string();

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
        let root = Preopen {
            guest_path: "/".to_string(),
            host_path: if root.path().is_absolute() {
                root.path().clone()
            } else {
                bundle.join(root.path())
            },
            access: if root.readonly().unwrap_or(false) {
                Access::ReadOnly
            } else {
                Access::ReadWrite
            },
        };
        let fs = fs::from_mounts(
            root,
            spec.mounts().as_deref().unwrap_or_default(),
            bundle,
            node.scratch_size,
            probe,
        )?;
        if fs.preopens[0].access == Access::ReadOnly && !fs.file_binds.is_empty() {
            // Bind targets may have to be created in the rootfs, which must be writable then.
            log::debug!("read-only rootfs with file mounts: targets must exist in the image");
        }

        let annotations = spec.annotations().clone().unwrap_or_default();
        check_annotation_names(&annotations)?;

        let limits = Limits {
            memory_limit: memory_limit(spec, node)?,
            guest_memory: None,
            time_limit: time_limit(&annotations, node)?,
            max_open_files: node.max_open_files,
        };
        let limits = Limits {
            guest_memory: guest_memory(limits.memory_limit, node)?,
            ..limits
        };

        let network = NetworkPolicy {
            connect: net_rules(&annotations, annotations::NET_CONNECT)?,
            listen: net_rules(&annotations, annotations::NET_LISTEN)?,
            name_lookup: match annotations.get(annotations::NET_LOOKUP).map(String::as_str) {
                None | Some("false") => false,
                Some("true") => true,
                Some(other) => {
                    return Err(annotation_error(
                        annotations::NET_LOOKUP,
                        format!("{other:?} is not true or false"),
                    ))
                }
            },
            request_cap: None,
        };

        let http_serve = HttpServe::from_annotations(&annotations, node.default_request_time_limit)
            .map_err(|(name, why)| annotation_error(name, why))?;

        if let (Some(_), Some(function)) = (&http_serve, Self::entry_function(spec)) {
            return Err(annotation_error(
                annotations::HTTP_PROXY_PORT,
                format!("#{function} names an export to run; a served component runs wasi:http/incoming-handler"),
            ));
        }

        let user = process.user();
        let identity = Identity {
            uid: user.uid(),
            gid: user.gid(),
            additional_gids: user.additional_gids().clone().unwrap_or_default(),
            umask: user.umask(),
            no_new_privileges: process.no_new_privileges().unwrap_or(false),
        };

        let mut policy = SandboxPolicy {
            args,
            env,
            cwd,
            preopens: fs.preopens,
            scratch: fs.scratch,
            file_binds: fs.file_binds,
            limits,
            network,
            http_serve,
            identity,
            profile: None,
            withheld_env: Vec::new(),
            provenance: provenance(spec, &annotations, node),
        };
        if let Some(chosen) = profile {
            let narrowed = profile::narrow(&chosen.profile, &mut policy, &annotations)?;
            policy.profile = Some(format!(
                "{} (chosen by {})",
                chosen.profile.name, chosen.chosen_by
            ));
            policy.withheld_env = narrowed.withheld_env;
            if !narrowed.withheld_mounts.is_empty() {
                policy.provenance.insert(
                    "withheld_mounts".into(),
                    format!(
                        "{} (runtime mounts profile {} does not name)",
                        narrowed.withheld_mounts.join(", "),
                        chosen.profile.name
                    ),
                );
            }
        }
        Ok(policy)
    }

    /// Whether the instance needs the container's network: the guest's sockets, or the
    /// port the shim serves HTTP on.
    pub fn needs_network(&self) -> bool {
        !self.network.is_closed() || self.http_serve.is_some()
    }

    /// The function to call instead of the command's `_start`, from `path#function`.
    pub fn entry_function(spec: &Spec) -> Option<String> {
        let arg0 = spec.process().as_ref()?.args().as_ref()?.first()?;
        crate::source::split_entrypoint(arg0).1.map(str::to_string)
    }
}

/// Where each capability comes from before any profile narrows it.
fn provenance(
    spec: &Spec,
    annotations: &HashMap<String, String>,
    node: &NodeConfig,
) -> BTreeMap<String, String> {
    let has_memory_limit = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit())
        .is_some_and(|l| l > 0);
    let annotation_or = |name: &str, otherwise: &str| {
        if annotations.contains_key(name) {
            format!("annotation {name}")
        } else {
            otherwise.to_string()
        }
    };
    let memory = if has_memory_limit {
        "spec linux.resources.memory.limit, less the runtime allowance".to_string()
    } else if node.default_memory_limit.is_some() {
        format!("node default ({})", crate::config::MEMORY_LIMIT_ENV)
    } else {
        "none".to_string()
    };
    let time = if node.default_time_limit.is_some() {
        format!("node default ({})", crate::config::TIME_LIMIT_ENV)
    } else {
        "none".to_string()
    };
    [
        ("memory", memory),
        (
            "time_limit",
            annotation_or(annotations::TIME_LIMIT_MS, &time),
        ),
        (
            "net_connect",
            annotation_or(annotations::NET_CONNECT, "none (default deny)"),
        ),
        (
            "net_listen",
            annotation_or(annotations::NET_LISTEN, "none (default deny)"),
        ),
        ("env", "spec process.env".to_string()),
        ("mounts", "spec root and mounts".to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect()
}

fn parse_env(kv: &str) -> Result<(String, String)> {
    match kv.split_once('=') {
        Some(("", _)) => Err(Error::spec(
            "process.env",
            format!("{kv:?} has an empty name"),
        )),
        Some((k, v)) => Ok((k.to_string(), v.to_string())),
        // `FOO` with no `=` is unset-by-name in Docker's CLI; in a spec it means an empty value.
        None => Ok((kv.to_string(), String::new())),
    }
}

fn annotation_error(name: &str, reason: impl Into<String>) -> Error {
    Error::spec(format!("annotations[{name}]"), reason)
}

/// A misspelt annotation of ours would silently leave the sandbox open or unbounded.
fn check_annotation_names(annotations: &HashMap<String, String>) -> Result<()> {
    match annotations
        .keys()
        .find(|k| k.starts_with(annotations::PREFIX) && !annotations::ALL.contains(&k.as_str()))
    {
        Some(unknown) => Err(annotation_error(
            unknown,
            format!("unknown annotation; known: {}", annotations::ALL.join(", ")),
        )),
        None => Ok(()),
    }
}

fn memory_limit(spec: &Spec, node: &NodeConfig) -> Result<Option<u64>> {
    let limit = spec
        .linux()
        .as_ref()
        .and_then(|l| l.resources().as_ref())
        .and_then(|r| r.memory().as_ref())
        .and_then(|m| m.limit());
    match limit {
        // -1 is "unlimited" and 0 "not set" (CRI): the node decides.
        None | Some(0) | Some(-1) => Ok(node.default_memory_limit),
        Some(n) if n < 0 => Err(Error::spec(
            "linux.resources.memory.limit",
            format!("{n} is negative"),
        )),
        Some(n) => Ok(Some(n as u64)),
    }
}

fn guest_memory(limit: Option<u64>, node: &NodeConfig) -> Result<Option<u64>> {
    let Some(limit) = limit else { return Ok(None) };
    match limit.checked_sub(node.runtime_allowance) {
        Some(rest) if rest >= WASM_PAGE => Ok(Some(rest)),
        _ => Err(Error::spec(
            "linux.resources.memory.limit",
            format!(
                "{limit} bytes leaves no memory for the guest after the runtime's allowance of {} bytes",
                node.runtime_allowance
            ),
        )),
    }
}

fn time_limit(
    annotations: &HashMap<String, String>,
    node: &NodeConfig,
) -> Result<Option<Duration>> {
    match annotations.get(annotations::TIME_LIMIT_MS) {
        None => Ok(node.default_time_limit),
        Some(v) => match v.trim().parse::<u64>() {
            Ok(ms) if ms > 0 => Ok(Some(Duration::from_millis(ms))),
            _ => Err(annotation_error(
                annotations::TIME_LIMIT_MS,
                format!("{v:?} is not a positive number of milliseconds"),
            )),
        },
    }
}

fn net_rules(annotations: &HashMap<String, String>, name: &str) -> Result<Vec<network::NetRule>> {
    annotations
        .get(name)
        .map(|v| network::parse_rules(v).map_err(|why| annotation_error(name, why)))
        .transpose()
        .map(Option::unwrap_or_default)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;

    fn spec(json: &str) -> Spec {
        serde_json::from_str(json).expect("test spec parses")
    }

    /// A spec with `process`, `mounts` and extra top-level members spliced in.
    fn full(process: &str, mounts: &str, extra: &str) -> Spec {
        spec(&format!(
            r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"process":{process},"mounts":{mounts}{extra}}}"#
        ))
    }

    fn base(process: &str, mounts: &str) -> Spec {
        full(process, mounts, "")
    }

    fn node() -> NodeConfig {
        NodeConfig::for_tests()
    }

    /// Host paths under /dir are folders, under /file files; nothing else exists.
    fn probe(p: &Path) -> Option<SourceKind> {
        if p.starts_with("/dir") {
            Some(SourceKind::Directory)
        } else if p.starts_with("/file") {
            Some(SourceKind::File)
        } else {
            None
        }
    }

    fn policy(s: &Spec) -> Result<SandboxPolicy> {
        SandboxPolicy::from_spec(s, Path::new("/b"), &node(), None, &probe)
    }

    fn field_of(r: Result<SandboxPolicy>) -> String {
        match r {
            Err(Error::Spec { field, .. }) => field,
            other => panic!("expected a spec error, got {other:?}"),
        }
    }

    const PROCESS: &str = r#"{"cwd":"/","args":["/app.wasm","x"],"env":["A=1","B=two=2","EMPTY="],"user":{"uid":0,"gid":0}}"#;

    #[test]
    fn args_env_cwd_come_from_the_spec_exactly() {
        let p = policy(&base(PROCESS, "[]")).unwrap();
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
        let p = policy(&base(PROCESS, "[]")).unwrap();
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
        let p = policy(&s).unwrap();
        assert_eq!(p.preopens[0].host_path, PathBuf::from("/r"));
        assert_eq!(p.preopens[0].access, Access::ReadOnly);
    }

    #[test]
    fn function_fragment_is_stripped_from_argv0() {
        let s = base(
            r#"{"cwd":"/","args":["/m.wasm#greet"],"user":{"uid":0,"gid":0}}"#,
            "[]",
        );
        assert_eq!(policy(&s).unwrap().args, ["/m.wasm"]);
        assert_eq!(SandboxPolicy::entry_function(&s).as_deref(), Some("greet"));
        assert_eq!(SandboxPolicy::entry_function(&base(PROCESS, "[]")), None);
    }

    #[test]
    fn mounts_become_preopens_file_binds_and_scratch() {
        let mounts = r#"[
            {"destination":"/proc","type":"proc","source":"proc"},
            {"destination":"/dev/shm","type":"tmpfs","source":"shm","options":["nosuid","size=65536k"]},
            {"destination":"/data/","type":"bind","source":"/dir/rw","options":["rbind","rw"]},
            {"destination":"/cfg","source":"/dir/ro","options":["rbind","ro"]},
            {"destination":"/etc/hosts","type":"bind","source":"/file/hosts","options":["rbind","ro"]},
            {"destination":"/tmp","type":"tmpfs","source":"tmpfs"},
            {"destination":"/sys","type":"sysfs","source":"sysfs"},
            {"destination":"/dev/pts","type":"devpts","source":"devpts"},
            {"destination":"/sys/fs/cgroup","type":"cgroup","source":"cgroup"}
        ]"#;
        let p = policy(&base(PROCESS, mounts)).unwrap();
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
                ("/dev/shm", "/b/scratch/1", Access::ReadWrite),
                ("/data", "/dir/rw", Access::ReadWrite),
                ("/cfg", "/dir/ro", Access::ReadOnly),
                ("/tmp", "/b/scratch/5", Access::ReadWrite),
            ]
        );
        assert_eq!(
            p.scratch,
            [
                ScratchDir {
                    host_path: "/b/scratch/1".into(),
                    size_bytes: 64 << 20
                },
                ScratchDir {
                    host_path: "/b/scratch/5".into(),
                    size_bytes: node().scratch_size
                },
            ]
        );
        assert_eq!(
            p.file_binds,
            [FileBind {
                source: "/file/hosts".into(),
                guest_path: "/etc/hosts".into(),
                access: Access::ReadOnly
            }]
        );
    }

    #[test]
    fn later_mount_shadows_earlier_at_same_destination() {
        let mounts = r#"[
            {"destination":"/d","type":"bind","source":"/dir/one","options":["rbind"]},
            {"destination":"/d","type":"bind","source":"/dir/two","options":["rbind","ro"]}
        ]"#;
        let p = policy(&base(PROCESS, mounts)).unwrap();
        assert_eq!(p.preopens.len(), 2);
        assert_eq!(p.preopens[1].host_path, PathBuf::from("/dir/two"));
        assert_eq!(p.preopens[1].access, Access::ReadOnly);
    }

    #[test]
    fn bad_inputs_are_rejected_naming_the_field() {
        let mount = |m: &str| base(PROCESS, &format!("[{m}]"));
        let cases = [
            (
                base(r#"{"cwd":"/","args":[],"user":{"uid":0,"gid":0}}"#, "[]"),
                "process.args",
            ),
            (
                base(
                    r#"{"cwd":"rel","args":["/m.wasm"],"user":{"uid":0,"gid":0}}"#,
                    "[]",
                ),
                "process.cwd",
            ),
            (
                base(
                    r#"{"cwd":"/","args":["/m.wasm"],"env":["=x"],"user":{"uid":0,"gid":0}}"#,
                    "[]",
                ),
                "process.env",
            ),
            (
                mount(r#"{"destination":"/d","type":"bind","source":"rel","options":["rbind"]}"#),
                "mounts[0].source",
            ),
            (
                mount(r#"{"destination":"/d","type":"bind","source":"/gone","options":["rbind"]}"#),
                "mounts[0].source",
            ),
            (
                mount(r#"{"destination":"/a/../b","type":"bind","source":"/dir/x"}"#),
                "mounts[0].destination",
            ),
            (
                mount(r#"{"destination":"/n","type":"nfs","source":"h:/x"}"#),
                "mounts[0].type",
            ),
            (
                mount(r#"{"destination":"/t","type":"tmpfs","source":"t","options":["size=1x"]}"#),
                "mounts[0].options",
            ),
            (
                mount(r#"{"destination":"/t","type":"tmpfs","source":"t","options":["size=-5"]}"#),
                "mounts[0].options",
            ),
        ];
        for (spec, field) in cases {
            assert_eq!(field_of(policy(&spec)), field);
        }
    }

    #[test]
    fn missing_process_or_root_is_an_error() {
        let s = spec(r#"{"ociVersion":"1.0.2","root":{"path":"rootfs"}}"#);
        assert_eq!(field_of(policy(&s)), "process");
        let s = spec(&format!(r#"{{"ociVersion":"1.0.2","process":{PROCESS}}}"#));
        assert_eq!(field_of(policy(&s)), "root");
    }

    fn with_memory(limit: &str) -> Spec {
        full(
            PROCESS,
            "[]",
            &format!(r#","linux":{{"resources":{{"memory":{{"limit":{limit}}}}}}}"#),
        )
    }

    #[test]
    fn memory_limit_minus_allowance_caps_guest_memory() {
        let n = node();
        let p = policy(&with_memory(&(64u64 << 20).to_string())).unwrap();
        assert_eq!(p.limits.memory_limit, Some(64 << 20));
        assert_eq!(
            p.limits.guest_memory,
            Some((64 << 20) - n.runtime_allowance)
        );
        assert_eq!(
            p.limits.guest_memory_pages(),
            Some(((64 << 20) - n.runtime_allowance) / WASM_PAGE)
        );
    }

    #[test]
    fn unset_or_unlimited_memory_takes_the_node_default() {
        for limit in ["0", "-1"] {
            let p = policy(&with_memory(limit)).unwrap();
            assert_eq!(
                p.limits.memory_limit,
                node().default_memory_limit,
                "{limit}"
            );
        }
        let p = policy(&base(PROCESS, "[]")).unwrap();
        assert_eq!(p.limits.memory_limit, node().default_memory_limit);
        let mut unlimited = node();
        unlimited.default_memory_limit = None;
        let p = SandboxPolicy::from_spec(
            &base(PROCESS, "[]"),
            Path::new("/b"),
            &unlimited,
            None,
            &probe,
        )
        .unwrap();
        assert_eq!((p.limits.memory_limit, p.limits.guest_memory), (None, None));
    }

    #[test]
    fn negative_or_too_small_memory_limits_are_rejected() {
        assert_eq!(
            field_of(policy(&with_memory("-5"))),
            "linux.resources.memory.limit"
        );
        let allowance = node().runtime_allowance.to_string();
        assert_eq!(
            field_of(policy(&with_memory(&allowance))),
            "linux.resources.memory.limit"
        );
    }

    fn annotated(pairs: &[(&str, &str)]) -> Spec {
        let body: Vec<String> = pairs.iter().map(|(k, v)| format!("{k:?}:{v:?}")).collect();
        full(
            PROCESS,
            "[]",
            &format!(r#","annotations":{{{}}}"#, body.join(",")),
        )
    }

    #[test]
    fn time_limit_from_annotation_or_node_default() {
        let p = policy(&annotated(&[(annotations::TIME_LIMIT_MS, "1500")])).unwrap();
        assert_eq!(p.limits.time_limit, Some(Duration::from_millis(1500)));
        let p = policy(&base(PROCESS, "[]")).unwrap();
        assert_eq!(p.limits.time_limit, node().default_time_limit);
        for bad in ["0", "-3", "1.5s", ""] {
            let r = policy(&annotated(&[(annotations::TIME_LIMIT_MS, bad)]));
            assert_eq!(
                field_of(r),
                format!("annotations[{}]", annotations::TIME_LIMIT_MS),
                "{bad}"
            );
        }
    }

    #[test]
    fn network_is_closed_unless_annotated() {
        let p = policy(&base(PROCESS, "[]")).unwrap();
        assert!(p.network.is_closed());
        let p = policy(&annotated(&[
            (annotations::NET_CONNECT, "10.0.0.0/8:443"),
            (annotations::NET_LISTEN, "*:8080"),
            (annotations::NET_LOOKUP, "true"),
        ]))
        .unwrap();
        assert!(p.network.allows_connect("10.2.3.4:443".parse().unwrap()));
        assert!(p.network.allows_bind("0.0.0.0:8080".parse().unwrap()));
        assert!(p.network.name_lookup);
        let r = policy(&annotated(&[(annotations::NET_CONNECT, "10.0.0.0/40:443")]));
        assert_eq!(
            field_of(r),
            format!("annotations[{}]", annotations::NET_CONNECT)
        );
        let r = policy(&annotated(&[(annotations::NET_LOOKUP, "yes")]));
        assert_eq!(
            field_of(r),
            format!("annotations[{}]", annotations::NET_LOOKUP)
        );
    }

    #[test]
    fn http_serving_is_its_own_capability_and_opens_no_socket() {
        let p = policy(&base(PROCESS, "[]")).unwrap();
        assert_eq!(p.http_serve, None);
        assert!(!p.needs_network());
        let p = policy(&annotated(&[(annotations::HTTP_PROXY_PORT, "8080")])).unwrap();
        assert_eq!(p.http_serve.map(|s| s.port), Some(8080));
        assert!(p.needs_network(), "the pod's network, to listen in");
        assert!(p.network.is_closed(), "the guest itself gets no socket");
        assert!(!p.network.allows_bind("0.0.0.0:8080".parse().unwrap()));
        let with_function = full(
            r#"{"cwd":"/","args":["/m.wasm#f"],"user":{"uid":0,"gid":0}}"#,
            "[]",
            r#","annotations":{"wasm-shim/http-proxy-port":"80"}"#,
        );
        assert_eq!(
            field_of(policy(&with_function)),
            format!("annotations[{}]", annotations::HTTP_PROXY_PORT)
        );
        for bad in ["0", "http", "70000"] {
            let r = policy(&annotated(&[(annotations::HTTP_PROXY_PORT, bad)]));
            assert_eq!(
                field_of(r),
                format!("annotations[{}]", annotations::HTTP_PROXY_PORT),
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_annotations_of_ours_are_rejected_others_ignored() {
        let r = policy(&annotated(&[("wasm-shim/time-limit", "5")]));
        assert_eq!(field_of(r), "annotations[wasm-shim/time-limit]");
        assert!(policy(&annotated(&[(
            "io.kubernetes.cri.container-type",
            "container"
        )]))
        .is_ok());
    }

    #[test]
    fn identity_comes_from_process_user() {
        let s = base(
            r#"{"cwd":"/","args":["/m.wasm"],"noNewPrivileges":true,
                "user":{"uid":1000,"gid":1001,"additionalGids":[5,6],"umask":18}}"#,
            "[]",
        );
        assert_eq!(
            policy(&s).unwrap().identity,
            Identity {
                uid: 1000,
                gid: 1001,
                additional_gids: vec![5, 6],
                umask: Some(0o22),
                no_new_privileges: true
            }
        );
    }

    #[test]
    fn policy_round_trips_through_json() {
        let p = policy(&annotated(&[(
            annotations::NET_CONNECT,
            "api.example.com:443",
        )]))
        .unwrap();
        let back: SandboxPolicy =
            serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
        assert_eq!(back, p);
    }
}
