//! Processes acted on by the agent itself: what a trial's clean-up did with `pkill -KILL -f`
//! (`KillUnder`), its restore with a shell loop over `/proc/PID` (`WaitGone`), and its driver
//! with `kill` and `printf > /proc/PID/fd/FD` (`SendSignal`, `WriteFd`), in the agent's own
//! process: the same subject (root in the agent's domain) as those programs, which ran
//! without a domain transition.

use std::{
    fs::{self, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::Path,
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    sys::signal::{kill, Signal},
    unistd::Pid,
};

use crlab_protocol::{KillUnder, Killed, SendSignal, WaitGone, WriteFd};

/// The deadline of `KillUnder` and of each pid of `WaitGone` when the request gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);

/// How often `/proc` is looked at again while waiting.
const POLL: Duration = Duration::from_millis(10);

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("the directory to kill what runs from must be absolute and not / (got {0:?})")]
    BadDir(String),
    #[error("listing /proc")]
    ListProc(#[source] io::Error),
    #[error("sending SIGKILL to pid {pid} ({cmdline})")]
    Kill {
        pid: u32,
        cmdline: String,
        #[source]
        source: Errno,
    },
    #[error(
        "after {} ms, still alive from {dir}: {}", .waited.as_millis(),
        .alive.iter().map(|(p, c)| format!("pid {p} ({c})")).collect::<Vec<_>>().join(", ")
    )]
    StillAlive {
        dir: String,
        waited: Duration,
        alive: Vec<(u32, String)>,
    },
    #[error("pid {pid} still exists after {} ms", .waited.as_millis())]
    NotGone { pid: u32, waited: Duration },
    #[error("pid {0} is out of range")]
    Pid(u32),
    #[error("signal {0} is not a signal the agent knows by name")]
    Signal(i32),
    #[error("sending signal {signal} to pid {pid}")]
    Send {
        pid: u32,
        signal: i32,
        #[source]
        source: Errno,
    },
    #[error("writing {len} byte(s) into /proc/{pid}/fd/{fd}")]
    WriteFd {
        pid: u32,
        fd: i32,
        len: usize,
        #[source]
        source: io::Error,
    },
}

fn timeout(ms: u32) -> Duration {
    if ms == 0 {
        DEFAULT_TIMEOUT
    } else {
        Duration::from_millis(ms.into())
    }
}

/// What [`kill_under`] refuses before it acts: a directory that is not absolute, or `/`
/// (which would match every process). Pure.
pub fn check_dir(dir: &str) -> Result<&str, ProcessError> {
    let trimmed = dir.trim_end_matches('/');
    if !dir.starts_with('/') || trimmed.is_empty() {
        return Err(ProcessError::BadDir(dir.to_owned()));
    }
    Ok(trimmed)
}

/// Does the process whose `/proc/PID/cmdline` is `cmdline` and executable `exe` run from
/// `dir` (absolute, no trailing `/`)? Its command line, arguments joined by spaces as
/// `pkill -f` sees it, holds `dir/`, or its executable is under `dir/`. Pure.
pub fn runs_from(cmdline: &[u8], exe: Option<&Path>, dir: &str) -> bool {
    let needle = format!("{dir}/");
    let joined: Vec<u8> = cmdline
        .strip_suffix(b"\0")
        .unwrap_or(cmdline)
        .iter()
        .map(|&b| if b == 0 { b' ' } else { b })
        .collect();
    let in_cmdline = joined.windows(needle.len()).any(|w| w == needle.as_bytes());
    in_cmdline
        || exe.is_some_and(|e| {
            e.as_os_str()
                .as_encoded_bytes()
                .starts_with(needle.as_bytes())
        })
}

/// The state letter in a `/proc/PID/stat` line (after the command name, which may hold
/// spaces and parentheses). Pure.
pub fn stat_state(stat: &str) -> Option<char> {
    let (_, after) = stat.rsplit_once(')')?;
    after.trim_start().chars().next()
}

/// A process that runs from the directory, as last seen.
struct Found {
    pid: u32,
    cmdline: String,
}

/// The living (not zombie) processes but this one that run from `dir`.
fn scan(dir: &str) -> Result<Vec<Found>, ProcessError> {
    let me = std::process::id();
    let mut found = Vec::new();
    for entry in fs::read_dir("/proc").map_err(ProcessError::ListProc)? {
        let entry = entry.map_err(ProcessError::ListProc)?;
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let base = entry.path();
        // A process that ends meanwhile (or a kernel thread) is no match.
        let Ok(cmdline) = fs::read(base.join("cmdline")) else {
            continue;
        };
        let exe = fs::read_link(base.join("exe")).ok();
        if !runs_from(&cmdline, exe.as_deref(), dir) {
            continue;
        }
        let state = fs::read_to_string(base.join("stat"))
            .ok()
            .and_then(|s| stat_state(&s));
        if matches!(state, None | Some('Z' | 'X')) {
            continue;
        }
        let cmdline = String::from_utf8_lossy(&cmdline)
            .trim_end_matches('\0')
            .replace('\0', " ");
        found.push(Found { pid, cmdline });
    }
    Ok(found)
}

/// Kills every process that runs from `dir` with SIGKILL, again until a look at `/proc` finds
/// none alive (gone, or a zombie its parent is to reap), so that one forked meanwhile is
/// killed too; returns the pids killed.
pub fn kill_under(req: &KillUnder) -> Result<Killed, ProcessError> {
    let dir = check_dir(&req.dir)?;
    let limit = timeout(req.timeout_ms);
    let start = Instant::now();
    let mut killed: Vec<u32> = Vec::new();
    loop {
        let alive = scan(dir)?;
        if alive.is_empty() {
            break;
        }
        if start.elapsed() >= limit {
            return Err(ProcessError::StillAlive {
                dir: dir.to_owned(),
                waited: start.elapsed(),
                alive: alive.into_iter().map(|f| (f.pid, f.cmdline)).collect(),
            });
        }
        for f in alive {
            let pid = i32::try_from(f.pid).map_err(|_| ProcessError::Pid(f.pid))?;
            match kill(Pid::from_raw(pid), Signal::SIGKILL) {
                Ok(()) | Err(Errno::ESRCH) => {}
                Err(source) => {
                    return Err(ProcessError::Kill {
                        pid: f.pid,
                        cmdline: f.cmdline,
                        source,
                    })
                }
            }
            if !killed.contains(&f.pid) {
                tracing::info!(pid = f.pid, cmdline = %f.cmdline, "killed");
                killed.push(f.pid);
            }
        }
        std::thread::sleep(POLL);
    }
    Ok(Killed { pids: killed })
}

/// Waits until `/proc/PID` is gone for each pid in turn, up to the deadline each.
pub fn wait_gone(req: &WaitGone) -> Result<(), ProcessError> {
    let limit = timeout(req.timeout_ms);
    for &pid in &req.pids {
        let start = Instant::now();
        let proc_dir = format!("/proc/{pid}");
        while Path::new(&proc_dir).exists() {
            if start.elapsed() >= limit {
                return Err(ProcessError::NotGone {
                    pid,
                    waited: start.elapsed(),
                });
            }
            std::thread::sleep(POLL);
        }
    }
    Ok(())
}

/// Sends a signal known by name (`kill -SIG PID`).
pub fn send_signal(req: &SendSignal) -> Result<(), ProcessError> {
    let pid = i32::try_from(req.pid).map_err(|_| ProcessError::Pid(req.pid))?;
    let signal = Signal::try_from(req.signal).map_err(|_| ProcessError::Signal(req.signal))?;
    kill(Pid::from_raw(pid), signal).map_err(|source| ProcessError::Send {
        pid: req.pid,
        signal: req.signal,
        source,
    })
}

/// Writes into a process's descriptor through `/proc/PID/fd/FD`, opened non-blocking.
pub fn write_fd(req: &WriteFd) -> Result<(), ProcessError> {
    let path = format!("/proc/{}/fd/{}", req.pid, req.fd);
    OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .and_then(|mut f| f.write_all(&req.data))
        .map_err(|source| ProcessError::WriteFd {
            pid: req.pid,
            fd: req.fd,
            len: req.data.len(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::{Command, Stdio};

    #[test]
    fn a_process_runs_from_a_directory_by_its_command_line_or_its_executable() {
        let dir = "/var/tmp/crlab/x";
        let line = b"/opt/bin/memory\0/var/tmp/crlab/x/state\0nanosleep\0";
        assert!(runs_from(line, None, dir));
        assert!(runs_from(
            b"/usr/bin/setpriv\0--reuid=1000\0--\0/var/tmp/crlab/x/bin/svc\0",
            None,
            dir
        ));
        // Arguments joined by spaces, as pkill -f sees them.
        assert!(runs_from(b"sh\0-c\0cd /var/tmp/crlab/x/ && y\0", None, dir));
        assert!(runs_from(
            b"svc\0",
            Some(Path::new("/var/tmp/crlab/x/bin/svc (deleted)")),
            dir
        ));
        assert!(!runs_from(b"/var/tmp/crlab/xy/state\0", None, dir));
        assert!(
            !runs_from(b"/var/tmp/crlab/x\0", None, dir),
            "the dir itself, no slash"
        );
        assert!(!runs_from(b"/var/tmp/crlab/\0x/\0", None, dir));
        assert!(!runs_from(
            b"svc\0",
            Some(Path::new("/var/tmp/crlab/xy/bin/svc")),
            dir
        ));
        assert!(!runs_from(b"", None, dir), "a kernel thread");
    }

    #[test]
    fn the_directory_must_be_absolute_and_not_the_root() {
        assert_eq!(check_dir("/var/tmp/crlab/x/").unwrap(), "/var/tmp/crlab/x");
        for bad in ["/", "//", "", "var/tmp"] {
            assert!(
                matches!(check_dir(bad), Err(ProcessError::BadDir(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_state_is_read_after_the_last_parenthesis() {
        assert_eq!(stat_state("42 (memory) S 1 42 42 0"), Some('S'));
        assert_eq!(stat_state("42 (a) Z (b)) Z 1 2"), Some('Z'));
        assert_eq!(stat_state("42 (x"), None);
    }

    #[test]
    fn what_runs_from_a_directory_is_killed_and_ended_on_return_and_nothing_else() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("trial");
        fs::create_dir(&dir).unwrap();
        let prog = dir.join("sleep");
        fs::copy("/bin/sleep", &prog).unwrap();
        let mut ours = Command::new(&prog).arg("30").spawn().unwrap();
        let mut other = Command::new("sleep").arg("30").spawn().unwrap();
        let killed = kill_under(&KillUnder {
            dir: dir.to_str().unwrap().to_owned(),
            timeout_ms: 0,
        });
        let ours_pid = ours.id();
        // It is ours to reap: until then a zombie, which kill_under counts as ended.
        let status = ours.wait().unwrap();
        let still_runs = other.try_wait().unwrap().is_none();
        other.kill().unwrap();
        other.wait().unwrap();
        let killed = killed.unwrap();
        assert_eq!(killed.pids, [ours_pid]);
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(status.signal(), Some(libc::SIGKILL));
        assert!(still_runs, "the other was left alone");
        wait_gone(&WaitGone {
            pids: vec![ours_pid],
            timeout_ms: 0,
        })
        .unwrap();
    }

    #[test]
    fn waiting_names_the_pid_that_did_not_go() {
        let me = std::process::id();
        let e = wait_gone(&WaitGone {
            pids: vec![me],
            timeout_ms: 30,
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("pid {me} still exists after ")),
            "{e}"
        );
    }

    #[test]
    fn a_signal_and_a_write_into_a_descriptor_reach_the_process_or_say_why_not() {
        let mut child = Command::new("cat")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        write_fd(&WriteFd {
            pid: child.id(),
            fd: 0,
            data: b"x".to_vec(),
        })
        .unwrap();
        send_signal(&SendSignal {
            pid: child.id(),
            signal: libc::SIGTERM,
        })
        .unwrap();
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(child.wait().unwrap().signal(), Some(libc::SIGTERM));
        let e = write_fd(&WriteFd {
            pid: child.id(),
            fd: 0,
            data: b"x".to_vec(),
        })
        .unwrap_err();
        assert!(
            e.to_string()
                .starts_with(&format!("writing 1 byte(s) into /proc/{}/fd/0", child.id())),
            "{e}"
        );
        let e = send_signal(&SendSignal {
            pid: 1,
            signal: 1000,
        })
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "signal 1000 is not a signal the agent knows by name"
        );
    }
}
