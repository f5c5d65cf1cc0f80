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
