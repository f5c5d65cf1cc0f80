//! Process-wide and per-thread state applied to a restored task: signal
//! dispositions, cwd, umask, session, rlimits, registers, FPU state, signal
//! mask and stack, tid address, robust list, rseq, pending signals.

use super::context::write_attr;
use super::error::StepContext;
use super::RestoreError;
use crate::image::schema::{SigInfo, Task, ThreadCore};
use crate::selinux;
use crate::sys::{int_arg, resume_regs, set_rlimit, Regs, Remote, Scratch, Tracee};

/// Dispositions, cwd, umask and personality.
pub fn restore_process_state(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    task: &Task,
) -> Result<(), RestoreError> {
    failpoint!(
        "restore.state",
        super::error::injected(pid, "signal handlers")
    );
    for a in &task.sigactions {
        if a.signo == libc::SIGKILL as u32
            || a.signo == libc::SIGSTOP as u32
            || a.signo == 0
            || a.signo > 64
        {
            continue;
        }
        let mut b = Vec::with_capacity(32);
        for w in [a.handler, a.flags, a.restorer, a.mask] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        remote
            .write_mem(scratch.addr, &b)
            .step(pid, "signal handlers")?;
        remote
            .syscall(
                "rt_sigaction",
                libc::SYS_rt_sigaction,
                &[a.signo as u64, scratch.addr, 0, 8],
            )
            .step(pid, "signal handlers")?;
    }
    let cwd = remote
        .put_cstr(scratch, &task.cwd)
        .step(pid, "the working directory")?;
    remote
        .syscall("chdir", libc::SYS_chdir, &[cwd])
        .map_err(|source| RestoreError::File {
            pid,
            what: "changing to the working directory".into(),
            path: task.cwd.clone(),
            source,
        })?;
    remote
        .syscall("umask", libc::SYS_umask, &[task.umask as u64])
        .step(pid, "the umask")?;
    remote
        .syscall(
            "personality",
            libc::SYS_personality,
            &[task.personality as u64],
        )
        .step(pid, "the personality")?;
    Ok(())
}

/// A thread's state that needs its own system calls.
pub fn restore_thread(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    core: &ThreadCore,
) -> Result<(), RestoreError> {
    failpoint!(
        "restore.thread",
        super::error::injected(pid, "the thread name")
    );
    let name = remote
        .put_cstr(scratch, &core.comm)
        .step(pid, "the thread name")?;
    remote
        .syscall(
            "prctl(PR_SET_NAME)",
            libc::SYS_prctl,
            &[libc::PR_SET_NAME as u64, name],
        )
        .step(pid, "the thread name")?;
    if let Some(ss) = &core.altstack {
        let flags = ss.flags & !(libc::SS_ONSTACK as u32);
        let mut b = Vec::with_capacity(24);
        b.extend_from_slice(&ss.sp.to_ne_bytes());
        b.extend_from_slice(&(flags as u64).to_ne_bytes());
        b.extend_from_slice(&ss.size.to_ne_bytes());
        remote
            .write_mem(scratch.addr, &b)
            .step(pid, "the alternate signal stack")?;
        if flags & libc::SS_DISABLE as u32 == 0 {
            remote
                .syscall("sigaltstack", libc::SYS_sigaltstack, &[scratch.addr, 0])
                .step(pid, "the alternate signal stack")?;
        }
    }
    remote
        .syscall(
            "set_tid_address",
            libc::SYS_set_tid_address,
            &[core.clear_child_tid],
        )
        .step(pid, "the tid address")?;
    if core.robust_list != 0 {
        remote
            .syscall(
                "set_robust_list",
                libc::SYS_set_robust_list,
                &[core.robust_list, core.robust_list_len],
            )
            .step(pid, "the robust futex list")?;
    }
    if let Some(r) = &core.rseq {
        remote
            .syscall(
                "rseq",
                libc::SYS_rseq,
                &[r.abi_pointer, r.abi_size as u64, 0, r.signature as u64],
            )
            .step(pid, "the rseq registration")?;
    }
    if !core.sockcreate_context.is_empty() && selinux::enabled() {
        write_attr(remote, scratch, "sockcreate", &core.sockcreate_context)
            .step(pid, "the socket creation context")?;
    }
    let tid = remote.tid();
    queue_signals(remote, pid, scratch, &core.pending, Some(tid))?;
    Ok(())
}

/// Queues signals again with their original siginfo: to the thread `tid`, or
/// to the whole process when `tid` is `None`. The task sends them to itself,
/// which the kernel allows for any si_code.
pub fn queue_signals(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    sigs: &[SigInfo],
    tid: Option<i32>,
) -> Result<(), RestoreError> {
    failpoint!(
        "restore.signals",
        super::error::injected(pid, "pending signals")
    );
    for s in sigs {
        if s.raw.len() != 128 || s.signo == 0 || s.signo > 64 {
            return Err(RestoreError::Inconsistent(format!(
                "a pending signal of process {pid} has a bad siginfo"
            )));
        }
        remote
            .write_mem(scratch.addr, &s.raw)
            .step(pid, "pending signals")?;
        match tid {
            Some(tid) => remote.syscall(
                "rt_tgsigqueueinfo",
                libc::SYS_rt_tgsigqueueinfo,
                &[int_arg(pid), int_arg(tid), u64::from(s.signo), scratch.addr],
            ),
            None => remote.syscall(
                "rt_sigqueueinfo",
                libc::SYS_rt_sigqueueinfo,
                &[int_arg(pid), u64::from(s.signo), scratch.addr],
            ),
        }
        .step(pid, "pending signals")?;
    }
    Ok(())
}

/// Resource limits, set from outside.
pub fn set_rlimits(pid: i32, task: &Task) -> Result<(), RestoreError> {
    failpoint!(
        "restore.rlimits",
        super::error::injected(pid, "resource limits")
    );
    for r in &task.rlimits {
        set_rlimit(pid, r.resource, r.cur, r.max).step(pid, "resource limits")?;
    }
    Ok(())
}

/// The last word: FPU state, signal mask and the registers the thread resumes with.
pub fn finish_thread(tracee: &Tracee, pid: i32, core: &ThreadCore) -> Result<(), RestoreError> {
    let g = core.regs.as_ref().ok_or_else(|| {
        RestoreError::Inconsistent(format!("core-{}.img has no registers", core.tid))
    })?;
    if !core.xstate.is_empty() {
        tracee.set_xstate(&core.xstate).step(pid, "the FPU state")?;
    }
    tracee
        .set_sigmask(core.sigmask)
        .step(pid, "the signal mask")?;
    let regs = resume_regs(&Regs::from(g), false);
    failpoint!("restore.regs", super::error::injected(pid, "the registers"));
    tracee.set_regs(&regs).step(pid, "the registers")?;
    Ok(())
}
