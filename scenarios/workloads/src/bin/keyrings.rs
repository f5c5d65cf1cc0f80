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
use crlab_workloads::sys::{
    self,
    keys::{
        self, KEYCTL_DESCRIBE, KEYCTL_GET_KEYRING_ID, KEYCTL_GET_SECURITY, KEYCTL_READ,
        KEYCTL_SETPERM, KEY_SPEC_SESSION_KEYRING,
    },
};

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
        let failures = checks.into_failures();
        for f in &failures {
            eprintln!("keyrings child: {f}");
        }
        let ok = failures.is_empty() && serial_file.exists();
        // SAFETY: _exit ends this process; nothing of the parent's is shared to flush.
        unsafe { libc::_exit(if ok { 0 } else { 1 }) };
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
    keys::join_session_keyring(Some(&name))?;
    keys::add_key(
        c"user",
        c"invocation_id",
        &INVOCATION_ID,
        KEY_SPEC_SESSION_KEYRING,
    )?;
    let second = keys::add_key(c"user", c"crlab:second", SECOND, KEY_SPEC_SESSION_KEYRING)?;
    keys::keyctl(KEYCTL_SETPERM, second, libc::c_long::from(SECOND_PERM))?;
    Ok(())
}

fn fork() -> io::Result<i32> {
    // SAFETY: the workload is single-threaded here; the child only sleeps, checks and exits.
    let pid = unsafe { libc::fork() };
    sys::check(pid.into()).map(|_| pid)
}

fn session_serial() -> io::Result<libc::c_long> {
    keys::keyctl(KEYCTL_GET_KEYRING_ID, KEY_SPEC_SESSION_KEYRING, 0)
}

fn describe(key: libc::c_long) -> io::Result<String> {
    keys::keyctl_text(KEYCTL_DESCRIBE, key)
}

/// The labels (`KEYCTL_GET_SECURITY`) of keyring `ring` and of its keys, in order.
fn labels(ring: libc::c_long) -> io::Result<Vec<String>> {
    let list = keys::keyctl_buf(KEYCTL_READ, ring)?;
    let keys = list
        .chunks_exact(4)
        .map(|c| i32::from_ne_bytes(c.try_into().unwrap_or([0; 4])).into());
    std::iter::once(ring)
        .chain(keys)
        .map(|key| keys::keyctl_text(KEYCTL_GET_SECURITY, key))
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
        // Made by this process, they carry its context, not that of whoever restored it.
        if std::path::Path::new("/sys/fs/selinux/enforce").exists() {
            let own = std::fs::read_to_string("/proc/thread-self/attr/current");
            if let Some(own) = checks.io("reading attr/current", own) {
                let own = own.trim_end_matches(['\0', '\n']);
                for l in &now {
                    checks.eq("a key's label (the process's own context)", own, l.as_str());
                }
            }
        }
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
    let Some(list) = checks.io(
        "listing the session keyring",
        keys::keyctl_buf(KEYCTL_READ, ring),
    ) else {
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
        if let Some(p) = checks.io("reading a key", keys::keyctl_buf(KEYCTL_READ, *key)) {
            checks.eq(&format!("the payload of {desc}"), payload.to_vec(), p);
        }
    }
}
