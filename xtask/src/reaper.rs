//! Processes xtask starts: child subreaper, guards that kill and reap, timed runs, deadline waits.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

/// Set by SIGINT/SIGTERM once [`Subreaper::new`] ran: waits give up and guards clean up.
static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_interrupt(_signal: libc::c_int) {
    INTERRUPTED.store(true, Ordering::SeqCst);
}

fn check_interrupted() -> Result<()> {
    if INTERRUPTED.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// This process as child subreaper: orphans of what it starts (a restored process after
/// `crlab restore --detach`, say) become its children; on drop it kills and reaps every child
/// still there.
pub struct Subreaper(());

impl Subreaper {
    pub fn new() -> Result<Self> {
        // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag and no pointers.
        let rc = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        if rc != 0 {
            return Err(std::io::Error::last_os_error())
                .context("making xtask a child subreaper (prctl PR_SET_CHILD_SUBREAPER)");
        }
        let handler = on_interrupt as extern "C" fn(libc::c_int) as libc::sighandler_t;
        for signal in [libc::SIGINT, libc::SIGTERM] {
            // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
            if unsafe { libc::signal(signal, handler) } == libc::SIG_ERR {
                return Err(std::io::Error::last_os_error()).context("installing a SIGINT handler");
            }
        }
        Ok(Self(()))
    }
}

impl Subreaper {
    /// Reaps the orphans that have ended (a dumped tree's children, killed by the dump, come
    /// back to us as zombies and hold their pids until reaped), waiting up to `limit` for
    /// every child that is a zombie or still exiting.
    pub fn reap_ended(&self, limit: Duration) {
        let start = std::time::Instant::now();
        loop {
            // SAFETY: waitpid with a null status pointer and WNOHANG only reaps exited children.
            while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
            let dying = children().iter().any(|(pid, _)| {
                std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .map(|s| {
                        s.rsplit_once(") ")
                            .is_some_and(|(_, r)| r.starts_with(['Z', 'X']))
                    })
                    .unwrap_or(false)
            });
            if !dying || start.elapsed() > limit {
                return;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Subreaper {
    fn drop(&mut self) {
        for (pid, comm) in children() {
            eprintln!("notice: killing leftover process {pid} ({comm})");
            kill_and_reap(pid);
        }
        // Zombies that nobody waited for.
        // SAFETY: waitpid with a null status pointer and WNOHANG only reaps exited children.
        while unsafe { libc::waitpid(-1, std::ptr::null_mut(), libc::WNOHANG) } > 0 {}
    }
}

/// The live children of this process, from `/proc`.
fn children() -> Vec<(libc::pid_t, String)> {
    let me = std::process::id().to_string();
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let name = entry.ok()?.file_name().into_string().ok()?;
            let pid: libc::pid_t = name.parse().ok()?;
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            let (comm, ppid) = parse_stat(&stat)?;
            (ppid == me).then(|| (pid, comm.to_owned()))
        })
        .collect()
}

/// `comm` and the parent pid from the text of `/proc/PID/stat`.
fn parse_stat(stat: &str) -> Option<(&str, &str)> {
    let open = stat.find('(')?;
    let close = stat.rfind(')')?;
    let comm = stat.get(open + 1..close)?;
    let mut rest = stat.get(close + 1..)?.split_whitespace();
    let _state = rest.next()?;
    Some((comm, rest.next()?))
}

fn kill_and_reap(pid: libc::pid_t) {
    // SAFETY: plain syscalls on a pid; the process is our child, so the pid cannot be reused
    // by another process before we reap it.
    unsafe {
        libc::kill(pid, libc::SIGKILL);
        libc::waitpid(pid, std::ptr::null_mut(), 0);
    }
}

/// A process of ours (a child, or an orphan adopted as subreaper): killed and reaped when
/// dropped, unless it was reaped before.
pub struct Guard {
    pid: libc::pid_t,
    what: String,
    reaped: bool,
}

impl Guard {
    pub fn new(pid: libc::pid_t, what: impl Into<String>) -> Self {
        Self {
            pid,
            what: what.into(),
            reaped: false,
        }
    }

    pub fn pid(&self) -> libc::pid_t {
        self.pid
    }

    /// The exit status if the process has exited (and is now reaped).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.reaped {
            bail!("{} (pid {}) was already reaped", self.what, self.pid);
        }
        let mut status = 0;
        // SAFETY: `status` is a valid place for waitpid to write to.
        let rc = unsafe { libc::waitpid(self.pid, &mut status, libc::WNOHANG) };
        match rc {
            0 => Ok(None),
            rc if rc == self.pid => {
                self.reaped = true;
                Ok(Some(ExitStatus::from_raw(status)))
            }
            _ => Err(std::io::Error::last_os_error()).with_context(|| {
                format!(
                    "waiting for {} (pid {}): is it our child?",
                    self.what, self.pid
                )
            }),
        }
    }

    /// Waits for the process to exit.
    pub fn wait(&mut self, limit: Duration) -> Result<ExitStatus> {
        let mut status = None;
        wait_until(
            limit,
            &format!("{} (pid {}) to exit", self.what, self.pid),
            || {
                status = self.try_wait()?;
                Ok(status.is_some())
            },
        )?;
        status.context("the exit status vanished")
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.reaped {
            eprintln!("notice: killing {} (pid {})", self.what, self.pid);
            kill_and_reap(self.pid);
        }
    }
}

/// Polls `done` every few milliseconds until it says yes; fails after `limit` (naming `what`
/// it waited for) or on SIGINT.
pub fn wait_until(
    limit: Duration,
    what: &str,
    mut done: impl FnMut() -> Result<bool>,
) -> Result<()> {
    let start = Instant::now();
    loop {
        if done()? {
            return Ok(());
        }
        check_interrupted().with_context(|| format!("waiting for {what}"))?;
        if start.elapsed() > limit {
            bail!("gave up waiting for {what} after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// A finished command: how long it took from spawn to exit, how it ended, what it printed.
pub struct Timed {
    pub elapsed: Duration,
    pub status: ExitStatus,
    pub output: String,
}

/// Runs `command` to completion with stdout and stderr in `log`; kills it after `limit`.
pub fn run_timed(mut command: Command, what: &str, log: &Path, limit: Duration) -> Result<Timed> {
    // Output goes to a file, not a pipe: a pipe would stay open in anything the command
    // leaves behind (a detached restored process) and keep us waiting for its end.
    let file = File::create(log).with_context(|| format!("creating {}", log.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone().context("duplicating the log descriptor")?)
        .stderr(file);
    let start = Instant::now();
    let mut child = command
        .spawn()
        .with_context(|| format!("starting {what}"))?;
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    let waiter = std::thread::spawn(move || {
        let status = child.wait();
        // The receiver only goes away after joining this thread.
        let _ = tx.send((status, Instant::now()));
    });
    let finished = loop {
        match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(finished) => break Some(finished),
            Err(RecvTimeoutError::Timeout) => {
                if INTERRUPTED.load(Ordering::SeqCst) || start.elapsed() > limit {
                    break None;
                }
            }
            Err(RecvTimeoutError::Disconnected) => break None,
        }
    };
    let Some((status, end)) = finished else {
        let pid = libc::pid_t::try_from(pid).context("pid out of range")?;
        // SAFETY: kill takes no pointers. The waiter has not reported the child reaped, so the
        // pid still names it (short of a reap in the last instant and an immediate pid reuse).
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let _ = waiter.join();
        check_interrupted().with_context(|| format!("running {what}"))?;
        let output = std::fs::read_to_string(log).unwrap_or_default();
        bail!(
            "{what} did not finish within {limit:?}: killed it; its output: {}",
            tail(&output, 40)
        );
    };
    let _ = waiter.join();
    let status = status.with_context(|| format!("waiting for {what}"))?;
    let output = std::fs::read_to_string(log).unwrap_or_default();
    Ok(Timed {
        elapsed: end - start,
        status,
        output,
    })
}

/// The last `lines` lines of `text`, or `(none)`.
pub fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.trim_end().lines().collect();
    match all.len() {
        0 => "(none)".to_owned(),
        n if n <= lines => all.join("\n"),
        n => format!(
            "[{} lines before]\n{}",
            n - lines,
            all[n - lines..].join("\n")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_gives_comm_and_parent_even_with_odd_names() {
        let stat = "4242 (a) b (c)) S 17 4242 4242 0 -1 4194560";
        assert_eq!(parse_stat(stat), Some(("a) b (c)", "17")));
        assert_eq!(parse_stat("garbage"), None);
    }

    #[test]
    fn timed_run_reports_status_output_and_deadline() -> Result<()> {
        let log = std::env::temp_dir().join(format!("xtask-timed-{}.log", std::process::id()));
        let mut ok = Command::new("sh");
        ok.args(["-c", "echo hello; echo oops >&2; exit 3"]);
        let timed = run_timed(ok, "sh", &log, Duration::from_secs(30))?;
        assert_eq!(timed.status.code(), Some(3));
        assert_eq!(timed.output, "hello\noops\n");

        let mut slow = Command::new("sleep");
        slow.arg("30");
        let start = Instant::now();
        let err = match run_timed(slow, "sleep", &log, Duration::from_millis(100)) {
            Ok(_) => bail!("a command past its deadline was reported as finished"),
            Err(err) => err,
        };
        std::fs::remove_file(&log)?;
        assert!(err.to_string().contains("did not finish"), "{err}");
        assert!(start.elapsed() < Duration::from_secs(10));
        Ok(())
    }

    #[test]
    fn guard_kills_and_reaps_on_drop() -> Result<()> {
        let child = Command::new("sleep").arg("30").spawn()?;
        let pid = libc::pid_t::try_from(child.id())?;
        drop(Guard::new(pid, "sleep"));
        // Reaped: the pid is no longer our child.
        // SAFETY: waitpid with a null status pointer.
        let rc = unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
        assert_eq!(rc, -1);
        Ok(())
    }
}
