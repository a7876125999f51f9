//! Modules carried as layers of their own (Wasm OCI images), read from containerd's content
//! store through its gRPC API.
//!
//! Two layouts put the module in a layer whose media type says it is Wasm rather than a tar:
//! the CNCF Wasm OCI artifact (config `application/vnd.wasm.config.v0+json`, layer
//! `application/wasm`) and the component-layer layout
//! (`application/vnd.bytecodealliance.wasm.component.layer.v0+wasm`). containerd does not
//! unpack such a layer into the rootfs, so the shim follows the container's record to its
//! image and reads the layer's blob: container -> image name -> image target -> manifest
//! (from an index: the wasi/wasm platform, else this host's) -> Wasm layers -> blob.
//!
//! The task service only asks for this when the rootfs has no file at the entrypoint, so
//! images that carry the module in a tar layer (compat images) never connect to containerd.

use std::time::{Duration, Instant};

use containerd_client::services::v1::{GetContainerRequest, GetImageRequest, ReadContentRequest};
use containerd_client::tonic::{Request, Status};
use serde::Deserialize;

use crate::error::{Error, Result};
use crate::image_rootfs::RootFs;
use crate::source::{resolve_arg0, ModuleSource, DEFAULT_PATH};

/// Layer media type of the CNCF Wasm OCI artifact.
pub const MEDIA_TYPE_WASM: &str = "application/wasm";
/// Layer media type of the component-layer layout.
pub const MEDIA_TYPE_COMPONENT_LAYER: &str =
    "application/vnd.bytecodealliance.wasm.component.layer.v0+wasm";
/// The layer annotation that names the module, matched against `process.args[0]`.
pub const ANNOTATION_TITLE: &str = "org.opencontainers.image.title";

const MEDIA_TYPE_OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
const MEDIA_TYPE_DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
/// Operating systems of a Wasm image's platform, with architecture `wasm`.
const WASM_OSES: &[&str] = &["wasi", "wasip1", "wasip2"];
/// The whole lookup (connect, four calls, the blob) must finish within this.
const TIMEOUT: Duration = Duration::from_secs(20);
/// Reading all of an image for the precompile command (a compat image's every layer).
const IMAGE_TIMEOUT: Duration = Duration::from_secs(300);
/// The header containerd reads the namespace of a call from.
const NAMESPACE_HEADER: &str = "containerd-namespace";

/// Where containerd's API is, as containerd gave it to the shim.
#[derive(Debug, Clone)]
pub struct Containerd {
    /// The gRPC socket (`-address`), with or without `unix://`.
    pub address: String,
    pub namespace: String,
}

/// The module a container's image carries as a layer, and where it came from.
#[derive(Debug)]
pub struct LayerModule {
    pub source: ModuleSource,
    pub image: String,
    pub media_type: String,
    /// Time spent connecting to containerd and reading the blob.
    pub connect: Duration,
    pub total: Duration,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct Descriptor {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    #[serde(default)]
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
    #[serde(default)]
    pub annotations: std::collections::HashMap<String, String>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct Platform {
    #[serde(default)]
    pub os: String,
    #[serde(default)]
    pub architecture: String,
}

/// A manifest or an index: whichever fields the document has.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Document {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
    #[serde(default)]
    layers: Option<Vec<Descriptor>>,
    #[serde(default)]
    config: Option<Descriptor>,
}

fn is_wasm_layer(media_type: &str) -> bool {
    media_type == MEDIA_TYPE_WASM || media_type == MEDIA_TYPE_COMPONENT_LAYER
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// From an index, the manifest to read: a wasi/wasm one first, else linux/<this host>.
pub(crate) fn pick_manifest(manifests: &[Descriptor]) -> Option<&Descriptor> {
    let wasm = manifests.iter().find(|m| {
        m.platform
            .as_ref()
            .is_some_and(|p| p.architecture == "wasm" && WASM_OSES.contains(&p.os.as_str()))
    });
    wasm.or_else(|| {
        manifests.iter().find(|m| {
            m.platform
                .as_ref()
                .is_some_and(|p| p.os == "linux" && p.architecture == host_arch())
        })
    })
}

/// Of the manifest's Wasm layers, the one `arg0` names: the only one, or the one whose title
/// annotation is `arg0` or its file name.
pub(crate) fn pick_layer<'a>(
    image: &str,
    layers: &'a [Descriptor],
    arg0: &str,
) -> Result<&'a Descriptor> {
    let wasm: Vec<&Descriptor> = layers
        .iter()
        .filter(|l| is_wasm_layer(&l.media_type))
        .collect();
    match wasm[..] {
        [] => Err(Error::Image {
            image: image.into(),
            reason: format!(
                "it has no Wasm layer (media type {MEDIA_TYPE_WASM} or {MEDIA_TYPE_COMPONENT_LAYER})"
            ),
        }),
        [only] => Ok(only),
        _ => {
            let name = arg0.rsplit('/').next().unwrap_or(arg0);
            let titled: Vec<&&Descriptor> = wasm
                .iter()
                .filter(|l| {
                    l.annotations
                        .get(ANNOTATION_TITLE)
                        .is_some_and(|t| t == arg0 || t.trim_start_matches('/') == name)
                })
                .collect();
            match titled[..] {
                [one] => Ok(one),
                _ => Err(Error::Image {
                    image: image.into(),
                    reason: format!(
                        "{} Wasm layers, and {} of them has the annotation {ANNOTATION_TITLE} = \
                         {name:?} (the entrypoint {arg0:?}); titles: {}",
                        wasm.len(),
                        if titled.is_empty() { "none" } else { "more than one" },
                        wasm.iter()
                            .map(|l| l
                                .annotations
                                .get(ANNOTATION_TITLE)
                                .map(|t| format!("{t:?}"))
                                .unwrap_or_else(|| "(none)".into()))
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                }),
            }
        }
    }
}

/// A module an image carries, found for the precompile command.
#[derive(Debug)]
pub struct ImageModule {
    pub source: ModuleSource,
    /// Where in the image: a layer, or a file of the rootfs.
    pub origin: String,
}

/// An image's manifest, reached through an index to one platform's when there is one.
struct Manifest {
    image: String,
    config: Option<Descriptor>,
    layers: Vec<Descriptor>,
}

/// The parts of an image config that say what a container of it runs.
#[derive(Debug, Default, Deserialize)]
struct ImageConfig {
    #[serde(default)]
    config: Option<ExecConfig>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ExecConfig {
    #[serde(default)]
    entrypoint: Option<Vec<String>>,
    #[serde(default)]
    cmd: Option<Vec<String>>,
    #[serde(default)]
    env: Option<Vec<String>>,
    #[serde(default)]
    working_dir: Option<String>,
}

impl Containerd {
    fn socket(&self) -> &str {
        self.address
            .strip_prefix("unix://")
            .unwrap_or(&self.address)
    }

    /// The module of container `id`'s image whose layer `arg0` names.
    pub fn layer_module(&self, id: &str, arg0: &str) -> Result<LayerModule> {
        let t0 = Instant::now();
        let (source, image, media_type, connect) = self.block_on(TIMEOUT, async {
            let c0 = Instant::now();
            let client = self.connect().await?;
            let connect = c0.elapsed();
            let image = self.container_image(&client, id).await?;
            let manifest = self.manifest(&client, image).await?;
            let layer = pick_layer(&manifest.image, &manifest.layers, arg0)?;
            let source = self
                .layer_source(&client, &manifest, layer, arg0.to_string())
                .await?;
            Ok((source, manifest.image, layer.media_type.clone(), connect))
        })?;
        Ok(LayerModule {
            source,
            image,
            media_type,
            connect,
            total: t0.elapsed(),
        })
    }

    /// The modules image `name` carries: each Wasm layer, or, when it has none (a compat
    /// image), the file its entrypoint names in its tar layers.
    pub fn image_modules(&self, name: &str) -> Result<Vec<ImageModule>> {
        self.block_on(IMAGE_TIMEOUT, async {
            let client = self.connect().await?;
            let manifest = self.manifest(&client, name.to_string()).await?;
            let wasm: Vec<&Descriptor> = manifest
                .layers
                .iter()
                .filter(|l| is_wasm_layer(&l.media_type))
                .collect();
            if wasm.is_empty() {
                return Ok(vec![self.entrypoint_file(&client, &manifest).await?]);
            }
            let mut modules = Vec::new();
            for layer in wasm {
                let title = layer.annotations.get(ANNOTATION_TITLE).cloned();
                let source = self
                    .layer_source(&client, &manifest, layer, title.unwrap_or_default())
                    .await?;
                modules.push(ImageModule {
                    origin: format!("Wasm layer ({})", layer.media_type),
                    source,
                });
            }
            Ok(modules)
        })
    }

    fn block_on<T>(
        &self,
        limit: Duration,
        work: impl std::future::Future<Output = Result<T>>,
    ) -> Result<T> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| self.error(format!("starting a client runtime: {e}")))?;
        runtime.block_on(async {
            tokio::time::timeout(limit, work).await.unwrap_or_else(|_| {
                Err(self.error(format!("no answer within {} s", limit.as_secs())))
            })
        })
    }

    fn error(&self, reason: String) -> Error {
        Error::Containerd {
            address: self.socket().to_string(),
            reason,
        }
    }

    fn request<T>(&self, message: T) -> Result<Request<T>> {
        let mut req = Request::new(message);
        let ns = self
            .namespace
            .parse()
            .map_err(|_| self.error(format!("invalid namespace {:?}", self.namespace)))?;
        req.metadata_mut().insert(NAMESPACE_HEADER, ns);
        Ok(req)
    }

    fn call_error(&self, what: String, status: Status) -> Error {
        self.error(format!("{what}: {}", status.message()))
    }

    async fn connect(&self) -> Result<containerd_client::Client> {
        containerd_client::Client::from_path(self.socket())
            .await
            .map_err(|e| self.error(format!("connecting: {e}")))
    }

    /// The name of the image container `id` was created from.
    async fn container_image(
        &self,
        client: &containerd_client::Client,
        id: &str,
    ) -> Result<String> {
        let container = client
            .containers()
            .get(self.request(GetContainerRequest { id: id.into() })?)
            .await
            .map_err(|s| self.call_error(format!("container {id}"), s))?
            .into_inner()
            .container
            .ok_or_else(|| self.error(format!("container {id}: no record")))?;
        if container.image.is_empty() {
            return Err(self.error(format!("container {id} names no image")));
        }
        Ok(container.image)
    }

    async fn manifest(
        &self,
        client: &containerd_client::Client,
        image: String,
    ) -> Result<Manifest> {
        let target = client
            .images()
            .get(self.request(GetImageRequest {
                name: image.clone(),
            })?)
            .await
            .map_err(|s| self.call_error(format!("image {image}"), s))?
            .into_inner()
            .image
            .and_then(|i| i.target)
            .ok_or_else(|| self.error(format!("image {image} has no target")))?;

        let mut digest = target.digest;
        let mut media_type = target.media_type;
        // An index leads to one manifest; a manifest is read as it is.
        for _ in 0..2 {
            let bytes = self.read(client, &digest).await?;
            let doc: Document = serde_json::from_slice(&bytes).map_err(|e| Error::Image {
                image: image.clone(),
                reason: format!("{digest} ({media_type}) is not an OCI manifest or index: {e}"),
            })?;
            let doc_type = doc.media_type.clone().unwrap_or(media_type.clone());
            if let Some(manifests) = doc
                .manifests
                .filter(|_| doc_type == MEDIA_TYPE_OCI_INDEX || doc_type == MEDIA_TYPE_DOCKER_LIST)
            {
                let chosen = pick_manifest(&manifests).ok_or_else(|| Error::Image {
                    image: image.clone(),
                    reason: format!(
                        "its index {digest} has no manifest for wasi/wasm (os {}) nor linux/{}",
                        WASM_OSES.join(", "),
                        host_arch()
                    ),
                })?;
                digest = chosen.digest.clone();
                media_type = chosen.media_type.clone();
                continue;
            }
            return Ok(Manifest {
                image,
                config: doc.config,
                layers: doc.layers.unwrap_or_default(),
            });
        }
        Err(Error::Image {
            image,
            reason: "an index leads to another index; expected a manifest".into(),
        })
    }

    /// The module in Wasm layer `layer` of `manifest`.
    async fn layer_source(
        &self,
        client: &containerd_client::Client,
        manifest: &Manifest,
        layer: &Descriptor,
        guest_path: String,
    ) -> Result<ModuleSource> {
        let blob = self.read(client, &layer.digest).await?;
        if blob.len() as i64 != layer.size {
            return Err(Error::Image {
                image: manifest.image.clone(),
                reason: format!(
                    "layer {} has {} bytes, its descriptor says {}",
                    layer.digest,
                    blob.len(),
                    layer.size
                ),
            });
        }
        // containerd's content store only commits a blob whose bytes hash to the expected
        // digest and stores it under that digest, so the blob read back by a sha256 digest
        // *is* the sha256 of these bytes: it serves as the module digest of the cache key
        // without hashing the module again. Another algorithm (or none) is hashed here, so
        // the key is always a sha256.
        if layer.digest.starts_with("sha256:") {
            ModuleSource::with_digest(guest_path, blob, layer.digest.clone())
        } else {
            ModuleSource::from_bytes(guest_path, blob)
        }
    }

    /// The file a compat image's entrypoint names, found in its tar layers as a container
    /// of the image would find it: `argv[0]` of entrypoint + cmd, resolved against the
    /// image's `PATH` (containerd's default when it has none) and working directory.
    async fn entrypoint_file(
        &self,
        client: &containerd_client::Client,
        manifest: &Manifest,
    ) -> Result<ImageModule> {
        let image_error = |reason: String| Error::Image {
            image: manifest.image.clone(),
            reason,
        };
        let config = manifest.config.as_ref().ok_or_else(|| {
            image_error("its manifest has neither a Wasm layer nor an image config".into())
        })?;
        let bytes = self.read(client, &config.digest).await?;
        let exec = serde_json::from_slice::<ImageConfig>(&bytes)
            .map_err(|e| {
                image_error(format!(
                    "config {} is not an image config: {e}",
                    config.digest
                ))
            })?
            .config
            .unwrap_or_default();
        let argv: Vec<String> = exec
            .entrypoint
            .into_iter()
            .flatten()
            .chain(exec.cmd.into_iter().flatten())
            .collect();
        let arg0 = argv
            .first()
            .ok_or_else(|| image_error("it has no Wasm layer, and no entrypoint or cmd".into()))?;
        let (arg0, _) = crate::source::split_entrypoint(arg0);

        let mut layers = Vec::with_capacity(manifest.layers.len());
        for layer in &manifest.layers {
            layers.push(self.read(client, &layer.digest).await?);
        }
        let rootfs = RootFs::from_layers(layers).map_err(image_error)?;
        let mut env: Vec<(String, String)> = exec
            .env
            .into_iter()
            .flatten()
            .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.into(), v.into())))
            .collect();
        if !env.iter().any(|(k, _)| k == "PATH") {
            env.push(("PATH".into(), DEFAULT_PATH.into()));
        }
        let cwd = exec
            .working_dir
            .filter(|d| !d.is_empty())
            .unwrap_or("/".into());
        let guest_path = resolve_arg0(arg0, &env, &cwd, |p| rootfs.file(p).is_ok());
        let file = rootfs.file(&guest_path).map_err(image_error)?;
        Ok(ImageModule {
            source: ModuleSource::from_bytes(guest_path.clone(), file.to_vec())?,
            origin: format!("file {guest_path} of its layers"),
        })
    }

    async fn read(&self, client: &containerd_client::Client, digest: &str) -> Result<Vec<u8>> {
        let mut stream = client
            .content()
            .read(self.request(ReadContentRequest {
                digest: digest.into(),
                offset: 0,
                size: 0,
            })?)
            .await
            .map_err(|s| self.call_error(format!("reading blob {digest}"), s))?
            .into_inner();
        let mut bytes = Vec::new();
        while let Some(chunk) = stream
            .message()
            .await
            .map_err(|s| self.call_error(format!("reading blob {digest}"), s))?
        {
            bytes.extend_from_slice(&chunk.data);
        }
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(media_type: &str, title: Option<&str>) -> Descriptor {
        Descriptor {
            media_type: media_type.into(),
            digest: format!("sha256:{}", title.unwrap_or("x")),
            size: 1,
            platform: None,
            annotations: title
                .map(|t| [(ANNOTATION_TITLE.to_string(), t.to_string())].into())
                .unwrap_or_default(),
        }
    }

    fn manifest(os: &str, arch: &str) -> Descriptor {
        Descriptor {
            media_type: "application/vnd.oci.image.manifest.v1+json".into(),
            digest: format!("sha256:{os}-{arch}"),
            size: 1,
            platform: Some(Platform {
                os: os.into(),
                architecture: arch.into(),
            }),
            annotations: Default::default(),
        }
    }

    #[test]
    fn a_single_wasm_layer_is_the_module_whatever_its_title() {
        let layers = [
            layer("application/vnd.oci.image.layer.v1.tar+gzip", None),
            layer(MEDIA_TYPE_COMPONENT_LAYER, Some("other.wasm")),
        ];
        let l = pick_layer("img", &layers, "/app.wasm").unwrap();
        assert_eq!(l.media_type, MEDIA_TYPE_COMPONENT_LAYER);
    }

    #[test]
    fn several_wasm_layers_are_told_apart_by_title() {
        let layers = [
            layer(MEDIA_TYPE_WASM, Some("a.wasm")),
            layer(MEDIA_TYPE_WASM, Some("b.wasm")),
        ];
        assert_eq!(
            pick_layer("img", &layers, "/b.wasm").unwrap().digest,
            "sha256:b.wasm"
        );
        assert_eq!(
            pick_layer("img", &layers, "a.wasm").unwrap().digest,
            "sha256:a.wasm"
        );
        let err = pick_layer("img", &layers, "/c.wasm")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("2 Wasm layers")
                && err.contains("\"c.wasm\"")
                && err.contains("\"a.wasm\""),
            "{err}"
        );
    }

    #[test]
    fn no_wasm_layer_is_a_clear_error() {
        let layers = [layer("application/vnd.oci.image.layer.v1.tar+gzip", None)];
        let err = pick_layer("localhost/x:1", &layers, "/m.wasm")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("localhost/x:1")
                && err.contains(MEDIA_TYPE_WASM)
                && err.contains(MEDIA_TYPE_COMPONENT_LAYER),
            "{err}"
        );
    }

    #[test]
    fn an_index_leads_to_the_wasm_platform_then_the_host() {
        let both = [manifest("linux", host_arch()), manifest("wasip2", "wasm")];
        assert_eq!(pick_manifest(&both).unwrap().digest, "sha256:wasip2-wasm");
        let host = [manifest("linux", "s390x"), manifest("linux", host_arch())];
        assert_eq!(
            pick_manifest(&host).unwrap().digest,
            format!("sha256:linux-{}", host_arch())
        );
        assert!(pick_manifest(&[manifest("windows", "amd64")]).is_none());
    }
}
