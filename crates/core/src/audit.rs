//! `policy --bundle DIR | --spec config.json [--profile NAME|FILE] [--json]`: print the
//! sandbox a container would get, and where each capability came from, changing nothing.
//!
//! `--profile` stands for the runtime class's profile (a name in the node's profile folder,
//! or a file); the spec's `wasm-shim/profile` annotation and `WASM_SHIM_DEFAULT_PROFILE`
//! count as they would at Create.

use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::config::NodeConfig;
use crate::policy::{profile, Access, SandboxPolicy, WASM_PAGE};
use crate::runtime_options::RuntimeOptions;
use crate::task::probe_source;

pub const SUBCOMMAND: &str = "policy";
const USAGE: &str =
    "usage: policy (--bundle DIR | --spec config.json) [--profile NAME|FILE] [--json]";

struct Args {
    spec: PathBuf,
    bundle: PathBuf,
    profile: Option<String>,
    json: bool,
}

/// Runs the command; the process's exit code (1: the container would be refused).
pub fn main(node: &NodeConfig, args: &[String]) -> i32 {
    let args = match parse(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}\n{USAGE}");
            return 2;
        }
    };
    // Written, not printed: a closed pipe (`| head`) is no reason to panic.
    let mut out = std::io::stdout();
    match effective(&args, node) {
        Ok(policy) if args.json => {
            let _ = writeln!(out, "{:#}", to_json(&policy));
            0
        }
        Ok(policy) => {
            let _ = write!(out, "{}", to_text(&policy));
            0
        }
        Err(e) => {
            eprintln!("refused: {e}");
            1
        }
    }
}

fn parse(args: &[String]) -> Result<Args, String> {
    let (mut spec, mut bundle, mut profile, mut json) = (None, None, None, false);
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = || it.next().cloned().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--bundle" => bundle = Some(PathBuf::from(value()?)),
            "--spec" => spec = Some(PathBuf::from(value()?)),
            "--profile" => profile = Some(value()?),
            "--json" => json = true,
            other => return Err(format!("unknown argument {other:?}")),
        }
    }
    match (spec, bundle) {
        (None, Some(b)) => Ok(Args {
            spec: b.join("config.json"),
            bundle: b,
            profile,
            json,
        }),
        (Some(s), None) => Ok(Args {
            bundle: s.parent().unwrap_or(Path::new(".")).to_path_buf(),
            spec: s,
            profile,
            json,
        }),
        _ => Err("give one of --bundle and --spec".into()),
    }
}

fn effective(args: &Args, node: &NodeConfig) -> crate::Result<SandboxPolicy> {
    let spec = crate::bundle::load_spec_file(&args.spec)?;
    let options = RuntimeOptions {
        config_path: match args.profile.as_deref() {
            Some(file) if file.contains('/') => Some(PathBuf::from(file)),
            Some(name) => Some(profile::path_of(name, &node.profile_dir)?),
            None => None,
        },
    };
    let annotations = spec.annotations().clone().unwrap_or_default();
    let chosen = profile::choose(&annotations, &options, node)?;
    SandboxPolicy::from_spec(&spec, &args.bundle, node, chosen.as_ref(), &probe_source)
}

fn mode(access: Access) -> &'static str {
    match access {
        Access::ReadOnly => "ro",
        Access::ReadWrite => "rw",
    }
}

fn to_json(p: &SandboxPolicy) -> serde_json::Value {
    let rules = |r: &[crate::policy::network::NetRule]| {
        r.iter().map(ToString::to_string).collect::<Vec<_>>()
    };
    json!({
        "profile": p.profile,
        "preopens": p.preopens.iter().map(|o| json!({
            "guest_path": o.guest_path, "host_path": o.host_path, "mode": mode(o.access),
        })).collect::<Vec<_>>(),
        "file_binds": p.file_binds.iter().map(|f| json!({
            "guest_path": f.guest_path, "host_path": f.source, "mode": mode(f.access),
        })).collect::<Vec<_>>(),
        "env": p.env.iter().map(|(k, _)| k).collect::<Vec<_>>(),
        "withheld_env": p.withheld_env,
        "memory_pages": p.limits.guest_memory_pages(),
        "time_limit_ms": p.limits.time_limit.map(|t| t.as_millis() as u64),
        "net_connect": rules(&p.network.connect),
        "net_listen": rules(&p.network.listen),
        "http_proxy_port": p.http_serve.as_ref().map(|s| s.port),
        "name_lookup": p.network.name_lookup,
        "request_cap": p.network.request_cap,
        "from": p.provenance,
    })
}

fn to_text(p: &SandboxPolicy) -> String {
    use std::fmt::Write as _;
    let from = |k: &str| p.provenance.get(k).map(String::as_str).unwrap_or("-");
    let or_none = |v: Vec<String>| {
        if v.is_empty() {
            "none".to_string()
        } else {
            v.join(", ")
        }
    };
    let mut s = String::new();
    let _ = writeln!(
        s,
        "profile:      {}",
        p.profile.as_deref().unwrap_or("none")
    );
    let _ = writeln!(s, "preopens:     ({})", from("mounts"));
    for o in &p.preopens {
        let _ = writeln!(
            s,
            "  {} {} <- {}",
            mode(o.access),
            o.guest_path,
            o.host_path.display()
        );
    }
    for f in &p.file_binds {
        let _ = writeln!(
            s,
            "  {} {} <- {} (file)",
            mode(f.access),
            f.guest_path,
            f.source.display()
        );
    }
    if let Some(w) = p.provenance.get("withheld_mounts") {
        let _ = writeln!(s, "  withheld: {w}");
    }
    let names = p.env.iter().map(|(k, _)| k.clone()).collect();
    let _ = writeln!(s, "env:          {} ({})", or_none(names), from("env"));
    if !p.withheld_env.is_empty() {
        let _ = writeln!(s, "  withheld:   {}", p.withheld_env.join(", "));
    }
    let memory = match p.limits.guest_memory_pages() {
        Some(pages) => format!("{pages} pages ({} MiB)", (pages * WASM_PAGE) >> 20),
        None => "unlimited".into(),
    };
    let _ = writeln!(s, "memory:       {memory} ({})", from("memory"));
    let time = p
        .limits
        .time_limit
        .map_or("none".into(), |t| format!("{} ms", t.as_millis()));
    let _ = writeln!(s, "time limit:   {time} ({})", from("time_limit"));
    let rules = |r: &[crate::policy::network::NetRule]| {
        or_none(r.iter().map(ToString::to_string).collect())
    };
    let _ = writeln!(
        s,
        "net connect:  {} ({})",
        rules(&p.network.connect),
        from("net_connect")
    );
    let _ = writeln!(
        s,
        "net listen:   {} ({})",
        rules(&p.network.listen),
        from("net_listen")
    );
    if let Some(serve) = &p.http_serve {
        let _ = writeln!(s, "http serve:   port {}", serve.port);
    }
    let _ = writeln!(
        s,
        "name lookup:  {}",
        if p.network.name_lookup { "yes" } else { "no" }
    );
    let cap = p
        .network
        .request_cap
        .map_or("none".into(), |c| c.to_string());
    let _ = writeln!(
        s,
        "request cap:  {cap} ({})",
        p.provenance
            .get("request_cap")
            .map(String::as_str)
            .unwrap_or("no profile cap")
    );
    s
}
