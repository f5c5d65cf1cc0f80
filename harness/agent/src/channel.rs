//! The agent's end of the guest channel: opening it, reading requests, writing responses.
//!
//! Frames are `crlab_protocol::frame`'s. What cannot be read as a request (a frame
//! that does not decode, an oversized or truncated frame) becomes
//! [`Incoming::Bad`], which the server answers with `Response{id: 0, error}`.

use std::{
    fs::{File, OpenOptions},
    io,
    os::{
        fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd},
        unix::{fs::OpenOptionsExt, net::UnixStream},
    },
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

use crlab_protocol::frame::{read_frame, write_frame, FrameError, MAX_FRAME};
use nix::{
    fcntl::{fcntl, FcntlArg, FdFlag},
    poll::{poll, PollFd, PollFlags, PollTimeout},
};
use prost::Message;

use super::{config::ChannelSpec, request};
use crlab_protocol::{Request, Response};

/// How long the device may take to appear (udev creates the by-name link).
const DEVICE_WAIT: Duration = Duration::from_secs(30);

/// After an oversized frame header, its bytes are discarded until the channel
/// has been quiet this long (or the announced length has gone by).
const QUIET: Duration = Duration::from_millis(200);

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("the channel device {path} did not appear within {secs} s (is the VM started with a virtserialport named org.crlab.agent?)", secs = DEVICE_WAIT.as_secs())]
    NoDevice { path: PathBuf },
    #[error("opening the channel device {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("connecting to the channel socket {path}")]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("file descriptor {fd} is not open (was it inherited?)")]
    BadFd {
        fd: RawFd,
        #[source]
        source: nix::Error,
    },
    #[error("duplicating the channel descriptor")]
    Dup(#[source] io::Error),
    #[error(
        "the response for request {id} is {len} bytes, more than a frame may hold ({MAX_FRAME})"
    )]
    ResponseTooLarge { id: u64, len: usize },
    #[error("writing the response for request {id}")]
    Write {
        id: u64,
        #[source]
        source: FrameError,
    },
    #[error("keeping the channel descriptor {fd} open across exec")]
    Inherit {
        fd: RawFd,
        #[source]
        source: nix::Error,
    },
}

/// One thing read from the channel.
#[derive(Debug)]
pub enum Incoming {
    Request(Box<Request>),
    /// Something arrived that is not a request; the text says what.
    Bad(String),
    /// The peer went away (end of input, or an I/O error on the channel).
    Closed(Option<io::Error>),
}

/// How the agent got at the channel, which decides what a re-executed agent is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    /// One descriptor, read and written (device, socket, inherited fd).
    Fd(RawFd),
    Stdio,
}

pub struct Channel {
    reader: File,
    writer: File,
    origin: Origin,
    persistent: bool,
}

impl Channel {
    /// Opens what `spec` names.
    pub fn open(spec: &ChannelSpec) -> Result<Self, ChannelError> {
        match spec {
            ChannelSpec::Device(path) => {
                let path = wait_for_device(path)?;
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .custom_flags(libc::O_NOCTTY)
                    .open(&path)
                    .map_err(|source| ChannelError::Open {
                        path: path.clone(),
                        source,
                    })?;
                Self::from_fd(file.into(), true)
            }
            ChannelSpec::Connect(path) => {
                let stream = UnixStream::connect(path).map_err(|source| ChannelError::Connect {
                    path: path.clone(),
                    source,
                })?;
                Self::from_stream(stream)
            }
            ChannelSpec::Fd { fd, persistent } => {
                // Taking ownership of a number we were told about: make sure it is open first.
                fcntl(
                    // SAFETY: only used for this F_GETFD probe, while `fd` is not owned elsewhere.
                    unsafe { std::os::fd::BorrowedFd::borrow_raw(*fd) },
                    FcntlArg::F_GETFD,
                )
                .map_err(|source| ChannelError::BadFd { fd: *fd, source })?;
                // SAFETY: the descriptor was handed to this process to serve (its number on the
                // command line, checked open above), and nothing else in the agent owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(*fd) };
                // The inherited descriptor had FD_CLOEXEC cleared; commands must not inherit it.
                fcntl(&owned, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC))
                    .map_err(|source| ChannelError::BadFd { fd: *fd, source })?;
                Self::from_fd(owned, *persistent)
            }
            ChannelSpec::Stdio => {
                let stdin = io::stdin().as_fd().try_clone_to_owned();
                let stdout = io::stdout().as_fd().try_clone_to_owned();
                Ok(Self {
                    reader: stdin.map_err(ChannelError::Dup)?.into(),
                    writer: stdout.map_err(ChannelError::Dup)?.into(),
                    origin: Origin::Stdio,
                    persistent: false,
                })
            }
        }
    }

    /// Serves one end of a connected socket (tests drive the loop this way).
    pub fn from_stream(stream: UnixStream) -> Result<Self, ChannelError> {
        Self::from_fd(stream.into(), false)
    }

    fn from_fd(fd: OwnedFd, persistent: bool) -> Result<Self, ChannelError> {
        let writer = fd.try_clone().map_err(ChannelError::Dup)?;
        Ok(Self {
            origin: Origin::Fd(fd.as_raw_fd()),
            reader: fd.into(),
            writer: writer.into(),
            persistent,
        })
    }

    /// Whether end of input means "the host went away for now" (the virtio port) rather
    /// than "we are done" (a socket, a pipe).
    pub fn persistent(&self) -> bool {
        self.persistent
    }

    /// Reads the next request, or says why there is none.
    pub fn receive(&mut self) -> Incoming {
        match read_frame(&mut self.reader) {
            Ok(frame) => match request::decode(&frame) {
                Ok(request) => Incoming::Request(Box::new(request)),
                Err(error) => Incoming::Bad(error),
            },
            Err(FrameError::TooLarge { len }) => {
                // The channel is a byte stream with no frame marks, so there is no reliable
                // way back in step. The host sends one request and waits for its answer, so
                // the oversized payload (if any) is in flight right behind its header:
                // discard until the announced length has gone by or the channel goes quiet,
                // and only then answer (the host sends nothing more before the answer, so no
                // later request can be discarded by mistake).
                let dropped = self.discard(u64::from(len));
                Incoming::Bad(format!(
                    "{}; discarded {dropped} bytes after its header until the channel went quiet; \
                     send files in chunks (WriteFile with append)",
                    FrameError::TooLarge { len }
                ))
            }
            Err(e @ FrameError::Truncated) => {
                Incoming::Bad(format!("{e}; the partial frame was dropped"))
            }
            Err(FrameError::Closed) => Incoming::Closed(None),
            Err(FrameError::Io(e)) => Incoming::Closed(Some(e)),
        }
    }

    /// Reads and drops up to `at_most` bytes, stopping once nothing arrived for [`QUIET`].
    fn discard(&mut self, at_most: u64) -> u64 {
        use std::io::Read;
        let mut dropped = 0u64;
        let mut buf = vec![0u8; 64 << 10];
        while dropped < at_most {
            let mut fds = [PollFd::new(self.reader.as_fd(), PollFlags::POLLIN)];
            match poll(&mut fds, PollTimeout::from(QUIET.as_millis() as u16)) {
                Ok(0) => break,
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(_) => break,
            }
            let want = usize::try_from(at_most - dropped).map_or(buf.len(), |n| n.min(buf.len()));
            match self.reader.read(&mut buf[..want]) {
                Ok(0) => break,
                Ok(n) => dropped += n as u64,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => break,
            }
        }
        dropped
    }

    /// Writes one response.
    pub fn send(&mut self, response: &Response) -> Result<(), ChannelError> {
        let bytes = response.encode_to_vec();
        if bytes.len() > MAX_FRAME as usize {
            return Err(ChannelError::ResponseTooLarge {
                id: response.id,
                len: bytes.len(),
            });
        }
        write_frame(&mut self.writer, &bytes).map_err(|source| ChannelError::Write {
            id: response.id,
            source,
        })
    }

    /// Makes the channel survive an exec and returns the arguments that tell the new
    /// image where it is (`--fd N [--persistent]` or `--stdio`).
    pub fn inherit_across_exec(&self) -> Result<Vec<String>, ChannelError> {
        match self.origin {
            Origin::Stdio => Ok(vec!["--stdio".to_owned()]),
            Origin::Fd(fd) => {
                fcntl(&self.reader, FcntlArg::F_SETFD(FdFlag::empty()))
                    .map_err(|source| ChannelError::Inherit { fd, source })?;
                let mut args = vec!["--fd".to_owned(), fd.to_string()];
                if self.persistent {
                    args.push("--persistent".to_owned());
                }
                Ok(args)
            }
        }
    }

    /// Undoes [`Self::inherit_across_exec`] after a failed exec.
    pub fn close_on_exec(&self) {
        if let Err(e) = fcntl(&self.reader, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)) {
            tracing::warn!(error = %e, "could not set FD_CLOEXEC on the channel again");
        }
    }
}

/// Waits (bounded) for the channel device; a by-name link that udev has not made yet is
/// found through sysfs instead (`/sys/class/virtio-ports/*/name`).
fn wait_for_device(path: &Path) -> Result<PathBuf, ChannelError> {
    let deadline = Instant::now() + DEVICE_WAIT;
    let mut told = false;
    loop {
        if path.exists() {
            return Ok(path.to_owned());
        }
        if let Some(node) = virtio_port_by_name(path) {
            tracing::info!(link = %path.display(), node = %node.display(), "using the port node, its by-name link is not there yet");
            return Ok(node);
        }
        if Instant::now() >= deadline {
            return Err(ChannelError::NoDevice {
                path: path.to_owned(),
            });
        }
        if !told {
            tracing::info!(path = %path.display(), "waiting for the channel device");
            told = true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `/dev/virtio-ports/NAME` -> `/dev/vportXpY` when sysfs names that port NAME.
fn virtio_port_by_name(path: &Path) -> Option<PathBuf> {
    let name = path
        .strip_prefix("/dev/virtio-ports")
        .ok()?
        .to_str()?
        .to_owned();
    std::fs::read_dir("/sys/class/virtio-ports")
        .ok()?
        .flatten()
        .find(|port| {
            std::fs::read_to_string(port.path().join("name")).is_ok_and(|n| n.trim_end() == name)
        })
        .map(|port| Path::new("/dev").join(port.file_name()))
        .filter(|node| node.exists())
}
