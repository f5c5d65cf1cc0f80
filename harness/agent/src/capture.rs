//! A foreground child's run to its end: stdout and stderr captured (bounded), under a deadline
//! after which its whole process group is killed.

use std::{
    io::{self, Read},
    os::{fd::AsFd, unix::process::ExitStatusExt},
    process::{Child, ExitStatus},
    time::{Duration, Instant},
};

use nix::{
    errno::Errno,
    poll::{poll, PollFd, PollFlags, PollTimeout},
    sys::signal::{kill, killpg, Signal},
    unistd::Pid,
};

/// At most this much of each stream is kept.
pub const LIMIT: usize = 1 << 20;

/// Appended to a stream that went past [`LIMIT`].
pub const TRUNCATED: &[u8] = b"\n[truncated]\n";

/// How long output is still collected after the command exited, from processes it left
/// behind that hold its pipes (a daemon it started): after that they are cut off.
const AFTER_EXIT: Duration = Duration::from_millis(500);

/// How long a killed command may take to be gone.
const AFTER_KILL: Duration = Duration::from_secs(10);

pub struct Finished {
    pub status: ExitStatus,
    pub timed_out: bool,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    /// The protocol's (exit_code, signal): the code, or -1 and the signal.
    pub fn code_and_signal(&self) -> (i32, i32) {
        match self.status.code() {
            Some(code) => (code, 0),
            None => (-1, self.status.signal().unwrap_or(0)),
        }
    }
}

#[derive(Default)]
struct Bounded {
    buf: Vec<u8>,
    truncated: bool,
}

impl Bounded {
    fn push(&mut self, bytes: &[u8]) {
        let room = LIMIT - self.buf.len();
        self.buf.extend_from_slice(&bytes[..bytes.len().min(room)]);
        self.truncated |= bytes.len() > room;
    }

    fn finish(mut self) -> Vec<u8> {
        if self.truncated {
            self.buf.extend_from_slice(TRUNCATED);
        }
        self.buf
    }
}

/// Collects the child's output until it has exited and its pipes are closed, killing its
/// process group (the child was made its leader) if `deadline` passes first.
pub fn wait_capturing(child: &mut Child, deadline: Instant) -> io::Result<Finished> {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let mut out = Bounded::default();
    let mut err = Bounded::default();
    let mut status: Option<(ExitStatus, Instant)> = None;
    let mut killed_at: Option<Instant> = None;
    let mut idle = Duration::from_millis(1);
    let mut buf = vec![0u8; 64 << 10];
    loop {
        if status.is_none() {
            if let Some(s) = child.try_wait()? {
                status = Some((s, Instant::now()));
            }
        }
        let now = Instant::now();
        if let Some((s, exited)) = status {
            let open = stdout.is_some() || stderr.is_some();
            if !open || now.duration_since(exited) >= AFTER_EXIT {
                if open {
                    tracing::info!(pid = child.id(), "the command exited but something it started still holds its output; not waiting for it");
                }
                return Ok(Finished {
                    status: s,
                    timed_out: killed_at.is_some(),
                    stdout: out.finish(),
                    stderr: err.finish(),
                });
            }
        } else if let Some(at) = killed_at {
            if now.duration_since(at) >= AFTER_KILL {
                return Err(io::Error::other(format!(
                    "pid {} was still there {} s after SIGKILL",
                    child.id(),
                    AFTER_KILL.as_secs()
                )));
            }
        } else if now >= deadline {
            kill_group(child.id() as i32);
            killed_at = Some(now);
        }

        // Wake up for output, or soon enough to notice the exit and the deadline.
        let tick = if stdout.is_none() && stderr.is_none() {
            idle = (idle * 2).min(Duration::from_millis(50));
            idle
        } else {
            Duration::from_millis(50)
        };
        let tick = match (status, killed_at) {
            (None, None) => tick.min(deadline.saturating_duration_since(now)),
            _ => tick,
        };
        let timeout = PollTimeout::from(tick.as_millis().min(u128::from(u16::MAX)) as u16);
        let (out_ready, err_ready) = {
            let mut fds: Vec<PollFd<'_>> = Vec::with_capacity(2);
            if let Some(s) = &stdout {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            if let Some(s) = &stderr {
                fds.push(PollFd::new(s.as_fd(), PollFlags::POLLIN));
            }
            if fds.is_empty() {
                std::thread::sleep(tick);
                (false, false)
            } else {
                match poll(&mut fds, timeout) {
                    Ok(_) | Err(Errno::EINTR) => {}
                    Err(e) => return Err(e.into()),
                }
                let ready = |fd: Option<&PollFd<'_>>| {
                    fd.and_then(PollFd::revents).is_some_and(|r| !r.is_empty())
                };
                let first = fds.first();
                let second = fds.get(1);
                match (&stdout, &stderr) {
                    (Some(_), Some(_)) => (ready(first), ready(second)),
                    (Some(_), None) => (ready(first), false),
                    (None, Some(_)) => (false, ready(first)),
                    (None, None) => (false, false),
                }
            }
        };
        if out_ready {
            drain(&mut stdout, &mut out, &mut buf)?;
        }
        if err_ready {
            drain(&mut stderr, &mut err, &mut buf)?;
        }
    }
}

/// One read from a ready pipe; end of file closes it.
fn drain<R: Read>(pipe: &mut Option<R>, into: &mut Bounded, buf: &mut [u8]) -> io::Result<()> {
    if let Some(p) = pipe {
        match p.read(buf) {
            Ok(0) => *pipe = None,
            Ok(n) => into.push(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// SIGKILL to the group the child leads, and to the child itself in case it left the group.
pub fn kill_group(pid: i32) {
    tracing::info!(pid, "deadline passed, killing the process group");
    let pid = Pid::from_raw(pid);
    for r in [killpg(pid, Signal::SIGKILL), kill(pid, Signal::SIGKILL)] {
        if let Err(e) = r {
            if e != Errno::ESRCH {
                tracing::warn!(pid = pid.as_raw(), error = %e, "killing a timed-out command");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_at_most_the_limit_and_says_so() {
        let mut b = Bounded::default();
        b.push(&vec![b'a'; LIMIT - 1]);
        b.push(b"bc");
        let out = b.finish();
        assert_eq!(out.len(), LIMIT + TRUNCATED.len());
        assert!(out.ends_with(b"ab\n[truncated]\n"));
    }

    #[test]
    fn leaves_short_output_alone() {
        let mut b = Bounded::default();
        b.push(b"hi");
        assert_eq!(b.finish(), b"hi");
    }
}
