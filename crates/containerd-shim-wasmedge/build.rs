//! The shim finds `libwasmedge.so` without `LD_LIBRARY_PATH` (containerd starts shims with its
//! own environment), through the binary's RUNPATH:
//! 1. `$ORIGIN/../lib/containerd-shim-wasm`: where `runtimeclass/install.sh` puts the library
//!    beside an installed shim (`/usr/local/bin` -> `/usr/local/lib/containerd-shim-wasm`);
//! 2. the folder of the library it was built against (the one `wasmedge-sys` links: its search
//!    order, first match), for a shim run where it was built.

use std::path::{Path, PathBuf};

fn main() {
    for var in ["DOCS_RS", "WASMEDGE_LIB_DIR", "WASMEDGE_DIR", "HOME"] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    // Type-checking against the SDK's bundled bindings: nothing is linked.
    if std::env::var_os("DOCS_RS").is_some() {
        return;
    }
    println!("cargo:rustc-link-arg-bins=-Wl,-rpath,$ORIGIN/../lib/containerd-shim-wasm");
    if let Some(dir) = library_dir() {
        println!("cargo:rustc-link-arg-bins=-Wl,-rpath,{}", dir.display());
    }
}

fn library_dir() -> Option<PathBuf> {
    let env = |k: &str| std::env::var_os(k).map(PathBuf::from);
    let mut candidates: Vec<PathBuf> = Vec::new();
    candidates.extend(env("WASMEDGE_LIB_DIR"));
    if let Some(d) = env("WASMEDGE_DIR") {
        candidates.extend([d.join("lib64"), d.join("lib")]);
    }
    if let Some(h) = env("HOME") {
        candidates.extend([h.join(".wasmedge/lib64"), h.join(".wasmedge/lib")]);
    }
    candidates.extend([PathBuf::from("/usr/local/lib64"), "/usr/local/lib".into()]);
    if let Some(h) = env("HOME") {
        candidates.extend([h.join(".local/lib64"), h.join(".local/lib")]);
    }
    candidates
        .into_iter()
        .find(|d| has_library(d))
        .map(|d| d.canonicalize().unwrap_or(d))
}

fn has_library(dir: &Path) -> bool {
    dir.join("libwasmedge.so").exists()
}
