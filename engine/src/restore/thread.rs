//! Process-wide and per-thread state applied to a restored task: signal
//! dispositions, cwd, umask, personality, child subreaper, THP disabling, membarrier
//! registrations, OOM score adjustment, interval timers, rlimits; registers, FPU state,
//! signal mask and stack, tid address, robust list, rseq, scheduling, timer slack,
//! parent-death signal, no-new-privs, pending signals.

use super::context::write_attr;
use super::error::StepContext;
use super::RestoreError;
use crate::image::schema::{SigInfo, Task, ThreadCore};
use crate::procfs::{Stat, Status};
use crate::selinux;
use crate::sys::unsigned;
use crate::sys::{int_arg, resume_regs, set_rlimit, Regs, Remote, Scratch, Tracee};

/// Dispositions, cwd, umask, personality, child subreaper, THP disabling and membarrier
/// registrations.
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
    // The task's dispositions now: the root was cloned with every handler cleared (see
    // `sys::spawn_stopped_with_pid`) and every other task was forked from it before any
    // disposition was set, so each signal is ignored (as `SigIgn` says) or default, with no
    // flags, mask or restorer. Only the signals whose image disposition differs are set.
    let ignored = Status::read(pid)
        .map_err(|e| RestoreError::Inconsistent(e.to_string()))?
        .sig_ign;
    for a in &task.sigactions {
        if a.signo == libc::SIGKILL as u32
            || a.signo == libc::SIGSTOP as u32
            || a.signo == 0
            || a.signo > 64
        {
            continue;
        }
        let now = u64::from(ignored >> (a.signo - 1) & 1 == 1); // SIG_IGN is 1, SIG_DFL 0
        if [a.handler, a.flags, a.restorer, a.mask] == [now, 0, 0, 0] {
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
    if task.child_subreaper {
        remote
            .syscall(
                "prctl(PR_SET_CHILD_SUBREAPER)",
                libc::SYS_prctl,
                &[libc::PR_SET_CHILD_SUBREAPER as u64, 1],
            )
            .step(pid, "the child-subreaper flag")?;
    }
    if task.thp_disable & 1 != 0 {
        // Bit 0 is the flag, the bits above are PR_SET_THP_DISABLE's flags (6.18 and later).
        remote
            .syscall(
                "prctl(PR_SET_THP_DISABLE)",
                libc::SYS_prctl,
                &[
                    libc::PR_SET_THP_DISABLE as u64,
                    1,
                    u64::from(task.thp_disable & !1),
                ],
            )
            .step(pid, "the THP-disable flag")?;
    }
    for &registration in &task.membarrier {
        remote
            .syscall(
                "membarrier",
                libc::SYS_membarrier,
                &[u64::from(registration), 0, 0],
            )
            .step(pid, "the membarrier registrations")?;
    }
    Ok(())
}

/// The OOM score adjustment and the core dump filter, written from outside, each only when
/// it differs from what the process has from the engine. The engine writes the adjustment
/// with `CAP_SYS_RESOURCE`, which also makes it the process's floor (`oom_score_adj_min`).
pub fn set_proc_files(pid: i32, task: &Task) -> Result<(), RestoreError> {
    if let Some(adj) = task.oom_score_adj {
        let text = adj.to_string();
        write_proc(
            pid,
            "oom_score_adj",
            "the OOM score adjustment",
            &text,
            &text,
        )?;
    }
    if let Some(filter) = task.coredump_filter {
        // Shown as eight hex digits; read back with base 0, so written with its 0x.
        let (now, value) = (format!("{filter:08x}"), format!("{filter:#x}"));
        write_proc(pid, "coredump_filter", "the core dump filter", &now, &value)?;
    }
    Ok(())
}

/// Writes `value` to `/proc/PID/NAME` unless it reads `now` already.
fn write_proc(
    pid: i32,
    name: &str,
    what: &str,
    now: &str,
    value: &str,
) -> Result<(), RestoreError> {
    let path = format!("/proc/{pid}/{name}");
    if std::fs::read_to_string(&path).is_ok_and(|text| text.trim() == now) {
        return Ok(());
    }
    std::fs::write(&path, value).map_err(|e| RestoreError::File {
        pid,
        what: format!("writing {what}"),
        path,
        source: crate::sys::SysError::Io {
            what: format!("writing {value}"),
            source: e,
        },
    })
}

/// `PR_TIMER_CREATE_RESTORE_IDS` of `<linux/prctl.h>` (Linux 6.16): while on, `timer_create`
/// takes the id to give the new timer from where it would store it.
const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
/// Where a timer's `struct sigevent` (64 bytes), then its id, then its time go.
const TIMER_ID_OFF: u64 = 64;
const TIMER_SPEC_OFF: u64 = 128;

/// The POSIX timers, recreated with their ids, notification and signal value, then armed
/// with the time they had left (after the threads exist: a timer may signal one).
pub fn set_posix_timers(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    task: &Task,
) -> Result<(), RestoreError> {
    if task.posix_timers.is_empty() {
        return Ok(());
    }
    let restore_ids = |remote: &mut Remote, on: u64| {
        remote
            .syscall(
                "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
                libc::SYS_prctl,
                &[PR_TIMER_CREATE_RESTORE_IDS, on, 0, 0, 0],
            )
            .step(pid, "the POSIX timers")
    };
    restore_ids(remote, 1)?;
    // The kernel lists the newest first: created in reverse, they are listed as they were.
    for t in task.posix_timers.iter().rev() {
        // struct sigevent: sigev_value, sigev_signo, sigev_notify, then the thread id.
        let mut ev = vec![0u8; 64];
        ev[0..8].copy_from_slice(&t.value.to_ne_bytes());
        ev[8..12].copy_from_slice(&t.signo.to_ne_bytes());
        ev[12..16].copy_from_slice(&t.notify.to_ne_bytes());
        ev[16..20].copy_from_slice(&t.tid.to_ne_bytes());
        ev.extend_from_slice(&t.id.to_ne_bytes());
        remote
            .write_mem(scratch.addr, &ev)
            .step(pid, "the POSIX timers")?;
        remote
            .syscall(
                "timer_create",
                libc::SYS_timer_create,
                &[int_arg(t.clock), scratch.addr, scratch.addr + TIMER_ID_OFF],
            )
            .step(pid, "the POSIX timers")?;
        let mut got = [0u8; 4];
        remote
            .read_mem(scratch.addr + TIMER_ID_OFF, &mut got)
            .step(pid, "the POSIX timers")?;
        if i32::from_ne_bytes(got) != t.id {
            return Err(RestoreError::Inconsistent(format!(
                "POSIX timer {} of process {pid} was recreated as timer {}",
                t.id,
                i32::from_ne_bytes(got)
            )));
        }
    }
    restore_ids(remote, 0)?;
    for t in &task.posix_timers {
        if t.value_sec == 0 && t.value_nsec == 0 {
            continue;
        }
        let mut spec = Vec::with_capacity(32);
        for w in [t.interval_sec, t.interval_nsec, t.value_sec, t.value_nsec] {
            spec.extend_from_slice(&w.to_ne_bytes());
        }
        remote
            .write_mem(scratch.addr + TIMER_SPEC_OFF, &spec)
            .step(pid, "the POSIX timers")?;
        remote
            .syscall(
                "timer_settime",
                libc::SYS_timer_settime,
                &[int_arg(t.id), 0, scratch.addr + TIMER_SPEC_OFF, 0],
            )
            .step(pid, "the POSIX timers")?;
    }
    Ok(())
}

/// Memory-deny-write-execute, last of the process's mappings' rules: once set, no mapping may
/// gain execute permission.
pub fn set_mdwe(remote: &mut Remote, pid: i32, task: &Task) -> Result<(), RestoreError> {
    if task.mdwe == 0 {
        return Ok(());
    }
    remote
        .syscall(
            "prctl(PR_SET_MDWE)",
            libc::SYS_prctl,
            &[libc::PR_SET_MDWE as u64, u64::from(task.mdwe), 0, 0, 0],
        )
        .step(pid, "memory-deny-write-execute")
        .map(drop)
}

/// The interval timers, armed last so that they lose as little time as possible.
pub fn set_itimers(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    task: &Task,
) -> Result<(), RestoreError> {
    for t in &task.itimers {
        let mut b = Vec::with_capacity(32);
        for w in [t.interval_sec, t.interval_usec, t.value_sec, t.value_usec] {
            b.extend_from_slice(&w.to_ne_bytes());
        }
        remote
            .write_mem(scratch.addr, &b)
            .step(pid, "the interval timers")?;
        remote
            .syscall(
                "setitimer",
                libc::SYS_setitimer,
                &[u64::from(t.which), scratch.addr, 0],
            )
            .step(pid, "the interval timers")?;
    }
    Ok(())
}

/// What a thread keeps once its credentials are set (a change of ids clears the parent-death
/// signal): its parent-death signal and no-new-privs.
pub fn after_credentials(
    remote: &mut Remote,
    pid: i32,
    core: &ThreadCore,
) -> Result<(), RestoreError> {
    if core.pdeathsig != 0 {
        remote
            .syscall(
                "prctl(PR_SET_PDEATHSIG)",
                libc::SYS_prctl,
                &[libc::PR_SET_PDEATHSIG as u64, u64::from(core.pdeathsig)],
            )
            .step(pid, "the parent-death signal")?;
    }
    if core.no_new_privs {
        remote
            .syscall(
                "prctl(PR_SET_NO_NEW_PRIVS)",
                libc::SYS_prctl,
                &[libc::PR_SET_NO_NEW_PRIVS as u64, 1, 0, 0, 0],
            )
            .step(pid, "no-new-privs")?;
    }
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
    set_sched(remote, pid, scratch, core)?;
    set_affinity(remote, pid, scratch, core)?;
    if core.tsc == PR_TSC_SIGSEGV {
        remote
            .syscall(
                "prctl(PR_SET_TSC)",
                libc::SYS_prctl,
                &[libc::PR_SET_TSC as u64, u64::from(PR_TSC_SIGSEGV)],
            )
            .step(pid, "the time stamp counter mode")?;
    }
    if let Some(policy) = core.mce_kill.filter(|&p| p != PR_MCE_KILL_DEFAULT) {
        remote
            .syscall(
                "prctl(PR_MCE_KILL)",
                libc::SYS_prctl,
                &[PR_MCE_KILL, PR_MCE_KILL_SET, u64::from(policy), 0, 0],
            )
            .step(pid, "the machine-check kill policy")?;
    }
    // After the policy: a change of policy resets the slack. Set only when it differs, like
    // everything a thread may already have from the engine.
    if let Some(slack) = core.timerslack_ns {
        let now = remote
            .syscall(
                "prctl(PR_GET_TIMERSLACK)",
                libc::SYS_prctl,
                &[libc::PR_GET_TIMERSLACK as u64],
            )
            .step(pid, "the timer slack")?;
        if now != slack {
            remote
                .syscall(
                    "prctl(PR_SET_TIMERSLACK)",
                    libc::SYS_prctl,
                    &[libc::PR_SET_TIMERSLACK as u64, slack],
                )
                .step(pid, "the timer slack")?;
        }
    }
    if selinux::enabled() {
        for (attr, value, what) in [
            (
                "sockcreate",
                &core.sockcreate_context,
                "the socket creation context (attr/sockcreate)",
            ),
            ("exec", &core.exec_context, "the exec context (attr/exec)"),
            (
                "fscreate",
                &core.fscreate_context,
                "the file creation context (attr/fscreate)",
            ),
            (
                "keycreate",
                &core.keycreate_context,
                "the key creation context (attr/keycreate)",
            ),
        ] {
            if !value.is_empty() {
                write_attr(remote, scratch, attr, value).step(pid, what)?;
            }
        }
    }
    let tid = remote.tid();
    queue_signals(remote, pid, scratch, &core.pending, Some(tid))?;
    Ok(())
}

/// The thread's scheduling policy, real-time priority, nice value and I/O priority, each set only when the
/// thread (a copy of the engine's) does not have it already: setting them needs the
/// `setsched` permission on itself, in its restored context.
fn set_sched(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    core: &ThreadCore,
) -> Result<(), RestoreError> {
    let Some(sched) = &core.sched else {
        return Ok(());
    };
    let now = Stat::read_task(pid, remote.tid())
        .map_err(|e| RestoreError::Inconsistent(e.to_string()))?;
    if (now.policy, now.rt_priority) != (sched.policy, sched.priority) {
        // sched_setscheduler takes a struct sched_param: one int.
        remote
            .write_mem(scratch.addr, &sched.priority.to_ne_bytes())
            .step(pid, "the scheduling policy")?;
        remote
            .syscall(
                "sched_setscheduler",
                libc::SYS_sched_setscheduler,
                &[0, u64::from(sched.policy), scratch.addr],
            )
            .step(pid, "the scheduling policy")?;
    }
    if now.nice != sched.nice {
        remote
            .syscall(
                "setpriority",
                libc::SYS_setpriority,
                &[
                    libc::PRIO_PROCESS as u64,
                    0,
                    unsigned(i64::from(sched.nice)),
                ],
            )
            .step(pid, "the nice value")?;
    }
    let io_now = crate::sys::ioprio(remote.tid())?;
    if io_now != sched.ioprio {
        remote
            .syscall(
                "ioprio_set",
                libc::SYS_ioprio_set,
                &[1, 0, u64::from(sched.ioprio)],
            )
            .step(pid, "the I/O priority")?;
    }
    Ok(())
}

/// The thread's CPU affinity, set only when it differs from the engine's (it needs the
/// `setsched` permission).
fn set_affinity(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    core: &ThreadCore,
) -> Result<(), RestoreError> {
    if core.cpus_allowed.is_empty() {
        return Ok(());
    }
    let now = Status::read_task(pid, remote.tid())
        .map_err(|e| RestoreError::Inconsistent(e.to_string()))?;
    if now.cpus_allowed == core.cpus_allowed {
        return Ok(());
    }
    // The kernel takes whole unsigned longs.
    let mut mask = core.cpus_allowed.clone();
    mask.resize(mask.len().div_ceil(8) * 8, 0);
    if mask.len() as u64 > scratch.len {
        return Err(RestoreError::Inconsistent(format!(
            "the CPU affinity of process {pid} has {} bytes, more than the engine can pass",
            mask.len()
        )));
    }
    remote
        .write_mem(scratch.addr, &mask)
        .step(pid, "the CPU affinity")?;
    remote
        .syscall(
            "sched_setaffinity",
            libc::SYS_sched_setaffinity,
            &[0, mask.len() as u64, scratch.addr],
        )
        .step(pid, "the CPU affinity")?;
    Ok(())
}

/// `<linux/prctl.h>`'s machine-check kill policy, which the libc crate lacks for Linux.
const PR_MCE_KILL: u64 = 33;
const PR_MCE_KILL_SET: u64 = 1;
/// `PR_TSC_SIGSEGV`: `rdtsc` faults.
const PR_TSC_SIGSEGV: u32 = 2;
/// What `PR_MCE_KILL_GET` says of a thread that never set a policy.
const PR_MCE_KILL_DEFAULT: u32 = 2;

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
