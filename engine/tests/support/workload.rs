//! Driving one workload through its protocol: start it, wait for ready, dump and restore it
//! with crlab, trigger it, collect its result; everything it started is killed and reaped on
//! drop, and on a failure the report holds the workload's log and every crlab run.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::binaries;
use super::crlab::{self, Run};
use super::driver::{Driver, Local};
use super::process::{self, Exit, Proc};
use super::protocol::{self, Outcome, Ready, WaitMode};

/// How long a workload may take to set up.
pub const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long a triggered workload may take to check itself and exit.
pub const RESULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a killed process may take to be reapable.
pub const EXIT_TIMEOUT: Duration = Duration::from_secs(20);

/// One workload process (original, then restored under the same pid) and its files:
/// `<scratch>/state` (the workload's state dir), `<scratch>/images`, crlab's output.
/// Who a workload runs as (see [`Workload::start_as`]).
#[derive(Debug, Clone, Copy)]
pub struct Identity {
    pub uid: u32,
    pub gid: u32,
    pub groups: &'static [u32],
}

pub struct Workload {
    /// The workload binary's name.
    pub name: String,
    /// How it waits.
    pub mode: WaitMode,
    // Declared before `scratch`: the process dies before its files go.
    proc: Proc,
    ready: Option<Ready>,
    runs: Vec<Run>,
    scratch: tempfile::TempDir,
    state: PathBuf,
}

impl Workload {
    /// Starts workload `name` in wait mode `mode` with extra arguments, in its own session,
    /// with a fixed small environment.
    pub fn start(name: &str, mode: WaitMode, args: &[&str]) -> Workload {
        Workload::start_inner(name, mode, args, None)
    }

    /// The same, running as another user: `ids` gives its user id, group id and
    /// supplementary groups (its state directory is made its own).
    pub fn start_as(name: &str, mode: WaitMode, args: &[&str], ids: Identity) -> Workload {
        Workload::start_inner(name, mode, args, Some(ids))
    }

    fn start_inner(name: &str, mode: WaitMode, args: &[&str], ids: Option<Identity>) -> Workload {
        process::setup();
        let bin = binaries::workload(name);
        let scratch = tempfile::Builder::new()
            .prefix(&format!("crlab-e2e-{name}-"))
            .tempdir()
            .expect("creating a scratch directory");
        let root = std::fs::canonicalize(scratch.path()).expect("canonicalizing the scratch dir");
        let state = root.join("state");
        std::fs::create_dir(&state).expect("creating the state dir");
        std::fs::create_dir(root.join("images")).expect("creating the images dir");
        if let Some(ids) = &ids {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755))
                .expect("opening the scratch dir to the workload's user");
            std::os::unix::fs::chown(&state, Some(ids.uid), Some(ids.gid))
                .expect("giving the state dir to the workload's user");
        }
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(state.join(protocol::LOG))
            .expect("creating the workload log");
        let log2 = log.try_clone().expect("duplicating the log descriptor");
        let mut cmd = Command::new(&bin);
        cmd.arg(&state)
            .arg(mode.name())
            .args(args)
            .current_dir(&state)
            .env_clear()
            .env(protocol::MARK_ENV, protocol::MARK_VALUE)
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(log2);
        // SAFETY: the closure runs in the forked child before exec and makes only
        // async-signal-safe system calls (setsid, close_range, sigaction, umask) on the
        // child's own state, touching no memory shared with the parent.
        unsafe {
            cmd.pre_exec(|| {
                // Its own session and process group: the tree crlab dumps is self-contained.
                if libc::setsid() == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                // Nothing but 0, 1 and 2 from the test runner (cargo's jobserver, the CI's
                // descriptors): close-on-exec for the rest, so std's exec-error pipe works.
                const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
                libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
                // Default dispositions and umask whatever the runner left, so the state a
                // workload starts with (and a dump's snapshot) is the same everywhere.
                for sig in 1..=64 {
                    if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                        libc::signal(sig, libc::SIG_DFL);
                    }
                }
                libc::umask(0o022);
                Ok(())
            });
        }
        if let Some(ids) = ids {
            // SAFETY: as above: setgroups, setresgid and setresuid are async-signal-safe
            // calls on the child's own credentials; the group list was made before the fork.
            unsafe {
                cmd.pre_exec(move || {
                    let g = ids.groups;
                    if libc::setgroups(g.len(), g.as_ptr()) == -1
                        || libc::setresgid(ids.gid, ids.gid, ids.gid) == -1
                        || libc::setresuid(ids.uid, ids.uid, ids.uid) == -1
                    {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
        }
        // Reaped by pid through the `Proc` guard, not through `Child`.
        #[allow(clippy::zombie_processes)]
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("starting workload {}: {e}", bin.display()));
        Workload {
            name: name.to_owned(),
            mode,
            proc: Proc::adopt(i32::try_from(child.id()).expect("a pid fits a pid_t")),
            ready: None,
            runs: Vec::new(),
            scratch,
            state,
        }
    }

    /// The pid (the original's, and the restored process's).
    pub fn pid(&self) -> i32 {
        self.proc.pid()
    }

    /// The workload's state dir.
    pub fn state_dir(&self) -> &Path {
        &self.state
    }

    /// The scratch dir holding the state dir, the images dir and crlab's output.
    pub fn scratch_dir(&self) -> &Path {
        self.state.parent().unwrap_or(&self.state)
    }

    /// The images dir crlab dumps into.
    pub fn images_dir(&self) -> PathBuf {
        self.state.with_file_name("images")
    }

    /// The ready file's content (after [`Workload::wait_ready`]).
    pub fn ready(&self) -> &Ready {
        self.ready
            .as_ref()
            .expect("the ready file is read by wait_ready first")
    }

    /// The workload's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.state.join(protocol::LOG)).unwrap_or_default()
    }

    /// Waits for the ready file and reads it; fails at once if the workload exits instead.
    pub fn wait_ready(&mut self) -> &Ready {
        let mut driver = Driver::new(Local, &self.state);
        let ready = driver
            .wait_ready(READY_TIMEOUT, ended(&mut self.proc))
            .unwrap_or_else(|e| panic!("{}: {}", self.name, e.with_sources()));
        assert_eq!(ready.pid, self.pid(), "pid in the ready file");
        assert_eq!(ready.wait, self.mode, "wait mode in the ready file");
        self.ready.insert(ready)
    }

    /// Waits (after [`Workload::wait_ready`]) until the workload blocks in the system call its
    /// wait mode sleeps in, as `/proc/<pid>/syscall` shows it, so that a dump interrupts that
    /// call and the restore has to restart it, rather than catching the workload in the few
    /// instructions between its ready file and its wait. Returns at once for [`WaitMode::Spin`].
    ///
    /// Also valid after a restore (the pid is then the restored process, not our child): a
    /// restored thread restarts its interrupted call a moment after `crlab restore` returns,
    /// and until it has, `/proc` shows the masks of the instructions before the call.
    pub fn wait_in_wait_syscall(&mut self) {
        let nr = match self.mode {
            WaitMode::Nanosleep => libc::SYS_clock_nanosleep,
            WaitMode::NanosleepAsm => libc::SYS_nanosleep,
            WaitMode::PipeRead => libc::SYS_read,
            WaitMode::Sigsuspend => libc::SYS_rt_sigsuspend,
            WaitMode::Spin => return,
        };
        let nr = nr.to_string();
        let pid = self.pid();
        let path = format!("/proc/{pid}/syscall");
        let what = format!("{} to block in system call {nr} ({path})", self.name);
        let proc = &mut self.proc;
        let in_call = |path: &str| {
            std::fs::read_to_string(path)
                .is_ok_and(|t| t.split_whitespace().next() == Some(nr.as_str()))
        };
        // Our child ended and nothing (a restored process) holds its pid: stop waiting.
        let mut gone = false;
        let waited = process::wait_until(READY_TIMEOUT, &what, || {
            if in_call(&path) {
                return true;
            }
            gone = proc.has_ended() && !process::pid_exists(pid);
            gone
        });
        if let Err(e) = waited {
            panic!("{e}");
        }
        if gone {
            panic!(
                "{} (pid {pid}) ended ({}) before blocking in its wait; result: {:?}",
                self.name,
                self.proc
                    .exit()
                    .map_or_else(|| "not our child".to_owned(), |e| e.to_string()),
                self.result_file()
            );
        }
    }

    /// Runs `crlab <args>`, recording the run for the failure report.
    pub fn crlab(&mut self, args: &[OsString]) -> &Run {
        self.crlab_with_env(args, &[])
    }

    /// Runs `crlab <args>` with `env` added to its environment, recording the run.
    pub fn crlab_with_env(&mut self, args: &[OsString], env: &[(&str, &str)]) -> &Run {
        let tag = format!("crlab-{}", self.runs.len());
        let run = crlab::run_with_env(args, env, self.scratch.path(), &tag);
        self.runs.push(run);
        self.runs.last().expect("just pushed")
    }

    /// Keeps a crlab run made outside [`Workload::crlab`] for the failure report.
    pub fn record(&mut self, run: Run) {
        self.runs.push(run);
    }

    /// `crlab dump --tree <pid> --images-dir <images> [extra]`.
    pub fn dump(&mut self, extra: &[&str]) -> &Run {
        self.dump_with_env(extra, &[])
    }

    /// [`Workload::dump`] with `env` added to crlab's environment.
    pub fn dump_with_env(&mut self, extra: &[&str], env: &[(&str, &str)]) -> &Run {
        let mut args: Vec<OsString> = vec![
            "dump".into(),
            "--tree".into(),
            self.pid().to_string().into(),
            "--images-dir".into(),
            self.images_dir().into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        self.crlab_with_env(&args, env)
    }

    /// Dumps and asserts crlab succeeded and wrote a complete dump.
    pub fn dump_ok(&mut self, extra: &[&str]) {
        let run = self.dump(extra);
        let (ok, exit) = (run.succeeded(), run.exit_text());
        assert!(ok, "crlab dump of {} failed: {exit}", self.name);
        assert!(
            self.images_dir().join("inventory.img").is_file(),
            "crlab dump succeeded but wrote no inventory.img"
        );
    }

    /// Reaps the original after a dump that kills it: it must end by a signal, and its pid
    /// must then be free.
    pub fn reap_dumped_original(&mut self) {
        let exit = self
            .proc
            .reap_within(EXIT_TIMEOUT, "the dumped original")
            .unwrap_or_else(|e| panic!("{e}: crlab dump without --leave-running must kill it"));
        assert!(
            matches!(exit, Exit::Signal(_)),
            "the dumped original was not killed but ended with {exit}"
        );
        self.assert_gone();
    }

    /// `crlab restore --images-dir <images> [extra]`.
    pub fn restore(&mut self, extra: &[&str]) -> &Run {
        self.restore_with_env(extra, &[])
    }

    /// [`Workload::restore`] with `env` added to crlab's environment.
    pub fn restore_with_env(&mut self, extra: &[&str], env: &[(&str, &str)]) -> &Run {
        let mut args: Vec<OsString> = vec![
            "restore".into(),
            "--images-dir".into(),
            self.images_dir().into(),
        ];
        args.extend(extra.iter().map(OsString::from));
        self.crlab_with_env(&args, env)
    }

    /// `crlab show --images-dir <images>`, asserted to succeed, as JSON.
    pub fn show_json(&mut self) -> serde_json::Value {
        let args = [
            "show".into(),
            "--images-dir".into(),
            self.images_dir().into(),
        ];
        let run = self.crlab(&args);
        assert!(run.succeeded(), "crlab show failed");
        serde_json::from_str(&run.stdout())
            .unwrap_or_else(|e| panic!("crlab show printed no JSON: {e}"))
    }

    /// The pidfile restores write.
    pub fn pidfile(&self) -> PathBuf {
        self.state.with_file_name("restored.pid")
    }

    /// `crlab restore --detach --pidfile`, asserting it succeeded, that the restored process
    /// has the original pid, is now our child (we are its subreaper) and runs freely.
    pub fn restore_detached_ok(&mut self) {
        self.restore_detached_ok_with_env(&[]);
    }

    /// [`Workload::restore_detached_ok`] with `env` added to crlab's environment; returns the
    /// run.
    pub fn restore_detached_ok_with_env(&mut self, env: &[(&str, &str)]) -> &Run {
        let pidfile = self.pidfile();
        let args = [
            "--detach",
            "--pidfile",
            pidfile.to_str().expect("utf-8 path"),
        ];
        let run = self.restore_with_env(&args, env);
        let (ok, exit) = (run.succeeded(), run.exit_text());
        assert!(ok, "crlab restore --detach of {} failed: {exit}", self.name);
        let text = std::fs::read_to_string(&pidfile)
            .unwrap_or_else(|e| panic!("reading the pidfile {}: {e}", pidfile.display()));
        let pid: i32 = text
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("pidfile holds {text:?}, not a pid"));
        assert_eq!(pid, self.pid(), "the restored pid must be the original's");
        // SAFETY: getpid cannot fail.
        let me = unsafe { libc::getpid() };
        assert_eq!(
            process::parent_of(pid),
            Some(me),
            "the restored process must be reparented to the test process (its subreaper)"
        );
        self.proc.readopt();
        if let Some(why) = process::not_running_freely(pid) {
            panic!(
                "after crlab restore --detach returned, {why}; result: {:?}",
                self.result_file()
            );
        }
        self.runs.last().expect("the restore's run")
    }

    /// Makes the writes the ready file asks for, then wakes the workload the way it waits.
    pub fn trigger(&self) {
        self.trigger_with_byte(protocol::TRIGGER_BYTE);
    }

    /// As [`Workload::trigger`], writing `byte` if the trigger is a pipe.
    pub fn trigger_with_byte(&self, byte: u8) {
        let ready = self.ready();
        let mut driver = Driver::new(Local, &self.state);
        driver
            .external_writes(ready)
            .and_then(|()| driver.wake(ready, self.pid(), byte))
            .unwrap_or_else(|e| panic!("triggering {}: {}", self.name, e.with_sources()));
    }

    fn result_file(&self) -> Option<String> {
        std::fs::read_to_string(self.state.join(protocol::RESULT)).ok()
    }

    /// Waits for the triggered workload's result and asserts it is `ok`, that it exits with
    /// status 0, and that the pid is gone afterwards. A workload killed before it could write a
    /// result says how it ended.
    pub fn expect_ok(&mut self) {
        let mut driver = Driver::new(Local, &self.state);
        let outcome = driver
            .wait_result(RESULT_TIMEOUT, ended(&mut self.proc))
            .unwrap_or_else(|e| {
                panic!(
                    "{} checked its state after the trigger: {}",
                    self.name,
                    e.with_sources()
                )
            });
        let exit = self
            .proc
            .reap_within(EXIT_TIMEOUT, &format!("{} after its result", self.name))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            outcome,
            Outcome::Passed,
            "{} checked its state after the trigger; it ended with {exit}",
            self.name
        );
        assert_eq!(exit, Exit::Code(0), "{} exit", self.name);
        self.assert_gone();
    }

    /// Reaps whatever holds the workload's pid if it is a child of ours that has ended (the
    /// original, a restored process, or one a failed restore left to us, the subreaper);
    /// returns whether the pid is free.
    pub fn reap_if_ended(&mut self) -> bool {
        // SAFETY: getpid cannot fail.
        let me = unsafe { libc::getpid() };
        if self.proc.exit().is_some() && process::parent_of(self.pid()) == Some(me) {
            self.proc.readopt();
        }
        self.proc.try_reap();
        !process::pid_exists(self.pid())
    }

    /// Dumps with no options and asserts the dump was refused: a failure exit, no
    /// complete-looking dump (`inventory.img`), the workload still running freely. `what` names
    /// what is refused, for the messages. Returns crlab's stderr.
    pub fn dump_refused(&mut self, what: &str) -> String {
        let run = self.dump(&[]);
        let (ok, exit, stderr) = (run.succeeded(), run.exit, run.stderr());
        assert!(!ok, "crlab dump must refuse {what}");
        assert!(
            matches!(exit, Some(Exit::Code(c)) if c != 0),
            "crlab dump must exit non-zero, not {exit:?}"
        );
        assert!(
            !self.images_dir().join("inventory.img").exists(),
            "a refused dump must not leave a complete-looking dump (inventory.img)"
        );
        self.assert_running("a refused dump");
        stderr
    }

    /// The original is still running freely (not killed, stopped or traced).
    pub fn assert_running(&mut self, after: &str) {
        assert!(
            !self.proc.has_ended(),
            "{} ended ({:?}) after {after}; result: {:?}",
            self.name,
            self.proc.exit(),
            self.result_file()
        );
        if let Some(why) = process::not_running_freely(self.pid()) {
            panic!("after {after}, {why}");
        }
    }

    /// The pid exists no more.
    pub fn assert_gone(&self) {
        assert!(
            !process::pid_exists(self.pid()),
            "pid {} still exists ({:?})",
            self.pid(),
            process::status_field(self.pid(), "State")
        );
    }

    /// Total size of the `pages-*.img` files of the dump.
    pub fn pages_bytes(&self) -> u64 {
        std::fs::read_dir(self.images_dir())
            .expect("listing the images dir")
            .filter_map(Result::ok)
            .filter(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("pages-") && name.ends_with(".img")
            })
            .filter_map(|e| e.metadata().ok())
            .map(|m| m.len())
            .sum()
    }

    /// What to read when a test fails: the workload's log, result and every crlab run.
    pub fn report(&self) -> String {
        let mut out = format!(
            "=== workload {} (wait {}, pid {}) in {}\n--- log\n{}",
            self.name,
            self.mode,
            self.pid(),
            self.state.display(),
            self.log().trim_end()
        );
        if let Some(r) = self.result_file() {
            out.push_str(&format!("\n--- result\n{r}"));
        }
        for run in &self.runs {
            out.push_str(&format!("\n{run}"));
        }
        out
    }
}

/// For the driver's waits: how `proc` ended, once it has (it is reaped then).
fn ended(proc: &mut Proc) -> impl FnMut() -> Option<String> + '_ {
    || proc.try_reap().map(|exit| exit.to_string())
}

impl Drop for Workload {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.report());
        }
        // A restored process that was never adopted (the test failed before that) is still
        // ours if it is our child: kill and reap it too.
        // SAFETY: getpid cannot fail.
        let me = unsafe { libc::getpid() };
        if self.proc.exit().is_some() && process::parent_of(self.pid()) == Some(me) {
            self.proc.readopt();
        }
        // So is anything crlab left behind (killed on a timeout, its forks are reparented to
        // us): our children whose command line names this test's scratch dir.
        let scratch = self.scratch_dir().to_string_lossy().into_owned();
        for pid in process::pids_mentioning(&scratch) {
            if pid != self.pid() && process::parent_of(pid) == Some(me) {
                drop(Proc::adopt(pid));
            }
        }
    }
}

/// Reaps a child of the dumped tree that the dump killed: orphaned, it is ours (the tests
/// are a subreaper), and its pid must be free before the restore. It must end by a signal.
pub fn reap_dumped_child(child: i32) {
    let exit = super::process::Proc::adopt(child)
        .reap_within(EXIT_TIMEOUT, "the dumped child")
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(
        matches!(exit, super::process::Exit::Signal(_)),
        "the dumped child ended with {exit}"
    );
}

/// Asserts a refusal's message names every one of `words` and every number of `numbers`
/// (`(what it is, the number)`, such as `("process", "1234")`) as a whole number.
pub fn assert_refusal_names(stderr: &str, words: &[&str], numbers: &[(&str, &str)]) {
    for word in words {
        assert!(
            stderr.contains(word),
            "the refusal must name {word:?}: {stderr}"
        );
    }
    for (what, number) in numbers {
        assert!(
            mentions_number(stderr, number),
            "the refusal must name the {what} {number}: {stderr}"
        );
    }
}

/// Whether `text` holds `number` as a whole number (not as part of a longer one).
pub fn mentions_number(text: &str, number: &str) -> bool {
    text.split(|c: char| !c.is_ascii_digit())
        .any(|token| token == number)
}
