//! The signals that ask the engine to stop (SIGINT, SIGTERM, SIGHUP), caught and recorded so
//! that a dump or restore under way can undo what it did before the engine exits.

use super::SysError;
use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::sync::atomic::{AtomicI32, Ordering};

/// The signals that ask for a stop.
pub const STOP_SIGNALS: [Signal; 3] = [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP];

/// The first stop signal received since [`catch_stop_signals`], 0 if none.
static RECEIVED: AtomicI32 = AtomicI32::new(0);

extern "C" fn record(signo: libc::c_int) {
    // Only an atomic store: async-signal-safe. The first signal is the one reported.
    let _ = RECEIVED.compare_exchange(0, signo, Ordering::SeqCst, Ordering::SeqCst);
}

fn set_all(handler: SigHandler) -> Result<(), SysError> {
    let action = SigAction::new(handler, SaFlags::SA_RESTART, SigSet::empty());
    for sig in STOP_SIGNALS {
        // SAFETY: `record` only stores into an atomic, which is async-signal-safe; SIG_DFL
        // needs nothing. No other code of the engine handles these signals.
        unsafe { sigaction(sig, &action) }.map_err(|source| SysError::Call {
            op: "sigaction",
            tid: nix::unistd::getpid().as_raw(),
            source,
        })?;
    }
    Ok(())
}

/// From now on, SIGINT, SIGTERM and SIGHUP are recorded instead of ending the process.
pub fn catch_stop_signals() -> Result<(), SysError> {
    set_all(SigHandler::Handler(record))
}

/// Puts back the default dispositions (the signals end the process again).
pub fn default_stop_signals() -> Result<(), SysError> {
    set_all(SigHandler::SigDfl)
}

/// The stop signal received since [`catch_stop_signals`], if any.
pub fn stop_requested() -> Option<i32> {
    match RECEIVED.load(Ordering::SeqCst) {
        0 => None,
        signo => Some(signo),
    }
}
