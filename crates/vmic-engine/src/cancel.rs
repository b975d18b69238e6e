//! A process-wide request to stop: set by the binary's SIGTERM/SIGINT
//! handler during `vmic sync`, polled by long-running loops (downloads,
//! retries, hook waits), which then stop the way a failed download stops:
//! what arrived is kept, locks are released by their owners' destructors,
//! and the command ends with a retryable error.

use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::{Error, Result};

/// The signal number that asked to stop; 0 while none did.
static REQUESTED: AtomicI32 = AtomicI32::new(0);

/// Ask every loop to stop, on behalf of `signal`. Async-signal-safe (one
/// atomic store), so a signal handler may call it.
pub fn request(signal: i32) {
    REQUESTED.store(signal.max(1), Ordering::SeqCst);
}

/// The signal that asked to stop, if any.
pub fn requested() -> Option<i32> {
    match REQUESTED.load(Ordering::SeqCst) {
        0 => None,
        signal => Some(signal),
    }
}

/// An error if a stop was requested: the caller returns it as it is.
pub fn check() -> Result<()> {
    match requested() {
        None => Ok(()),
        Some(signal) => Err(Error::io_failure(format!(
            "interrupted by {} (what arrived is kept; run again to continue)",
            signal_name(signal)
        ))),
    }
}

fn signal_name(signal: i32) -> String {
    match signal {
        2 => "SIGINT".into(),
        15 => "SIGTERM".into(),
        1 => "SIGHUP".into(),
        other => format!("signal {other}"),
    }
}
