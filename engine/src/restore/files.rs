//! Recreating descriptors: every open file description of the tree is opened
//! once, in the root before the tree is forked, and parked at a high number;
//! forked processes inherit the parked descriptors, so descriptions shared
//! across `fork()` (and their offsets) stay shared, and a pipe between two
//! processes is one pipe. Each process then `dup3`s what it had to its
//! original numbers and closes the parked ones.
//!
//! Eventfds, timerfds, signalfds and epoll instances are made the same way, by the root, with
//! their counter, time, unread expirations or mask; an epoll's registrations are added once its
//! process has every descriptor at its number, by that process, with the original numbers
//! ([`register_epolls`]): the kernel keys a registration by file and descriptor number.

use super::error::StepContext;
use super::RestoreError;
use crate::image::schema::{
    file_entry, EventFd, Fd, FileEntry, FileTable, MemfdFile, PathFileType, Pipe, SignalFd, TimerFd,
};
use crate::sys::{set_pipe_capacity, Remote, Scratch};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, OpenOptionsExt};

/// The parked descriptors: file id -> descriptor number in every process.
#[derive(Debug, Default, Clone)]
pub struct Parked {
    pub fds: BTreeMap<u32, u64>,
}

/// What the root holds while it opens the descriptions of pipes and memfds: each pipe's ends
/// (by pipe id) and each memfd (by memfd id), closed once every description is open.
#[derive(Default)]
struct Made {
    pipe_ends: HashMap<u64, (u64, u64)>,
    memfds: HashMap<u64, u64>,
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
    for (next, entry) in (above..).zip(table.files.iter()) {
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
    for fd in made.memfds.values() {
        remote
            .syscall("close", libc::SYS_close, &[*fd])
            .step(pid, "a memfd")?;
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
            // Each description is its own, with its flags and offset.
            let flags = open_flags(entry.flags) | libc::O_CLOEXEC;
            let fd = remote
                .open("open(memfd)", scratch, &format!("/proc/self/fd/{t}"), flags)
                .step(pid, "a memfd")?;
            if m.pos != 0 {
                remote
                    .syscall(
                        "lseek",
                        libc::SYS_lseek,
                        &[fd, m.pos, libc::SEEK_SET as u64],
                    )
                    .step(pid, "the offset of a memfd")?;
            }
            Ok(fd)
        }
        Some(file_entry::Kind::Eventfd(e)) => create_eventfd(remote, pid, scratch, entry, e),
        Some(file_entry::Kind::Timerfd(t)) => create_timerfd(remote, pid, scratch, entry, t),
        Some(file_entry::Kind::Signalfd(sfd)) => create_signalfd(remote, pid, scratch, entry, sfd),
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
        None => Err(RestoreError::Inconsistent(format!(
            "file {} has no kind",
            entry.id
        ))),
    }
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
    let fd = remote
        .syscall(
            "fcntl(F_DUPFD_CLOEXEC)",
            libc::SYS_fcntl,
            &[made, libc::F_DUPFD_CLOEXEC as u64, above],
        )
        .step(pid, "a memfd")?;
    remote
        .syscall("close", libc::SYS_close, &[made])
        .step(pid, "a memfd")?;
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
    if !m.chunks.is_empty() {
        let path = format!("/proc/{pid}/fd/{fd}");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .map_err(|e| RestoreError::Inconsistent(format!("opening {path}: {e}")))?;
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
