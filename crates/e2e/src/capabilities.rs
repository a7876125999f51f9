//! What the engine under test can run, as its shim binary declares it
//! (`containerd-shim-<engine>-v1 capabilities`). A test that needs a capability the engine
//! lacks is skipped by [`skip_unless`], which says so in the test's output and appends a line to
//! `$E2E_SKIP_LOG` (when set), which `scripts/test` lists by name after the phase. The engine
//! itself refuses such a container at Create: tests of that refusal run on every engine.

use std::collections::HashMap;
use std::io::Write;
use std::path::PathBuf;
use std::sync::{Mutex, OnceLock};

/// The engine of a runtime name: `io.containerd.wasmedge.v1` -> `wasmedge`.
pub fn engine_of_runtime(runtime: &str) -> &str {
    runtime
        .strip_prefix("io.containerd.")
        .and_then(|r| r.strip_suffix(".v1"))
        .unwrap_or(runtime)
}

/// The shim binary of `engine`: in `$SHIM_DIR` (as `ctd_start` puts it first in containerd's
/// PATH), else the repository's release build.
fn shim_binary(engine: &str) -> PathBuf {
    let dir = std::env::var_os("SHIM_DIR")
        .filter(|d| !d.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| crate::repo_root().join("target/release"));
    dir.join(format!("containerd-shim-{engine}-v1"))
}

/// The capabilities `engine` lacks, each with the reason it gives (cached per engine).
pub fn lacks(engine: &str) -> HashMap<String, String> {
    static CACHE: OnceLock<Mutex<HashMap<String, HashMap<String, String>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let mut cache = cache.lock().unwrap_or_else(|e| e.into_inner());
    cache
        .entry(engine.to_string())
        .or_insert_with(|| ask(engine))
        .clone()
}

fn ask(engine: &str) -> HashMap<String, String> {
    let bin = shim_binary(engine);
    let out = std::process::Command::new(&bin)
        .arg("capabilities")
        .output()
        .unwrap_or_else(|e| panic!("running {} capabilities: {e}", bin.display()));
    assert!(
        out.status.success(),
        "{} capabilities failed: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "{} capabilities printed no JSON ({e}): {}",
            bin.display(),
            String::from_utf8_lossy(&out.stdout)
        )
    });
    let known = v["capabilities"]
        .as_object()
        .unwrap_or_else(|| panic!("no capabilities in {v}"));
    let lacks: HashMap<String, String> = v["lacks"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, why)| (k.clone(), why.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    for (cap, has) in known {
        assert_eq!(
            has.as_bool() == Some(false),
            lacks.contains_key(cap),
            "{engine}: capability {cap} is {has} but lacks says {lacks:?}"
        );
    }
    lacks
}

/// Whether `test` must be skipped because `engine` lacks `capability` (one of
/// `components`, `wasi-http`, `sockets`); if so, says why and records it.
pub fn skip_unless(engine: &str, capability: &str, test: &str) -> bool {
    let Some(why) = lacks(engine).get(capability).cloned() else {
        return false;
    };
    let line = format!("{engine}: {test}: lacks {capability}: {why}");
    println!("SKIPPED {line}");
    if let Some(log) = std::env::var_os("E2E_SKIP_LOG").filter(|l| !l.is_empty()) {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .unwrap_or_else(|e| panic!("opening E2E_SKIP_LOG {}: {e}", log.to_string_lossy()));
        writeln!(f, "{line}").expect("writing E2E_SKIP_LOG");
    }
    true
}

/// [`skip_unless`] for the engine of the runtime under test (`E2E_RUNTIME`).
pub fn skip_unless_runtime_has(capability: &str, test: &str) -> bool {
    skip_unless(
        engine_of_runtime(&crate::config().runtime),
        capability,
        test,
    )
}
