//! The module source: which bytes a container runs, found the way a guest would find them.
//!
//! The entrypoint is a guest path, so it is resolved through the policy's preopens and opened
//! with `RESOLVE_IN_ROOT`: a symlink in the image cannot make the shim read a host file.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat2, OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};
use crate::policy::SandboxPolicy;

/// What kind of Wasm binary this is, from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ModuleKind {
    /// A core module (WASI preview 1 command).
    Module,
    /// A component (WASI preview 2 command).
    Component,
}

/// The bytes of the module a container runs, with their digest.
#[derive(Debug)]
pub struct ModuleSource {
    /// The guest path it was found at, for messages.
    pub guest_path: String,
    pub bytes: Vec<u8>,
    pub kind: ModuleKind,
    /// `sha256:<hex>` of `bytes`.
    pub digest: String,
}

/// The reason of an [`Error::Entrypoint`] when the rootfs has no file there: the module may
/// then be a layer of the image (see [`crate::image_layers`]).
pub const NO_SUCH_FILE: &str = "no such file in the container";

const WASM_MAGIC: &[u8; 4] = b"\0asm";

/// The search path of a process whose environment has no `PATH`, as runc and containerd use.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// An entrypoint `module.wasm#function` names an export to call instead of the command's
/// `_start`: the path, and the function if any.
pub fn split_entrypoint(arg0: &str) -> (&str, Option<&str>) {
    match arg0.split_once('#') {
        Some((path, function)) => (path, Some(function)),
        None => (arg0, None),
    }
}

impl ModuleSource {
    /// Read the module named by `argv[0]` of the policy.
    pub fn from_entrypoint(policy: &SandboxPolicy) -> Result<Self> {
        let guest_path = resolve_guest_path(policy)?;
        let (root, inner) = policy
            .preopens
            .iter()
            .filter_map(|p| strip_guest_prefix(&guest_path, &p.guest_path).map(|inner| (p, inner)))
            .max_by_key(|(p, _)| p.guest_path.len())
            .ok_or_else(|| Error::Entrypoint {
                path: guest_path.clone(),
                reason: "not inside the rootfs or any mount".into(),
            })?;
        let file = open_in_root(&root.host_path, &inner).map_err(|errno| Error::Entrypoint {
            path: guest_path.clone(),
            reason: match errno {
                nix::Error::ENOENT => NO_SUCH_FILE.to_string(),
                other => other.desc().to_string(),
            },
        })?;
        let mut bytes = Vec::new();
        File::from(file)
            .read_to_end(&mut bytes)
            .io_context(|| format!("reading {guest_path}"))?;
        Self::from_bytes(guest_path, bytes)
    }

    /// Like [`Self::from_bytes`] with a `sha256:<hex>` digest the caller already knows to be
    /// the bytes' (a content-addressed store verified it), so they are not hashed again.
    pub fn with_digest(guest_path: String, bytes: Vec<u8>, digest: String) -> Result<Self> {
        let kind = classify(&bytes).map_err(|reason| Error::NotWasm {
            path: guest_path.clone(),
            reason,
        })?;
        Ok(ModuleSource {
            guest_path,
            bytes,
            kind,
            digest,
        })
    }

    /// Classify bytes read from anywhere (a file, a content-store layer).
    pub fn from_bytes(guest_path: String, bytes: Vec<u8>) -> Result<Self> {
        let kind = classify(&bytes).map_err(|reason| Error::NotWasm {
            path: guest_path.clone(),
            reason,
        })?;
        let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
        Ok(ModuleSource {
            guest_path,
            bytes,
            kind,
            digest,
        })
    }
}

/// Module or component, from the 8-byte preamble; anything else is not Wasm.
pub fn classify(bytes: &[u8]) -> Result<ModuleKind, String> {
    if bytes.is_empty() {
        return Err("the file is empty".into());
    }
    if bytes.len() < 8 || &bytes[..4] != WASM_MAGIC {
        return Err("missing the \\0asm magic number".into());
    }
    // Core modules have version 1 and layer 0; components have layer 1.
    match (
        u16::from_le_bytes([bytes[4], bytes[5]]),
        u16::from_le_bytes([bytes[6], bytes[7]]),
    ) {
        (1, 0) => Ok(ModuleKind::Module),
        (_, 1) => Ok(ModuleKind::Component),
        (version, layer) => Err(format!(
            "unsupported binary version {version} (layer {layer})"
        )),
    }
}

/// `argv[0]` as an absolute guest path: as given when it has a `/`, else looked up in the
/// spec's `PATH`, as a shell would, and finally in the working directory.
fn resolve_guest_path(policy: &SandboxPolicy) -> Result<String> {
    Ok(resolve_arg0(
        &policy.args[0],
        &policy.env,
        &policy.cwd,
        |p| guest_file_exists(policy, p),
    ))
}

pub(crate) fn resolve_arg0(
    arg0: &str,
    env: &[(String, String)],
    cwd: &str,
    exists: impl Fn(&str) -> bool,
) -> String {
    if arg0.starts_with('/') {
        return arg0.to_string();
    }
    if arg0.contains('/') {
        return join_guest(cwd, arg0);
    }
    let path_var = env
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.as_str())
        .unwrap_or("");
    for dir in path_var.split(':').filter(|d| d.starts_with('/')) {
        let candidate = join_guest(dir, arg0);
        if exists(&candidate) {
            return candidate;
        }
    }
    join_guest(cwd, arg0)
}

/// What the file an entrypoint names is, from its first bytes: WebAssembly runs in the
/// sandbox, an ELF binary or a `#!` script runs as a native Linux container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntrypointKind {
    Wasm(ModuleKind),
    Elf,
    Script,
}

impl EntrypointKind {
    pub fn is_native(self) -> bool {
        matches!(self, EntrypointKind::Elf | EntrypointKind::Script)
    }

    /// Classify the first bytes (at least 8 when the file has them) of an entrypoint.
    pub fn of(head: &[u8]) -> Result<Self, String> {
        if head.starts_with(WASM_MAGIC) {
            return classify(head).map(EntrypointKind::Wasm);
        }
        if head.starts_with(ELF_MAGIC) {
            return Ok(EntrypointKind::Elf);
        }
        if head.starts_with(b"#!") {
            return Ok(EntrypointKind::Script);
        }
        if head.is_empty() {
            return Err("the file is empty".into());
        }
        Err("neither WebAssembly (no \\0asm magic number) nor an ELF binary or a #! script".into())
    }
}

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";

/// The entrypoint of a container as the process would find it in its root filesystem
/// `rootfs` (a host folder): `argv[0]` (without a `#function` suffix) resolved against the
/// spec's `PATH` and working directory, opened inside the rootfs and classified.
///
/// An entrypoint that is not in the rootfs (it may be in a mount) is an `Error::Entrypoint`;
/// a file that is none of the known kinds is an `Error::NotWasm`.
pub fn probe_entrypoint(
    process: &oci_spec::runtime::Process,
    rootfs: &Path,
) -> Result<(String, EntrypointKind)> {
    let arg0 = process
        .args()
        .as_ref()
        .and_then(|a| a.first())
        .ok_or_else(|| Error::spec("process.args", "no entrypoint: the args are empty"))?;
    let (arg0, _) = split_entrypoint(arg0);
    let env: Vec<(String, String)> = process
        .env()
        .iter()
        .flatten()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let cwd = process.cwd().to_string_lossy();
    let inside = |guest: &str| PathBuf::from(guest.trim_start_matches('/'));
    let guest_path = resolve_arg0(arg0, &env, &cwd, |p| {
        open_in_root(rootfs, &inside(p)).is_ok()
    });
    let file = open_in_root(rootfs, &inside(&guest_path)).map_err(|errno| Error::Entrypoint {
        path: guest_path.clone(),
        reason: match errno {
            nix::Error::ENOENT => "no such file in the container".to_string(),
            other => other.desc().to_string(),
        },
    })?;
    let mut head = Vec::with_capacity(8);
    File::from(file)
        .take(8)
        .read_to_end(&mut head)
        .io_context(|| format!("reading {guest_path}"))?;
    let kind = EntrypointKind::of(&head).map_err(|reason| Error::NotWasm {
        path: guest_path.clone(),
        reason,
    })?;
    Ok((guest_path, kind))
}

fn guest_file_exists(policy: &SandboxPolicy, guest_path: &str) -> bool {
    policy
        .preopens
        .iter()
        .filter_map(|p| strip_guest_prefix(guest_path, &p.guest_path).map(|inner| (p, inner)))
        .max_by_key(|(p, _)| p.guest_path.len())
        .is_some_and(|(p, inner)| open_in_root(&p.host_path, &inner).is_ok())
}

fn join_guest(dir: &str, rel: &str) -> String {
    format!("{}/{}", dir.trim_end_matches('/'), rel)
}

/// The rest of `path` below the preopen `prefix`, if `path` is inside it.
fn strip_guest_prefix(path: &str, prefix: &str) -> Option<PathBuf> {
    let rest = if prefix == "/" {
        path.strip_prefix('/')?
    } else {
        let rest = path.strip_prefix(prefix)?;
        if !(rest.is_empty() || rest.starts_with('/')) {
            return None;
        }
        rest.trim_start_matches('/')
    };
    Some(PathBuf::from(rest))
}

/// Open `inner` below `root` as if `root` were `/`: `..` and symlinks cannot leave it.
fn open_in_root(root: &Path, inner: &Path) -> nix::Result<OwnedFd> {
    let dir = nix::fcntl::open(
        root,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let file = openat2(dir.as_fd(), inner, how)?;
    let is_file = nix::sys::stat::fstat(file.as_fd())
        .map(|st| st.st_mode & libc::S_IFMT == libc::S_IFREG)
        .unwrap_or(false);
    if is_file {
        Ok(file)
    } else {
        Err(nix::Error::EISDIR)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::{Access, Identity, Limits, NetworkPolicy, Preopen};

    fn policy(root: &Path, arg0: &str, env: &[(&str, &str)]) -> SandboxPolicy {
        SandboxPolicy {
            args: vec![arg0.into()],
            env: env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            cwd: "/app".into(),
            preopens: vec![Preopen {
                guest_path: "/".into(),
                host_path: root.into(),
                access: Access::ReadOnly,
            }],
            scratch: Vec::new(),
            file_binds: Vec::new(),
            limits: Limits {
                memory_limit: None,
                guest_memory: None,
                time_limit: None,
                max_open_files: 64,
            },
            network: NetworkPolicy::default(),
            http_serve: None,
            identity: Identity::default(),
            profile: None,
            withheld_env: Vec::new(),
            provenance: Default::default(),
        }
    }

    const MODULE: &[u8] = b"\0asm\x01\0\0\0";
    const COMPONENT: &[u8] = b"\0asm\x0d\0\x01\0";

    #[test]
    fn classifies_modules_components_and_garbage() {
        assert_eq!(classify(MODULE), Ok(ModuleKind::Module));
        assert_eq!(classify(COMPONENT), Ok(ModuleKind::Component));
        assert!(classify(b"").unwrap_err().contains("empty"));
        assert!(classify(b"#!/bin/sh\necho").unwrap_err().contains("magic"));
        assert!(classify(b"\0asm\x02\0\0\0")
            .unwrap_err()
            .contains("version"));
    }

    #[test]
    fn entrypoint_resolves_absolute_relative_and_path() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("app")).unwrap();
        std::fs::create_dir_all(root.path().join("bin")).unwrap();
        std::fs::write(root.path().join("app/m.wasm"), MODULE).unwrap();
        std::fs::write(root.path().join("bin/tool.wasm"), COMPONENT).unwrap();

        let src = ModuleSource::from_entrypoint(&policy(root.path(), "/app/m.wasm", &[])).unwrap();
        assert_eq!(
            (src.guest_path.as_str(), src.kind),
            ("/app/m.wasm", ModuleKind::Module)
        );
        let src = ModuleSource::from_entrypoint(&policy(root.path(), "./m.wasm", &[])).unwrap();
        assert_eq!(src.guest_path, "/app/./m.wasm");
        let src = ModuleSource::from_entrypoint(&policy(
            root.path(),
            "tool.wasm",
            &[("PATH", "/usr/bin:/bin")],
        ))
        .unwrap();
        assert_eq!(
            (src.guest_path.as_str(), src.kind),
            ("/bin/tool.wasm", ModuleKind::Component)
        );
        assert_eq!(
            src.digest,
            format!("sha256:{}", hex::encode(Sha256::digest(COMPONENT)))
        );
    }

    #[test]
    fn symlinks_and_dotdot_stay_inside_the_rootfs() {
        let host = tempfile::tempdir().unwrap();
        let root = host.path().join("rootfs");
        std::fs::create_dir_all(&root).unwrap();
        std::fs::write(host.path().join("outside.wasm"), MODULE).unwrap();
        std::os::unix::fs::symlink(host.path().join("outside.wasm"), root.join("abs.wasm"))
            .unwrap();
        std::os::unix::fs::symlink("../outside.wasm", root.join("rel.wasm")).unwrap();
        for arg0 in ["/abs.wasm", "/rel.wasm", "/../outside.wasm"] {
            let err = ModuleSource::from_entrypoint(&policy(&root, arg0, &[])).unwrap_err();
            assert!(matches!(err, Error::Entrypoint { .. }), "{arg0}: {err}");
        }
    }

    #[test]
    fn missing_directory_and_non_wasm_entrypoints_are_clear_errors() {
        let root = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(root.path().join("dir.wasm")).unwrap();
        std::fs::write(root.path().join("empty.wasm"), b"").unwrap();
        let err =
            ModuleSource::from_entrypoint(&policy(root.path(), "/nope.wasm", &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "entrypoint /nope.wasm: no such file in the container"
        );
        let err =
            ModuleSource::from_entrypoint(&policy(root.path(), "/dir.wasm", &[])).unwrap_err();
        assert!(matches!(err, Error::Entrypoint { .. }), "{err}");
        let err =
            ModuleSource::from_entrypoint(&policy(root.path(), "/empty.wasm", &[])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "/empty.wasm is not a WebAssembly module: the file is empty"
        );
    }

    fn process(args: &[&str], path: &str) -> oci_spec::runtime::Process {
        oci_spec::runtime::ProcessBuilder::default()
            .args(args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
            .env(vec![format!("PATH={path}")])
            .cwd("/app")
            .build()
            .unwrap()
    }

    #[test]
    fn entrypoint_kinds_come_from_the_first_bytes() {
        assert_eq!(
            EntrypointKind::of(b"\x7fELF\x02\x01\x01\0"),
            Ok(EntrypointKind::Elf)
        );
        assert_eq!(
            EntrypointKind::of(b"#!/bin/sh\n"),
            Ok(EntrypointKind::Script)
        );
        assert_eq!(
            EntrypointKind::of(MODULE),
            Ok(EntrypointKind::Wasm(ModuleKind::Module))
        );
        assert_eq!(
            EntrypointKind::of(COMPONENT),
            Ok(EntrypointKind::Wasm(ModuleKind::Component))
        );
        assert!(EntrypointKind::Elf.is_native() && EntrypointKind::Script.is_native());
        assert!(!EntrypointKind::Wasm(ModuleKind::Module).is_native());
        let garbage = EntrypointKind::of(b"MZ\x90\0garbage").unwrap_err();
        assert!(
            garbage.contains("neither WebAssembly") && garbage.contains("ELF"),
            "{garbage}"
        );
        assert_eq!(EntrypointKind::of(b"").unwrap_err(), "the file is empty");
        // The magic of Wasm with an unknown version is still a Wasm error, not "native".
        assert!(EntrypointKind::of(b"\0asm\x02\0\0\0")
            .unwrap_err()
            .contains("version"));
    }

    #[test]
    fn probe_resolves_the_entrypoint_in_the_rootfs() {
        let root = tempfile::tempdir().unwrap();
        let r = root.path();
        for dir in ["bin", "app"] {
            std::fs::create_dir_all(r.join(dir)).unwrap();
        }
        std::fs::write(r.join("bin/busybox"), b"\x7fELF\x02\x01\x01\0rest").unwrap();
        // An absolute link resolves inside the rootfs, as it would in the container.
        std::os::unix::fs::symlink("/bin/busybox", r.join("bin/sh")).unwrap();
        std::fs::write(r.join("app/run.sh"), b"#!/bin/sh\necho hi\n").unwrap();
        std::fs::write(r.join("app/m.wasm"), MODULE).unwrap();
        std::fs::write(r.join("app/junk"), b"just some text").unwrap();

        let probe = |args: &[&str]| probe_entrypoint(&process(args, "/usr/bin:/bin"), r);
        assert_eq!(
            probe(&["sh", "-c", "exit 7"]).unwrap(),
            ("/bin/sh".to_string(), EntrypointKind::Elf)
        );
        assert_eq!(
            probe(&["./run.sh"]).unwrap(),
            ("/app/./run.sh".to_string(), EntrypointKind::Script)
        );
        assert_eq!(
            probe(&["/app/m.wasm#greet"]).unwrap(),
            (
                "/app/m.wasm".to_string(),
                EntrypointKind::Wasm(ModuleKind::Module)
            )
        );
        let err = probe(&["/app/junk"]).unwrap_err();
        assert!(matches!(err, Error::NotWasm { .. }), "{err}");
        assert!(err
            .to_string()
            .starts_with("/app/junk is not a WebAssembly module: neither"));
        let err = probe(&["nope"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "entrypoint /app/nope: no such file in the container"
        );
        let err = probe_entrypoint(&process(&[], "/bin"), r).unwrap_err();
        assert!(matches!(err, Error::Spec { .. }), "{err}");
    }
}
