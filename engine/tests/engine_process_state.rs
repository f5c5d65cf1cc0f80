//! Per-process and per-thread kernel state that the engine restores exactly: each kind is set
//! by the `process_state` workload, which is dumped (and killed), restored under its pid, and
//! then checks that the state is what it was before the dump. A restore that dropped any of it
//! would give the workload the engine's own (default scheduling, no timers, full
//! capabilities, ...) and fail its check.
//!
//! Needs root (the tests fail, not skip, without it); a case that needs more says so in its
//! name.

mod support;

use rstest::rstest;

use support::protocol::WaitMode;
use support::workload::{reap_dumped_child, Workload};

#[rstest]
#[case::sched_batch("sched-batch")]
#[case::sched_rr("sched-rr")]
#[case::oom_score_adj("oom-score-adj")]
#[case::ioprio("ioprio")]
#[case::thp_disable("thp-disable")]
#[case::timerslack("timerslack")]
#[case::subreaper("subreaper")]
#[case::no_new_privs("no-new-privs")]
#[case::pdeathsig_child("pdeathsig-child")]
#[case::itimer("itimer")]
#[case::posix_timer_needs_linux_6_16("posix-timer")]
#[case::membarrier("membarrier")]
#[case::coredump_filter("coredump-filter")]
#[case::mce_kill("mce-kill")]
#[case::tsc_sigsegv("tsc-sigsegv")]
#[case::mdwe_needs_linux_6_3("mdwe")]
#[case::mlock("mlock")]
#[case::mlock_user("mlock-user")]
#[case::madvise("madvise")]
#[case::affinity_needs_two_cpus("affinity")]
#[case::file_maywrite("file-maywrite")]
#[case::thread_state("thread-state")]
#[case::caps("caps")]
#[case::caps_user("caps-user")]
#[case::deleted_file("deleted-file")]
#[case::deleted_mapping("deleted-mapping")]
fn process_state_is_restored_exactly(#[case] kind: &str) {
    let mut w = Workload::start("process_state", WaitMode::Nanosleep, &[kind]);
    let child: Option<i32> = w
        .wait_ready()
        .get("child-pid")
        .map(|p| p.parse().expect("child-pid is a pid"));
    w.wait_in_wait_syscall();
    w.dump_ok(&[]);
    w.reap_dumped_original();
    if let Some(child) = child {
        reap_dumped_child(child);
    }
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}
