//! The driver's side of the workload protocol, written once for every driver (the engine's
//! tests, the lab runner in the guest, the benchmark): wait for the ready file and read it, make
//! the external writes it asks for, wake the workload the way it waits, read its result.
//!
//! How files are read and written and signals sent is a [`Host`]: [`Local`] on this machine,
//! the lab runner's over its guest agent. Starting the process and knowing whether it still
//! runs stay with the caller (its own process group, user, SELinux domain or systemd unit): the
//! waits ask the caller's `ended` closure between two looks.
//!
//! Like [`super::protocol`], this file uses `std` and `libc` only: the engine's tests include
//! both by path.

use std::error::Error;
use std::fmt;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::protocol::{self, Outcome, Ready, Trigger};

/// Where the workload runs, as the driver needs it: files of its state dir read and written,
/// a byte written into one of its descriptors, a signal sent to it.
pub trait Host {
    /// What the host reports when it cannot do one of these.
    type Error: Error + 'static;

    /// The whole content of `path`, or `None` while it does not exist.
    fn read(&mut self, path: &Path) -> Result<Option<Vec<u8>>, Self::Error>;

    /// Writes `bytes` at `offset` of the existing file `path`, keeping the rest of it.
    fn write_at(&mut self, path: &Path, offset: u64, bytes: &[u8]) -> Result<(), Self::Error>;

    /// Creates `path` empty.
    fn create(&mut self, path: &Path) -> Result<(), Self::Error>;

    /// Writes `bytes` into descriptor `fd` of process `pid` (`/proc/<pid>/fd/<fd>`).
    fn write_fd(&mut self, pid: i32, fd: i32, bytes: &[u8]) -> Result<(), Self::Error>;

    /// Sends signal `signal` to process `pid`.
    fn signal(&mut self, pid: i32, signal: i32) -> Result<(), Self::Error>;
}

/// A host lent to a driver.
impl<H: Host + ?Sized> Host for &mut H {
    type Error = H::Error;

    fn read(&mut self, path: &Path) -> Result<Option<Vec<u8>>, Self::Error> {
        (**self).read(path)
    }

    fn write_at(&mut self, path: &Path, offset: u64, bytes: &[u8]) -> Result<(), Self::Error> {
        (**self).write_at(path, offset, bytes)
    }

    fn create(&mut self, path: &Path) -> Result<(), Self::Error> {
        (**self).create(path)
    }

    fn write_fd(&mut self, pid: i32, fd: i32, bytes: &[u8]) -> Result<(), Self::Error> {
        (**self).write_fd(pid, fd, bytes)
    }

    fn signal(&mut self, pid: i32, signal: i32) -> Result<(), Self::Error> {
        (**self).signal(pid, signal)
    }
}

/// The workload runs on this machine: `std::fs` and `kill(2)`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Local;

impl Host for Local {
    type Error = io::Error;

    fn read(&mut self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(data) => Ok(Some(data)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn write_at(&mut self, path: &Path, offset: u64, bytes: &[u8]) -> io::Result<()> {
        OpenOptions::new()
            .write(true)
            .open(path)?
            .write_all_at(bytes, offset)
    }

    fn create(&mut self, path: &Path) -> io::Result<()> {
        std::fs::write(path, b"")
    }

    fn write_fd(&mut self, pid: i32, fd: i32, bytes: &[u8]) -> io::Result<()> {
        // Non-blocking: with no reader left, fail at once instead of hanging.
        OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(format!("/proc/{pid}/fd/{fd}"))?
            .write_all(bytes)
    }

    fn signal(&mut self, pid: i32, signal: i32) -> io::Result<()> {
        // SAFETY: kill takes two integers and touches no memory of ours; the caller names the
        // workload's pid, which it started (or restored) and has not reaped.
        if unsafe { libc::kill(pid, signal) } == -1 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

/// What went wrong while driving a workload.
#[derive(Debug)]
pub enum DriveError<E> {
    /// The host could not do what the driver asked.
    Host {
        /// What the driver asked, with the path or pid.
        what: String,
        source: E,
    },
    /// The ready file is not what the protocol says.
    BadReady { path: PathBuf, reason: String },
    /// The workload ended while the driver waited for one of its files.
    Ended {
        /// The file waited for.
        path: PathBuf,
        /// How it ended, as the caller saw it.
        how: String,
        /// Its result file, if it wrote one (a workload that cannot set up writes
        /// `fail: setup: ...`).
        result: Option<String>,
    },
    /// The workload wrote its result while the driver waited for its ready file: it could
    /// not set up (`fail: setup: ...`), and will not be ready.
    ResultBeforeReady { path: PathBuf, result: String },
    /// A file did not appear in time.
    Timeout { path: PathBuf, limit: Duration },
}

impl<E: Error + 'static> DriveError<E> {
    /// The message followed by each of its sources, for callers that keep errors as text.
    pub fn with_sources(&self) -> String {
        let mut text = self.to_string();
        let mut source = self.source();
        while let Some(s) = source {
            text.push_str(&format!(": {s}"));
            source = s.source();
        }
        text
    }
}

impl<E> fmt::Display for DriveError<E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DriveError::Host { what, .. } => f.write_str(what),
            DriveError::BadReady { path, reason } => {
                write!(f, "bad ready file {}: {reason}", path.display())
            }
            DriveError::Ended { path, how, result } => {
                write!(
                    f,
                    "the workload ended ({how}) before it wrote {}",
                    path.display()
                )?;
                match result {
                    Some(text) => write!(f, "; its result file says {:?}", text.trim()),
                    None => f.write_str(" and wrote no result file"),
                }
            }
            DriveError::ResultBeforeReady { path, result } => write!(
                f,
                "the workload wrote its result before {}: {:?}",
                path.display(),
                result.trim()
            ),
            DriveError::Timeout { path, limit } => {
                write!(f, "{} did not appear within {limit:?}", path.display())
            }
        }
    }
}

impl<E: Error + 'static> Error for DriveError<E> {
    fn source(&self) -> Option<&(dyn Error + 'static)> {
        match self {
            DriveError::Host { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// How long between two looks at a file the driver waits for, unless told otherwise.
pub const POLL: Duration = Duration::from_millis(10);

/// One workload's state dir, driven through a [`Host`].
#[derive(Debug)]
pub struct Driver<H> {
    host: H,
    state: PathBuf,
    poll: Duration,
}

impl<H: Host> Driver<H> {
    /// Drives the workload whose state dir is `state` (as the host names it).
    pub fn new(host: H, state: impl Into<PathBuf>) -> Self {
        Driver {
            host,
            state: state.into(),
            poll: POLL,
        }
    }

    /// Looks every `poll` instead of every [`POLL`] (a host whose every look is a round trip).
    pub fn polling_every(mut self, poll: Duration) -> Self {
        self.poll = poll;
        self
    }

    /// A file of the state dir.
    pub fn path(&self, file: &str) -> PathBuf {
        self.state.join(file)
    }

    fn read_text(&mut self, path: &Path) -> Result<Option<String>, DriveError<H::Error>> {
        let data = self.host.read(path);
        let data = asked(|| format!("reading {}", path.display()), data)?;
        Ok(data.map(|d| String::from_utf8_lossy(&d).into_owned()))
    }

    /// The ready file, if the workload has written it.
    pub fn try_ready(&mut self) -> Result<Option<Ready>, DriveError<H::Error>> {
        let path = self.path(protocol::READY);
        match self.read_text(&path)? {
            None => Ok(None),
            Some(text) => Ready::parse(&text)
                .map(Some)
                .map_err(|reason| DriveError::BadReady { path, reason }),
        }
    }

    /// The result file, if the workload has written it.
    pub fn try_result(&mut self) -> Result<Option<Outcome>, DriveError<H::Error>> {
        let path = self.path(protocol::RESULT);
        Ok(self.read_text(&path)?.map(|text| Outcome::parse(&text)))
    }

    /// Waits up to `limit` for the ready file and reads it. Between two looks `ended` says
    /// whether the workload has ended, and how (`None` while it runs, or when the caller
    /// cannot tell).
    pub fn wait_ready(
        &mut self,
        limit: Duration,
        ended: impl FnMut() -> Option<String>,
    ) -> Result<Ready, DriveError<H::Error>> {
        self.wait(protocol::READY, limit, ended, Self::try_ready)
    }

    /// Waits up to `limit` for the result file and reads it; `ended` as in
    /// [`Driver::wait_ready`].
    pub fn wait_result(
        &mut self,
        limit: Duration,
        ended: impl FnMut() -> Option<String>,
    ) -> Result<Outcome, DriveError<H::Error>> {
        self.wait(protocol::RESULT, limit, ended, Self::try_result)
    }

    fn wait<T>(
        &mut self,
        file: &str,
        limit: Duration,
        mut ended: impl FnMut() -> Option<String>,
        mut look: impl FnMut(&mut Self) -> Result<Option<T>, DriveError<H::Error>>,
    ) -> Result<T, DriveError<H::Error>> {
        let start = Instant::now();
        loop {
            if let Some(found) = look(self)? {
                return Ok(found);
            }
            if let Some(how) = ended() {
                // It may have written the file just before it ended.
                if let Some(found) = look(self)? {
                    return Ok(found);
                }
                let result = self.read_text(&self.path(protocol::RESULT)).ok().flatten();
                return Err(DriveError::Ended {
                    path: self.path(file),
                    how,
                    result,
                });
            }
            // A workload that cannot set up says so in its result file and is never ready:
            // no need to wait out the limit (the caller may not see it end, in a VM).
            if file == protocol::READY {
                if let Some(result) = self.read_text(&self.path(protocol::RESULT))? {
                    // It may have been ready just before.
                    if let Some(found) = look(self)? {
                        return Ok(found);
                    }
                    return Err(DriveError::ResultBeforeReady {
                        path: self.path(file),
                        result,
                    });
                }
            }
            if start.elapsed() >= limit {
                return Err(DriveError::Timeout {
                    path: self.path(file),
                    limit,
                });
            }
            std::thread::sleep(self.poll);
        }
    }

    /// Makes the writes the ready file asks for, into the state dir.
    pub fn external_writes(&mut self, ready: &Ready) -> Result<(), DriveError<H::Error>> {
        for w in &ready.external_writes {
            let path = self.path(&w.file);
            let written = self.host.write_at(&path, w.offset, w.text.as_bytes());
            asked(
                || format!("the external write at {} of {}", w.offset, path.display()),
                written,
            )?;
        }
        Ok(())
    }

    /// Wakes the workload (as `pid`: the original or the restored process) the way its ready
    /// file says, writing `byte` if that is through a pipe.
    pub fn wake(&mut self, ready: &Ready, pid: i32, byte: u8) -> Result<(), DriveError<H::Error>> {
        match ready.trigger {
            Trigger::CheckFile => {
                let path = self.path(protocol::CHECK);
                let created = self.host.create(&path);
                asked(|| format!("creating {}", path.display()), created)
            }
            Trigger::PipeFd(fd) => {
                let written = self.host.write_fd(pid, fd, &[byte]);
                asked(
                    || format!("writing into /proc/{pid}/fd/{fd} to trigger the workload"),
                    written,
                )
            }
            Trigger::Signal(sig) => {
                let sent = self.host.signal(pid, sig);
                asked(|| format!("sending signal {sig} to pid {pid}"), sent)
            }
        }
    }

    /// Makes the external writes, then wakes the workload with [`protocol::TRIGGER_BYTE`].
    pub fn trigger(&mut self, ready: &Ready, pid: i32) -> Result<(), DriveError<H::Error>> {
        self.external_writes(ready)?;
        self.wake(ready, pid, protocol::TRIGGER_BYTE)
    }
}

/// `r`, its error wrapped with what the driver asked of the host.
fn asked<T, E>(what: impl FnOnce() -> String, r: Result<T, E>) -> Result<T, DriveError<E>> {
    r.map_err(|source| DriveError::Host {
        what: what(),
        source,
    })
}
