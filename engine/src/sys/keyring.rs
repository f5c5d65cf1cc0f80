//! Keyrings (`keyctl`): the constants of `<linux/keyctl.h>` the engine passes to remote
//! `keyctl` calls, and the engine's own session keyring.

use super::{int_arg, usize_of, Remote, SysError};

/// The longest key description with its NUL (the kernel's limit), and the longest payload a
/// dump records and a restore gives back: one bound for both sides.
pub const KEY_DESC_MAX: usize = 4096;
pub const KEY_PAYLOAD_MAX: usize = 8192;

/// `KEYCTL_GET_KEYRING_ID`: the serial of a special keyring, made only when asked (`create`).
pub const KEYCTL_GET_KEYRING_ID: u64 = 0;
/// `KEYCTL_JOIN_SESSION_KEYRING`: join (or make) the named session keyring, a new anonymous
/// one for no name.
pub const KEYCTL_JOIN_SESSION_KEYRING: u64 = 1;
/// `KEYCTL_CHOWN`, `KEYCTL_SETPERM`: a key's owner and permissions.
pub const KEYCTL_CHOWN: u64 = 4;
pub const KEYCTL_SETPERM: u64 = 5;
/// `KEYCTL_READ`: a key's payload, a keyring's serials.
pub const KEYCTL_READ: u64 = 11;
/// `KEYCTL_DESCRIBE`: `type;uid;gid;perm;description` of a key.
pub const KEYCTL_DESCRIBE: u64 = 6;
/// `KEYCTL_GET_SECURITY`: a key's LSM label, NUL-terminated (empty without one).
pub const KEYCTL_GET_SECURITY: u64 = 17;
/// `KEY_SPEC_THREAD_KEYRING`, `KEY_SPEC_PROCESS_KEYRING`, `KEY_SPEC_SESSION_KEYRING`: the
/// caller's keyrings, as a key serial argument (a negative `int`).
pub const KEY_SPEC_THREAD_KEYRING: i32 = -1;
pub const KEY_SPEC_PROCESS_KEYRING: i32 = -2;
pub const KEY_SPEC_SESSION_KEYRING: i32 = -3;
/// `KEY_SPEC_USER_SESSION_KEYRING`: the caller's user's default session keyring
/// (`_uid_ses.UID`), which its searches fall back to when it has no session keyring.
pub const KEY_SPEC_USER_SESSION_KEYRING: i32 = -5;

/// The serial of the engine's own keyring `spec` (its session keyring, the one a task the
/// engine creates starts with, or its user's session keyring), never made anew. Like any
/// `KEYCTL_GET_KEYRING_ID` of the session keyring, a process that has none is given its user's
/// session keyring (`_uid_ses.UID`) by the kernel.
pub fn own_keyring(spec: i32) -> Result<i32, SysError> {
    // SAFETY: keyctl(KEYCTL_GET_KEYRING_ID) takes integers only and writes no memory.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            libc::c_long::try_from(KEYCTL_GET_KEYRING_ID).unwrap_or(0),
            libc::c_long::from(spec),
            0 as libc::c_long,
        )
    };
    if r < 0 {
        return Err(SysError::Call {
            op: "keyctl(KEYCTL_GET_KEYRING_ID)",
            tid: std::process::id().try_into().unwrap_or(-1),
            source: nix::errno::Errno::last(),
        });
    }
    i32::try_from(r).map_err(|_| SysError::Call {
        op: "keyctl(KEYCTL_GET_KEYRING_ID)",
        tid: std::process::id().try_into().unwrap_or(-1),
        source: nix::errno::Errno::ERANGE,
    })
}

/// Runs `keyctl(cmd, serial, addr, len)` in the task of `remote`, for a command that writes
/// into a buffer of the task (`KEYCTL_DESCRIBE`, `KEYCTL_READ`, `KEYCTL_GET_SECURITY`), and
/// returns what it wrote. `E2BIG` when the answer needs more than `len` bytes: the kernel
/// then copies nothing, and the buffer holds whatever was there before.
pub fn remote_keyctl_buf(
    remote: &mut Remote,
    name: &'static str,
    cmd: u64,
    serial: i32,
    (addr, len): (u64, u64),
) -> Result<Vec<u8>, SysError> {
    let n = remote.syscall(name, libc::SYS_keyctl, &[cmd, int_arg(serial), addr, len])?;
    if n > len {
        return Err(SysError::Remote {
            name,
            tid: remote.tid(),
            errno: nix::errno::Errno::E2BIG,
        });
    }
    let mut buf = vec![0u8; usize_of(n)];
    remote.read_mem(addr, &mut buf)?;
    Ok(buf)
}

/// A description or label as `keyctl` writes it, without its NUL.
pub fn keyctl_text(buf: &[u8]) -> String {
    String::from_utf8_lossy(buf)
        .trim_end_matches('\0')
        .to_string()
}

/// The serials a keyring's `KEYCTL_READ` lists (native-endian `key_serial_t`s).
pub fn keyring_serials(listed: &[u8]) -> Vec<i32> {
    listed
        .chunks_exact(4)
        .map(|c| i32::from_ne_bytes(c.try_into().unwrap_or([0; 4])))
        .collect()
}
