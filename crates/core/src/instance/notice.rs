//! Sandbox refusals, said where operators look for them: the shim log and the container's
//! stderr (what `kubectl logs` and `ctr run` show), in the words of the error table
//! (`host not allowed: ...`, `env var not allowed: ...`, `network request limit ...`).

use std::sync::OnceLock;

static CONTAINER: OnceLock<String> = OnceLock::new();

/// Name the container in later log lines; set once, when the instance reads its config.
pub fn set_container(id: &str) {
    let _ = CONTAINER.set(id.to_string());
}

/// Say `message` in the shim log and on the container's stderr. Safe from any thread, also
/// the network guard's supervisor while the guest waits in a system call.
pub fn refused(message: &str) {
    refused_in(
        CONTAINER.get().map(String::as_str).unwrap_or("instance"),
        message,
    );
}

/// [`refused`], for a caller that knows the container's id itself.
pub fn refused_in(id: &str, message: &str) {
    log::warn!("{id}: {message}");
    let line = format!("{message}\n");
    // SAFETY: write(2) of a valid buffer to fd 2, the container's stderr.
    unsafe { libc::write(2, line.as_ptr().cast(), line.len()) };
}
