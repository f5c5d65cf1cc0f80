//! A memfd the engine holds: its seals (`F_GET_SEALS`) and whether it lives on hugetlbfs.

use super::SysError;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd};

/// `HUGETLBFS_MAGIC` of `<linux/magic.h>`.
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// The seals of the memfd behind `fd` (`F_GET_SEALS`).
pub fn memfd_seals(fd: BorrowedFd<'_>) -> Result<u32, SysError> {
    // SAFETY: F_GET_SEALS takes no argument and touches no memory.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GET_SEALS) };
    if r < 0 {
        return Err(SysError::Call {
            op: "fcntl(F_GET_SEALS)",
            tid: 0,
            source: Errno::last(),
        });
    }
    u32::try_from(r).map_err(|_| SysError::Call {
        op: "fcntl(F_GET_SEALS)",
        tid: 0,
        source: Errno::ERANGE,
    })
}

/// Whether the file behind `fd` is on hugetlbfs (`fstatfs`): a memfd made with `MFD_HUGETLB`.
pub fn on_hugetlbfs(fd: BorrowedFd<'_>) -> Result<bool, SysError> {
    // SAFETY: statfs is plain integers; all-zero is a valid value.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes one `struct statfs` at the pointer, which is `st`, live for the
    // call and the libc crate's type for it.
    if unsafe { libc::fstatfs(fd.as_raw_fd(), &mut st) } < 0 {
        return Err(SysError::Call {
            op: "fstatfs",
            tid: 0,
            source: Errno::last(),
        });
    }
    Ok(st.f_type == HUGETLBFS_MAGIC)
}
