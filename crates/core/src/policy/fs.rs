//! Filesystem capabilities: which host paths the guest reaches, where, and how.
//!
//! - the rootfs is preopened as `/`;
//! - a bind mount of a directory is a preopen at its destination;
//! - a bind mount of a file (`/etc/hosts`, `/dev/termination-log`, ...) is bound onto its
//!   destination inside the rootfs, since a preopen is a directory;
//! - a `tmpfs` mount is a private, size-bounded tmpfs scratch folder in the bundle;
//! - kernel filesystems are not exposed.

use std::path::{Component, Path, PathBuf};

use oci_spec::runtime::Mount;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Whether a path may be written through.
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

/// A tmpfs the task service mounts at `host_path` (inside the bundle) before start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScratchDir {
    pub host_path: PathBuf,
    pub size_bytes: u64,
}

/// A host file bound onto `guest_path` inside the rootfs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileBind {
    pub source: PathBuf,
    pub guest_path: String,
    pub access: Access,
}

/// What a bind mount's source is on the host; `None` from the probe means it is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    Directory,
    File,
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

#[derive(Debug, Default, PartialEq, Eq)]
pub struct Filesystem {
    pub preopens: Vec<Preopen>,
    pub scratch: Vec<ScratchDir>,
    pub file_binds: Vec<FileBind>,
}

impl Filesystem {
    fn expose(&mut self, preopen: Preopen) {
        // A later mount at the same destination shadows an earlier one, as in Linux.
        self.preopens.retain(|p| p.guest_path != preopen.guest_path);
        self.file_binds
            .retain(|b| b.guest_path != preopen.guest_path);
        self.preopens.push(preopen);
    }
}

pub fn from_mounts(
    root: Preopen,
    mounts: &[Mount],
    bundle: &Path,
    default_scratch_size: u64,
    probe: &dyn Fn(&Path) -> Option<SourceKind>,
) -> Result<Filesystem> {
    let mut fs = Filesystem::default();
    fs.expose(root);
    for (index, mount) in mounts.iter().enumerate() {
        let field = |name: &str| format!("mounts[{index}].{name}");
        let destination = normalize_guest_path(mount.destination()).ok_or_else(|| {
            Error::spec(
                field("destination"),
                format!(
                    "{:?} is not an absolute path without ..",
                    mount.destination()
                ),
            )
        })?;
        let options = mount.options().as_deref().unwrap_or_default();
        let access = if options.iter().any(|o| o == "ro") {
            Access::ReadOnly
        } else {
            Access::ReadWrite
        };
        let typ = mount.typ().as_deref().unwrap_or("");
        let is_bind = typ == "bind" || options.iter().any(|o| o == "bind" || o == "rbind");

        if is_bind {
            let source = mount
                .source()
                .as_ref()
                .filter(|s| s.is_absolute())
                .ok_or_else(|| {
                    Error::spec(field("source"), "a bind mount needs an absolute source")
                })?;
            match probe(source) {
                Some(SourceKind::Directory) => fs.expose(Preopen {
                    guest_path: destination,
                    host_path: source.clone(),
                    access,
                }),
                Some(SourceKind::File) => {
                    if destination == "/" {
                        return Err(Error::spec(
                            field("destination"),
                            "a file cannot be mounted at /",
                        ));
                    }
                    fs.file_binds.retain(|b| b.guest_path != destination);
                    fs.file_binds.push(FileBind {
                        source: source.clone(),
                        guest_path: destination,
                        access,
                    });
                }
                None => {
                    return Err(Error::spec(
                        field("source"),
                        format!("{} does not exist on the host", source.display()),
                    ))
                }
            }
        } else if typ == "tmpfs" {
            let size_bytes = tmpfs_size(options)
                .map_err(|why| Error::spec(field("options"), why))?
                .unwrap_or(default_scratch_size);
            let host_path = bundle.join("scratch").join(index.to_string());
            fs.scratch.push(ScratchDir {
                host_path: host_path.clone(),
                size_bytes,
            });
            fs.expose(Preopen {
                guest_path: destination,
                host_path,
                access,
            });
        } else if !KERNEL_FILESYSTEMS.contains(&typ) {
            return Err(Error::spec(
                field("type"),
                format!(
                    "mount type {typ:?} at {destination} is not supported by the Wasm sandbox \
                     (bind mounts and tmpfs are)"
                ),
            ));
        }
    }
    Ok(fs)
}

/// The `size=` option of a tmpfs mount, in bytes (`64k`, `1m`, `2g`, plain bytes).
fn tmpfs_size(options: &[String]) -> std::result::Result<Option<u64>, String> {
    let Some(value) = options.iter().find_map(|o| o.strip_prefix("size=")) else {
        return Ok(None);
    };
    let (digits, unit) = value.split_at(
        value
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(value.len()),
    );
    let scale = match unit.to_ascii_lowercase().as_str() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return Err(format!("size={value}: unknown unit {unit:?} (k, m, g)")),
    };
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("size={value} is not a number of bytes"))?;
    match n.checked_mul(scale) {
        Some(0) | None => Err(format!("size={value} is not a usable size")),
        Some(bytes) => Ok(Some(bytes)),
    }
}

/// `/a/./b/` -> `/a/b`; rejects relative paths and `..`, which a destination must not contain.
pub fn normalize_guest_path(path: &Path) -> Option<String> {
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

    #[test]
    fn tmpfs_sizes() {
        let opts = |s: &str| vec![s.to_string(), "nosuid".to_string()];
        assert_eq!(tmpfs_size(&opts("size=65536k")), Ok(Some(64 << 20)));
        assert_eq!(tmpfs_size(&opts("size=2m")), Ok(Some(2 << 20)));
        assert_eq!(tmpfs_size(&opts("size=4096")), Ok(Some(4096)));
        assert_eq!(tmpfs_size(&opts("mode=755")), Ok(None));
        assert!(tmpfs_size(&opts("size=10q"))
            .unwrap_err()
            .contains("unknown unit"));
        assert!(tmpfs_size(&opts("size=0")).is_err());
        assert!(tmpfs_size(&opts("size=k")).is_err());
    }

    #[test]
    fn guest_paths_are_normalised() {
        assert_eq!(
            normalize_guest_path(Path::new("/a/./b/")).as_deref(),
            Some("/a/b")
        );
        assert_eq!(normalize_guest_path(Path::new("/")).as_deref(), Some("/"));
        assert_eq!(normalize_guest_path(Path::new("a/b")), None);
        assert_eq!(normalize_guest_path(Path::new("/a/../b")), None);
    }
}
