//! Sandbox profiles through `ctr run --runtime-config-path FILE`, which sends the runtime
//! options a RuntimeClass's containerd entry sends (`ConfigPath`): each capability a profile
//! bounds ends with the documented words, on the container's stderr and in the shim log.

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use e2e::{host_dir, shim_binary, shim_lines, state_dir, Ns, Output, Run};

/// The node's profile folder of the shim under test: `WASM_SHIM_PROFILE_DIR`, which
/// `ctd_start` gives containerd (and so the shims) under its own folder.
fn profile_dir() -> PathBuf {
    std::env::var_os("WASM_SHIM_PROFILE_DIR")
        .map(PathBuf::from)
        .or_else(|| e2e::config().ctd_dir.as_ref().map(|d| d.join("profiles")))
        .expect("WASM_SHIM_PROFILE_DIR or CTD_DIR")
}

/// Write profile `name` into `dir`; its path.
fn profile(dir: &Path, name: &str, text: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    path
}

fn under<'a>(ns: &'a Ns, image: &str, profile: &Path) -> Run<'a> {
    ns.run(image)
        .flags(&["--runtime-config-path", profile.to_str().unwrap()])
}

/// The build of the cri guest the engine under test runs (sockets, `grow`).
fn cri_guest() -> &'static str {
    let engine = e2e::capabilities::engine_of_runtime(&e2e::config().runtime);
    if e2e::capabilities::lacks(engine).contains_key("components") {
        "cri-p1"
    } else {
        "cri"
    }
}

/// The cri guest's exit code for a failed connect: 3, or 1 from a preview 2 component
/// (`wasi:cli/exit` carries only failure).
fn connect_failed() -> i32 {
    if cri_guest() == "cri-p1" {
        3
    } else {
        1
    }
}

#[track_caller]
fn says(out: &Output, words: &str) {
    assert!(out.stderr.contains(words), "stderr lacks {words:?}:\n{out}");
}

#[test]
fn memory_past_the_profiles_pages_is_out_of_memory() {
    let ns = Ns::new("profile-memory");
    let dir = host_dir("profile-memory");
    let p = profile(dir.path(), "pages", "max_memory_pages = 256\n");
    let out = under(&ns, cri_guest(), &p)
        .args(["/cri.wasm", "grow"])
        .rm("grow");
    out.assert_code(137);
    says(
        &out,
        "out of memory: memory page limit of 256 pages (16 MiB) reached",
    );
    assert!(
        !out.stdout.contains("grew 16 MiB"),
        "the guest got 16 MiB or more:\n{out}"
    );
}

#[test]
fn time_past_the_profiles_timeout_is_stopped() {
    let ns = Ns::new("profile-time");
    let dir = host_dir("profile-time");
    let p = profile(dir.path(), "quick", "execution_timeout_ms = 500\n");
    // The annotation may narrow the limit, never widen it.
    let out = under(&ns, "probe", &p)
        .annotation("wasm-shim/time-limit-ms", "60000")
        .args(["/probe.wasm", "loop"])
        .rm("loop");
    out.assert_code(124);
    says(
        &out,
        "time limit exceeded: the wasm guest was stopped at its limit of 500 ms",
    );
}

#[test]
fn env_vars_the_profile_does_not_name_are_withheld_and_named() {
    let ns = Ns::new("profile-env");
    let dir = host_dir("profile-env");
    let p = profile(
        dir.path(),
        "env",
        "allowed_env_vars = [\"APP_MODE\", \"REGION\", \"FEATURE_*\"]\n",
    );
    let (c, out) = under(&ns, "probe", &p)
        .env("APP_MODE=edge")
        .env("SECRET=hunter2")
        .env("FEATURE_X=on")
        .args(["/probe.wasm", "env"])
        .rm_id("env");
    out.assert_success();
    let vars: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(vars, ["APP_MODE=edge", "FEATURE_X=on"], "{out}");
    // Each withheld name said once; the allowed ones not at all.
    assert_eq!(
        out.stderr.matches("env var not allowed: SECRET").count(),
        1,
        "{out}"
    );
    assert!(!out.stderr.contains("not allowed: APP_MODE"), "{out}");
    assert!(!out.stderr.contains("not allowed: FEATURE_X"), "{out}");
    assert!(
        shim_lines(&c.id)
            .iter()
            .any(|l| l.contains("env var not allowed: SECRET")),
        "the shim log says it too"
    );
}

const DIRS: &str = r#"
[[allowed_dirs]]
guest_path = "/config"
readonly = true

[[allowed_dirs]]
guest_path = "/cache"
readonly = false
"#;

#[test]
fn mounts_must_be_allowed_dirs_and_readonly_dirs_stay_read_only() {
    let ns = Ns::new("profile-mounts");
    let dir = host_dir("profile-mounts");
    let p = profile(dir.path(), "dirs", DIRS);
    let config = host_dir("profile-config");
    std::fs::write(config.path().join("app.toml"), "mode = 1\n").unwrap();
    let cache = host_dir("profile-cache");

    // A mount the profile does not name: refused at create.
    let data = host_dir("profile-data");
    let out = under(&ns, "probe", &p)
        .bind(data.path(), "/data", false)
        .args(["/probe.wasm", "ls", "/data"])
        .rm("data");
    assert!(!out.success(), "{out}");
    assert!(
        out.all_text()
            .contains("permission denied: /data is not allowed by profile dirs"),
        "{out}"
    );

    // /config is mounted read-write, and the profile makes it read-only.
    let out = under(&ns, "probe", &p)
        .bind(config.path(), "/config", false)
        .args(["/probe.wasm", "cat", "/config/app.toml"])
        .rm("read");
    out.assert_success();
    assert_eq!(out.stdout, "mode = 1\n");
    for (label, args) in [
        ("write", ["/probe.wasm", "write", "/config/new", "x"]),
        (
            "overwrite",
            ["/probe.wasm", "write", "/config/app.toml", "x"],
        ),
    ] {
        let out = under(&ns, "probe", &p)
            .bind(config.path(), "/config", false)
            .args(args)
            .rm(label);
        assert!(!out.success(), "{label} went through:\n{out}");
    }
    let mut names: Vec<_> = std::fs::read_dir(config.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names, ["app.toml"]);
    assert_eq!(
        std::fs::read_to_string(config.path().join("app.toml")).unwrap(),
        "mode = 1\n"
    );

    // /cache is read-write in the profile: the control.
    let out = under(&ns, "probe", &p)
        .bind(cache.path(), "/cache", false)
        .args(["/probe.wasm", "write", "/cache/x", "kept"])
        .rm("cache");
    out.assert_success();
    assert_eq!(
        std::fs::read_to_string(cache.path().join("x")).unwrap(),
        "kept"
    );
}

#[test]
fn a_native_entrypoint_is_refused_under_a_profile() {
    let ns = Ns::new("profile-native");
    let dir = host_dir("profile-native");
    let p = profile(dir.path(), "wasm-only", "");
    let out = under(&ns, "busybox", &p)
        .args(["sh", "-c", "true"])
        .rm("sh");
    assert!(!out.success(), "{out}");
    assert!(
        out.all_text().contains(
            "permission denied: the entrypoint is a native program, and profile wasm-only runs WebAssembly only"
        ),
        "{out}"
    );
}

#[test]
fn hosts_outside_the_profile_are_refused_and_the_request_cap_holds() {
    if e2e::capabilities::skip_unless_runtime_has(
        "sockets",
        "profile::hosts_outside_the_profile_are_refused_and_the_request_cap_holds",
    ) {
        return;
    }
    let ns = Ns::new("profile-net");
    let dir = host_dir("profile-net");
    let (port, served) = e2e::counting_http_server();
    let p = profile(
        dir.path(),
        "net",
        &format!("allowed_hosts = [\"127.0.0.1:{port}\"]\nmax_network_requests = 2\n"),
    );
    let target = format!("127.0.0.1:{port}");

    // Two requests pass; the third is past the cap.
    let out = under(&ns, cri_guest(), &p)
        .flags(&["--net-host"])
        .args(["/cri.wasm", "connect", &target, "3"])
        .rm("capped");
    out.assert_code(connect_failed());
    assert_eq!(out.stdout.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    says(&out, "network request limit of 2 reached");
    assert_eq!(served.load(Ordering::SeqCst), 2);

    // A host the profile does not name, though reachable.
    let other = format!("127.0.0.2:{port}");
    let out = under(&ns, cri_guest(), &p)
        .flags(&["--net-host"])
        .args(["/cri.wasm", "connect", &other])
        .rm("other");
    out.assert_code(connect_failed());
    says(&out, &format!("host not allowed: {other}"));
    assert_eq!(served.load(Ordering::SeqCst), 2);

    // An annotation asking for more than the profile: refused at create.
    let out = under(&ns, cri_guest(), &p)
        .flags(&["--net-host"])
        .annotation("wasm-shim/net-connect", "127.0.0.0/8:*")
        .args(["/cri.wasm", "connect", &target])
        .rm("wider");
    assert!(!out.success(), "{out}");
    assert!(
        out.all_text().contains(
            "host not allowed: 127.0.0.0/8:* (wasm-shim/net-connect) is outside the allowed_hosts of profile net"
        ),
        "{out}"
    );
    assert_eq!(served.load(Ordering::SeqCst), 2);
}

#[test]
fn an_annotation_may_choose_a_stricter_profile_only() {
    let ns = Ns::new("profile-choice");
    let dir = profile_dir();
    let id = std::process::id();
    let (tight, loose) = (format!("e2e-tight-{id}"), format!("e2e-loose-{id}"));
    profile(
        &dir,
        &tight,
        "max_memory_pages = 64\nexecution_timeout_ms = 5000\n",
    );
    profile(
        &dir,
        &loose,
        "max_memory_pages = 4096\nexecution_timeout_ms = 5000\n",
    );
    let class = host_dir("profile-class");
    let p = profile(
        class.path(),
        "class",
        "max_memory_pages = 1024\nexecution_timeout_ms = 10000\n",
    );

    let out = under(&ns, "probe", &p)
        .annotation("wasm-shim/profile", &loose)
        .args(["/probe.wasm", "args"])
        .rm("looser");
    assert!(!out.success(), "{out}");
    assert!(
        out.all_text().contains(&format!(
            "permission denied: profile {loose} (annotation wasm-shim/profile) is looser than profile class"
        )) && out.all_text().contains("in max_memory_pages"),
        "{out}"
    );

    let (c, out) = under(&ns, "probe", &p)
        .annotation("wasm-shim/profile", &tight)
        .args(["/probe.wasm", "args", "ok"])
        .rm_id("stricter");
    out.assert_success();
    assert!(
        shim_lines(&c.id).iter().any(|l| l.contains(&format!(
            "sandbox profile {tight} (chosen by annotation wasm-shim/profile)"
        ))),
        "{:#?}",
        shim_lines(&c.id)
    );
    let _ = std::fs::remove_file(dir.join(format!("{tight}.toml")));
    let _ = std::fs::remove_file(dir.join(format!("{loose}.toml")));
}

/// `policy --bundle` prints the sandbox the container got: the same as the instance was
/// handed at Create (`wasm-instance.json` in the bundle).
#[test]
fn policy_prints_what_the_container_got() {
    let ns = Ns::new("profile-policy");
    let dir = host_dir("profile-policy");
    let p = profile(
        dir.path(),
        "audited",
        &format!(
            "max_memory_pages = 300\nexecution_timeout_ms = 20000\nallowed_hosts = [\"10.1.0.0/16:443\"]\nallowed_env_vars = [\"APP_MODE\"]\nmax_network_requests = 7\n{DIRS}"
        ),
    );
    let config = host_dir("profile-policy-config");
    let c = under(&ns, "probe", &p)
        .env("APP_MODE=edge")
        .env("SECRET=x")
        .bind(config.path(), "/config", false)
        .annotation("wasm-shim/time-limit-ms", "15000")
        .args(["/probe.wasm", "sleep", "30000"])
        .detach("sleeper");
    let bundle = state_dir()
        .join("io.containerd.runtime.v2.task")
        .join(&ns.name)
        .join(&c.id);
    let out = e2e::run_with_timeout(
        shim_binary().to_str().unwrap(),
        &[
            "policy".into(),
            "--bundle".into(),
            bundle.to_string_lossy().into_owned(),
            "--profile".into(),
            p.to_string_lossy().into_owned(),
            "--json".into(),
        ],
        e2e::Input::Null,
        std::time::Duration::from_secs(30),
    );
    out.assert_success();
    let printed: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    let instance: serde_json::Value =
        serde_json::from_slice(&std::fs::read(bundle.join("wasm-instance.json")).unwrap()).unwrap();
    let got = &instance["policy"];

    assert_eq!(printed["memory_pages"], 300);
    assert_eq!(
        got["limits"]["guest_memory"].as_u64(),
        Some(300 * 65536),
        "{got}"
    );
    assert_eq!(printed["time_limit_ms"], 15000);
    assert_eq!(got["limits"]["time_limit"]["secs"], 15);
    assert_eq!(printed["env"], serde_json::json!(["APP_MODE"]));
    let env_names: Vec<&str> = got["env"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| kv[0].as_str().unwrap())
        .collect();
    assert_eq!(env_names, ["APP_MODE"]);
    assert_eq!(printed["withheld_env"], got["withheld_env"]);
    assert_eq!(
        printed["net_connect"],
        serde_json::json!(["10.1.0.0/16:443"])
    );
    assert_eq!(printed["request_cap"], 7);
    assert_eq!(got["network"]["request_cap"], 7);
    let modes = |v: &serde_json::Value, mode_of: &dyn Fn(&serde_json::Value) -> String| {
        v.as_array()
            .unwrap()
            .iter()
            .map(|o| (o["guest_path"].as_str().unwrap().to_string(), mode_of(o)))
            .collect::<Vec<_>>()
    };
    let printed_preopens = modes(&printed["preopens"], &|o| {
        o["mode"].as_str().unwrap().into()
    });
    let got_preopens = modes(&got["preopens"], &|o| {
        if o["access"] == "ReadOnly" {
            "ro"
        } else {
            "rw"
        }
        .into()
    });
    assert_eq!(printed_preopens, got_preopens);
    assert!(
        printed_preopens.contains(&("/config".to_string(), "ro".to_string())),
        "{printed_preopens:?}"
    );
    assert!(printed["profile"].as_str().unwrap().starts_with("audited"));
    assert!(
        printed["from"]["memory"]
            .as_str()
            .unwrap()
            .contains("profile audited max_memory_pages = 300"),
        "{printed}"
    );
    assert_eq!(
        printed["from"]["time_limit"],
        "annotation wasm-shim/time-limit-ms"
    );
    c.cleanup();
}
