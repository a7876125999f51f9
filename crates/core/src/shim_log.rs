//! Logging of the shim server and the processes it starts (instance, native helper): they
//! write to the shim's `log` FIFO, which containerd reads into its own log, so the
//! container's stdio stays the guest's alone. Each line is one write, so lines of several
//! shims never interleave in containerd's log.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::Mutex;

struct FifoLogger {
    out: Mutex<File>,
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
        if let Ok(mut out) = self.out.lock() {
            let _ = out.write_all(line.as_bytes());
        }
    }

    fn flush(&self) {}
}

/// Log to `./log` (the shim's log FIFO in its working directory) when it can be opened
/// without blocking; otherwise logging is off.
pub fn init_fifo_logger(level: log::LevelFilter) {
    let Ok(out) = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("log")
    else {
        return;
    };
    if log::set_boxed_logger(Box::new(FifoLogger {
        out: Mutex::new(out),
        level,
    }))
    .is_ok()
    {
        log::set_max_level(level);
    }
}

/// UTC time as RFC 3339, the format containerd's own log lines use.
fn rfc3339_now() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
