//! The sandbox policy as WasmEdge's WASI preview 1 module sees it: argv, environment and
//! preopened directories, as the strings `WasiModule::create` takes, and the WASI functions a
//! guest may import.
//!
//! Stdio needs nothing here: WasmEdge's WASI uses the process's fds 0, 1, 2, which the core has
//! connected to the container's FIFOs.

use anyhow::{bail, Result};
use wasm_shim_core::{Access, Preopen};

/// The name WasmEdge registers its WASI module under.
pub const WASI_MODULE: &str = "wasi_snapshot_preview1";

/// What `WasiModule::create` is given: `args` (argv, `args[0]` the program name), `envs` as
/// `KEY=VALUE`, `preopens` as `GUEST:HOST` or `GUEST:HOST:readonly`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasiStrings {
    pub args: Vec<String>,
    pub envs: Vec<String>,
    pub preopens: Vec<String>,
}

impl WasiStrings {
    /// The policy's `args` and `preopens`, and `guest_env` (the policy's environment less what
    /// belongs to the plugin host). Every string is checked here, because the SDK turns them
    /// into C strings with `unwrap()` and WasmEdge splits preopens at `:` without escaping.
    pub fn new(
        args: &[String],
        guest_env: &[(String, String)],
        preopens: &[Preopen],
    ) -> Result<Self> {
        let args = args
            .iter()
            .map(|a| no_nul("process.args", a).map(|()| a.clone()))
            .collect::<Result<Vec<_>>>()?;
        let envs = guest_env
            .iter()
            .map(|(k, v)| {
                let kv = format!("{k}={v}");
                no_nul("process.env", &kv).map(|()| kv)
            })
            .collect::<Result<Vec<_>>>()?;
        let preopens = preopens
            .iter()
            .map(|p| {
                let host = p.host_path.to_str().ok_or_else(|| {
                    anyhow::anyhow!(
                        "preopen {}: host path {} is not UTF-8, which WasmEdge cannot take",
                        p.guest_path,
                        p.host_path.display()
                    )
                })?;
                preopen(&p.guest_path, host, p.access)
            })
            .collect::<Result<Vec<_>>>()?;
        Ok(WasiStrings {
            args,
            envs,
            preopens,
        })
    }
}

/// One preopen in WasmEdge's syntax. WasmEdge splits at the first `:` (guest path) and the next
/// (mode), and ignores a mode it does not know, so a `:` in either path would silently preopen
/// the wrong folder with write access: refused instead.
///
/// The host path gets a trailing `/.`: WasmEdge opens it with `O_NOFOLLOW`, and the core hands
/// over pinned folders as `/proc/self/fd/N`, a symlink that `O_NOFOLLOW` refuses (`Not a
/// directory or a symbolic link to a directory`). Through `/.` the link is followed as a
/// folder on the way and the last component is the folder itself.
fn preopen(guest: &str, host: &str, access: Access) -> Result<String> {
    for (what, path) in [("guest", guest), ("host", host)] {
        no_nul("a preopen", path)?;
        if path.contains(':') {
            bail!(
                "cannot preopen {host} at {guest}: the {what} path contains ':', which WasmEdge's preopen syntax cannot express"
            );
        }
    }
    let host = format!("{}/.", host.trim_end_matches('/'));
    Ok(match access {
        Access::ReadOnly => format!("{guest}:{host}:readonly"),
        Access::ReadWrite => format!("{guest}:{host}"),
    })
}

fn no_nul(field: &str, s: &str) -> Result<()> {
    if s.contains('\0') {
        bail!("{field}: {s:?} contains a NUL byte");
    }
    Ok(())
}

/// The functions of `wasi_snapshot_preview1` as the WASI standard defines them.
pub const STANDARD_PREVIEW1: &[&str] = &[
    "args_get",
    "args_sizes_get",
    "environ_get",
    "environ_sizes_get",
    "clock_res_get",
    "clock_time_get",
    "fd_advise",
    "fd_allocate",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_fdstat_set_flags",
    "fd_fdstat_set_rights",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_pread",
    "fd_prestat_get",
    "fd_prestat_dir_name",
    "fd_pwrite",
    "fd_read",
    "fd_readdir",
    "fd_renumber",
    "fd_seek",
    "fd_sync",
    "fd_tell",
    "fd_write",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "poll_oneoff",
    "proc_exit",
    "proc_raise",
    "sched_yield",
    "random_get",
    "sock_accept",
    "sock_recv",
    "sock_send",
    "sock_shutdown",
];

/// WasmEdge's socket extension of `wasi_snapshot_preview1`: a guest opens, binds, connects
/// and listens on sockets of its own (the `wasmedge_wasi_socket` crate, and tokio/hyper built
/// on it). WasmEdge checks no address, so the core's network guard has the kernel hold these
/// calls to the container's `wasm-shim/net-*` allowlists (default deny: no socket at all).
pub const SOCKET_EXTENSION: &[&str] = &[
    "epoll_oneoff",
    "sock_open",
    "sock_bind",
    "sock_connect",
    "sock_listen",
    "sock_recv_from",
    "sock_send_to",
    "sock_accept_v2",
    "sock_open_v2",
    "sock_bind_v2",
    "sock_connect_v2",
    "sock_listen_v2",
    "sock_recv_v2",
    "sock_recv_from_v2",
    "sock_send_v2",
    "sock_send_to_v2",
    "sock_getsockopt",
    "sock_setsockopt",
    "sock_getlocaladdr",
    "sock_getpeeraddr",
    "sock_getlocaladdr_v2",
    "sock_getpeeraddr_v2",
    "sock_getaddrinfo",
];

/// Refuse imports from `wasi_snapshot_preview1` that are neither standard WASI nor WasmEdge's
/// socket extension, naming them (WasmEdge's own error would only say "unknown import").
pub fn check_wasi_imports<'a>(names: impl IntoIterator<Item = &'a str>) -> Result<()> {
    let mut extra: Vec<&str> = names
        .into_iter()
        .filter(|n| !STANDARD_PREVIEW1.contains(n) && !SOCKET_EXTENSION.contains(n))
        .collect();
    if extra.is_empty() {
        return Ok(());
    }
    extra.sort_unstable();
    extra.dedup();
    bail!(
        "the module imports {} from {WASI_MODULE}, which is neither WASI preview 1 nor WasmEdge's socket extension",
        extra.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> Vec<String> {
        vec!["/app.wasm".into(), "x y".into()]
    }

    fn pre(guest: &str, host: &str, access: Access) -> Preopen {
        Preopen {
            guest_path: guest.into(),
            host_path: host.into(),
            access,
        }
    }

    #[test]
    fn policy_becomes_wasmedge_strings() {
        let preopens = [
            pre("/", "/b/rootfs", Access::ReadWrite),
            pre("/cfg", "/host/cfg", Access::ReadOnly),
        ];
        let env = [("A".to_string(), "1=2".to_string())];
        let w = WasiStrings::new(&args(), &env, &preopens).unwrap();
        assert_eq!(w.args, ["/app.wasm", "x y"]);
        assert_eq!(w.envs, ["A=1=2"]);
        assert_eq!(w.preopens, ["/:/b/rootfs/.", "/cfg:/host/cfg/.:readonly"]);
    }

    #[test]
    fn colons_and_nuls_are_refused() {
        for (guest, host) in [("/a:b", "/h"), ("/a", "/h:readonly"), ("/a", "/h\0")] {
            let preopens = [pre(guest, host, Access::ReadWrite)];
            assert!(
                WasiStrings::new(&args(), &[], &preopens).is_err(),
                "{guest} {host}"
            );
        }
        let env = [("A".to_string(), "x\0y".to_string())];
        assert!(WasiStrings::new(&args(), &env, &[]).is_err());
    }

    #[test]
    fn standard_wasi_and_the_socket_extension_may_be_imported() {
        assert!(check_wasi_imports(["fd_write", "proc_exit", "sock_accept"]).is_ok());
        assert!(check_wasi_imports(["sock_open", "sock_connect", "sock_getaddrinfo"]).is_ok());
        let err = check_wasi_imports(["fd_write", "made_up", "also_made_up", "made_up"])
            .unwrap_err()
            .to_string();
        assert!(err.contains("also_made_up, made_up from"), "{err}");
    }
}
