//! Test images built in the test: modules with a fresh digest, wrapped in either image
//! layout and imported into a test's namespace.

use std::path::Path;

use wasm_image::layout::{self, ExecConfig, Image};

use crate::{host_dir, Ns};

/// Wasm layers need containerd 1.7 or later: whether `test` is skipped here (and says so).
pub fn skip_on_1_6(test: &str) -> bool {
    let version = crate::containerd_version();
    if version < (1, 7) {
        println!(
            "SKIPPED {test}: containerd {}.{} cannot unpack images whose layers are not tars \
             (checked by layer_images_need_containerd_1_7); Wasm OCI images need 1.7 or later",
            version.0, version.1
        );
        return true;
    }
    false
}

/// The raw test module `name` built by `test-images/build.sh`.
pub fn module(name: &str) -> Vec<u8> {
    let path = crate::config().images_dir.join("modules").join(name);
    std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (build the test images with bash test-images/build.sh)",
            path.display()
        )
    })
}

/// `bytes` with a custom section holding `nonce` appended: the same program, a module digest
/// no earlier run has put into the node's cache.
pub fn with_nonce(mut bytes: Vec<u8>, nonce: &str) -> Vec<u8> {
    let name = b"e2e-nonce";
    let mut payload = vec![name.len() as u8];
    payload.extend_from_slice(name);
    payload.extend_from_slice(nonce.as_bytes());
    bytes.push(0); // custom section
    let mut len = payload.len();
    loop {
        let byte = (len & 0x7f) as u8;
        len >>= 7;
        if len == 0 {
            bytes.push(byte);
            break;
        }
        bytes.push(byte | 0x80);
    }
    bytes.extend_from_slice(&payload);
    bytes
}

/// Unique per call: a fresh module digest with [`with_nonce`].
pub fn nonce() -> String {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    format!("{}-{}", std::process::id(), t.as_nanos())
}

/// The component-layer layout of `module`, as `wasm-image` builds it.
pub fn component_layer(module: Vec<u8>, title: &str) -> Image {
    layout::component_layer_image(
        module,
        title,
        &ExecConfig::default(),
        "1970-01-01T00:00:00Z",
    )
    .expect("building the image")
}

/// `ctr image import --all-platforms TAR`: without it ctr keeps only the host's platform
/// (linux/amd64) and drops a wasip1/wasip2 image ("image might be filtered out").
pub fn import_tar(ns: &Ns, tar: &Path) -> crate::Output {
    ns.ctr_with(
        &["image", "import", "--all-platforms", tar.to_str().unwrap()],
        crate::Input::Null,
        crate::CTR_TIMEOUT * 2,
    )
}

/// Imports the test image `<images dir>/<stem>.tar`; returns its name.
#[track_caller]
pub fn import_test_image(ns: &Ns, stem: &str) -> String {
    let tar = crate::config().images_dir.join(format!("{stem}.tar"));
    import_tar(ns, &tar).assert_success();
    crate::image_ref(stem)
}

/// Imports `image` as `name` into `ns` from a layout tarball written under the test's folder.
pub fn import(ns: &Ns, image: &Image, name: &str) {
    let dir = host_dir("oci-import");
    let tar = dir.path().join("image.tar");
    std::fs::write(&tar, layout::layout_tar(image, name).unwrap()).unwrap();
    import_tar(ns, &tar).assert_success();
}
