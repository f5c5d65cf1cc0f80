//! Keyrings, asked of the process itself with remote `keyctl` calls, since only its own
//! credentials say which keyrings it has. A thread or process keyring is refused by name. A
//! session keyring that is neither the engine's (which a restored process starts with) nor
//! its user's default one (which it falls back to) is recorded with its `user` keys and their
//! payloads; any other key, or one the engine cannot read, is refused by name.

use super::DumpError;
use crate::image::schema::{SessionKeyring, UserKey};
use crate::sys::{
    int_arg, keyctl_text, keyring_serials, own_keyring, remote_keyctl_buf, Remote, Scratch,
    SysError, KEYCTL_DESCRIBE, KEYCTL_GET_KEYRING_ID, KEYCTL_GET_SECURITY, KEYCTL_READ,
    KEY_DESC_MAX, KEY_PAYLOAD_MAX, KEY_SPEC_PROCESS_KEYRING, KEY_SPEC_SESSION_KEYRING,
    KEY_SPEC_THREAD_KEYRING, KEY_SPEC_USER_SESSION_KEYRING,
};
use nix::errno::Errno;
use std::collections::HashMap;

/// The longest description read back (`type;uid;gid;perm;description`; a description may
/// have 4095 bytes).
const DESCRIBE_MAX: u64 = KEY_DESC_MAX as u64 + 128;

/// What a key's `KEYCTL_DESCRIBE` says.
struct Described {
    kind: String,
    uid: u32,
    gid: u32,
    perm: u32,
    description: String,
}

/// Refuses the dump of `pid` when one of its threads (`remotes`, the leader first) has a
/// thread keyring or when it has a process keyring; returns its session keyring when the
/// restore must make it.
/// `known` holds the keyrings already read for other processes of the tree, by serial: a
/// keyring the processes share is read once.
pub fn read(
    pid: i32,
    remotes: &mut [Remote],
    scratch: Scratch,
    known: &mut HashMap<i32, SessionKeyring>,
) -> Result<Option<SessionKeyring>, DumpError> {
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
        return Ok(None);
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
    let session = special(leader, KEY_SPEC_SESSION_KEYRING).map_err(|e| match e.errno() {
        // Its own keyring, which it may not search: SELinux (or the keyring's permissions)
        // deny the process itself what its key calls need, so no dump can learn it.
        Some(Errno::EACCES) => DumpError::Keyring {
            pid,
            what: format!(
                "may not search its own session keyring ({}), so the dump cannot tell which \
                 one it is",
                chain(&e)
            ),
            hint: "give the process a session keyring it may search, as container runtimes \
                   do (a keyring made under the process's own label)",
        },
        _ => e.into(),
    })?;
    let Some(session) = session else {
        return Ok(None);
    };
    // Credentials, and so session keyrings, are per thread: a thread may have joined another
    // one, which the restore (whose threads copy their leader's) would not give it.
    for remote in remotes.iter_mut().skip(1) {
        let theirs = special(remote, KEY_SPEC_SESSION_KEYRING)?;
        if theirs != Some(session) {
            let tid = remote.tid();
            let serial = theirs.unwrap_or(0);
            return Err(refusal(
                pid,
                remote,
                scratch,
                serial,
                format!("thread {tid} has another session keyring than its leader's ({session})"),
            ));
        }
    }
    let Some(leader) = remotes.first_mut() else {
        return Ok(None);
    };
    let own = own_keyring(KEY_SPEC_SESSION_KEYRING)?;
    if session == own {
        return Ok(None);
    }
    // Its user's default session keyring, with the engine on its own (root's): a restored
    // process made by an engine without a session keyring falls back to its user's once its
    // ids are set, as the dumped one did.
    let user_default = special(leader, KEY_SPEC_USER_SESSION_KEYRING)?;
    let own_default = own_keyring(KEY_SPEC_USER_SESSION_KEYRING)?;
    if user_default == Some(session) {
        if own == own_default {
            return Ok(None);
        }
        // A restore by such an engine would give the process the engine's keyring, and a
        // copy made by name would not be the user's own (shared by all its processes).
        return Err(DumpError::Keyring {
            pid,
            what: format!(
                "has its user's default session keyring ({session}), which no restore by an \
                 engine with a session keyring of its own ({own}) would give it back"
            ),
            hint: "run crlab without a session keyring of its own (as a service, not from a \
                   login shell whose PAM stack made one), or give the process a session keyring \
                   of its own",
        });
    }
    if let Some(ring) = known.get(&session) {
        return Ok(Some(ring.clone()));
    }
    let ring = session_keyring(pid, leader, scratch, session)?;
    known.insert(session, ring.clone());
    Ok(Some(ring))
}

/// The session keyring `serial` of `pid` and its keys.
fn session_keyring(
    pid: i32,
    leader: &mut Remote,
    scratch: Scratch,
    serial: i32,
) -> Result<SessionKeyring, DumpError> {
    let refuse = |what: String, hint: &'static str| DumpError::Keyring { pid, what, hint };
    // A read of `whose` (the keyring or a key) that failed.
    let unread = |whose: &str, what: &str, e: &SysError, hint| {
        refuse(
            format!(
                "has {whose}, whose {what} the engine could not read: {}",
                chain(e)
            ),
            hint,
        )
    };
    let garbled = |whose: &str, text: String| {
        refuse(
            format!("has {whose} described as {text:?}"),
            "a kernel that describes keys as type;uid;gid;perm;description",
        )
    };
    let whose = format!("session keyring {serial}");
    let may_view = "give the process a session keyring it may view";
    let ring = describe(leader, scratch, serial)
        .map_err(|e| unread(&whose, "description", &e, may_view))?
        .and_then_parse()
        .map_err(|text| garbled(&whose, text))?;
    let whose = format!("session keyring {serial} ({:?})", ring.description);
    let serials = read_payload(leader, scratch, serial).map_err(|e| {
        unread(
            &whose,
            "list of keys",
            &e,
            "give the process a session keyring it may read",
        )
    })?;
    let serials = keyring_serials(&serials);
    let mut keys = Vec::with_capacity(serials.len());
    for &key in &serials {
        let in_ring = format!("key {key} in {whose}");
        let d = describe(leader, scratch, key)
            .map_err(|e| {
                let hint = "only user keys the process may view and read are restored";
                unread(&in_ring, "description", &e, hint)
            })?
            .and_then_parse()
            .map_err(|text| garbled(&in_ring, text))?;
        if d.kind != "user" {
            return Err(refuse(
                format!(
                    "has a key of type {:?}, {:?}, in {whose}",
                    d.kind, d.description
                ),
                "only user keys are restored; remove the key before the dump",
            ));
        }
        let user_key = format!("a key of type \"user\", {:?}, in {whose}", d.description);
        let payload = read_payload(leader, scratch, key).map_err(|e| {
            unread(
                &user_key,
                "payload",
                &e,
                "only user keys the process may read are restored",
            )
        })?;
        let label = label(leader, scratch, key).map_err(|e| {
            unread(
                &user_key,
                "label",
                &e,
                "only user keys the process may view are restored",
            )
        })?;
        keys.push(UserKey {
            uid: d.uid,
            gid: d.gid,
            perm: d.perm,
            description: d.description,
            payload,
            label,
        });
    }
    let label =
        label(leader, scratch, serial).map_err(|e| unread(&whose, "label", &e, may_view))?;
    // An expiry is not kept by the restore: refused where the engine can see it (`/proc/keys`
    // lists the keys its reader may view; one it may not is not checked).
    let timeouts = expiries()?;
    let named = std::iter::once((serial, &ring.description)).chain(
        serials
            .iter()
            .copied()
            .zip(keys.iter().map(|k| &k.description)),
    );
    for (key, description) in named {
        if let Some(timeout) = timeouts.get(&key) {
            return Err(refuse(
                format!(
                    "has key {key} ({description:?}) in {whose} that expires (timeout \
                     {timeout} in /proc/keys)"
                ),
                "a restored key would never expire; remove its timeout (keyctl timeout KEY 0) \
                 before the dump",
            ));
        }
    }
    Ok(SessionKeyring {
        label,
        serial,
        uid: ring.uid,
        gid: ring.gid,
        perm: ring.perm,
        description: ring.description,
        keys,
    })
}

/// The keys the engine may view that expire, by serial, with their time left as
/// `/proc/keys` shows it (`59m`, `3d`, ...; `perm` for one that does not expire).
fn expiries() -> Result<std::collections::HashMap<i32, String>, DumpError> {
    match std::fs::read_to_string("/proc/keys") {
        Ok(text) => Ok(parse_expiries(&text)),
        // A kernel built without it (CONFIG_PROC_FS, or before 4.15 without
        // CONFIG_KEYS_DEBUG_PROC_KEYS) shows no expiry to anyone.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            tracing::debug!("no /proc/keys: the keys' expiries are not checked");
            Ok(std::collections::HashMap::new())
        }
        Err(source) => Err(DumpError::from(crate::procfs::ProcError::Io {
            path: "/proc/keys".into(),
            source,
        })),
    }
}

/// [`expiries`] of a `/proc/keys` text: `serial flags usage timeout perm uid gid type desc`.
fn parse_expiries(text: &str) -> std::collections::HashMap<i32, String> {
    text.lines()
        .filter_map(|line| {
            let mut f = line.split_whitespace();
            let serial = u32::from_str_radix(f.next()?, 16).ok()?;
            let timeout = f.nth(2)?;
            (timeout != "perm")
                .then(|| (i32::from_ne_bytes(serial.to_ne_bytes()), timeout.to_owned()))
        })
        .collect()
}

/// A `KEYCTL_DESCRIBE` text to be parsed.
struct Text(String);

impl Text {
    fn and_then_parse(self) -> Result<Described, String> {
        let mut parts = self.0.splitn(5, ';');
        let mut next = || parts.next().ok_or_else(|| self.0.clone());
        let kind = next()?.to_string();
        let uid = next()?.parse().map_err(|_| self.0.clone())?;
        let gid = next()?.parse().map_err(|_| self.0.clone())?;
        let perm = u32::from_str_radix(next()?, 16).map_err(|_| self.0.clone())?;
        let description = next()?.to_string();
        Ok(Described {
            kind,
            uid,
            gid,
            perm,
            description,
        })
    }
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
        Ok(d) => d.0,
        Err(e) => format!("which the engine could not describe: {}", chain(&e)),
    };
    DumpError::Keyring {
        pid,
        what: format!("{what}, keyring {serial} ({described})"),
        hint: "a restored process has no thread or process keyring, and its threads share \
               its session keyring",
    }
}

/// `KEYCTL_DESCRIBE` of `serial` in the process: `type;uid;gid;perm;description`.
fn describe(remote: &mut Remote, scratch: Scratch, serial: i32) -> Result<Text, SysError> {
    let at = (scratch.addr, DESCRIBE_MAX.min(scratch.len));
    let buf = remote_keyctl_buf(
        remote,
        "keyctl(KEYCTL_DESCRIBE)",
        KEYCTL_DESCRIBE,
        serial,
        at,
    )?;
    Ok(Text(keyctl_text(&buf)))
}

/// `KEYCTL_GET_SECURITY` of `serial` in the process: its label, empty without an LSM that
/// labels keys.
fn label(remote: &mut Remote, scratch: Scratch, serial: i32) -> Result<String, SysError> {
    let at = (scratch.addr, DESCRIBE_MAX.min(scratch.len));
    let name = "keyctl(KEYCTL_GET_SECURITY)";
    let buf = remote_keyctl_buf(remote, name, KEYCTL_GET_SECURITY, serial, at)?;
    Ok(keyctl_text(&buf))
}

/// `KEYCTL_READ` of `serial` in the process: a key's payload, a keyring's serials; an error
/// when it does not fit the scratch area.
fn read_payload(remote: &mut Remote, scratch: Scratch, serial: i32) -> Result<Vec<u8>, SysError> {
    let at = (scratch.addr, (KEY_PAYLOAD_MAX as u64).min(scratch.len));
    remote_keyctl_buf(remote, "keyctl(KEYCTL_READ)", KEYCTL_READ, serial, at)
}

/// `e` with its sources, as the refusal names it.
fn chain(e: &SysError) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(&format!(": {s}"));
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{parse_expiries, Text};

    #[test]
    fn a_description_keeps_its_semicolons_and_perm_is_hex() {
        let d = Text("user;4242;4343;3f010000;a;b".into())
            .and_then_parse()
            .expect("parses");
        assert_eq!(
            (
                d.kind.as_str(),
                d.uid,
                d.gid,
                d.perm,
                d.description.as_str()
            ),
            ("user", 4242, 4343, 0x3f01_0000, "a;b")
        );
    }

    #[test]
    fn only_keys_that_expire_are_listed() {
        let text =
            "03d47a34 I------     1 perm 1f030000     0     0 keyring   .dns_resolver: empty\n\
                    1a2b3c4d I--Q---     1  59m 3f010000     0     0 user      crlab:t: 5\n";
        let e = parse_expiries(text);
        assert_eq!(e.len(), 1);
        assert_eq!(e.get(&0x1a2b_3c4d).map(String::as_str), Some("59m"));
    }

    #[test]
    fn a_short_or_garbled_description_is_an_error() {
        for bad in [
            "keyring;0;0;3f010000",
            "user;x;0;3f010000;d",
            "user;0;0;zz;d",
            "",
        ] {
            assert!(Text(bad.into()).and_then_parse().is_err(), "{bad}");
        }
    }
}
