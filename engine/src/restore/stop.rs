//! The group stop of a process dumped stopped (SIGSTOP or job control): given back after the
//! detach, with every thread stopped.
//!
//! SIGSTOP is queued while every thread is still traced, so none runs an instruction of its
//! own: once detached, each thread takes it (or joins the group stop another began) on its
//! way out of the kernel, and the restore waits until every thread shows `T (stopped)`.
//! SIGSTOP, not a job-control signal (SIGTSTP, SIGTTIN, SIGTTOU): the kernel discards those in
//! an orphaned process group, and a process must not run on by accident. What is not exact:
//! the stop is a new one, so the parent is told of it (SIGCHLD, a `WUNTRACED` wait reporting
//! SIGSTOP) once more, even if it had collected the original stop before the dump; a stop
//! signal that was still queued is given as the stop it would have made, before any
//! lower-numbered signal queued with it (which then waits for SIGCONT); and the root's parent
//! is crlab, so when crlab exits the kernel's rule for stopped jobs left orphaned applies: a
//! root leading its own group inside crlab's session, whose new parent (init, or a subreaper
//! elsewhere) does not keep that group from being orphaned, is sent SIGHUP and SIGCONT, as
//! the original would have been had its parent exited.

use super::RestoreError;
use crate::procfs::Stat;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::{Duration, Instant};

/// How long the threads of a restored stopped process may take to enter the group stop.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Queues the group stop of process `pid`, dumped stopped by `signo`; still traced.
pub fn queue(pid: i32, signo: u32) -> Result<(), RestoreError> {
    let known = [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];
    if !known.iter().any(|&s| u32::try_from(s) == Ok(signo)) {
        return Err(RestoreError::Inconsistent(format!(
            "process {pid} was dumped stopped by signal {signo}, which is no stop signal"
        )));
    }
    failpoint!(
        "restore.stop",
        super::error::injected(pid, "the group stop")
    );
    kill(Pid::from_raw(pid), Signal::SIGSTOP).map_err(|source| RestoreError::Stop {
        pid,
        what: "sending SIGSTOP".to_string(),
        source: Some(source),
    })
}

/// Waits until every thread in `tids` of the detached process `pid` is in the group stop.
pub fn wait_stopped(pid: i32, tids: &[i32]) -> Result<(), RestoreError> {
    let start = Instant::now();
    loop {
        let running: Vec<i32> = tids
            .iter()
            .copied()
            .filter(|&tid| !Stat::read_task(pid, tid).is_ok_and(|s| s.state == 'T'))
            .collect();
        if running.is_empty() {
            return Ok(());
        }
        if start.elapsed() > STOP_TIMEOUT {
            return Err(RestoreError::Stop {
                pid,
                what: format!("threads {running:?} not stopped after {STOP_TIMEOUT:?}"),
                source: None,
            });
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}
