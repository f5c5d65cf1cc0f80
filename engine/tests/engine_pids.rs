//! The pids a restore needs: held by a zombie of the dumped tree (killed by the dump, not yet
//! reaped), they are waited for, within a bound that the error states when it runs out; held
//! by a live process, the restore fails at once, naming the process.
//!
//! Needs root, as every end-to-end test of the engine. The test process is the workloads'
//! parent (and subreaper), so it decides when a dumped workload's zombie is reaped.

mod support;

use std::ffi::OsString;
use std::time::{Duration, Instant};

use support::crlab;
use support::process::{self, Exit, Proc};
use support::protocol::{self, WaitMode};
use support::workload::{Workload, RESULT_TIMEOUT};

/// Dumps `w` (which kills it) and waits until its pid is held by its zombie, unreaped.
fn dump_and_leave_a_zombie(w: &mut Workload) {
    w.dump_ok(&[]);
    let pid = w.pid();
    process::wait_until(
        Duration::from_secs(20),
        format_args!("{pid} to be a zombie"),
        || process::status_field(pid, "State").is_some_and(|s| s.starts_with('Z')),
    )
    .unwrap_or_else(|e| panic!("{e}"));
}

fn restore_args(w: &Workload, extra: &[&str]) -> Vec<OsString> {
    let mut args: Vec<OsString> = vec!["-v".into(), "restore".into()];
    args.extend(extra.iter().map(OsString::from));
    args.extend([
        "--detach".into(),
        "--pidfile".into(),
        w.pidfile().into(),
        "--images-dir".into(),
        w.images_dir().into(),
    ]);
    args
}

/// A restore started while the dumped workload's zombie holds its pid waits (and says so at
/// `-v`), and goes on as soon as the zombie is reaped: the restored workload passes its check.
#[test]
fn restore_waits_for_a_pid_held_by_a_zombie() {
    let mut w = Workload::start("idle", WaitMode::Nanosleep, &[]);
    w.wait_ready();
    dump_and_leave_a_zombie(&mut w);
    let pid = w.pid();
    let args = restore_args(&w, &[]);
    let (mut run, mut crlab_proc) = crlab::spawn(&args, w.scratch_dir(), "crlab-restore-waits");
    let waiting = process::wait_until(
        Duration::from_secs(20),
        "crlab restore to say it waits for the zombie's pid",
        || crlab_proc.has_ended() || run.stderr().contains(&format!("waiting for pid {pid}")),
    );
    let ended_early = crlab_proc.exit();
    if waiting.is_err() || ended_early.is_some() {
        run.exit = crlab_proc.exit();
        w.record(run);
        panic!("{waiting:?}; crlab ended early: {ended_early:?}");
    }
    w.reap_dumped_original();
    run.exit = crlab_proc
        .reap_within(crlab::CRLAB_TIMEOUT, "crlab restore")
        .ok();
    let ok = run.succeeded();
    w.record(run);
    // Owned before anything can fail: a restored process is killed and reaped on a panic.
    let mut restored = Proc::adopt(pid);
    assert!(ok, "the restore goes on once the pid is free");
    if let Some(why) = process::not_running_freely(pid) {
        panic!("after the restore, {why}");
    }
    w.trigger();
    let exit = restored
        .reap_within(RESULT_TIMEOUT, "the restored workload")
        .unwrap_or_else(|e| panic!("{e}"));
    let result = std::fs::read_to_string(w.state_dir().join(protocol::RESULT)).ok();
    assert_eq!(result.as_deref(), Some(protocol::RESULT_OK), "{exit}");
    assert_eq!(exit, Exit::Code(0));
}

/// A zombie that nobody reaps within `--pid-wait` fails the restore, naming the pid, the
/// zombie's parent (this test) and the time waited; nothing is created, and once the zombie is
/// reaped the same dump restores.
#[test]
fn restore_gives_up_on_a_zombie_never_reaped() {
    let mut w = Workload::start("idle", WaitMode::Nanosleep, &[]);
    w.wait_ready();
    dump_and_leave_a_zombie(&mut w);
    let pid = w.pid();
    let started = Instant::now();
    let args = restore_args(&w, &["--pid-wait", "0.5"]);
    let run = w.crlab(&args);
    let (exit, err) = (run.exit, run.stderr());
    let took = started.elapsed();
    assert_eq!(exit, Some(Exit::Code(1)), "{err}");
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    assert!(
        err.contains(&format!(
            "pid {pid} is still held by a zombie after waiting 500ms: its parent {me} has not \
             reaped it"
        )),
        "{err}"
    );
    assert!(err.contains("--pid-wait"), "names the flag: {err}");
    assert!(
        took >= Duration::from_millis(500),
        "waited the bound: {took:?}"
    );
    assert_eq!(
        process::status_field(pid, "State").map(|s| s.starts_with('Z')),
        Some(true),
        "the zombie is untouched"
    );
    w.reap_dumped_original();
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

/// A pid held by a live process fails at once, naming the pid and the process (its name, its
/// executable and its parent), and leaves the process alone.
#[test]
fn restore_names_the_live_process_holding_a_pid() {
    let mut w = Workload::start("idle", WaitMode::Nanosleep, &[]);
    w.wait_ready();
    w.dump_ok(&["--leave-running"]);
    let pid = w.pid();
    let started = Instant::now();
    let args = restore_args(&w, &[]);
    let run = w.crlab(&args);
    let (exit, err) = (run.exit, run.stderr());
    assert_eq!(exit, Some(Exit::Code(1)), "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no wait for a live holder"
    );
    let exe = support::binaries::workload("idle");
    // SAFETY: getpid cannot fail.
    let me = unsafe { libc::getpid() };
    // Its state is S or R, whichever it was in at that moment.
    let named = format!(
        "pid {pid} is in use by process {pid} (idle, {}, state ",
        exe.display()
    );
    assert!(err.contains(&named), "{err}");
    assert!(err.contains(&format!(", parent {me})")), "{err}");
    w.assert_running("a refused restore");
    w.trigger();
    w.expect_ok();
}
