//! Per-thread state and signal dispositions, read through ptrace and remote calls: registers,
//! signal state, tid address, robust list, rseq, scheduling, CPU affinity, parent-death
//! signal, timer slack, machine-check kill policy, time stamp counter mode, capabilities,
//! no-new-privs.

use super::error::image_u32;
use super::DumpError;
use crate::image::schema::{
    Caps, GpRegs, Rseq, Sched, SigAction, SigAltStack, SigInfo, ThreadCore,
};
use crate::procfs::{self, Stat, Status};
use crate::sys::{Remote, Scratch};

/// The state of one stopped thread.
/// `restart`: for a thread that slept in `restart_syscall` when it was seized, the kernel
/// stack it showed then (`SeizedProcess::restarts`).
pub fn dump_thread(
    pid: i32,
    remote: &mut Remote,
    scratch: Scratch,
    restart: Option<&Option<String>>,
) -> Result<ThreadCore, DumpError> {
    let tid = remote.tid();
    let t = remote.tracee;
    let mut regs = *remote.base_regs();
    name_restarted_call(pid, tid, restart, &mut regs)?;
    failpoint!("dump.thread.ptrace", |source| crate::sys::SysError::Io {
        what: format!("PTRACE_GETREGSET(NT_X86_XSTATE) of task {tid}"),
        source,
    });
    let xstate = t.xstate()?;
    let sigmask = t.sigmask()?;
    remote.syscall("sigaltstack", libc::SYS_sigaltstack, &[0, scratch.addr])?;
    let mut ss = [0u8; 24];
    remote.read_mem(scratch.addr, &mut ss)?;
    let word = |i: usize| u64::from_ne_bytes(ss[i..i + 8].try_into().unwrap_or([0; 8]));
    let altstack = SigAltStack {
        sp: word(0),
        flags: u32::from_ne_bytes(ss[8..12].try_into().unwrap_or([0; 4])),
        size: word(16),
    };
    remote.syscall(
        "prctl(PR_GET_TID_ADDRESS)",
        libc::SYS_prctl,
        &[libc::PR_GET_TID_ADDRESS as u64, scratch.addr],
    )?;
    let clear_child_tid = remote.read_u64(scratch.addr)?;
    let (robust_list, robust_list_len) = t.robust_list()?;
    let rseq = t.rseq()?.map(|c| Rseq {
        abi_pointer: c.rseq_abi_pointer,
        abi_size: c.rseq_abi_size,
        flags: c.flags,
        signature: c.signature,
    });
    let pending = t
        .pending_signals(false)?
        .into_iter()
        .map(|raw| SigInfo {
            // si_signo, the first int of the siginfo: a signal number, never negative.
            signo: u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]),
            raw: raw.to_vec(),
        })
        .collect();
    let sched = sched(pid, tid)?;
    let pdeathsig = {
        remote.syscall(
            "prctl(PR_GET_PDEATHSIG)",
            libc::SYS_prctl,
            &[libc::PR_GET_PDEATHSIG as u64, scratch.addr],
        )?;
        let mut b = [0u8; 4];
        remote.read_mem(scratch.addr, &mut b)?;
        image_u32(pid, "the parent-death signal", i32::from_ne_bytes(b))?
    };
    let timerslack_ns = remote.syscall(
        "prctl(PR_GET_TIMERSLACK)",
        libc::SYS_prctl,
        &[libc::PR_GET_TIMERSLACK as u64],
    )?;
    let mce_kill = remote.syscall(
        "prctl(PR_MCE_KILL_GET)",
        libc::SYS_prctl,
        &[PR_MCE_KILL_GET],
    )?;
    remote.syscall(
        "prctl(PR_GET_TSC)",
        libc::SYS_prctl,
        &[libc::PR_GET_TSC as u64, scratch.addr],
    )?;
    let mut b = [0u8; 4];
    remote.read_mem(scratch.addr, &mut b)?;
    let tsc = image_u32(pid, "the time stamp counter mode", i32::from_ne_bytes(b))?;
    let no_new_privs = remote.syscall(
        "prctl(PR_GET_NO_NEW_PRIVS)",
        libc::SYS_prctl,
        &[libc::PR_GET_NO_NEW_PRIVS as u64],
    )? != 0;
    let securebits = remote.syscall(
        "prctl(PR_GET_SECUREBITS)",
        libc::SYS_prctl,
        &[libc::PR_GET_SECUREBITS as u64],
    )?;
    if securebits & !SECBIT_KEEP_CAPS != 0 {
        return Err(DumpError::ThreadState {
            pid,
            tid,
            what: format!("has securebits {securebits:#x} (PR_SET_SECUREBITS)"),
            hint: "only the keep-capabilities bit is restored; dump it without the others",
        });
    }
    let status = Status::read_task(pid, tid)?;
    let c = status.caps;
    Ok(ThreadCore {
        sched: Some(sched),
        pdeathsig,
        timerslack_ns: Some(timerslack_ns),
        caps: Some(Caps {
            inheritable: c.inheritable,
            permitted: c.permitted,
            effective: c.effective,
            bounding: c.bounding,
            ambient: c.ambient,
        }),
        no_new_privs,
        keep_caps: securebits & SECBIT_KEEP_CAPS != 0,
        cpus_allowed: status.cpus_allowed,
        tsc,
        mce_kill: Some(image_u32(
            pid,
            "the machine-check kill policy",
            i64::try_from(mce_kill).unwrap_or(-1),
        )?),
        tid: image_u32(pid, "a thread id", tid)?,
        regs: Some(GpRegs::from(&regs)),
        xstate,
        sigmask,
        altstack: Some(altstack),
        clear_child_tid,
        robust_list,
        robust_list_len,
        rseq,
        selinux_context: procfs::selinux_attr(pid, tid, "current"),
        sockcreate_context: procfs::selinux_attr(pid, tid, "sockcreate"),
        exec_context: procfs::selinux_attr(pid, tid, "exec"),
        fscreate_context: procfs::selinux_attr(pid, tid, "fscreate"),
        keycreate_context: procfs::selinux_attr(pid, tid, "keycreate"),
        pending,
        comm: procfs::read_string(format!("/proc/{pid}/task/{tid}/comm"))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default(),
    })
}

/// `-ERESTART_RESTARTBLOCK`: a call interrupted that resumes through `restart_syscall`.
const ERESTART_RESTARTBLOCK: i64 = -516;
/// A thread asleep in `restart_syscall`: a wait it was stopped in and continued (by a stop
/// signal, a freezer, a tracer, a dump with `--leave-running`). The kernel keeps that wait's
/// state in the task's restart block, which a restored task does not have: its
/// `restart_syscall` would return EINTR. The call's arguments are still in the registers,
/// only its number is gone. On x86-64 three kinds of call restart through a restart block:
/// the sleeps (`nanosleep`, `clock_nanosleep` with a relative time), a timed `futex` wait,
/// and `poll`. The thread's kernel stack before it was seized tells them apart (a poll
/// shows `do_restart_poll` or `do_sys_poll`, a futex wait a `futex_` function; a sleep
/// may show no function of its own), and its arguments must fit the call: a sleep is
/// `clock_nanosleep` when its first argument is a clock id with no flags, `nanosleep` when
/// it is a pointer. The call is recorded as the one the thread is in, and the restore makes
/// it again with its arguments (a relative timeout starts over, as for any restored sleep).
/// A stack that could not be read, or arguments that fit no call, are refused.
fn name_restarted_call(
    pid: i32,
    tid: i32,
    stack: Option<&Option<String>>,
    regs: &mut crate::sys::Regs,
) -> Result<(), DumpError> {
    if crate::sys::signed(regs.orig_rax) != libc::SYS_restart_syscall
        || crate::sys::signed(regs.rax) != ERESTART_RESTARTBLOCK
    {
        return Ok(());
    }
    let refuse = |why: &str| DumpError::ThreadState {
        pid,
        tid,
        what: format!(
            "sleeps in restart_syscall (a wait it was stopped in and continued), and {why}"
        ),
        hint: "only the kernel holds that wait's state; dump it again once the wait has returned",
    };
    let Some(Some(stack)) = stack else {
        return Err(refuse(
            "its kernel stack (/proc/PID/task/TID/stack, which names the call) could not be read",
        ));
    };
    let call = restarted_call(stack, regs).ok_or_else(|| {
        refuse(&format!(
            "its arguments fit none of the calls that restart so (rdi {:#x}, rsi {:#x})",
            regs.rdi, regs.rsi
        ))
    })?;
    regs.orig_rax = call.unsigned_abs();
    Ok(())
}

/// The call a thread in `restart_syscall` was making, from its kernel stack and arguments
/// (see [`name_restarted_call`]).
fn restarted_call(stack: &str, regs: &crate::sys::Regs) -> Option<i64> {
    let shows = |f: &dyn Fn(&str) -> bool| {
        stack.lines().any(|line| {
            // `[<0>] do_restart_poll+0x54/0xa0`
            line.split_whitespace()
                .nth(1)
                .and_then(|s| s.split('+').next())
                .is_some_and(f)
        })
    };
    // A page: no pointer is below it, and no clock id reaches it.
    const PAGE: u64 = 4096;
    if shows(&|s| s == "do_restart_poll" || s == "do_sys_poll") {
        Some(libc::SYS_poll)
    } else if shows(&|s| s.starts_with("futex_")) {
        Some(libc::SYS_futex)
    } else if regs.rdi < PAGE && regs.rsi == 0 {
        Some(libc::SYS_clock_nanosleep)
    } else if regs.rdi >= PAGE {
        Some(libc::SYS_nanosleep)
    } else {
        None
    }
}

/// `PR_MCE_KILL_GET` of `<linux/prctl.h>`, which the libc crate lacks for Linux.
const PR_MCE_KILL_GET: u64 = 34;
/// `SECBIT_KEEP_CAPS` of `<linux/securebits.h>`: what `PR_SET_KEEPCAPS` sets.
const SECBIT_KEEP_CAPS: u64 = 1 << 4;
/// `SCHED_DEADLINE`, which needs `sched_setattr` and is refused.
const SCHED_DEADLINE: u32 = 6;

/// The thread's scheduling policy, real-time priority and nice value, from its `stat` (read
/// from outside: asking the thread would need the `getsched` permission on itself).
/// `SCHED_RESET_ON_FORK` is not shown there and not recorded: a restored thread does not have it.
fn sched(pid: i32, tid: i32) -> Result<Sched, DumpError> {
    let stat = Stat::read_task(pid, tid)?;
    if stat.policy == SCHED_DEADLINE {
        return Err(DumpError::ThreadState {
            pid,
            tid,
            what: "runs under SCHED_DEADLINE".to_string(),
            hint: "dump it under another scheduling policy",
        });
    }
    Ok(Sched {
        policy: stat.policy,
        priority: stat.rt_priority,
        nice: stat.nice,
        ioprio: crate::sys::ioprio(tid)?,
    })
}

/// Every signal's disposition (`rt_sigaction` with a null new action).
pub fn sigactions(remote: &mut Remote, scratch: Scratch) -> Result<Vec<SigAction>, DumpError> {
    let mut out = Vec::new();
    for signo in 1..=64u32 {
        if signo == libc::SIGKILL as u32 || signo == libc::SIGSTOP as u32 {
            continue;
        }
        remote.syscall(
            "rt_sigaction",
            libc::SYS_rt_sigaction,
            &[u64::from(signo), 0, scratch.addr, 8],
        )?;
        let mut b = [0u8; 32];
        remote.read_mem(scratch.addr, &mut b)?;
        let w = |i: usize| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        out.push(SigAction {
            signo,
            handler: w(0),
            flags: w(1),
            restorer: w(2),
            mask: w(3),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(rdi: u64, rsi: u64) -> crate::sys::Regs {
        let mut r = crate::sys::zeroed_regs();
        r.rdi = rdi;
        r.rsi = rsi;
        r
    }

    #[test]
    fn a_restarted_call_is_named_from_the_stack_and_its_arguments() {
        let poll = "[<0>] poll_schedule_timeout.constprop.0+0x37/0x90\n\
                    [<0>] do_sys_poll+0x437/0x5c0\n[<0>] do_restart_poll+0x54/0xa0\n";
        assert_eq!(
            restarted_call(poll, &regs(0x7f00_0000, 1)),
            Some(libc::SYS_poll)
        );
        let futex = "[<0>] futex_wait_queue+0x60/0x90\n[<0>] futex_wait_restart+0x2b/0x50\n";
        assert_eq!(
            restarted_call(futex, &regs(0x7f00_0000, 0)),
            Some(libc::SYS_futex)
        );
        let bare = "[<0>] do_syscall_64+0x71/0x290\n";
        assert_eq!(
            restarted_call(bare, &regs(0x7ffc_0000, 0)),
            Some(libc::SYS_nanosleep)
        );
        assert_eq!(
            restarted_call(bare, &regs(1, 0)),
            Some(libc::SYS_clock_nanosleep)
        );
        // A clock id with TIMER_ABSTIME does not restart through a restart block.
        assert_eq!(restarted_call(bare, &regs(1, 1)), None);
    }
}
