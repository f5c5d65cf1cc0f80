//! End-to-end tests of the engine: real workload processes (`crlab-workloads`) dumped and
//! restored through the `crlab` CLI, each checking its own state afterwards.
//!
//! Needs root (the tests fail, not skip, without it). Every process a test starts is killed
//! and reaped by a guard, and each test ends by checking the workload's pid is gone.

mod support;

use std::ffi::OsString;

use rstest::rstest;

use support::crlab;
use support::images;
use support::process::{self, Exit};
use support::protocol::{self, WaitMode};
use support::workload::{mentions_number, Workload};

/// What a test does between the workload's ready and its trigger.
#[derive(Clone, Copy, Debug)]
enum Route {
    /// Nothing: the workload's self-check and the harness on their own.
    WithoutDump,
    /// `crlab dump` (kills), reap the original, `crlab restore --detach` under the same pid.
    DumpThenRestore,
    /// `crlab dump --leave-running`: the original goes on.
    DumpLeaveRunning,
}

/// A dump may hold the touched pages, not the whole of the 256 MiB region `memory` maps.
const MAX_PAGES_BYTES: u64 = 64 << 20;

/// An argument every workload gets, which `memory` checks survives in argv.
const ARGV_MARKER: &str = "argv-survives-checkpoint";

#[rstest]
#[case::memory_nanosleep("memory", WaitMode::Nanosleep)]
#[case::memory_pipe_read("memory", WaitMode::PipeRead)]
#[case::memory_sigsuspend("memory", WaitMode::Sigsuspend)]
#[case::memory_spin("memory", WaitMode::Spin)]
#[case::registers_spin("registers", WaitMode::Spin)]
#[case::registers_nanosleep_asm("registers", WaitMode::NanosleepAsm)]
#[case::registers_nanosleep("registers", WaitMode::Nanosleep)]
#[case::registers_sigsuspend("registers", WaitMode::Sigsuspend)]
#[case::signals_sigsuspend("signals", WaitMode::Sigsuspend)]
#[case::signals_nanosleep("signals", WaitMode::Nanosleep)]
#[case::signals_pipe_read("signals", WaitMode::PipeRead)]
#[case::signals_nanosleep_asm("signals", WaitMode::NanosleepAsm)]
#[case::files_nanosleep("files", WaitMode::Nanosleep)]
#[case::files_pipe_read("files", WaitMode::PipeRead)]
#[case::files_sigsuspend("files", WaitMode::Sigsuspend)]
#[case::idle_spin("idle", WaitMode::Spin)]
fn workload_keeps_its_state(
    #[case] name: &str,
    #[case] mode: WaitMode,
    #[values(Route::WithoutDump, Route::DumpThenRestore, Route::DumpLeaveRunning)] route: Route,
) {
    let mut w = Workload::start(name, mode, &[ARGV_MARKER]);
    w.wait_ready();
    // In its wait's system call, so a dump interrupts it: the restart rule gets exercised on
    // every run, not only when the dump misses the setup after the ready file.
    w.wait_in_wait_syscall();
    match route {
        Route::WithoutDump => {}
        Route::DumpThenRestore => {
            w.dump_ok(&[]);
            w.reap_dumped_original();
            assert_pages_small(&w);
            w.restore_detached_ok();
        }
        Route::DumpLeaveRunning => {
            w.dump_ok(&["--leave-running"]);
            w.assert_running("crlab dump --leave-running");
            assert_pages_small(&w);
        }
    }
    w.trigger();
    w.expect_ok();
}

/// A thread stopped and continued inside a timed wait goes on sleeping in `restart_syscall`,
/// whose arguments only the kernel's restart block holds (a freezer, a debugger, a dump with
/// `--leave-running` do the same). The dump names the call from the instruction that set its
/// number; the restored thread makes it again, not `restart_syscall` (which a new task would
/// answer with EINTR): the workload's raw `nanosleep` fails its check on an EINTR. (The
/// libc sleep of the other wait modes sleeps to an absolute time, which restarts without a
/// restart block.)
#[rstest]
fn a_wait_resumed_through_restart_syscall_is_restored(
    #[values("stop-and-continue", "leave-running")] how: &str,
) {
    let mut w = Workload::start(
        "memory",
        WaitMode::NanosleepAsm,
        &[ARGV_MARKER, protocol::LONG_SLEEP_ARG],
    );
    w.wait_ready();
    w.wait_in_wait_syscall();
    let pid = w.pid();
    if how == "leave-running" {
        w.dump_ok(&["--leave-running"]);
        std::fs::remove_dir_all(w.images_dir()).expect("removing the first dump");
    } else {
        let target = nix::unistd::Pid::from_raw(pid);
        let state = |want: char| {
            std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|t| {
                t.rsplit_once(") ")
                    .and_then(|(_, rest)| rest.chars().next())
                    == Some(want)
            })
        };
        nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGSTOP).expect("SIGSTOP");
        process::wait_until(READY, "the workload to stop", || state('T')).expect("stopped");
        nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGCONT).expect("SIGCONT");
    }
    let restart = libc::SYS_restart_syscall.to_string();
    process::wait_until(READY, "the workload to sleep in restart_syscall", || {
        std::fs::read_to_string(format!("/proc/{pid}/syscall"))
            .is_ok_and(|t| t.split_whitespace().next() == Some(restart.as_str()))
    })
    .expect("in restart_syscall");
    w.dump_ok(&[]);
    w.reap_dumped_original();
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

/// How long a test waits for a state the workload reaches at once.
const READY: std::time::Duration = std::time::Duration::from_secs(10);

fn assert_pages_small(w: &Workload) {
    let bytes = w.pages_bytes();
    assert!(
        bytes < MAX_PAGES_BYTES,
        "pages-*.img hold {bytes} bytes: only present pages belong in a dump (memory maps a \
         256 MiB region and touches 4 pages of it)"
    );
}

/// A descriptor whose state the engine does not restore (an inotify instance with unread
/// events, a UDP socket with a queued datagram) makes the dump fail, say what and which fd,
/// and leave the workload unharmed: still running, not traced, with no descriptor added (its
/// own check compares its descriptor table) and its inotify watch or socket intact.
#[rstest]
#[case::inotify_unread_events("inotify")]
#[case::udp_queued_datagram("socket")]
fn dump_refuses_an_unsupported_descriptor(#[case] kind: &str) {
    let mut w = Workload::start("unsupported", WaitMode::Nanosleep, &[kind]);
    let fd = w
        .wait_ready()
        .get("unsupported-fd")
        .expect("unsupported announces its fd")
        .to_owned();
    let run = w.dump(&[]);
    let (ok, stderr) = (run.succeeded(), run.stderr());
    assert!(!ok, "crlab dump must refuse a process holding an {kind}");
    assert!(
        matches!(run.exit, Some(Exit::Code(c)) if c != 0),
        "crlab dump must exit non-zero, not {:?}",
        run.exit
    );
    assert!(
        stderr.contains(kind),
        "the error must name the unsupported kind {kind:?}: {stderr}"
    );
    assert!(
        mentions_number(&stderr, &fd),
        "the error must name fd {fd}: {stderr}"
    );
    assert!(
        !w.images_dir().join("inventory.img").exists(),
        "a failed dump must not leave a complete-looking dump (inventory.img)"
    );
    w.assert_running("a refused dump");
    w.trigger();
    w.expect_ok();
}

/// Restoring while the original still holds the pid fails, names the pid, and leaves no
/// process behind; the original is unharmed.
#[test]
fn restore_refuses_a_pid_in_use() {
    let mut w = Workload::start("idle", WaitMode::Nanosleep, &[]);
    w.wait_ready();
    w.dump_ok(&["--leave-running"]);
    w.assert_running("crlab dump --leave-running");
    let pid = w.pid().to_string();
    let pidfile = w.pidfile();
    let run = w.restore(&[
        "--detach",
        "--pidfile",
        pidfile.to_str().expect("utf-8 path"),
    ]);
    let (ok, stderr) = (run.succeeded(), run.stderr());
    assert!(!ok, "crlab restore must fail while pid {pid} is taken");
    assert!(
        mentions_number(&stderr, &pid),
        "the error must name pid {pid}: {stderr}"
    );
    let scratch = w.scratch_dir().to_string_lossy().into_owned();
    assert_eq!(
        process::pids_mentioning(&scratch),
        vec![w.pid()],
        "only the original may be left after a failed restore (no half-restored process, \
         no crlab helper)"
    );
    w.assert_running("a failed restore");
    w.trigger();
    w.expect_ok();
}

/// Without --detach, crlab waits for the restored process and exits with its status.
#[rstest]
#[case::exit_0(protocol::TRIGGER_BYTE, 0)]
#[case::exit_1(b'x', protocol::EXIT_FAIL)]
fn restore_without_detach_exits_with_the_restored_status(#[case] byte: u8, #[case] status: i32) {
    let mut w = Workload::start("idle", WaitMode::PipeRead, &[]);
    w.wait_ready();
    w.dump_ok(&[]);
    w.reap_dumped_original();
    let args = [
        "restore".into(),
        "--images-dir".into(),
        w.images_dir().into(),
    ];
    let (mut run, mut crlab_proc) = crlab::spawn(&args, w.scratch_dir(), "crlab-attached");
    let pid = w.pid();
    let exe = support::binaries::workload("idle");
    let restored = process::wait_until(
        crlab::CRLAB_TIMEOUT,
        format_args!("pid {pid} to be restored and running"),
        || {
            crlab_proc.has_ended()
                || (std::fs::read_link(format!("/proc/{pid}/exe")).ok().as_ref() == Some(&exe)
                    && process::not_running_freely(pid).is_none())
        },
    );
    if let Err(e) = restored {
        run.exit = crlab_proc.exit();
        w.record(run);
        panic!("{e}");
    }
    let early = crlab_proc.exit();
    if early.is_none() {
        w.trigger_with_byte(byte);
    }
    run.exit = crlab_proc
        .reap_within(crlab::CRLAB_TIMEOUT, "crlab restore")
        .ok();
    let exit = run.exit;
    w.record(run);
    assert_eq!(
        early, None,
        "crlab restore ended before the workload was triggered"
    );
    assert_eq!(
        exit,
        Some(Exit::Code(status)),
        "crlab restore must exit with the restored workload's status"
    );
    w.assert_gone();
}

/// `crlab show` of a small deterministic workload, reduced to the fields that do not change
/// between runs and machines, with pids and paths redacted.
#[test]
fn show_prints_the_dump_as_json() {
    let mut w = Workload::start("idle", WaitMode::Nanosleep, &[]);
    w.wait_ready();
    w.dump_ok(&[]);
    w.reap_dumped_original();
    let json = w.show_json();
    let mut summary = images::summary(&json);
    let pid = w.pid().to_string();
    let state = w.state_dir().to_string_lossy().into_owned();
    let exe = support::binaries::workload("idle")
        .to_string_lossy()
        .into_owned();
    let redact = move |s: &str| s.replace(&exe, "[workload]").replace(&state, "[state]");
    // Redacted and sorted here rather than by insta, which redacts in place: the list's order
    // must not depend on where the target dir (and so the workload binary) is.
    images::redact_vma_paths(&mut summary, &redact);
    let paths = move |value: insta::internals::Content, _: insta::internals::ContentPath<'_>| {
        redact(value.as_str().unwrap_or_default())
    };
    insta::assert_json_snapshot!("show_idle_workload", summary, {
        ".image_files[]" => insta::dynamic_redaction(move |value, _| {
            value.as_str().unwrap_or_default().replace(&pid, "[pid]")
        }),
        ".processes[].pid" => "[pid]",
        ".processes[].threads[]" => "[tid]",
        ".tasks[].cwd" => insta::dynamic_redaction(paths.clone()),
        ".tasks[].fds[].path" => insta::dynamic_redaction(paths.clone()),
        ".exe_paths[]" => insta::dynamic_redaction(paths),
    });
    w.assert_gone();
}

/// `crlab check --images-dir` on a real dump reads it, says whether SELinux lets this process
/// restore it (with SELinux off: that there is nothing to check), exits 0, and changes
/// nothing: the dump restores afterwards.
#[test]
fn check_images_dir_on_a_dump() {
    let mut w = Workload::start("idle", WaitMode::Nanosleep, &[]);
    w.wait_ready();
    w.dump_ok(&[]);
    w.reap_dumped_original();
    let images = w.images_dir();
    let selinux = ::crlab::selinux::enabled();
    let mut variants: Vec<Vec<&str>> = vec![vec![]];
    if !selinux {
        // Off, the restore ignores --lsm-profile as it ignores the dumped contexts. (On, the
        // answer for a context depends on the host's policy.)
        variants.push(vec![
            "--lsm-profile",
            "system_u:system_r:container_t:s0:c1,c2",
        ]);
    }
    for extra in variants {
        let mut args: Vec<OsString> =
            vec!["check".into(), "--images-dir".into(), images.clone().into()];
        args.extend(extra.iter().map(OsString::from));
        let run = w.crlab(&args);
        let (ok, exit, out, err) = (run.succeeded(), run.exit_text(), run.stdout(), run.stderr());
        assert!(
            ok,
            "crlab check --images-dir {extra:?} must succeed: {exit}\n{err}"
        );
        assert!(err.is_empty(), "nothing on stderr: {err}");
        if selinux {
            // The workload ran in this test's context, which crlab shares: nothing to write.
            assert!(
                out.lines().any(|l| l.starts_with("restore allowed")),
                "the summary says the restore is allowed: {out}"
            );
        } else {
            assert_eq!(
                out,
                format!(
                    "SELinux is off here: nothing to check (the restore writes no SELinux \
                     context); 1 process in {}\n",
                    images.display()
                )
            );
        }
    }
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

/// What is wrong with the images directory given to `crlab check --images-dir`.
#[derive(Clone, Copy, Debug)]
enum BadImages {
    /// The directory does not exist.
    Missing,
    /// An empty directory: no inventory.
    NotADump,
    /// A real dump with one byte of its thread core changed.
    DamagedCore,
}

/// `crlab check --images-dir` on a directory that is not a sound dump fails with the image
/// reader's error, naming the file, and exit status 1; it never panics.
#[rstest]
#[case::missing(BadImages::Missing)]
#[case::not_a_dump(BadImages::NotADump)]
#[case::damaged_core(BadImages::DamagedCore)]
fn check_images_dir_refuses_bad_images(#[case] bad: BadImages) {
    process::setup();
    let scratch = tempfile::Builder::new()
        .prefix("crlab-e2e-check-")
        .tempdir()
        .expect("creating a scratch directory");
    let mut workload = None;
    let (dir, expected) = match bad {
        BadImages::Missing => {
            let dir = scratch.path().join("no-such-dir");
            let expected = format!("{}: failed to open the images directory", dir.display());
            (dir, expected)
        }
        BadImages::NotADump => {
            let dir = scratch.path().join("empty");
            std::fs::create_dir(&dir).expect("creating an empty dir");
            let expected = format!("{}/inventory.img is missing", dir.display());
            (dir, expected)
        }
        BadImages::DamagedCore => {
            let mut w = Workload::start("idle", WaitMode::Nanosleep, &[]);
            w.wait_ready();
            w.dump_ok(&[]);
            w.reap_dumped_original();
            let core = w.images_dir().join(format!("core-{}.img", w.pid()));
            let mut bytes = std::fs::read(&core).expect("reading the core image");
            let last = bytes.len() - 1;
            bytes[last] ^= 0xff;
            std::fs::write(&core, &bytes).expect("writing the damaged core image");
            let expected = format!("{}: checksum mismatch", core.display());
            let dir = w.images_dir();
            workload = Some(w);
            (dir, expected)
        }
    };
    let args: Vec<OsString> = vec!["check".into(), "--images-dir".into(), dir.clone().into()];
    let run = crlab::run(&args, scratch.path(), "crlab-check");
    let (out, err) = (run.stdout(), run.stderr());
    assert_eq!(
        run.exit,
        Some(Exit::Code(1)),
        "crlab check --images-dir on a bad dump must exit 1\n{run}"
    );
    let prefix = format!(
        "crlab: error: checking whether SELinux lets this process restore {}: ",
        dir.display()
    );
    assert!(
        err.starts_with(&prefix),
        "the error says what failed: {err}"
    );
    assert!(
        err.contains(&expected),
        "the error names the problem ({expected}): {err}"
    );
    assert!(!err.contains("panicked"), "no panic: {err}");
    assert!(out.is_empty(), "nothing on stdout: {out}");
    if let Some(w) = workload {
        w.assert_gone();
    }
}
