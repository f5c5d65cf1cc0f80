//! A small containerised service checkpointed as it runs: the `service` workload (a listening
//! Unix socket with a client and the connection it accepted, a request queued on it, an epoll
//! loop over them with an eventfd and a timerfd, four worker threads blocked on a job pipe) is
//! dumped (and killed), restored under its pid, and must then answer the queued request and a
//! new client through its loop, count the replies on its eventfd, see its timer tick, and find
//! every socket's name and label as they were.
//!
//! Needs root (the tests fail, not skip, without it).

mod support;

use rstest::rstest;

use support::protocol::WaitMode;
use support::workload::Workload;

#[rstest]
#[case::nanosleep(WaitMode::Nanosleep)]
#[case::sigsuspend(WaitMode::Sigsuspend)]
fn a_service_answers_its_clients_after_restore(#[case] mode: WaitMode) {
    let mut w = Workload::start("service", mode, &[]);
    w.wait_ready();
    w.wait_in_wait_syscall();
    w.dump_ok(&[]);
    w.reap_dumped_original();
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

/// `--leave-running`: the dumped service goes on serving, its socket still its own.
#[test]
fn a_service_left_running_still_answers() {
    let mut w = Workload::start("service", WaitMode::Nanosleep, &[]);
    w.wait_ready();
    w.wait_in_wait_syscall();
    w.dump_ok(&["--leave-running"]);
    w.trigger();
    w.expect_ok();
}
