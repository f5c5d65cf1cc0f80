//! Process-wide state that only the process can tell, read by remote calls in its leader:
//! the child-subreaper flag, THP disabling, memory-deny-write-execute, interval timers, POSIX
//! timers' time, membarrier registrations; and its OOM score adjustment and core dump
//! filter, read from `/proc`.

use super::DumpError;
use crate::image::schema::{ITimer, PosixTimer};
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
    pub posix_timers: Vec<PosixTimer>,
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
    let posix_timers = posix_timers(pid, leader, scratch)?;
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
        posix_timers,
        membarrier,
    })
}

/// `PR_TIMER_CREATE_RESTORE_IDS` of `<linux/prctl.h>` (Linux 6.16), and its query.
const PR_TIMER_CREATE_RESTORE_IDS: u64 = 77;
const PR_TIMER_CREATE_RESTORE_IDS_GET: u64 = 2;

/// The POSIX timers of `pid` with their time, or a refusal of those the restore could not
/// recreate exactly.
fn posix_timers(
    pid: i32,
    leader: &mut Remote,
    scratch: Scratch,
) -> Result<Vec<PosixTimer>, DumpError> {
    let refuse = |why: String| DumpError::PosixTimers { pid, why };
    let listed = match procfs::PosixTimer::read(pid) {
        Ok(t) => t,
        Err(procfs::ProcError::Parse { what, .. }) => return Err(refuse(what)),
        Err(e) => return Err(e.into()),
    };
    if listed.is_empty() {
        return Ok(Vec::new());
    }
    // Asked of the process itself, whose kernel the restore will most likely run on.
    if leader
        .syscall(
            "prctl(PR_TIMER_CREATE_RESTORE_IDS)",
            libc::SYS_prctl,
            &[
                PR_TIMER_CREATE_RESTORE_IDS,
                PR_TIMER_CREATE_RESTORE_IDS_GET,
                0,
                0,
                0,
            ],
        )
        .is_err()
    {
        return Err(refuse(
            "this kernel cannot create a timer with a given id (PR_TIMER_CREATE_RESTORE_IDS, \
             Linux 6.16 and later)"
                .to_string(),
        ));
    }
    let threads = procfs::threads(pid)?;
    let mut out = Vec::with_capacity(listed.len());
    for t in listed {
        let to_thread = t.notify & procfs::SIGEV_THREAD_ID != 0;
        if (to_thread && !threads.contains(&t.target)) || (!to_thread && t.target != pid) {
            return Err(refuse(format!(
                "timer {} signals task {}, which is not {}",
                t.id,
                t.target,
                if to_thread {
                    "one of its threads"
                } else {
                    "the process itself"
                }
            )));
        }
        leader.syscall(
            "timer_gettime",
            libc::SYS_timer_gettime,
            &[int_arg(t.id), scratch.addr],
        )?;
        // struct itimerspec: it_interval, then it_value, each (sec, nsec).
        let mut b = [0u8; 32];
        leader.read_mem(scratch.addr, &mut b)?;
        let w = |i: usize| u64::from_ne_bytes(b[i * 8..i * 8 + 8].try_into().unwrap_or([0; 8]));
        out.push(PosixTimer {
            id: t.id,
            clock: t.clock,
            notify: t.notify,
            signo: t.signo,
            value: t.value,
            tid: if to_thread {
                super::image_u32(pid, "the thread a timer signals", t.target)?
            } else {
                0
            },
            interval_sec: w(0),
            interval_nsec: w(1),
            value_sec: w(2),
            value_nsec: w(3),
        });
    }
    Ok(out)
}
