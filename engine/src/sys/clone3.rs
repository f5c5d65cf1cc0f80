//! `clone3(2)` with `set_tid`: a child with a chosen pid that stops itself at once, and the
//! probe of `crlab check` that asks the kernel about the same call without creating a task.

use super::SysError;
use nix::errno::Errno;

/// `CLONE_CLEAR_SIGHAND` (Linux 5.5, like `set_tid`): a clone3-only flag above 32 bits, which
/// `libc` declares with a type too narrow for it.
const CLONE_CLEAR_SIGHAND: u64 = 0x1_0000_0000;

/// `struct clone_args` up to `cgroup` (`CLONE_ARGS_SIZE_VER2`, 88 bytes).
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
///
/// The child starts with `CLONE_CLEAR_SIGHAND`: every signal the engine handles is back to
/// its default, with no flags, mask or restorer; an ignored one stays ignored (its flags,
/// mask and restorer cleared too). So its dispositions, and those of every task later forked
/// from it, are known from `SigIgn` alone (see [`crate::restore`]'s dispositions).
pub fn spawn_stopped_with_pid(pid: i32) -> Result<i32, SysError> {
    let set_tid: [libc::pid_t; 1] = [pid];
    let args = CloneArgs {
        flags: CLONE_CLEAR_SIGHAND,
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
    // A pid_t: the kernel returns the new task's id.
    i32::try_from(r).map_err(|_| SysError::Call {
        op: "clone3",
        tid: pid,
        source: Errno::ERANGE,
    })
}

/// What a `clone3` call that the kernel must refuse gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clone3Probe {
    /// Refused with this errno: `EINVAL` means the kernel parsed the arguments and refused
    /// them, so it has the call (and, with `set_tid`, knows that field).
    Refused(Errno),
    /// A task was created after all (it exited at once): the kernel took arguments it must
    /// refuse.
    Created(i32),
}

/// Calls `clone3` with arguments the kernel refuses before it creates a task: a NULL
/// argument pointer and size 0 (`set_tid == false`), or the `struct clone_args` the restore
/// passes with `set_tid_size` 1 but a NULL `set_tid` (`set_tid == true`), which kernels with
/// `set_tid` (5.5+) refuse with `EINVAL` and older ones with `E2BIG`.
pub fn clone3_probe(set_tid: bool) -> Clone3Probe {
    let args = CloneArgs {
        set_tid_size: 1,
        ..CloneArgs::default()
    };
    let r = if set_tid {
        // SAFETY: `args` is a valid, initialized clone_args that lives across the call; the
        // kernel only reads it and refuses it (see above) before creating any task.
        unsafe {
            libc::syscall(
                libc::SYS_clone3,
                &args as *const CloneArgs,
                std::mem::size_of::<CloneArgs>(),
            )
        }
    } else {
        // SAFETY: clone3 with a NULL argument pointer and size 0 is refused with EINVAL (size
        // below CLONE_ARGS_SIZE_VER0) before the kernel reads memory or creates a task.
        unsafe { libc::syscall(libc::SYS_clone3, std::ptr::null::<CloneArgs>(), 0usize) }
    };
    if r == 0 {
        // Impossible with these arguments; should it happen, this is the new task, which
        // must not return into the caller.
        // SAFETY: _exit ends only this (child) task, touching no shared state.
        unsafe { libc::_exit(127) };
    }
    match i32::try_from(r) {
        Ok(pid) if pid > 0 => Clone3Probe::Created(pid),
        _ => Clone3Probe::Refused(Errno::last()),
    }
}
