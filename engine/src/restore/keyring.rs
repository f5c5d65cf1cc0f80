//! A process's session keyring, when the image records one (neither the dumping engine's nor
//! its user's default): joined by the process itself, still root and in the engine's
//! context, before its threads are created (they share its credentials' keyrings), then filled
//! with its `user` keys, each and the keyring made under its dumped SELinux label
//! (`attr/keycreate`) and given their owner and permissions, and checked against the image. The first
//! process of a keyring makes a new one; the others that shared it join that one by name and
//! check that they got it.

use super::context;
use super::error::StepContext;
use super::RestoreError;
use crate::image::schema::SessionKeyring;
use crate::selinux::{self, Relabel};
use crate::sys::{
    int_arg, keyctl_text, keyring_serials, remote_keyctl_buf, Remote, Scratch, SysError,
    KEYCTL_CHOWN, KEYCTL_DESCRIBE, KEYCTL_GET_KEYRING_ID, KEYCTL_GET_SECURITY,
    KEYCTL_JOIN_SESSION_KEYRING, KEYCTL_READ, KEYCTL_SETPERM, KEY_DESC_MAX, KEY_PAYLOAD_MAX,
    KEY_SPEC_SESSION_KEYRING,
};

/// Where in the scratch area the key type, description and payload go (and what is read
/// back), and the longest description and payload an image may hold (what a dump can read).
const TYPE_OFF: u64 = 0;
const DESC_OFF: u64 = 64;
const DESC_MAX: usize = KEY_DESC_MAX;
const DATA_OFF: u64 = 4224;
const DATA_MAX: usize = KEY_PAYLOAD_MAX;
// The restore's scratch area (four pages) holds the type, the description and the payload.
const _: () =
    assert!(DESC_OFF + DESC_MAX as u64 <= DATA_OFF && DATA_OFF + DATA_MAX as u64 <= 4 * 4096);
/// The name a `KEYCTL_JOIN_SESSION_KEYRING` without a name gives its new keyring.
const ANONYMOUS: &str = "_ses";

/// The session keyrings made so far: the dumped serial and the new one.
pub type Made = Vec<(i32, i32)>;

/// Gives process `pid` (its leader `remote`) the session keyring `ring` of its image.
pub fn join(
    remote: &mut Remote,
    scratch: Scratch,
    pid: i32,
    ring: Option<&SessionKeyring>,
    relabel: Relabel<'_>,
    made: &mut Made,
) -> Result<(), RestoreError> {
    let Some(ring) = ring else {
        return Ok(());
    };
    failpoint!(
        "restore.keyring",
        super::error::injected(pid, "the session keyring")
    );
    if ring.description.len() >= DESC_MAX
        || ring.description.contains('\0')
        || ring.keys.iter().any(|k| {
            k.description.len() >= DESC_MAX
                || k.description.contains('\0')
                || k.payload.len() > DATA_MAX
        })
    {
        return Err(RestoreError::Inconsistent(format!(
            "the session keyring of process {pid} has a description or key larger than a dump \
             records"
        )));
    }
    let what = "the session keyring";
    if let Some(&(_, new)) = made.iter().find(|(old, _)| *old == ring.serial) {
        let got = join_named(remote, scratch, Some(&ring.description)).step(pid, what)?;
        if got != new {
            return Err(RestoreError::Inconsistent(format!(
                "process {pid} joined keyring {got} named {:?} instead of {new}, the session \
                 keyring it shares with another process of the tree",
                ring.description
            )));
        }
        return Ok(());
    }
    // Made under its label, as each of its keys: the process is still in the engine's
    // context, whose own label a keyring would get otherwise.
    let mut labelled = String::new();
    label_next(remote, scratch, &mut labelled, relabel.of(&ring.label)).step(pid, LABEL)?;
    let named = (ring.description != ANONYMOUS).then_some(ring.description.as_str());
    let new = join_named(remote, scratch, named).step(pid, what)?;
    // A named join finds a keyring of that name the process may search: only an empty one
    // with the permissions the kernel gives a new one (which let no one but a possessor
    // search it, so no other join could have found it) is this process's new one.
    let held = read(remote, scratch, new).step(pid, what)?;
    let perm = describe(remote, scratch, new)
        .step(pid, what)?
        .split(';')
        .nth(3)
        .and_then(|p| u32::from_str_radix(p, 16).ok());
    if !held.is_empty() || (named.is_some() && perm != Some(NEW_NAMED_PERM)) {
        return Err(RestoreError::Inconsistent(format!(
            "process {pid} joined an existing keyring {new} named {:?} (it holds keys, or has \
             other permissions than a new one), not a new one; remove it (keyctl unlink) or \
             make it unsearchable before the restore",
            ring.description
        )));
    }
    for key in &ring.keys {
        label_next(remote, scratch, &mut labelled, relabel.of(&key.label)).step(pid, LABEL)?;
        put(remote, scratch, TYPE_OFF, b"user", true).step(pid, what)?;
        put(remote, scratch, DESC_OFF, key.description.as_bytes(), true).step(pid, what)?;
        put(remote, scratch, DATA_OFF, &key.payload, false).step(pid, what)?;
        let serial = remote
            .syscall(
                "add_key",
                libc::SYS_add_key,
                &[
                    scratch.addr + TYPE_OFF,
                    scratch.addr + DESC_OFF,
                    scratch.addr + DATA_OFF,
                    key.payload.len() as u64,
                    int_arg(KEY_SPEC_SESSION_KEYRING),
                ],
            )
            .step(pid, "a key of the session keyring")?;
        // A serial is positive; a negative one would name a special keyring.
        let serial = i32::try_from(serial)
            .ok()
            .filter(|s| *s > 0)
            .ok_or_else(|| {
                RestoreError::Inconsistent(format!(
                    "add_key gave process {pid} the key serial {serial}, which is not one"
                ))
            })?;
        own(remote, serial, key.uid, key.gid, key.perm)
            .step(pid, "a key of the session keyring")?;
    }
    // Until every process sharing it has joined it, the keyring is searchable by its owner,
    // root, without possessing it (a named join finds a keyring only so), and by no one else;
    // a keyring of that name made earlier that root may search would be found first, which
    // the sharers' check of its serial sees.
    keyctl(
        remote,
        "keyctl(KEYCTL_SETPERM)",
        KEYCTL_SETPERM,
        &[int_arg(new), u64::from(JOINABLE)],
    )
    .step(pid, what)?;
    label_next(remote, scratch, &mut labelled, "").step(pid, LABEL)?;
    made.push((ring.serial, new));
    Ok(())
}

/// Joins the session keyring named `name` (made if no keyring of that name may be found), a
/// new anonymous one for none; returns its serial.
fn join_named(remote: &mut Remote, scratch: Scratch, name: Option<&str>) -> Result<i32, SysError> {
    let name = match name {
        Some(n) => put(remote, scratch, DESC_OFF, n.as_bytes(), true)?,
        None => 0,
    };
    keyctl(
        remote,
        "keyctl(KEYCTL_JOIN_SESSION_KEYRING)",
        KEYCTL_JOIN_SESSION_KEYRING,
        &[name],
    )
}

/// What a failure to label a keyring or key is a failure of.
const LABEL: &str = "the label of the session keyring or a key (attr/keycreate)";

/// Sets the process's `attr/keycreate` to `label` (empty: its own context) when SELinux is on
/// and it is not already that (`current`, what was written last).
fn label_next(
    remote: &mut Remote,
    scratch: Scratch,
    current: &mut String,
    label: &str,
) -> Result<(), SysError> {
    if label == current.as_str() || !selinux::enabled() {
        return Ok(());
    }
    context::write_attr(remote, scratch, "keycreate", label)?;
    label.clone_into(current);
    Ok(())
}

/// What `KEYCTL_JOIN_SESSION_KEYRING` gives a keyring it makes by name: possessor
/// everything, owner view, read and link (not search).
const NEW_NAMED_PERM: u32 = 0x3f13_0000;

/// Possessor: everything; owner: view and search.
const JOINABLE: u32 = 0x3f09_0000;

/// Once every process has joined its session keyring, each still root and in the engine's
/// context (a keyring's owner may change only with `CAP_SYS_ADMIN`, which a confined context
/// may lack): checks process `pid` (leader `remote`) got the keyring made for it, and gives
/// each keyring the owner and permissions of the image in the first process that has it
/// (`owned` holds those given them).
pub fn finish(
    remote: &mut Remote,
    pid: i32,
    ring: Option<&SessionKeyring>,
    made: &Made,
    owned: &mut Vec<i32>,
) -> Result<(), RestoreError> {
    let Some(ring) = ring else {
        return Ok(());
    };
    let what = "the session keyring";
    if let Some(&(_, new)) = made.iter().find(|(old, _)| *old == ring.serial) {
        let serial = keyctl(
            remote,
            "keyctl(KEYCTL_GET_KEYRING_ID)",
            KEYCTL_GET_KEYRING_ID,
            &[int_arg(KEY_SPEC_SESSION_KEYRING), 0],
        )
        .step(pid, what)?;
        if serial != new {
            return Err(RestoreError::Inconsistent(format!(
                "process {pid} has session keyring {serial}, not {new}, the one the restore made"
            )));
        }
        if !owned.contains(&new) {
            own(remote, new, ring.uid, ring.gid, ring.perm).step(pid, what)?;
            owned.push(new);
        }
    }
    Ok(())
}

/// Gives key `serial` its owner, then its permissions (last: they may take the caller's
/// right to change it).
fn own(remote: &mut Remote, serial: i32, uid: u32, gid: u32, perm: u32) -> Result<(), SysError> {
    keyctl(
        remote,
        "keyctl(KEYCTL_CHOWN)",
        KEYCTL_CHOWN,
        &[int_arg(serial), u64::from(uid), u64::from(gid)],
    )?;
    keyctl(
        remote,
        "keyctl(KEYCTL_SETPERM)",
        KEYCTL_SETPERM,
        &[int_arg(serial), u64::from(perm)],
    )?;
    Ok(())
}

/// Checks that the process's session keyring and its keys are those of the image (none
/// recorded: nothing to check).
pub fn verify(
    remote: &mut Remote,
    scratch: Scratch,
    pid: i32,
    ring: Option<&SessionKeyring>,
    relabel: Relabel<'_>,
) -> Result<(), RestoreError> {
    let Some(ring) = ring else {
        return Ok(());
    };
    let what = "checking the session keyring";
    let serial = keyctl(
        remote,
        "keyctl(KEYCTL_GET_KEYRING_ID)",
        KEYCTL_GET_KEYRING_ID,
        &[int_arg(KEY_SPEC_SESSION_KEYRING), 0],
    )
    .step(pid, what)?;
    let differs = |what: String| {
        RestoreError::Inconsistent(format!(
            "process {pid}'s session keyring differs from the image after the restore: {what}"
        ))
    };
    let want = format!(
        "keyring;{};{};{:08x};{}",
        ring.uid, ring.gid, ring.perm, ring.description
    );
    let got = describe(remote, scratch, serial).step(pid, what)?;
    if got != want {
        return Err(differs(format!("it is {got:?}, the image says {want:?}")));
    }
    same_label(
        remote,
        scratch,
        pid,
        serial,
        relabel.of(&ring.label),
        &differs,
    )?;
    let listed = read(remote, scratch, serial).step(pid, what)?;
    let serials = keyring_serials(&listed);
    if serials.len() != ring.keys.len() {
        return Err(differs(format!(
            "it holds {} keys, the image {}",
            serials.len(),
            ring.keys.len()
        )));
    }
    // Matched by description (unique per type in a keyring): the order KEYCTL_READ lists them
    // in is the keyring's internal one, not the order they were added in.
    let mut listed = Vec::with_capacity(serials.len());
    for key in &serials {
        listed.push((*key, describe(remote, scratch, *key).step(pid, what)?));
    }
    for want in &ring.keys {
        let d = format!(
            "user;{};{};{:08x};{}",
            want.uid, want.gid, want.perm, want.description
        );
        let Some(key) = listed.iter().find(|(_, got)| *got == d).map(|(k, _)| k) else {
            let found: Vec<&str> = listed.iter().map(|(_, g)| g.as_str()).collect();
            return Err(differs(format!(
                "no key is {d:?}, as the image says (found {found:?})"
            )));
        };
        same_label(
            remote,
            scratch,
            pid,
            *key,
            relabel.of(&want.label),
            &differs,
        )?;
        let payload = read(remote, scratch, *key).step(pid, what)?;
        if payload != want.payload {
            return Err(differs(format!(
                "key {:?} holds another payload than the image's",
                want.description
            )));
        }
    }
    Ok(())
}

/// Checks that key `serial` has the label `want` (when the image records one and SELinux is
/// on).
fn same_label(
    remote: &mut Remote,
    scratch: Scratch,
    pid: i32,
    serial: i32,
    want: &str,
    differs: &dyn Fn(String) -> RestoreError,
) -> Result<(), RestoreError> {
    if want.is_empty() || !selinux::enabled() {
        return Ok(());
    }
    let at = (scratch.addr + DATA_OFF, DATA_MAX as u64);
    let name = "keyctl(KEYCTL_GET_SECURITY)";
    let got = remote_keyctl_buf(remote, name, KEYCTL_GET_SECURITY, serial, at)
        .step(pid, "checking the session keyring's labels")?;
    let got = keyctl_text(&got);
    if got != want {
        return Err(differs(format!(
            "key {serial} is labelled {got:?}, the image says {want:?}"
        )));
    }
    Ok(())
}

/// Writes `bytes` (NUL-terminated when `cstr`) at `off` of the scratch area; returns their
/// address in the task.
fn put(
    remote: &Remote,
    scratch: Scratch,
    off: u64,
    bytes: &[u8],
    cstr: bool,
) -> Result<u64, SysError> {
    let mut b = bytes.to_vec();
    if cstr {
        b.push(0);
    }
    remote.write_mem(scratch.addr + off, &b)?;
    Ok(scratch.addr + off)
}

fn keyctl(
    remote: &mut Remote,
    name: &'static str,
    cmd: u64,
    args: &[u64],
) -> Result<i32, SysError> {
    let mut a = vec![cmd];
    a.extend_from_slice(args);
    let r = remote.syscall(name, libc::SYS_keyctl, &a)?;
    Ok(i32::try_from(r).unwrap_or(-1))
}

/// `KEYCTL_DESCRIBE` of `serial` in the process.
fn describe(remote: &mut Remote, scratch: Scratch, serial: i32) -> Result<String, SysError> {
    let at = (scratch.addr + DATA_OFF, DATA_MAX as u64);
    let buf = remote_keyctl_buf(
        remote,
        "keyctl(KEYCTL_DESCRIBE)",
        KEYCTL_DESCRIBE,
        serial,
        at,
    )?;
    Ok(keyctl_text(&buf))
}

/// `KEYCTL_READ` of `serial` in the process (at most what a dump records).
fn read(remote: &mut Remote, scratch: Scratch, serial: i32) -> Result<Vec<u8>, SysError> {
    let at = (scratch.addr + DATA_OFF, DATA_MAX as u64);
    remote_keyctl_buf(remote, "keyctl(KEYCTL_READ)", KEYCTL_READ, serial, at)
}
