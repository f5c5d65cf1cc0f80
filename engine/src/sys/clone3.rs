//! `clone3(2)` with `set_tid`: a child with a chosen pid that stops itself at once.

use super::SysError;
use nix::errno::Errno;

#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// Forks a child whose pid is `pid` (in our pid namespace). The child asks to
/// be traced by us and stops with `SIGSTOP` before doing anything else; the
/// caller waits for that stop. Fails with `EEXIST` if the pid is taken.
pub fn spawn_stopped_with_pid(pid: i32) -> Result<i32, SysError> {
    let set_tid: [libc::pid_t; 1] = [pid];
    let args = CloneArgs {
        exit_signal: libc::SIGCHLD as u64,
        set_tid: set_tid.as_ptr() as u64,
        set_tid_size: 1,
        ..CloneArgs::default()
    };
    // SAFETY: `args` and `set_tid` are valid for the call. Without CLONE_VM the
    // child gets a copy of our address space, like fork(); it runs only the
    // async-signal-safe calls below and never returns into Rust code.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r < 0 {
        return Err(SysError::Call {
            op: "clone3",
            tid: pid,
            source: Errno::last(),
        });
    }
    if r == 0 {
        // SAFETY: the child only makes raw system calls and exits; nothing of
        // the parent's state (locks, allocator) is touched.
        unsafe {
            libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0);
            libc::raise(libc::SIGSTOP);
            libc::_exit(127);
        }
    }
    Ok(r as i32)
}
