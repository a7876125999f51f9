//! The cap on outbound network requests over the container's life (a profile's
//! `max_network_requests`): every path that makes one in this instance process (the network
//! guard's `connect`, an engine's socket check, outgoing HTTP) claims it here first.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

static CAP: OnceLock<u64> = OnceLock::new();
static USED: AtomicU64 = AtomicU64::new(0);

/// Set once, from the policy, before the guest runs.
pub fn set(cap: Option<u64>) {
    if let Some(cap) = cap {
        let _ = CAP.set(cap);
    }
}

/// Count one request; past the cap it is refused, said in the log and on stderr.
pub fn claim() -> bool {
    let Some(&cap) = CAP.get() else { return true };
    let used = USED.fetch_add(1, Ordering::Relaxed);
    if used < cap {
        return true;
    }
    super::notice::refused(&format!("network request limit of {cap} reached"));
    false
}
