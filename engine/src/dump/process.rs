//! Process-wide state that only the process can tell, read by remote calls in its leader:
//! the child-subreaper flag, THP disabling, memory-deny-write-execute, interval timers,
//! membarrier registrations; and its OOM score adjustment and core dump filter, read from
//! `/proc`.

use super::DumpError;
use crate::image::schema::ITimer;
use crate::procfs;
use crate::sys::{int_arg, Remote, Scratch};

/// `<linux/membarrier.h>`: a command that fails with `EPERM` unless the process registered
/// for it, and the registration that makes it succeed.
const MEMBARRIER: [(u64, u32); 3] = [
    // MEMBARRIER_CMD_PRIVATE_EXPEDITED, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED
    (1 << 3, 1 << 4),
    // ..._PRIVATE_EXPEDITED_SYNC_CORE, its registration
    (1 << 5, 1 << 6),
    // ..._PRIVATE_EXPEDITED_RSEQ, its registration
    (1 << 7, 1 << 8),
];

/// What [`read`] found.
pub struct ProcessState {
    pub oom_score_adj: i32,
    pub coredump_filter: u32,
    pub mdwe: u32,
    pub child_subreaper: bool,
    pub thp_disable: u32,
    pub itimers: Vec<ITimer>,
    pub membarrier: Vec<u32>,
}

/// Reads the process-wide state of `pid` through its leader `remote`.
pub fn read(pid: i32, leader: &mut Remote, scratch: Scratch) -> Result<ProcessState, DumpError> {
    let oom_path = format!("/proc/{pid}/oom_score_adj");
    let oom_text = procfs::read_string(&oom_path)?;
    let oom_score_adj = oom_text
        .trim()
        .parse()
        .map_err(|_| procfs::ProcError::Parse {
            path: oom_path,
            what: format!("{oom_text:?} is not a number"),
        })?;
    let filter_path = format!("/proc/{pid}/coredump_filter");
    let filter_text = procfs::read_string(&filter_path)?;
    let coredump_filter =
        u32::from_str_radix(filter_text.trim(), 16).map_err(|_| procfs::ProcError::Parse {
            path: filter_path,
            what: format!("{filter_text:?} is not a hexadecimal number"),
        })?;
    // A kernel without memory-deny-write-execute (before 6.3) refuses the question.
    let mdwe = leader
        .syscall(
            "prctl(PR_GET_MDWE)",
            libc::SYS_prctl,
            &[libc::PR_GET_MDWE as u64, 0, 0, 0, 0],
        )
        .map_or(0, |v| u32::try_from(v).unwrap_or(0));
    leader.syscall(
        "prctl(PR_GET_CHILD_SUBREAPER)",
        libc::SYS_prctl,
        &[libc::PR_GET_CHILD_SUBREAPER as u64, scratch.addr],
    )?;
    let mut b = [0u8; 4];
    leader.read_mem(scratch.addr, &mut b)?;
    let child_subreaper = i32::from_ne_bytes(b) != 0;
    let thp = leader.syscall(
        "prctl(PR_GET_THP_DISABLE)",
        libc::SYS_prctl,
        &[libc::PR_GET_THP_DISABLE as u64],
    )?;
    let thp_disable = super::image_u32(
        pid,
        "the THP-disable flags",
        i64::try_from(thp).unwrap_or(-1),
    )?;
    let mut itimers = Vec::new();
    for which in [libc::ITIMER_REAL, libc::ITIMER_VIRTUAL, libc::ITIMER_PROF] {
        leader.syscall(
            "getitimer",
            libc::SYS_getitimer,
            &[int_arg(which), scratch.addr],
        )?;
        // struct itimerval: it_interval, then it_value, each two longs (sec, usec).
        let mut t = [0u8; 32];
        leader.read_mem(scratch.addr, &mut t)?;
        let w = |i: usize| u64::from_ne_bytes(t[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        let timer = ITimer {
            which: u32::try_from(which).unwrap_or(0),
            interval_sec: w(0),
            interval_usec: w(1),
            value_sec: w(2),
            value_usec: w(3),
        };
        if timer.value_sec != 0 || timer.value_usec != 0 {
            itimers.push(timer);
        }
    }
    let mut membarrier = Vec::new();
    for (command, registration) in MEMBARRIER {
        // Succeeds only when registered; EPERM when not, EINVAL when this kernel lacks it.
        if leader
            .syscall("membarrier", libc::SYS_membarrier, &[command, 0, 0])
            .is_ok()
        {
            membarrier.push(registration);
        }
    }
    Ok(ProcessState {
        oom_score_adj,
        coredump_filter,
        mdwe,
        child_subreaper,
        thp_disable,
        itimers,
        membarrier,
    })
}
