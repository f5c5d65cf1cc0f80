//! End-to-end tests of the engine on multithreaded processes and process trees: the `threads`
//! and `tree` workloads (`crlab-workloads`) dumped and restored through the `crlab` CLI, each
//! checking its own state afterwards, and what `/proc` shows from outside (tids, parents,
//! process groups, sessions, each thread's blocked mask) compared before and after.
//!
//! Needs root (the tests fail, not skip, without it). A [`Owned`] guard owns every process of a
//! test: the workload's root, every process in its session or below it, and anything whose
//! command line names the test's scratch dir; on drop, also on failure, it kills them all,
//! reaps the ones that are ours to reap, and fails the test if any is left. Each test also
//! ends by checking that nothing of it is left.

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use rstest::rstest;

use support::process::{self, Exit};
use support::protocol::WaitMode;
use support::workload::{assert_refusal_names, mentions_number, Identity, Workload, EXIT_TIMEOUT};

/// Who the credentials test's workload runs as: not root, with two supplementary groups.
const NOT_ROOT: Identity = Identity {
    uid: 4242,
    gid: 4343,
    groups: &[4343, 4444],
};

/// A thread's tid and its `Uid`, `Gid` and `Groups` lines.
type ThreadIds = (i32, Option<String>, Option<String>, Option<String>);

/// A multithreaded process of another user, dumped and restored by root: every thread comes
/// back with the user's ids and groups (the kernel keeps them per thread), not root's.
#[test]
fn a_non_root_process_keeps_its_credentials_in_every_thread() {
    let mut o = Owned::adopt(Workload::start_as(
        "threads",
        WaitMode::Nanosleep,
        &[],
        NOT_ROOT,
    ));
    let pid = o.root;
    let ids = |pid: i32| -> Vec<ThreadIds> {
        process::task_tids(pid)
            .into_iter()
            .map(|tid| {
                (
                    tid,
                    process::task_status(pid, tid, "Uid"),
                    process::task_status(pid, tid, "Gid"),
                    process::task_status(pid, tid, "Groups"),
                )
            })
            .collect()
    };
    let before = ids(pid);
    assert_eq!(before.len(), WORKER_THREADS + 1);
    // /proc/PID belongs to the process's user only while it is dumpable: a restore that
    // changed its ids and left it non-dumpable would hand its /proc files to root.
    let proc_owner = |pid: i32| {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(format!("/proc/{pid}/environ"))
            .map(|m| m.uid())
            .ok()
    };
    assert_eq!(proc_owner(pid), Some(NOT_ROOT.uid));
    for (tid, uid, gid, groups) in &before {
        assert_eq!(
            uid.as_deref(),
            Some("4242\t4242\t4242\t4242"),
            "thread {tid}"
        );
        assert_eq!(
            gid.as_deref(),
            Some("4343\t4343\t4343\t4343"),
            "thread {tid}"
        );
        assert_eq!(groups.as_deref(), Some("4343 4444"), "thread {tid}");
    }
    o.w().dump_ok(&[]);
    o.w().reap_dumped_original();
    o.w().restore_detached_ok();
    assert_eq!(
        ids(pid),
        before,
        "credentials of every thread after crlab restore"
    );
    assert_eq!(
        proc_owner(pid),
        Some(NOT_ROOT.uid),
        "/proc/{pid}/environ's owner after crlab restore (is the process still dumpable?)"
    );
    o.w().trigger();
    o.w().expect_ok();
    o.assert_nothing_left();
}

/// What a test does between the workload's ready and its trigger.
#[derive(Clone, Copy, Debug)]
enum Route {
    /// Nothing: the workload's self-check and the harness on their own.
    WithoutDump,
    /// `crlab dump` (kills the tree), reap it all, `crlab restore --detach` under the same ids.
    DumpThenRestore,
    /// `crlab dump --leave-running`: the tree goes on.
    DumpLeaveRunning,
}

/// Every worker thread `threads` starts, besides its main thread.
const WORKER_THREADS: usize = 16;

#[rstest]
#[case::nanosleep(WaitMode::Nanosleep)]
#[case::sigsuspend(WaitMode::Sigsuspend)]
#[case::pipe_read(WaitMode::PipeRead)]
fn threads_keep_their_state(
    #[case] mode: WaitMode,
    #[values(Route::WithoutDump, Route::DumpThenRestore, Route::DumpLeaveRunning)] route: Route,
) {
    let mut o = Owned::start("threads", mode, &[]);
    let pid = o.root;
    let tids = o.announced_pids("tids");
    assert_eq!(
        tids.len(),
        WORKER_THREADS + 1,
        "threads announces its main thread and {WORKER_THREADS} workers: {tids:?}"
    );
    assert_eq!(tids[0], pid, "the first announced tid is the main thread's");
    // In its wait's system call before its masks are read: a main thread about to enter
    // sigsuspend shows its own mask, inside it the temporary one (a race seen in CI).
    o.w().wait_in_wait_syscall();
    let before = Seen::of(pid);
    assert_eq!(
        before.tids,
        sorted(&tids),
        "/proc/{pid}/task against the tids the threads announced"
    );
    match route {
        Route::WithoutDump => {}
        Route::DumpThenRestore => {
            o.w().dump_ok(&[]);
            o.w().reap_dumped_original();
            for &tid in &tids {
                assert!(
                    !process::pid_exists(tid),
                    "thread {tid} still exists after crlab dump killed its process"
                );
            }
            o.w().restore_detached_ok();
            o.w().wait_in_wait_syscall();
            o.assert_same_as_before(&[("threads", &before)], "crlab restore");
        }
        Route::DumpLeaveRunning => {
            o.w().dump_ok(&["--leave-running"]);
            o.w().assert_running("crlab dump --leave-running");
            o.w().wait_in_wait_syscall();
            o.assert_same_as_before(&[("threads", &before)], "crlab dump --leave-running");
        }
    }
    o.w().trigger();
    o.w().expect_ok();
    o.assert_nothing_left();
}

#[rstest]
#[case::nanosleep(WaitMode::Nanosleep)]
#[case::pipe_read(WaitMode::PipeRead)]
fn tree_keeps_its_state(
    #[case] mode: WaitMode,
    #[values(Route::WithoutDump, Route::DumpThenRestore, Route::DumpLeaveRunning)] route: Route,
) {
    let mut o = Owned::start("tree", mode, &[]);
    o.w().wait_in_wait_syscall();
    let members = o.members();
    let before: Vec<Seen> = members.iter().map(|(_, pid)| Seen::of(*pid)).collect();
    assert_tree_shape(&members, &before);
    let seen_before: Vec<(&str, &Seen)> = members
        .iter()
        .map(|(name, _)| *name)
        .zip(before.iter())
        .collect();
    match route {
        Route::WithoutDump => {}
        Route::DumpThenRestore => {
            o.w().dump_ok(&[]);
            o.w().reap_dumped_original();
            o.reap_dumped_members();
            o.w().restore_detached_ok();
            o.assert_same_as_before(&seen_before, "crlab restore");
        }
        Route::DumpLeaveRunning => {
            o.w().dump_ok(&["--leave-running"]);
            o.w().assert_running("crlab dump --leave-running");
            o.assert_same_as_before(&seen_before, "crlab dump --leave-running");
        }
    }
    o.w().trigger();
    o.w().expect_ok();
    o.assert_nothing_left();
}

/// A child shares with its parent, copy-on-write, the pages neither wrote since the fork, as
/// before the dump: the `cow` workload checks in both processes that those pages are present
/// and not exclusive to either (`PM_MMAP_EXCLUSIVE` of `/proc/self/pagemap`), the pages one
/// of them wrote or dropped after the fork are its own, and the content is each one's.
/// Restored as two copies, every page would be exclusive. `shared-below`: the child also holds
/// a shared page with a grandchild of its own, which the parent does not hold; the child is
/// then created before its parent's memory is built, and its pages the dump recorded as the
/// parent's are copied from the parent's (content checked, sharing not kept).
#[rstest]
fn a_child_shares_its_parents_pages_again(
    #[values("", "shared-below")] variant: &str,
    #[values(Route::WithoutDump, Route::DumpThenRestore, Route::DumpLeaveRunning)] route: Route,
) {
    let args: &[&str] = if variant.is_empty() { &[] } else { &[variant] };
    let mut o = Owned::start("cow", WaitMode::Nanosleep, args);
    o.w().wait_in_wait_syscall();
    let child = o.announced_pids("child")[0];
    match route {
        Route::WithoutDump => {}
        Route::DumpThenRestore => {
            o.w().dump_ok(&[]);
            o.w().reap_dumped_original();
            o.reap_dumped_members();
            o.w().restore_detached_ok();
        }
        Route::DumpLeaveRunning => {
            o.w().dump_ok(&["--leave-running"]);
            o.w().assert_running("crlab dump --leave-running");
        }
    }
    assert_eq!(
        process::parent_of(child),
        Some(o.root),
        "the child {child} of the cow workload"
    );
    o.w().trigger();
    o.w().expect_ok();
    o.assert_nothing_left();
}

/// A tree whose members are in cgroups of their own comes back in them: the root in a cgroup
/// made for the test (under the test's own, in every hierarchy it can make one in), its child
/// `a` in a cgroup below that, the others where the test runs. After the restore,
/// `/proc/PID/cgroup` of every member is what it was before the dump, line for line (the
/// engine's own cgroups, which a restore that did not move them would give them, are the
/// test's, where the root and `a` were not). `removed`: the two cgroups are removed between
/// the dump and the restore (as systemd does when a unit stops); the restore makes them again
/// and says so in a note naming each.
#[rstest]
#[case::kept(false)]
#[case::removed(true)]
fn a_tree_comes_back_in_its_cgroups(#[case] removed: bool) {
    let tag = if removed { "removed" } else { "kept" };
    let cgroups = TestCgroups::make(tag);
    let mut o = Owned::start("tree", WaitMode::Nanosleep, &[]);
    o.w().wait_in_wait_syscall();
    let members = o.members();
    cgroups.enter(members[0].1, "");
    cgroups.enter(members[1].1, "a");
    let before: Vec<(&str, i32, String)> = members
        .iter()
        .map(|&(name, pid)| (name, pid, cgroup_file(pid)))
        .collect();
    for (name, pid, text) in &before[..2] {
        for dir in cgroups.dirs(if *name == "root" { "" } else { "a" }) {
            assert!(
                text.contains(&dir.1),
                "the test could not move {name} (pid {pid}) into {}: {text}",
                dir.1
            );
        }
    }
    o.w().dump_ok(&[]);
    o.w().reap_dumped_original();
    o.reap_dumped_members();
    if removed {
        cgroups.remove();
    }
    let stderr = o.w().restore_detached_ok_with_env(&[]).stderr();
    for (name, pid, text) in &before {
        assert_eq!(
            &cgroup_file(*pid),
            text,
            "after the restore, /proc/{pid}/cgroup of {name}"
        );
    }
    for (_, path) in cgroups.dirs("").iter().chain(&cgroups.dirs("a")) {
        let noted = stderr
            .lines()
            .any(|l| l.contains("crlab: note:") && l.contains(&format!("cgroup {path} ")));
        assert_eq!(
            noted, removed,
            "a note that cgroup {path} was made again (removed: {removed}):\n{stderr}"
        );
    }
    o.w().trigger();
    o.w().expect_ok();
    o.assert_nothing_left();
}

/// A cgroup that cannot be joined fails the restore before any restored process runs,
/// naming the process and the cgroup: child `a`'s cgroups are removed after the dump, and in
/// cgroup v2 its parent allows no new cgroup below it (`cgroup.max.depth` 0), so it cannot be
/// made again. Nothing of the tree is left after the failed restore, nor any cgroup it made
/// (on a hybrid host, `a` in the v1 hierarchies, which come first).
#[test]
fn a_cgroup_that_cannot_be_joined_fails_the_restore() {
    let cgroups = TestCgroups::make("unjoinable");
    let mut o = Owned::start("tree", WaitMode::Nanosleep, &[]);
    o.w().wait_in_wait_syscall();
    let members = o.members();
    cgroups.enter(members[0].1, "");
    cgroups.enter(members[1].1, "a");
    o.w().dump_ok(&[]);
    o.w().reap_dumped_original();
    o.reap_dumped_members();
    let (v2_base, v2_path) = cgroups
        .dirs("")
        .into_iter()
        .find(|(dir, _)| dir.join("cgroup.max.depth").exists())
        .expect("the test's cgroup v2");
    for (dir, _) in cgroups.dirs("a") {
        remove_cgroup(&dir);
    }
    std::fs::write(v2_base.join("cgroup.max.depth"), "0").expect("limiting the depth");
    let run = o.w().restore(&[]);
    let (ok, stderr) = (run.succeeded(), run.stderr());
    assert!(!ok, "the restore must fail when a cgroup cannot be made");
    let a = members[1].1.to_string();
    assert_refusal_names(
        &stderr,
        &[&format!("{v2_path}/a"), "cgroup v2", "cannot join"],
        &[("process", &a)],
    );
    // Every task the restore made was killed: those reparented to us are reaped, and none is
    // left (this fails after a deadline otherwise).
    o.reap_dumped_members();
    for (dir, _) in cgroups.dirs("a") {
        assert!(
            !dir.exists(),
            "the failed restore left the cgroup it made, {}",
            dir.display()
        );
    }
    o.assert_nothing_left();
}

/// A thread in another cgroup than its process (cgroup v2's threaded mode: the process in the
/// test's cgroup, one worker thread in a threaded cgroup below it) is refused at dump, naming
/// the thread, its process and the cgroup; the workload goes on and passes its own check.
#[test]
fn dump_refuses_a_thread_in_another_cgroup() {
    let cgroups = TestCgroups::make("threaded");
    let mut o = Owned::start("threads", WaitMode::Nanosleep, &[]);
    let pid = o.root;
    let tid = o.announced_pids("tids")[3];
    o.w().wait_in_wait_syscall();
    let (v2_base, v2_path) = cgroups
        .dirs("")
        .into_iter()
        .find(|(dir, _)| dir.join("cgroup.max.depth").exists())
        .expect("the test's cgroup v2");
    std::fs::write(v2_base.join("a/cgroup.type"), "threaded").expect("making a threaded cgroup");
    std::fs::write(v2_base.join("cgroup.procs"), pid.to_string()).expect("moving the process");
    std::fs::write(v2_base.join("a/cgroup.threads"), tid.to_string()).expect("moving a thread");
    let stderr = o.w().dump_refused("a thread in another cgroup");
    o.w().trigger();
    o.w().expect_ok();
    assert_refusal_names(
        &stderr,
        &[&format!("{v2_path}/a"), "cgroup v2", "thread"],
        &[("thread", &tid.to_string()), ("process", &pid.to_string())],
    );
    o.assert_nothing_left();
}

/// `/proc/PID/cgroup`.
fn cgroup_file(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .unwrap_or_else(|e| panic!("reading /proc/{pid}/cgroup: {e}"))
}

/// Cgroups a test makes under its own, in every hierarchy where it can (cgroup v2, and the v1
/// hierarchies of a hybrid host, a v1 cpuset given its parent's CPUs and memory nodes), removed
/// on drop (after the processes in them are gone: declared before the [`Owned`] guard).
struct TestCgroups {
    /// Per hierarchy: the directory of the test's cgroup and its path in the hierarchy.
    bases: Vec<(std::path::PathBuf, String)>,
}

impl TestCgroups {
    fn make(tag: &str) -> TestCgroups {
        let own = cgroup_file(process::getpid());
        let mountinfo =
            std::fs::read_to_string("/proc/self/mountinfo").expect("reading /proc/self/mountinfo");
        let name = format!("crlab-test-{}-{tag}", process::getpid());
        let mut bases = Vec::new();
        for line in own.lines() {
            let mut parts = line.splitn(3, ':');
            let (_, controllers, path) = (
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
                parts.next().unwrap_or_default(),
            );
            let mount = mountinfo.lines().find_map(|m| {
                let f: Vec<&str> = m.split(' ').collect();
                let sep = f.iter().position(|x| *x == "-")?;
                let (root, point, fstype, opts) = (f[3], f[4], f[sep + 1], f[sep + 3]);
                let fits = if controllers.is_empty() {
                    fstype == "cgroup2"
                } else {
                    fstype == "cgroup"
                        && controllers
                            .split(',')
                            .all(|c| opts.split(',').any(|o| o == c))
                };
                (fits && root == "/").then(|| point.to_owned())
            });
            let Some(point) = mount else {
                continue;
            };
            let cg = if path == "/" {
                format!("/{name}")
            } else {
                format!("{path}/{name}")
            };
            let dir = std::path::PathBuf::from(format!("{point}{cg}"));
            if std::fs::create_dir(&dir).is_ok() {
                bases.push((dir.clone(), cg));
                give_cpus(&dir);
                std::fs::create_dir(dir.join("a"))
                    .unwrap_or_else(|e| panic!("making {}/a: {e}", dir.display()));
                give_cpus(&dir.join("a"));
            }
        }
        assert!(
            !bases.is_empty(),
            "the test could make a cgroup in no hierarchy:\n{own}"
        );
        TestCgroups { bases }
    }

    /// The directories and cgroup paths of `sub` (`""`: the test's cgroup, `a`: below it).
    fn dirs(&self, sub: &str) -> Vec<(std::path::PathBuf, String)> {
        self.bases
            .iter()
            .map(|(dir, cg)| {
                if sub.is_empty() {
                    (dir.clone(), cg.clone())
                } else {
                    (dir.join(sub), format!("{cg}/{sub}"))
                }
            })
            .collect()
    }

    /// Moves process `pid` into `sub` in every hierarchy.
    fn enter(&self, pid: i32, sub: &str) {
        for (dir, _) in self.dirs(sub) {
            std::fs::write(dir.join("cgroup.procs"), pid.to_string())
                .unwrap_or_else(|e| panic!("moving {pid} into {}: {e}", dir.display()));
        }
    }

    /// Removes the cgroups (empty by now), deepest first.
    fn remove(&self) {
        for (dir, _) in self.dirs("a").into_iter().chain(self.dirs("")) {
            if dir.exists() {
                remove_cgroup(&dir);
            }
        }
    }
}

/// A new cgroup v1 cpuset has no CPUs or memory nodes, and no process can join it: `dir` gets
/// its parent's (nothing to do elsewhere).
fn give_cpus(dir: &std::path::Path) {
    for knob in ["cpuset.cpus", "cpuset.mems"] {
        let file = dir.join(knob);
        if std::fs::read_to_string(&file).is_ok_and(|t| t.trim().is_empty()) {
            let parent = dir.parent().expect("a cgroup has a parent").join(knob);
            let value = std::fs::read_to_string(&parent)
                .unwrap_or_else(|e| panic!("reading {}: {e}", parent.display()));
            std::fs::write(&file, value.trim())
                .unwrap_or_else(|e| panic!("writing {}: {e}", file.display()));
        }
    }
}

/// Removes the empty cgroup `dir`, waiting for the processes that left it to be gone.
fn remove_cgroup(dir: &std::path::Path) {
    let mut last = None;
    for _ in 0..200 {
        match std::fs::remove_dir(dir) {
            Ok(()) => return,
            Err(e) => last = Some(e),
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let msg = format!("removing cgroup {}: {last:?}", dir.display());
    if std::thread::panicking() {
        eprintln!("{msg}");
    } else {
        panic!("{msg}");
    }
}

impl Drop for TestCgroups {
    fn drop(&mut self) {
        for (dir, _) in self.dirs("a").into_iter().chain(self.dirs("")) {
            if dir.exists() {
                remove_cgroup(&dir);
            }
        }
    }
}

/// Session and process-group layouts the restore rebuilds (`sessions`): a child that made its
/// own session after or before forking its child, a group whose leader went back to the
/// root's, a sibling's group. After the restore, every member has the parent, group, session,
/// threads and blocked masks it had (from `/proc`), and checks its ids itself.
#[rstest]
#[case::child_session_after_fork("child-session")]
#[case::own_session("own-session")]
#[case::group_whose_leader_moved("group-moved")]
#[case::sibling_group("sibling-group")]
fn a_session_and_group_layout_is_rebuilt(#[case] layout: &str) {
    let mut o = Owned::start("sessions", WaitMode::Nanosleep, &[layout]);
    o.w().wait_in_wait_syscall();
    let mut pids = vec![o.root];
    pids.extend(o.announced_pids("members"));
    let before: Vec<Seen> = pids.iter().map(|&p| Seen::of(p)).collect();
    let distinct = |f: fn(&Seen) -> i32| {
        let mut v: Vec<i32> = before.iter().map(f).collect();
        v.sort();
        v.dedup();
        v.len()
    };
    assert!(
        distinct(|s| s.sid) > 1 || distinct(|s| s.pgid) > 1,
        "the layout {layout} holds more than the root's session and group: {before:?}"
    );
    o.w().dump_ok(&[]);
    o.w().reap_dumped_original();
    o.reap_dumped_members();
    // Members of another session, reparented to us as zombies (whose command line no longer
    // names the scratch dir), are reaped by pid.
    let me = process::getpid();
    for &p in &pids[1..] {
        process::wait_until(EXIT_TIMEOUT, format!("member {p} to end"), || {
            if process::parent_of(p) == Some(me) {
                reap_if_ended(p);
            }
            !process::pid_exists(p)
        })
        .unwrap_or_else(|e| panic!("{e}"));
    }
    o.w().restore_detached_ok();
    let seen: Vec<(&str, &Seen)> = before.iter().map(|s| ("member", s)).collect();
    o.assert_same_as_before(&seen, "crlab restore");
    o.w().trigger();
    o.w().expect_ok();
    o.assert_nothing_left();
}

/// A tree holding a zombie (A's child A2, which exited with status 7 or was killed by SIGTERM,
/// not reaped) is restored with it: the zombie has its pid, its parent A, its session and
/// group again, every other member is as it was, A's SIGCHLD handler saw no second SIGCHLD,
/// and A's reap after the restore finds the status A2 ended with.
#[rstest]
#[case::exit_status("zombie")]
#[case::killed_by_a_signal("zombie-signal")]
fn a_tree_with_a_zombie_is_restored_with_it(#[case] variant: &str) {
    let mut o = Owned::start("tree", WaitMode::Nanosleep, &[variant]);
    o.w().wait_in_wait_syscall();
    let members = o.members();
    let zombie = o.announced_pids("zombie")[0];
    let a = members[1].1;
    let before: Vec<Seen> = members.iter().map(|(_, pid)| Seen::of(*pid)).collect();
    let zombie_before = stat(zombie).expect("the zombie exists");
    assert_eq!(
        (zombie_before.state, zombie_before.ppid),
        ('Z', a),
        "a2 is a zombie child of a"
    );
    o.w().dump_ok(&[]);
    o.w().reap_dumped_original();
    o.reap_dumped_members();
    o.w().restore_detached_ok();
    let seen_before: Vec<(&str, &Seen)> = members
        .iter()
        .map(|(name, _)| *name)
        .zip(before.iter())
        .collect();
    o.assert_same_as_before(&seen_before, "crlab restore");
    assert_eq!(
        stat(zombie),
        Some(zombie_before),
        "after the restore, a2 is the zombie child of a it was (state, parent, group, session)"
    );
    o.w().trigger();
    o.w().expect_ok();
    o.assert_nothing_left();
}

/// A tree holding a zombie that dumped core (A's child A2, killed by SIGABRT with a core dump,
/// not reaped) makes the dump fail, name the zombie and the core dump, and leave the tree
/// unharmed: every member running freely with the same ids, the
/// zombie still a zombie of A, no complete-looking dump, and the tree passing its own check.
#[test]
fn dump_refuses_a_zombie_that_dumped_core() {
    let mut o = Owned::start("tree", WaitMode::Nanosleep, &["zombie-core"]);
    let members = o.members();
    let zombie = o.announced_pids("zombie")[0];
    let a = members[1].1;
    let before: Vec<Seen> = members.iter().map(|(_, pid)| Seen::of(*pid)).collect();
    assert_tree_shape(&members, &before);
    let zombie_stat = stat(zombie).expect("the zombie exists");
    assert_eq!(
        (zombie_stat.state, zombie_stat.ppid),
        ('Z', a),
        "a2 is a zombie child of a"
    );

    let run = o.w().dump(&[]);
    let (ok, exit, stderr) = (run.succeeded(), run.exit, run.stderr());
    assert!(!ok, "crlab dump must refuse a tree holding a zombie");
    assert!(
        matches!(exit, Some(Exit::Code(c)) if c != 0),
        "crlab dump must exit non-zero, not {exit:?}"
    );
    assert!(
        !o.w().images_dir().join("inventory.img").exists(),
        "a failed dump must not leave a complete-looking dump (inventory.img)"
    );
    o.w().assert_running("a refused dump");
    let seen_before: Vec<(&str, &Seen)> = members
        .iter()
        .map(|(name, _)| *name)
        .zip(before.iter())
        .collect();
    o.assert_same_as_before(&seen_before, "a refused dump");
    let zombie_now = stat(zombie).expect("the zombie still exists after a refused dump");
    assert_eq!(
        (zombie_now.state, zombie_now.ppid),
        ('Z', a),
        "after a refused dump, a2 is still a zombie child of a"
    );
    o.w().trigger();
    o.w().expect_ok();
    o.assert_nothing_left();
    // The wording last, so a wrong message does not hide whether the tree came through.
    assert!(
        stderr.contains("zombie") && stderr.contains("dumped core"),
        "the error must say the tree holds a zombie that dumped core: {stderr}"
    );
    assert!(
        mentions_number(&stderr, &zombie.to_string()),
        "the error must name the zombie's pid {zombie}: {stderr}"
    );
}

/// The members of a tree are where the workload put them: A and B children of the root, A1 of
/// A, B1 of B; A and A1 in the root's process group, B and B1 in B's; all in the root's
/// session.
fn assert_tree_shape(members: &[(&str, i32)], seen: &[Seen]) {
    let pid = |i: usize| members[i].1;
    let (root, a, b) = (pid(0), pid(1), pid(2));
    let expected = [
        (0, root, root),
        (root, root, root),
        (root, b, root),
        (a, root, root),
        (b, b, root),
    ];
    for (i, ((name, p), s)) in members.iter().zip(seen).enumerate() {
        let (ppid, pgid, sid) = expected[i];
        if i > 0 {
            assert_eq!(s.ppid, ppid, "parent of {name} (pid {p})");
        }
        assert_eq!(
            (s.pgid, s.sid),
            (pgid, sid),
            "(pgid, sid) of {name} (pid {p})"
        );
    }
}

/// What `/proc` shows of a process from outside.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Seen {
    pid: i32,
    ppid: i32,
    pgid: i32,
    sid: i32,
    /// Its threads, sorted.
    tids: Vec<i32>,
    /// Each thread's `SigBlk` line.
    blocked: Vec<(i32, String)>,
}

impl Seen {
    fn of(pid: i32) -> Seen {
        let st = stat(pid).unwrap_or_else(|| panic!("pid {pid} does not exist"));
        let tids = process::task_tids(pid);
        let blocked = tids
            .iter()
            .map(|&tid| {
                let blk =
                    process::task_status(pid, tid, "SigBlk").unwrap_or_else(|| "gone".to_owned());
                (tid, blk)
            })
            .collect();
        Seen {
            pid,
            ppid: st.ppid,
            pgid: st.pgid,
            sid: st.sid,
            tids,
            blocked,
        }
    }
}

/// The fields of `/proc/<pid>/stat` used here.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Stat {
    state: char,
    ppid: i32,
    pgid: i32,
    sid: i32,
}

fn stat(pid: i32) -> Option<Stat> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = text.get(text.rfind(')')? + 2..)?;
    let mut fields = rest.split_whitespace();
    let state = fields.next()?.chars().next()?;
    let mut num = || fields.next()?.parse::<i32>().ok();
    Some(Stat {
        state,
        ppid: num()?,
        pgid: num()?,
        sid: num()?,
    })
}

fn sorted(v: &[i32]) -> Vec<i32> {
    let mut v = v.to_vec();
    v.sort();
    v
}

/// One workload and every process that belongs to it; see the module docs.
struct Owned {
    /// The workload (its root process); `None` only while dropping.
    w: Option<Workload>,
    /// The root's pid, which is also its session id.
    root: i32,
    /// The scratch dir, which every process of the test names on its command line.
    scratch: String,
}

impl Owned {
    /// Starts workload `name` and waits for its ready file.
    fn start(name: &str, mode: WaitMode, args: &[&str]) -> Owned {
        Owned::adopt(Workload::start(name, mode, args))
    }

    /// Waits for `w`'s ready file and owns it.
    fn adopt(w: Workload) -> Owned {
        let root = w.pid();
        let scratch = w.scratch_dir().to_string_lossy().into_owned();
        let mut o = Owned {
            w: Some(w),
            root,
            scratch,
        };
        o.w().wait_ready();
        o
    }

    fn w(&mut self) -> &mut Workload {
        self.w.as_mut().expect("the workload lives until drop")
    }

    /// The pids a ready-file line lists.
    fn announced_pids(&mut self, key: &str) -> Vec<i32> {
        let value = self
            .w()
            .ready()
            .get(key)
            .unwrap_or_else(|| panic!("the ready file has no {key} line"))
            .to_owned();
        value
            .split_whitespace()
            .map(|p| {
                p.parse()
                    .unwrap_or_else(|_| panic!("{key} line holds {p:?}, not a pid"))
            })
            .collect()
    }

    /// The tree's members, root first, in the tree workload's turn order.
    fn members(&mut self) -> Vec<(&'static str, i32)> {
        let mut out = vec![("root", self.root)];
        for name in ["a", "b", "a1", "b1"] {
            out.push((name, self.announced_pids(&format!("member-{name}"))[0]));
        }
        out
    }

    /// After a dump, each process `seen` lists exists again (or still) with the same parent,
    /// process group, session, threads and blocked masks, and every thread runs freely.
    fn assert_same_as_before(&mut self, seen: &[(&str, &Seen)], after: &str) {
        for (name, before) in seen {
            let pid = before.pid;
            if let Some(why) = process::not_running_freely(pid) {
                panic!("after {after}, {name}: {why}");
            }
            let now = Seen::of(pid);
            assert_eq!(
                now.tids, before.tids,
                "after {after}, the tids of {name} (pid {pid}) in /proc/{pid}/task"
            );
            assert_eq!(
                (now.ppid, now.pgid, now.sid),
                (before.ppid, before.pgid, before.sid),
                "after {after}, (ppid, pgid, sid) of {name} (pid {pid})"
            );
            assert_eq!(
                now.blocked, before.blocked,
                "after {after}, the SigBlk of each thread of {name} (pid {pid})"
            );
            for &tid in &now.tids {
                if let Some(why) = process::thread_not_running_freely(pid, tid) {
                    panic!("after {after}, {name}: {why}");
                }
            }
        }
    }

    /// After a dump that kills, waits for every other process of the tree to be gone,
    /// reaping those that were reparented to us (we are the subreaper), so their pids are
    /// free for the restore.
    fn reap_dumped_members(&mut self) {
        let me = process::getpid();
        let mut left = Vec::new();
        let waited =
            process::wait_until(EXIT_TIMEOUT, "the dumped tree's processes to end", || {
                left = self.find();
                for &pid in &left {
                    if process::parent_of(pid) == Some(me) {
                        reap_if_ended(pid);
                    }
                }
                left.is_empty()
            });
        if let Err(e) = waited {
            panic!(
                "{e}: crlab dump without --leave-running must kill every process of the tree; \
                 left: {}",
                describe(&left)
            );
        }
    }

    /// Whether the root pid still belongs to this test: our child (the original, alive or a
    /// zombie, or the restored process).
    fn root_held(&self) -> bool {
        process::parent_of(self.root) == Some(process::getpid())
    }

    /// Every process of this test: anything naming the scratch dir on its command line, and
    /// while the root pid is ours, everything in its session or below it; zombies of the
    /// session reparented to us also after the root is gone.
    fn find(&self) -> Vec<i32> {
        let me = process::getpid();
        let procs: HashMap<i32, Stat> = all_pids()
            .into_iter()
            .filter_map(|p| Some((p, stat(p)?)))
            .collect();
        let held = self.root_held();
        let below_root = |mut p: i32| {
            for _ in 0..64 {
                match procs.get(&p) {
                    Some(st) if st.ppid == self.root => return true,
                    Some(st) if st.ppid > 1 => p = st.ppid,
                    _ => return false,
                }
            }
            false
        };
        let mut out: Vec<i32> = procs
            .iter()
            .filter(|(&p, st)| {
                p != me
                    && (mentions(p, &self.scratch)
                        || (held && (p == self.root || st.sid == self.root || below_root(p)))
                        || (p != self.root && st.ppid == me && st.sid == self.root))
            })
            .map(|(&p, _)| p)
            .collect();
        out.sort();
        out
    }

    /// Fails the test if any process of it is left.
    fn assert_nothing_left(&self) {
        let left = self.find();
        assert!(
            left.is_empty(),
            "processes of this test are left: {}",
            describe(&left)
        );
    }
}

impl Drop for Owned {
    fn drop(&mut self) {
        let me = process::getpid();
        // Kill the root first, so nothing waits for it to reap a child, then everything
        // else until nothing is left; reap what is ours, except the root: its guard does.
        let deadline = Instant::now() + EXIT_TIMEOUT;
        loop {
            let found = self.find();
            let others: Vec<i32> = found.iter().copied().filter(|&p| p != self.root).collect();
            if found.contains(&self.root) {
                // SAFETY: find lists the root only while it is ours (our unreaped child, or
                // naming our scratch dir), so its pid cannot belong to anyone else.
                unsafe { libc::kill(self.root, libc::SIGKILL) };
            }
            if others.is_empty() || Instant::now() >= deadline {
                break;
            }
            for &pid in &others {
                // SAFETY: `pid` is a process of this test (find), alive or a zombie, so its
                // pid is not reused.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                if process::parent_of(pid) == Some(me) {
                    reap_if_ended(pid);
                }
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        // The workload's guard kills and reaps the root.
        drop(self.w.take());
        let left = self.find();
        if !left.is_empty() {
            let msg = format!(
                "processes of this test are left after its guard killed them: {}",
                describe(&left)
            );
            if std::thread::panicking() {
                eprintln!("{msg}");
            } else {
                panic!("{msg}");
            }
        }
    }
}

/// Reaps child `pid` if it has ended.
fn reap_if_ended(pid: i32) {
    let mut status = 0;
    // SAFETY: waitpid for one child of ours writes the status into a live int.
    unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|dir| {
            dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn mentions(pid: i32, needle: &str) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains(needle))
        .unwrap_or(false)
}

/// Pids with their state, parent and command line, for a failure message.
fn describe(pids: &[i32]) -> String {
    let parts: Vec<String> = pids
        .iter()
        .map(|&p| {
            let st = stat(p);
            let cmd = std::fs::read(format!("/proc/{p}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
                .unwrap_or_default();
            format!("{p} {st:?} {}", cmd.trim())
        })
        .collect();
    parts.join("; ")
}
