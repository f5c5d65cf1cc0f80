//! Keyrings: crlab does not restore any yet. A restored process starts with the engine's
//! session keyring and no thread or process keyring, so a process whose session keyring is
//! another one (a systemd service's with its `invocation_id` key, a container's `_ses`), or
//! that has a thread or process keyring, is refused by name. Asked of the process itself with
//! remote `keyctl` calls, since only its own credentials say which keyrings it has.

use super::DumpError;
use crate::sys::{
    int_arg, own_keyring, Remote, Scratch, SysError, KEYCTL_DESCRIBE, KEYCTL_GET_KEYRING_ID,
    KEY_SPEC_PROCESS_KEYRING, KEY_SPEC_SESSION_KEYRING, KEY_SPEC_THREAD_KEYRING,
    KEY_SPEC_USER_SESSION_KEYRING,
};
use nix::errno::Errno;

/// The longest description read back (`type;uid;gid;perm;description`).
const DESCRIBE_MAX: u64 = 1024;

/// Refuses the dump of `pid` when one of its threads (`remotes`, the leader first) has a
/// thread keyring, when it has a process keyring, or when its session keyring is not the
/// engine's.
pub fn check(pid: i32, remotes: &mut [Remote], scratch: Scratch) -> Result<(), DumpError> {
    for remote in remotes.iter_mut() {
        if let Some(serial) = special(remote, KEY_SPEC_THREAD_KEYRING)? {
            let tid = remote.tid();
            return Err(refusal(
                pid,
                remote,
                scratch,
                serial,
                format!("thread {tid} has a thread keyring"),
            ));
        }
    }
    let Some(leader) = remotes.first_mut() else {
        return Ok(());
    };
    if let Some(serial) = special(leader, KEY_SPEC_PROCESS_KEYRING)? {
        return Err(refusal(
            pid,
            leader,
            scratch,
            serial,
            "has a process keyring".into(),
        ));
    }
    // With no session keyring, the process is given its user's session keyring here, which
    // its key searches fell back to anyway (no call tells the two apart without this change;
    // it is not undone).
    let Some(session) = special(leader, KEY_SPEC_SESSION_KEYRING)? else {
        return Ok(());
    };
    let own = own_keyring(KEY_SPEC_SESSION_KEYRING)?;
    if session == own {
        return Ok(());
    }
    // Its user's default session keyring, with the engine on its own (root's): a restored
    // process made by an engine without a session keyring falls back to its user's once its
    // ids are set, as the dumped one did.
    let user_default = special(leader, KEY_SPEC_USER_SESSION_KEYRING)?;
    let own_default = own_keyring(KEY_SPEC_USER_SESSION_KEYRING)?;
    if user_default == Some(session) && own == own_default {
        return Ok(());
    }
    Err(refusal(
        pid,
        leader,
        scratch,
        session,
        format!("has its own session keyring (not the engine's, {own})"),
    ))
}

/// The serial of the caller's keyring `spec`, or `None` when it has none (`ENOKEY`: asked
/// without `create`, the kernel makes no thread or process keyring).
fn special(remote: &mut Remote, spec: i32) -> Result<Option<i32>, SysError> {
    match remote.syscall(
        "keyctl(KEYCTL_GET_KEYRING_ID)",
        libc::SYS_keyctl,
        &[KEYCTL_GET_KEYRING_ID, int_arg(spec), 0],
    ) {
        Ok(serial) => Ok(Some(i32::try_from(serial).map_err(|_| {
            SysError::Remote {
                name: "keyctl(KEYCTL_GET_KEYRING_ID)",
                tid: remote.tid(),
                errno: Errno::ERANGE,
            }
        })?)),
        Err(e) if e.errno() == Some(Errno::ENOKEY) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The refusal of keyring `serial` of `pid`, described as the process sees it when it may.
fn refusal(
    pid: i32,
    remote: &mut Remote,
    scratch: Scratch,
    serial: i32,
    what: String,
) -> DumpError {
    let described = match describe(remote, scratch, serial) {
        Ok(d) => d,
        Err(e) => format!("which the engine could not describe: {e}"),
    };
    DumpError::Keyring {
        pid,
        what: format!("{what}, keyring {serial} ({described})"),
    }
}

/// `KEYCTL_DESCRIBE` of `serial` in the process: `type;uid;gid;perm;description`.
fn describe(remote: &mut Remote, scratch: Scratch, serial: i32) -> Result<String, SysError> {
    let len = DESCRIBE_MAX.min(scratch.len);
    let n = remote.syscall(
        "keyctl(KEYCTL_DESCRIBE)",
        libc::SYS_keyctl,
        &[KEYCTL_DESCRIBE, int_arg(serial), scratch.addr, len],
    )?;
    let mut buf = vec![0u8; crate::sys::usize_of(n.min(len))];
    remote.read_mem(scratch.addr, &mut buf)?;
    let text = String::from_utf8_lossy(&buf);
    Ok(text.trim_end_matches('\0').to_string())
}
