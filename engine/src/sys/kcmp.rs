//! `kcmp(2)`: whether two descriptors refer to one open file description, and whether two
//! processes share a kernel object (descriptor table, filesystem information, signal
//! handlers, address space).

use super::SysError;
use nix::errno::Errno;

const KCMP_FILE: libc::c_long = 0;
const KCMP_VM: libc::c_long = 1;
const KCMP_FILES: libc::c_long = 2;
const KCMP_FS: libc::c_long = 3;
const KCMP_SIGHAND: libc::c_long = 4;
const KCMP_EPOLL_TFD: libc::c_long = 7;

/// `struct kcmp_epoll_slot`.
#[repr(C)]
struct EpollSlot {
    efd: u32,
    tfd: u32,
    toff: u32,
}

/// A kernel object two processes may share since a `clone` without `CLONE_THREAD`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shared {
    /// The descriptor table (`CLONE_FILES`).
    Files,
    /// Root, working directory and umask (`CLONE_FS`).
    Fs,
    /// The signal handlers (`CLONE_SIGHAND`).
    Sighand,
    /// The address space (`CLONE_VM`, `vfork`).
    Vm,
}

impl Shared {
    /// Every kind, in the order a dump checks them.
    pub const ALL: [Shared; 4] = [Shared::Files, Shared::Fs, Shared::Sighand, Shared::Vm];

    fn kcmp_type(self) -> libc::c_long {
        match self {
            Shared::Files => KCMP_FILES,
            Shared::Fs => KCMP_FS,
            Shared::Sighand => KCMP_SIGHAND,
            Shared::Vm => KCMP_VM,
        }
    }
}

fn kcmp(pid1: i32, pid2: i32, kind: libc::c_long, idx1: i32, idx2: i32) -> Result<bool, SysError> {
    // SAFETY: kcmp takes only integers and touches no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1 as libc::c_long,
            pid2 as libc::c_long,
            kind,
            idx1 as libc::c_long,
            idx2 as libc::c_long,
        )
    };
    if r < 0 {
        return Err(SysError::Call {
            op: "kcmp",
            tid: pid1,
            source: Errno::last(),
        });
    }
    Ok(r == 0)
}

/// True if `fd1` of `pid1` and `fd2` of `pid2` share one open file description.
pub fn same_file(pid1: i32, fd1: i32, pid2: i32, fd2: i32) -> Result<bool, SysError> {
    kcmp(pid1, pid2, KCMP_FILE, fd1, fd2)
}

/// True if processes `pid1` and `pid2` share the kernel object `what`.
pub fn share(pid1: i32, pid2: i32, what: Shared) -> Result<bool, SysError> {
    kcmp(pid1, pid2, what.kcmp_type(), 0, 0)
}

/// Whether descriptor `fd` of `pid` is the file that the epoll instance at descriptor `efd` of
/// `pid` watches as its `toff`-th registration with descriptor number `tfd`
/// (`KCMP_EPOLL_TFD`); `None` when `pid` has no descriptor `fd` or the epoll no such
/// registration.
pub fn epoll_target_is(
    pid: i32,
    fd: i32,
    efd: i32,
    tfd: i32,
    toff: u32,
) -> Result<Option<bool>, SysError> {
    let bad = |source| SysError::Call {
        op: "kcmp(KCMP_EPOLL_TFD)",
        tid: pid,
        source,
    };
    let slot = EpollSlot {
        efd: u32::try_from(efd).map_err(|_| bad(Errno::EBADF))?,
        tfd: u32::try_from(tfd).map_err(|_| bad(Errno::EBADF))?,
        toff,
    };
    // SAFETY: KCMP_EPOLL_TFD reads one `struct kcmp_epoll_slot` at the last argument, which
    // is `slot`, live for the call and laid out as the kernel's; the rest are integers.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid as libc::c_long,
            pid as libc::c_long,
            KCMP_EPOLL_TFD,
            fd as libc::c_long,
            &slot as *const EpollSlot,
        )
    };
    if r < 0 {
        return match Errno::last() {
            Errno::EBADF | Errno::ENOENT => Ok(None),
            e => Err(bad(e)),
        };
    }
    Ok(Some(r == 0))
}
