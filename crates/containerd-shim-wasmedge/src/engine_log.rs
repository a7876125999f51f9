//! WasmEdge's own log lines, into the shim log.
//!
//! libwasmedge logs through spdlog to stderr, which in an instance process is the container's
//! stderr: its `[error] ...` lines would land among the guest's output. A callback takes them
//! instead; each goes to the `log` crate (the shim log), and the errors are kept, so that an
//! engine error can say why (the C API's error codes alone say little) and so that a refused
//! `memory.grow` is known when the guest then traps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use wasmedge_sys::ffi;

/// Error lines since the last [`take_errors`]; bounded, a guest could make WasmEdge log a lot.
static ERRORS: Mutex<Vec<String>> = Mutex::new(Vec::new());
const MAX_KEPT: usize = 16;

/// Set when WasmEdge refused to grow a memory past the configured page limit.
static MEMORY_LIMIT_HIT: AtomicBool = AtomicBool::new(false);

/// The start of the line WasmEdge logs when `memory.grow` exceeds `max_memory_pages`.
const MEMORY_LIMIT_LINE: &str = "Memory Instance: Memory grow page failed, exceeded limited";

/// Route WasmEdge's log into the shim log, errors only (traps, load and compile failures).
/// Once per process, before any other WasmEdge call.
pub fn install() {
    // SAFETY: plain calls into libwasmedge; the callback is a `'static` function that only
    // reads the message for the duration of the call.
    unsafe {
        ffi::WasmEdge_LogSetCallback(Some(on_message));
        // After the callback: setting it replaces spdlog's logger, whose level starts at info.
        ffi::WasmEdge_LogSetErrorLevel();
    }
}

unsafe extern "C" fn on_message(message: *const ffi::WasmEdge_LogMessage) {
    // SAFETY: WasmEdge passes a valid message, alive for the duration of the call.
    let Some(message) = (unsafe { message.as_ref() }) else {
        return;
    };
    // SAFETY: as above, the string's buffer is valid for `Length` bytes during the call.
    let text = unsafe { string(&message.Message) };
    let level = match message.Level {
        ffi::WasmEdge_LogLevel_Trace => log::Level::Trace,
        ffi::WasmEdge_LogLevel_Debug => log::Level::Debug,
        ffi::WasmEdge_LogLevel_Info => log::Level::Info,
        ffi::WasmEdge_LogLevel_Warn => log::Level::Warn,
        _ => log::Level::Error,
    };
    log::log!(level, "wasmedge: {text}");
    if level == log::Level::Error {
        if text.starts_with(MEMORY_LIMIT_LINE) {
            MEMORY_LIMIT_HIT.store(true, Ordering::SeqCst);
        }
        if let Ok(mut errors) = ERRORS.lock() {
            if errors.len() < MAX_KEPT {
                errors.push(text);
            }
        }
    }
}

unsafe fn string(s: &ffi::WasmEdge_String) -> String {
    if s.Buf.is_null() {
        return String::new();
    }
    // SAFETY: the caller's promise; `Length` bytes from `Buf`.
    let bytes = unsafe { std::slice::from_raw_parts(s.Buf as *const u8, s.Length as usize) };
    String::from_utf8_lossy(bytes).into_owned()
}

/// The error lines WasmEdge logged since the last call, oldest first.
pub fn take_errors() -> Vec<String> {
    ERRORS
        .lock()
        .map(|mut e| std::mem::take(&mut *e))
        .unwrap_or_default()
}

/// The errors WasmEdge logged, joined for an error message: `": a; b"`, or nothing.
pub fn reasons() -> String {
    let errors = take_errors();
    if errors.is_empty() {
        String::new()
    } else {
        format!(": {}", errors.join("; "))
    }
}

/// `WHAT: E`, with the errors WasmEdge logged meanwhile: its C API's error codes alone say
/// little (e.g. which import is unknown, why the compiler gave up).
pub fn error(what: impl std::fmt::Display, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{what}: {e}{}", reasons())
}

/// Whether WasmEdge refused a `memory.grow` at the page limit in this process.
pub fn memory_limit_hit() -> bool {
    MEMORY_LIMIT_HIT.load(Ordering::SeqCst)
}
