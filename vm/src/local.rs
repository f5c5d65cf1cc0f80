//! An agent on this machine instead of in a VM (the in-place mode): a child process that
//! never outlives us, in its own process group, served over a socket pair on its stdin and
//! stdout, its stderr kept in a log; every wait bounded. Like [`crate::machine`], it knows
//! the framing only (`crlab_protocol::frame`), never the messages.

use crate::machine::VmError;
use crlab_protocol::frame::{read_frame, write_frame, FrameError};
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A local agent process and our end of its channel.
pub struct LocalAgent {
    child: Option<Child>,
    channel: UnixStream,
    log: PathBuf,
    pub started: Instant,
}

impl LocalAgent {
    /// Starts `program` with `args`; its channel is a socket pair on its stdin and stdout,
    /// its stderr goes to `log`. It runs in its own process group (a Ctrl-C at the
    /// terminal is ours to handle) and is killed if we die (`PR_SET_PDEATHSIG`), and on drop.
    pub fn start(program: &Path, args: &[&str], log: &Path) -> Result<LocalAgent, VmError> {
        let spawn_err = |source| VmError::Spawn {
            program: program.display().to_string(),
            source,
        };
        let stderr = std::fs::File::create(log).map_err(spawn_err)?;
        let (ours, theirs) = UnixStream::pair().map_err(spawn_err)?;
        let theirs: OwnedFd = theirs.into();
        let stdout = theirs.try_clone().map_err(spawn_err)?;
        let mut cmd = Command::new(program);
        cmd.args(args)
            .stdin(Stdio::from(theirs))
            .stdout(Stdio::from(stdout))
            .stderr(stderr)
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec and only makes an
        // async-signal-safe prctl call.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(spawn_err)?;
        tracing::debug!(pid = child.id(), "local agent started");
        Ok(LocalAgent {
            child: Some(child),
            channel: ours,
            log: log.to_path_buf(),
            started: Instant::now(),
        })
    }

    /// The last `n` lines the agent logged.
    pub fn log_tail(&self, n: usize) -> String {
        crate::console::tail(&self.log, n)
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Fails if the agent exited.
    pub fn check(&mut self, what: &str) -> Result<(), VmError> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                return Err(VmError::Died {
                    what: what.into(),
                    status: format!("the local agent {status}"),
                    stderr: self.log_tail(10),
                    tail: String::new(),
                });
            }
        }
        Ok(())
    }

    /// Sends one frame to the agent.
    pub fn send(&mut self, what: &str, frame: &[u8]) -> Result<(), VmError> {
        self.check(what)?;
        write_frame(&mut self.channel, frame).map_err(|source| VmError::Channel {
            what: what.into(),
            source,
        })
    }

    /// Waits up to `timeout` for one frame from the agent, checking it is alive meanwhile.
    pub fn recv(&mut self, what: &str, timeout: Duration) -> Result<Vec<u8>, VmError> {
        let start = Instant::now();
        loop {
            let slice = Duration::from_millis(500).min(
                timeout
                    .saturating_sub(start.elapsed())
                    .max(Duration::from_millis(1)),
            );
            let _ = self.channel.set_read_timeout(Some(slice));
            match read_frame(&mut self.channel) {
                Ok(reply) => return Ok(reply),
                Err(FrameError::Io(e))
                    if e.kind() == std::io::ErrorKind::WouldBlock
                        || e.kind() == std::io::ErrorKind::TimedOut =>
                {
                    self.check(what)?;
                    if start.elapsed() >= timeout {
                        return Err(VmError::Timeout {
                            what: what.into(),
                            secs: timeout.as_secs_f64(),
                            tail: self.log_tail(30),
                        });
                    }
                }
                Err(source) => {
                    return Err(VmError::Channel {
                        what: what.into(),
                        source,
                    })
                }
            }
        }
    }

    /// Ends the agent: its channel closed (it stops at end of input), then SIGKILL to its
    /// process group if it lingers; reaped either way.
    pub fn shutdown(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let _ = self.channel.shutdown(std::net::Shutdown::Both);
        let deadline = Instant::now() + Duration::from_secs(3);
        while Instant::now() < deadline {
            if matches!(child.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        if let Ok(pid) = i32::try_from(child.id()) {
            let _ = nix::sys::signal::killpg(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

impl Drop for LocalAgent {
    fn drop(&mut self) {
        self.kill();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_local_process_is_served_over_its_stdio_and_reaped() {
        let dir = tempfile::tempdir().unwrap();
        // `cat` echoes each frame back: the framing both ways, no agent needed.
        let mut a = LocalAgent::start(Path::new("cat"), &[], &dir.path().join("log")).unwrap();
        let pid = a.pid().unwrap();
        a.send("echo", b"hello").unwrap();
        assert_eq!(a.recv("echo", Duration::from_secs(5)).unwrap(), b"hello");
        a.shutdown();
        assert!(!Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_silent_agent_times_out_and_a_dead_one_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let mut a =
            LocalAgent::start(Path::new("sleep"), &["30"], &dir.path().join("log")).unwrap();
        let e = a.recv("waiting", Duration::from_millis(300)).unwrap_err();
        assert!(matches!(e, VmError::Timeout { .. }), "{e}");
        let mut b = LocalAgent::start(Path::new("true"), &[], &dir.path().join("log2")).unwrap();
        std::thread::sleep(Duration::from_millis(200));
        let e = b.recv("waiting", Duration::from_secs(2)).unwrap_err();
        assert!(
            matches!(e, VmError::Died { .. } | VmError::Channel { .. }),
            "{e}"
        );
    }
}
