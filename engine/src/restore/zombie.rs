//! Zombies: a process of the tree that had exited and was not reaped is created again by its
//! parent with its pid, put in its session and group like any member (a zombie still holds
//! them), then ends as it ended: `exit_group` with its code, or killed by its signal (the
//! default action, without a core dump: the dump refuses a status with the core-dump bit).
//! The engine, its tracer, collects the end, which hands the zombie to its parent; the
//! parent's SIGCHLD from it is taken back, so its pending signals are the image's.
//!
//! Exact: the pid, the parent, the session and group, the status `waitpid` reports. Not
//! exact: the resource usage `wait4` and `waitid` report (the new task's, near zero).

use super::error::StepContext;
use super::{Live, RestoreError};
use crate::sys::Scratch;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;

/// Ends `zombie` with its dumped status, then takes its SIGCHLD back from `parent`.
pub fn end(
    zombie: &mut Live<'_>,
    parent: &mut Live<'_>,
    scratch: Scratch,
) -> Result<(), RestoreError> {
    let pid = zombie.pid();
    let status = zombie.img.entry.exit_status;
    failpoint!(
        "restore.zombie",
        super::error::injected(pid, "the zombie's end")
    );
    let signo = status & 0x7f;
    let seen = if signo == 0 {
        let code = u64::try_from((status >> 8) & 0xff).unwrap_or(0);
        zombie
            .leader
            .end("exit_group", libc::SYS_exit_group, &[code])
            .step(pid, "the zombie's exit")?
    } else {
        let sig = Signal::try_from(signo).map_err(|_| {
            RestoreError::Inconsistent(format!("zombie {pid} has the status {status:#x}"))
        })?;
        let r = &mut zombie.leader;
        // No core dump (which would set the core-dump bit): not dumpable.
        r.syscall(
            "prctl(PR_SET_DUMPABLE)",
            libc::SYS_prctl,
            &[libc::PR_SET_DUMPABLE as u64, 0],
        )
        .step(pid, "the zombie's end")?;
        if sig != Signal::SIGKILL {
            // The default action, whatever the parent it was forked from had.
            r.write_mem(scratch.addr, &[0u8; 32])
                .step(pid, "the zombie's end")?;
            r.syscall(
                "rt_sigaction",
                libc::SYS_rt_sigaction,
                &[u64::try_from(signo).unwrap_or(0), scratch.addr, 0, 8],
            )
            .step(pid, "the zombie's end")?;
        }
        r.tracee.set_sigmask(0).step(pid, "the zombie's end")?;
        let id = u64::try_from(pid).unwrap_or(0);
        r.end(
            "tgkill",
            libc::SYS_tgkill,
            &[id, id, u64::try_from(signo).unwrap_or(0)],
        )
        .step(pid, "the zombie's end")?
    };
    let expected = match seen {
        WaitStatus::Exited(_, code) => signo == 0 && code == (status >> 8) & 0xff,
        WaitStatus::Signaled(_, sig, core) => sig as i32 == signo && !core,
        _ => false,
    };
    if !expected {
        return Err(RestoreError::Inconsistent(format!(
            "zombie {pid} was to end with the status {status:#x} and ended as {seen:?}"
        )));
    }
    // SIGCHLD (bit 17 - 1) taken back if it is pending: a zero timeout does not wait.
    let ppid = parent.pid();
    let set = 1u64 << (libc::SIGCHLD - 1);
    let r = &mut parent.leader;
    r.write_mem(scratch.addr, &set.to_ne_bytes())
        .step(ppid, "its zombie child's SIGCHLD")?;
    r.write_mem(scratch.addr + 16, &[0u8; 16])
        .step(ppid, "its zombie child's SIGCHLD")?;
    match r.syscall(
        "rt_sigtimedwait",
        libc::SYS_rt_sigtimedwait,
        &[scratch.addr, 0, scratch.addr + 16, 8],
    ) {
        Ok(_) => Ok(()),
        Err(e) if e.errno() == Some(nix::errno::Errno::EAGAIN) => Ok(()),
        Err(e) => Err(e).step(ppid, "its zombie child's SIGCHLD"),
    }
}
