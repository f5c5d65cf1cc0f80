//! A running lab VM: QEMU as a child that never outlives us, its console
//! watched, its guest channel connected, every wait bounded.

use crate::console::{self, ConsoleWatch};
use crate::monitor::{Monitor, MonitorError};
use crate::qemu::VmConfig;
use crlab_protocol::frame::{read_frame, write_frame, FrameError};
use std::os::unix::net::UnixStream;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum VmError {
    #[error("cannot start QEMU ({program})")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU exited ({status}) while {what}; its stderr: {stderr}\nconsole tail:\n{tail}")]
    Died {
        what: String,
        status: String,
        stderr: String,
        tail: String,
    },
    #[error("the guest failed while {what}: {fatal}\nconsole tail:\n{tail}")]
    GuestFatal {
        what: String,
        fatal: String,
        tail: String,
    },
    #[error("timed out after {secs:.0} s while {what}\nconsole tail:\n{tail}")]
    Timeout {
        what: String,
        secs: f64,
        tail: String,
    },
    #[error("guest channel while {what}")]
    Channel {
        what: String,
        #[source]
        source: FrameError,
    },
    #[error(transparent)]
    Monitor(#[from] MonitorError),
}

/// A QEMU process and what it is connected to.
pub struct Machine {
    child: Option<Child>,
    config: VmConfig,
    console: ConsoleWatch,
    channel: Option<UnixStream>,
    pub started: Instant,
}

impl Machine {
    /// Starts QEMU. It runs in its own process group and is killed if we die
    /// (PR_SET_PDEATHSIG), and on drop.
    pub fn start(program: &str, config: VmConfig) -> Result<Machine, VmError> {
        let _ = std::fs::remove_file(&config.console_log);
        let stderr_path = config.console_log.with_extension("qemu-stderr");
        let stderr = std::fs::File::create(&stderr_path).map_err(|source| VmError::Spawn {
            program: program.into(),
            source,
        })?;
        let mut cmd = Command::new(program);
        cmd.args(config.args())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .process_group(0);
        // SAFETY: the closure runs in the forked child before exec and only
        // makes an async-signal-safe prctl call.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().map_err(|source| VmError::Spawn {
            program: program.into(),
            source,
        })?;
        tracing::debug!(pid = child.id(), "qemu started");
        Ok(Machine {
            child: Some(child),
            console: ConsoleWatch::new(&config.console_log),
            config,
            channel: None,
            started: Instant::now(),
        })
    }

    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    pub fn console_tail(&self, n: usize) -> String {
        console::tail(&self.config.console_log, n)
    }

    /// Fails if QEMU died or the console shows a panic or emergency shell.
    pub fn check(&mut self, what: &str) -> Result<(), VmError> {
        if let Some(child) = self.child.as_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                self.child = None;
                let stderr =
                    std::fs::read_to_string(self.config.console_log.with_extension("qemu-stderr"))
                        .unwrap_or_default();
                return Err(VmError::Died {
                    what: what.into(),
                    status: status.to_string(),
                    stderr: stderr.trim().to_string(),
                    tail: self.console_tail(30),
                });
            }
        }
        if let Some(fatal) = self.console.poll() {
            return Err(VmError::GuestFatal {
                what: what.into(),
                fatal: fatal.to_string(),
                tail: self.console_tail(30),
            });
        }
        Ok(())
    }

    /// Polls `ready` until it returns true, checking QEMU and the console,
    /// until `deadline`.
    pub fn wait_until(
        &mut self,
        what: &str,
        timeout: Duration,
        mut ready: impl FnMut(&mut Machine) -> bool,
    ) -> Result<(), VmError> {
        let start = Instant::now();
        loop {
            self.check(what)?;
            if ready(self) {
                return Ok(());
            }
            if start.elapsed() >= timeout {
                return Err(VmError::Timeout {
                    what: what.into(),
                    secs: timeout.as_secs_f64(),
                    tail: self.console_tail(30),
                });
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Connects to the guest channel socket (QEMU creates it at start).
    pub fn connect_channel(&mut self, timeout: Duration) -> Result<(), VmError> {
        let path = self.config.channel_socket.clone();
        let mut stream = None;
        self.wait_until("connecting to the guest channel", timeout, |_| {
            stream = UnixStream::connect(&path).ok();
            stream.is_some()
        })?;
        self.channel = stream;
        Ok(())
    }

    /// Sends one frame to the guest.
    pub fn send(&mut self, what: &str, frame: &[u8]) -> Result<(), VmError> {
        self.check(what)?;
        let Some(stream) = self.channel.as_mut() else {
            return Err(VmError::Channel {
                what: what.into(),
                source: FrameError::Closed,
            });
        };
        write_frame(stream, frame).map_err(|source| VmError::Channel {
            what: what.into(),
            source,
        })
    }

    /// Waits up to `timeout` for one frame from the guest, checking QEMU and
    /// the console while it waits.
    pub fn recv(&mut self, what: &str, timeout: Duration) -> Result<Vec<u8>, VmError> {
        let start = Instant::now();
        loop {
            let slice = Duration::from_millis(500).min(
                timeout
                    .saturating_sub(start.elapsed())
                    .max(Duration::from_millis(1)),
            );
            let stream = self.channel.as_mut().ok_or(VmError::Channel {
                what: what.into(),
                source: FrameError::Closed,
            })?;
            let _ = stream.set_read_timeout(Some(slice));
            match read_frame(stream) {
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
                            tail: self.console_tail(30),
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

    pub fn monitor(&self, timeout: Duration) -> Result<Monitor, VmError> {
        Ok(Monitor::connect(&self.config.monitor_socket, timeout)?)
    }

    /// Stops QEMU: `quit` on the monitor, then SIGKILL if it lingers.
    pub fn shutdown(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(mut m) = Monitor::connect(&self.config.monitor_socket, Duration::from_secs(2))
            {
                let _ = m.command("quit", Duration::from_secs(2));
            }
            let deadline = Instant::now() + Duration::from_secs(3);
            while Instant::now() < deadline {
                if matches!(child.try_wait(), Ok(Some(_))) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// The qcow2 overlay this machine runs on.
    pub fn disk(&self) -> &Path {
        &self.config.disk
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        self.kill();
    }
}
