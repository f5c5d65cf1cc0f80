//! Stopping midway: SIGINT, SIGTERM and SIGHUP (a user's ^C, `timeout`, an orchestrator, a
//! closed terminal) are recorded while a dump or a restore runs, and each looks at
//! [`requested`] between its steps and while it copies pages: a dump then undoes what it did
//! to the tasks and detaches them, a restore kills what it created, as for any failure, and
//! the caller exits with the signal's status.
//!
//! SIGKILL cannot be caught: what it leaves at each phase is stated in `SECURITY.md`.

use crate::sys::{self, SysError};

/// From now on, SIGINT, SIGTERM and SIGHUP no longer end this process: they are recorded for
/// [`requested`].
pub fn catch() -> Result<(), SysError> {
    sys::catch_stop_signals()
}

/// The signals end this process again (a signal recorded before stays recorded).
pub fn release() -> Result<(), SysError> {
    sys::default_stop_signals()
}

/// The number of the first stop signal received since [`catch`], if any.
pub fn requested() -> Option<i32> {
    sys::stop_requested()
}
