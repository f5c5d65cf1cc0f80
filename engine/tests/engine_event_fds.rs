//! The event descriptors a service loop holds, restored exactly or refused: the `event_fds`
//! workload sets up eventfds, timerfds, a signalfd or an epoll instance watching them, is
//! dumped (and killed), restored under its pid, and checks each piece itself (counters, modes,
//! times, unread expirations, masks, registrations and what `epoll_wait` reports; an inotify
//! instance's watches, numbers and the events they report). A restore
//! that dropped any of it fails that check. What stays refused is refused at dump, naming the
//! descriptor and the process, the workload still running and passing afterwards.
//!
//! Needs root (the tests fail, not skip, without it).

mod support;

use rstest::rstest;

use support::protocol::WaitMode;
use support::workload::{assert_refusal_names, Workload};

#[rstest]
#[case::eventfd("eventfd")]
#[case::timerfd("timerfd")]
#[case::signalfd("signalfd")]
#[case::epoll("epoll")]
#[case::memfd("memfd")]
#[case::inotify("inotify")]
fn event_descriptors_are_restored_exactly(#[case] kind: &str) {
    let mut w = Workload::start("event_fds", WaitMode::Nanosleep, &[kind]);
    w.wait_ready();
    w.wait_in_wait_syscall();
    w.dump_ok(&[]);
    w.reap_dumped_original();
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

/// What the engine does not restore is refused by name, with the descriptor and the process;
/// the workload still holds it after the refusal and passes its checks.
#[rstest]
#[case::inotify_pending("refuse-inotify-pending", &["an inotify descriptor", "unread events"])]
#[case::inotify_deleted(
    "refuse-inotify-deleted",
    &["inotify instance", "watch 1 (inode", "no path leads to"]
)]
#[case::userfaultfd("refuse-userfaultfd", &["a userfaultfd"])]
#[case::timerfd_cancel_on_set("refuse-timerfd-cancel-on-set", &["TFD_TIMER_CANCEL_ON_SET"])]
#[case::epoll_closed("refuse-epoll-closed", &["epoll", "no longer open"])]
#[case::epoll_et_ready("refuse-epoll-et-ready", &["epoll", "EPOLLET"])]
#[case::epoll_oneshot_fired("refuse-epoll-oneshot-fired", &["epoll", "EPOLLONESHOT"])]
fn dump_refuses_event_descriptors_it_does_not_restore(#[case] kind: &str, #[case] words: &[&str]) {
    let mut w = Workload::start("event_fds", WaitMode::Nanosleep, &[kind]);
    let ready = w.wait_ready();
    let holder = ready
        .get("refused-pid")
        .expect("event_fds announces the pid holding the state")
        .to_owned();
    let fd = ready
        .get("refused-fd")
        .expect("event_fds announces the refused descriptor")
        .to_owned();
    w.wait_in_wait_syscall();
    let stderr = w.dump_refused(kind);
    w.trigger();
    w.expect_ok();
    // The wording last, so a wrong message does not hide whether the workload came through.
    assert!(
        !stderr.contains("anonymous-inode"),
        "the refusal must name the kind, not the generic anonymous-inode text: {stderr}"
    );
    assert_refusal_names(&stderr, words, &[("process", &holder), ("fd", &fd)]);
}

/// A watched file replaced by another between dump and restore (same path, another inode):
/// the restore refuses to add the watch to the new file, names the path and the watch, and
/// leaves no process behind.
#[test]
fn restore_refuses_an_inotify_watch_whose_path_names_another_file() {
    let mut w = Workload::start("event_fds", WaitMode::Nanosleep, &["inotify"]);
    w.wait_ready();
    w.wait_in_wait_syscall();
    w.dump_ok(&[]);
    w.reap_dumped_original();
    let file = w.state_dir().join("inotify-file");
    // Kept under another name, so that the new file cannot take its inode number.
    std::fs::rename(&file, file.with_extension("old")).expect("moving the watched file away");
    std::fs::write(&file, b"another file").expect("making another file at its path");
    let run = w.restore(&["--detach"]);
    let (ok, stderr) = (run.succeeded(), run.stderr());
    assert!(!ok, "the restore must fail: {stderr}");
    w.assert_gone();
    let path = file.to_str().expect("utf-8 path");
    assert!(
        stderr.contains(path) && stderr.contains("watch 3") && stderr.contains("now names inode"),
        "the failure must name the path and the watch: {stderr}"
    );
}
