//! A profile file: TOML with exactly the keys of [`Profile`]. Every error names the file and
//! the key, so that a platform team's typo never silently opens the sandbox.

use std::path::Path;

use serde::de::DeserializeOwned;
use toml::{Table, Value};

use super::{AllowedDir, Profile};
use crate::error::{Error, Result};
use crate::policy::fs::normalize_guest_path;
use crate::policy::network;

const KEYS: &[&str] = &[
    "max_memory_pages",
    "execution_timeout_ms",
    "allowed_hosts",
    "allowed_listen",
    "allowed_env_vars",
    "allowed_dirs",
    "max_network_requests",
];
const DIR_KEYS: &[&str] = &["guest_path", "readonly"];
/// 4 GiB of 64 KiB pages: what a 32-bit memory can address.
const MAX_PAGES: u64 = 65536;

pub fn parse(file: &Path, text: &str) -> Result<Profile> {
    let err = |key: &str, reason: String| Error::Profile {
        file: file.to_path_buf(),
        reason: format!("{key}: {reason}"),
    };
    let table: Table = text.parse().map_err(|e: toml::de::Error| Error::Profile {
        file: file.to_path_buf(),
        reason: e.message().to_string(),
    })?;
    if let Some(unknown) = table.keys().find(|k| !KEYS.contains(&k.as_str())) {
        return Err(err(
            unknown,
            format!("unknown key; known: {}", KEYS.join(", ")),
        ));
    }
    let name = file
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut profile = Profile {
        name,
        ..Profile::default()
    };

    profile.max_memory_pages =
        get::<u64>(&table, "max_memory_pages").map_err(|r| err("max_memory_pages", r))?;
    if let Some(pages) = profile
        .max_memory_pages
        .filter(|p| !(1..=MAX_PAGES).contains(p))
    {
        return Err(err(
            "max_memory_pages",
            format!("{pages} is not 1..={MAX_PAGES}"),
        ));
    }
    profile.execution_timeout_ms =
        get::<u64>(&table, "execution_timeout_ms").map_err(|r| err("execution_timeout_ms", r))?;
    if profile.execution_timeout_ms == Some(0) {
        return Err(err("execution_timeout_ms", "0 is not a time limit".into()));
    }
    profile.max_network_requests =
        get::<u64>(&table, "max_network_requests").map_err(|r| err("max_network_requests", r))?;

    for (i, entry) in get::<Vec<String>>(&table, "allowed_hosts")
        .map_err(|r| err("allowed_hosts", r))?
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        let mut rules =
            network::parse_rules(entry).map_err(|r| err(&format!("allowed_hosts[{i}]"), r))?;
        if rules.len() != 1 {
            return Err(err(
                &format!("allowed_hosts[{i}]"),
                format!("{entry:?} is not one ADDR:PORTS"),
            ));
        }
        profile.allowed_hosts.push(rules.remove(0));
    }

    profile.allowed_listen = get::<Vec<u16>>(&table, "allowed_listen")
        .map_err(|r| err("allowed_listen", r))?
        .unwrap_or_default();
    if profile.allowed_listen.contains(&0) {
        return Err(err(
            "allowed_listen",
            "port 0 is not a port to listen on".into(),
        ));
    }

    profile.allowed_env_vars = get::<Vec<String>>(&table, "allowed_env_vars")
        .map_err(|r| err("allowed_env_vars", r))?
        .unwrap_or_default();
    for (i, name) in profile.allowed_env_vars.iter().enumerate() {
        let bare = name.strip_suffix('*').unwrap_or(name);
        if bare.contains(['*', '=']) || (bare.is_empty() && name.is_empty()) {
            return Err(err(
                &format!("allowed_env_vars[{i}]"),
                format!("{name:?} is not a variable name (a trailing * is the only pattern)"),
            ));
        }
    }

    let dirs = get::<Vec<Value>>(&table, "allowed_dirs")
        .map_err(|r| err("allowed_dirs", r))?
        .unwrap_or_default();
    for (i, dir) in dirs.iter().enumerate() {
        let key = format!("allowed_dirs[{i}]");
        let dir = dir
            .as_table()
            .ok_or_else(|| err(&key, "expected a table of guest_path and readonly".into()))?;
        if let Some(unknown) = dir.keys().find(|k| !DIR_KEYS.contains(&k.as_str())) {
            return Err(err(
                &format!("{key}.{unknown}"),
                format!("unknown key; known: {}", DIR_KEYS.join(", ")),
            ));
        }
        let guest_path = get::<String>(dir, "guest_path")
            .map_err(|r| err(&format!("{key}.guest_path"), r))?
            .ok_or_else(|| err(&format!("{key}.guest_path"), "missing".into()))?;
        let guest_path = normalize_guest_path(Path::new(&guest_path)).ok_or_else(|| {
            err(
                &format!("{key}.guest_path"),
                format!("{guest_path:?} is not an absolute path without '..'"),
            )
        })?;
        // Read-only unless the profile says otherwise: the safe reading of a short entry.
        let readonly = get::<bool>(dir, "readonly")
            .map_err(|r| err(&format!("{key}.readonly"), r))?
            .unwrap_or(true);
        profile.allowed_dirs.push(AllowedDir {
            guest_path,
            readonly,
        });
    }
    Ok(profile)
}

/// The value at `key`, if present, as a `T`; the error is serde's (`invalid type: ...`).
fn get<T: DeserializeOwned>(table: &Table, key: &str) -> std::result::Result<Option<T>, String> {
    table
        .get(key)
        .map(|v| T::deserialize(v.clone()).map_err(|e| e.message().to_string()))
        .transpose()
}
