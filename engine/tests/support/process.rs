//! Processes the tests own: root and subreaper setup, a guard that kills and reaps, waits with
//! deadlines, and what `/proc` says about a pid.

use std::fmt;
use std::sync::Once;
use std::time::{Duration, Instant};

/// Checks the tests run as root and makes this process a child subreaper, so restored
/// processes that crlab leaves behind (`--detach`) become our children and can be reaped.
///
/// Panics with what to do when not root: the engine needs it (ptrace of any process, pids
/// chosen with clone3's set_tid), so these tests are never skipped silently.
pub fn setup() {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    assert!(
        euid == 0,
        "the engine end-to-end tests need root (euid is {euid}): the engine ptraces the \
         workloads and recreates their pids with clone3 set_tid; run them as root, e.g. \
         `sudo -E cargo test -p crlab --test engine_e2e`"
    );
    static SUBREAPER: Once = Once::new();
    SUBREAPER.call_once(|| {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and touches no memory.
        let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(
            ret,
            0,
            "prctl(PR_SET_CHILD_SUBREAPER): {}",
            std::io::Error::last_os_error()
        );
    });
}

/// Polls `cond` until it holds or `timeout` passes. The error says what was waited for and
/// for how long; callers add their context (the workload's log).
pub fn wait_until(
    timeout: Duration,
    what: impl fmt::Display,
    mut cond: impl FnMut() -> bool,
) -> Result<(), String> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    loop {
        if cond() {
            return Ok(());
        }
        if start.elapsed() >= timeout {
            return Err(format!("timed out after {timeout:?} waiting for {what}"));
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}

/// How a process ended, as `waitpid` reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// Exited with this status.
    Code(i32),
    /// Killed by this signal.
    Signal(i32),
}

impl Exit {
    fn from_wait_status(status: i32) -> Exit {
        if libc::WIFEXITED(status) {
            Exit::Code(libc::WEXITSTATUS(status))
        } else {
            Exit::Signal(libc::WTERMSIG(status))
        }
    }

    /// Exited with status 0.
    pub fn success(self) -> bool {
        self == Exit::Code(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Exit::Code(c) => write!(f, "exit status {c}"),
            Exit::Signal(s) => write!(f, "killed by signal {s}{}", signal_name(*s)),
        }
    }
}

/// ` (SIGxxx)` for the signals a test process usually dies of, empty for others.
fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGSEGV => " (SIGSEGV)",
        libc::SIGBUS => " (SIGBUS)",
        libc::SIGILL => " (SIGILL)",
        libc::SIGFPE => " (SIGFPE)",
        libc::SIGABRT => " (SIGABRT)",
        libc::SIGTRAP => " (SIGTRAP)",
        libc::SIGSYS => " (SIGSYS)",
        libc::SIGKILL => " (SIGKILL)",
        libc::SIGTERM => " (SIGTERM)",
        libc::SIGPIPE => " (SIGPIPE)",
        libc::SIGUSR1 => " (SIGUSR1)",
        libc::SIGUSR2 => " (SIGUSR2)",
        _ => "",
    }
}

/// A child process of this test process (or one reparented to it), killed and reaped on drop
/// unless it was reaped already. Waits only for its own pid, never for any child.
#[derive(Debug)]
pub struct Proc {
    pid: i32,
    reaped: Option<Exit>,
}

impl Proc {
    /// Takes charge of `pid`, which must be a child of this process.
    pub fn adopt(pid: i32) -> Proc {
        Proc { pid, reaped: None }
    }

    /// The pid.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// How it ended, if it was reaped.
    pub fn exit(&self) -> Option<Exit> {
        self.reaped
    }

    /// Reaps it if it has ended (`waitpid(pid, WNOHANG)`).
    pub fn try_reap(&mut self) -> Option<Exit> {
        if self.reaped.is_some() {
            return self.reaped;
        }
        let mut status = 0;
        // SAFETY: waitpid for one pid writes the status into a live int.
        let ret = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        if ret == self.pid {
            self.reaped = Some(Exit::from_wait_status(status));
        }
        self.reaped
    }

    /// Whether it has ended (and is now reaped).
    pub fn has_ended(&mut self) -> bool {
        self.try_reap().is_some()
    }

    /// Waits up to `timeout` for it to end and reaps it.
    pub fn reap_within(&mut self, timeout: Duration, what: &str) -> Result<Exit, String> {
        let what = format!("{what} (pid {}) to end", self.pid);
        wait_until(timeout, what, || self.try_reap().is_some())?;
        Ok(self.reaped.unwrap_or(Exit::Code(-1)))
    }

    /// Marks it alive again: the same pid now belongs to a process crlab restored.
    pub fn readopt(&mut self) {
        self.reaped = None;
    }

    /// Kills it with SIGKILL and reaps it, unless reaped already.
    pub fn kill(&mut self) {
        if self.reaped.is_some() {
            return;
        }
        // SAFETY: the pid is a child of ours that we have not reaped, so it cannot have been
        // reused by another process.
        unsafe { libc::kill(self.pid, libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: waitpid for one pid writes the status into a live int.
        let ret = unsafe { libc::waitpid(self.pid, &mut status, 0) };
        self.reaped = Some(if ret == self.pid {
            Exit::from_wait_status(status)
        } else {
            Exit::Signal(libc::SIGKILL)
        });
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether any process (or zombie) has this pid.
pub fn pid_exists(pid: i32) -> bool {
    // SAFETY: signal 0 only checks for existence.
    let ret = unsafe { libc::kill(pid, 0) };
    ret == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// A `Key:` field of `/proc/<pid>/status`, if the process exists.
pub fn status_field(pid: i32, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// Why `pid` is not a process running freely (alive, not a zombie, not stopped, not traced),
/// or `None` if it is.
pub fn not_running_freely(pid: i32) -> Option<String> {
    let Some(state) = status_field(pid, "State") else {
        return Some(format!("pid {pid} does not exist"));
    };
    if state.starts_with('Z') || state.starts_with('X') {
        return Some(format!("pid {pid} is dead ({state})"));
    }
    if state.starts_with('T') || state.starts_with('t') {
        return Some(format!("pid {pid} is stopped ({state})"));
    }
    match status_field(pid, "TracerPid").as_deref() {
        Some("0") => None,
        Some(t) => Some(format!("pid {pid} is still traced by {t}")),
        None => Some(format!("pid {pid} vanished")),
    }
}

/// The parent pid of `pid`, if it exists.
pub fn parent_of(pid: i32) -> Option<i32> {
    status_field(pid, "PPid")?.parse().ok()
}

/// Pids of the processes whose command line mentions `needle`.
pub fn pids_mentioning(needle: &str) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut out: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .map(|c| String::from_utf8_lossy(&c).contains(needle))
                .unwrap_or(false)
        })
        .collect();
    out.sort();
    out
}

/// The tids of `pid`, sorted (none when it is gone).
pub fn task_tids(pid: i32) -> Vec<i32> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return Vec::new();
    };
    let mut tids: Vec<i32> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort();
    tids
}

/// A `Key:` field of `/proc/<pid>/task/<tid>/status`, if the thread exists.
pub fn task_status(pid: i32, tid: i32, key: &str) -> Option<String> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/status")).ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
}

/// Why thread `tid` of `pid` is not running freely (stopped, traced, dead), if it is not.
pub fn thread_not_running_freely(pid: i32, tid: i32) -> Option<String> {
    let Some(state) = task_status(pid, tid, "State") else {
        return Some(format!("thread {tid} of {pid} does not exist"));
    };
    if !state.starts_with(['R', 'S', 'D']) {
        return Some(format!("thread {tid} of {pid} is {state}"));
    }
    match task_status(pid, tid, "TracerPid").as_deref() {
        Some("0") => None,
        Some(t) => Some(format!("thread {tid} of {pid} is still traced by {t}")),
        None => Some(format!("thread {tid} of {pid} vanished")),
    }
}

/// This process's pid.
pub fn getpid() -> i32 {
    // SAFETY: getpid cannot fail.
    unsafe { libc::getpid() }
}
