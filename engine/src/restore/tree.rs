//! Creating the tasks of a restored tree with their original ids: the root
//! with `clone3(set_tid)` from the engine, children and threads with
//! `clone3(set_tid)` run inside their parent by remote system calls, so the
//! kernel records the right parent and thread group.

use super::error::StepContext;
use super::RestoreError;
use crate::sys::{spawn_stopped_with_pid, Remote, Scratch, SysError, Tracee};
use nix::errno::Errno;
use nix::sys::ptrace::Options;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// Where `struct clone_args` and the set_tid array go in the scratch area.
const ARGS_OFF: u64 = 8192;
const CLONE_ARGS_SIZE: u64 = 88;

const THREAD_FLAGS: u64 = (libc::CLONE_VM
    | libc::CLONE_FS
    | libc::CLONE_FILES
    | libc::CLONE_SIGHAND
    | libc::CLONE_THREAD
    | libc::CLONE_SYSVSEM) as u64;

fn taken(pid: i32) -> impl FnOnce(SysError) -> RestoreError {
    move |e| match e.errno() {
        Some(Errno::EEXIST) => RestoreError::PidTaken {
            pid,
            holder: super::pids::holder_text(pid),
        },
        _ => RestoreError::Sys(e),
    }
}

/// Waits for a new task's first stop.
fn wait_started(t: Tracee) -> Result<(), RestoreError> {
    match t.wait("starting")? {
        WaitStatus::Stopped(_, Signal::SIGSTOP)
        | WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_STOP) => Ok(()),
        other => Err(SysError::UnexpectedStop {
            tid: t.tid,
            what: "starting",
            status: format!("{other:?}"),
        }
        .into()),
    }
}

/// The root: a copy of the engine with pid `pid`, traced, stopped. On an error after the child
/// exists, it is killed and reaped here: nobody else knows of it yet.
pub fn spawn_root(pid: i32) -> Result<Tracee, RestoreError> {
    let got = spawn_stopped_with_pid(pid).map_err(taken(pid))?;
    let t = Tracee::from_traceme(got);
    if let Err(e) = start_root(t) {
        let _ = kill(Pid::from_raw(got), Signal::SIGKILL);
        let _ = waitpid(Pid::from_raw(got), Some(WaitPidFlag::__WALL));
        return Err(e);
    }
    Ok(t)
}

fn start_root(t: Tracee) -> Result<(), RestoreError> {
    failpoint!(
        "restore.task.root",
        super::error::injected(t.tid, "the root task")
    );
    wait_started(t)?;
    t.set_options(
        Options::PTRACE_O_TRACESYSGOOD
            | Options::PTRACE_O_TRACECLONE
            | Options::PTRACE_O_TRACEFORK
            | Options::PTRACE_O_EXITKILL,
    )?;
    Ok(())
}

/// Runs `clone3` in `parent` for a new process (`thread == false`) or thread
/// with id `id`; returns it stopped and traced. The new task is added to `created` as soon as
/// it exists, so a failure after that still kills it.
pub fn clone_in(
    parent: &mut Remote,
    scratch: Scratch,
    id: i32,
    thread: bool,
    created: &mut Vec<i32>,
) -> Result<Tracee, RestoreError> {
    let owner = parent.tid();
    let set_tid = scratch.addr + ARGS_OFF + 128;
    let (flags, exit_signal) = if thread {
        (THREAD_FLAGS, 0)
    } else {
        (0, libc::SIGCHLD as u64)
    };
    let args: [u64; 11] = [flags, 0, 0, 0, exit_signal, 0, 0, 0, set_tid, 1, 0];
    let bytes: Vec<u8> = args.iter().flat_map(|w| w.to_ne_bytes()).collect();
    parent
        .write_mem(scratch.addr + ARGS_OFF, &bytes)
        .step(owner, "a new task")?;
    parent
        .write_mem(set_tid, &id.to_ne_bytes())
        .step(owner, "a new task")?;
    let got = parent
        .syscall(
            "clone3",
            libc::SYS_clone3,
            &[scratch.addr + ARGS_OFF, CLONE_ARGS_SIZE],
        )
        .map_err(taken(id))?;
    if let Ok(got) = i32::try_from(got) {
        created.push(got);
    }
    if thread {
        failpoint!(
            "restore.task.thread",
            super::error::injected(id, "a new thread")
        );
    } else {
        failpoint!(
            "restore.task.process",
            super::error::injected(id, "a new process")
        );
    }
    if i32::try_from(got) != Ok(id) {
        return Err(RestoreError::Inconsistent(format!(
            "clone3 asked for id {id} and made {got}"
        )));
    }
    parent.new_children.retain(|&c| c != id);
    let t = Tracee::from_traceme(id);
    wait_started(t)?;
    Ok(t)
}
