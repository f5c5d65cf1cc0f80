//! Recreating descriptors: every open file description of the tree is opened
//! once, in the root before the tree is forked, and parked at a high number;
//! forked processes inherit the parked descriptors, so descriptions shared
//! across `fork()` (and their offsets) stay shared, and a pipe between two
//! processes is one pipe. Each process then `dup3`s what it had to its
//! original numbers and closes the parked ones.
//!
//! A deleted file is made again at its path, filled, and unlinked at once; its descriptions are
//! opened from it through /proc, so their names read "PATH (deleted)" as before.
//!
//! Eventfds, timerfds, signalfds, epoll and inotify instances are made the same way, by the
//! root, with their counter, time, unread expirations, mask or watches; an epoll's registrations are added once its
//! process has every descriptor at its number, by that process, with the original numbers
//! ([`register_epolls`]): the kernel keys a registration by file and descriptor number.
//!
//! Unix sockets are the exception: the kernel records the credentials of the process that
//! calls `socketpair`, `listen` or `connect` (`SO_PEERCRED`), so each is made once the tree
//! exists, by the process those credentials name, with them ([`make_unix_sockets`]), and
//! handed to the processes that hold it at a number kept for it ([`Parked::late`]).

use super::error::StepContext;
use super::RestoreError;
use crate::image::schema::{
    file_entry, DeletedFile, EventFd, Fd, FifoFile, FileEntry, FileTable, InotifyFile, MemfdFile,
    PathFileType, PeerCred, Pipe, SignalFd, SocketOption, TimerFd, UnixSocket, UnixSocketType,
};
use crate::sys::{
    fd_of, send_all, set_pipe_capacity, set_sockopt_bytes, set_sockopt_int, set_sockopt_timeval,
    sockopt_bytes, sockopt_int, Remote, Scratch,
};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::fd::OwnedFd;
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::{FileExt, OpenOptionsExt};

/// The parked descriptors: file id -> descriptor number in every process.
#[derive(Debug, Default, Clone)]
pub struct Parked {
    pub fds: BTreeMap<u32, u64>,
    /// The numbers kept for the Unix sockets (file id -> number), which are made once the tree
    /// exists and handed only to the processes that hold them ([`make_unix_sockets`]).
    pub late: BTreeMap<u32, u64>,
}

/// What the root holds while it opens the descriptions of pipes and memfds: each pipe's ends
/// (by pipe id) and each memfd (by memfd id), closed once every description is open.
#[derive(Default)]
struct Made {
    pipe_ends: HashMap<u64, (u64, u64)>,
    memfds: HashMap<u64, u64>,
    /// Each named pipe's holder (device, inode -> a read-write descriptor in the root), kept
    /// open while its descriptions are opened, so that no open blocks and its refilled buffer
    /// stays.
    fifos: HashMap<(u64, u64), u64>,
    /// Each deleted file made again (device, inode at dump -> a read-write descriptor of it in
    /// the root, unlinked already), its descriptions opened from it.
    deleted: HashMap<(u64, u64), u64>,
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
    let mut made = Made::default();
    let mut parked = Parked::default();
    let scratch_fds = above + table.files.len() as u64 + 16;
    // Established TCP connections last: one accepted from a listener of the tree shares its
    // port, which only a socket in repair mode may bind to once the listener holds it; the
    // listener could not bind to it after.
    let connection =
        |e: &FileEntry| matches!(&e.kind, Some(file_entry::Kind::InetSocket(s)) if s.tcp.is_some());
    let numbered = (above..).zip(table.files.iter());
    let others = numbered.clone().filter(|(_, e)| !connection(e));
    for (next, entry) in others.chain(numbered.filter(|(_, e)| connection(e))) {
        if let Some(file_entry::Kind::UnixSocket(_)) = &entry.kind {
            // Made once the tree exists, by the process its peer credentials name.
            parked.late.insert(entry.id, next);
            continue;
        }
        let opened = open_one(remote, pid, scratch, entry, &pipes, &mut made, scratch_fds)?;
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
    for fd in made.fifos.values() {
        remote
            .syscall("close", libc::SYS_close, &[*fd])
            .step(pid, "a named pipe")?;
    }
    for fd in made.memfds.values() {
        remote
            .syscall("close", libc::SYS_close, &[*fd])
            .step(pid, "a memfd")?;
    }
    for fd in made.deleted.values() {
        remote
            .syscall("close", libc::SYS_close, &[*fd])
            .step(pid, "a deleted file")?;
    }
    for (r, w) in made.pipe_ends.values() {
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
    made: &mut Made,
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
            let (r, w) = match made.pipe_ends.get(&pipe.id) {
                Some(e) => *e,
                None => {
                    let e = create_pipe(remote, pid, scratch, pipe, above)?;
                    made.pipe_ends.insert(pipe.id, e);
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
        Some(file_entry::Kind::Fifo(f)) => {
            if let std::collections::hash_map::Entry::Vacant(e) = made.fifos.entry((f.dev, f.ino)) {
                e.insert(hold_fifo(remote, pid, scratch, f, above)?);
            }
            let flags = open_flags(entry.flags)
                & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_CLOEXEC);
            remote
                .open("open(fifo)", scratch, &f.path, flags | libc::O_CLOEXEC)
                .map_err(|source| RestoreError::File {
                    pid,
                    what: format!("reopening the named pipe of open file {}", entry.id),
                    path: f.path.clone(),
                    source,
                })
        }
        Some(file_entry::Kind::Memfd(m)) => {
            let t = match made.memfds.get(&m.memfd_id) {
                Some(t) => *t,
                None if m.first => {
                    let t = create_memfd(remote, pid, scratch, m, above)?;
                    made.memfds.insert(m.memfd_id, t);
                    t
                }
                None => {
                    return Err(RestoreError::Inconsistent(format!(
                        "file {} is a description of memfd {} which no earlier file makes",
                        entry.id, m.memfd_id
                    )))
                }
            };
            let flags = open_flags(entry.flags);
            reopen_description(remote, pid, scratch, t, flags, m.pos, Reopened::Memfd)
        }
        Some(file_entry::Kind::Deleted(d)) => {
            let t = match made.deleted.get(&(d.dev, d.ino)) {
                Some(t) => *t,
                None if d.first => {
                    let t = create_deleted(remote, pid, scratch, entry.id, d, above)?;
                    made.deleted.insert((d.dev, d.ino), t);
                    t
                }
                None => {
                    return Err(RestoreError::Inconsistent(format!(
                        "file {} is a description of the deleted file {} which no earlier file \
                         makes",
                        entry.id, d.path
                    )))
                }
            };
            // Opened through /proc, it is the same (unlinked) file, and its name reads
            // "PATH (deleted)".
            let flags = open_flags(entry.flags) & !(libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL);
            reopen_description(remote, pid, scratch, t, flags, d.pos, Reopened::Deleted)
        }
        Some(file_entry::Kind::Eventfd(e)) => create_eventfd(remote, pid, scratch, entry, e),
        Some(file_entry::Kind::Timerfd(t)) => create_timerfd(remote, pid, scratch, entry, t),
        Some(file_entry::Kind::Signalfd(sfd)) => create_signalfd(remote, pid, scratch, entry, sfd),
        Some(file_entry::Kind::Inotify(n)) => create_inotify(remote, pid, scratch, entry, n),
        Some(file_entry::Kind::Epoll(_)) => {
            let fd = remote
                .syscall(
                    "epoll_create1",
                    libc::SYS_epoll_create1,
                    &[libc::EPOLL_CLOEXEC as u64],
                )
                .step(pid, "an epoll instance")?;
            status_flags(remote, pid, fd, entry, 0)?;
            Ok(fd)
        }
        Some(file_entry::Kind::InetSocket(s)) => {
            super::inet::create(remote, pid, scratch, s, entry.flags, above)
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

/// Opens the named pipe `f` read-write in the root (a FIFO's open that never blocks), at a
/// number above `above`, after checking that its path still names a FIFO; on the first
/// description, refills its buffer from the engine through a copy, after checking that no
/// one else left data in it (its buffer is shared by every opener).
fn hold_fifo(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    f: &FifoFile,
    above: u64,
) -> Result<u64, RestoreError> {
    use std::os::unix::fs::FileTypeExt;
    let bad =
        |what: String| RestoreError::Inconsistent(format!("the named pipe {}: {what}", f.path));
    match std::fs::symlink_metadata(&f.path) {
        Ok(m) if m.file_type().is_fifo() => {}
        Ok(_) => {
            return Err(bad(
                "is no longer a FIFO; put it back and restore again".into()
            ))
        }
        Err(e) => {
            return Err(bad(format!(
                "{e}; create it again (mkfifo) and restore again"
            )))
        }
    }
    if !f.first {
        return Err(bad("its first description is missing from files.img".into()));
    }
    let t = remote
        .open(
            "open(fifo)",
            scratch,
            &f.path,
            libc::O_RDWR | libc::O_NONBLOCK | libc::O_CLOEXEC,
        )
        .map_err(|source| RestoreError::File {
            pid,
            what: "holding a named pipe open".into(),
            path: f.path.clone(),
            source,
        })?;
    let holder = move_above(remote, pid, t, above, "a named pipe")?;
    let copy = fd_of(pid, holder).map_err(|e| bad(format!("taking a copy: {e}")))?;
    let queued = crate::sys::pipe_queued(copy.as_fd()).map_err(|e| bad(e.to_string()))?;
    if queued != 0 {
        return Err(bad(format!(
            "holds {queued} bytes another process wrote since the dump; empty it and restore \
             again"
        )));
    }
    if f.capacity != 0 {
        set_pipe_capacity(copy.as_fd(), f.capacity).map_err(|e| bad(e.to_string()))?;
    }
    let mut w = std::fs::File::from(copy);
    w.write_all(&f.data)
        .map_err(|e| bad(format!("refilling {} bytes: {e}", f.data.len())))?;
    Ok(holder)
}

/// A file that is reopened for each of its descriptions.
#[derive(Clone, Copy)]
enum Reopened {
    Memfd,
    Deleted,
}

impl Reopened {
    /// (the remote call's name, the file in words, its offset in words).
    fn names(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Reopened::Memfd => ("open(memfd)", "a memfd", "the offset of a memfd"),
            Reopened::Deleted => (
                "open(deleted file)",
                "a deleted file",
                "the offset of a deleted file",
            ),
        }
    }
}

/// A description of its own (flags, offset) of the file the engine's descriptor `t` holds
/// (a memfd, a deleted file), opened through `/proc/self/fd/t` in the process: the same
/// file, its name as before.
fn reopen_description(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    t: u64,
    flags: i32,
    pos: u64,
    kind: Reopened,
) -> Result<u64, RestoreError> {
    let (call, what, offset) = kind.names();
    let fd = remote
        .open(
            call,
            scratch,
            &format!("/proc/self/fd/{t}"),
            flags | libc::O_CLOEXEC,
        )
        .step(pid, what)?;
    if pos != 0 {
        remote
            .syscall("lseek", libc::SYS_lseek, &[fd, pos, libc::SEEK_SET as u64])
            .step(pid, offset)?;
    }
    Ok(fd)
}

/// A memfd with its name, mode, size, contents (written by the engine through /proc), owner
/// and seals, at a number above `above`; its descriptions are opened from it.
fn create_memfd(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    m: &MemfdFile,
    above: u64,
) -> Result<u64, RestoreError> {
    let name = remote.put_cstr(scratch, &m.name).step(pid, "a memfd")?;
    let flags = (libc::MFD_CLOEXEC | libc::MFD_ALLOW_SEALING) as u64;
    let made = remote
        .syscall("memfd_create", libc::SYS_memfd_create, &[name, flags])
        .step(pid, "a memfd")?;
    let fd = move_above(remote, pid, made, above, "a memfd")?;
    remote
        .syscall(
            "fchmod",
            libc::SYS_fchmod,
            &[fd, u64::from(m.mode & 0o7777)],
        )
        .step(pid, "the mode of a memfd")?;
    remote
        .syscall("ftruncate", libc::SYS_ftruncate, &[fd, m.size])
        .step(pid, "the size of a memfd")?;
    if !m.chunks.is_empty() || !m.label.is_empty() {
        let path = format!("/proc/{pid}/fd/{fd}");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| RestoreError::Inconsistent(format!("opening {path}: {e}")))?;
        // The engine's task made it, so it has the engine's tmpfs label (on Fedora's policy
        // `container_runtime_tmpfs_t`, which a container may not write): give it its own.
        if !m.label.is_empty() {
            crate::selinux::set_label(f.as_fd(), &m.label).map_err(|source| {
                RestoreError::Label {
                    pid,
                    what: format!("memfd {}", m.name),
                    source,
                }
            })?;
        }
        for c in &m.chunks {
            let end = c.offset.saturating_add(c.data.len() as u64);
            if end > m.size {
                return Err(RestoreError::Inconsistent(format!(
                    "memfd {} has contents up to {end}, beyond its size {}",
                    m.memfd_id, m.size
                )));
            }
            f.write_all_at(&c.data, c.offset).map_err(|e| {
                RestoreError::Inconsistent(format!(
                    "refilling memfd {} at {}: {e}",
                    m.memfd_id, c.offset
                ))
            })?;
        }
    }
    remote
        .syscall(
            "fchown",
            libc::SYS_fchown,
            &[fd, u64::from(m.uid), u64::from(m.gid)],
        )
        .step(pid, "the owner of a memfd")?;
    if m.seals != 0 {
        remote
            .syscall(
                "fcntl(F_ADD_SEALS)",
                libc::SYS_fcntl,
                &[fd, libc::F_ADD_SEALS as u64, u64::from(m.seals)],
            )
            .step(pid, "the seals of a memfd")?;
    }
    Ok(fd)
}

/// The deleted file `d` made again at its path (which must be free: `O_CREAT | O_EXCL`) by
/// the root, at a number above `above`; filled, labelled, given its size, owner and mode by
/// the engine through /proc, then unlinked, whether that worked or not (a failed restore
/// leaves no file behind).
fn create_deleted(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    id: u32,
    d: &DeletedFile,
    above: u64,
) -> Result<u64, RestoreError> {
    use std::os::unix::fs::MetadataExt;
    let made = remote
        .open(
            "open(O_CREAT | O_EXCL)",
            scratch,
            &d.path,
            libc::O_RDWR | libc::O_CREAT | libc::O_EXCL | libc::O_CLOEXEC,
        )
        .map_err(|source| RestoreError::File {
            pid,
            what: format!(
                "making the deleted file of open file {id} again at its path, which must be free"
            ),
            path: d.path.clone(),
            source,
        })?;
    let proc_path = format!("/proc/{pid}/fd/{made}");
    let filled = std::fs::OpenOptions::new()
        .write(true)
        .open(&proc_path)
        .map_err(|e| format!("opening {proc_path}: {e}"))
        .and_then(|f| fill_deleted(&f, d).map(|()| f));
    // Unlinked at once, if the path still names the file made (nobody replaced it).
    let unlinked = match &filled {
        Ok(f) => match (f.metadata(), std::fs::symlink_metadata(&d.path)) {
            (Ok(ours), Ok(named)) if ours.dev() == named.dev() && ours.ino() == named.ino() => {
                std::fs::remove_file(&d.path).map_err(|e| format!("unlinking it: {e}"))
            }
            _ => Err("its path no longer names the file made".to_owned()),
        },
        Err(_) => {
            if let Err(e) = std::fs::remove_file(&d.path) {
                tracing::warn!(path = d.path, error = %e, "removing a deleted file made again");
            }
            Ok(())
        }
    };
    let fail = |what: String| {
        RestoreError::Inconsistent(format!(
            "the deleted file {} of open file {id} (process {pid}): {what}",
            d.path
        ))
    };
    filled.map_err(fail)?;
    unlinked.map_err(fail)?;
    move_above(remote, pid, made, above, "a deleted file")
}

/// Gives the file `f` made for `d` its label, size, contents, owner and mode (the mode last:
/// a change of owner clears the set-user-id and set-group-id bits).
fn fill_deleted(f: &std::fs::File, d: &DeletedFile) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    if !d.label.is_empty() {
        crate::selinux::set_label(f.as_fd(), &d.label)
            .map_err(|e| format!("giving it its label {}: {e}", d.label))?;
    }
    f.set_len(d.size)
        .map_err(|e| format!("setting its size {}: {e}", d.size))?;
    for c in &d.chunks {
        let end = c.offset.saturating_add(c.data.len() as u64);
        if end > d.size {
            return Err(format!(
                "the image has contents up to {end}, beyond its size {}",
                d.size
            ));
        }
        f.write_all_at(&c.data, c.offset)
            .map_err(|e| format!("writing its contents at {}: {e}", c.offset))?;
    }
    std::os::unix::fs::fchown(f, Some(d.uid), Some(d.gid))
        .map_err(|e| format!("giving it its owner {}:{}: {e}", d.uid, d.gid))?;
    f.set_permissions(std::fs::Permissions::from_mode(d.mode & 0o7777))
        .map_err(|e| format!("giving it its mode {:o}: {e}", d.mode))?;
    Ok(())
}

/// `O_NONBLOCK` of an open file's flags, as the `*_NONBLOCK` flag of the calls that create
/// eventfds, timerfds and signalfds takes it.
fn nonblock(entry: &FileEntry) -> u64 {
    u64::from(entry.flags & libc::O_NONBLOCK as u32)
}

/// The status flags `fcntl(F_SETFL)` sets, given again when the creating call did not
/// (`created`: what it was given).
fn status_flags(
    remote: &mut Remote,
    pid: i32,
    fd: u64,
    entry: &FileEntry,
    created: u64,
) -> Result<(), RestoreError> {
    let settable = (libc::O_APPEND | libc::O_NONBLOCK | libc::O_NOATIME | libc::O_DIRECT) as u32;
    let wanted = u64::from(entry.flags & settable);
    if wanted != created {
        remote
            .syscall(
                "fcntl(F_SETFL)",
                libc::SYS_fcntl,
                &[fd, libc::F_SETFL as u64, wanted],
            )
            .step(pid, "the status flags of a file")?;
    }
    Ok(())
}

/// An eventfd with its mode, then its counter (written, as it may not fit `eventfd2`'s `int`).
fn create_eventfd(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    entry: &FileEntry,
    e: &EventFd,
) -> Result<u64, RestoreError> {
    const EFD_SEMAPHORE: u64 = 1;
    let mode = if e.semaphore { EFD_SEMAPHORE } else { 0 };
    let flags = libc::O_CLOEXEC as u64 | nonblock(entry) | mode;
    let fd = remote
        .syscall("eventfd2", libc::SYS_eventfd2, &[0, flags])
        .step(pid, "an eventfd")?;
    if e.count > 0 {
        remote
            .write_mem(scratch.addr, &e.count.to_ne_bytes())
            .step(pid, "an eventfd")?;
        remote
            .syscall("write(eventfd)", libc::SYS_write, &[fd, scratch.addr, 8])
            .step(pid, "the counter of an eventfd")?;
    }
    status_flags(remote, pid, fd, entry, nonblock(entry))?;
    Ok(fd)
}

/// `_IOW('T', 0, u64)`: sets a timerfd's unread expirations (with `CONFIG_CHECKPOINT_RESTORE`).
const TFD_IOC_SET_TICKS: u64 = 0x4008_5400;
const TFD_TIMER_ABSTIME: u32 = 1;

/// A timerfd on its clock, with its flags, interval and time left (an absolute timer at its
/// absolute expiry), then its unread expirations.
fn create_timerfd(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    entry: &FileEntry,
    t: &TimerFd,
) -> Result<u64, RestoreError> {
    let clock = u64::from(u32::from_ne_bytes(t.clockid.to_ne_bytes()));
    let fd = remote
        .syscall(
            "timerfd_create",
            libc::SYS_timerfd_create,
            &[clock, libc::O_CLOEXEC as u64 | nonblock(entry)],
        )
        .step(pid, "a timerfd")?;
    let (sec, nsec) = if t.settime_flags & TFD_TIMER_ABSTIME != 0 {
        (t.deadline_sec, t.deadline_nsec)
    } else {
        (t.value_sec, t.value_nsec)
    };
    if [sec, nsec, t.interval_sec, t.interval_nsec]
        .iter()
        .any(|&v| v != 0)
        || t.settime_flags != 0
    {
        // struct itimerspec: it_interval, then it_value.
        let mut its = Vec::with_capacity(32);
        for v in [t.interval_sec, t.interval_nsec, sec, nsec] {
            its.extend_from_slice(&v.to_ne_bytes());
        }
        remote
            .write_mem(scratch.addr, &its)
            .step(pid, "a timerfd")?;
        remote
            .syscall(
                "timerfd_settime",
                libc::SYS_timerfd_settime,
                &[fd, u64::from(t.settime_flags), scratch.addr, 0],
            )
            .step(pid, "the time of a timerfd")?;
    }
    if t.ticks > 0 {
        // Expirations since the settime above (a timer due within microseconds) count too.
        let since = crate::procfs::FdInfo::read(pid, i32::try_from(fd).unwrap_or(-1))
            .ok()
            .and_then(|i| i.timerfd)
            .map_or(0, |i| i.ticks);
        remote
            .write_mem(scratch.addr, &(t.ticks + since).to_ne_bytes())
            .step(pid, "a timerfd")?;
        remote
            .syscall(
                "ioctl(TFD_IOC_SET_TICKS)",
                libc::SYS_ioctl,
                &[fd, TFD_IOC_SET_TICKS, scratch.addr],
            )
            .map_err(|source| RestoreError::File {
                pid,
                what: format!(
                    "giving back the {} unread expirations of timerfd {} (TFD_IOC_SET_TICKS, \
                     which needs a kernel built with CONFIG_CHECKPOINT_RESTORE)",
                    t.ticks, entry.id
                ),
                path: "anon_inode:[timerfd]".into(),
                source,
            })?;
    }
    status_flags(remote, pid, fd, entry, nonblock(entry))?;
    Ok(fd)
}

/// A signalfd reading the signals of its mask.
fn create_signalfd(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    entry: &FileEntry,
    sfd: &SignalFd,
) -> Result<u64, RestoreError> {
    remote
        .write_mem(scratch.addr, &sfd.sigmask.to_ne_bytes())
        .step(pid, "a signalfd")?;
    let fd = remote
        .syscall(
            "signalfd4",
            libc::SYS_signalfd4,
            &[
                u64::MAX,
                scratch.addr,
                8,
                libc::O_CLOEXEC as u64 | nonblock(entry),
            ],
        )
        .step(pid, "a signalfd")?;
    status_flags(remote, pid, fd, entry, nonblock(entry))?;
    Ok(fd)
}

/// `_IOW('I', 0, __s32)`: the number an inotify instance gives its next watch (with
/// `CONFIG_CHECKPOINT_RESTORE`).
const INOTIFY_IOC_SETNEXTWD: u64 = 0x4004_4900;
/// `inotify_add_watch`'s flag: watch a symbolic link itself (the dumped path is the watched
/// object's own, so the last component is the object whatever it is).
const IN_DONT_FOLLOW: u64 = 0x0200_0000;
/// The most watches added and removed to reach one watch's number without
/// `INOTIFY_IOC_SETNEXTWD` (two remote calls each).
const FALLBACK_WD_STEPS: u64 = 1 << 16;

/// The SELinux permissions `inotify_add_watch` of `mask` needs on the watched object
/// (`selinux_path_notify`): `watch`, and `watch_reads` for read-like events.
fn watch_permissions(mask: u32) -> &'static str {
    if mask & (libc::IN_ACCESS | libc::IN_CLOSE_NOWRITE) != 0 {
        "watch watch_reads"
    } else {
        "watch"
    }
}

/// An inotify instance with its watches, each at its number: the kernel numbers a new watch
/// after the last one it numbered (`idr_alloc_cyclic`), so each is added in order of number
/// after `INOTIFY_IOC_SETNEXTWD` to it; without that ioctl, watches added and removed again
/// move the counter on, and the `IN_IGNORED` events their removal queues are read away. Each
/// path must still name the device and inode the dump found (else the watch would be on
/// another object). Made non-blocking, then given its own status flags.
fn create_inotify(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    entry: &FileEntry,
    n: &InotifyFile,
) -> Result<u64, RestoreError> {
    use std::os::unix::fs::MetadataExt;
    let fd = remote
        .syscall(
            "inotify_init1",
            libc::SYS_inotify_init1,
            &[(libc::O_CLOEXEC | libc::O_NONBLOCK) as u64],
        )
        .step(pid, "an inotify instance")?;
    let mut watches: Vec<_> = n.watches.iter().collect();
    watches.sort_by_key(|w| w.wd);
    if watches.windows(2).any(|p| p[0].wd == p[1].wd) || watches.first().is_some_and(|w| w.wd < 1) {
        return Err(RestoreError::Inconsistent(format!(
            "inotify instance {} has watch numbers that are not distinct positive numbers",
            entry.id
        )));
    }
    let mut set_next = true;
    let mut removed = false;
    for w in watches {
        let refuse = |why: String| RestoreError::InotifyWatch {
            pid,
            file: entry.id,
            wd: w.wd,
            path: w.path.clone(),
            why,
        };
        match std::fs::symlink_metadata(&w.path) {
            Ok(m) if m.dev() == w.dev && m.ino() == w.ino => {}
            Ok(m) => {
                return Err(refuse(format!(
                    "now names inode {} on device {:#x}, not inode {} on device {:#x} that the \
                     watch watched",
                    m.ino(),
                    m.dev(),
                    w.ino,
                    w.dev
                )))
            }
            Err(e) => return Err(refuse(format!("cannot be found ({e})"))),
        }
        let wd = u64::try_from(w.wd).unwrap_or(0);
        if set_next {
            match remote.syscall(
                "ioctl(INOTIFY_IOC_SETNEXTWD)",
                libc::SYS_ioctl,
                &[fd, INOTIFY_IOC_SETNEXTWD, wd],
            ) {
                Ok(_) => {}
                Err(crate::sys::SysError::Remote {
                    errno: nix::errno::Errno::ENOTTY | nix::errno::Errno::EINVAL,
                    ..
                }) => set_next = false,
                Err(e) => return Err(e).step(pid, "the watch numbers of an inotify instance"),
            }
        }
        loop {
            let at = remote
                .put_cstr(scratch, &w.path)
                .step(pid, "an inotify watch")?;
            let got = remote
                .syscall(
                    "inotify_add_watch",
                    libc::SYS_inotify_add_watch,
                    &[fd, at, u64::from(w.mask) | IN_DONT_FOLLOW],
                )
                .map_err(|source| RestoreError::File {
                    pid,
                    what: format!(
                        "adding watch {} (mask {:#x}) to inotify instance {}; under SELinux the \
                         restoring task, still in the engine's context when descriptors are \
                         made, needs the `{}` permission on it (class file, dir, lnk_file, ... \
                         as it is)",
                        w.wd,
                        w.mask,
                        entry.id,
                        watch_permissions(w.mask)
                    ),
                    path: w.path.clone(),
                    source,
                })?;
            if got == wd {
                break;
            }
            if set_next || got > wd {
                return Err(refuse(format!(
                    "was given watch number {got} by the kernel, not {}",
                    w.wd
                )));
            }
            if wd - got > FALLBACK_WD_STEPS {
                return Err(refuse(format!(
                    "would need {} watches added and removed to reach its number from {got} \
                     (this kernel has no INOTIFY_IOC_SETNEXTWD: it needs \
                     CONFIG_CHECKPOINT_RESTORE)",
                    wd - got
                )));
            }
            // Without the ioctl: remove it and add it again, one number further on.
            remote
                .syscall("inotify_rm_watch", libc::SYS_inotify_rm_watch, &[fd, got])
                .step(pid, "the watch numbers of an inotify instance")?;
            removed = true;
        }
    }
    if removed {
        // The IN_IGNORED events of the removed watches; the instance is non-blocking.
        loop {
            match remote.syscall(
                "read(inotify)",
                libc::SYS_read,
                &[fd, scratch.addr, scratch.len],
            ) {
                Ok(0) => break,
                Ok(_) => {}
                Err(crate::sys::SysError::Remote {
                    errno: nix::errno::Errno::EAGAIN,
                    ..
                }) => break,
                Err(e) => return Err(e).step(pid, "an inotify instance"),
            }
        }
    }
    status_flags(remote, pid, fd, entry, libc::O_NONBLOCK as u64)?;
    Ok(fd)
}

/// Adds the registrations of every epoll instance that process `image_pid` (the kernel's `pid`)
/// made, with its descriptor numbers `fds`, once they are installed.
pub fn register_epolls(
    remote: &mut Remote,
    pid: i32,
    image_pid: u32,
    scratch: Scratch,
    fds: &[Fd],
    table: &FileTable,
) -> Result<(), RestoreError> {
    for entry in &table.files {
        let Some(file_entry::Kind::Epoll(epoll)) = &entry.kind else {
            continue;
        };
        if epoll.pid != image_pid || epoll.registrations.is_empty() {
            continue;
        }
        let epfd = fds.iter().find(|f| f.file_id == entry.id).ok_or_else(|| {
            RestoreError::Inconsistent(format!(
                "process {image_pid} has no descriptor of epoll instance {} whose registrations \
                 it holds",
                entry.id
            ))
        })?;
        for r in &epoll.registrations {
            if !fds.iter().any(|f| f.fd == r.tfd && f.file_id == r.file_id) {
                return Err(RestoreError::Inconsistent(format!(
                    "epoll instance {} watches file {} at descriptor {}, which process \
                     {image_pid} does not have there",
                    entry.id, r.file_id, r.tfd
                )));
            }
            // struct epoll_event, packed on x86_64: events (u32), then data (u64).
            let mut ev = [0u8; 12];
            ev[..4].copy_from_slice(&r.events.to_ne_bytes());
            ev[4..].copy_from_slice(&r.data.to_ne_bytes());
            remote
                .write_mem(scratch.addr, &ev)
                .step(pid, "an epoll registration")?;
            remote
                .syscall(
                    "epoll_ctl(EPOLL_CTL_ADD)",
                    libc::SYS_epoll_ctl,
                    &[
                        u64::from(epfd.fd),
                        libc::EPOLL_CTL_ADD as u64,
                        u64::from(r.tfd),
                        scratch.addr,
                    ],
                )
                .map_err(|source| RestoreError::File {
                    pid,
                    what: format!(
                        "adding the registration of descriptor {} to epoll instance {} (fd {})",
                        r.tfd, entry.id, epfd.fd
                    ),
                    path: "anon_inode:[eventpoll]".into(),
                    source,
                })?;
        }
    }
    Ok(())
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
        ends[i] = move_above(remote, pid, fd, above, "a pipe")?;
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

/// The Unix sockets of the tree, checked before anything is created, and made once the tree
/// exists ([`make_unix_sockets`]).
pub struct Sockets<'a> {
    /// Every socket of the table with its open file's flags and id, by inode.
    all: HashMap<u64, (&'a UnixSocket, u32, u32)>,
}

/// Where the restore writes a socket address in the scratch area (past what `open` and the
/// `attr` writes use).
pub(super) const SOCKADDR_AT: u64 = 8192;
/// Where it writes the `msghdr` through which a process receives a descriptor.
const MSG_AT: u64 = SOCKADDR_AT + 512;
/// Where it writes the supplementary groups a process takes while it makes a socket.
const GROUPS_AT: u64 = SOCKADDR_AT + 1024;

/// One process of the tree while its Unix sockets are made: its pid, its leader, its
/// descriptors as the image has them.
pub struct At<'r> {
    pub pid: i32,
    pub remote: &'r mut Remote,
    pub fds: &'r [Fd],
}

impl<'a> Sockets<'a> {
    /// The sockets of `table`, each checked against its peer and listener: pairs whole, of
    /// one type, a pair's ends of one label, an accepted end's listener a listener; each with
    /// its peer credentials.
    pub fn new(table: &'a FileTable) -> Result<Sockets<'a>, RestoreError> {
        let mut all = HashMap::new();
        for f in &table.files {
            if let Some(file_entry::Kind::UnixSocket(s)) = &f.kind {
                if all.insert(s.ino, (s, f.flags, f.id)).is_some() {
                    return Err(bad(s, "is two open files"));
                }
            }
        }
        for (s, _, _) in all.values() {
            if UnixSocketType::try_from(s.r#type).unwrap_or(UnixSocketType::Unspecified)
                == UnixSocketType::Unspecified
            {
                return Err(bad(s, "has no type"));
            }
            if s.peer == 0 && !s.listening {
                // Alone, or connected one way to a socket that is: it has no peer
                // credentials, and nothing queued.
                if s.accepted_from != 0 || !s.queue.is_empty() || s.peer_cred.is_some() {
                    return Err(bad(
                        s,
                        "has no peer but was accepted, holds a queue or has peer credentials",
                    ));
                }
                if s.connected_to != 0 {
                    let target = all.get(&s.connected_to).map(|(t, _, _)| *t);
                    let alone = target.is_some_and(|t: &UnixSocket| {
                        t.peer == 0
                            && t.connected_to == 0
                            && !t.listening
                            && !t.name.is_empty()
                            && t.r#type == s.r#type
                            && UnixSocketType::try_from(s.r#type) == Ok(UnixSocketType::Dgram)
                    });
                    if !alone {
                        return Err(bad(
                            s,
                            "is connected to a socket that is not a bound datagram socket alone",
                        ));
                    }
                }
                continue;
            }
            if !s.peer_cred.as_ref().is_some_and(|c| c.groups_known) {
                return Err(bad(
                    s,
                    "has no peer credentials (SO_PEERCRED, SO_PEERGROUPS) in the image, which an \
                     older crlab dumped: dump it again",
                ));
            }
            if s.listening {
                if s.name.is_empty() || s.peer != 0 || s.accepted_from != 0 {
                    return Err(bad(s, "listens without a name, or has a peer"));
                }
                continue;
            }
            let Some((peer, _, _)) = all.get(&s.peer) else {
                return Err(bad(s, "names a peer that files.img lacks"));
            };
            if peer.peer != s.ino || peer.r#type != s.r#type {
                return Err(bad(
                    s,
                    "and its peer are not the two ends of one connection",
                ));
            }
            if s.accepted_from != 0 {
                let listening = all
                    .get(&s.accepted_from)
                    .is_some_and(|(l, _, _)| l.listening && l.name == s.name);
                if !listening || peer.accepted_from != 0 {
                    return Err(bad(
                        s,
                        "was accepted from a socket that is not its listener",
                    ));
                }
            } else if peer.accepted_from == 0 && (!s.name.is_empty() || s.label != peer.label) {
                return Err(bad(s, "and its peer are not an unnamed pair of one label"));
            }
        }
        Ok(Sockets { all })
    }
}

/// The engine's credentials, which every process of the tree has until its own are set.
struct EngineCreds {
    euid: u32,
    egid: u32,
    groups: Vec<u32>,
}

impl EngineCreds {
    fn read() -> Result<EngineCreds, RestoreError> {
        let fail = |e: nix::Error| {
            RestoreError::Inconsistent(format!("reading the engine's credentials: {e}"))
        };
        let u = nix::unistd::getresuid().map_err(fail)?;
        let g = nix::unistd::getresgid().map_err(fail)?;
        let groups = nix::unistd::getgroups().map_err(fail)?;
        Ok(EngineCreds {
            euid: u.effective.as_raw(),
            egid: g.effective.as_raw(),
            groups: groups.iter().map(|g| g.as_raw()).collect(),
        })
    }
}

/// Sets the calling thread's supplementary groups (`setgroups`, per thread as a system call).
fn set_groups(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    groups: &[u32],
) -> Result<(), RestoreError> {
    let bytes: Vec<u8> = groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
    if GROUPS_AT + bytes.len() as u64 > scratch.len {
        return Err(RestoreError::Inconsistent(format!(
            "process {pid}: {} supplementary groups are more than the restore can give while it \
             makes a socket",
            groups.len()
        )));
    }
    remote
        .write_mem(scratch.addr + GROUPS_AT, &bytes)
        .step(pid, "the groups a Unix socket is made with")?;
    remote
        .syscall(
            "setgroups",
            libc::SYS_setgroups,
            &[groups.len() as u64, scratch.addr + GROUPS_AT],
        )
        .step(pid, "the groups a Unix socket is made with")?;
    Ok(())
}

/// Runs `op` in process `pid` with the effective uid, gid and groups of `want`, the
/// credentials the kernel records for the socket `op` makes or connects, then gives the
/// process the engine's back (its real and saved uid stay the engine's, so it may). With
/// `fs_engine`, file access (a connect through a socket file) is checked with the engine's
/// (`setfsuid`, `setfsgid`; no socket option reports the file-access ids).
fn with_creds<T>(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    (want, engine): (&PeerCred, &EngineCreds),
    fs_engine: bool,
    op: impl FnOnce(&mut Remote) -> Result<T, RestoreError>,
) -> Result<T, RestoreError> {
    const KEEP: u64 = u32::MAX as u64;
    let what = "the credentials a Unix socket is made with";
    set_groups(remote, pid, scratch, &want.groups)?;
    remote
        .syscall(
            "setresgid",
            libc::SYS_setresgid,
            &[KEEP, u64::from(want.gid), KEEP],
        )
        .step(pid, what)?;
    let out = remote
        .syscall(
            "setresuid",
            libc::SYS_setresuid,
            &[KEEP, u64::from(want.uid), KEEP],
        )
        .step(pid, what)
        .and_then(|_| {
            if fs_engine {
                remote
                    .syscall("setfsuid", libc::SYS_setfsuid, &[u64::from(engine.euid)])
                    .step(pid, what)?;
                remote
                    .syscall("setfsgid", libc::SYS_setfsgid, &[u64::from(engine.egid)])
                    .step(pid, what)?;
            }
            op(remote)
        });
    remote
        .syscall(
            "setresuid",
            libc::SYS_setresuid,
            &[KEEP, u64::from(engine.euid), KEEP],
        )
        .step(pid, what)?;
    remote
        .syscall(
            "setresgid",
            libc::SYS_setresgid,
            &[KEEP, u64::from(engine.egid), KEEP],
        )
        .step(pid, what)?;
    set_groups(remote, pid, scratch, &engine.groups)?;
    out
}

/// The process of the tree a socket's peer credentials name.
fn maker<'x, 'r>(at: &'x mut [At<'r>], s: &UnixSocket) -> Result<&'x mut At<'r>, RestoreError> {
    let pid = s.peer_cred.as_ref().map_or(0, |c| c.pid);
    at.iter_mut()
        .find(|a| u32::try_from(a.pid).is_ok_and(|p| p == pid))
        .ok_or_else(|| {
            bad(
                s,
                &format!(
                    "was made by process {pid} (SO_PEERCRED), which is not a living process of \
                     the restored tree"
                ),
            )
        })
}

/// Makes socket `s` in the root (`remote`, process `pid`) under its label, moved above
/// `above`, bound to its name if it has one; returns its number there.
fn new_bound(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    s: &UnixSocket,
    above: u64,
) -> Result<u64, RestoreError> {
    let fd = new_socket(remote, pid, scratch, s, 0)?;
    let fd = move_above(remote, pid, fd, above, "a Unix socket")?;
    if !s.name.is_empty() {
        bind_name(remote, pid, scratch, s, fd)?;
    }
    Ok(fd)
}

/// The first process of `at` holding the socket `s` (open file `id`).
fn holder<'x, 'r>(
    at: &'x mut [At<'r>],
    s: &UnixSocket,
    id: u32,
) -> Result<&'x mut At<'r>, RestoreError> {
    at.iter_mut()
        .find(|a| a.fds.iter().any(|f| f.file_id == id))
        .ok_or_else(|| bad(s, "is held by no process of the tree"))
}

fn cred_of(s: &UnixSocket) -> Result<&PeerCred, RestoreError> {
    s.peer_cred
        .as_ref()
        .ok_or_else(|| bad(s, "has no peer credentials in the image"))
}

/// Makes every Unix socket of the tree, once every process of it exists (`at`) and before
/// any installs its descriptors: each in the process its peer credentials name, with those
/// credentials (listeners: `socket`, `bind`, `listen`; pairs: `socketpair`; connections:
/// the client's `connect`, in the process that connected, then the engine's `accept` on
/// its copy of the listener), filled and configured from the engine through copies, its peer
/// credentials read back, then handed to each process holding it (`SCM_RIGHTS`) at its parked
/// number ([`Parked::late`]).
pub fn make_unix_sockets(
    socks: &Sockets<'_>,
    at: &mut [At<'_>],
    scratch: Scratch,
    parked: &Parked,
) -> Result<(), RestoreError> {
    if socks.all.is_empty() {
        return Ok(());
    }
    let engine = EngineCreds::read()?;
    let above = parked
        .fds
        .values()
        .chain(parked.late.values())
        .max()
        .map_or(0, |m| m + 17);
    let mut sockets: Vec<(&UnixSocket, u32, u32)> = socks.all.values().copied().collect();
    sockets.sort_by_key(|(s, _, _)| s.ino);
    let peer_of = |s: &UnixSocket| socks.all.get(&s.peer).copied();
    // Each socket: the engine's copy, and the descriptor its maker holds (pid, number).
    let mut made: HashMap<u64, (OwnedFd, Option<(i32, u64)>)> = HashMap::new();
    let copy = |pid: i32, s: &UnixSocket, fd: u64| {
        fd_of(pid, fd).map_err(sock_err(s, "taking a copy".into()))
    };
    for &(s, flags, _) in sockets.iter().filter(|(s, _, _)| s.listening) {
        let a = maker(at, s)?;
        let (pid, r) = (a.pid, &mut *a.remote);
        let fd = new_bound(r, pid, scratch, s, above)?;
        with_creds(r, pid, scratch, (cred_of(s)?, &engine), false, |r| {
            r.syscall("listen", libc::SYS_listen, &[fd, u64::from(s.backlog)])
                .step(pid, "a listening Unix socket")
        })?;
        let c = copy(pid, s, fd)?;
        configure(s, flags, &c)?;
        made.insert(s.ino, (c, Some((pid, fd))));
    }
    // Alone (neither connected nor listening), then those connected to one of them: made in
    // the first process holding each, which has no credentials to give it.
    let alone = |s: &UnixSocket| s.peer == 0 && !s.listening;
    let mut lone: Vec<(&UnixSocket, u32, u32)> = sockets
        .iter()
        .copied()
        .filter(|(s, _, _)| alone(s))
        .collect();
    lone.sort_by_key(|(s, _, _)| s.connected_to != 0);
    for (s, flags, id) in lone {
        let a = holder(at, s, id)?;
        let (pid, r) = (a.pid, &mut *a.remote);
        let fd = new_bound(r, pid, scratch, s, above)?;
        if s.connected_to != 0 {
            let to = socks
                .all
                .get(&s.connected_to)
                .map(|(t, _, _)| *t)
                .ok_or_else(|| bad(s, "is connected to a socket that was not made"))?;
            let (addr, len) = put_sockaddr(r, pid, scratch, &to.name)?;
            r.syscall("connect", libc::SYS_connect, &[fd, addr, len])
                .step(pid, "connecting a Unix datagram socket to its bound peer")?;
        }
        let c = copy(pid, s, fd)?;
        configure(s, flags, &c)?;
        made.insert(s.ino, (c, Some((pid, fd))));
    }
    for &(s, flags, _) in &sockets {
        let Some((peer, peer_flags, _)) = peer_of(s) else {
            continue;
        };
        if s.listening || s.accepted_from != 0 || peer.accepted_from != 0 || s.ino > peer.ino {
            continue;
        }
        let a = maker(at, s)?;
        let (pid, r) = (a.pid, &mut *a.remote);
        let (x, y) = with_creds(r, pid, scratch, (cred_of(s)?, &engine), false, |r| {
            create_pair(r, pid, scratch, s, above)
        })?;
        let (cx, cy) = (copy(pid, s, x)?, copy(pid, peer, y)?);
        fill_pair((s, flags, &cx), (peer, peer_flags, &cy))?;
        made.insert(s.ino, (cx, Some((pid, x))));
        made.insert(peer.ino, (cy, Some((pid, y))));
    }
    for &(s, flags, _) in sockets.iter().filter(|(s, _, _)| s.accepted_from != 0) {
        let (client, client_flags, _) = peer_of(s).ok_or_else(|| bad(s, "has no peer"))?;
        let (listener, _) = made
            .get(&s.accepted_from)
            .ok_or_else(|| bad(s, "was accepted from a listener that was not created"))?;
        // The accepted end's credentials are those of the process that connected.
        let a = maker(at, s)?;
        let (pid, r) = (a.pid, &mut *a.remote);
        let fd = new_socket(r, pid, scratch, client, libc::SOCK_NONBLOCK)?;
        let fd = move_above(r, pid, fd, above, "a Unix socket")?;
        if !client.name.is_empty() {
            bind_name(r, pid, scratch, client, fd)?;
        }
        with_creds(r, pid, scratch, (cred_of(s)?, &engine), true, |r| {
            let (addr, len) = put_sockaddr(r, pid, scratch, &s.name)?;
            r.syscall("connect", libc::SYS_connect, &[fd, addr, len])
                .step(pid, "connecting a Unix socket to its listener")
        })?;
        let accepted = crate::sys::accept_nonblocking(listener.as_fd())
            .map_err(|e| bad(s, &format!("accepting its connection again: {e}")))?;
        let c = copy(pid, client, fd)?;
        fill_pair((client, client_flags, &c), (s, flags, &accepted))?;
        made.insert(client.ino, (c, Some((pid, fd))));
        made.insert(s.ino, (accepted, None));
    }
    for &(s, _, _) in &sockets {
        let (c, _) = made.get(&s.ino).ok_or_else(|| bad(s, "was not created"))?;
        if !alone(s) {
            check_peer_cred(s, c)?;
        }
    }
    // Handed to each process that holds it, at its parked number.
    let by_file: HashMap<u32, u64> = sockets.iter().map(|(s, _, id)| (*id, s.ino)).collect();
    for a in at.iter_mut() {
        let mut ids: Vec<u32> = a
            .fds
            .iter()
            .map(|f| f.file_id)
            .filter(|id| by_file.contains_key(id))
            .collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.is_empty() {
            continue;
        }
        let mut inbox = Inbox::open(a.remote, a.pid, scratch, above)?;
        for id in ids {
            let (c, _) = by_file
                .get(&id)
                .and_then(|ino| made.get(ino))
                .ok_or_else(|| RestoreError::Inconsistent(format!("file {id} was not made")))?;
            let to = *parked.late.get(&id).ok_or_else(|| {
                RestoreError::Inconsistent(format!("file {id} has no parked number"))
            })?;
            inbox.put(a.remote, a.pid, scratch, c, to)?;
        }
        inbox.close(a.remote, a.pid)?;
    }
    for (_, maker_fd) in made.values() {
        if let Some((pid, fd)) = *maker_fd {
            let a = at
                .iter_mut()
                .find(|a| a.pid == pid)
                .ok_or_else(|| RestoreError::Inconsistent(format!("process {pid} is gone")))?;
            a.remote
                .syscall("close", libc::SYS_close, &[fd])
                .step(pid, "a Unix socket")?;
        }
    }
    Ok(())
}

/// The peer credentials of the restored socket `c` (`SO_PEERCRED`, `SO_PEERGROUPS`) are
/// those of the image, or the restore fails, naming the socket.
fn check_peer_cred(s: &UnixSocket, c: &OwnedFd) -> Result<(), RestoreError> {
    let want = cred_of(s)?;
    let got =
        crate::sys::peer_cred(c.as_fd()).map_err(sock_err(s, "reading SO_PEERCRED".into()))?;
    let groups =
        crate::sys::peer_groups(c.as_fd()).map_err(sock_err(s, "reading SO_PEERGROUPS".into()))?;
    let now = PeerCred {
        pid: u32::try_from(got.pid).unwrap_or(0),
        uid: got.uid,
        gid: got.gid,
        groups_known: groups.is_some(),
        groups: groups.unwrap_or_default(),
    };
    if now != *want {
        return Err(bad(
            s,
            &format!(
                "has the peer credentials {} after the restore, not {} as dumped",
                crate::image::cred_text(&now),
                crate::image::cred_text(want)
            ),
        ));
    }
    Ok(())
}

/// A socket pair made in one process, one end of it in the engine: how the engine hands that
/// process descriptors (`SCM_RIGHTS`, received by a `recvmsg` run inside it).
struct Inbox {
    engine: OwnedFd,
    theirs: u64,
}

impl Inbox {
    fn open(
        remote: &mut Remote,
        pid: i32,
        scratch: Scratch,
        above: u64,
    ) -> Result<Inbox, RestoreError> {
        let what = "the socket the engine hands descriptors through";
        remote
            .syscall(
                "socketpair",
                libc::SYS_socketpair,
                &[
                    libc::AF_UNIX as u64,
                    crate::sys::int_arg(libc::SOCK_DGRAM | libc::SOCK_CLOEXEC),
                    0,
                    scratch.addr + SOCKADDR_AT,
                ],
            )
            .step(pid, what)?;
        let mut buf = [0u8; 8];
        remote
            .read_mem(scratch.addr + SOCKADDR_AT, &mut buf)
            .step(pid, what)?;
        let ours = u64::from(u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]));
        let theirs = u64::from(u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]));
        let engine = fd_of(pid, ours).step(pid, what);
        remote
            .syscall("close", libc::SYS_close, &[ours])
            .step(pid, what)?;
        let theirs = move_above(remote, pid, theirs, above, "a Unix socket")?;
        Ok(Inbox {
            engine: engine?,
            theirs,
        })
    }

    /// Hands `fd` to the process at number `to`.
    fn put(
        &mut self,
        remote: &mut Remote,
        pid: i32,
        scratch: Scratch,
        fd: &OwnedFd,
        to: u64,
    ) -> Result<(), RestoreError> {
        let what = "handing a Unix socket to a process that holds it";
        crate::sys::send_fd(self.engine.as_fd(), fd.as_fd()).map_err(|e| {
            RestoreError::Inconsistent(format!("{what} (process {pid}): sending it: {e}"))
        })?;
        // struct msghdr, then its iovec, the byte, and the control buffer (CMSG_SPACE(4)).
        let base = scratch.addr + MSG_AT;
        let (iov, byte, control) = (base + 64, base + 80, base + 88);
        let mut msg = Vec::with_capacity(120);
        for v in [0u64, 0, iov, 1, control, 24, 0] {
            msg.extend_from_slice(&v.to_ne_bytes());
        }
        msg.resize(64, 0);
        for v in [byte, 1] {
            msg.extend_from_slice(&v.to_ne_bytes());
        }
        msg.resize(88 + 24, 0);
        remote.write_mem(base, &msg).step(pid, what)?;
        remote
            .syscall(
                "recvmsg",
                libc::SYS_recvmsg,
                &[
                    self.theirs,
                    base,
                    crate::sys::int_arg(libc::MSG_CMSG_CLOEXEC | libc::MSG_DONTWAIT),
                ],
            )
            .step(pid, what)?;
        let mut c = [0u8; 24];
        remote.read_mem(control, &mut c).step(pid, what)?;
        let word = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&c[i..i + 4]);
            i32::from_ne_bytes(b)
        };
        let len = u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
        if len < 20 || word(8) != libc::SOL_SOCKET || word(12) != libc::SCM_RIGHTS {
            return Err(RestoreError::Inconsistent(format!(
                "{what} (process {pid}): no descriptor came"
            )));
        }
        let got = u64::try_from(word(16)).map_err(|_| {
            RestoreError::Inconsistent(format!("{what} (process {pid}): a bad descriptor"))
        })?;
        remote
            .syscall("dup3", libc::SYS_dup3, &[got, to, libc::O_CLOEXEC as u64])
            .step(pid, what)?;
        remote
            .syscall("close", libc::SYS_close, &[got])
            .step(pid, what)?;
        Ok(())
    }

    fn close(self, remote: &mut Remote, pid: i32) -> Result<(), RestoreError> {
        remote
            .syscall("close", libc::SYS_close, &[self.theirs])
            .step(pid, "the socket the engine hands descriptors through")?;
        Ok(())
    }
}

fn bad(s: &UnixSocket, what: &str) -> RestoreError {
    RestoreError::Inconsistent(format!("the Unix socket of inode {} {what}", s.ino))
}

fn sock_type(s: &UnixSocket) -> i32 {
    match UnixSocketType::try_from(s.r#type) {
        Ok(UnixSocketType::Stream) => libc::SOCK_STREAM,
        Ok(UnixSocketType::Dgram) => libc::SOCK_DGRAM,
        _ => libc::SOCK_SEQPACKET,
    }
}

/// Runs `call` in the root with its `attr/NAME` (`sockcreate`, `fscreate`) set to `label`,
/// cleared right after; an empty label runs it as it is.
pub(super) fn under_label<T>(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    attr: &'static str,
    label: &str,
    call: impl FnOnce(&mut Remote) -> Result<T, RestoreError>,
) -> Result<T, RestoreError> {
    let what = if attr == "sockcreate" {
        "the socket creation context (attr/sockcreate)"
    } else {
        "the file creation context (attr/fscreate)"
    };
    if label.is_empty() {
        return call(remote);
    }
    super::context::write_attr(remote, scratch, attr, label).step(pid, what)?;
    let out = call(remote);
    super::context::write_attr(remote, scratch, attr, "").step(pid, what)?;
    out
}

/// Moves the process's descriptor `fd` to the lowest free number above `above` (closing
/// `fd`); `what` names the file in errors.
pub(super) fn move_above(
    remote: &mut Remote,
    pid: i32,
    fd: u64,
    above: u64,
    what: &'static str,
) -> Result<u64, RestoreError> {
    let moved = remote
        .syscall(
            "fcntl(F_DUPFD_CLOEXEC)",
            libc::SYS_fcntl,
            &[fd, libc::F_DUPFD_CLOEXEC as u64, above],
        )
        .step(pid, what)?;
    remote
        .syscall("close", libc::SYS_close, &[fd])
        .step(pid, what)?;
    Ok(moved)
}

/// A new socket of `s`'s type in the root, under its label, with extra `flags`.
fn new_socket(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    s: &UnixSocket,
    flags: i32,
) -> Result<u64, RestoreError> {
    failpoint!(
        "restore.files.socket",
        super::error::injected(pid, "a Unix socket")
    );
    under_label(remote, pid, scratch, "sockcreate", &s.label, |r| {
        r.syscall(
            "socket",
            libc::SYS_socket,
            &[
                libc::AF_UNIX as u64,
                crate::sys::int_arg(sock_type(s) | libc::SOCK_CLOEXEC | flags),
                0,
            ],
        )
        .step(pid, "a Unix socket")
    })
}

/// Writes `name` as a `sockaddr_un` in the scratch area; returns its address and length.
fn put_sockaddr(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    name: &[u8],
) -> Result<(u64, u64), RestoreError> {
    let family = libc::sa_family_t::try_from(libc::AF_UNIX)
        .map_err(|_| RestoreError::Inconsistent("the AF_UNIX address family".into()))?;
    if name.len() > 108 {
        return Err(RestoreError::Inconsistent(format!(
            "a Unix socket name of {} bytes (at most 108)",
            name.len()
        )));
    }
    let mut sa = family.to_ne_bytes().to_vec();
    sa.extend_from_slice(name);
    remote
        .write_mem(scratch.addr + SOCKADDR_AT, &sa)
        .step(pid, "a Unix socket address")?;
    Ok((scratch.addr + SOCKADDR_AT, sa.len() as u64))
}

/// Binds the root's socket `fd` to `s.name`. For a name in the filesystem, the stale socket
/// file the dumped process left is removed first (only if it is a socket file), the file is
/// created under its recorded label (`attr/fscreate`), then given its mode and owner.
fn bind_name(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    s: &UnixSocket,
    fd: u64,
) -> Result<(), RestoreError> {
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    let path = crate::image::unix_socket_path(&s.name);
    if let Some(path) = &path {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => {
                std::fs::remove_file(path).map_err(|e| {
                    bad(
                        s,
                        &format!(
                            "cannot remove the stale socket file {}: {e}",
                            path.display()
                        ),
                    )
                })?;
            }
            Ok(_) => {
                return Err(bad(
                    s,
                    &format!(
                        "is bound to {}, which is now something other than a socket file: move \
                         it away and restore again",
                        path.display()
                    ),
                ))
            }
            Err(_) => {}
        }
    }
    let file_label = if path.is_some() {
        s.file_label.as_str()
    } else {
        ""
    };
    under_label(remote, pid, scratch, "fscreate", file_label, |r| {
        let (addr, len) = put_sockaddr(r, pid, scratch, &s.name)?;
        r.syscall("bind", libc::SYS_bind, &[fd, addr, len])
            .step(pid, "binding a Unix socket")
    })?;
    if let Some(path) = &path {
        if s.file_mode != 0 {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(s.file_mode & 0o7777))
                .map_err(|e| bad(s, &format!("setting the mode of {}: {e}", path.display())))?;
        }
        std::os::unix::fs::lchown(path, Some(s.file_uid), Some(s.file_gid))
            .map_err(|e| bad(s, &format!("setting the owner of {}: {e}", path.display())))?;
    }
    Ok(())
}

/// Creates the pair `s` is an end of in process `pid`, under its label (`attr/sockcreate`, reset
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
    under_label(remote, pid, scratch, "sockcreate", &s.label, |r| {
        r.syscall(
            "socketpair",
            libc::SYS_socketpair,
            &[
                libc::AF_UNIX as u64,
                crate::sys::int_arg(sock_type(s) | libc::SOCK_CLOEXEC),
                0,
                scratch.addr + SOCKADDR_AT,
            ],
        )
        .step(pid, "a Unix socket pair")
    })?;
    let mut buf = [0u8; 8];
    remote
        .read_mem(scratch.addr + SOCKADDR_AT, &mut buf)
        .step(pid, "a Unix socket pair")?;
    let a = u64::from(u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]));
    let b = u64::from(u32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]));
    Ok((
        move_above(remote, pid, a, above, "a Unix socket")?,
        move_above(remote, pid, b, above, "a Unix socket")?,
    ))
}

/// Gives the new pair (`a`, `b`: the engine's copies, with each end's image and file flags)
/// its state: buffer sizes, the queued messages (each end's queue sent from the other end),
/// then the options, the shutdown state and the file flags.
fn fill_pair(
    (sa, fa, ca): (&UnixSocket, u32, &OwnedFd),
    (sb, fb, cb): (&UnixSocket, u32, &OwnedFd),
) -> Result<(), RestoreError> {
    let ends: [(&UnixSocket, u32, &OwnedFd); 2] = [(sa, fa, ca), (sb, fb, cb)];
    for (s, _, c) in ends {
        set_buffers(s, c)?;
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
        set_options(s, flags, c)?;
    }
    Ok(())
}

/// Gives a socket with no peer (a listener, through the engine's copy `c`) its buffer sizes,
/// options and file flags.
fn configure(s: &UnixSocket, flags: u32, c: &OwnedFd) -> Result<(), RestoreError> {
    set_buffers(s, c)?;
    set_options(s, flags, c)
}

fn sock_err(s: &UnixSocket, what: String) -> impl FnOnce(crate::sys::SysError) -> RestoreError {
    let ino = s.ino;
    move |e| RestoreError::Inconsistent(format!("the Unix socket of inode {ino}: {what}: {e}"))
}

fn set_buffers(s: &UnixSocket, c: &OwnedFd) -> Result<(), RestoreError> {
    let who = format!("the Unix socket of inode {}", s.ino);
    set_buffer(&who, c, libc::SO_RCVBUF, libc::SO_RCVBUFFORCE, s.rcvbuf)?;
    set_buffer(&who, c, libc::SO_SNDBUF, libc::SO_SNDBUFFORCE, s.sndbuf)
}

/// `SO_PASSCRED`, `SO_PASSSEC`, `SO_PEEK_OFF`, the timeouts, the shutdown state and the file
/// flags, last.
fn set_options(s: &UnixSocket, flags: u32, c: &OwnedFd) -> Result<(), RestoreError> {
    let call = |op: &'static str, what: &str| {
        let what = what.to_owned();
        move |source| sock_err(s, what)(crate::sys::SysError::Call { op, tid: 0, source })
    };
    if s.passcred {
        set_sockopt_int(c.as_fd(), libc::SOL_SOCKET, libc::SO_PASSCRED, 1)
            .map_err(sock_err(s, "setting SO_PASSCRED".into()))?;
    }
    if s.passsec {
        set_sockopt_int(c.as_fd(), libc::SOL_SOCKET, libc::SO_PASSSEC, 1)
            .map_err(sock_err(s, "setting SO_PASSSEC".into()))?;
    }
    if let Some(off) = s.peek_off {
        set_sockopt_int(c.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF, off)
            .map_err(sock_err(s, "setting SO_PEEK_OFF".into()))?;
    }
    for (name, what, us) in [
        (libc::SO_RCVTIMEO, "setting SO_RCVTIMEO", s.rcvtimeo_us),
        (libc::SO_SNDTIMEO, "setting SO_SNDTIMEO", s.sndtimeo_us),
    ] {
        if us != 0 {
            set_sockopt_timeval(c.as_fd(), name, us).map_err(sock_err(s, what.into()))?;
        }
    }
    let who = format!("the Unix socket of inode {}", s.ino);
    set_socket_options(&who, c, &s.options)?;
    let how = match s.shutdown & 3 {
        1 => Some(nix::sys::socket::Shutdown::Read),
        2 => Some(nix::sys::socket::Shutdown::Write),
        3 => Some(nix::sys::socket::Shutdown::Both),
        _ => None,
    };
    if let Some(how) = how {
        nix::sys::socket::shutdown(c.as_raw_fd(), how)
            .map_err(call("shutdown", "shutting it down"))?;
    }
    let fl = nix::fcntl::OFlag::from_bits_retain(open_flags(flags));
    nix::fcntl::fcntl(c, nix::fcntl::FcntlArg::F_SETFL(fl))
        .map_err(call("fcntl(F_SETFL)", "setting its file flags"))?;
    Ok(())
}

/// Sets each option of `opts` (from the image, after the named ones) on socket `c`, and reads
/// it back: only options of [`crate::image::sockopt::OPTIONS`] are set; one the kernel
/// refuses (a congestion control algorithm not available here, `SO_MARK` without
/// `CAP_NET_ADMIN`, ...) or gives back otherwise fails the restore, named.
pub(super) fn set_socket_options(
    who: &str,
    c: &OwnedFd,
    opts: &[SocketOption],
) -> Result<(), RestoreError> {
    for o in opts {
        let k = known_option(who, o)?;
        let value = crate::image::sockopt::value_text(&o.value);
        set_sockopt_bytes(c.as_fd(), o.level, o.name, &o.value).map_err(|e| {
            let errno = e.errno().map(|n| format!(" ({n})")).unwrap_or_default();
            let hint = match e.errno() {
                Some(nix::errno::Errno::ENOENT)
                    if (o.level, o.name)
                        == (libc::IPPROTO_TCP, crate::image::sockopt::TCP_CONGESTION) =>
                {
                    "; the algorithm is not available on this machine \
                     (/proc/sys/net/ipv4/tcp_available_congestion_control): load its module"
                }
                Some(nix::errno::Errno::EPERM) => "; the restore needs CAP_NET_ADMIN for it",
                _ => "",
            };
            RestoreError::Inconsistent(format!(
                "{who}: setting {} to {value}: {e}{errno}{hint}",
                k.text
            ))
        })?;
    }
    check_socket_options(who, c, opts)
}

/// Reads back each option of `opts` on socket `c`: what the image holds, or the restore fails.
pub(super) fn check_socket_options(
    who: &str,
    c: &OwnedFd,
    opts: &[SocketOption],
) -> Result<(), RestoreError> {
    for o in opts {
        let k = known_option(who, o)?;
        let now = sockopt_bytes(c.as_fd(), o.level, o.name, k.max)
            .map_err(|e| RestoreError::Inconsistent(format!("{who}: reading {}: {e}", k.text)))?;
        if now != o.value {
            return Err(RestoreError::Inconsistent(format!(
                "{who}: {} is {} after setting it to {}",
                k.text,
                crate::image::sockopt::value_text(&now),
                crate::image::sockopt::value_text(&o.value)
            )));
        }
    }
    Ok(())
}

fn known_option(
    who: &str,
    o: &SocketOption,
) -> Result<&'static crate::image::sockopt::Known, RestoreError> {
    crate::image::sockopt::known(o.level, o.name)
        .filter(|k| o.value.len() <= k.max)
        .ok_or_else(|| {
            RestoreError::Inconsistent(format!(
                "{who}: the image holds socket option {}/{} ({} bytes), which crlab does not set",
                o.level,
                o.name,
                o.value.len()
            ))
        })
}

/// Gives socket `c` the buffer size `want` (as `getsockopt` gave it at dump) when a new
/// socket's differs: the kernel doubles what it is given, and the `FORCE` option passes the
/// system's maximum, as the dumped process may have been allowed to.
pub(super) fn set_buffer(
    who: &str,
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
    let fail = |what: String| RestoreError::Inconsistent(format!("{who}: {what}"));
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
        let h = *parked
            .fds
            .get(&fd.file_id)
            .or_else(|| parked.late.get(&fd.file_id))
            .ok_or_else(|| {
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
    let held = |(id, h): (&u32, &u64)| fds.iter().any(|f| f.file_id == *id).then_some(*h);
    let late = parked.late.iter().filter_map(held);
    for h in parked.fds.values().copied().chain(late) {
        if !fds.iter().any(|f| f.fd as u64 == h) {
            remote
                .syscall("close", libc::SYS_close, &[h])
                .step(pid, "descriptors")?;
        }
    }
    Ok(())
}

/// The status flags of an open file as the image records them, as `open` takes them: the
/// kernel's `f_flags` are an `int` stored unsigned, so the bits are kept as they are.
pub(super) fn open_flags(flags: u32) -> i32 {
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

#[cfg(test)]
mod tests {
    use super::watch_permissions;

    #[test]
    fn a_watch_of_read_like_events_names_watch_reads_too() {
        assert_eq!(
            watch_permissions(libc::IN_MODIFY | libc::IN_CREATE),
            "watch"
        );
        assert_eq!(
            watch_permissions(libc::IN_MODIFY | libc::IN_ACCESS),
            "watch watch_reads"
        );
        assert_eq!(
            watch_permissions(libc::IN_CLOSE_NOWRITE),
            "watch watch_reads"
        );
    }
}
