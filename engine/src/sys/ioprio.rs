//! A thread's I/O priority (`ioprio_get`), read from the engine.

use super::SysError;

/// `IOPRIO_WHO_PROCESS`: `ioprio_get` and `ioprio_set` of one thread.
const IOPRIO_WHO_PROCESS: libc::c_long = 1;

/// The I/O priority of thread `tid` (class in the top bits, data below, as `ioprio_get` gives
/// it); 0 is none set (the default, from the nice value).
pub fn ioprio(tid: i32) -> Result<u32, SysError> {
    // SAFETY: ioprio_get takes integers only and writes no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_ioprio_get,
            IOPRIO_WHO_PROCESS,
            libc::c_long::from(tid),
        )
    };
    if r < 0 {
        return Err(SysError::Call {
            op: "ioprio_get",
            tid,
            source: nix::errno::Errno::last(),
        });
    }
    u32::try_from(r).map_err(|_| SysError::Call {
        op: "ioprio_get",
        tid,
        source: nix::errno::Errno::ERANGE,
    })
}
