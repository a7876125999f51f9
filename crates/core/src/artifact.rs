//! The compiled artifact cache: native code this node produced, keyed so that it is only ever
//! loaded by the engine build and CPU it was made for.
//!
//! Layout (one folder per node, `0700`): `<key>.bin` is the engine's artifact and `<key>.sha256`
//! its checksum. The checksum is written first and the artifact renamed into place last, so an
//! artifact without a matching checksum is never trusted: it is discarded and rebuilt. Builders
//! of the same key serialise on `<key>.lock`, so concurrent first starts compile once.
//!
//! A node folder rather than containerd's content store: artifacts are per node (CPU
//! features) and must never come from an image, and a folder works the same with every
//! engine and containerd version. Its size is bounded: after each new entry the least
//! recently used ones (a hit refreshes an entry's time) are removed until the total fits.
//! A running instance keeps its mapped artifact even if it is evicted meanwhile.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, IoContext, Result};

/// Bump when the layout or the key derivation changes.
const FORMAT: &str = "wasm-shim-artifact/v1";

/// A verified artifact ready to be mapped by the engine.
#[derive(Debug, Clone)]
pub struct Artifact {
    pub key: String,
    pub path: PathBuf,
}

/// How an artifact was obtained, for the log and the benchmark.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Hit,
    Compiled,
}

pub struct ArtifactCache {
    dir: PathBuf,
    max_bytes: Option<u64>,
}

impl ArtifactCache {
    /// A cache that may hold at most `max_bytes` of artifacts (`None`: unbounded).
    pub fn with_limit(dir: impl Into<PathBuf>, max_bytes: Option<u64>) -> Result<Self> {
        let mut cache = Self::open(dir)?;
        cache.max_bytes = max_bytes;
        Ok(cache)
    }

    pub fn open(dir: impl Into<PathBuf>) -> Result<Self> {
        let dir = dir.into();
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .io_context(|| format!("creating cache folder {}", dir.display()))?;
        Ok(ArtifactCache {
            dir,
            max_bytes: None,
        })
    }

    /// The key of a module: its digest plus everything about the engine that shapes the code.
    pub fn key(engine_fingerprint: &str, module_digest: &str) -> String {
        let mut h = Sha256::new();
        for part in [FORMAT, engine_fingerprint, module_digest] {
            h.update(part.as_bytes());
            h.update(b"\n");
        }
        hex::encode(h.finalize())
    }

    fn paths(&self, key: &str) -> (PathBuf, PathBuf) {
        (
            self.dir.join(format!("{key}.bin")),
            self.dir.join(format!("{key}.sha256")),
        )
    }

    /// A verified artifact for `key`, if there is one. A corrupt entry is removed with a warning.
    pub fn lookup(&self, key: &str) -> Result<Option<Artifact>> {
        let (bin, sum) = self.paths(key);
        let expected = match fs::read_to_string(&sum) {
            Ok(s) => s,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(Error::Cache(format!("reading {}: {e}", sum.display()))),
        };
        match sha256_file(&bin) {
            Ok(actual) if actual == expected.trim() => {
                // Recently used: eviction goes by this time.
                if let Ok(f) = File::options().write(true).open(&bin) {
                    let _ = f.set_modified(std::time::SystemTime::now());
                }
                Ok(Some(Artifact {
                    key: key.to_string(),
                    path: bin,
                }))
            }
            Ok(actual) => {
                log::warn!(
                    "cache entry {key} is corrupt (sha256 {actual}, expected {}): discarding it",
                    expected.trim()
                );
                let _ = fs::remove_file(&bin);
                let _ = fs::remove_file(&sum);
                Ok(None)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(Error::Cache(format!("reading {}: {e}", bin.display()))),
        }
    }

    /// The artifact for `key`, produced by `build` into a temporary file when missing.
    pub fn get_or_build(
        &self,
        key: &str,
        build: impl FnOnce(&Path) -> Result<()>,
    ) -> Result<(Artifact, Outcome)> {
        if let Some(found) = self.lookup(key)? {
            return Ok((found, Outcome::Hit));
        }
        let lock = self.lock(key)?;
        // Someone else may have built it while we waited.
        if let Some(found) = self.lookup(key)? {
            return Ok((found, Outcome::Hit));
        }

        let (bin, sum) = self.paths(key);
        let tmp = self.dir.join(format!(".{key}.{}.tmp", std::process::id()));
        let built = build(&tmp).and_then(|()| {
            let digest = sha256_file(&tmp).io_context(|| format!("reading {}", tmp.display()))?;
            File::open(&tmp)
                .and_then(|f| f.sync_all())
                .io_context(|| format!("syncing {}", tmp.display()))?;
            write_atomically(&sum, digest.as_bytes())?;
            fs::rename(&tmp, &bin).io_context(|| format!("publishing {}", bin.display()))?;
            Ok(())
        });
        if built.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        built?;
        drop(lock);
        self.evict(key);
        Ok((
            Artifact {
                key: key.to_string(),
                path: bin,
            },
            Outcome::Compiled,
        ))
    }
}

impl ArtifactCache {
    /// Holds `<key>.lock` exclusively. Eviction unlinks lock files, so the lock only counts
    /// if the file locked is still the one at that path; otherwise take the new one.
    fn lock(&self, key: &str) -> Result<File> {
        let path = self.dir.join(format!("{key}.lock"));
        loop {
            let lock = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .mode(0o600)
                .open(&path)
                .io_context(|| format!("opening {}", path.display()))?;
            lock.lock()
                .io_context(|| format!("locking {}", path.display()))?;
            let held = lock
                .metadata()
                .io_context(|| format!("reading {}", path.display()))?;
            match fs::metadata(&path) {
                Ok(now) if (now.dev(), now.ino()) == (held.dev(), held.ino()) => return Ok(lock),
                Ok(_) => continue,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(cause) => {
                    return Err(Error::Io {
                        context: format!("reading {}", path.display()),
                        cause,
                    });
                }
            }
        }
    }

    /// Removes `<key>.lock` unless a builder holds it (it is then still in use).
    fn remove_lock(&self, key: &str) {
        let path = self.dir.join(format!("{key}.lock"));
        if let Ok(lock) = File::open(&path) {
            if lock.try_lock().is_ok() {
                let _ = fs::remove_file(&path);
            }
        }
    }

    /// Remove least recently used artifacts (never `keep`) until the total fits the limit.
    fn evict(&self, keep: &str) {
        let Some(max) = self.max_bytes else { return };
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return;
        };
        let mut artifacts: Vec<(std::time::SystemTime, u64, String)> = entries
            .flatten()
            .filter_map(|e| {
                let name = e.file_name().into_string().ok()?;
                let key = name.strip_suffix(".bin")?.to_string();
                let meta = e.metadata().ok()?;
                Some((meta.modified().ok()?, meta.len(), key))
            })
            .collect();
        let mut total: u64 = artifacts.iter().map(|(_, len, _)| len).sum();
        artifacts.sort();
        for (_, len, key) in artifacts {
            if total <= max {
                break;
            }
            if key == keep {
                continue;
            }
            let (bin, sum) = self.paths(&key);
            if fs::remove_file(&bin).is_ok() {
                let _ = fs::remove_file(&sum);
                self.remove_lock(&key);
                total -= len;
                log::info!("cache: evicted {key} ({len} bytes) to stay within {max} bytes");
            }
        }
    }
}

fn write_atomically(path: &Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let mut f = File::create(&tmp).io_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(data)
        .and_then(|()| f.sync_all())
        .io_context(|| format!("writing {}", tmp.display()))?;
    fs::rename(&tmp, path).io_context(|| format!("publishing {}", path.display()))
}

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build_with(content: &'static [u8]) -> impl FnOnce(&Path) -> Result<()> {
        move |p: &Path| fs::write(p, content).io_context(|| "test build".into())
    }

    #[test]
    fn key_depends_on_engine_and_module() {
        let k = ArtifactCache::key("wasmtime 48 x86_64+avx2", "sha256:aa");
        assert_eq!(k.len(), 64);
        assert_eq!(
            k,
            ArtifactCache::key("wasmtime 48 x86_64+avx2", "sha256:aa")
        );
        assert_ne!(
            k,
            ArtifactCache::key("wasmtime 49 x86_64+avx2", "sha256:aa")
        );
        assert_ne!(k, ArtifactCache::key("wasmtime 48 x86_64", "sha256:aa"));
        assert_ne!(
            k,
            ArtifactCache::key("wasmtime 48 x86_64+avx2", "sha256:ab")
        );
    }

    #[test]
    fn builds_once_then_hits() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(dir.path().join("c")).unwrap();
        let (a, o) = cache.get_or_build("k", build_with(b"native")).unwrap();
        assert_eq!(o, Outcome::Compiled);
        assert_eq!(fs::read(&a.path).unwrap(), b"native");
        let (b, o) = cache
            .get_or_build("k", |_| panic!("must not rebuild"))
            .unwrap();
        assert_eq!((o, b.path), (Outcome::Hit, a.path));
    }

    #[test]
    fn corrupt_or_truncated_entries_are_rebuilt() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(dir.path()).unwrap();
        let (a, _) = cache.get_or_build("k", build_with(b"native code")).unwrap();
        fs::write(&a.path, b"native cod").unwrap();
        assert!(cache.lookup("k").unwrap().is_none());
        assert!(!a.path.exists(), "corrupt artifact removed");
        let (_, o) = cache.get_or_build("k", build_with(b"native code")).unwrap();
        assert_eq!(o, Outcome::Compiled);
        // An artifact with no checksum (a crash mid-publish) is not trusted either.
        fs::remove_file(dir.path().join("k.sha256")).unwrap();
        assert!(cache.lookup("k").unwrap().is_none());
    }

    #[test]
    fn failed_build_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(dir.path()).unwrap();
        let err = cache
            .get_or_build("k", |p| {
                fs::write(p, b"half").unwrap();
                Err(Error::Cache("compile failed".into()))
            })
            .unwrap_err();
        assert_eq!(err.to_string(), "artifact cache: compile failed");
        let left: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| !n.ends_with(".lock"))
            .collect();
        assert!(left.is_empty(), "{left:?}");
    }

    #[test]
    fn least_recently_used_entries_are_evicted_past_the_limit() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::with_limit(dir.path(), Some(10)).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(60);
        cache.get_or_build("a", build_with(b"aaaa")).unwrap();
        cache.get_or_build("b", build_with(b"bbbb")).unwrap();
        for key in ["a", "b"] {
            let f = File::options()
                .write(true)
                .open(dir.path().join(format!("{key}.bin")))
                .unwrap();
            f.set_modified(old).unwrap();
        }
        // A hit makes `a` the most recently used; `c` then pushes the total to 12 bytes.
        assert_eq!(
            cache.get_or_build("a", |_| panic!("cached")).unwrap().1,
            Outcome::Hit
        );
        cache.get_or_build("c", build_with(b"cccc")).unwrap();
        assert!(
            cache.lookup("b").unwrap().is_none(),
            "b was the least recently used"
        );
        assert!(cache.lookup("a").unwrap().is_some());
        assert!(cache.lookup("c").unwrap().is_some());
        assert!(!dir.path().join("b.sha256").exists());
        assert!(!dir.path().join("b.lock").exists());
    }

    #[test]
    fn a_lock_in_use_is_not_removed() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::open(dir.path()).unwrap();
        let lock_file = dir.path().join("k.lock");
        let held = cache.lock("k").unwrap();
        cache.remove_lock("k");
        assert!(lock_file.exists(), "a builder holds it");
        drop(held);
        cache.remove_lock("k");
        assert!(!lock_file.exists());
        // A lock taken afterwards is on the new file, not the unlinked one.
        let _again = cache.lock("k").unwrap();
        assert!(lock_file.exists());
    }

    #[test]
    fn an_artifact_larger_than_the_limit_is_still_kept() {
        let dir = tempfile::tempdir().unwrap();
        let cache = ArtifactCache::with_limit(dir.path(), Some(2)).unwrap();
        let (a, _) = cache
            .get_or_build("big", build_with(b"0123456789"))
            .unwrap();
        assert!(a.path.exists(), "the entry just built is never evicted");
    }

    #[test]
    fn concurrent_builders_compile_once() {
        let dir = tempfile::tempdir().unwrap();
        let builds = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    let cache = ArtifactCache::open(dir.path()).unwrap();
                    cache
                        .get_or_build("k", |p| {
                            builds.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            std::thread::sleep(std::time::Duration::from_millis(50));
                            fs::write(p, b"x").io_context(|| "w".into())
                        })
                        .unwrap();
                });
            }
        });
        assert_eq!(builds.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
