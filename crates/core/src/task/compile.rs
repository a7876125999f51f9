//! Producing artifacts for the task service: cache lookup in the server, compilation in a
//! short-lived child process (`<shim> compile-artifact`), so a large or hostile module's compile
//! cannot bloat or crash the long-lived shim.

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Command, Stdio};

use containerd_shim::monitor::{monitor_subscribe, wait_pid, Topic};

use crate::artifact::{Artifact, ArtifactCache, Outcome};
use crate::error::{Error, IoContext, Result};
use crate::source::{ModuleKind, ModuleSource};

/// The subcommand that compiles one module read from stdin into `--out`.
pub const SUBCOMMAND: &str = "compile-artifact";

pub struct Compiler {
    fingerprint: String,
    cache: ArtifactCache,
    /// The node settings the compiler process sees (it starts with an empty environment).
    node_env: Vec<(String, String)>,
}

impl Compiler {
    pub fn new(
        fingerprint: String,
        cache: ArtifactCache,
        node_env: Vec<(String, String)>,
    ) -> Result<Self> {
        Ok(Compiler {
            fingerprint,
            cache,
            node_env,
        })
    }

    pub fn artifact_for(&self, source: &ModuleSource) -> Result<(Artifact, Outcome)> {
        let key = ArtifactCache::key(&self.fingerprint, &source.digest);
        self.cache
            .get_or_build(&key, |out| compile_in_child(source, out, &self.node_env))
    }
}

fn compile_in_child(
    source: &ModuleSource,
    out: &Path,
    node_env: &[(String, String)],
) -> Result<()> {
    let exe = std::env::current_exe().io_context(|| "locating the shim binary".into())?;
    // Subscribe before spawning: the shim's reaper may collect the child at any moment.
    let exits = monitor_subscribe(Topic::Pid)
        .map_err(|e| Error::Cache(format!("watching the compiler: {e}")))?;
    let mut child = Command::new(exe)
        .arg(SUBCOMMAND)
        .arg("--kind")
        .arg(kind_name(source.kind))
        .arg("--out")
        .arg(out)
        .env_clear()
        .envs(node_env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .io_context(|| "starting the compiler process".into())?;
    let pid = child.id() as i32;
    let mut stdin = child.stdin.take().expect("piped stdin");
    let mut stderr = child.stderr.take().expect("piped stderr");
    // A module the compiler rejects early may close stdin before reading it all.
    let _ = stdin.write_all(&source.bytes);
    drop(stdin);
    let mut message = String::new();
    let _ = stderr.read_to_string(&mut message);
    drop(child);
    let code = wait_pid(pid, exits);
    if code == 0 {
        return Ok(());
    }
    let message = message.trim();
    Err(Error::Engine(anyhow::anyhow!(
        "{}: {}",
        source.guest_path,
        if message.is_empty() {
            format!("the compiler exited with status {code}")
        } else {
            message.to_string()
        }
    )))
}

pub fn kind_name(kind: ModuleKind) -> &'static str {
    match kind {
        ModuleKind::Module => "module",
        ModuleKind::Component => "component",
    }
}

pub fn parse_kind(name: &str) -> Option<ModuleKind> {
    match name {
        "module" => Some(ModuleKind::Module),
        "component" => Some(ModuleKind::Component),
        _ => None,
    }
}
