//! State that crlab does not restore is refused at dump time, by name and with the process
//! that holds it, before anything is killed: the workload (`refused`) and every process of its
//! tree go on running, untraced, and pass their own checks afterwards, the refused state still
//! in place.
//!
//! Needs root (the tests fail, not skip, without it).

mod support;

use rstest::rstest;

use support::process;
use support::protocol::WaitMode;
use support::workload::{mentions_number, Workload};

/// Dumps `w`, asserts the dump was refused, left no complete-looking dump and named every one
/// of `words` and the pid `holder`; returns crlab's stderr.
fn assert_refused(w: &mut Workload, holder: i32, words: &[&str]) -> String {
    let stderr = w.dump_refused(&format!("{words:?}"));
    if holder != w.pid() {
        if let Some(why) = process::not_running_freely(holder) {
            panic!("after a refused dump, the member holding the state: {why}");
        }
    }
    stderr
}

fn assert_names(stderr: &str, holder: i32, words: &[&str]) {
    for word in words {
        assert!(
            stderr.contains(word),
            "the refusal must name {word:?}: {stderr}"
        );
    }
    assert!(
        mentions_number(stderr, &holder.to_string()),
        "the refusal must name the process holding the state, {holder}: {stderr}"
    );
}

/// Each kind of state `refused` can hold is refused, named with the pid holding it (and the
/// descriptor, for descriptors); the workload still holds it after the refusal and passes.
#[rstest]
#[case::flock("flock", &["flock lock", "file locks"])]
#[case::posix_lock("posix-lock", &["POSIX record lock"])]
#[case::ofd_lock("ofd-lock", &["OFD lock"])]
#[case::lease("lease", &["lease"])]
#[case::owner("owner", &["F_SETOWN"])]
#[case::setsig("setsig", &["F_SETSIG"])]
#[case::async_io("async", &["O_ASYNC"])]
#[case::memfd_mapping("memfd", &["a memfd mapping"])]
#[case::deleted_dir("deleted-dir", &["a deleted directory"])]
#[case::deleted_reused("deleted-reused", &["deleted file", "held-dir/held.bin", "now names another file", "would differ"])]
#[case::deleted_mapping_reused("deleted-mapping-reused", &["mapping", "deleted file", "mapped-held.bin", "now names another file"])]
#[case::deleted_large("deleted-large", &["deleted file", "large.bin", "larger than 64 MiB"])]
#[case::aio("aio", &["AIO ring", "io_setup"])]
#[case::deleted_dir_gone("deleted-dir-gone", &["deleted file", "held-dir/held.bin", "directory is gone", "would differ"])]
#[case::deleted_cwd("deleted-cwd", &["working directory", "deleted"])]
#[case::seccomp("seccomp", &["seccomp"])]
#[case::namespace("namespace", &["uts namespace"])]
#[case::loginuid("loginuid", &["audit login uid 1000"])]
#[case::pdeathsig_root("pdeathsig-root", &["parent-death signal", "PR_SET_PDEATHSIG"])]
#[case::clone_files("clone-files", &["descriptor table", "CLONE_FILES"])]
#[case::clone_fs("clone-fs", &["CLONE_FS"])]
#[case::chroot("chroot", &["chroot"])]
#[case::shared_moved("shared-moved", &["shared memory", "address"])]
#[case::logon_key("logon-key", &["key of type \"logon\"", "\"crlab:secret\"", "\"crlab-refused\"", "only user keys"])]
#[case::thread_keyring("thread-keyring", &["thread keyring"])]
#[case::process_keyring("process-keyring", &["has a process keyring"])]
#[case::key_timeout("key-timeout", &["\"crlab:expires\"", "that expires (timeout", "remove its timeout"])]
#[case::unsearchable_keyring("unsearchable-keyring", &["may not search its own session keyring", "EACCES", "a keyring made under the process's own label"])]
#[case::thread_session_keyring("thread-session-keyring", &["another session keyring than its leader's", ";crlab-thread"])]
#[case::nested_keyring("nested-keyring", &["key of type \"keyring\"", "\"crlab-nested\"", "\"crlab-refused\"", "only user keys"])]
#[case::pidfd("pidfd", &["a pidfd"])]
#[case::io_uring("io-uring", &["an io_uring instance"])]
#[case::perf_event("perf-event", &["a perf event descriptor"])]
#[case::fanotify("fanotify", &["a fanotify descriptor"])]
#[case::mount_api("fsopen", &["a mount API descriptor"])]
#[case::landlock("landlock", &["a Landlock ruleset"])]
#[case::bpf_map("bpf-map", &["a BPF object"])]
#[case::memfd_secret("memfd-secret", &["a memfd_secret descriptor"])]
#[case::sysv_shm("sysv-shm", &["System V shared memory"])]
#[case::securebits("securebits", &["securebits 0x1", "PR_SET_SECUREBITS"])]
#[case::sched_deadline("sched-deadline", &["SCHED_DEADLINE"])]
fn dump_refuses_state_it_does_not_restore(#[case] kind: &str, #[case] words: &[&str]) {
    let mut w = Workload::start("refused", WaitMode::Nanosleep, &[kind]);
    let ready = w.wait_ready();
    let holder: i32 = ready
        .get("refused-pid")
        .and_then(|p| p.parse().ok())
        .expect("refused announces the pid holding the state");
    let fd = ready.get("refused-fd").map(str::to_owned);
    w.wait_in_wait_syscall();
    let stderr = assert_refused(&mut w, holder, words);
    w.trigger();
    w.expect_ok();
    // The wording last, so a wrong message does not hide whether the workload came through.
    assert_names(&stderr, holder, words);
    // Named as what it is: a memfd, a directory or an AIO ring is no "deleted file".
    if matches!(kind, "memfd" | "deleted-dir" | "aio") {
        assert!(
            !stderr.contains("deleted file"),
            "a {kind} must not be called a deleted file: {stderr}"
        );
    }
    if let Some(fd) = fd {
        assert!(
            mentions_number(&stderr, &fd),
            "the refusal must name fd {fd}: {stderr}"
        );
    }
}

/// Session and group layouts no restore can rebuild (`sessions`): a group whose leader ended
/// (its member joined it, then the leader exited), a session whose leader ended (its member
/// reparented to the subreaper root). Refused at dump, naming the member and the group or
/// session; the tree goes on running and passes its checks.
#[rstest]
#[case::group_whose_leader_is_gone("group-gone", "leader of group")]
#[case::session_whose_leader_is_gone("session-gone", "leader of session")]
fn dump_refuses_a_layout_it_cannot_rebuild(#[case] layout: &str, #[case] words: &str) {
    let mut w = Workload::start("sessions", WaitMode::Nanosleep, &[layout]);
    let ready = w.wait_ready();
    let holder: i32 = ready
        .get("refused-pid")
        .and_then(|p| p.parse().ok())
        .expect("sessions announces the member holding the layout");
    w.wait_in_wait_syscall();
    let stderr = assert_refused(&mut w, holder, &[words]);
    w.trigger();
    w.expect_ok();
    assert_names(&stderr, holder, &[words, "not part of the dump"]);
}

/// A stopped process (SIGSTOP) is dumped now (`engine_stopped`); one whose dump is refused
/// for another reason (a flock lock) is left as it was: every thread stopped, untraced, the
/// lock held; continued, it passes its checks.
#[test]
fn a_refused_dump_leaves_a_stopped_process_stopped() {
    let mut w = Workload::start("refused", WaitMode::Nanosleep, &["flock"]);
    w.wait_ready();
    w.wait_in_wait_syscall();
    let pid = w.pid();
    send(pid, libc::SIGSTOP);
    let stopped = || {
        process::status_field(pid, "State").as_deref() == Some("T (stopped)")
            && process::status_field(pid, "TracerPid").as_deref() == Some("0")
    };
    process::wait_until(
        support::workload::READY_TIMEOUT,
        format!("pid {pid} to stop"),
        stopped,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let run = w.dump(&[]);
    let (ok, stderr) = (run.succeeded(), run.stderr());
    assert!(!ok, "crlab dump must refuse the flock lock");
    for tid in process::task_tids(pid) {
        assert_eq!(
            process::task_status(pid, tid, "State").as_deref(),
            Some("T (stopped)"),
            "a refused dump leaves every thread of a stopped process stopped (thread {tid})"
        );
        assert_eq!(
            process::task_status(pid, tid, "TracerPid").as_deref(),
            Some("0"),
            "a refused dump leaves the process untraced (thread {tid})"
        );
    }
    send(pid, libc::SIGCONT);
    process::wait_until(
        support::workload::READY_TIMEOUT,
        format!("pid {pid} to run again"),
        || process::not_running_freely(pid).is_none(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    w.assert_running("a refused dump and SIGCONT");
    w.trigger();
    w.expect_ok();
    assert!(stderr.contains("flock lock"), "{stderr}");
    assert!(mentions_number(&stderr, &pid.to_string()), "{stderr}");
}

/// A process held in a tracing stop by another tracer (here the test, as a debugger would) is
/// refused before the dump touches it, by name; let go, it runs and passes its checks.
#[test]
fn dump_refuses_a_process_another_tracer_holds() {
    let mut w = Workload::start("idle", WaitMode::Nanosleep, &[]);
    w.wait_ready();
    w.wait_in_wait_syscall();
    let pid = w.pid();
    // SAFETY: ptrace requests with integer arguments on our own child, the workload.
    let seized = unsafe {
        libc::ptrace(libc::PTRACE_SEIZE, pid, 0, 0) == 0
            && libc::ptrace(libc::PTRACE_INTERRUPT, pid, 0, 0) == 0
    };
    assert!(
        seized,
        "seizing the workload: {}",
        std::io::Error::last_os_error()
    );
    let mut status = 0;
    // SAFETY: waits for our own child's stop; `status` is writable.
    let got = unsafe { libc::waitpid(pid, &mut status, libc::__WALL) };
    assert_eq!(got, pid, "the workload's interrupt stop");
    assert_eq!(
        process::status_field(pid, "State").as_deref(),
        Some("t (tracing stop)")
    );
    let run = w.dump(&[]);
    let (ok, stderr) = (run.succeeded(), run.stderr());
    // SAFETY: detaches our own tracee, stopped.
    let detached = unsafe { libc::ptrace(libc::PTRACE_DETACH, pid, 0, 0) };
    assert_eq!(detached, 0, "{}", std::io::Error::last_os_error());
    assert!(!ok, "crlab dump must refuse a process another tracer holds");
    assert!(
        !w.images_dir().join("inventory.img").exists(),
        "a refused dump must not leave a complete-looking dump (inventory.img)"
    );
    process::wait_until(
        support::workload::READY_TIMEOUT,
        format!("pid {pid} to run again"),
        || process::not_running_freely(pid).is_none(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    w.assert_running("a refused dump");
    w.trigger();
    w.expect_ok();
    assert!(stderr.contains("tracing stop"), "{stderr}");
    assert!(mentions_number(&stderr, &pid.to_string()), "{stderr}");
}

fn send(pid: i32, sig: i32) {
    // SAFETY: kill takes only integers; `pid` is the test's own workload.
    let ret = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        ret,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}
