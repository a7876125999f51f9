use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_spec::runtime::Spec;

use super::*;
use crate::policy::{Access, SandboxPolicy, SourceKind, WASM_PAGE};

const STRICT: &str = r#"
max_memory_pages = 256
execution_timeout_ms = 5000
allowed_hosts = ["api.example.com:443"]
allowed_listen = [8080]
allowed_env_vars = ["APP_MODE", "REGION"]
max_network_requests = 50

[[allowed_dirs]]
guest_path = "/config"
readonly = true
"#;

const MODERATE: &str = r#"
max_memory_pages = 512
execution_timeout_ms = 30000
allowed_hosts = ["api.example.com:443", "10.0.0.0/8:6379"]
allowed_listen = [8080, 9090]
allowed_env_vars = ["APP_MODE", "REGION", "LOG_LEVEL", "FEATURE_*"]
max_network_requests = 200

[[allowed_dirs]]
guest_path = "/config"
readonly = true

[[allowed_dirs]]
guest_path = "/cache"
readonly = false
"#;

fn profile(name: &str, text: &str) -> Profile {
    parse::parse(Path::new(&format!("/p/{name}.toml")), text).expect("test profile parses")
}

fn strict() -> Profile {
    profile("edge-strict", STRICT)
}

fn moderate() -> Profile {
    profile("edge-moderate", MODERATE)
}

fn parse_err(text: &str) -> String {
    match parse::parse(Path::new("/p/x.toml"), text) {
        Err(e @ Error::Profile { .. }) => e.to_string(),
        other => panic!("expected a profile error, got {other:?}"),
    }
}

#[test]
fn a_profile_file_has_the_fields_of_the_guides_policy() {
    let p = strict();
    assert_eq!(p.name, "edge-strict");
    assert_eq!(p.max_memory_pages, Some(256));
    assert_eq!(p.execution_timeout_ms, Some(5000));
    assert_eq!(p.allowed_hosts.len(), 1);
    assert_eq!(p.allowed_hosts[0].to_string(), "api.example.com:443");
    assert_eq!(p.allowed_listen, [8080]);
    assert_eq!(p.allowed_env_vars, ["APP_MODE", "REGION"]);
    assert_eq!(
        p.allowed_dirs,
        [AllowedDir {
            guest_path: "/config".into(),
            readonly: true
        }]
    );
    assert_eq!(p.max_network_requests, Some(50));
}

#[test]
fn an_empty_profile_grants_nothing_and_bounds_nothing_of_its_own() {
    let p = profile("empty", "");
    assert_eq!(p.max_memory_pages, None);
    assert!(p.allowed_hosts.is_empty() && p.allowed_env_vars.is_empty());
    assert!(p.allowed_dirs.is_empty() && p.allowed_listen.is_empty());
    let dir = profile("d", "[[allowed_dirs]]\nguest_path = \"/data/\"\n");
    assert_eq!(dir.allowed_dirs[0].guest_path, "/data");
    assert!(
        dir.allowed_dirs[0].readonly,
        "read-only unless it says otherwise"
    );
}

#[test]
fn unknown_keys_and_malformed_values_are_refused_naming_file_and_key() {
    let cases = [
        ("max_memory = 5", "max_memory: unknown key"),
        (
            "max_memory_pages = \"lots\"",
            "max_memory_pages: invalid type",
        ),
        (
            "max_memory_pages = 0",
            "max_memory_pages: 0 is not 1..=65536",
        ),
        ("max_memory_pages = 70000", "max_memory_pages: 70000"),
        ("max_memory_pages = -1", "max_memory_pages: invalid value"),
        ("execution_timeout_ms = 0", "execution_timeout_ms: 0"),
        (
            "execution_timeout_ms = 1.5",
            "execution_timeout_ms: invalid type",
        ),
        ("allowed_hosts = \"a:1\"", "allowed_hosts: invalid type"),
        ("allowed_hosts = [\"a\"]", "allowed_hosts[0]: entry \"a\""),
        (
            "allowed_hosts = [\"a:1\", \"10.0.0.0/40:1\"]",
            "allowed_hosts[1]",
        ),
        (
            "allowed_hosts = [\"a:1,b:2\"]",
            "allowed_hosts[0]: \"a:1,b:2\" is not one",
        ),
        ("allowed_listen = [70000]", "allowed_listen: invalid value"),
        ("allowed_listen = [0]", "allowed_listen: port 0"),
        ("allowed_env_vars = [\"A*B\"]", "allowed_env_vars[0]"),
        ("allowed_env_vars = [\"\"]", "allowed_env_vars[0]"),
        ("allowed_env_vars = [\"A=1\"]", "allowed_env_vars[0]"),
        (
            "max_network_requests = true",
            "max_network_requests: invalid type",
        ),
        (
            "allowed_dirs = [\"/x\"]",
            "allowed_dirs[0]: expected a table",
        ),
        (
            "[[allowed_dirs]]\nreadonly = true",
            "allowed_dirs[0].guest_path: missing",
        ),
        (
            "[[allowed_dirs]]\nguest_path = \"rel\"",
            "allowed_dirs[0].guest_path: \"rel\"",
        ),
        (
            "[[allowed_dirs]]\nguest_path = \"/a/../b\"",
            "allowed_dirs[0].guest_path",
        ),
        (
            "[[allowed_dirs]]\nguest_path = \"/a\"\nreadonly = \"yes\"",
            "allowed_dirs[0].readonly: invalid type",
        ),
        (
            "[[allowed_dirs]]\nguest_path = \"/a\"\nmode = \"ro\"",
            "allowed_dirs[0].mode: unknown key",
        ),
        ("max_memory_pages = ", "sandbox profile /p/x.toml"),
    ];
    for (text, wanted) in cases {
        let e = parse_err(text);
        assert!(e.starts_with("sandbox profile /p/x.toml: "), "{text}: {e}");
        assert!(e.contains(wanted), "{text}: {e:?} lacks {wanted:?}");
    }
}

// --- narrowing -----------------------------------------------------------------------

fn spec(process: &str, mounts: &str, annotations: &[(&str, &str)], memory: Option<u64>) -> Spec {
    let annotations: Vec<String> = annotations
        .iter()
        .map(|(k, v)| format!("{k:?}:{v:?}"))
        .collect();
    let linux = memory
        .map(|m| format!(r#","linux":{{"resources":{{"memory":{{"limit":{m}}}}}}}"#))
        .unwrap_or_default();
    serde_json::from_str(&format!(
        r#"{{"ociVersion":"1.0.2","root":{{"path":"rootfs"}},"process":{process},"mounts":{mounts},"annotations":{{{}}}{linux}}}"#,
        annotations.join(",")
    ))
    .unwrap()
}

const PROCESS: &str = r#"{"cwd":"/","args":["/f.wasm"],"env":["PATH=/bin","APP_MODE=prod","REGION=eu","SECRET=x","FEATURE_X=1"],"user":{"uid":0,"gid":0}}"#;

fn probe(p: &Path) -> Option<SourceKind> {
    if p.starts_with("/dir") {
        Some(SourceKind::Directory)
    } else if p.starts_with("/file") {
        Some(SourceKind::File)
    } else {
        None
    }
}

fn under(p: &Profile, s: &Spec) -> Result<SandboxPolicy> {
    let chosen = Chosen {
        profile: p.clone(),
        chosen_by: "test".into(),
    };
    SandboxPolicy::from_spec(
        s,
        Path::new("/b"),
        &NodeConfig::for_tests(),
        Some(&chosen),
        &probe,
    )
}

fn denied(r: Result<SandboxPolicy>) -> String {
    match r {
        Err(Error::Denied(m)) => m,
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[test]
fn memory_is_the_smaller_of_the_spec_and_the_profile() {
    let p = under(&strict(), &spec(PROCESS, "[]", &[], None)).unwrap();
    assert_eq!(
        p.limits.guest_memory_pages(),
        Some(256),
        "node default 1 GiB > 256 pages"
    );
    assert!(p.provenance["memory"].contains("max_memory_pages = 256"));
    // 8 MiB allowance + 4 MiB: the spec is stricter than 256 pages (16 MiB).
    let p = under(&strict(), &spec(PROCESS, "[]", &[], Some(12 << 20))).unwrap();
    assert_eq!(p.limits.guest_memory, Some(4 << 20));
    assert!(p.provenance["memory"].contains("spec"));
    let unbounded = profile("u", "");
    let p = under(&unbounded, &spec(PROCESS, "[]", &[], Some(12 << 20))).unwrap();
    assert_eq!(p.limits.guest_memory, Some(4 << 20));
    assert_eq!(WASM_PAGE, 65536);
}

#[test]
fn time_limit_is_the_smaller_of_the_annotation_and_the_profile() {
    let t = |a: &[(&str, &str)]| {
        under(&strict(), &spec(PROCESS, "[]", a, None))
            .unwrap()
            .limits
            .time_limit
    };
    assert_eq!(t(&[]), Some(Duration::from_secs(5)));
    assert_eq!(
        t(&[("wasm-shim/time-limit-ms", "60000")]),
        Some(Duration::from_secs(5))
    );
    assert_eq!(
        t(&[("wasm-shim/time-limit-ms", "100")]),
        Some(Duration::from_millis(100))
    );
}

#[test]
fn outbound_hosts_are_the_profiles_or_annotated_ones_inside_them() {
    let p = under(&strict(), &spec(PROCESS, "[]", &[], None)).unwrap();
    assert_eq!(p.network.connect[0].to_string(), "api.example.com:443");
    assert_eq!(p.network.request_cap, Some(50));
    let m = moderate();
    let p = under(
        &m,
        &spec(
            PROCESS,
            "[]",
            &[("wasm-shim/net-connect", "10.1.0.0/16:6379")],
            None,
        ),
    )
    .unwrap();
    assert_eq!(p.network.connect.len(), 1, "the annotation narrows");
    let e = denied(under(
        &strict(),
        &spec(
            PROCESS,
            "[]",
            &[("wasm-shim/net-connect", "evil.example.com:443")],
            None,
        ),
    ));
    assert_eq!(
        e,
        "host not allowed: evil.example.com:443 (wasm-shim/net-connect) is outside the allowed_hosts of profile edge-strict"
    );
    let e = denied(under(
        &strict(),
        &spec(
            PROCESS,
            "[]",
            &[("wasm-shim/net-connect", "api.example.com:*")],
            None,
        ),
    ));
    assert!(e.starts_with("host not allowed: api.example.com:*"), "{e}");
}

#[test]
fn listening_is_on_the_profiles_ports_only() {
    let p = under(&strict(), &spec(PROCESS, "[]", &[], None)).unwrap();
    assert!(p.network.allows_listen("0.0.0.0:8080".parse().unwrap()));
    assert!(!p.network.allows_listen("0.0.0.0:8081".parse().unwrap()));
    let e = denied(under(
        &strict(),
        &spec(
            PROCESS,
            "[]",
            &[("wasm-shim/net-listen", "*:8080-8081")],
            None,
        ),
    ));
    assert!(
        e.starts_with("listen address not allowed: *:8080-8081"),
        "{e}"
    );
    let e = denied(under(
        &strict(),
        &spec(
            PROCESS,
            "[]",
            &[("wasm-shim/http-proxy-port", "9000")],
            None,
        ),
    ));
    assert!(
        e.starts_with("listen address not allowed: port 9000"),
        "{e}"
    );
    assert!(under(
        &strict(),
        &spec(
            PROCESS,
            "[]",
            &[("wasm-shim/http-proxy-port", "8080")],
            None
        )
    )
    .is_ok());
}

#[test]
fn env_vars_the_profile_does_not_name_are_withheld() {
    let p = under(&moderate(), &spec(PROCESS, "[]", &[], None)).unwrap();
    let names: Vec<_> = p.env.iter().map(|(k, _)| k.as_str()).collect();
    assert_eq!(names, ["APP_MODE", "REGION", "FEATURE_X"]);
    assert_eq!(p.withheld_env, ["PATH", "SECRET"]);
    let p = under(&strict(), &spec(PROCESS, "[]", &[], None)).unwrap();
    assert_eq!(p.withheld_env, ["PATH", "SECRET", "FEATURE_X"]);
}

#[test]
fn mounts_must_be_allowed_dirs_and_readonly_ones_are_read_only() {
    let mounts = r#"[
        {"destination":"/config","type":"bind","source":"/dir/cfg","options":["rbind","rw"]},
        {"destination":"/config/app.toml","type":"bind","source":"/file/app","options":["rbind","rw"]},
        {"destination":"/cache/x","type":"bind","source":"/dir/cache","options":["rbind","rw"]},
        {"destination":"/dev","type":"tmpfs","source":"tmpfs","options":["nosuid","strictatime","mode=755","size=65536k"]},
        {"destination":"/dev/shm","type":"tmpfs","source":"shm"},
        {"destination":"/run","type":"tmpfs","source":"tmpfs"},
        {"destination":"/etc/hosts","type":"bind","source":"/file/hosts","options":["rbind","ro"]},
        {"destination":"/proc","type":"proc","source":"proc"}
    ]"#;
    let p = under(&moderate(), &spec(PROCESS, mounts, &[], None)).unwrap();
    let preopens: Vec<_> = p
        .preopens
        .iter()
        .map(|o| (o.guest_path.as_str(), o.access))
        .collect();
    assert_eq!(
        preopens,
        [
            ("/", Access::ReadWrite),
            ("/config", Access::ReadOnly),
            ("/cache/x", Access::ReadWrite)
        ]
    );
    assert_eq!(p.file_binds.len(), 1);
    assert_eq!(
        (p.file_binds[0].guest_path.as_str(), p.file_binds[0].access),
        ("/config/app.toml", Access::ReadOnly)
    );
    assert!(
        p.scratch.is_empty(),
        "/dev/shm is withheld, and so is its scratch folder"
    );
    assert!(p.provenance["withheld_mounts"].contains("/dev, /dev/shm, /run, /etc/hosts"));

    let data = r#"[{"destination":"/data","type":"bind","source":"/dir/d","options":["rbind"]}]"#;
    let e = denied(under(&moderate(), &spec(PROCESS, data, &[], None)));
    assert_eq!(
        e,
        "permission denied: /data is not allowed by profile edge-moderate"
    );
    let tmp = r#"[{"destination":"/tmp","type":"tmpfs","source":"tmpfs"}]"#;
    let e = denied(under(&strict(), &spec(PROCESS, tmp, &[], None)));
    assert_eq!(
        e,
        "permission denied: /tmp is not allowed by profile edge-strict"
    );
    let sibling = r#"[{"destination":"/configs","type":"bind","source":"/dir/d"}]"#;
    assert!(
        under(&strict(), &spec(PROCESS, sibling, &[], None)).is_err(),
        "/configs is not below /config"
    );
}

#[test]
fn no_profile_changes_nothing() {
    let s = spec(PROCESS, "[]", &[], None);
    let p = SandboxPolicy::from_spec(&s, Path::new("/b"), &NodeConfig::for_tests(), None, &probe)
        .unwrap();
    assert_eq!(p.env.len(), 5);
    assert!(p.network.is_closed());
    assert_eq!(p.network.request_cap, None);
    assert_eq!(p.profile, None);
}

// --- strictness and choice -------------------------------------------------------------

#[test]
fn strict_is_at_least_as_strict_as_moderate_and_not_the_other_way() {
    assert_eq!(at_least_as_strict(&strict(), &moderate()), Ok(()));
    assert_eq!(at_least_as_strict(&strict(), &strict()), Ok(()));
    assert_eq!(
        at_least_as_strict(&moderate(), &strict()),
        Err("max_memory_pages")
    );
}

#[test]
fn each_field_can_make_a_profile_looser() {
    let base = strict();
    let looser = [
        ("max_memory_pages", "max_memory_pages = 257"),
        ("max_memory_pages", ""),
        ("execution_timeout_ms", "execution_timeout_ms = 5001"),
        ("max_network_requests", "max_network_requests = 51"),
        ("allowed_hosts", "allowed_hosts = [\"api.example.com:*\"]"),
        ("allowed_listen", "allowed_listen = [8081]"),
        ("allowed_env_vars", "allowed_env_vars = [\"APP_*\"]"),
        (
            "allowed_dirs",
            "[[allowed_dirs]]\nguest_path = \"/config\"\nreadonly = false",
        ),
        ("allowed_dirs", "[[allowed_dirs]]\nguest_path = \"/\""),
    ];
    let keep = |field: &str| {
        STRICT
            .split("\n[[allowed_dirs]]")
            .next()
            .unwrap()
            .lines()
            .filter(|l| !l.starts_with(field))
            .collect::<Vec<_>>()
            .join("\n")
    };
    for (field, line) in looser {
        let text = if field == "allowed_dirs" {
            format!("{}\n{line}\n", keep(field))
        } else {
            format!(
                "{}\n{line}\n[[allowed_dirs]]\nguest_path = \"/config\"\n",
                keep(field)
            )
        };
        let asked = profile("asked", &text);
        assert_eq!(at_least_as_strict(&asked, &base), Err(field), "{line}");
    }
    let narrower = profile(
        "narrower",
        "max_memory_pages = 1\nexecution_timeout_ms = 1\nmax_network_requests = 0\nallowed_env_vars = [\"REGION\"]\n[[allowed_dirs]]\nguest_path = \"/config/sub\"\n",
    );
    assert_eq!(at_least_as_strict(&narrower, &base), Ok(()));
    // A profile that names no env var grants none: a narrower one cannot name one either.
    assert_eq!(
        at_least_as_strict(&narrower, &profile("open", "")),
        Err("allowed_env_vars")
    );
}

struct Dir(PathBuf);

impl Dir {
    fn new() -> Self {
        let d = tempfile::tempdir().unwrap().keep();
        std::fs::write(d.join("edge-strict.toml"), STRICT).unwrap();
        std::fs::write(d.join("edge-moderate.toml"), MODERATE).unwrap();
        std::fs::write(d.join("broken.toml"), "max_memory_pages = \"x\"").unwrap();
        Dir(d)
    }

    fn node(&self, default: Option<&str>) -> NodeConfig {
        NodeConfig {
            profile_dir: self.0.clone(),
            default_profile: default.map(String::from),
            ..NodeConfig::for_tests()
        }
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn annotation(name: &str) -> HashMap<String, String> {
    HashMap::from([(annotations::PROFILE.to_string(), name.to_string())])
}

#[test]
fn the_runtime_class_then_the_annotation_then_the_node_default_choose() {
    let dir = Dir::new();
    let class = RuntimeOptions {
        config_path: Some(dir.0.join("edge-moderate.toml")),
    };
    let none = RuntimeOptions::default();
    let name = |c: Option<Chosen>| c.map(|c| c.profile.name);

    assert_eq!(
        name(choose(&HashMap::new(), &none, &dir.node(None)).unwrap()),
        None
    );
    let by_class = choose(&HashMap::new(), &class, &dir.node(Some("edge-strict")))
        .unwrap()
        .unwrap();
    assert_eq!(by_class.profile.name, "edge-moderate");
    assert!(by_class.chosen_by.starts_with("runtime class"));
    let by_default = choose(&HashMap::new(), &none, &dir.node(Some("edge-strict")))
        .unwrap()
        .unwrap();
    assert_eq!(by_default.profile.name, "edge-strict");
    assert!(by_default.chosen_by.contains("WASM_SHIM_DEFAULT_PROFILE"));
    let stricter = choose(&annotation("edge-strict"), &class, &dir.node(None))
        .unwrap()
        .unwrap();
    assert_eq!(stricter.profile.name, "edge-strict");
    assert_eq!(stricter.chosen_by, "annotation wasm-shim/profile");
    assert_eq!(
        name(choose(&annotation("edge-moderate"), &none, &dir.node(None)).unwrap()).as_deref(),
        Some("edge-moderate")
    );
}

#[test]
fn an_annotation_asking_for_a_looser_profile_is_refused_naming_the_field() {
    let dir = Dir::new();
    let class = RuntimeOptions {
        config_path: Some(dir.0.join("edge-strict.toml")),
    };
    match choose(&annotation("edge-moderate"), &class, &dir.node(None)) {
        Err(Error::Denied(m)) => {
            assert!(
                m.starts_with("permission denied: profile edge-moderate"),
                "{m}"
            );
            assert!(m.ends_with("in max_memory_pages"), "{m}");
        }
        other => panic!("{other:?}"),
    }
    // The node default is the baseline when the runtime class names none.
    let r = choose(
        &annotation("edge-moderate"),
        &RuntimeOptions::default(),
        &dir.node(Some("edge-strict")),
    );
    assert!(matches!(r, Err(Error::Denied(_))), "{r:?}");
}

#[test]
fn missing_broken_or_escaping_profiles_are_errors() {
    let dir = Dir::new();
    let none = RuntimeOptions::default();
    for bad in ["../etc/passwd", "a/b", ".hidden", ""] {
        assert!(
            choose(&annotation(bad), &none, &dir.node(None)).is_err(),
            "{bad}"
        );
    }
    let e = choose(&annotation("absent"), &none, &dir.node(None))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("wasm-shim/profile") && e.contains("absent.toml"),
        "{e}"
    );
    let e = choose(&HashMap::new(), &none, &dir.node(Some("broken")))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("broken.toml: max_memory_pages: invalid type"),
        "{e}"
    );
    let missing = RuntimeOptions {
        config_path: Some(dir.0.join("gone.toml")),
    };
    assert!(choose(&HashMap::new(), &missing, &dir.node(None)).is_err());
}
