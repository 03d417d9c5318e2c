//! SIGINT/SIGTERM/SIGHUP set a flag the run loop checks (with `signal-hook`); the run then
//! unwinds and its guards remove the VMM, helpers, TAP and run directory.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

/// The last signal received (0: none).
fn flag() -> &'static Arc<AtomicUsize> {
    static RECEIVED: OnceLock<Arc<AtomicUsize>> = OnceLock::new();
    RECEIVED.get_or_init(|| Arc::new(AtomicUsize::new(0)))
}

/// Installs the handlers (the binary does this once; the library never does on its own).
pub fn install() {
    for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
        if let Err(e) = signal_hook::flag::register_usize(sig, Arc::clone(flag()), usize::try_from(sig).unwrap_or(0)) {
            eprintln!("host-probe: cannot handle signal {sig}: {e}; an interrupted run may leave its TAP behind");
        }
    }
}

/// The signal received, if any.
pub fn received() -> Option<i32> {
    match flag().load(Ordering::SeqCst) {
        0 => None,
        s => i32::try_from(s).ok(),
    }
}

/// `Err` once a signal arrived: the run unwinds from wherever it checks.
pub fn interrupted() -> Result<(), crate::error::Error> {
    match received() {
        Some(sig) => Err(crate::error::Error::Interrupted(sig)),
        None => Ok(()),
    }
}
