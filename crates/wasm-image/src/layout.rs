//! OCI image JSON documents and the image-layout tarball
//! (`oci-layout`, `index.json`, `blobs/sha256/<hex>`), as read by
//! `ctr image import`.

use std::collections::BTreeMap;

use anyhow::{bail, Context, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::layer::{gzip, Layer};
use crate::wasm::{inspect, WasmKind};

pub const MEDIA_TYPE_INDEX: &str = "application/vnd.oci.image.index.v1+json";
pub const MEDIA_TYPE_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const MEDIA_TYPE_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Config and layer media types of the CNCF Wasm OCI artifact.
pub const MEDIA_TYPE_WASM_CONFIG: &str = "application/vnd.wasm.config.v0+json";
pub const MEDIA_TYPE_WASM_LAYER: &str = "application/wasm";
/// Layer media type of the component-layer layout (an image config, the module as a layer).
pub const MEDIA_TYPE_COMPONENT_LAYER: &str =
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
/// The layer annotation that names the module (the shim matches it against the entrypoint).
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";

pub const ANNOTATION_CONTAINERD_NAME: &str = "io.containerd.image.name";
pub const ANNOTATION_REF_NAME: &str = "org.opencontainers.image.ref.name";

/// `sha256:<hex>` of `data`.
pub fn sha256_digest(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
}

impl Platform {
    /// Parses `os/arch` or `os/arch/variant`.
    pub fn parse(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split('/').collect();
        if !(2..=3).contains(&parts.len()) || parts.iter().any(|p| p.is_empty()) {
            bail!("invalid platform {s:?}: expected OS/ARCH or OS/ARCH/VARIANT");
        }
        Ok(Platform {
            os: parts[0].to_string(),
            architecture: parts[1].to_string(),
            variant: parts.get(2).map(|v| v.to_string()),
        })
    }
}

impl Default for Platform {
    fn default() -> Self {
        Platform {
            architecture: "amd64".into(),
            os: "linux".into(),
            variant: None,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Descriptor {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// A content-addressed blob together with its descriptor.
#[derive(Debug, Clone)]
pub struct Blob {
    pub descriptor: Descriptor,
    pub data: Vec<u8>,
}

impl Blob {
    pub fn new(media_type: &str, data: Vec<u8>) -> Self {
        Blob {
            descriptor: Descriptor {
                media_type: media_type.to_string(),
                digest: sha256_digest(&data),
                size: data.len() as u64,
                platform: None,
                annotations: BTreeMap::new(),
            },
            data,
        }
    }

    fn json<T: Serialize>(media_type: &str, value: &T) -> Result<Self> {
        Ok(Blob::new(media_type, serde_json::to_vec(value)?))
    }
}

/// What runs: the `config` part of an OCI image config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExecConfig {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub entrypoint: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub working_dir: Option<String>,
}

/// The blobs of one image: its config and layers, and the manifest that
/// points at them.
#[derive(Debug, Clone)]
pub struct Image {
    pub config: Blob,
    pub layers: Vec<Blob>,
    pub manifest: Blob,
    /// Recorded on the manifest's descriptor in `index.json`.
    pub platform: Platform,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Manifest<'a> {
    schema_version: u32,
    media_type: &'a str,
    config: &'a Descriptor,
    layers: Vec<&'a Descriptor>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Index<'a> {
    schema_version: u32,
    media_type: &'a str,
    manifests: Vec<Descriptor>,
}

#[derive(Serialize)]
struct OciConfig<'a> {
    created: &'a str,
    #[serde(flatten)]
    platform: &'a Platform,
    config: &'a ExecConfig,
    rootfs: RootFs,
}

#[derive(Serialize)]
struct RootFs {
    #[serde(rename = "type")]
    kind: &'static str,
    diff_ids: Vec<String>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct WasmConfig<'a> {
    created: &'a str,
    author: &'a str,
    architecture: &'static str,
    os: &'static str,
    layer_digests: Vec<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    component: Option<ComponentInfo<'a>>,
}

#[derive(Serialize)]
struct ComponentInfo<'a> {
    exports: &'a [String],
    imports: &'a [String],
}

fn manifest(config: Blob, layers: Vec<Blob>, platform: Platform) -> Result<Image> {
    let manifest = Blob::json(
        MEDIA_TYPE_MANIFEST,
        &Manifest {
            schema_version: 2,
            media_type: MEDIA_TYPE_MANIFEST,
            config: &config.descriptor,
            layers: layers.iter().map(|l| &l.descriptor).collect(),
        },
    )?;
    Ok(Image {
        config,
        layers,
        manifest,
        platform,
    })
}

/// A regular container image: `layer` as its single gzip'd layer.
pub fn compat_image(
    layer: &Layer,
    exec: &ExecConfig,
    platform: Platform,
    created: &str,
) -> Result<Image> {
    let tar = layer.to_tar()?;
    let diff_id = sha256_digest(&tar);
    let layer_blob = Blob::new(MEDIA_TYPE_LAYER_GZIP, gzip(&tar)?);
    let config = Blob::json(
        MEDIA_TYPE_CONFIG,
        &OciConfig {
            created,
            platform: &platform,
            config: exec,
            rootfs: RootFs {
                kind: "layers",
                diff_ids: vec![diff_id],
            },
        },
    )?;
    manifest(config, vec![layer_blob], platform)
}

/// The module as a layer of `media_type`, named `title`.
fn module_layer(module: Vec<u8>, media_type: &str, title: &str) -> Blob {
    let mut layer = Blob::new(media_type, module);
    layer
        .descriptor
        .annotations
        .insert(ANNOTATION_TITLE.to_string(), title.to_string());
    layer
}

/// `wasip1` for a core module, `wasip2` for a component.
fn wasi_os(kind: &WasmKind) -> &'static str {
    match kind {
        WasmKind::Module => "wasip1",
        WasmKind::Component { .. } => "wasip2",
    }
}

/// The component-layer layout: a regular image config (platform `wasip1`/`wasip2` on `wasm`,
/// entrypoint `/TITLE` unless `exec` says otherwise) and the module as its only layer, of
/// media type [`MEDIA_TYPE_COMPONENT_LAYER`]. `ctr run` can start it (containerd 1.7 and
/// later do not unpack the layer; the shim reads it from the content store).
pub fn component_layer_image(
    module: Vec<u8>,
    title: &str,
    exec: &ExecConfig,
    created: &str,
) -> Result<Image> {
    let kind = inspect(&module)?;
    let platform = Platform {
        architecture: "wasm".into(),
        os: wasi_os(&kind).into(),
        variant: None,
    };
    let layer = module_layer(module, MEDIA_TYPE_COMPONENT_LAYER, title);
    let mut exec = exec.clone();
    if exec.entrypoint.is_empty() && exec.cmd.is_empty() {
        exec.entrypoint = vec![format!("/{}", title.trim_start_matches('/'))];
    }
    let config = Blob::json(
        MEDIA_TYPE_CONFIG,
        &OciConfig {
            created,
            platform: &platform,
            config: &exec,
            // No diff ids: containerd 1.7 and later unpack only tar layers and match them
            // against the diff ids ("mismatched image rootfs and manifest layers" otherwise),
            // so the rootfs is empty and the module stays a blob of the content store.
            rootfs: RootFs {
                kind: "layers",
                diff_ids: Vec::new(),
            },
        },
    )?;
    manifest(config, vec![layer], platform)
}

/// A Wasm OCI artifact: the module or component itself is the only layer.
pub fn wasm_image(module: Vec<u8>, title: &str, author: &str, created: &str) -> Result<Image> {
    let kind = inspect(&module)?;
    let layer = module_layer(module, MEDIA_TYPE_WASM_LAYER, title);
    let (os, component) = match &kind {
        WasmKind::Module => ("wasip1", None),
        WasmKind::Component { imports, exports } => {
            ("wasip2", Some(ComponentInfo { exports, imports }))
        }
    };
    let config = Blob::json(
        MEDIA_TYPE_WASM_CONFIG,
        &WasmConfig {
            created,
            author,
            architecture: "wasm",
            os,
            layer_digests: vec![&layer.descriptor.digest],
            component,
        },
    )?;
    let platform = Platform {
        architecture: "wasm".into(),
        os: os.into(),
        variant: None,
    };
    manifest(config, vec![layer], platform)
}

/// The OCI image-layout tarball holding `image` under the name `name`.
pub fn layout_tar(image: &Image, name: &str) -> Result<Vec<u8>> {
    let mut top = image.manifest.descriptor.clone();
    top.platform = Some(image.platform.clone());
    top.annotations = BTreeMap::from([
        (ANNOTATION_CONTAINERD_NAME.to_string(), name.to_string()),
        (ANNOTATION_REF_NAME.to_string(), name.to_string()),
    ]);
    let index = serde_json::to_vec(&Index {
        schema_version: 2,
        media_type: MEDIA_TYPE_INDEX,
        manifests: vec![top],
    })?;

    let mut blobs: BTreeMap<&str, &[u8]> = BTreeMap::new();
    for blob in std::iter::once(&image.config)
        .chain(&image.layers)
        .chain(std::iter::once(&image.manifest))
    {
        let hex = blob
            .descriptor
            .digest
            .strip_prefix("sha256:")
            .context("blob digest is not sha256")?;
        blobs.insert(hex, &blob.data);
    }

    let mut builder = tar::Builder::new(Vec::new());
    let mut add = |path: &str, data: &[u8], dir: bool| -> Result<()> {
        let mut header = tar::Header::new_ustar();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        if dir {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o755);
        } else {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_mode(0o644);
        }
        header.set_size(data.len() as u64);
        builder
            .append_data(&mut header, path, data)
            .with_context(|| format!("adding {path} to the image tar"))
    };
    add("blobs/", &[], true)?;
    add("blobs/sha256/", &[], true)?;
    for (hex, data) in &blobs {
        add(&format!("blobs/sha256/{hex}"), data, false)?;
    }
    add("index.json", &index, false)?;
    add("oci-layout", br#"{"imageLayoutVersion":"1.0.0"}"#, false)?;
    Ok(builder.into_inner()?)
}

/// RFC 3339 UTC time (`1970-01-01T00:00:00Z`) for seconds since the epoch.
pub fn rfc3339(secs: u64) -> Result<String> {
    let time = i64::try_from(secs)
        .ok()
        .and_then(|s| time::OffsetDateTime::from_unix_timestamp(s).ok())
        .ok_or_else(|| {
            anyhow::anyhow!("{secs} seconds since 1970 is not a date RFC 3339 can write")
        })?;
    Ok(time.format(&time::format_description::well_known::Rfc3339)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(0).unwrap(), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(951_782_400).unwrap(), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(1_700_000_000).unwrap(), "2023-11-14T22:13:20Z");
        assert_eq!(rfc3339(4_107_542_399).unwrap(), "2100-02-28T23:59:59Z");
    }

    #[test]
    fn platforms() {
        assert_eq!(Platform::parse("linux/amd64").unwrap(), Platform::default());
        let p = Platform::parse("linux/arm64/v8").unwrap();
        assert_eq!(p.variant.as_deref(), Some("v8"));
        assert!(Platform::parse("linux").is_err());
        assert!(Platform::parse("linux/").is_err());
        assert!(Platform::parse("a/b/c/d").is_err());
    }
}
