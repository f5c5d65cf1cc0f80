//! A fault at every step: each failpoint of [`crlab::failpoint::ALL`] armed in turn (the
//! `crlab` the tests run is built with the `failpoints` feature), through the real CLI on real
//! workloads.
//!
//! - A dump failpoint: `crlab dump` fails, names the failpoint (so it was reached), and the
//!   workload's processes all run on, every thread neither stopped nor traced, with the same
//!   ids, threads and blocked masks; the images directory is not a dump the reader accepts (or,
//!   replacing an older dump, still holds the older one, unchanged), no staging directory is
//!   left; then the workload passes its own check.
//! - A restore failpoint: `crlab restore` fails, names the failpoint, and afterwards no pid or
//!   tid of the image exists; the same images then restore (no pid is held), the restored tree
//!   runs freely and is killed before the next failpoint; the last restore passes the
//!   workload's own check.
//!
//! Every failpoint runs on each workload of [`WORKLOADS`] that reaches it: `tree` (five
//! processes sharing a pipe, a file and memory) and `threads` (one process of 17 threads), and
//! is armed at its first reach and, where a successful run reaches it more than once, at its
//! last (the last process, thread, descriptor or chunk: everything before it is then to be
//! undone). A failpoint that is not reached fails the test. Needs root, as every engine
//! end-to-end test.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

use crlab::failpoint;
use support::crlab::Run;
use support::process::{self, Exit};
use support::protocol::WaitMode;
use support::workload::{Workload, EXIT_TIMEOUT};

// The `crlab` binary these tests run is built with the failpoints (the crate's dev-dependency
// on itself turns the feature on).
const _: () = assert!(
    failpoint::ENABLED,
    "the tests build crlab with its failpoints"
);

/// The workloads every failpoint runs on, each with the failpoints it cannot reach.
const WORKLOADS: &[(&str, &[&str])] = &[
    // Five single-threaded processes: no thread to create.
    ("tree", &["restore.task.thread"]),
    // One process: no child process to create.
    ("threads", &["restore.task.process"]),
];

/// Failpoints no armed run can show, with why: calls whose refusal the dump reads as an
/// answer (a failure there is no failure of the dump), and calls only a process with POSIX
/// timers reaches (the failpoint workloads hold none; `engine_process_state` covers timers).
const NOT_ARMED: &[(&str, &str)] = &[
    (
        "dump.remote.keyctl.keyctl_describe",
        "reached only for a keyring the dump refuses or records (`engine_keyrings` arms it)",
    ),
    (
        "restore.keyring",
        "reached only for a session keyring the image records (`engine_keyrings` arms it)",
    ),
    (
        "dump.remote.keyctl.keyctl_get_security",
        "reached only for a session keyring the dump records (`engine_keyrings` arms it)",
    ),
    (
        "dump.remote.keyctl.keyctl_read",
        "reached only for a session keyring the dump records (`engine_keyrings` arms it)",
    ),
    (
        "dump.remote.prctl.pr_get_mdwe",
        "a refusal means memory-deny-write-execute is off or unknown to this kernel",
    ),
    (
        "dump.remote.membarrier",
        "a refusal means the process is not registered",
    ),
    (
        "dump.remote.prctl.pr_timer_create_restore_ids",
        "reached only with POSIX timers",
    ),
    (
        "dump.remote.timer_gettime",
        "reached only with POSIX timers",
    ),
    (
        "dump.sock_diag",
        "reached only with sockets (the failpoint workloads hold none; `engine_sockets` arms it)",
    ),
    (
        "restore.files.socket",
        "reached only with Unix socket pairs (`engine_sockets` arms it)",
    ),
    (
        "restore.zombie",
        "reached only for a tree holding a zombie (`engine_trees` covers it)",
    ),
    (
        "restore.stop",
        "reached only for a process dumped stopped (`engine_stopped` covers it)",
    ),
];

/// How a dump failpoint's dump is run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DumpMode {
    /// `crlab dump` into the empty images directory: on success it would kill the tree.
    Kill,
    /// `crlab dump --leave-running`: the undo runs on success too.
    LeaveRunning,
    /// `crlab dump --replace` over an older dump (made with `--leave-running`): the new one is
    /// staged beside it and swapped in.
    ReplaceOld,
}

fn dump_mode(name: &str) -> DumpMode {
    match name {
        // The scratch area is unmapped by the undo, which only a dump that leaves the tree
        // running reaches without another failure.
        "dump.remote.munmap" => DumpMode::LeaveRunning,
        // Only a staged dump is moved into place.
        "dump.commit.swap" => DumpMode::ReplaceOld,
        _ => DumpMode::Kill,
    }
}

/// The failpoints of `prefix` (`dump.`, `restore.`) that `unreached` does not list.
fn failpoints(prefix: &str, unreached: &[&str]) -> Vec<&'static str> {
    failpoint::ALL
        .iter()
        .map(|f| f.name)
        .filter(|n| n.starts_with(prefix) && !unreached.contains(n))
        .filter(|n| !NOT_ARMED.iter().any(|(name, _)| name == n))
        .collect()
}

#[test]
fn the_tests_name_only_real_failpoints() {
    let unreached = WORKLOADS.iter().flat_map(|(_, u)| u.iter());
    let not_armed = NOT_ARMED.iter().map(|(name, _)| name);
    for name in unreached
        .chain(not_armed)
        .chain(&["dump.remote.munmap", "dump.commit.swap"])
    {
        assert!(failpoint::is_known(name), "{name} is not in failpoint::ALL");
    }
    assert_eq!(
        failpoints("dump.", &[]).len() + failpoints("restore.", &[]).len() + NOT_ARMED.len(),
        failpoint::ALL.len(),
        "every failpoint is a dump's or a restore's"
    );
    for f in failpoint::ALL
        .iter()
        .filter(|f| !NOT_ARMED.iter().any(|(name, _)| *name == f.name))
    {
        assert!(
            WORKLOADS.iter().any(|(_, u)| !u.contains(&f.name)),
            "{} runs on no workload",
            f.name
        );
    }
}

/// Every dump failpoint, each on a fresh workload, on each workload.
#[test]
fn every_dump_failpoint_leaves_the_workload_unharmed() {
    let mut results = Vec::new();
    for &(workload, unreached) in WORKLOADS {
        let reaches = match guarded(|| dump_reaches(workload)) {
            Ok(reaches) => reaches,
            Err(e) => {
                results.push((format!("counting the reaches on {workload}"), Err(e)));
                continue;
            }
        };
        for name in failpoints("dump.", unreached) {
            for at in arm_at(&reaches, name) {
                let result = guarded(|| dump_round(workload, name, at));
                results.push((format!("{name}@{at} on {workload}"), result));
            }
        }
    }
    conclude("dump", &results);
}

/// How often a successful `crlab dump --leave-running` of `workload` reaches each failpoint.
fn dump_reaches(workload: &str) -> BTreeMap<String, u64> {
    let mut t = Tree::start(workload);
    let run = t.w.dump_with_env(&["--leave-running"], &[COUNT_REACHES]);
    assert!(run.succeeded(), "counting the failpoints' reaches\n{run}");
    let reaches = reaches(run);
    t.w.trigger();
    t.w.expect_ok();
    t.assert_nothing_left();
    reaches
}

/// The environment that logs each reach of a failpoint.
const COUNT_REACHES: (&str, &str) = ("CRLAB_LOG", "crlab::failpoint=trace");

/// The reaches of each failpoint in a run made with [`COUNT_REACHES`].
fn reaches(run: &Run) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for line in run.stderr().lines() {
        let Some(rest) = line.split("failpoint ").nth(1) else {
            continue;
        };
        if let Some(name) = rest.strip_suffix(" reached") {
            *out.entry(name.to_owned()).or_insert(0) += 1;
        }
    }
    out
}

/// The reaches to arm `name` at: its first, and its last when that is another.
fn arm_at(reaches: &BTreeMap<String, u64>, name: &str) -> Vec<u64> {
    match reaches.get(name).copied() {
        Some(n) if n > 1 => vec![1, n],
        _ => vec![1],
    }
}

/// Every restore failpoint, on one dump of each workload.
#[test]
fn every_restore_failpoint_leaves_nothing_behind() {
    let mut results = Vec::new();
    for &(workload, unreached) in WORKLOADS {
        let names = failpoints("restore.", unreached);
        match guarded(|| restore_rounds(workload, &names)) {
            Ok(rounds) => results.extend(
                rounds
                    .into_iter()
                    .map(|(n, r)| (format!("{n} on {workload}"), r)),
            ),
            // The setup (start, dump, counting) or the final restore failed: so did every
            // failpoint.
            Err(e) => results.push((format!("every restore failpoint on {workload}"), Err(e))),
        }
    }
    conclude("restore", &results);
}

/// Runs `f`, turning a panic into an error carrying its message.
fn guarded<T>(f: impl FnOnce() -> T) -> Result<T, String> {
    catch_unwind(AssertUnwindSafe(f)).map_err(|payload| {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| (*s).to_owned()))
            .unwrap_or_else(|| "a panic without a message".to_owned())
    })
}

/// Prints one line per failpoint and fails unless every one passed.
fn conclude(what: &str, results: &[(String, Result<(), String>)]) {
    let failed: Vec<_> = results.iter().filter(|(_, r)| r.is_err()).collect();
    for (name, result) in results {
        match result {
            Ok(()) => println!("{what} failpoint {name}: ok"),
            Err(e) => println!("{what} failpoint {name}: FAILED: {e}"),
        }
    }
    let names: std::collections::BTreeSet<&str> = results
        .iter()
        .filter_map(|(n, _)| n.split(['@', ' ']).next())
        .collect();
    println!(
        "{what} failpoints: {} runs of {} failpoints, {} held",
        results.len(),
        names.len(),
        results.len() - failed.len(),
    );
    assert!(!results.is_empty(), "no {what} failpoint was run");
    assert!(
        failed.is_empty(),
        "{} {what} failpoint(s) failed: {}",
        failed.len(),
        failed
            .iter()
            .map(|(n, e)| format!("{n}: {}", e.as_ref().err().map_or("", String::as_str)))
            .collect::<Vec<_>>()
            .join("\n")
    );
}

/// The `CRLAB_FAILPOINT` value that arms failpoint `name` at its reach `at`.
fn spec(name: &str, at: u64) -> String {
    format!("{name}@{at}")
}

/// A failed run of crlab that names failpoint `name`: it exited 1 and reported the failure.
fn assert_failed_at(run: &Run, name: &str) {
    assert_eq!(
        run.exit,
        Some(Exit::Code(1)),
        "with {name} armed crlab must fail with status 1\n{run}"
    );
    let injected = format!("injected failure at {name}");
    assert!(
        run.stderr().contains(&injected),
        "crlab's error must come from the failpoint ({injected}): was {name} reached?\n{run}"
    );
}

/// One dump failpoint, armed at its reach `at`, on a fresh `workload`.
fn dump_round(workload: &str, name: &str, at: u64) {
    let mut t = Tree::start(workload);
    let before = t.seen();
    let mode = dump_mode(name);
    let old = (mode == DumpMode::ReplaceOld).then(|| {
        t.w.dump_ok(&["--leave-running"]);
        t.assert_same(&before, "the dump the failed one would replace");
        dir_contents(&t.w.images_dir())
    });
    let extra: &[&str] = match mode {
        DumpMode::Kill => &[],
        DumpMode::LeaveRunning => &["--leave-running"],
        DumpMode::ReplaceOld => &["--replace"],
    };
    let spec = spec(name, at);
    let run = t.w.dump_with_env(extra, &[(failpoint::ENV, spec.as_str())]);
    let run_text = run.to_string();
    assert_failed_at(run, name);
    t.assert_same(&before, &format!("a dump failed at {name}"));
    match old {
        Some(old) => assert_eq!(
            dir_contents(&t.w.images_dir()),
            old,
            "a failed replacement must leave the older dump as it was\n{run_text}"
        ),
        None => {
            let show = t.w.crlab(&[
                "show".into(),
                "--images-dir".into(),
                t.w.images_dir().into(),
            ]);
            assert!(
                !show.succeeded() && show.stderr().contains("not a complete crlab dump"),
                "after a failed dump the images directory must not be a complete dump\n{show}"
            );
        }
    }
    let leftovers: Vec<String> = std::fs::read_dir(t.w.scratch_dir())
        .expect("listing the scratch dir")
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| n.contains("crlab-dump"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "a failed dump leaves no staging directory: {leftovers:?}"
    );
    t.w.trigger();
    t.w.expect_ok();
    t.assert_nothing_left();
}

/// Every restore failpoint of `names`, at its first and last reach, on one dump of `workload`,
/// then a last restore that must pass the workload's own check: each round's result (panics if
/// the setup or the last restore fails).
fn restore_rounds(workload: &str, names: &[&str]) -> Vec<(String, Result<(), String>)> {
    let mut t = Tree::start(workload);
    let before = t.seen();
    t.w.dump_ok(&[]);
    t.wait_all_gone("the dump");
    let reaches = reaches(t.w.restore_detached_ok_with_env(&[COUNT_REACHES]));
    t.assert_same(&before, "the restore that counts the failpoints' reaches");
    t.kill_all();
    t.wait_all_gone("the restore that counts the failpoints' reaches");
    let mut results = Vec::new();
    for &name in names {
        for at in arm_at(&reaches, name) {
            let result = guarded(|| restore_round(&mut t, &before, name, at));
            if result.is_err() {
                // Whatever the round left, the next one starts from no process of the image.
                t.kill_all();
                t.wait_all_gone("what a failed round left");
            }
            results.push((format!("{name}@{at}"), result));
        }
    }
    t.w.restore_detached_ok();
    t.assert_same(&before, "the last restore");
    t.w.trigger();
    t.w.expect_ok();
    t.assert_nothing_left();
    results
}

fn restore_round(t: &mut Tree, before: &[Seen], name: &str, at: u64) {
    let pidfile = t.w.pidfile();
    let _ = std::fs::remove_file(&pidfile);
    let args = [
        "--detach",
        "--pidfile",
        pidfile.to_str().expect("utf-8 path"),
    ];
    let spec = spec(name, at);
    let run =
        t.w.restore_with_env(&args, &[(failpoint::ENV, spec.as_str())]);
    assert_failed_at(run, name);
    t.wait_all_gone(&format!("a restore failed at {name}"));
    assert!(
        !pidfile.exists(),
        "a failed restore writes no pid file ({name})"
    );
    // No pid is held: the same images restore, and the tree runs as dumped.
    t.w.restore_detached_ok();
    t.assert_same(before, &format!("the restore after one failed at {name}"));
    t.kill_all();
    t.wait_all_gone(&format!("the tree restored after {name}"));
}

/// One workload's processes: the root and, for `tree`, its four members.
struct Tree {
    w: Workload,
    /// Every process of the workload, root first.
    pids: Vec<i32>,
    /// Every pid and tid of the workload, as started (and dumped).
    ids: Vec<i32>,
}

impl Tree {
    fn start(name: &str) -> Tree {
        let mut w = Workload::start(name, WaitMode::Nanosleep, &[]);
        w.wait_ready();
        w.wait_in_wait_syscall();
        let mut pids = vec![w.pid()];
        for member in ["a", "b", "a1", "b1"] {
            if let Some(pid) = w.ready().get(&format!("member-{member}")) {
                pids.push(pid.trim().parse().expect("a member's pid"));
            }
        }
        let mut ids = pids.clone();
        for &pid in &pids {
            ids.extend(process::task_tids(pid));
        }
        ids.sort();
        ids.dedup();
        Tree { w, pids, ids }
    }

    fn seen(&self) -> Vec<Seen> {
        self.pids.iter().map(|&p| Seen::of(p)).collect()
    }

    /// Every process runs freely, each thread neither stopped nor traced, and looks from
    /// outside as it did `before`.
    fn assert_same(&self, before: &[Seen], after: &str) {
        for b in before {
            for &tid in &b.tids {
                if let Some(why) = process::thread_not_running_freely(b.pid, tid) {
                    panic!("after {after}: {why}");
                }
            }
            assert_eq!(&Seen::of(b.pid), b, "after {after}, process {}", b.pid);
        }
    }

    fn kill_all(&self) {
        for &pid in &self.pids {
            if self.ours(pid) {
                // SAFETY: kill takes integers; `pid` is a process of this test (it names our
                // scratch dir), so not someone else's.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }

    /// Whether `pid` is a process of this test: it names the scratch dir on its command line.
    fn ours(&self, pid: i32) -> bool {
        let scratch = self.w.scratch_dir().to_string_lossy().into_owned();
        std::fs::read(format!("/proc/{pid}/cmdline"))
            .is_ok_and(|c| String::from_utf8_lossy(&c).contains(&scratch))
    }

    /// Waits until no pid or tid of the workload exists, reaping those that are ours (we are
    /// the subreaper): never a sleep, since orphans are reaped slowly by pid 1.
    fn wait_all_gone(&mut self, after: &str) {
        let (ids, root, w) = (&self.ids, self.pids[0], &mut self.w);
        let me = process::getpid();
        let mut left = Vec::new();
        let what = format!("the tree gone after {after}");
        let waited = process::wait_until(EXIT_TIMEOUT, what, || {
            left = ids
                .iter()
                .copied()
                .filter(|&id| process::pid_exists(id))
                .collect();
            for &id in &left {
                if id == root {
                    // Through the workload's guard, which must know the pid is free.
                    w.reap_if_ended();
                } else if process::parent_of(id) == Some(me) {
                    let mut status = 0;
                    // SAFETY: waitpid for one child of ours writes into a live int.
                    unsafe { libc::waitpid(id, &mut status, libc::WNOHANG) };
                }
            }
            left.is_empty()
        });
        if let Err(e) = waited {
            panic!("{e}: still there: {}", describe(&left));
        }
    }

    fn assert_nothing_left(&self) {
        let scratch = self.w.scratch_dir().to_string_lossy().into_owned();
        let left = process::pids_mentioning(&scratch);
        assert!(left.is_empty(), "processes are left: {}", describe(&left));
    }
}

impl Drop for Tree {
    fn drop(&mut self) {
        // Everything of the test, then the workload's guard reaps what is ours.
        let deadline = Instant::now() + EXIT_TIMEOUT;
        let scratch = self.w.scratch_dir().to_string_lossy().into_owned();
        let me = process::getpid();
        loop {
            let left: Vec<i32> = process::pids_mentioning(&scratch)
                .into_iter()
                .filter(|&p| p != me)
                .collect();
            if left.is_empty() || Instant::now() >= deadline {
                break;
            }
            for &pid in &left {
                // SAFETY: `pid` names this test's scratch dir: a process of this test.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                if process::parent_of(pid) == Some(me) && pid != self.w.pid() {
                    let mut status = 0;
                    // SAFETY: waitpid for one child of ours writes into a live int.
                    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// The contents of every file of `dir`, by name.
fn dir_contents(dir: &std::path::Path) -> BTreeMap<OsString, Vec<u8>> {
    std::fs::read_dir(dir)
        .expect("listing the images dir")
        .filter_map(Result::ok)
        .map(|e| {
            let bytes = std::fs::read(e.path()).expect("reading an image file");
            (e.file_name(), bytes)
        })
        .collect()
}

/// What `/proc` shows of a process from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    pid: i32,
    /// `PPid`, `Tgid`-less ids from `stat`: parent, process group, session.
    ids: (i32, i32, i32),
    tids: Vec<i32>,
    /// Each thread's `SigBlk`.
    blocked: Vec<String>,
}

impl Seen {
    fn of(pid: i32) -> Seen {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_else(|e| panic!("pid {pid} does not exist: {e}"));
        let rest = text
            .get(text.rfind(')').map_or(0, |i| i + 2)..)
            .unwrap_or_default();
        let f: Vec<i32> = rest
            .split_whitespace()
            .skip(1)
            .take(3)
            .map(|s| s.parse().unwrap_or(-1))
            .collect();
        let tids = process::task_tids(pid);
        let blocked = tids
            .iter()
            .map(|&tid| process::task_status(pid, tid, "SigBlk").unwrap_or_else(|| "gone".into()))
            .collect();
        Seen {
            pid,
            ids: (f[0], f[1], f[2]),
            tids,
            blocked,
        }
    }
}

/// Pids with their state and command line, for a failure message.
fn describe(pids: &[i32]) -> String {
    pids.iter()
        .map(|&p| {
            let state = process::status_field(p, "State").unwrap_or_default();
            let ppid = process::status_field(p, "PPid").unwrap_or_default();
            format!("{p} ({state}, parent {ppid})")
        })
        .collect::<Vec<_>>()
        .join("; ")
}
