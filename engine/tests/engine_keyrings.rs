//! A process's session keyring, restored exactly: the `keyrings` workload joins a session
//! keyring of its own with two `user` keys (one like systemd's `invocation_id`) and a child
//! sharing it; after the dump (which kills them) and the restore, both check the keyring's
//! description, the keys, their payloads and permissions, and that they still share one
//! keyring. A restore that dropped it would leave them the engine's session keyring, and one
//! that made a keyring per process would fail the sharing check. A failure while making it
//! fails the restore and leaves nothing behind.
//!
//! Needs root (the tests fail, not skip, without it).

mod support;

use crlab::failpoint;
use support::process::{self, Exit, Proc};
use support::protocol::WaitMode;
use support::workload::{Identity, Workload, EXIT_TIMEOUT};

/// A user of no name, as which a workload starts.
const NOT_ROOT: Identity = Identity {
    uid: 4242,
    gid: 4343,
    groups: &[4343, 4444],
};

/// Dumps the workload and reaps the killed tree (the child too: it is ours, orphaned).
/// `name` is the keyring's, one per test: tests run at once, and a restore's named join must
/// not find another test's keyring.
fn dumped(name: &str, ids: Option<Identity>) -> (Workload, i32) {
    let mut w = match ids {
        Some(ids) => Workload::start_as("keyrings", WaitMode::Nanosleep, &[name], ids),
        None => Workload::start("keyrings", WaitMode::Nanosleep, &[name]),
    };
    let child: i32 = w
        .wait_ready()
        .get("child-pid")
        .and_then(|p| p.parse().ok())
        .expect("keyrings announces child-pid");
    w.wait_in_wait_syscall();
    w.dump_ok(&[]);
    w.reap_dumped_original();
    let exit = Proc::adopt(child)
        .reap_within(EXIT_TIMEOUT, "the dumped child")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(exit, Exit::Signal(_)),
        "the dumped child ended with {exit}"
    );
    (w, child)
}

#[test]
fn a_shared_session_keyring_is_restored_exactly() {
    let (mut w, _) = dumped("crlab-keyrings-shared", None);
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

/// Made by a user: the keyring and its keys are the user's again (the restore makes them as
/// root, then gives them their owner before the process's ids change).
#[test]
fn a_user_s_session_keyring_keeps_its_owner() {
    let (mut w, _) = dumped("crlab-keyrings-user", Some(NOT_ROOT));
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

#[test]
fn a_failure_making_the_keyring_fails_the_restore() {
    let (mut w, child) = dumped("crlab-keyrings-failpoint", None);
    let pid = w.pid();
    let pidfile = w.pidfile();
    let args = [
        "--detach",
        "--pidfile",
        pidfile.to_str().expect("utf-8 path"),
    ];
    let run = w.restore_with_env(&args, &[(failpoint::ENV, "restore.keyring")]);
    assert!(!run.succeeded(), "the restore must fail at restore.keyring");
    let stderr = run.stderr();
    assert!(
        stderr.contains("injected failure at restore.keyring"),
        "{stderr}"
    );
    process::wait_until(
        support::workload::READY_TIMEOUT,
        format!("pid {pid} to be gone after the failed restore"),
        || !std::path::Path::new(&format!("/proc/{pid}")).exists(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // The killed child, orphaned, is ours: its pid must be free for the next restore.
    Proc::adopt(child)
        .reap_within(EXIT_TIMEOUT, "the child of the failed restore")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(!pidfile.exists(), "a failed restore writes no pid file");
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

/// The dump failpoints only a recorded session keyring reaches (`engine_failpoints` runs on
/// workloads without one): a dump failing at either leaves the workload running with its
/// keyring, which it checks once triggered.
#[rstest::rstest]
#[case::describe("dump.remote.keyctl.keyctl_describe")]
#[case::read("dump.remote.keyctl.keyctl_read")]
#[case::label("dump.remote.keyctl.keyctl_get_security")]
fn a_dump_failing_while_reading_the_keyring_leaves_it_running(#[case] fp: &str) {
    let name = format!("crlab-keyrings-{}", fp.rsplit('.').next().unwrap_or("fp"));
    let mut w = Workload::start("keyrings", WaitMode::Nanosleep, &[&name]);
    w.wait_ready();
    w.wait_in_wait_syscall();
    let run = w.dump_with_env(&[], &[(failpoint::ENV, fp)]);
    assert!(!run.succeeded(), "the dump must fail at {fp}");
    let stderr = run.stderr();
    assert!(
        stderr.contains(&format!("injected failure at {fp}")),
        "{stderr}"
    );
    w.assert_running(&format!("a dump failed at {fp}"));
    w.trigger();
    w.expect_ok();
}

/// A keyring of the same name that root may search already exists (a decoy, in this test
/// process's process keyring, which the crlab it starts does not inherit): the restore's named
/// join would find it instead of making a new keyring, and the restore fails saying so; once
/// it is gone, the same images restore.
#[test]
fn a_join_finding_an_existing_keyring_fails_the_restore() {
    const KEYCTL_SETPERM: libc::c_long = 5;
    const KEYCTL_INVALIDATE: libc::c_long = 21;
    const KEY_SPEC_PROCESS_KEYRING: libc::c_long = -2;
    let (mut w, child) = dumped("crlab-keyrings-decoy", None);
    // SAFETY: add_key reads the NUL-terminated type and description; no payload.
    let decoy = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            c"keyring".as_ptr(),
            c"crlab-keyrings-decoy".as_ptr(),
            std::ptr::null::<u8>(),
            0usize,
            KEY_SPEC_PROCESS_KEYRING,
        )
    };
    assert!(decoy > 0, "add_key: {}", std::io::Error::last_os_error());
    // Possessor everything; owner view, read and search: a named join by root finds it.
    // SAFETY: keyctl(KEYCTL_SETPERM) takes integers only.
    let r = unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_SETPERM, decoy, 0x3f0b_0000_i64) };
    assert_eq!(r, 0, "setperm: {}", std::io::Error::last_os_error());
    let pid = w.pid();
    let pidfile = w.pidfile();
    let args = [
        "--detach",
        "--pidfile",
        pidfile.to_str().expect("utf-8 path"),
    ];
    let run = w.restore(&args);
    let (failed, stderr) = (!run.succeeded(), run.stderr());
    // SAFETY: keyctl(KEYCTL_INVALIDATE) takes integers only.
    unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_INVALIDATE, decoy) };
    assert!(failed, "the restore must fail on the decoy keyring");
    assert!(
        stderr.contains(&format!("joined an existing keyring {decoy}")),
        "{stderr}"
    );
    process::wait_until(
        support::workload::READY_TIMEOUT,
        format!("pid {pid} to be gone after the failed restore"),
        || !std::path::Path::new(&format!("/proc/{pid}")).exists(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // An invalidated key is collected later, and a named join may still find it until then.
    let listed = format!("{decoy:08x} ");
    process::wait_until(
        support::workload::READY_TIMEOUT,
        format!("the decoy keyring {decoy} to be collected"),
        || {
            std::fs::read_to_string("/proc/keys")
                .map(|keys| !keys.lines().any(|l| l.starts_with(&listed)))
                .unwrap_or(false)
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let _ = Proc::adopt(child).reap_within(EXIT_TIMEOUT, "the child of the failed restore");
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}
