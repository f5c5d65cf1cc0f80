//! Stopped processes and the engine stopped midway.
//!
//! A process in group stop (SIGSTOP, or SIGTSTP from job control), or stopped while the dump
//! runs, is dumped and restored stopped: every thread `T (stopped)` and untraced after the
//! restore, the stop visible to its parent's `WUNTRACED` wait, and once continued it passes
//! its check. A dump that leaves it running leaves it stopped.
//!
//! The engine stopped midway. SIGINT, SIGTERM or SIGHUP while a dump copies pages: crlab
//! undoes what it did, detaches, and exits with 128 + the signal; the process goes on. SIGKILL
//! of crlab while it seizes, copies pages, or writes its images: the kernel detaches the
//! threads, which the engine left with their own registers between remote calls, so the
//! process goes on. A restore stopped either way leaves no process of the image behind.
//!
//! The workload is `bench_memory`, a process with a few hundred MiB of touched memory that
//! checks every word of it when asked. Every step waits for a sign (a pages file growing in
//! the dump's staging directory, a thread traced, the restored process's resident memory), not
//! for a time. Needs root, as every end-to-end test of the engine.

mod support;

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use rstest::rstest;

use support::crlab::{self, Run};
use support::process::{self, Exit, Proc};

/// Touched memory of the workload: large enough that copying it takes a while.
const BYTES: u64 = 384 << 20;
/// How much of a pages file shows the copy is under way.
const UNDER_WAY: u64 = 16 << 20;
/// How long any one sign may take to show.
const SIGN_TIMEOUT: Duration = Duration::from_secs(120);

/// One `bench_memory` process and its files: `<scratch>/state`, `<scratch>/images`.
struct Big {
    proc: Proc,
    scratch: tempfile::TempDir,
    state: PathBuf,
}

impl Big {
    /// Starts `bench_memory STATE BYTES [shape...]` in its own process group and waits until
    /// it has touched its memory.
    fn start(shape: &[&str]) -> Big {
        Big::start_with(BYTES, shape)
    }

    /// As [`Big::start`], touching `bytes` of memory.
    fn start_with(bytes: u64, shape: &[&str]) -> Big {
        process::setup();
        let scratch = tempfile::Builder::new()
            .prefix("crlab-e2e-stopped-")
            .tempdir()
            .expect("a scratch directory");
        let state = scratch.path().join("state");
        std::fs::create_dir(&state).expect("the state dir");
        let log = std::fs::File::create(state.join("log")).expect("the log");
        // Reaped by pid through the `Proc` guard.
        #[allow(clippy::zombie_processes)]
        let child = Command::new(support::binaries::workload("bench_memory"))
            .arg(&state)
            .arg(bytes.to_string())
            .args(shape)
            .process_group(0)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup"))
            .stderr(log)
            .spawn()
            .expect("starting bench_memory");
        let mut big = Big {
            proc: Proc::adopt(i32::try_from(child.id()).expect("a pid")),
            scratch,
            state,
        };
        let ready = big.state.join("ready");
        let proc = &mut big.proc;
        process::wait_until(SIGN_TIMEOUT, "bench_memory to be ready", || {
            ready.exists() || proc.has_ended()
        })
        .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            big.proc.exit(),
            None,
            "bench_memory ended before it was ready"
        );
        big
    }

    fn pid(&self) -> i32 {
        self.proc.pid()
    }

    fn images(&self) -> PathBuf {
        self.scratch.path().join("images")
    }

    /// `crlab dump` in the background, into `images` (missing: a staging dir is used).
    fn spawn_dump(&mut self, extra: &[&str]) -> (Run, Proc) {
        let mut args: Vec<OsString> = vec![
            "dump".into(),
            "--tree".into(),
            self.pid().to_string().into(),
            "--images-dir".into(),
            self.images().into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        crlab::spawn(&args, self.scratch.path(), "crlab-dump")
    }

    /// The size of the pages file being written in a staging directory of the dump, if any.
    fn staged_pages(&self) -> Option<u64> {
        let name = format!("pages-{}.img", self.pid());
        std::fs::read_dir(self.scratch.path())
            .ok()?
            .filter_map(Result::ok)
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .starts_with(".images.crlab-dump-")
            })
            .find_map(|e| std::fs::metadata(e.path().join(&name)).ok())
            .map(|m| m.len())
    }

    /// The staging directories of dumps left in the scratch dir.
    fn staging_left(&self) -> Vec<String> {
        std::fs::read_dir(self.scratch.path())
            .expect("listing the scratch dir")
            .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
            .filter(|n| n.starts_with(".images.crlab-dump-"))
            .collect()
    }

    /// Waits for `sign`, or for crlab to end first; panics with crlab's output on a timeout.
    /// Polls every 100 µs: a phase can be short, and the sign must be seen within it.
    fn wait_sign(
        &mut self,
        run: &mut Run,
        crlab: &mut Proc,
        what: &str,
        sign: impl Fn(&Big) -> bool,
    ) {
        let start = Instant::now();
        while !sign(self) {
            if let Some(exit) = crlab.try_reap() {
                run.exit = Some(exit);
                panic!("crlab ended ({exit}) before {what}\n{run}\n{}", self.log());
            }
            if start.elapsed() > SIGN_TIMEOUT {
                panic!("timed out after {SIGN_TIMEOUT:?} waiting for {what}\n{run}");
            }
            std::thread::sleep(Duration::from_micros(100));
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.state.join("log")).unwrap_or_default()
    }

    /// Every thread runs freely: not traced, not stopped, not dead. The kernel detaches the
    /// threads as crlab exits, and a woken thread may show its stop a moment longer on a busy
    /// machine: what is checked is that each gets out of it within a few seconds.
    fn assert_running_freely(&mut self, after: &str) {
        assert_eq!(
            self.proc.try_reap(),
            None,
            "bench_memory ended after {after}\n{}",
            self.log()
        );
        let pid = self.pid();
        let mut problem = None;
        let waited = process::wait_until(Duration::from_secs(5), "every thread to run", || {
            problem = not_running(pid);
            problem.is_none()
        });
        if waited.is_err() {
            panic!("after {after}: {problem:?}\n{}", self.log());
        }
        assert_eq!(
            self.proc.try_reap(),
            None,
            "bench_memory ended after {after}"
        );
    }

    /// Triggers the self-check (every word of its memory, every thread) and expects `ok`.
    fn expect_ok(&mut self) {
        std::fs::write(self.state.join("check"), b"").expect("the check file");
        let exit = self
            .proc
            .reap_within(SIGN_TIMEOUT, "bench_memory's self-check")
            .unwrap_or_else(|e| panic!("{e}"));
        let result = std::fs::read_to_string(self.state.join("result")).unwrap_or_default();
        assert!(
            result.starts_with("ok") && exit == Exit::Code(0),
            "bench_memory's self-check: {result:?}, {exit}\n{}",
            self.log()
        );
    }
}

/// Every thread of `pid` is in group stop (`State: T (stopped)`) and untraced.
fn stopped_problem(pid: i32) -> Option<String> {
    let all = tids(pid);
    if all.is_empty() {
        return Some(format!("process {pid} has no threads"));
    }
    for tid in all {
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        let (tracer, state) = (field("TracerPid:"), field("State:"));
        if state != "T (stopped)" || tracer != "0" {
            return Some(format!("thread {tid}: State {state:?}, TracerPid {tracer}"));
        }
    }
    None
}

/// Waits until every thread of `pid` is in group stop.
fn wait_stopped(pid: i32, what: &str) {
    let mut problem = None;
    let waited = process::wait_until(Duration::from_secs(10), what, || {
        problem = stopped_problem(pid);
        problem.is_none()
    });
    if let Err(e) = waited {
        panic!("{e}: {problem:?}");
    }
}

/// The stop signal a `WUNTRACED` wait of the parent (this test: the subreaper) reports for
/// `pid`, left to be collected again (`WNOWAIT`).
fn reported_stop(pid: i32) -> Option<i32> {
    // SAFETY: an all-zero siginfo_t is valid; waitid writes one into it.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    let id = libc::id_t::try_from(pid).ok()?;
    // SAFETY: waitid for one child of ours writes into `info`, a live siginfo_t.
    let ret = unsafe {
        libc::waitid(
            libc::P_PID,
            id,
            &mut info,
            libc::WSTOPPED | libc::WNOHANG | libc::WNOWAIT,
        )
    };
    // SAFETY: waitid filled `info` for a child state change (CLD_STOPPED: si_status is the
    // signal), or left it zero.
    (ret == 0 && info.si_code == libc::CLD_STOPPED).then(|| unsafe { info.si_status() })
}

/// Dumps `big` (killing it), reaps the original and restores it detached.
fn dump_and_restore(big: &mut Big) {
    let (mut run, mut crlab) = big.spawn_dump(&[]);
    run.exit = crlab.reap_within(crlab::CRLAB_TIMEOUT, "crlab dump").ok();
    assert!(run.succeeded(), "{run}");
    restore(big);
}

/// Reaps the dumped original and restores it detached.
fn restore(big: &mut Big) {
    let pid = big.pid();
    big.proc
        .reap_within(Duration::from_secs(20), "the dumped original")
        .unwrap_or_else(|e| panic!("{e}"));
    big.proc = Proc::adopt(pid);
    let args: Vec<OsString> = vec![
        "restore".into(),
        "--detach".into(),
        "--images-dir".into(),
        big.images().into(),
    ];
    let (mut run, mut crlab) = crlab::spawn(&args, big.scratch.path(), "restore");
    run.exit = crlab
        .reap_within(crlab::CRLAB_TIMEOUT, "crlab restore")
        .ok();
    assert!(run.succeeded(), "{run}");
}

/// A process stopped by SIGSTOP or by job control's SIGTSTP, with threads, is dumped and
/// restored stopped: every thread `T (stopped)` and untraced right after `crlab restore`, the
/// stop reported to its parent; continued, it passes its check (every word of its memory).
#[rstest]
#[case::sigstop(libc::SIGSTOP)]
#[case::sigtstp(libc::SIGTSTP)]
fn a_stopped_process_is_restored_stopped(#[case] sig: i32) {
    let mut big = Big::start_with(16 << 20, &["threads", "4"]);
    let pid = big.pid();
    assert_eq!(tids(pid).len(), 4, "bench_memory's threads");
    send(pid, sig);
    wait_stopped(pid, "the workload to stop");
    dump_and_restore(&mut big);
    if let Some(problem) = stopped_problem(pid) {
        panic!("after the restore, a stopped process is stopped: {problem}");
    }
    assert_eq!(tids(pid).len(), 4, "every thread is there");
    assert_eq!(
        reported_stop(pid),
        Some(libc::SIGSTOP),
        "the parent's WUNTRACED wait reports the stop"
    );
    send(pid, libc::SIGCONT);
    big.assert_running_freely("SIGCONT of the restored process");
    big.expect_ok();
}

/// SIGSTOP while the dump copies the pages: the dump holds the process, the signal waits in
/// its queue, and the image records the stop; restored, the process is stopped, and passes
/// its check once continued.
#[test]
fn a_process_stopped_while_the_dump_runs_is_restored_stopped() {
    let mut big = Big::start(&[]);
    let pid = big.pid();
    let (mut run, mut crlab) = big.spawn_dump(&[]);
    big.wait_sign(&mut run, &mut crlab, "the page copy", |b| {
        b.staged_pages().is_some_and(|n| n >= UNDER_WAY)
    });
    send(pid, libc::SIGSTOP);
    run.exit = crlab.reap_within(crlab::CRLAB_TIMEOUT, "crlab dump").ok();
    assert!(run.succeeded(), "{run}");
    restore(&mut big);
    if let Some(problem) = stopped_problem(pid) {
        panic!("after the restore, the process stopped during the dump: {problem}");
    }
    send(pid, libc::SIGCONT);
    big.assert_running_freely("SIGCONT of the restored process");
    big.expect_ok();
}

/// `crlab dump --leave-running` of a stopped process leaves it stopped (every thread,
/// untraced), not continued; continued, it passes its check.
#[test]
fn a_dump_that_leaves_a_stopped_process_running_leaves_it_stopped() {
    let mut big = Big::start_with(16 << 20, &["threads", "4"]);
    let pid = big.pid();
    send(pid, libc::SIGSTOP);
    wait_stopped(pid, "the workload to stop");
    let (mut run, mut crlab) = big.spawn_dump(&["--leave-running"]);
    run.exit = crlab.reap_within(crlab::CRLAB_TIMEOUT, "crlab dump").ok();
    assert!(run.succeeded(), "{run}");
    if let Some(problem) = stopped_problem(pid) {
        panic!("after crlab dump --leave-running, the stopped process: {problem}");
    }
    send(pid, libc::SIGCONT);
    big.assert_running_freely("SIGCONT after the dump");
    big.expect_ok();
}

/// Why some thread of `pid` is not running freely (traced, stopped, dead), if one is not.
fn not_running(pid: i32) -> Option<String> {
    let tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    for tid in tids {
        let status =
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).unwrap_or_default();
        let field = |k: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_owned())
                .unwrap_or_default()
        };
        let (tracer, state) = (field("TracerPid:"), field("State:"));
        if tracer != "0" {
            return Some(format!("thread {tid} is traced by {tracer}"));
        }
        if !matches!(state.chars().next(), Some('S' | 'R' | 'D')) {
            return Some(format!("thread {tid} is {state}"));
        }
    }
    None
}

/// Whether thread `tid` of `pid` is traced.
fn traced(pid: i32, tid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).is_ok_and(|s| {
        s.lines()
            .any(|l| l.starts_with("TracerPid:") && l.trim_end() != "TracerPid:\t0")
    })
}

/// The thread ids of `pid`, ascending (the order the engine seizes them in).
fn tids(pid: i32) -> Vec<i32> {
    let mut tids: Vec<i32> = std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    tids.sort_unstable();
    tids
}

fn send(pid: i32, sig: i32) {
    // SAFETY: `pid` is our unreaped child (crlab), so it cannot have been reused.
    let ret = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        ret,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}

/// SIGINT, SIGTERM or SIGHUP while pages are copied: crlab undoes the dump, exits with
/// 128 + the signal, saying it was interrupted; the process runs freely and passes its check;
/// an older dump being replaced is intact and no staging directory is left.
#[rstest]
#[case::sigterm(libc::SIGTERM, false)]
#[case::sigint_leave_running(libc::SIGINT, true)]
#[case::sighup(libc::SIGHUP, false)]
fn a_stop_signal_during_the_page_copy_undoes_the_dump(#[case] sig: i32, #[case] leave: bool) {
    let mut big = Big::start(&[]);
    let images = big.images();
    std::fs::create_dir(&images).expect("the images dir");
    std::fs::write(images.join("old"), b"an older dump").expect("an older dump");
    let mut extra = vec!["--replace"];
    if leave {
        extra.push("--leave-running");
    }
    let (mut run, mut crlab) = big.spawn_dump(&extra);
    big.wait_sign(&mut run, &mut crlab, "the page copy", |b| {
        b.staged_pages().is_some_and(|n| n >= UNDER_WAY)
    });
    send(crlab.pid(), sig);
    run.exit = crlab.reap_within(crlab::CRLAB_TIMEOUT, "crlab dump").ok();
    let err = run.stderr();
    assert_eq!(
        run.exit,
        Some(Exit::Code(128 + sig)),
        "crlab's status\n{run}"
    );
    assert!(err.contains(&format!("stopped by signal {sig}")), "{err}");
    assert!(err.contains("the dump was interrupted"), "{err}");
    big.assert_running_freely("an interrupted dump");
    assert_eq!(
        std::fs::read(images.join("old")).ok().as_deref(),
        Some(&b"an older dump"[..]),
        "the older dump is intact"
    );
    assert!(!images.join("inventory.img").exists());
    assert!(big.staging_left().is_empty(), "{:?}", big.staging_left());
    big.expect_ok();
}

/// Where in the dump crlab is SIGKILLed.
#[derive(Clone, Copy, Debug)]
enum Phase {
    /// While threads are seized: the first traced, the last not yet (of a process with many
    /// threads, which the engine seizes in order before it runs any remote call).
    Seizing,
    /// While the pages file grows.
    PageCopy,
    /// Once the pages file is complete: the images are being written and committed, the
    /// scratch mapping removed, or the dump is over.
    ImageWrite,
}

/// SIGKILL of crlab dump at each phase: the kernel detaches the threads; the process runs
/// freely and passes its check, its memory and every thread intact. An older dump being
/// replaced is intact (a staging directory may be left: crlab had no chance to remove it).
#[rstest]
#[case::seizing(Phase::Seizing)]
#[case::page_copy(Phase::PageCopy)]
#[case::image_write(Phase::ImageWrite)]
fn sigkill_of_a_dump_leaves_the_process_running(#[case] phase: Phase) {
    let shape: &[&str] = match phase {
        Phase::Seizing => &["threads", "256"],
        _ => &[],
    };
    let mut big = Big::start(shape);
    let images = big.images();
    std::fs::create_dir(&images).expect("the images dir");
    std::fs::write(images.join("old"), b"an older dump").expect("an older dump");
    let (mut run, mut crlab) = big.spawn_dump(&["--replace", "--leave-running"]);
    let pid = big.pid();
    let full = BYTES;
    match phase {
        Phase::Seizing => {
            let all = tids(pid);
            let (first, last) = (all[0], all[all.len() - 1]);
            big.wait_sign(&mut run, &mut crlab, "the seizing", |_| {
                traced(pid, first) && !traced(pid, last)
            });
        }
        Phase::PageCopy => big.wait_sign(&mut run, &mut crlab, "the page copy", |b| {
            b.staged_pages().is_some_and(|n| n >= UNDER_WAY)
        }),
        Phase::ImageWrite => big.wait_sign(&mut run, &mut crlab, "the complete pages file", |b| {
            b.staged_pages().is_some_and(|n| n >= full)
        }),
    }
    send(crlab.pid(), libc::SIGKILL);
    run.exit = crlab.reap_within(crlab::CRLAB_TIMEOUT, "crlab dump").ok();
    assert_eq!(run.exit, Some(Exit::Signal(libc::SIGKILL)), "{run}");
    big.assert_running_freely(&format!("crlab was killed ({phase:?})"));
    assert_eq!(
        std::fs::read(images.join("old")).ok().as_deref(),
        Some(&b"an older dump"[..]),
        "the older dump is intact"
    );
    big.expect_ok();
}

/// How a restore is stopped.
#[derive(Clone, Copy, Debug)]
enum Stop {
    Term,
    Kill,
}

/// A restore stopped while it fills the pages (SIGTERM: it kills what it made and exits 143;
/// SIGKILL: `PTRACE_O_EXITKILL` kills what it made) leaves no process of the image: the pid
/// is free again, and the same dump then restores and passes its check.
#[rstest]
#[case::sigterm(Stop::Term)]
#[case::sigkill(Stop::Kill)]
fn a_restore_stopped_midway_leaves_nothing(#[case] stop: Stop) {
    let mut big = Big::start(&[]);
    let (mut run, mut crlab) = big.spawn_dump(&[]);
    run.exit = crlab.reap_within(crlab::CRLAB_TIMEOUT, "crlab dump").ok();
    assert!(run.succeeded(), "{run}");
    let pid = big.pid();
    big.proc
        .reap_within(Duration::from_secs(20), "the dumped original")
        .unwrap_or_else(|e| panic!("{e}"));

    let restore_args = |b: &Big| -> Vec<OsString> {
        vec![
            "restore".into(),
            "--detach".into(),
            "--images-dir".into(),
            b.images().into(),
        ]
    };
    // Owned from the start (the pid is free now): a failure below still kills and reaps it.
    big.proc = Proc::adopt(pid);
    let (mut run, mut crlab) = crlab::spawn(&restore_args(&big), big.scratch.path(), "restore");
    big.wait_sign(&mut run, &mut crlab, "the page fill", |_| {
        process::status_field(pid, "VmRSS")
            .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
            .is_some_and(|kib| kib << 10 >= 2 * UNDER_WAY)
    });
    let sig = match stop {
        Stop::Term => libc::SIGTERM,
        Stop::Kill => libc::SIGKILL,
    };
    send(crlab.pid(), sig);
    run.exit = crlab
        .reap_within(crlab::CRLAB_TIMEOUT, "crlab restore")
        .ok();
    let expected = match stop {
        Stop::Term => Exit::Code(128 + libc::SIGTERM),
        Stop::Kill => Exit::Signal(libc::SIGKILL),
    };
    assert_eq!(run.exit, Some(expected), "{run}");
    if let Stop::Term = stop {
        assert!(
            run.stderr().contains("the restore was interrupted"),
            "{run}"
        );
    }
    // Killed; after crlab's death reparented to this test (the subreaper), which reaps it.
    process::wait_until(
        Duration::from_secs(20),
        format_args!("pid {pid} to be free"),
        || {
            big.proc.try_reap();
            !process::pid_exists(pid)
        },
    )
    .unwrap_or_else(|e| panic!("{e}: {:?}", process::status_field(pid, "State")));

    // The pid is free: the previous guard's kill finds nothing.
    big.proc = Proc::adopt(pid);
    let (mut run, mut crlab) = crlab::spawn(&restore_args(&big), big.scratch.path(), "again");
    run.exit = crlab
        .reap_within(crlab::CRLAB_TIMEOUT, "crlab restore")
        .ok();
    assert!(
        run.succeeded(),
        "the dump restores after the stopped restore\n{run}"
    );
    big.expect_ok();
}

/// SIGKILL of crlab restore while it detaches the restored tasks, every one complete: the
/// engine has dropped `PTRACE_O_EXITKILL` first, so the kernel detaches the rest and the whole
/// process runs (rather than the threads not yet detached being killed, and with them the
/// process): all its threads, its memory, its check passed.
#[test]
fn sigkill_of_a_restore_while_it_detaches_leaves_the_whole_process_running() {
    let mut big = Big::start_with(16 << 20, &["threads", "256"]);
    let pid = big.pid();
    let all = tids(pid);
    let threads = all.len();
    assert_eq!(threads, 256, "bench_memory's threads");
    let (mut run, mut crlab) = big.spawn_dump(&[]);
    run.exit = crlab.reap_within(crlab::CRLAB_TIMEOUT, "crlab dump").ok();
    assert!(run.succeeded(), "{run}");
    big.proc
        .reap_within(Duration::from_secs(20), "the dumped original")
        .unwrap_or_else(|e| panic!("{e}"));

    let args: Vec<OsString> = vec![
        "restore".into(),
        "--detach".into(),
        "--images-dir".into(),
        big.images().into(),
    ];
    // Owned from the start (the pid is free now): a failure below still kills and reaps it.
    big.proc = Proc::adopt(pid);
    let (mut run, mut crlab) = crlab::spawn(&args, big.scratch.path(), "restore");
    // Threads are detached before their leader, in order: the first thread free while the
    // leader is traced, once the last thread exists (the restore gives them their tids back).
    let (first, last) = (all[1], all[all.len() - 1]);
    let exists = |tid: i32| Path::new(&format!("/proc/{pid}/task/{tid}")).exists();
    big.wait_sign(&mut run, &mut crlab, "the detaching", |_| {
        exists(last) && traced(pid, pid) && exists(first) && !traced(pid, first)
    });
    send(crlab.pid(), libc::SIGKILL);
    run.exit = crlab
        .reap_within(crlab::CRLAB_TIMEOUT, "crlab restore")
        .ok();
    assert_eq!(run.exit, Some(Exit::Signal(libc::SIGKILL)), "{run}");
    // The restored root was crlab's child: now this test's (its subreaper).
    big.assert_running_freely("crlab restore was killed while detaching");
    assert_eq!(tids(pid).len(), threads, "every thread is there");
    big.expect_ok();
}
