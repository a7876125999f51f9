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

    // Write next to the destination and rename, so a failed run never leaves
    // a truncated tarball behind for `ctr image import`.
    let mut tmp = args.out.clone().into_os_string();
    tmp.push(".tmp");
    std::fs::write(&tmp, &tar).with_context(|| format!("writing {}", args.out.display()))?;
    std::fs::rename(&tmp, &args.out).with_context(|| format!("writing {}", args.out.display()))?;
    println!(
        "wrote {} ({} bytes): {} manifest {}",
        args.out.display(),
        tar.len(),
        args.name,
        image.manifest.descriptor.digest
    );
    Ok(())
}
