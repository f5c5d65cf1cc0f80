//! A session keyring of its own, as systemd gives a service: joins a new session keyring
//! named as its first argument (`crlab-keyrings` without one) holding two `user` keys (`invocation_id`, 16 bytes, and
//! `crlab:second`, with its own permissions), then forks a child that shares it. Once
//! triggered, both check that their session keyring is still named so (not the engine's), holds
//! those keys with their payloads, permissions and SELinux labels, and that they share it (the child
//! writes its serial to `child-serial` and exits 0 when its own checks pass). Started as
//! another user, the keyring and keys are that user's.
//!
//! Announces `child-pid`.

use std::io;
use std::time::Duration;

use crlab_workloads::runtime::{Checks, Workload};
use crlab_workloads::sys;

/// `<linux/keyctl.h>`.
const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
const KEYCTL_SETPERM: libc::c_long = 5;
const KEYCTL_DESCRIBE: libc::c_long = 6;
const KEYCTL_READ: libc::c_long = 11;
const KEYCTL_GET_SECURITY: libc::c_long = 17;
const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;
/// The second key's permissions: possessor all, user view and read.
const SECOND_PERM: u32 = 0x3f03_0000;
const INVOCATION_ID: [u8; 16] = *b"0123456789abcdef";
const SECOND: &[u8] = b"second payload";

fn main() {
    let mut w = Workload::from_args("keyrings");
    let name = w
        .args()
        .first()
        .cloned()
        .unwrap_or_else(|| "crlab-keyrings".into());
    w.setup("joining a session keyring", set_up(&name));
    // As the kernel describes it (owner, permissions), to compare with after the restore.
    let ring = w.setup("describing the session keyring", session_serial());
    let before = w.setup("describing the session keyring", describe(ring));
    // Their SELinux labels (empty without SELinux): the runtime's restore must make each
    // under its own, not the runtime's.
    let labelled = w.setup("reading the keys' labels", labels(ring));
    let go = w.path("child-go");
    let serial_file = w.path("child-serial");
    let child = w.setup("fork", fork());
    if child == 0 {
        while !go.exists() {
            std::thread::sleep(Duration::from_millis(10));
        }
        let mut checks = Checks::new();
        check_keyring(&mut checks, &name, &before, &labelled);
        let serial = session_serial().unwrap_or(-1);
        let _ = std::fs::write(&serial_file, serial.to_string());
        for f in checks.into_failures() {
            eprintln!("keyrings child: {f}");
        }
        // SAFETY: _exit ends this process; nothing of the parent's is shared to flush.
        unsafe { libc::_exit(if serial_file.exists() { 0 } else { 1 }) };
    }
    w.announce("child-pid", child);
    let mut checks = w.wait();
    w.common_checks(&mut checks);
    check_keyring(&mut checks, &name, &before, &labelled);
    if let Some(()) = checks.io("starting the child's checks", std::fs::write(&go, "go")) {
        let mut status = 0;
        // SAFETY: waitpid writes the child's status into `status`.
        let r = unsafe { libc::waitpid(child, &mut status, 0) };
        checks.eq("waitpid of the child", child, r);
        checks.that(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            &format!("the child's checks pass (status {status:#x}, see its stderr)"),
        );
        let theirs = std::fs::read_to_string(&serial_file);
        if let Some(theirs) = checks.io("reading the child's serial", theirs) {
            checks.eq(
                "the child's session keyring (shared)",
                session_serial().unwrap_or(-2).to_string(),
                theirs,
            );
        }
    }
    w.finish(checks)
}

fn set_up(name: &str) -> io::Result<()> {
    let name = std::ffi::CString::new(name).map_err(io::Error::other)?;
    // SAFETY: KEYCTL_JOIN_SESSION_KEYRING reads the NUL-terminated name during the call.
    sys::check(unsafe {
        libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name.as_ptr())
    })?;
    add(c"invocation_id", &INVOCATION_ID)?;
    let second = add(c"crlab:second", SECOND)?;
    // SAFETY: KEYCTL_SETPERM takes integers only.
    sys::check(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_SETPERM,
            second,
            libc::c_long::from(SECOND_PERM),
        )
    })?;
    Ok(())
}

/// Adds a `user` key to the session keyring; returns its serial.
fn add(desc: &std::ffi::CStr, payload: &[u8]) -> io::Result<libc::c_long> {
    // SAFETY: add_key reads the NUL-terminated type and description and `payload` during the
    // call.
    sys::check(unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"user".as_ptr(),
            desc.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            KEY_SPEC_SESSION_KEYRING,
        )
    })
}

fn fork() -> io::Result<i32> {
    // SAFETY: the workload is single-threaded here; the child only sleeps, checks and exits.
    let pid = unsafe { libc::fork() };
    sys::check(pid.into()).map(|_| pid)
}

fn session_serial() -> io::Result<libc::c_long> {
    // SAFETY: KEYCTL_GET_KEYRING_ID takes integers only.
    sys::check(unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_SESSION_KEYRING,
            0 as libc::c_long,
        )
    })
}

/// `KEYCTL_DESCRIBE` or `KEYCTL_READ` of `key`.
fn keyctl_buf(cmd: libc::c_long, key: libc::c_long) -> io::Result<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    // SAFETY: the call writes at most `buf.len()` bytes into `buf`.
    let n = sys::check(unsafe {
        libc::syscall(libc::SYS_keyctl, cmd, key, buf.as_mut_ptr(), buf.len())
    })?;
    buf.truncate(usize::try_from(n).unwrap_or(0).min(4096));
    Ok(buf)
}

fn describe(key: libc::c_long) -> io::Result<String> {
    let b = keyctl_buf(KEYCTL_DESCRIBE, key)?;
    Ok(String::from_utf8_lossy(&b)
        .trim_end_matches('\0')
        .to_string())
}

/// The labels (`KEYCTL_GET_SECURITY`) of keyring `ring` and of its keys, in order.
fn labels(ring: libc::c_long) -> io::Result<Vec<String>> {
    let list = keyctl_buf(KEYCTL_READ, ring)?;
    let keys = list
        .chunks_exact(4)
        .map(|c| i32::from_ne_bytes(c.try_into().unwrap_or([0; 4])).into());
    std::iter::once(ring)
        .chain(keys)
        .map(|key| {
            let b = keyctl_buf(KEYCTL_GET_SECURITY, key)?;
            Ok(String::from_utf8_lossy(&b)
                .trim_end_matches('\0')
                .to_string())
        })
        .collect()
}

/// The session keyring is `name`, described as `before` (owner, permissions) and labelled as
/// `labelled` (it, then its keys), with both keys, payloads and permissions.
fn check_keyring(checks: &mut Checks, name: &str, before: &str, labelled: &[String]) {
    let Some(ring) = checks.io("the session keyring", session_serial()) else {
        return;
    };
    if let Some(now) = checks.io("reading the keys' labels", labels(ring)) {
        checks.eq(
            "the labels of the session keyring and its keys",
            labelled,
            now.as_slice(),
        );
    }
    // SAFETY: geteuid and getegid take nothing and cannot fail.
    let (uid, gid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if let Some(d) = checks.io("describing the session keyring", describe(ring)) {
        checks.that(
            d.starts_with(&format!("keyring;{uid};{gid};")) && d.ends_with(&format!(";{name}")),
            &format!("the session keyring is {name}, owned by {uid}:{gid} (found {d:?})"),
        );
        checks.eq("the session keyring", before, d.as_str());
    }
    let Some(list) = checks.io("listing the session keyring", keyctl_buf(KEYCTL_READ, ring)) else {
        return;
    };
    let keys: Vec<libc::c_long> = list
        .chunks_exact(4)
        .map(|c| i32::from_ne_bytes(c.try_into().unwrap_or([0; 4])).into())
        .collect();
    checks.eq("keys in the session keyring", 2, keys.len());
    let want: [(&str, &[u8], u32); 2] = [
        ("invocation_id", &INVOCATION_ID, 0x3f01_0000),
        ("crlab:second", SECOND, SECOND_PERM),
    ];
    for (key, (desc, payload, perm)) in keys.iter().zip(want) {
        if let Some(d) = checks.io("describing a key", describe(*key)) {
            checks.eq("a key", format!("user;{uid};{gid};{perm:08x};{desc}"), d);
        }
        if let Some(p) = checks.io("reading a key", keyctl_buf(KEYCTL_READ, *key)) {
            checks.eq(&format!("the payload of {desc}"), payload.to_vec(), p);
        }
    }
}
