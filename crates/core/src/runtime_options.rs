//! The options of the containerd runtime entry that started this shim: the `options` table
//! under `[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.<handler>]`, or
//! `ctr run --runtime-config-path`. For a runtime that is not runc, containerd sends them as
//! `runtimeoptions.v1.Options` (`TypeUrl`, `ConfigPath`, `ConfigBody`), the message gVisor's
//! runtime is configured with; `ConfigPath` names the sandbox profile of the runtime class.

use std::path::PathBuf;

use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::CodedInputStream;

use crate::error::{Error, Result};

/// The protobuf type containerd sends them as (with or without a `type.googleapis.com/`).
const TYPE_NAME: &str = "runtimeoptions.v1.Options";

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuntimeOptions {
    /// `ConfigPath`: the sandbox profile file of this runtime class.
    pub config_path: Option<PathBuf>,
}

impl RuntimeOptions {
    /// Decode the options of a Create request; none at all is the empty value.
    pub fn from_any(any: Option<&Any>) -> Result<Self> {
        let Some(any) = any.filter(|a| !a.type_url.is_empty() || !a.value.is_empty()) else {
            return Ok(Self::default());
        };
        let name = any.type_url.rsplit('/').next().unwrap_or_default();
        // A task of a pod whose sandbox this shim holds (containerd 2.x, `sandboxer =
        // "shim"`): containerd hands it runc's options, carrying only the task API address.
        if name == RUNC_OPTIONS {
            return Ok(Self::default());
        }
        if name != TYPE_NAME {
            return Err(Error::Unsupported(format!(
                "runtime options of type {:?}: this shim takes {TYPE_NAME} (ConfigPath = a sandbox profile)",
                any.type_url
            )));
        }
        decode(&any.value).map_err(|e| {
            Error::Unsupported(format!("runtime options ({TYPE_NAME}) do not decode: {e}"))
        })
    }
}

/// What containerd 2.x sends as task options to a task in a shim-held sandbox.
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";

/// `string type_url = 1; string config_path = 2; string config_body = 3;`
fn decode(bytes: &[u8]) -> std::result::Result<RuntimeOptions, String> {
    let mut input = CodedInputStream::from_bytes(bytes);
    let mut options = RuntimeOptions::default();
    let mut body = String::new();
    while let Some(tag) = input.read_raw_tag_or_eof().map_err(|e| e.to_string())? {
        let (field, wire) = (tag >> 3, tag & 7);
        match (field, wire) {
            (1, 2) => drop(input.read_string().map_err(|e| e.to_string())?),
            (2, 2) => {
                let path = input.read_string().map_err(|e| e.to_string())?;
                options.config_path = (!path.is_empty()).then(|| PathBuf::from(path));
            }
            (3, 2) => body = input.read_string().map_err(|e| e.to_string())?,
            _ => return Err(format!("unexpected field {field} (wire type {wire})")),
        }
    }
    if !body.is_empty() {
        // An inline profile would be reviewed nowhere; the profile is a file on the node.
        return Err("ConfigBody is not supported; name a profile file with ConfigPath".into());
    }
    Ok(options)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn any(type_url: &str, value: Vec<u8>) -> Any {
        let mut a = Any::new();
        a.type_url = type_url.into();
        a.value = value;
        a
    }

    /// field 2 (config_path), length-delimited.
    fn config_path(path: &str) -> Vec<u8> {
        let mut v = vec![0x12, path.len() as u8];
        v.extend_from_slice(path.as_bytes());
        v
    }

    #[test]
    fn config_path_is_read_with_or_without_the_url_prefix() {
        for url in [TYPE_NAME, "type.googleapis.com/runtimeoptions.v1.Options"] {
            let o = RuntimeOptions::from_any(Some(&any(url, config_path("/p/strict.toml"))));
            assert_eq!(
                o.unwrap().config_path,
                Some(PathBuf::from("/p/strict.toml"))
            );
        }
    }

    #[test]
    fn no_options_is_empty() {
        assert_eq!(RuntimeOptions::from_any(None).unwrap(), Default::default());
        assert_eq!(
            RuntimeOptions::from_any(Some(&Any::new())).unwrap(),
            Default::default()
        );
    }

    #[test]
    fn runc_options_of_a_shim_held_pod_carry_no_profile() {
        // containerd 2.x's task options in a pod this shim holds: the task API address only.
        let runc = any("containerd.runc.v1.Options", vec![0x62, 2, b'/', b's']);
        assert_eq!(
            RuntimeOptions::from_any(Some(&runc)).unwrap(),
            Default::default()
        );
    }

    #[test]
    fn other_types_and_inline_bodies_are_refused() {
        let other = any("io.containerd.other.v1.Options", vec![]);
        assert!(RuntimeOptions::from_any(Some(&other)).is_err());
        let body = any(TYPE_NAME, vec![0x1a, 3, b'a', b'=', b'1']);
        let e = RuntimeOptions::from_any(Some(&body))
            .unwrap_err()
            .to_string();
        assert!(e.contains("ConfigBody"), "{e}");
    }
}
