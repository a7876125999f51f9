//! The wall-time limit: a thread that ends the instance process when the guest has run too
//! long. It works the same for every engine and also stops a guest blocked in a host call.

use std::time::Duration;

/// Exit code of a guest stopped by its time limit (as `timeout(1)` reports).
pub const EXIT_TIME_LIMIT: i32 = 124;

pub fn arm(id: String, limit: Duration) {
    let spawned = std::thread::Builder::new()
        .name("time-limit".into())
        .spawn(move || {
            std::thread::sleep(limit);
            let message = format!(
                "time limit exceeded: the wasm guest was stopped at its limit of {} ms\n",
                limit.as_millis()
            );
            log::warn!("{id}: {}", message.trim_end());
            // Straight to fd 2 and _exit: the guest's thread may hold any lock.
            // SAFETY: write(2) and _exit(2) with a valid buffer.
            unsafe {
                libc::write(2, message.as_ptr().cast(), message.len());
                libc::_exit(EXIT_TIME_LIMIT);
            }
        });
    if let Err(e) = spawned {
        // Without the watchdog the limit cannot hold: refuse to run rather than run unbounded.
        eprintln!("cannot enforce the time limit: {e}");
        std::process::exit(crate::instance::EXIT_SETUP);
    }
}
