//! `kcmp(2)`: whether two descriptors refer to one open file description.

use super::SysError;
use nix::errno::Errno;

const KCMP_FILE: libc::c_long = 0;

/// True if `fd1` of `pid1` and `fd2` of `pid2` share one open file description.
pub fn same_file(pid1: i32, fd1: i32, pid2: i32, fd2: i32) -> Result<bool, SysError> {
    // SAFETY: kcmp takes only integers and touches no memory of ours.
    let r = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid1 as libc::c_long,
            pid2 as libc::c_long,
            KCMP_FILE,
            fd1 as libc::c_long,
            fd2 as libc::c_long,
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
