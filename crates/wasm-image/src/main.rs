use std::process::ExitCode;

use anyhow::{Context, Result};
use wasm_image::cli::{self, Command};

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("wasm-image: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> Result<()> {
    let args = match cli::parse(std::env::args().skip(1))
        .context("invalid command line (see `wasm-image --help`)")?
    {
        Command::Help => {
            print!("{}", cli::USAGE);
            return Ok(());
        }
        Command::Build(args) => args,
    };
    let (image, tar) = wasm_image::build(&args)?;

    if let Some(out) = &args.out {
        // Write next to the destination and rename, so a failed run never leaves
        // a truncated tarball behind for `ctr image import`.
        let mut tmp = out.clone().into_os_string();
        tmp.push(".tmp");
        std::fs::write(&tmp, &tar).with_context(|| format!("writing {}", out.display()))?;
        std::fs::rename(&tmp, out).with_context(|| format!("writing {}", out.display()))?;
        println!(
            "wrote {} ({} bytes): {} manifest {}",
            out.display(),
            tar.len(),
            args.name,
            image.manifest.descriptor.digest
        );
    }
    if args.push {
        let reference = wasm_image::registry::Reference::parse(&args.name)?;
        let scheme = if args.plain_http { "http" } else { "https" };
        let pushed = wasm_image::registry::push(&image, &reference, scheme)
            .with_context(|| format!("pushing {}", args.name))?;
        println!(
            "pushed {} manifest {} ({} blobs uploaded, {} already there)",
            args.name, image.manifest.descriptor.digest, pushed.uploaded, pushed.present
        );
    }
    Ok(())
}
