//! A filesystem layer: a set of files, directories and symlinks at absolute
//! image paths, written as a deterministic tar (sorted entries, mtime 0,
//! uid/gid 0) and optionally gzip-compressed.

use std::collections::BTreeMap;
use std::io::Write;

use anyhow::{bail, Context, Result};
use flate2::write::GzEncoder;
use flate2::Compression;

/// Mode given to directories that are only created as parents.
pub const DEFAULT_DIR_MODE: u32 = 0o755;

/// One entry of the layer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entry {
    Dir { mode: u32 },
    File { data: Vec<u8>, mode: u32 },
    Symlink { target: String },
}

/// Entries keyed by their path relative to `/` (`"app/data.txt"`). A
/// `BTreeMap` keeps them sorted, and a parent always sorts before its
/// children since it is a prefix of theirs.
#[derive(Debug, Default, Clone)]
pub struct Layer {
    entries: BTreeMap<String, Entry>,
}

impl Layer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a directory (and its parents). Adding an existing directory again
    /// only sets its mode, so a `--dir` can refine a parent created earlier.
    pub fn add_dir(&mut self, path: &str, mode: u32) -> Result<()> {
        let rel = normalize(path)?;
        check_mode(mode)?;
        self.add_parents(&rel)?;
        match self.entries.get_mut(&rel) {
            Some(Entry::Dir { mode: m }) => *m = mode,
            Some(_) => bail!("{path}: already added as a file or symlink"),
            None => {
                self.entries.insert(rel, Entry::Dir { mode });
            }
        }
        Ok(())
    }

    /// Adds a regular file (and its parent directories).
    pub fn add_file(&mut self, path: &str, data: Vec<u8>, mode: u32) -> Result<()> {
        check_mode(mode)?;
        self.insert_leaf(path, Entry::File { data, mode })
    }

    /// Adds a symlink `path -> target` (and its parent directories). The
    /// target is stored as given, absolute or relative.
    pub fn add_symlink(&mut self, path: &str, target: &str) -> Result<()> {
        if target.is_empty() {
            bail!("{path}: empty symlink target");
        }
        self.insert_leaf(
            path,
            Entry::Symlink {
                target: target.to_string(),
            },
        )
    }

    /// The entries, sorted by path (relative to `/`).
    pub fn entries(&self) -> impl Iterator<Item = (&str, &Entry)> {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    fn insert_leaf(&mut self, path: &str, entry: Entry) -> Result<()> {
        let rel = normalize(path)?;
        self.add_parents(&rel)?;
        if self.entries.contains_key(&rel) {
            bail!("{path}: added twice");
        }
        self.entries.insert(rel, entry);
        Ok(())
    }

    fn add_parents(&mut self, rel: &str) -> Result<()> {
        let mut end = 0;
        while let Some(i) = rel[end..].find('/') {
            let parent = &rel[..end + i];
            match self.entries.get(parent) {
                Some(Entry::Dir { .. }) => {}
                Some(_) => bail!("/{parent} is a file or symlink, it cannot hold /{rel}"),
                None => {
                    self.entries.insert(
                        parent.to_string(),
                        Entry::Dir {
                            mode: DEFAULT_DIR_MODE,
                        },
                    );
                }
            }
            end += i + 1;
        }
        Ok(())
    }

    /// The uncompressed tar of the layer.
    pub fn to_tar(&self) -> Result<Vec<u8>> {
        let mut builder = tar::Builder::new(Vec::new());
        for (rel, entry) in &self.entries {
            let mut header = tar::Header::new_ustar();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            match entry {
                Entry::Dir { mode } => {
                    header.set_entry_type(tar::EntryType::Directory);
                    header.set_mode(*mode);
                    header.set_size(0);
                    builder.append_data(&mut header, format!("{rel}/"), std::io::empty())
                }
                Entry::File { data, mode } => {
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(*mode);
                    header.set_size(data.len() as u64);
                    builder.append_data(&mut header, rel, data.as_slice())
                }
                Entry::Symlink { target } => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder.append_link(&mut header, rel, target)
                }
            }
            .with_context(|| format!("adding /{rel} to the layer tar"))?;
        }
        Ok(builder.into_inner()?)
    }
}

/// Gzip with a fixed header (no file name, mtime 0), so equal input gives
/// equal output.
pub fn gzip(data: &[u8]) -> Result<Vec<u8>> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(data)?;
    Ok(encoder.finish()?)
}

/// Turns an absolute image path into the relative key used in the tar:
/// `/a//b/` -> `a/b`. Rejects relative paths, `.`/`..` and `/` itself.
pub fn normalize(path: &str) -> Result<String> {
    if !path.starts_with('/') {
        bail!("image path {path:?} must be absolute");
    }
    let mut parts = Vec::new();
    for part in path.split('/').filter(|p| !p.is_empty()) {
        if part == "." || part == ".." {
            bail!("image path {path:?} must not contain . or ..");
        }
        parts.push(part);
    }
    if parts.is_empty() {
        bail!("image path {path:?} names the root directory");
    }
    Ok(parts.join("/"))
}

fn check_mode(mode: u32) -> Result<()> {
    if mode > 0o7777 {
        bail!("mode {mode:o} is not a permission mode (at most 7777)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalize_paths() {
        assert_eq!(normalize("/a//b/").unwrap(), "a/b");
        assert_eq!(normalize("/hello.wasm").unwrap(), "hello.wasm");
        assert!(normalize("a/b").is_err());
        assert!(normalize("/").is_err());
        assert!(normalize("/a/../b").is_err());
        assert!(normalize("/a/./b").is_err());
    }

    #[test]
    fn parents_are_created_and_sorted_first() {
        let mut layer = Layer::new();
        layer.add_file("/b/c/file", b"x".to_vec(), 0o644).unwrap();
        layer.add_symlink("/a-link", "/b/c/file").unwrap();
        layer.add_dir("/b", 0o700).unwrap();
        let names: Vec<&str> = layer.entries().map(|(k, _)| k).collect();
        assert_eq!(names, ["a-link", "b", "b/c", "b/c/file"]);
        assert_eq!(
            layer.entries().nth(1).unwrap().1,
            &Entry::Dir { mode: 0o700 }
        );
    }

    #[test]
    fn conflicts_are_errors() {
        let mut layer = Layer::new();
        layer.add_file("/f", vec![], 0o644).unwrap();
        assert!(layer.add_file("/f", vec![], 0o644).is_err());
        assert!(layer.add_dir("/f", 0o755).is_err());
        assert!(layer.add_file("/f/g", vec![], 0o644).is_err());
        assert!(layer.add_symlink("/l", "").is_err());
        assert!(layer.add_file("/m", vec![], 0o10000).is_err());
    }

    #[test]
    fn tar_is_deterministic_and_readable() {
        let mut layer = Layer::new();
        layer
            .add_file("/bin/busybox", b"ELF".to_vec(), 0o755)
            .unwrap();
        layer.add_symlink("/bin/sh", "busybox").unwrap();
        let tar1 = layer.to_tar().unwrap();
        assert_eq!(tar1, layer.to_tar().unwrap());
        assert_eq!(gzip(&tar1).unwrap(), gzip(&tar1).unwrap());

        let mut archive = tar::Archive::new(tar1.as_slice());
        let got: Vec<(String, tar::EntryType, u32, u64)> = archive
            .entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let h = e.header();
                (
                    e.path().unwrap().to_string_lossy().into_owned(),
                    h.entry_type(),
                    h.mode().unwrap(),
                    h.mtime().unwrap() + h.uid().unwrap() + h.gid().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            got,
            [
                ("bin/".to_string(), tar::EntryType::Directory, 0o755, 0),
                ("bin/busybox".to_string(), tar::EntryType::Regular, 0o755, 0),
                ("bin/sh".to_string(), tar::EntryType::Symlink, 0o777, 0),
            ]
        );
    }
}
