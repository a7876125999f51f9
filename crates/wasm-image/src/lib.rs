//! `wasm-image`: builds OCI image-layout tarballs that `ctr image import`
//! accepts, without Docker.
//!
//! - [`cli`] parses the command line,
//! - [`layer`] builds a deterministic filesystem layer (tar, gzip),
//! - [`layout`] writes the config/manifest/index JSON and the layout tarball,
//! - [`wasm`] tells core modules from components for the Wasm layouts,
//! - [`registry`] pushes an image to a registry (OCI distribution API).

pub mod cli;
pub mod layer;
pub mod layout;
pub mod registry;
pub mod wasm;

use std::os::unix::fs::PermissionsExt;

use anyhow::{Context, Result};

use cli::{BuildArgs, Layout};
use layer::Layer;
use layout::{
    compat_image, component_layer_image, layout_tar, rfc3339, wasm_image, ExecConfig, Image,
};

/// Builds the image described by `args`; returns it and its layout tarball.
pub fn build(args: &BuildArgs) -> Result<(Image, Vec<u8>)> {
    let created = rfc3339(source_date_epoch()?)?;
    let exec = ExecConfig {
        env: args.env.clone(),
        entrypoint: args.entrypoint.clone(),
        cmd: args.cmd.clone(),
        working_dir: args.workdir.clone(),
    };
    let image = match args.layout {
        Layout::Compat => {
            let layer = compat_layer(args)?;
            compat_image(&layer, &exec, args.platform.clone(), &created)?
        }
        Layout::ComponentLayer | Layout::Wasm => {
            let path = args.module.as_deref().context("--module is required")?;
            let module = std::fs::read(path)
                .with_context(|| format!("reading --module {}", path.display()))?;
            let title = match &args.title {
                Some(t) => t.clone(),
                None => path
                    .file_name()
                    .context("--module has no file name")?
                    .to_string_lossy()
                    .into_owned(),
            };
            let built = if args.layout == Layout::Wasm {
                let author = args.author.as_deref().unwrap_or("wasm-image");
                wasm_image(module, &title, author, &created)
            } else {
                component_layer_image(module, &title, &exec, &created)
            };
            built.with_context(|| format!("--module {}", path.display()))?
        }
    };
    let tar = layout_tar(&image, &args.name)?;
    Ok((image, tar))
}

fn compat_layer(args: &BuildArgs) -> Result<Layer> {
    let mut layer = Layer::new();
    for dir in &args.dirs {
        layer
            .add_dir(&dir.image, dir.mode.unwrap_or(layer::DEFAULT_DIR_MODE))
            .with_context(|| format!("--dir {}", dir.image))?;
    }
    for file in &args.files {
        let what = || format!("--file {}:{}", file.host.display(), file.image);
        let meta = std::fs::metadata(&file.host).with_context(what)?;
        if !meta.is_file() {
            anyhow::bail!("{}: {} is not a regular file", what(), file.host.display());
        }
        let data = std::fs::read(&file.host).with_context(what)?;
        // Only the executable bit of the host file matters by default, so the
        // output does not depend on the umask of whoever made the file.
        let mode = file
            .mode
            .unwrap_or(if meta.permissions().mode() & 0o111 != 0 {
                0o755
            } else {
                0o644
            });
        layer.add_file(&file.image, data, mode).with_context(what)?;
    }
    for link in &args.symlinks {
        layer
            .add_symlink(&link.link, &link.target)
            .with_context(|| format!("--symlink {}:{}", link.link, link.target))?;
    }
    Ok(layer)
}

/// `SOURCE_DATE_EPOCH` if set (reproducible-builds convention), else 0.
fn source_date_epoch() -> Result<u64> {
    match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(s) if !s.is_empty() => s
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={s:?} is not a number of seconds")),
        _ => Ok(0),
    }
}

#[cfg(test)]
mod tests;
