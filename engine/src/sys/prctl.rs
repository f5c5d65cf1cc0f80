//! `prctl(2)` asked of the engine itself: the size of `struct prctl_mm_map`, which the restore
//! hands to `PR_SET_MM_MAP` inside each restored process.

use super::SysError;
use nix::errno::Errno;

/// The size of `struct prctl_mm_map` the kernel expects (`PR_SET_MM_MAP_SIZE`); an error means
/// the kernel lacks `CONFIG_CHECKPOINT_RESTORE`.
pub fn mm_map_size() -> Result<u32, SysError> {
    let mut size: libc::c_uint = 0;
    // SAFETY: PR_SET_MM_MAP_SIZE only stores an unsigned int at the address passed, which is
    // `size`; it changes nothing. Variadic arguments are passed as unsigned longs, as the
    // kernel reads them.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_MM,
            super::int_arg(libc::PR_SET_MM_MAP_SIZE),
            &mut size as *mut libc::c_uint as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    if rc != 0 {
        return Err(SysError::Call {
            op: "prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE)",
            tid: 0,
            source: Errno::last(),
        });
    }
    Ok(size)
}
