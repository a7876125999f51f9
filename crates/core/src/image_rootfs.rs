//! An image's root filesystem as its tar layers stack up, read without unpacking anything to
//! disk: enough for the precompile command to find the entrypoint of a compat image (the
//! module is a file of a tar layer) the way the container would see it once containerd had
//! unpacked the image.
//!
//! Layers apply bottom to top with the OCI whiteout rules (`.wh.<name>` hides `<name>` of the
//! layers below, `.wh..wh..opq` hides a whole directory's lower contents); paths resolve
//! component by component inside the root, following symlinks (`..` stops at `/`, as
//! `RESOLVE_IN_ROOT` does at a start).

use std::collections::{HashMap, HashSet};
use std::io::Read;

const WHITEOUT_PREFIX: &str = ".wh.";
const OPAQUE_MARKER: &str = ".wh..wh..opq";
/// As the kernel's limit on symlinks followed in one lookup.
const MAX_SYMLINKS: usize = 40;
const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Node {
    /// A regular file: its bytes are `tar[offset..offset + len]` of its layer.
    File {
        offset: usize,
        len: usize,
    },
    Dir,
    Symlink(String),
    /// A hard link names another entry of the archive by its path.
    Hardlink(String),
    /// Devices, FIFOs, sparse files: nothing a module can be.
    Other,
}

#[derive(Debug, Default)]
struct Layer {
    /// The uncompressed tar.
    tar: Vec<u8>,
    nodes: HashMap<String, Node>,
    /// Paths this layer removes from the layers below.
    whiteouts: HashSet<String>,
    /// Directories whose lower contents this layer hides.
    opaque: HashSet<String>,
}

/// The layers of an image, bottom first.
#[derive(Debug, Default)]
pub struct RootFs {
    layers: Vec<Layer>,
}

impl RootFs {
    /// Stack `layers` (bottom first; each a tar, plain or gzip-compressed, as in the manifest).
    pub fn from_layers(layers: impl IntoIterator<Item = Vec<u8>>) -> Result<Self, String> {
        let layers = layers
            .into_iter()
            .enumerate()
            .map(|(i, blob)| Layer::read(blob).map_err(|e| format!("layer {i}: {e}")))
            .collect::<Result<_, _>>()?;
        Ok(RootFs { layers })
    }

    /// The bytes of the regular file at absolute `path`, symlinks followed inside the root.
    pub fn file(&self, path: &str) -> Result<&[u8], String> {
        let resolved = self.resolve(path)?;
        let (layer, node) = self
            .node(&resolved)
            .ok_or_else(|| format!("{path}: no such file in the image"))?;
        let (layer, node) = match node {
            // A hard link's target is an archive path (of this layer or one below), taken
            // literally: tar does not resolve it through symlinks.
            Node::Hardlink(target) => self
                .node_at_or_below(&clean(target), layer)
                .ok_or_else(|| format!("{path}: hard link to missing {target}"))?,
            _ => (layer, node),
        };
        match node {
            Node::File { offset, len } => Ok(&self.layers[layer].tar[*offset..*offset + *len]),
            Node::Dir => Err(format!("{path} is a directory")),
            _ => Err(format!("{path} is not a regular file")),
        }
    }

    /// `path` with every symlink on the way replaced by its target.
    fn resolve(&self, path: &str) -> Result<String, String> {
        let mut pending: Vec<String> = components(path).rev().map(str::to_string).collect();
        let mut resolved: Vec<String> = Vec::new();
        let mut followed = 0;
        while let Some(part) = pending.pop() {
            if part == ".." {
                resolved.pop();
                continue;
            }
            resolved.push(part);
            let here = format!("/{}", resolved.join("/"));
            let Some((_, Node::Symlink(target))) = self.node(&here) else {
                continue;
            };
            followed += 1;
            if followed > MAX_SYMLINKS {
                return Err(format!("{path}: too many levels of symbolic links"));
            }
            resolved.pop();
            if target.starts_with('/') {
                resolved.clear();
            }
            pending.extend(components(target).rev().map(str::to_string));
        }
        Ok(format!("/{}", resolved.join("/")))
    }

    /// The topmost entry at `path` (a clean absolute path) and the index of its layer.
    fn node(&self, path: &str) -> Option<(usize, &Node)> {
        self.node_at_or_below(path, self.layers.len().checked_sub(1)?)
    }

    fn node_at_or_below(&self, path: &str, top: usize) -> Option<(usize, &Node)> {
        if path == "/" {
            return Some((top, &Node::Dir));
        }
        for (i, layer) in self.layers[..=top].iter().enumerate().rev() {
            if let Some(node) = layer.nodes.get(path) {
                return Some((i, node));
            }
            if layer.hides(path) {
                return None;
            }
        }
        None
    }
}

impl Layer {
    fn read(blob: Vec<u8>) -> Result<Self, String> {
        let tar = if blob.starts_with(GZIP_MAGIC) {
            let mut tar = Vec::new();
            flate2::read::GzDecoder::new(&blob[..])
                .read_to_end(&mut tar)
                .map_err(|e| format!("gunzip: {e}"))?;
            tar
        } else if blob.starts_with(ZSTD_MAGIC) {
            return Err("zstd-compressed layers are not supported".into());
        } else {
            blob
        };
        let mut layer = Layer::default();
        let mut archive = tar::Archive::new(&tar[..]);
        for entry in archive.entries().map_err(|e| format!("not a tar: {e}"))? {
            let entry = entry.map_err(|e| format!("not a tar: {e}"))?;
            let path = clean(&entry.path().map_err(|e| e.to_string())?.to_string_lossy());
            let (dir, name) = path.rsplit_once('/').unwrap_or(("", &path));
            let dir = if dir.is_empty() { "/" } else { dir };
            if name == OPAQUE_MARKER {
                layer.opaque.insert(dir.to_string());
                continue;
            }
            if let Some(hidden) = name.strip_prefix(WHITEOUT_PREFIX) {
                layer
                    .whiteouts
                    .insert(format!("{}/{hidden}", dir.trim_end_matches('/')));
                continue;
            }
            let link = || {
                entry
                    .link_name()
                    .ok()
                    .flatten()
                    .map(|l| l.to_string_lossy().into_owned())
                    .unwrap_or_default()
            };
            let node = match entry.header().entry_type() {
                tar::EntryType::Regular | tar::EntryType::Continuous => {
                    let (offset, len) = (entry.raw_file_position() as usize, entry.size() as usize);
                    if offset.saturating_add(len) > tar.len() {
                        return Err(format!("truncated in {path}"));
                    }
                    Node::File { offset, len }
                }
                tar::EntryType::Directory => Node::Dir,
                tar::EntryType::Symlink => Node::Symlink(link()),
                tar::EntryType::Link => Node::Hardlink(link()),
                _ => Node::Other,
            };
            layer.nodes.insert(path, node);
        }
        layer.tar = tar;
        Ok(layer)
    }

    /// Whether this layer removes `path` of the layers below: a whiteout of it or of a parent,
    /// or an opaque parent.
    fn hides(&self, path: &str) -> bool {
        if self.whiteouts.contains(path) {
            return true;
        }
        let mut dir = path;
        while let Some((parent, _)) = dir.rsplit_once('/') {
            let parent = if parent.is_empty() { "/" } else { parent };
            if self.opaque.contains(parent) || self.whiteouts.contains(parent) {
                return true;
            }
            if parent == "/" {
                break;
            }
            dir = parent;
        }
        false
    }
}

fn components(path: &str) -> impl DoubleEndedIterator<Item = &str> {
    path.split('/').filter(|c| !c.is_empty() && *c != ".")
}

/// An archive path as an absolute path without `.`, empty components or a trailing `/`.
fn clean(path: &str) -> String {
    let mut out: Vec<&str> = Vec::new();
    for part in components(path) {
        if part == ".." {
            out.pop();
        } else {
            out.push(part);
        }
    }
    format!("/{}", out.join("/"))
}

#[cfg(test)]
mod tests {
    use super::*;

    enum E<'a> {
        File(&'a str, &'a [u8]),
        Dir(&'a str),
        Symlink(&'a str, &'a str),
        Hardlink(&'a str, &'a str),
    }

    fn tar(entries: &[E]) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        for e in entries {
            let mut h = tar::Header::new_gnu();
            h.set_mode(0o755);
            match e {
                E::File(p, data) => {
                    h.set_entry_type(tar::EntryType::Regular);
                    h.set_size(data.len() as u64);
                    b.append_data(&mut h, p, *data).unwrap();
                }
                E::Dir(p) => {
                    h.set_entry_type(tar::EntryType::Directory);
                    h.set_size(0);
                    b.append_data(&mut h, p, &[][..]).unwrap();
                }
                E::Symlink(p, t) | E::Hardlink(p, t) => {
                    h.set_entry_type(if matches!(e, E::Symlink(..)) {
                        tar::EntryType::Symlink
                    } else {
                        tar::EntryType::Link
                    });
                    h.set_size(0);
                    b.append_link(&mut h, p, t).unwrap();
                }
            }
        }
        b.into_inner().unwrap()
    }

    fn gzip(bytes: Vec<u8>) -> Vec<u8> {
        use std::io::Write;
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&bytes).unwrap();
        gz.finish().unwrap()
    }

    #[test]
    fn upper_layers_win_and_whiteouts_hide() {
        let fs = RootFs::from_layers([
            gzip(tar(&[
                E::Dir("./app/"),
                E::File("./app/m.wasm", b"lower"),
                E::File("./app/gone.wasm", b"x"),
                E::File("./old/a.wasm", b"x"),
                E::File("./keep/a.wasm", b"x"),
            ])),
            tar(&[
                E::File("app/m.wasm", b"upper"),
                E::File("app/.wh.gone.wasm", b""),
                E::File("old/.wh..wh..opq", b""),
                E::File("old/b.wasm", b"new"),
            ]),
        ])
        .unwrap();
        assert_eq!(fs.file("/app/m.wasm").unwrap(), b"upper");
        assert!(fs
            .file("/app/gone.wasm")
            .unwrap_err()
            .contains("no such file"));
        assert!(fs.file("/old/a.wasm").is_err());
        assert_eq!(fs.file("/old/b.wasm").unwrap(), b"new");
        assert_eq!(fs.file("/keep/a.wasm").unwrap(), b"x");
        assert!(fs.file("/app").unwrap_err().contains("directory"));
    }

    #[test]
    fn symlinks_resolve_inside_the_root() {
        let fs = RootFs::from_layers([tar(&[
            E::File("usr/bin/m.wasm", b"module"),
            E::Symlink("bin", "usr/bin"),
            E::Symlink("usr/bin/abs.wasm", "/usr/bin/m.wasm"),
            E::Symlink("escape.wasm", "../../../usr/bin/m.wasm"),
            E::Symlink("loop", "loop"),
            E::Hardlink("hard.wasm", "usr/bin/m.wasm"),
        ])])
        .unwrap();
        assert_eq!(fs.file("/bin/m.wasm").unwrap(), b"module");
        assert_eq!(fs.file("/bin/abs.wasm").unwrap(), b"module");
        // `..` above the root stays at the root, as at a start.
        assert_eq!(fs.file("/escape.wasm").unwrap(), b"module");
        assert_eq!(fs.file("/hard.wasm").unwrap(), b"module");
        assert!(fs.file("/loop").unwrap_err().contains("too many levels"));
    }

    #[test]
    fn not_a_tar_and_zstd_are_clear_errors() {
        let err = RootFs::from_layers([vec![0x28, 0xb5, 0x2f, 0xfd, 0, 0]]).unwrap_err();
        assert!(err.contains("layer 0") && err.contains("zstd"), "{err}");
        let err = RootFs::from_layers([b"\x1f\x8bnot gzip".to_vec()]).unwrap_err();
        assert!(err.contains("gunzip"), "{err}");
    }
}
