//! Resource limits of another process (`prlimit64(2)`), read at dump and set at restore.

use super::SysError;
use nix::errno::Errno;

/// The number of resources the dump reads (`RLIM_NLIMITS` on x86_64).
pub const RLIMITS: u32 = 16;

/// The soft and hard limit of `resource` (an `RLIMIT_*` number) of process `pid`.
pub fn rlimit(pid: i32, resource: u32) -> Result<(u64, u64), SysError> {
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: with a null new limit prlimit64 only writes `old`, which lives across the call.
    let r = unsafe { libc::prlimit64(pid, resource, std::ptr::null(), &mut old) };
    if r != 0 {
        return Err(SysError::Call {
            op: "prlimit64",
            tid: pid,
            source: Errno::last(),
        });
    }
    Ok((old.rlim_cur, old.rlim_max))
}

/// Sets the soft and hard limit of `resource` of process `pid`.
pub fn set_rlimit(pid: i32, resource: u32, cur: u64, max: u64) -> Result<(), SysError> {
    let new = libc::rlimit64 {
        rlim_cur: cur,
        rlim_max: max,
    };
    // SAFETY: prlimit64 reads `new`, which lives across the call, and writes nothing (null
    // old limit).
    let r = unsafe { libc::prlimit64(pid, resource, &new, std::ptr::null_mut()) };
    if r != 0 {
        return Err(SysError::Call {
            op: "prlimit64",
            tid: pid,
            source: Errno::last(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_own_limits_read_back_as_set() {
        let me = i32::try_from(std::process::id()).expect("a pid fits an i32");
        let nofile = libc::RLIMIT_NOFILE;
        let (cur, max) = rlimit(me, nofile).expect("prlimit64 on ourselves");
        assert!(cur <= max);
        set_rlimit(me, nofile, cur, max).expect("setting the same limits");
        assert_eq!(rlimit(me, nofile).ok(), Some((cur, max)));
        assert!(
            rlimit(me, 1 << 20).is_err(),
            "an unknown resource is refused"
        );
    }
}
