//! The OCI bundle containerd hands the shim: a folder with `config.json` and the rootfs.

use std::collections::HashMap;
use std::path::Path;

use oci_spec::runtime::Spec;

use crate::error::{Error, Result};

pub fn load_spec(bundle: &Path) -> Result<Spec> {
    load_spec_file(&bundle.join("config.json"))
}

/// A spec file, wherever it is (the `policy` command reads one outside a bundle too).
pub fn load_spec_file(path: &Path) -> Result<Spec> {
    let bundle = path.parent().unwrap_or(path);
    let bytes = std::fs::read(path).map_err(|e| Error::Bundle {
        path: bundle.to_path_buf(),
        reason: format!("reading {}: {e}", path.display()),
    })?;
    serde_json::from_slice(&bytes).map_err(|e| Error::Bundle {
        path: bundle.to_path_buf(),
        reason: format!("{} is not an OCI runtime spec: {e}", path.display()),
    })
}

/// The annotations of the spec in `bundle`, or none when it cannot be read.
pub fn annotations(bundle: &Path) -> HashMap<String, String> {
    load_spec(bundle)
        .ok()
        .and_then(|s| s.annotations().clone())
        .unwrap_or_default()
}
