//! Command-line parsing for `wasm-image`. Options take their value as the
//! next argument or after `=` (`--name x` or `--name=x`).

use std::path::PathBuf;

use anyhow::{bail, Context, Result};

use crate::layout::Platform;

pub const USAGE: &str = "\
Builds an OCI image: writes it as an image-layout tarball for `ctr image import`,
and/or pushes it to a registry (OCI distribution API).

Usage:
  wasm-image build --name REF (--out FILE.tar | --push) [OPTIONS]

Options:
  --name REF                 image name, e.g. localhost/test/hello:latest; with --push
                             it names the registry too: HOST[:PORT]/REPO[:TAG]
  --out FILE                 the tarball to write
  --push                     push the image to the registry named by --name
  --plain-http               push over plain HTTP instead of HTTPS
  --layout LAYOUT            compat (default): a normal image with one tar+gzip layer;
                             component-layer: an image config (os wasip1|wasip2, arch
                               wasm) and --module as a layer of media type
                               application/vnd.bytecodealliance.wasm.component.layer.v0+wasm;
                             wasm (or artifact): the CNCF Wasm OCI artifact, config
                               application/vnd.wasm.config.v0+json, layer application/wasm
compat layout:
  --platform OS/ARCH[/VAR]   default linux/amd64
  --file HOST:IMAGE[:MODE]   copy HOST to the absolute IMAGE path; MODE in octal
                             (default 755 if HOST is executable, else 644)
  --dir IMAGE[:MODE]         an (empty) directory, default mode 755
  --symlink LINK:TARGET      a symlink at the absolute path LINK
compat and component-layer layouts:
  --entrypoint ARG           repeat for each element (component-layer default: /TITLE)
  --cmd ARG                  repeat for each element
  --env K=V                  repeatable
  --workdir DIR              absolute working directory
component-layer and wasm layouts:
  --module HOST              the .wasm core module (os wasip1) or component (wasip2)
  --title NAME               the layer's org.opencontainers.image.title, default the
                             module's file name
wasm layout:
  --author NAME              recorded in the config, default wasm-image

Timestamps are fixed (SOURCE_DATE_EPOCH if set, else 0) so equal inputs give
byte-identical output.
";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    Compat,
    /// The component-layer layout: image config + the module as a layer.
    ComponentLayer,
    /// The CNCF Wasm OCI artifact.
    Wasm,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSpec {
    pub host: PathBuf,
    pub image: String,
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirSpec {
    pub image: String,
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SymlinkSpec {
    pub link: String,
    pub target: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildArgs {
    pub name: String,
    pub out: Option<PathBuf>,
    pub push: bool,
    pub plain_http: bool,
    pub layout: Layout,
    pub platform: Platform,
    pub entrypoint: Vec<String>,
    pub cmd: Vec<String>,
    pub env: Vec<String>,
    pub workdir: Option<String>,
    pub files: Vec<FileSpec>,
    pub dirs: Vec<DirSpec>,
    pub symlinks: Vec<SymlinkSpec>,
    pub module: Option<PathBuf>,
    pub title: Option<String>,
    pub author: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    Build(Box<BuildArgs>),
    Help,
}

/// Parses the arguments after the program name.
pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Command> {
    let mut args = args.into_iter();
    match args.next().as_deref() {
        Some("build") => Ok(Command::Build(Box::new(parse_build(args)?))),
        Some("help" | "--help" | "-h") | None => Ok(Command::Help),
        Some(other) => bail!("unknown command {other:?} (expected `build`)"),
    }
}

fn parse_build(mut args: impl Iterator<Item = String>) -> Result<BuildArgs> {
    let (mut name, mut out, mut layout, mut platform) = (None, None, None, None);
    let (mut workdir, mut module, mut author, mut title) = (None, None, None, None);
    let (mut push, mut plain_http) = (false, false);
    let (mut entrypoint, mut cmd, mut env) = (Vec::new(), Vec::new(), Vec::new());
    let (mut files, mut dirs, mut symlinks) = (Vec::new(), Vec::new(), Vec::new());
    // Options given, for telling which ones a layout does not take.
    let mut given: Vec<String> = Vec::new();

    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--push" => {
                push = true;
                continue;
            }
            "--plain-http" => {
                plain_http = true;
                continue;
            }
            _ => {}
        }
        let (option, inline) = match arg.split_once('=') {
            Some((o, v)) if o.starts_with("--") => (o.to_string(), Some(v.to_string())),
            _ => (arg.clone(), None),
        };
        if !option.starts_with("--") {
            bail!("unexpected argument {arg:?}");
        }
        let value = match inline {
            Some(v) => v,
            None => args
                .next()
                .with_context(|| format!("{option} needs a value"))?,
        };
        match option.as_str() {
            "--name" => set_once(&mut name, &option, value)?,
            "--out" => set_once(&mut out, &option, value)?,
            "--layout" => set_once(
                &mut layout,
                &option,
                match value.as_str() {
                    "compat" => Layout::Compat,
                    "component-layer" => Layout::ComponentLayer,
                    "wasm" | "artifact" => Layout::Wasm,
                    _ => bail!("--layout must be compat, component-layer or wasm, not {value:?}"),
                },
            )?,
            "--platform" => set_once(&mut platform, &option, Platform::parse(&value)?)?,
            "--entrypoint" => entrypoint.push(value),
            "--cmd" => cmd.push(value),
            "--env" => env.push(parse_env(&value)?),
            "--workdir" => {
                if !value.starts_with('/') {
                    bail!("--workdir {value:?} must be an absolute path");
                }
                set_once(&mut workdir, &option, value)?
            }
            "--file" => files.push(parse_file(&value)?),
            "--dir" => dirs.push(parse_dir(&value)?),
            "--symlink" => symlinks.push(parse_symlink(&value)?),
            "--module" => set_once(&mut module, &option, PathBuf::from(value))?,
            "--author" => set_once(&mut author, &option, value)?,
            "--title" => {
                if value.is_empty() || value.contains('/') {
                    bail!("--title {value:?} must be a file name");
                }
                set_once(&mut title, &option, value)?
            }
            _ => bail!("unknown option {option:?}"),
        }
        given.push(option);
    }

    let name: String = name.context("--name is required")?;
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        bail!("invalid image name {name:?}");
    }
    let layout = layout.unwrap_or(Layout::Compat);
    // What each layout takes besides --name, --out and --layout.
    let (takes, hint): (&[&str], &str) = match layout {
        Layout::Compat => (
            &[
                "--platform",
                "--entrypoint",
                "--cmd",
                "--env",
                "--workdir",
                "--file",
                "--dir",
                "--symlink",
            ],
            "use --file HOST:IMAGE for a compat image, or another --layout",
        ),
        Layout::ComponentLayer => (
            &[
                "--module",
                "--title",
                "--entrypoint",
                "--cmd",
                "--env",
                "--workdir",
            ],
            "the component-layer layout holds the module alone",
        ),
        Layout::Wasm => (
            &["--module", "--title", "--author"],
            "the wasm layout's config is not an image config",
        ),
    };
    let layout_name = match layout {
        Layout::Compat => "compat",
        Layout::ComponentLayer => "component-layer",
        Layout::Wasm => "wasm",
    };
    if let Some(option) = given.iter().find(|o| {
        !matches!(o.as_str(), "--name" | "--out" | "--layout") && !takes.contains(&o.as_str())
    }) {
        bail!("{option} is not valid with --layout {layout_name} ({hint})");
    }
    if layout != Layout::Compat && module.is_none() {
        bail!("--layout {layout_name} needs --module");
    }
    if out.is_none() && !push {
        bail!("--out or --push is required");
    }
    if plain_http && !push {
        bail!("--plain-http needs --push");
    }
    Ok(BuildArgs {
        name,
        out: out.map(PathBuf::from),
        push,
        plain_http,
        layout,
        platform: platform.unwrap_or_default(),
        entrypoint,
        cmd,
        env,
        workdir,
        files,
        dirs,
        symlinks,
        module,
        title,
        author,
    })
}

fn set_once<T>(slot: &mut Option<T>, option: &str, value: T) -> Result<()> {
    if slot.replace(value).is_some() {
        bail!("{option} given more than once");
    }
    Ok(())
}

fn parse_env(value: &str) -> Result<String> {
    match value.split_once('=') {
        Some((key, _)) if !key.is_empty() => Ok(value.to_string()),
        _ => bail!("--env {value:?}: expected KEY=VALUE"),
    }
}

/// `HOST:IMAGE[:MODE]`.
fn parse_file(value: &str) -> Result<FileSpec> {
    let parts: Vec<&str> = value.split(':').collect();
    let (host, image, mode) = match parts[..] {
        [host, image] => (host, image, None),
        [host, image, mode] => (host, image, Some(mode)),
        _ => bail!("--file {value:?}: expected HOSTPATH:IMAGEPATH[:MODE]"),
    };
    if host.is_empty() {
        bail!("--file {value:?}: empty host path");
    }
    check_image_path(image).with_context(|| format!("--file {value:?}"))?;
    Ok(FileSpec {
        host: PathBuf::from(host),
        image: image.to_string(),
        mode: mode
            .map(parse_mode)
            .transpose()
            .with_context(|| format!("--file {value:?}"))?,
    })
}

/// `IMAGE[:MODE]`.
fn parse_dir(value: &str) -> Result<DirSpec> {
    let (image, mode) = match value.split_once(':') {
        Some((image, mode)) => (image, Some(mode)),
        None => (value, None),
    };
    check_image_path(image).with_context(|| format!("--dir {value:?}"))?;
    Ok(DirSpec {
        image: image.to_string(),
        mode: mode
            .map(parse_mode)
            .transpose()
            .with_context(|| format!("--dir {value:?}"))?,
    })
}

/// `LINK:TARGET`.
fn parse_symlink(value: &str) -> Result<SymlinkSpec> {
    match value.split_once(':') {
        Some((link, target)) if !target.is_empty() => {
            check_image_path(link).with_context(|| format!("--symlink {value:?}"))?;
            Ok(SymlinkSpec {
                link: link.to_string(),
                target: target.to_string(),
            })
        }
        _ => bail!("--symlink {value:?}: expected LINK:TARGET"),
    }
}

fn check_image_path(path: &str) -> Result<()> {
    crate::layer::normalize(path).map(drop)
}

/// Octal permission bits: `644`, `0755`, `0o755`.
fn parse_mode(mode: &str) -> Result<u32> {
    let digits = mode.strip_prefix("0o").unwrap_or(mode);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o7777 && !digits.is_empty() => Ok(m),
        _ => bail!("invalid mode {mode:?}: expected octal permission bits such as 644"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &[&str]) -> Vec<String> {
        s.iter().map(|a| a.to_string()).collect()
    }

    fn build(s: &[&str]) -> Result<BuildArgs> {
        let mut all = args(&["build"]);
        all.extend(args(s));
        match parse(all)? {
            Command::Build(b) => Ok(*b),
            Command::Help => panic!("help"),
        }
    }

    fn err(s: &[&str]) -> String {
        format!("{:#}", build(s).unwrap_err())
    }

    #[test]
    fn full_compat_command_line() {
        let b = build(&[
            "--name",
            "localhost/test/x:latest",
            "--out=x.tar",
            "--platform",
            "linux/arm64/v8",
            "--entrypoint",
            "/a.wasm",
            "--entrypoint=--flag",
            "--cmd",
            "sh",
            "--env",
            "A=b=c",
            "--workdir",
            "/app",
            "--file",
            "in/a.wasm:/a.wasm",
            "--file",
            "data:/app/d.txt:0600",
            "--dir",
            "/tmp:1777",
            "--symlink",
            "/bin/sh:busybox",
        ])
        .unwrap();
        assert_eq!(b.name, "localhost/test/x:latest");
        assert_eq!(b.out, Some(PathBuf::from("x.tar")));
        assert_eq!(b.layout, Layout::Compat);
        assert_eq!(b.platform.architecture, "arm64");
        assert_eq!(b.entrypoint, ["/a.wasm", "--flag"]);
        assert_eq!(b.cmd, ["sh"]);
        assert_eq!(b.env, ["A=b=c"]);
        assert_eq!(b.workdir.as_deref(), Some("/app"));
        assert_eq!(
            b.files,
            [
                FileSpec {
                    host: "in/a.wasm".into(),
                    image: "/a.wasm".into(),
                    mode: None
                },
                FileSpec {
                    host: "data".into(),
                    image: "/app/d.txt".into(),
                    mode: Some(0o600)
                },
            ]
        );
        assert_eq!(b.dirs[0].mode, Some(0o1777));
        assert_eq!(b.symlinks[0].target, "busybox");
    }

    #[test]
    fn help() {
        assert_eq!(parse(args(&[])).unwrap(), Command::Help);
        assert_eq!(parse(args(&["--help"])).unwrap(), Command::Help);
        assert!(parse(args(&["push"])).is_err());
    }

    #[test]
    fn bad_command_lines() {
        assert!(err(&["--out", "x"]).contains("--name is required"));
        assert!(err(&["--name", "x"]).contains("--out or --push is required"));
        assert!(err(&["--name", "x", "--out", "o", "--plain-http"]).contains("needs --push"));
        assert!(err(&["--name"]).contains("--name needs a value"));
        assert!(err(&["--name", "a", "--name", "b"]).contains("more than once"));
        assert!(err(&["--name", "a b", "--out", "x"]).contains("invalid image name"));
        assert!(err(&["--bogus", "1"]).contains("unknown option"));
        assert!(err(&["stray"]).contains("unexpected argument"));
        assert!(err(&["--file", "nocolon"]).contains("expected HOSTPATH:IMAGEPATH[:MODE]"));
        assert!(err(&["--file", "a:b:c:d"]).contains("expected HOSTPATH"));
        assert!(err(&["--file", "a:rel/path"]).contains("must be absolute"));
        assert!(err(&["--file", ":/x"]).contains("empty host path"));
        assert!(err(&["--file", "a:/x:999"]).contains("invalid mode"));
        assert!(err(&["--file", "a:/x:"]).contains("invalid mode"));
        assert!(err(&["--dir", "/"]).contains("root directory"));
        assert!(err(&["--symlink", "/a"]).contains("expected LINK:TARGET"));
        assert!(err(&["--env", "=x"]).contains("expected KEY=VALUE"));
        assert!(err(&["--workdir", "app"]).contains("absolute"));
        assert!(err(&["--layout", "docker"]).contains("compat, component-layer or wasm"));
        assert!(err(&["--platform", "linux"]).contains("OS/ARCH"));
    }

    #[test]
    fn layout_specific_options() {
        let base = ["--name", "n", "--out", "o"];
        let with = |extra: &[&str]| {
            let mut v = base.to_vec();
            v.extend(extra);
            err(&v)
        };
        assert!(
            with(&["--module", "m.wasm"]).contains("--module is not valid with --layout compat")
        );
        assert!(with(&["--layout", "wasm"]).contains("needs --module"));
        assert!(with(&["--layout", "component-layer"]).contains("needs --module"));
        assert!(with(&[
            "--layout",
            "component-layer",
            "--module",
            "m",
            "--file",
            "a:/a"
        ])
        .contains("--file is not valid with --layout component-layer"));
        assert!(
            with(&["--layout", "wasm", "--module", "m", "--title", "a/b"])
                .contains("must be a file name")
        );
        let mut push = vec!["--name", "127.0.0.1:5000/x/y:1", "--push", "--plain-http"];
        push.extend([
            "--layout",
            "component-layer",
            "--module",
            "m.wasm",
            "--cmd",
            "a",
        ]);
        let b = build(&push).unwrap();
        assert_eq!((b.push, b.plain_http, b.out), (true, true, None));
        assert_eq!(b.layout, Layout::ComponentLayer);
        assert!(
            with(&["--layout", "wasm", "--module", "m", "--entrypoint", "x"])
                .contains("--entrypoint is not valid with --layout wasm")
        );
        let mut ok = base.to_vec();
        ok.extend(["--layout", "wasm", "--module", "m.wasm", "--author", "me"]);
        let b = build(&ok).unwrap();
        assert_eq!(b.layout, Layout::Wasm);
        assert_eq!(b.module, Some(PathBuf::from("m.wasm")));
    }
}
