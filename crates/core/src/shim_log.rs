//! Logging of the shim server and the processes it starts (instance, native helper): they
//! write to the shim's `log` FIFO, which containerd reads into its own log, so the
//! container's stdio stays the guest's alone. Each line is one write, so lines of several
//! shims never interleave in containerd's log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Mutex;

/// Where lines go: a bundle's `log` FIFO. One shim serves many bundles, and containerd stops
/// reading a bundle's FIFO when that task is deleted, so the FIFO can be switched
/// ([`use_bundle_log`]).
static OUT: Mutex<Option<File>> = Mutex::new(None);

struct FifoLogger {
    level: log::LevelFilter,
}

impl log::Log for FifoLogger {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= self.level
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let line = format!(
            "time=\"{}\" level={} msg=\"{}\" pid={}\n",
            rfc3339_now(),
            record.level().as_str().to_lowercase(),
            record.args().to_string().replace('"', "'"),
            std::process::id()
        );
        if let Ok(mut out) = OUT.lock() {
            if let Some(out) = out.as_mut() {
                let _ = out.write_all(line.as_bytes());
            }
        }
    }

    fn flush(&self) {}
}

/// Log to `./log` (the shim's log FIFO in its working directory) when it can be opened
/// without blocking; otherwise logging is off until [`use_bundle_log`] finds a reader.
pub fn init_fifo_logger(level: log::LevelFilter) {
    use_log_fifo(Path::new("log"));
    if log::set_boxed_logger(Box::new(FifoLogger { level })).is_ok() {
        log::set_max_level(level);
    }
}

/// From now on, log to `bundle`'s `log` FIFO, if containerd is reading it; returns whether it
/// is. containerd reads a bundle's FIFO from the task's `start` until its Delete.
pub fn use_bundle_log(bundle: &Path) -> bool {
    use_log_fifo(&bundle.join("log"))
}

fn use_log_fifo(path: &Path) -> bool {
    // Non-blocking: with no reader the open fails (ENXIO) instead of waiting for one.
    let Ok(file) = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path)
    else {
        return false;
    };
    if let Ok(mut out) = OUT.lock() {
        *out = Some(file);
    }
    true
}

/// UTC time as RFC 3339, the format containerd's own log lines use.
fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
