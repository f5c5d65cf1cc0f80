//! Per-thread state and signal dispositions, read through ptrace and remote calls.

use super::error::image_u32;
use super::DumpError;
use crate::image::schema::{GpRegs, Rseq, SigAction, SigAltStack, SigInfo, ThreadCore};
use crate::procfs;
use crate::sys::{Remote, Scratch};

/// The state of one stopped thread.
pub fn dump_thread(
    pid: i32,
    remote: &mut Remote,
    scratch: Scratch,
) -> Result<ThreadCore, DumpError> {
    let tid = remote.tid();
    let t = remote.tracee;
    let regs = *remote.base_regs();
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
    Ok(ThreadCore {
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
        pending,
        comm: procfs::read_string(format!("/proc/{pid}/task/{tid}/comm"))
            .map(|s| s.trim_end().to_string())
            .unwrap_or_default(),
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
