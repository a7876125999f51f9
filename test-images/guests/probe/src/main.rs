//! `probe`: one guest, many behaviours, chosen by `argv[1]`.
//!
//! Built both as a WASI preview 1 core module and as a preview 2 component, so
//! the shim's tests can check arguments, environment, files, exit codes, traps,
//! resource limits and output streaming with a single program.
//!
//! Conventions: errors go to stderr as `error: <message>`; for I/O errors the
//! message ends in `(os error N)` (the standard `io::Error` display). Each
//! command documents its exit code on failure; usage errors exit 64.

use std::ffi::OsString;
use std::hint::black_box;
use std::io::{self, Read, Write};
use std::process;
use std::time::Duration;

/// Exit code for a missing/invalid argument or an unknown command.
const USAGE: i32 = 64;

const MIB: usize = 1024 * 1024;
const PAGE: usize = 4096;

/// Why a command failed: the message for stderr and the exit code.
struct Failure {
    code: i32,
    message: String,
}

type Outcome = Result<(), Failure>;

fn fail(code: i32, message: impl Into<String>) -> Failure {
    Failure {
        code,
        message: message.into(),
    }
}

/// `error: <io::Error display>`, which includes `(os error N)` when the error
/// came from the system.
fn io_fail(code: i32, err: io::Error) -> Failure {
    fail(code, format!("error: {err}"))
}

fn main() {
    enter_initial_cwd();
    let args: Vec<OsString> = std::env::args_os().collect();
    let code = match run(&args) {
        Ok(()) => 0,
        Err(failure) => {
            eprintln!("{}", failure.message);
            failure.code
        }
    };
    let _ = io::stdout().flush();
    process::exit(code);
}

/// Start in the working directory the host names, where WASI has a way to name one.
fn enter_initial_cwd() {
    #[cfg(all(target_os = "wasi", target_env = "p2"))]
    if let Some(cwd) = wasip2::cli::environment::initial_cwd() {
        if let Err(e) = std::env::set_current_dir(&cwd) {
            eprintln!("error: entering initial cwd {cwd}: {e}");
            process::exit(70);
        }
    }
}

fn run(args: &[OsString]) -> Outcome {
    let text: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let command = text.get(1).map(String::as_str).unwrap_or("");
    let rest = text.get(2..).unwrap_or(&[]);
    let arg = |i: usize| -> Result<&str, Failure> {
        rest.get(i)
            .map(String::as_str)
            .ok_or_else(|| fail(USAGE, format!("error: {command}: missing argument")))
    };

    match command {
        "args" => {
            for a in &text {
                println!("{a}");
            }
            Ok(())
        }
        "env" => {
            let mut vars: Vec<(String, String)> = std::env::vars_os()
                .map(|(k, v)| {
                    (
                        k.to_string_lossy().into_owned(),
                        v.to_string_lossy().into_owned(),
                    )
                })
                .collect();
            vars.sort();
            for (k, v) in vars {
                println!("{k}={v}");
            }
            Ok(())
        }
        "cwd" => {
            let cwd = std::env::current_dir().map_err(|e| io_fail(2, e))?;
            println!("cwd={}", cwd.display());
            if let Some(rel) = rest.first() {
                let contents = std::fs::read_to_string(rel).map_err(|e| io_fail(2, e))?;
                println!("read={}", contents.trim());
            }
            Ok(())
        }
        "cat" => {
            let data = std::fs::read(arg(0)?).map_err(|e| io_fail(2, e))?;
            io::stdout().write_all(&data).map_err(|e| io_fail(2, e))
        }
        "write" => {
            let (path, contents) = (arg(0)?, arg(1)?);
            std::fs::write(path, contents).map_err(|e| io_fail(3, e))?;
            println!("wrote {path}");
            Ok(())
        }
        "ls" => {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(arg(0)?).map_err(|e| io_fail(2, e))? {
                let entry = entry.map_err(|e| io_fail(2, e))?;
                names.push(entry.file_name().to_string_lossy().into_owned());
            }
            names.sort();
            for name in names {
                println!("{name}");
            }
            Ok(())
        }
        "exit" => {
            let code: i32 = parse(command, arg(0)?)?;
            let _ = io::stdout().flush();
            process::exit(code)
        }
        "trap" => trap(),
        "loop" => {
            let mut n = 0u64;
            loop {
                n = black_box(n.wrapping_add(1));
            }
        }
        "sleep" => {
            let ms: u64 = parse(command, arg(0)?)?;
            std::thread::sleep(Duration::from_millis(ms));
            println!("slept");
            Ok(())
        }
        "stdin" => {
            let mut data = Vec::new();
            io::stdin()
                .read_to_end(&mut data)
                .map_err(|e| io_fail(2, e))?;
            print!("stdin={}", String::from_utf8_lossy(&data));
            Ok(())
        }
        "stderr" => {
            eprintln!("{}", arg(0)?);
            Ok(())
        }
        "alloc" => alloc(parse(command, arg(0)?)?),
        "openfiles" => {
            let (path, n) = (arg(0)?, parse::<usize>(command, arg(1)?)?);
            let mut handles = Vec::new();
            while handles.len() < n {
                match std::fs::File::open(path) {
                    Ok(f) => handles.push(f),
                    Err(e) => {
                        eprintln!("error: {e}");
                        break;
                    }
                }
            }
            println!("opened {}", handles.len());
            Ok(())
        }
        "fill" => {
            // Write MIB MiB of zeros, reporting how far it got if the filesystem is full.
            let (path, mib) = (arg(0)?, parse::<u64>(command, arg(1)?)?);
            let mut file = std::fs::File::create(path).map_err(|e| io_fail(3, e))?;
            let chunk = vec![0u8; 64 * 1024];
            let mut written: u64 = 0;
            while written < mib << 20 {
                if let Err(e) = file.write_all(&chunk).and_then(|()| file.flush()) {
                    eprintln!("after {} KiB:", written >> 10);
                    return Err(io_fail(3, e));
                }
                written += chunk.len() as u64;
            }
            println!("filled {path} with {mib} MiB");
            Ok(())
        }
        "mkdir" => {
            let path = arg(0)?;
            std::fs::create_dir(path).map_err(|e| io_fail(3, e))?;
            println!("made {path}");
            Ok(())
        }
        "rm" => {
            let path = arg(0)?;
            std::fs::remove_file(path).map_err(|e| io_fail(3, e))?;
            println!("removed {path}");
            Ok(())
        }
        "rename" => {
            let (from, to) = (arg(0)?, arg(1)?);
            std::fs::rename(from, to).map_err(|e| io_fail(3, e))?;
            println!("renamed {from} -> {to}");
            Ok(())
        }
        "link" => {
            let (from, to) = (arg(0)?, arg(1)?);
            std::fs::hard_link(from, to).map_err(|e| io_fail(3, e))?;
            println!("linked {to} => {from}");
            Ok(())
        }
        "symlink" => {
            let (target, link) = (arg(0)?, arg(1)?);
            symlink(target, link).map_err(|e| io_fail(3, e))?;
            println!("linked {link} -> {target}");
            Ok(())
        }
        "recurse" => {
            let depth = recurse(0);
            // Only reached if the stack were infinite.
            println!("recursed {depth}");
            Ok(())
        }
        "print-lines" => {
            let n: u64 = parse(command, arg(0)?)?;
            let mut out = io::stdout().lock();
            for i in 1..=n {
                writeln!(out, "line {i}").map_err(|e| io_fail(2, e))?;
            }
            Ok(())
        }
        _ => Err(fail(USAGE, "unknown command")),
    }
}

fn parse<T: std::str::FromStr>(command: &str, s: &str) -> Result<T, Failure> {
    s.parse()
        .map_err(|_| fail(USAGE, format!("error: {command}: invalid number {s:?}")))
}

/// Executes the wasm `unreachable` instruction.
fn trap() -> ! {
    #[cfg(target_arch = "wasm32")]
    core::arch::wasm32::unreachable();
    #[cfg(not(target_arch = "wasm32"))]
    process::abort();
}

/// Allocates `mib` MiB in 1 MiB chunks, touching every page so the memory is
/// really committed; fails with exit code 4 when the allocator gives up.
fn alloc(mib: usize) -> Outcome {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    for done in 0..mib {
        let mut chunk = Vec::new();
        if chunk.try_reserve_exact(MIB).is_err() || chunks.try_reserve(1).is_err() {
            return Err(fail(4, format!("alloc failed after {done} MiB")));
        }
        // Fits in the reserved capacity: no reallocation.
        chunk.resize(MIB, 0);
        for page in (0..MIB).step_by(PAGE) {
            chunk[page] = 1;
        }
        chunks.push(black_box(chunk));
    }
    black_box(&chunks);
    println!("allocated {mib} MiB");
    Ok(())
}

/// Non-tail recursion with a live stack buffer in every frame, so it can be
/// neither turned into a loop nor have its frames elided.
fn recurse(depth: u64) -> u64 {
    let mut frame = [0u8; 256];
    frame[(depth % 256) as usize] = 1;
    black_box(&mut frame);
    if black_box(depth) == u64::MAX {
        return depth;
    }
    let below = recurse(depth + 1);
    below.wrapping_add(u64::from(black_box(&frame)[0]))
}

/// symlink(2) from wasi-libc (std's WASI symlink is unstable).
fn symlink(target: &str, link: &str) -> io::Result<()> {
    extern "C" {
        fn symlink(target: *const std::ffi::c_char, link: *const std::ffi::c_char) -> i32;
    }
    let target = std::ffi::CString::new(target).map_err(io::Error::other)?;
    let link = std::ffi::CString::new(link).map_err(io::Error::other)?;
    // SAFETY: two valid NUL-terminated strings.
    if unsafe { symlink(target.as_ptr(), link.as_ptr()) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
