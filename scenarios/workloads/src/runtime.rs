//! The workload side of the protocol: arguments, the ready file, the wait, the checks every
//! workload makes, and the result file.

use std::ffi::CString;
use std::fmt::Debug;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::protocol::{self, ExternalWrite, Ready, Trigger, WaitMode};
use crate::thread_state::{self, ThreadState};
use crate::{regs, sys};

/// The signal that wakes a workload in [`WaitMode::Sigsuspend`].
pub const TRIGGER_SIGNAL: i32 = libc::SIGTERM;

/// Set by the trigger signal's handler.
static TRIGGERED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_trigger(_sig: libc::c_int) {
    TRIGGERED.store(true, Ordering::SeqCst);
}

/// The failures found while checking state.
#[derive(Debug, Default)]
pub struct Checks {
    failures: Vec<String>,
}

impl Checks {
    /// No failure yet (allocates nothing, so it is safe right after waking).
    pub fn new() -> Checks {
        Checks::default()
    }

    /// Records a failure.
    pub fn fail(&mut self, what: impl Into<String>) {
        self.failures.push(what.into());
    }

    /// Records `what` as failed unless `ok`.
    pub fn that(&mut self, ok: bool, what: &str) {
        if !ok {
            self.fail(what);
        }
    }

    /// Records a failure naming `what` unless `found == expected`.
    pub fn eq<T: PartialEq + Debug>(&mut self, what: &str, expected: T, found: T) {
        if expected != found {
            self.fail(format!("{what}: found {found:?}, expected {expected:?}"));
        }
    }

    /// The value, or `None` with the error recorded as a failure of `what`.
    pub fn io<T>(&mut self, what: &str, r: io::Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(e) => {
                self.fail(format!("{what}: {e}"));
                None
            }
        }
    }

    /// Whether nothing failed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The failures recorded, in order.
    pub fn into_failures(self) -> Vec<String> {
        self.failures
    }
}

/// State every workload records before waiting and compares after.
struct Baseline {
    pid: i32,
    tid: i32,
    pgid: i32,
    sid: i32,
    comm: String,
    fds: Vec<(i32, String)>,
    status: Vec<(String, String)>,
    sigmask: u64,
    thread: ThreadState,
}

/// The `/proc/self/status` lines that must not change across a checkpoint: signals and
/// credentials.
const STATUS_KEYS: [&str; 8] = [
    "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt", "Uid", "Gid", "Groups",
];

impl Baseline {
    fn record() -> io::Result<Baseline> {
        Ok(Baseline {
            pid: sys::getpid(),
            tid: sys::gettid(),
            // SAFETY: getpgid(0) and getsid(0) ask about the caller and cannot fail.
            pgid: unsafe { libc::getpgid(0) },
            // SAFETY: as above.
            sid: unsafe { libc::getsid(0) },
            comm: std::fs::read_to_string("/proc/self/comm")?,
            fds: sys::fd_table()?,
            status: status_lines()?,
            sigmask: sys::sigmask(),
            thread: ThreadState::record().map_err(io::Error::other)?,
        })
    }
}

fn status_lines() -> io::Result<Vec<(String, String)>> {
    STATUS_KEYS
        .iter()
        .map(|k| Ok((k.to_string(), sys::status_field(k)?)))
        .collect()
}

/// How the workload waits, prepared before the ready file is written.
enum Waiter {
    Nanosleep(CString),
    PipeRead {
        read_fd: i32,
    },
    Sigsuspend,
    Spin(CString),
    /// The file to look for, and whether to sleep [`protocol::LONG_SLEEP_SECS`] at a time.
    NanosleepAsm(CString, bool),
}

/// One running workload: its arguments and its side of the protocol.
pub struct Workload {
    name: &'static str,
    state_dir: PathBuf,
    mode: WaitMode,
    args: Vec<String>,
    external_writes: Vec<ExternalWrite>,
    extra: Vec<(String, String)>,
    baseline: Option<Baseline>,
    common_checked: bool,
    brk_across_wait: (u64, u64),
}

impl Workload {
    /// Reads `<state-dir> <wait-mode> [args...]` from the command line; prints the usage and
    /// exits with [`protocol::EXIT_SETUP`] if they are wrong.
    pub fn from_args(name: &'static str) -> Workload {
        let argv: Vec<String> = std::env::args().skip(1).collect();
        let modes: Vec<&str> = WaitMode::ALL.iter().map(|m| m.name()).collect();
        let usage = || -> ! {
            eprintln!(
                "usage: {name} <state-dir> <wait-mode> [args...]\n  wait modes: {}",
                modes.join(", ")
            );
            std::process::exit(protocol::EXIT_SETUP)
        };
        let (Some(dir), Some(mode)) = (argv.first(), argv.get(1)) else {
            usage()
        };
        let Some(mode) = WaitMode::from_name(mode) else {
            eprintln!("{name}: unknown wait mode {mode:?}");
            usage()
        };
        Workload {
            name,
            // Absolute, as /proc/self/maps and the cwd show paths.
            state_dir: std::fs::canonicalize(dir).unwrap_or_else(|_| PathBuf::from(dir)),
            mode,
            args: argv[2..].to_vec(),
            external_writes: Vec::new(),
            extra: Vec::new(),
            baseline: None,
            common_checked: false,
            brk_across_wait: (0, 0),
        }
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// A file of the state directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.state_dir.join(file)
    }

    /// The wait mode.
    pub fn mode(&self) -> WaitMode {
        self.mode
    }

    /// The arguments after the wait mode.
    pub fn args(&self) -> &[String] {
        &self.args
    }

    /// Adds a `key value` line to the ready file.
    pub fn announce(&mut self, key: &str, value: impl ToString) {
        self.extra.push((key.to_owned(), value.to_string()));
    }

    /// Asks the driver to write `text` at `offset` of state-dir file `file` before triggering.
    pub fn request_external_write(&mut self, file: &str, offset: u64, text: &str) {
        self.external_writes.push(ExternalWrite {
            file: file.to_owned(),
            offset,
            text: text.to_owned(),
        });
    }

    /// The value of a setup step, or a `fail: setup: ...` result and exit if it failed.
    pub fn setup<T>(&self, what: &str, r: io::Result<T>) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.setup_failed(&format!("{what}: {e}")),
        }
    }

    /// Writes a `fail: setup: ...` result and exits with [`protocol::EXIT_SETUP`].
    pub fn setup_failed(&self, what: &str) -> ! {
        let text = format!("{}setup: {what}", protocol::RESULT_FAIL_PREFIX);
        eprintln!("{}: {text}", self.name);
        // Nothing more can be done if even this fails: the exit status still tells.
        let _ = sys::write_atomically(&self.path(protocol::RESULT), text.as_bytes());
        std::process::exit(protocol::EXIT_SETUP)
    }

    /// Prepares the wait, records the baseline, writes the ready file, and waits for the
    /// trigger. The returned checks hold what the wait itself found wrong (registers changed,
    /// a system call that failed where the kernel would have restarted it); nothing is
    /// allocated between waking and returning unless something failed.
    pub fn wait(&mut self) -> Checks {
        let (waiter, trigger) = self.prepare_wait();
        self.setup(
            "adding ADDR_NO_RANDOMIZE to the personality",
            thread_state::add_personality_flag(),
        );
        let baseline = self.setup("recording the baseline", Baseline::record());
        let ready = Ready {
            pid: baseline.pid,
            wait: self.mode,
            trigger,
            external_writes: self.external_writes.clone(),
            extra: self.extra.clone(),
        };
        self.baseline = Some(baseline);
        self.setup(
            "writing the ready file",
            sys::write_atomically(&self.path(protocol::READY), ready.to_text().as_bytes()),
        );
        eprintln!(
            "{}: ready (pid {}, wait {}, trigger {})",
            self.name, ready.pid, self.mode, trigger
        );
        let mut checks = Checks::new();
        let brk_before = sys::brk();
        let waited = wait_for_trigger(&waiter);
        self.brk_across_wait = (brk_before, sys::brk());
        if let Err(e) = waited {
            checks.fail(e);
        }
        checks
    }

    /// The kernel's program break just before the wait and just after it, with nothing
    /// allocated in between: they differ only if the break was not restored.
    pub fn brk_across_wait(&self) -> (u64, u64) {
        self.brk_across_wait
    }

    fn prepare_wait(&self) -> (Waiter, Trigger) {
        let check = sys::cstring(&self.path(protocol::CHECK));
        match self.mode {
            WaitMode::Nanosleep => (Waiter::Nanosleep(check), Trigger::CheckFile),
            WaitMode::Spin => (Waiter::Spin(check), Trigger::CheckFile),
            WaitMode::NanosleepAsm => {
                let long = self.args.iter().any(|a| a == protocol::LONG_SLEEP_ARG);
                (Waiter::NanosleepAsm(check, long), Trigger::CheckFile)
            }
            WaitMode::PipeRead => {
                let mut fds = [0i32; 2];
                // SAFETY: pipe2 writes two descriptors into `fds`, a live [i32; 2].
                let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), 0) };
                self.setup("pipe2 for the trigger pipe", sys::check(ret.into()));
                (
                    Waiter::PipeRead { read_fd: fds[0] },
                    Trigger::PipeFd(fds[1]),
                )
            }
            WaitMode::Sigsuspend => {
                // SAFETY: sigaction is plain data; all-zero is a valid value.
                let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
                sa.sa_sigaction = on_trigger as extern "C" fn(libc::c_int) as usize;
                // SAFETY: `sa` is a valid sigaction whose handler only stores to an atomic,
                // which is async-signal-safe.
                let ret = unsafe { libc::sigaction(TRIGGER_SIGNAL, &sa, std::ptr::null_mut()) };
                self.setup("sigaction for the trigger signal", sys::check(ret.into()));
                // Blocked outside sigsuspend, so it cannot arrive between the flag test and
                // the call.
                let mask = sys::sigmask() | sys::sigbit(TRIGGER_SIGNAL);
                self.setup("blocking the trigger signal", sys::set_sigmask(mask));
                (Waiter::Sigsuspend, Trigger::Signal(TRIGGER_SIGNAL))
            }
        }
    }

    /// Compares what every workload keeps with the baseline: pid, tid, process group, session
    /// and comm, the descriptor table (which also proves a dump left no descriptor of its own
    /// behind), the signal and credential lines of `/proc/self/status`, the blocked mask
    /// the wait must have restored, and the calling thread's personality, tid address, robust
    /// list and rseq registration (see [`ThreadState`]). Runs once; call
    /// it before changing any of these (for example before taking pending signals).
    pub fn common_checks(&mut self, checks: &mut Checks) {
        if self.common_checked {
            return;
        }
        self.common_checked = true;
        let Some(base) = self.baseline.as_ref() else {
            checks.fail("common checks ran before the wait");
            return;
        };
        checks.eq("getpid()", base.pid, sys::getpid());
        checks.eq("gettid()", base.tid, sys::gettid());
        checks.eq("blocked signal mask", base.sigmask, sys::sigmask());
        if let Some(fds) = checks.io("listing /proc/self/fd", sys::fd_table()) {
            checks.eq("descriptor table", &base.fds, &fds);
        }
        if let Some(status) = checks.io("reading /proc/self/status", status_lines()) {
            checks.eq(
                "signal and credential lines of /proc/self/status",
                &base.status,
                &status,
            );
        }
        // SAFETY: getpgid(0) and getsid(0) ask about the caller and cannot fail.
        let (pgid, sid) = unsafe { (libc::getpgid(0), libc::getsid(0)) };
        checks.eq("process group", base.pgid, pgid);
        checks.eq("session", base.sid, sid);
        if let Some(comm) = checks.io(
            "reading /proc/self/comm",
            std::fs::read_to_string("/proc/self/comm"),
        ) {
            checks.eq("comm", &base.comm, &comm);
        }
        base.thread.compare(checks);
    }

    /// Runs the common checks if not done yet, writes the result file and exits: 0 if every
    /// check passed, [`protocol::EXIT_FAIL`] otherwise.
    pub fn finish(mut self, mut checks: Checks) -> ! {
        self.common_checks(&mut checks);
        let (text, code) = if checks.passed() {
            (protocol::RESULT_OK.to_owned(), 0)
        } else {
            (
                format!(
                    "{}{}",
                    protocol::RESULT_FAIL_PREFIX,
                    checks.failures.join("; ")
                ),
                protocol::EXIT_FAIL,
            )
        };
        eprintln!("{}: result {text}", self.name);
        if let Err(e) = sys::write_atomically(&self.path(protocol::RESULT), text.as_bytes()) {
            eprintln!("{}: writing the result file: {e}", self.name);
            std::process::exit(protocol::EXIT_SETUP);
        }
        std::process::exit(code)
    }
}

/// Waits in the prepared way. Allocates nothing unless it fails.
fn wait_for_trigger(waiter: &Waiter) -> Result<(), String> {
    match waiter {
        Waiter::Nanosleep(check) => loop {
            // SAFETY: `check` is a valid NUL-terminated path.
            if unsafe { libc::access(check.as_ptr(), libc::F_OK) } == 0 {
                return Ok(());
            }
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 10_000_000,
            };
            // SAFETY: `ts` is a valid timespec; no remainder is asked for.
            if unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) } == -1 {
                // No handler ran, so the kernel restarts an interrupted nanosleep: an error
                // here means the sleep was not resumed the way the kernel would have.
                return Err(format!("nanosleep failed: {}", io::Error::last_os_error()));
            }
        },
        Waiter::PipeRead { read_fd } => {
            let mut byte = [0u8; 1];
            match sys::read(*read_fd, &mut byte) {
                Ok(1) if byte[0] == protocol::TRIGGER_BYTE => Ok(()),
                Ok(1) => Err(format!(
                    "read on the trigger pipe gave byte {:#x}, expected {:#x}",
                    byte[0],
                    protocol::TRIGGER_BYTE
                )),
                Ok(n) => Err(format!("read on the trigger pipe returned {n}")),
                // No handler ran, so a read interrupted by a stop is restarted by the kernel:
                // EINTR means the read was not resumed the way the kernel would have.
                Err(e) => Err(format!("read on the trigger pipe failed: {e}")),
            }
        }
        Waiter::Sigsuspend => {
            let mask = sys::sigset_of(!sys::sigbit(TRIGGER_SIGNAL));
            while !TRIGGERED.load(Ordering::SeqCst) {
                // SAFETY: `mask` is a valid sigset_t; sigsuspend returns after a handler ran.
                unsafe { libc::sigsuspend(&mask) };
            }
            Ok(())
        }
        Waiter::Spin(check) => regs::spin_until(check),
        Waiter::NanosleepAsm(check, long) => regs::nanosleep_asm_until(check, *long),
    }
}
