//! Who an open file description signals: its owner (`F_GETOWN_EX`) and the signal it sends
//! (`F_GETSIG`), asked of a descriptor the engine holds.

use super::SysError;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `fcntl` commands and owner kinds of `<linux/fcntl.h>` that the libc crate lacks.
const F_GETSIG: libc::c_int = 11;
const F_GETOWN_EX: libc::c_int = 16;
/// An owner that is one thread.
pub const OWNER_TID: i32 = 0;
/// An owner that is a process group.
pub const OWNER_PGRP: i32 = 2;

/// `struct f_owner_ex`.
#[repr(C)]
struct OwnerEx {
    kind: libc::c_int,
    pid: libc::pid_t,
}

/// The owner of the open file description behind `fd`: its kind (`F_OWNER_TID`,
/// `F_OWNER_PID`, `F_OWNER_PGRP`) and id; an id of 0 means none.
pub fn file_owner(fd: BorrowedFd<'_>) -> Result<(i32, i32), SysError> {
    let mut owner = OwnerEx { kind: 0, pid: 0 };
    // SAFETY: F_GETOWN_EX writes one `struct f_owner_ex` at the pointer, which is `owner`,
    // live for the call and laid out as the kernel's.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), F_GETOWN_EX, &mut owner as *mut OwnerEx) };
    if r < 0 {
        return Err(SysError::Call {
            op: "fcntl(F_GETOWN_EX)",
            tid: 0,
            source: Errno::last(),
        });
    }
    Ok((owner.kind, owner.pid))
}

/// The signal the open file description behind `fd` sends for I/O events (`F_GETSIG`); 0 is
/// the default, SIGIO.
pub fn file_signal(fd: BorrowedFd<'_>) -> Result<i32, SysError> {
    // SAFETY: F_GETSIG takes no argument and touches no memory.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), F_GETSIG) };
    if r < 0 {
        return Err(SysError::Call {
            op: "fcntl(F_GETSIG)",
            tid: 0,
            source: Errno::last(),
        });
    }
    Ok(r)
}
