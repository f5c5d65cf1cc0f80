//! Group stop: whether a dumped process is stopped (SIGSTOP or job control), or had a stop
//! signal arrive while it was dumped, which the restore gives back as a group stop.
//!
//! Read from what the kernel reported at the seize (the interrupt stop of a thread of a
//! stopped process carries the stop signal), the signals held back during remote calls (to be
//! handed back on release), and the signal queues at the end of the process's dump. A stop
//! signal still queued is taken out of the image's queues: the group stop the restore makes
//! is its delivery.

use super::seize::SeizedProcess;
use super::DumpError;
use crate::image::schema::{SigAction, SigInfo, Task, ThreadCore};

/// Whether `signo`, delivered to a process with the dispositions `actions`, stops it: SIGSTOP
/// always, the job-control stop signals when their disposition is the default one.
fn stops(signo: u32, actions: &[SigAction]) -> bool {
    match i32::try_from(signo).unwrap_or(0) {
        libc::SIGSTOP => true,
        libc::SIGTSTP | libc::SIGTTIN | libc::SIGTTOU => actions
            .iter()
            .find(|a| a.signo == signo)
            .is_none_or(|a| a.handler == 0),
        _ => false,
    }
}

/// The first stop signal among raw siginfos (`si_signo` is their first int).
fn queued_stop(raw: &[[u8; 128]], actions: &[SigAction]) -> Option<u32> {
    raw.iter()
        .map(|r| u32::from_ne_bytes([r[0], r[1], r[2], r[3]]))
        .find(|&s| stops(s, actions))
}

/// The process's stop signal for the image (0: it runs), with every stop signal taken out of
/// the queues of `task` and `cores`.
pub fn signal(
    proc: &SeizedProcess,
    task: &mut Task,
    cores: &mut [ThreadCore],
) -> Result<u32, DumpError> {
    let actions = &task.sigactions;
    let mut found = proc.group_stop.map(|s| s as u32);
    for r in &proc.remotes {
        if found.is_none() {
            found = r
                .deferred_signals
                .iter()
                .map(|&s| s as u32)
                .find(|&s| stops(s, actions));
        }
    }
    // Queued now: arrived after the queues were read for the image, or read with them.
    if found.is_none() {
        if let Some(leader) = proc.tracees.first() {
            found = queued_stop(&leader.pending_signals(true)?, actions);
        }
    }
    for t in &proc.tracees {
        if found.is_some() {
            break;
        }
        found = queued_stop(&t.pending_signals(false)?, actions);
    }
    let queued = |q: &[SigInfo]| q.iter().map(|s| s.signo).find(|&s| stops(s, actions));
    if found.is_none() {
        found = queued(&task.shared_pending);
    }
    for c in cores.iter() {
        if found.is_none() {
            found = queued(&c.pending);
        }
    }
    let Some(signo) = found else {
        return Ok(0);
    };
    let actions = task.sigactions.clone();
    task.shared_pending.retain(|s| !stops(s.signo, &actions));
    for c in cores.iter_mut() {
        c.pending.retain(|s| !stops(s.signo, &actions));
    }
    Ok(signo)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn action(signo: i32, handler: u64) -> SigAction {
        SigAction {
            signo: u32::try_from(signo).expect("a signal number"),
            handler,
            ..SigAction::default()
        }
    }

    #[test]
    fn which_signals_stop() {
        let dfl = [action(libc::SIGTSTP, 0)];
        let handled = [action(libc::SIGTSTP, 0x4000)];
        assert!(stops(libc::SIGSTOP as u32, &handled));
        assert!(stops(libc::SIGTSTP as u32, &dfl));
        assert!(!stops(libc::SIGTSTP as u32, &handled));
        assert!(stops(libc::SIGTTIN as u32, &[]));
        assert!(!stops(libc::SIGCONT as u32, &[]));
        assert!(!stops(libc::SIGUSR1 as u32, &[]));
    }
}
