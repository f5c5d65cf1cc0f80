//! A throwaway child for the probes of `crlab check`: forked, it dies with the engine and
//! otherwise only waits for signals; the caller kills and reaps it.

use super::SysError;
use nix::unistd::{fork, ForkResult, Pid};

/// Forks a child that sets `PR_SET_PDEATHSIG` to `SIGKILL` and then sleeps in `pause()`
/// until a signal kills it. Returns its pid; the caller owns it (kill, then reap).
pub fn fork_paused() -> Result<Pid, SysError> {
    // SAFETY: after fork the child runs only async-signal-safe system calls (prctl, pause,
    // _exit), so it needs no lock another thread of ours might have held.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => Ok(child),
        Ok(ForkResult::Child) => {
            // SAFETY: raw system calls on this task only: die with the parent, then sleep
            // until a signal kills us. Variadic prctl arguments are unsigned longs.
            unsafe {
                libc::prctl(
                    libc::PR_SET_PDEATHSIG,
                    libc::SIGKILL as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                );
                loop {
                    libc::pause();
                }
            }
        }
        Err(source) => Err(SysError::Call {
            op: "fork",
            tid: 0,
            source,
        }),
    }
}
