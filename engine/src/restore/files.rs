//! Recreating descriptors: every open file description of the tree is opened
//! once, in the root before the tree is forked, and parked at a high number;
//! forked processes inherit the parked descriptors, so descriptions shared
//! across `fork()` (and their offsets) stay shared, and a pipe between two
//! processes is one pipe. Each process then `dup3`s what it had to its
//! original numbers and closes the parked ones.

use super::error::StepContext;
use super::RestoreError;
use crate::image::schema::{
    file_entry, Fd, FileEntry, FileTable, PathFileType, Pipe, UnixSocket, UnixSocketType,
};
use crate::sys::{
    fd_of, send_all, set_pipe_capacity, set_sockopt_int, sockopt_int, Remote, Scratch,
};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::OpenOptionsExt;

/// The parked descriptors: file id -> descriptor number in every process.
#[derive(Debug, Default, Clone)]
pub struct Parked {
    pub fds: BTreeMap<u32, u64>,
}

/// Opens every file description in `table` inside the (root) task, parking
/// them at numbers above `above`.
pub fn open_all(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    table: &FileTable,
    above: u64,
) -> Result<Parked, RestoreError> {
    failpoint!(
        "restore.files.open",
        super::error::injected(pid, "descriptors")
    );
    let pipes: HashMap<u64, &Pipe> = table.pipes.iter().map(|p| (p.id, p)).collect();
    let mut pipe_ends: HashMap<u64, (u64, u64)> = HashMap::new();
    let mut parked = Parked::default();
    let scratch_fds = above + table.files.len() as u64 + 16;
    let mut sockets = Sockets::new(table)?;
    for (next, entry) in (above..).zip(table.files.iter()) {
        let opened = if let Some(file_entry::Kind::UnixSocket(s)) = &entry.kind {
            sockets.end(remote, pid, scratch, s, scratch_fds)?
        } else {
            open_one(
                remote,
                pid,
                scratch,
                entry,
                &pipes,
                &mut pipe_ends,
                scratch_fds,
            )?
        };
        let h = remote
            .syscall(
                "dup3",
                libc::SYS_dup3,
                &[opened, next, libc::O_CLOEXEC as u64],
            )
            .step(pid, "descriptors")?;
        remote
            .syscall("close", libc::SYS_close, &[opened])
            .step(pid, "descriptors")?;
        parked.fds.insert(entry.id, h);
    }
    if let Some(ino) = sockets.pending.keys().next() {
        return Err(RestoreError::Inconsistent(format!(
            "the Unix socket of inode {ino} was created, but no open file of files.img is it"
        )));
    }
    for (r, w) in pipe_ends.values() {
        remote
            .syscall("close", libc::SYS_close, &[*r])
            .step(pid, "a pipe")?;
        remote
            .syscall("close", libc::SYS_close, &[*w])
            .step(pid, "a pipe")?;
    }
    Ok(parked)
}

fn open_one(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    entry: &FileEntry,
    pipes: &HashMap<u64, &Pipe>,
    pipe_ends: &mut HashMap<u64, (u64, u64)>,
    above: u64,
) -> Result<u64, RestoreError> {
    match &entry.kind {
        Some(file_entry::Kind::Path(p)) => {
            let flags = open_flags(entry.flags)
                & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_CLOEXEC);
            let t = remote
                .open("open", scratch, &p.path, flags)
                .map_err(|source| RestoreError::File {
                    pid,
                    what: format!("reopening open file {}", entry.id),
                    path: p.path.clone(),
                    source,
                })?;
            let seekable = matches!(
                PathFileType::try_from(p.r#type),
                Ok(PathFileType::Regular | PathFileType::Directory)
            );
            if seekable && p.pos != 0 {
                remote
                    .syscall("lseek", libc::SYS_lseek, &[t, p.pos, libc::SEEK_SET as u64])
                    .map_err(|source| RestoreError::File {
                        pid,
                        what: format!("seeking open file {} to {}", entry.id, p.pos),
                        path: p.path.clone(),
                        source,
                    })?;
            }
            Ok(t)
        }
        Some(file_entry::Kind::Pipe(end)) => {
            let pipe = pipes.get(&end.pipe_id).ok_or_else(|| {
                RestoreError::Inconsistent(format!(
                    "file {} names pipe {} which files.img lacks",
                    entry.id, end.pipe_id
                ))
            })?;
            let (r, w) = match pipe_ends.get(&pipe.id) {
                Some(e) => *e,
                None => {
                    let e = create_pipe(remote, pid, scratch, pipe, above)?;
                    pipe_ends.insert(pipe.id, e);
                    e
                }
            };
            let t = if entry.flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32 {
                w
            } else {
                r
            };
            // Each end is its own open file description, with its own flags.
            let flags = open_flags(entry.flags) | libc::O_CLOEXEC;
            remote
                .open(
                    "open(pipe end)",
                    scratch,
                    &format!("/proc/self/fd/{t}"),
                    flags,
                )
                .step(pid, "a pipe end")
        }
        Some(file_entry::Kind::UnixSocket(_)) => Err(RestoreError::Inconsistent(format!(
            "file {} is a Unix socket, which is created with its peer",
            entry.id
        ))),
        None => Err(RestoreError::Inconsistent(format!(
            "file {} has no kind",
            entry.id
        ))),
    }
}

/// A pipe with its capacity and buffered bytes; returns (read end, write end).
fn create_pipe(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    pipe: &Pipe,
    above: u64,
) -> Result<(u64, u64), RestoreError> {
    remote
        .syscall(
            "pipe2",
            libc::SYS_pipe2,
            &[scratch.addr, libc::O_CLOEXEC as u64],
        )
        .step(pid, "a pipe")?;
    let mut b = [0u8; 8];
    remote.read_mem(scratch.addr, &mut b).step(pid, "a pipe")?;
    let r = u32::from_ne_bytes([b[0], b[1], b[2], b[3]]) as u64;
    let w = u32::from_ne_bytes([b[4], b[5], b[6], b[7]]) as u64;
    // Out of the way of the numbers about to be installed.
    let mut ends = [0u64; 2];
    for (i, fd) in [r, w].into_iter().enumerate() {
        ends[i] = remote
            .syscall(
                "fcntl(F_DUPFD_CLOEXEC)",
                libc::SYS_fcntl,
                &[fd, libc::F_DUPFD_CLOEXEC as u64, above],
            )
            .step(pid, "a pipe")?;
        remote
            .syscall("close", libc::SYS_close, &[fd])
            .step(pid, "a pipe")?;
    }
    // Capacity and contents, written by the engine through a reopened write end.
    let path = format!("/proc/{pid}/fd/{}", ends[1]);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&path)
        .map_err(|e| RestoreError::Inconsistent(format!("opening {path}: {e}")))?;
    if pipe.capacity > 0 {
        // Best effort, as the pipe's contents say what matters: a smaller pipe still holds
        // them when they fit, and the write below fails when they do not.
        if let Err(e) = set_pipe_capacity(f.as_fd(), pipe.capacity) {
            tracing::debug!(pid, pipe = pipe.id, error = %e, "setting a pipe's capacity");
        }
    }
    f.write_all(&pipe.data).map_err(|e| {
        RestoreError::Inconsistent(format!(
            "refilling pipe {} with {} bytes: {e}",
            pipe.id,
            pipe.data.len()
        ))
    })?;
    Ok((ends[0], ends[1]))
}

/// The Unix socket pairs of the tree, created in the root as their first end comes.
struct Sockets<'a> {
    /// Every socket of the table with its open file's flags, by inode.
    all: HashMap<u64, (&'a UnixSocket, u32)>,
    /// Ends created with their peer and not yet handed out: inode -> descriptor in the root.
    pending: HashMap<u64, u64>,
}

impl<'a> Sockets<'a> {
    /// The sockets of `table`, each checked against its peer: the pairs are whole, of one
    /// type and one label.
    fn new(table: &'a FileTable) -> Result<Sockets<'a>, RestoreError> {
        let mut all = HashMap::new();
        for f in &table.files {
            if let Some(file_entry::Kind::UnixSocket(s)) = &f.kind {
                if all.insert(s.ino, (s, f.flags)).is_some() {
                    return Err(bad(s, "is two open files"));
                }
            }
        }
        for (s, _) in all.values() {
            let Some((peer, _)) = all.get(&s.peer) else {
                return Err(bad(s, "names a peer that files.img lacks"));
            };
            if peer.peer != s.ino || peer.r#type != s.r#type || peer.label != s.label {
                return Err(bad(
                    s,
                    "and its peer are not the two ends of one pair (peers, type and label)",
                ));
            }
            if UnixSocketType::try_from(s.r#type).unwrap_or(UnixSocketType::Unspecified)
                == UnixSocketType::Unspecified
            {
                return Err(bad(s, "has no type"));
            }
        }
        Ok(Sockets {
            all,
            pending: HashMap::new(),
        })
    }

    /// The root's descriptor of socket `s`: created with its peer (which waits in `pending`)
    /// or, created with it earlier, taken from `pending`.
    fn end(
        &mut self,
        remote: &mut Remote,
        pid: i32,
        scratch: Scratch,
        s: &UnixSocket,
        above: u64,
    ) -> Result<u64, RestoreError> {
        if let Some(fd) = self.pending.remove(&s.ino) {
            return Ok(fd);
        }
        let &(peer, peer_flags) = self
            .all
            .get(&s.peer)
            .ok_or_else(|| bad(s, "names a peer that files.img lacks"))?;
        let &(_, flags) = self
            .all
            .get(&s.ino)
            .ok_or_else(|| bad(s, "is not in files.img"))?;
        let (a, b) = create_pair(remote, pid, scratch, s, above)?;
        let fill = fill_pair(pid, (s, flags, a), (peer, peer_flags, b));
        if let Err(e) = fill {
            for fd in [a, b] {
                remote
                    .syscall("close", libc::SYS_close, &[fd])
                    .step(pid, "a Unix socket")?;
            }
            return Err(e);
        }
        self.pending.insert(peer.ino, b);
        Ok(a)
    }
}

fn bad(s: &UnixSocket, what: &str) -> RestoreError {
    RestoreError::Inconsistent(format!("the Unix socket of inode {} {what}", s.ino))
}

/// Creates the pair `s` is an end of in the root, under its label (`attr/sockcreate`, reset
/// right after), and moves both ends above `above`; returns (`s`'s end, its peer's end).
fn create_pair(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    s: &UnixSocket,
    above: u64,
) -> Result<(u64, u64), RestoreError> {
    failpoint!(
        "restore.files.socket",
        super::error::injected(pid, "a Unix socket pair")
    );
    let ty = match UnixSocketType::try_from(s.r#type) {
        Ok(UnixSocketType::Stream) => libc::SOCK_STREAM,
        Ok(UnixSocketType::Dgram) => libc::SOCK_DGRAM,
        _ => libc::SOCK_SEQPACKET,
    };
    let labelled = !s.label.is_empty();
    if labelled {
        super::context::write_attr(remote, scratch, "sockcreate", &s.label)
            .step(pid, "the socket creation context (attr/sockcreate)")?;
    }
    let made = remote.syscall(
        "socketpair",
        libc::SYS_socketpair,
        &[
            libc::AF_UNIX as u64,
            crate::sys::int_arg(ty | libc::SOCK_CLOEXEC),
            0,
            scratch.addr,
        ],
    );
    if labelled {
        super::context::write_attr(remote, scratch, "sockcreate", "")
            .step(pid, "the socket creation context (attr/sockcreate)")?;
    }
    made.step(pid, "a Unix socket pair")?;
    let mut buf = [0u8; 8];
    remote
        .read_mem(scratch.addr, &mut buf)
        .step(pid, "a Unix socket pair")?;
    let made = [
        u64::from(u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]])),
        u64::from(u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]])),
    ];
    let mut ends = [0u64; 2];
    for (i, fd) in made.into_iter().enumerate() {
        ends[i] = remote
            .syscall(
                "fcntl(F_DUPFD_CLOEXEC)",
                libc::SYS_fcntl,
                &[fd, libc::F_DUPFD_CLOEXEC as u64, above],
            )
            .step(pid, "a Unix socket pair")?;
        remote
            .syscall("close", libc::SYS_close, &[fd])
            .step(pid, "a Unix socket pair")?;
    }
    Ok((ends[0], ends[1]))
}

/// Gives the new pair (`a`, `b`: the root's descriptors, with each end's image and file
/// flags) its state, from the engine through copies of the root's descriptors: buffer sizes,
/// the queued messages (each end's queue sent from the other end), then the options, the
/// shutdown state and the file flags.
fn fill_pair(
    pid: i32,
    (sa, fa, a): (&UnixSocket, u32, u64),
    (sb, fb, b): (&UnixSocket, u32, u64),
) -> Result<(), RestoreError> {
    fn sock_err(s: &UnixSocket, what: String) -> impl FnOnce(crate::sys::SysError) -> RestoreError {
        let ino = s.ino;
        move |e| RestoreError::Inconsistent(format!("the Unix socket of inode {ino}: {what}: {e}"))
    }
    let ca = fd_of(pid, a).map_err(sock_err(sa, "taking a copy".into()))?;
    let cb = fd_of(pid, b).map_err(sock_err(sb, "taking a copy".into()))?;
    let ends: [(&UnixSocket, u32, &OwnedFd); 2] = [(sa, fa, &ca), (sb, fb, &cb)];
    for (s, _, c) in ends {
        set_buffer(s, c, libc::SO_RCVBUF, libc::SO_RCVBUFFORCE, s.rcvbuf)?;
        set_buffer(s, c, libc::SO_SNDBUF, libc::SO_SNDBUFFORCE, s.sndbuf)?;
    }
    let stream = UnixSocketType::try_from(sa.r#type) == Ok(UnixSocketType::Stream);
    for ((to, _, _), (_, _, from)) in [(ends[0], ends[1]), (ends[1], ends[0])] {
        for (i, m) in to.queue.iter().enumerate() {
            send_all(from.as_fd(), m, stream).map_err(sock_err(
                to,
                format!(
                    "queueing message {i} of {} ({} bytes)",
                    to.queue.len(),
                    m.len()
                ),
            ))?;
        }
    }
    for (s, flags, c) in ends {
        let on = |v: bool| i32::from(v);
        if s.passcred {
            set_sockopt_int(c.as_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, on(true))
                .map_err(sock_err(s, "setting SO_PASSCRED".into()))?;
        }
        if s.passsec {
            set_sockopt_int(c.as_fd(), libc::SOL_SOCKET, libc::SO_PASSSEC, on(true))
                .map_err(sock_err(s, "setting SO_PASSSEC".into()))?;
        }
        let how = match s.shutdown & 3 {
            1 => Some(nix::sys::socket::Shutdown::Read),
            2 => Some(nix::sys::socket::Shutdown::Write),
            3 => Some(nix::sys::socket::Shutdown::Both),
            _ => None,
        };
        if let Some(how) = how {
            nix::sys::socket::shutdown(c.as_raw_fd(), how).map_err(|e| {
                sock_err(s, "shutting it down".into())(crate::sys::SysError::Call {
                    op: "shutdown",
                    tid: 0,
                    source: e,
                })
            })?;
        }
        let fl = nix::fcntl::OFlag::from_bits_retain(open_flags(flags));
        nix::fcntl::fcntl(c, nix::fcntl::FcntlArg::F_SETFL(fl)).map_err(|e| {
            sock_err(s, "setting its file flags".into())(crate::sys::SysError::Call {
                op: "fcntl(F_SETFL)",
                tid: 0,
                source: e,
            })
        })?;
    }
    Ok(())
}

/// Gives socket `c` the buffer size `want` (as `getsockopt` gave it at dump) when a new
/// socket's differs: the kernel doubles what it is given, and the `FORCE` option passes the
/// system's maximum, as the dumped process may have been allowed to.
fn set_buffer(
    s: &UnixSocket,
    c: &OwnedFd,
    get: i32,
    force: i32,
    want: u32,
) -> Result<(), RestoreError> {
    let name = if get == libc::SO_RCVBUF {
        "SO_RCVBUF"
    } else {
        "SO_SNDBUF"
    };
    let fail = |what: String| {
        RestoreError::Inconsistent(format!("the Unix socket of inode {}: {what}", s.ino))
    };
    let want_i = i32::try_from(want).map_err(|_| fail(format!("{name} {want} is out of range")))?;
    let now = sockopt_int(c.as_fd(), libc::SOL_SOCKET, get)
        .map_err(|e| fail(format!("reading {name}: {e}")))?;
    if want == 0 || now == want_i {
        return Ok(());
    }
    set_sockopt_int(c.as_fd(), libc::SOL_SOCKET, force, want_i / 2)
        .map_err(|e| fail(format!("setting {name} to {want}: {e}")))?;
    let now = sockopt_int(c.as_fd(), libc::SOL_SOCKET, get)
        .map_err(|e| fail(format!("reading {name}: {e}")))?;
    if now != want_i {
        return Err(fail(format!("{name} is {now} after setting it to {want}")));
    }
    Ok(())
}

/// Installs a process's descriptors from the parked ones, then closes every parked one.
pub fn install(
    remote: &mut Remote,
    pid: i32,
    fds: &[Fd],
    parked: &Parked,
) -> Result<(), RestoreError> {
    failpoint!(
        "restore.files.install",
        super::error::injected(pid, "descriptors")
    );
    for fd in fds {
        let h = *parked.fds.get(&fd.file_id).ok_or_else(|| {
            RestoreError::Inconsistent(format!(
                "fd {} of process {pid} names file {} which files.img lacks",
                fd.fd, fd.file_id
            ))
        })?;
        let flags = if fd.cloexec {
            libc::O_CLOEXEC as u64
        } else {
            0
        };
        remote
            .syscall("dup3", libc::SYS_dup3, &[h, fd.fd as u64, flags])
            .step(pid, "descriptors")?;
    }
    for h in parked.fds.values() {
        if !fds.iter().any(|f| f.fd as u64 == *h) {
            remote
                .syscall("close", libc::SYS_close, &[*h])
                .step(pid, "descriptors")?;
        }
    }
    Ok(())
}

/// The status flags of an open file as the image records them, as `open` takes them: the
/// kernel's `f_flags` are an `int` stored unsigned, so the bits are kept as they are.
fn open_flags(flags: u32) -> i32 {
    i32::from_ne_bytes(flags.to_ne_bytes())
}

/// The lowest number above every descriptor of every process.
pub fn park_base(all: &[&[Fd]]) -> u64 {
    all.iter()
        .flat_map(|f| f.iter())
        .map(|f| f.fd as u64 + 1)
        .max()
        .unwrap_or(0)
        .max(3)
        + 16
}
