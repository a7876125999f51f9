//! `compile [--address SOCKET] [--namespace NS] FILE|IMAGE...`: fill this node's artifact
//! cache ahead of the first start, in the spirit of `wasmedgec`.
//!
//! A FILE is a module on disk. Anything else names an image in containerd (address and
//! namespace as `ctr` takes them: the flags, else `CONTAINERD_ADDRESS` / `CONTAINERD_NAMESPACE`,
//! else the system socket and `default`): each of its Wasm layers, or for a compat image the
//! file its entrypoint names, is compiled under the digest a start of that image looks up.

use std::path::Path;
use std::time::Instant;

use crate::artifact::{ArtifactCache, Outcome};
use crate::config::NodeConfig;
use crate::engine::Engine;
use crate::image_layers::Containerd;
use crate::source::ModuleSource;

pub const SUBCOMMAND: &str = "compile";
const DEFAULT_ADDRESS: &str = "/run/containerd/containerd.sock";
const DEFAULT_NAMESPACE: &str = "default";

/// Runs the command; the process's exit code.
pub fn main<E: Engine>(node: &NodeConfig, args: &[String]) -> i32 {
    let (containerd, targets) = match parse(args) {
        Ok(parsed) => parsed,
        Err(e) => {
            eprintln!("{e}");
            eprintln!(
                "usage: {SUBCOMMAND} [--address SOCKET] [--namespace NS] FILE.wasm|IMAGE...   \
                 (cache: {})",
                node.cache_dir.display()
            );
            return 2;
        }
    };
    let setup = || -> anyhow::Result<(E, ArtifactCache)> {
        Ok((
            E::new()?,
            ArtifactCache::with_limit(&node.cache_dir, Some(node.cache_max_bytes))?,
        ))
    };
    let (engine, cache) = match setup() {
        Ok(ready) => ready,
        Err(e) => {
            eprintln!("{e:#}");
            return 1;
        }
    };
    let mut failed = 0;
    for target in &targets {
        if let Err(e) = compile_target(&engine, &cache, &containerd, target) {
            eprintln!("{target}: {e:#}");
            failed += 1;
        }
    }
    i32::from(failed > 0)
}

fn parse(args: &[String]) -> Result<(Containerd, Vec<String>), String> {
    let env = |key: &str, default: &str| {
        std::env::var(key)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| default.to_string())
    };
    let mut containerd = Containerd {
        address: env("CONTAINERD_ADDRESS", DEFAULT_ADDRESS),
        namespace: env("CONTAINERD_NAMESPACE", DEFAULT_NAMESPACE),
    };
    let mut targets = Vec::new();
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let slot = match arg.as_str() {
            "--address" | "-a" => &mut containerd.address,
            "--namespace" | "-n" => &mut containerd.namespace,
            flag if flag.starts_with('-') => return Err(format!("unknown flag {flag}")),
            _ => {
                targets.push(arg.clone());
                continue;
            }
        };
        *slot = args.next().ok_or(format!("{arg} needs a value"))?.clone();
    }
    if targets.is_empty() {
        return Err("nothing to compile".into());
    }
    Ok((containerd, targets))
}

/// Compiles the module at path `target`, or those of the image it names.
fn compile_target<E: Engine>(
    engine: &E,
    cache: &ArtifactCache,
    containerd: &Containerd,
    target: &str,
) -> anyhow::Result<()> {
    if Path::new(target).exists() {
        let bytes = std::fs::read(target).map_err(|e| anyhow::anyhow!("reading: {e}"))?;
        let source = ModuleSource::from_bytes(target.to_string(), bytes)?;
        return compile_one(engine, cache, target, &source);
    }
    let modules = containerd.image_modules(target).map_err(|e| match e {
        crate::Error::Containerd { .. } => anyhow::anyhow!(
            "{e} (not a file, so read as an image of namespace {:?})",
            containerd.namespace
        ),
        other => other.into(),
    })?;
    for module in modules {
        compile_one(
            engine,
            cache,
            &format!("{target}: {}", module.origin),
            &module.source,
        )?;
    }
    Ok(())
}

fn compile_one<E: Engine>(
    engine: &E,
    cache: &ArtifactCache,
    what: &str,
    source: &ModuleSource,
) -> anyhow::Result<()> {
    let key = ArtifactCache::key(&engine.fingerprint(), &source.digest);
    let t0 = Instant::now();
    let (artifact, outcome) = cache.get_or_build(&key, |out| {
        let native = engine
            .precompile(&source.bytes, source.kind)
            .map_err(crate::Error::Engine)?;
        std::fs::write(out, native).map_err(|e| crate::Error::Cache(e.to_string()))
    })?;
    println!(
        "{what}: {} ({:?}, {} bytes) {} in {} ms -> {}",
        source.digest,
        source.kind,
        source.bytes.len(),
        match outcome {
            Outcome::Hit => "already cached",
            Outcome::Compiled => "compiled",
        },
        t0.elapsed().as_millis(),
        artifact.path.display()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn flags_name_containerd_and_the_rest_are_targets() {
        let (c, targets) = parse(&args(&[
            "--address",
            "/tmp/c.sock",
            "m.wasm",
            "-n",
            "k8s.io",
            "docker.io/x/y:1",
        ]))
        .unwrap();
        assert_eq!(c.address, "/tmp/c.sock");
        assert_eq!(c.namespace, "k8s.io");
        assert_eq!(targets, ["m.wasm", "docker.io/x/y:1"]);
    }

    #[test]
    fn bad_command_lines_are_refused() {
        assert!(parse(&args(&[])).unwrap_err().contains("nothing"));
        assert!(parse(&args(&["--namespace"]))
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse(&args(&["--fast", "m.wasm"]))
            .unwrap_err()
            .contains("--fast"));
    }
}
