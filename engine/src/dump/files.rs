//! Descriptors of a dumped process: what each one is, and the open file
//! descriptions behind them (shared ones recognised with `kcmp`): files reopened by path,
//! pipes with their contents (read with `tee`), memfds with their contents and seals, regular
//! files unlinked while open with their contents (when their name is still free),
//! eventfds, timerfds, signalfds and epoll instances with every registration (its watched file
//! found with `kcmp(KCMP_EPOLL_TFD)`), inotify instances with every watch (what it watches
//! found by path from its file handle).

use super::error::image_u32;
use super::sockets::{read_inet, read_unix, socket_ino, TreeSockets};
use super::DumpError;
use crate::image::schema::{
    file_entry, DeletedFile, EpollRegistration, EventFd, EventPoll, Fd, FifoFile, FileEntry,
    InetSocket, InotifyFile, InotifyWatch, MemfdChunk, MemfdFile, PathFile, PathFileType, Pipe,
    PipeEnd, SignalFd, TimerFd, UnixSocket,
};
use crate::procfs::{read_link, EpollTfd, FdInfo};
use crate::sys::{
    clock_now, epoll_target_is, eventfd_is_semaphore, file_owner, file_signal, memfd_seals,
    on_hugetlbfs, open_by_handle, peek_pipe, pipe_capacity, pipe_queued, ready_for, same_file,
    timerfd_gettime, OWNER_PGRP, OWNER_TID,
};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, FileTypeExt, OpenOptionsExt};

/// Character devices reopened by path: they carry no state of their own.
const STATELESS_DEVICES: &[&str] = &[
    "/dev/null",
    "/dev/zero",
    "/dev/full",
    "/dev/random",
    "/dev/urandom",
];

/// What a descriptor is, as far as the dump cares.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FdKind {
    Path {
        path: String,
        ftype: PathFileType,
    },
    Pipe {
        ino: u64,
    },
    EventFd {
        count: u64,
        /// `None` before Linux 6.6, whose fdinfo does not show it: found once the engine
        /// holds the descriptor ([`crate::sys::eventfd_is_semaphore`]).
        semaphore: Option<bool>,
    },
    /// Its time is read once the engine holds it (`timerfd_gettime`).
    TimerFd,
    SignalFd {
        sigmask: u64,
    },
    /// Its registrations, as fdinfo lists them; checked once the engine holds the files.
    Epoll {
        registrations: Vec<EpollTfd>,
    },
    /// Its contents and seals are read once the engine holds it.
    Memfd {
        name: String,
    },
    /// An `AF_UNIX` socket that [`super::sockets::survey`] found restorable.
    UnixSocket {
        ino: u64,
    },
    /// A named pipe opened by its path, which still names it.
    Fifo {
        path: String,
        dev: u64,
        ino: u64,
    },
    /// A TCP listener or UDP socket that [`super::sockets::survey`] found restorable.
    InetSocket {
        ino: u64,
    },
    /// A regular file unlinked while open, whose path is free and whose directory is still
    /// there (its contents are read once the engine holds it).
    Deleted {
        path: String,
        dev: u64,
        ino: u64,
    },
    /// An inotify instance, each watch with the path of what it watches; whether events wait
    /// unread is asked once the engine holds it.
    Inotify {
        watches: Vec<InotifyWatch>,
    },
}

/// The largest memfd whose contents a dump keeps (in `files.img`, whose messages are bounded).
const MEMFD_MAX: u64 = 64 << 20;
/// The largest deleted file whose contents a dump keeps, for the same reason.
const DELETED_MAX: u64 = 64 << 20;

/// `<sys/epoll.h>`'s flags as the `u32` of an event mask.
const EPOLLEXCLUSIVE: u32 = 1 << 28;
const EPOLLWAKEUP: u32 = 1 << 29;
const EPOLLONESHOT: u32 = 1 << 30;
const EPOLLET: u32 = 1 << 31;
/// epoll's flags that are not events (`EP_PRIVATE_BITS`): what a fired `EPOLLONESHOT`
/// registration keeps.
const EPOLL_PRIVATE: u32 = EPOLLWAKEUP | EPOLLONESHOT | EPOLLET | EPOLLEXCLUSIVE;

/// One descriptor of a process: its number, kind and fdinfo.
#[derive(Debug, Clone)]
pub struct FdDesc {
    pub fd: i32,
    pub kind: FdKind,
    pub info: FdInfo,
}

/// Refuses a named pipe held by the tree that a process outside it also holds open: its
/// buffer is shared with that process, which a restore could neither keep nor refill.
/// Looks at every process's descriptors, only when the tree holds a FIFO.
pub fn fifos_outside(pids: &[i32]) -> Result<(), DumpError> {
    use std::os::unix::fs::MetadataExt;
    let fifo_of = |pid: i32, fd: i32| {
        let m = std::fs::metadata(format!("/proc/{pid}/fd/{fd}")).ok()?;
        std::os::unix::fs::FileTypeExt::is_fifo(&m.file_type()).then(|| (m.dev(), m.ino()))
    };
    let mut ours: HashMap<(u64, u64), (i32, i32)> = HashMap::new();
    for &pid in pids {
        for fd in crate::procfs::fds(pid)? {
            let named = read_link(format!("/proc/{pid}/fd/{fd}")).is_ok_and(|t| t.starts_with('/'));
            if let Some(key) = fifo_of(pid, fd).filter(|_| named) {
                ours.entry(key).or_insert((pid, fd));
            }
        }
    }
    if ours.is_empty() {
        return Ok(());
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return Ok(());
    };
    for entry in dir.flatten() {
        let Some(other) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if pids.contains(&other) {
            continue;
        }
        // A process that ended meanwhile holds nothing.
        let Ok(fds) = crate::procfs::fds(other) else {
            continue;
        };
        for fd in fds {
            if let Some(&(pid, held)) = fifo_of(other, fd).and_then(|k| ours.get(&k)) {
                return Err(DumpError::FifoOutside {
                    pid,
                    fd: held,
                    path: read_link(format!("/proc/{pid}/fd/{held}")).unwrap_or_default(),
                    holder: other,
                });
            }
        }
    }
    Ok(())
}

/// Says what descriptor `fd` of `pid` is, or why it cannot be dumped.
/// Runs before anything is done to the process, so a refusal changes nothing. `sockets` are
/// the tree's sockets that [`super::sockets::survey`] accepted.
pub fn classify(pid: i32, fd: i32, sockets: &TreeSockets) -> Result<FdDesc, DumpError> {
    let link = format!("/proc/{pid}/fd/{fd}");
    failpoint!("dump.proc.fd", |source| crate::procfs::ProcError::Io {
        path: link.clone(),
        source,
    });
    let target = read_link(&link)?;
    let unsupported = |kind: &'static str, hint: &'static str| DumpError::UnsupportedFd {
        pid,
        fd,
        kind,
        target: target.clone(),
        hint,
    };
    let mut anon_info = None;
    let kind = if let Some(rest) = target.strip_prefix("pipe:[") {
        let ino = rest.trim_end_matches(']').parse().unwrap_or(0);
        FdKind::Pipe { ino }
    } else if let Some(ino) = socket_ino(&target).filter(|ino| sockets.contains(*ino)) {
        FdKind::UnixSocket { ino }
    } else if let Some(ino) = socket_ino(&target).filter(|ino| sockets.contains_inet(*ino)) {
        FdKind::InetSocket { ino }
    } else if target.starts_with("socket:") {
        return Err(unsupported(
            "a socket",
            "close it before the dump or run the process without it",
        ));
    } else if let Some(name) = target.strip_prefix("anon_inode:") {
        let info = FdInfo::read(pid, fd)?;
        let unreadable = |kind| {
            unsupported(
                kind,
                "this kernel's fdinfo does not show all of its state; dump on a kernel that does",
            )
        };
        let kind = match name {
            "[eventfd]" => match info.eventfd {
                Some(crate::procfs::EventFdInfo { count, semaphore }) => {
                    FdKind::EventFd { count, semaphore }
                }
                None => return Err(unreadable("an eventfd")),
            },
            "[timerfd]" => match info.timerfd {
                // A change of the clock cancels such a timer (its reads fail with ECANCELED
                // until it is set again), which neither fdinfo nor timerfd_gettime shows.
                Some(t) if t.settime_flags & TFD_TIMER_CANCEL_ON_SET != 0 => {
                    return Err(unsupported(
                        "a timerfd set with TFD_TIMER_CANCEL_ON_SET",
                        "whether a change of the clock cancelled it cannot be read; set it \
                         without the flag, or close it before the dump",
                    ))
                }
                Some(_) => FdKind::TimerFd,
                None => return Err(unreadable("a timerfd")),
            },
            "[signalfd]" => match info.sigmask {
                Some(sigmask) => FdKind::SignalFd { sigmask },
                None => return Err(unreadable("a signalfd")),
            },
            "[eventpoll]" => FdKind::Epoll {
                registrations: info.epoll.clone(),
            },
            "inotify" => FdKind::Inotify {
                watches: inotify_watches(pid, fd, &info.inotify)?,
            },
            _ => {
                let (kind, hint) = anon_kind(name);
                return Err(unsupported(kind, hint));
            }
        };
        anon_info = Some(info);
        kind
    } else if let Some(rest) = target.strip_prefix("/memfd:") {
        let name = rest.strip_suffix(" (deleted)").unwrap_or(rest);
        FdKind::Memfd {
            name: name.to_owned(),
        }
    } else if target == "/secretmem (deleted)" {
        return Err(unsupported(
            "a memfd_secret descriptor",
            "close it before the dump or run the process without it",
        ));
    } else if target.ends_with(" (deleted)") && !names_itself(&link, &target) {
        use std::os::unix::fs::FileTypeExt;
        if std::fs::metadata(&link).is_ok_and(|m| m.is_file()) {
            let (path, dev, ino) = deleted_file(pid, &format!("fd {fd}"), &link, &target)?;
            FdKind::Deleted { path, dev, ino }
        } else {
            return Err(if std::fs::metadata(&link).is_ok_and(|m| m.is_dir()) {
                unsupported(
                    "a deleted directory",
                    "keep the directory until the dump is done, or close it",
                )
            } else if std::fs::metadata(&link).is_ok_and(|m| m.file_type().is_fifo()) {
                unsupported(
                    "a named pipe (FIFO) whose path was removed",
                    "keep the FIFO in place until the dump is done",
                )
            } else {
                unsupported(
                    "a deleted device or special file",
                    "keep it in place until the dump is done",
                )
            });
        }
    } else if target.starts_with('/') {
        let meta = std::fs::metadata(&link).map_err(|source| crate::procfs::ProcError::Io {
            path: link.clone(),
            source,
        })?;
        let ft = meta.file_type();
        let path_kind = |ftype| FdKind::Path {
            path: target.clone(),
            ftype,
        };
        if ft.is_file() {
            path_kind(PathFileType::Regular)
        } else if ft.is_dir() {
            path_kind(PathFileType::Directory)
        } else if ft.is_char_device() && STATELESS_DEVICES.contains(&target.as_str()) {
            path_kind(PathFileType::CharDevice)
        } else if ft.is_char_device()
            && (target.starts_with("/dev/pts/") || target.starts_with("/dev/tty"))
        {
            return Err(unsupported(
                "a terminal",
                "start the process with its standard streams redirected to files or /dev/null",
            ));
        } else if ft.is_fifo() {
            use std::os::unix::fs::MetadataExt;
            let same = std::fs::metadata(&target)
                .is_ok_and(|m| m.dev() == meta.dev() && m.ino() == meta.ino());
            if !same || crate::image::check_path(&target).is_err() {
                return Err(unsupported(
                    "a named pipe (FIFO) whose path now names another file, or cannot be \
                     held by an image",
                    "keep the FIFO in place until the dump is done",
                ));
            }
            FdKind::Fifo {
                path: target.clone(),
                dev: meta.dev(),
                ino: meta.ino(),
            }
        } else {
            return Err(unsupported(
                "a device or special file",
                "only /dev/null, /dev/zero, /dev/full, /dev/random and /dev/urandom are supported",
            ));
        }
    } else {
        return Err(unsupported(
            "an unknown kind of descriptor",
            "see `crlab check`",
        ));
    };
    let info = match anon_info {
        Some(info) => info,
        None => FdInfo::read(pid, fd)?,
    };
    if let Some(lock) = info.locks.iter().find_map(|l| lock_kind(l)) {
        return Err(DumpError::FileLock {
            pid,
            fd,
            path: target,
            lock,
        });
    }
    Ok(FdDesc { fd, kind, info })
}

/// Whether the link target `target` of `link`, which ends with " (deleted)", is the name of
/// the very file (a live file whose name ends so), not the kernel's mark of an unlinked one.
fn names_itself(link: &str, target: &str) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(link), std::fs::symlink_metadata(target)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// A regular file `pid` holds (`holder`: a descriptor or a mapping, `link` its /proc link)
/// that was unlinked: restorable when the restore
/// can make it again under the same name. Refused when that name now belongs to another file
/// or its directory is gone (the name would differ), when it still has other names (hard
/// links a new file would not share), when it is not on the filesystem its path leads to (a
/// kernel-internal file), or when it is larger than [`DELETED_MAX`].
pub fn deleted_file(
    pid: i32,
    holder: &str,
    link: &str,
    target: &str,
) -> Result<(String, u64, u64), DumpError> {
    use std::os::unix::fs::MetadataExt;
    let path = target.strip_suffix(" (deleted)").unwrap_or(target);
    let refuse = |why, hint| DumpError::DeletedFile {
        pid,
        holder: holder.to_owned(),
        path: path.to_owned(),
        why,
        hint,
    };
    let meta = std::fs::metadata(link).map_err(|source| crate::procfs::ProcError::Io {
        path: link.to_owned(),
        source,
    })?;
    if crate::image::check_path(path).is_err() {
        return Err(refuse(
            "its path cannot be held by an image",
            "keep the file on disk until the dump is done",
        ));
    }
    let parent = std::path::Path::new(path)
        .parent()
        .map(std::fs::metadata)
        .and_then(Result::ok)
        .filter(std::fs::Metadata::is_dir);
    let Some(parent) = parent else {
        return Err(refuse(
            "its directory is gone, so the restored file's name would differ",
            "keep its directory until the dump is done",
        ));
    };
    if std::fs::symlink_metadata(path).is_ok() {
        return Err(refuse(
            "its path now names another file, so the restored file's name would differ",
            "remove or rename the file now at that path before the dump",
        ));
    }
    if meta.nlink() != 0 {
        return Err(refuse(
            "it still has other names (hard links), which a file made again would not share",
            "keep the file at its path until the dump is done",
        ));
    }
    if parent.dev() != meta.dev() {
        return Err(refuse(
            "it is not on the filesystem its path leads to now (a kernel-internal file, or its \
             filesystem was unmounted)",
            "close it before the dump",
        ));
    }
    if meta.len() > DELETED_MAX {
        return Err(refuse(
            "it is larger than 64 MiB, the most of a deleted file's contents crlab keeps",
            "truncate or close it before the dump",
        ));
    }
    Ok((path.to_owned(), meta.dev(), meta.ino()))
}

/// The flags of an inotify watch's mask that fdinfo shows besides its events.
const IN_ONESHOT: u32 = 0x8000_0000;
const IN_EXCL_UNLINK: u32 = 0x0400_0000;
/// `FS_EVENT_ON_CHILD`: kernels that show the kernel's mask rather than the process's set it on
/// a directory's watch themselves; not something the process asked.
const FS_EVENT_ON_CHILD: u32 = 0x0800_0000;

/// The watches of the inotify instance at `fd` of `pid`, each with the path of what it
/// watches: its file handle opened on a mount of its filesystem (`open_by_handle_at`), the
/// path read back from `/proc/self/fd` and checked to name the same device and inode. A watch
/// whose object has no such path (deleted, not reachable through any mount, on a filesystem
/// without file handles) is refused, naming the watch and the inode.
fn inotify_watches(
    pid: i32,
    fd: i32,
    watches: &[crate::procfs::InotifyWatch],
) -> Result<Vec<InotifyWatch>, DumpError> {
    use std::os::unix::fs::MetadataExt;
    let mut mountinfo = None;
    let mut out = Vec::with_capacity(watches.len());
    for w in watches {
        let (major, minor) = (w.sdev >> 20, w.sdev & 0xf_ffff);
        let refuse = |why, hint| DumpError::InotifyWatch {
            pid,
            fd,
            wd: w.wd,
            ino: w.ino,
            dev: format!("{major}:{minor}"),
            why,
            hint,
        };
        let known = libc::IN_ALL_EVENTS | IN_ONESHOT | IN_EXCL_UNLINK | FS_EVENT_ON_CHILD;
        if w.mask & !known != 0 || w.ignored_mask != 0 {
            return Err(refuse(
                "has mask bits crlab does not know how to add again",
                "remove the watch before the dump",
            ));
        }
        let Some((handle_type, handle)) = &w.handle else {
            return Err(refuse(
                "is on a filesystem that gives no file handle, so the path of what it watches \
                 cannot be found",
                "remove the watch before the dump",
            ));
        };
        let dev = nix::sys::stat::makedev(major, minor);
        if mountinfo.is_none() {
            mountinfo = Some(crate::procfs::read_string("/proc/self/mountinfo")?);
        }
        let text = mountinfo.as_deref().unwrap_or_default();
        let mut found = None;
        for mount_point in crate::procfs::mount_points_of(text, major, minor) {
            // Opened for reading, not O_PATH: open_by_handle_at refuses O_PATH descriptors.
            let Ok(mount) = std::fs::OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_DIRECTORY | libc::O_NONBLOCK)
                .open(&mount_point)
            else {
                continue;
            };
            let Ok(object) = open_by_handle(mount.as_fd(), *handle_type, handle) else {
                continue;
            };
            let Ok(path) = read_link(format!("/proc/self/fd/{}", object.as_raw_fd())) else {
                continue;
            };
            // The path must lead to this very object (not a deleted one's old name, not
            // another file since made there): the restore adds the watch by path.
            let named =
                std::fs::symlink_metadata(&path).is_ok_and(|m| m.dev() == dev && m.ino() == w.ino);
            if path.starts_with('/') && named {
                found = Some(path);
                break;
            }
        }
        let Some(path) = found else {
            return Err(refuse(
                "watches an object that no path leads to (deleted, or not reachable through \
                 any mount)",
                "remove the watch (inotify_rm_watch) before the dump, or keep what it watches \
                 at its path",
            ));
        };
        if crate::image::check_path(&path).is_err() {
            return Err(refuse(
                "watches an object whose path cannot be held by an image",
                "remove the watch before the dump",
            ));
        }
        out.push(InotifyWatch {
            wd: w.wd,
            mask: w.mask & !FS_EVENT_ON_CHILD,
            path,
            dev,
            ino: w.ino,
        });
    }
    Ok(out)
}

/// What an anonymous-inode descriptor this engine does not restore is, named after its link
/// (`anon_inode:inotify`), with what to do.
fn anon_kind(name: &str) -> (&'static str, &'static str) {
    const CLOSE: &str = "close it before the dump or run the process without it";
    let name = name.trim_start_matches('[').trim_end_matches(']');
    let kind = match name {
        "fanotify" => "a fanotify descriptor",
        "userfaultfd" => "a userfaultfd",
        "pidfd" => "a pidfd",
        "io_uring" => "an io_uring instance",
        "perf_event" => "a perf event descriptor",
        "fscontext" | "mount" => "a mount API descriptor",
        "landlock-ruleset" => "a Landlock ruleset",
        "memfd_secret" | "secretmem" => "a memfd_secret descriptor",
        n if n.starts_with("bpf") => "a BPF object",
        n if n.starts_with("kvm") => "a KVM descriptor",
        _ => return (
            "an anonymous-inode descriptor of a kind crlab does not know",
            "crlab restores eventfds, timerfds, signalfds, epoll and inotify instances; close it \
                 before the dump",
        ),
    };
    (kind, CLOSE)
}

/// What a `lock:` line of fdinfo is (`1: POSIX  ADVISORY  WRITE 77 00:2d:56 0 EOF`), in words;
/// `None` for a line that is not a lock held.
fn lock_kind(line: &str) -> Option<&'static str> {
    Some(match line.split_whitespace().nth(1)? {
        "FLOCK" => "a flock lock",
        "POSIX" => "a POSIX record lock",
        "OFDLCK" => "an OFD lock",
        "LEASE" => "a lease",
        "DELEG" => "a delegation",
        // A waiter ("->"), or a kind this engine does not know: still a lock.
        "->" => return None,
        _ => "a file lock",
    })
}

/// Open file descriptions gathered across every process of the tree.
#[derive(Default)]
pub struct FileTableBuilder {
    /// Each entry with the received descriptor kept open for `kcmp`.
    files: Vec<(FileEntry, OwnedFd, (u64, u64))>,
    pipes: HashMap<u64, Pipe>,
    /// The named pipes already recorded (device, inode): their first description carries
    /// the buffer.
    fifos: std::collections::HashSet<(u64, u64)>,
    /// The memfds (device, inode) whose contents an entry holds already.
    memfds: HashSet<(u64, u64)>,
    /// The deleted files (device, inode) whose contents an entry holds already.
    deleted: HashSet<(u64, u64)>,
    /// The entries made for mappings of deleted files: (device, inode, open mode) -> id.
    mapped: HashMap<(u64, u64, i32), u32>,
}

impl FileTableBuilder {
    /// Records the descriptors `descs` of `pid`, received through the transport
    /// socket as `received` (same order); returns the process's fd table.
    pub fn add_process(
        &mut self,
        pid: i32,
        descs: &[FdDesc],
        received: Vec<OwnedFd>,
        sockets: &TreeSockets,
    ) -> Result<Vec<Fd>, DumpError> {
        if descs.len() != received.len() {
            return Err(DumpError::Transport {
                pid,
                what: format!(
                    "expected {} descriptors, received {}",
                    descs.len(),
                    received.len()
                ),
            });
        }
        let mut table = Vec::with_capacity(descs.len());
        let me = nix::unistd::getpid().as_raw();
        // New epoll instances: (index in `files`, descriptor, registrations), completed once
        // every file of the process has its id.
        let mut epolls = Vec::new();
        for (desc, fd) in descs.iter().zip(received) {
            let meta = nix::sys::stat::fstat(&fd).map_err(|source| crate::sys::SysError::Call {
                op: "fstat",
                tid: pid,
                source,
            })?;
            let key = (meta.st_dev, meta.st_ino);
            let mut id = None;
            for (entry, other, other_key) in &self.files {
                if *other_key == key && same_file(me, fd.as_raw_fd(), me, other.as_raw_fd())? {
                    id = Some(entry.id);
                    break;
                }
            }
            let id = match id {
                Some(id) => id,
                None => {
                    signalling(pid, desc, &fd)?;
                    let id =
                        u32::try_from(self.files.len() + 1).map_err(|_| DumpError::OutOfRange {
                            pid,
                            what: "the number of open files of the tree",
                            value: i64::try_from(self.files.len()).unwrap_or(i64::MAX),
                        })?;
                    let flags = desc.info.flags & !(libc::O_CLOEXEC as u32);
                    let kind = match &desc.kind {
                        FdKind::Path { path, ftype } => file_entry::Kind::Path(PathFile {
                            path: path.clone(),
                            pos: desc.info.pos,
                            r#type: *ftype as i32,
                        }),
                        FdKind::Pipe { ino } => {
                            if !self.pipes.contains_key(ino) {
                                let pipe = read_pipe(pid, desc.fd, &fd, *ino)?;
                                self.pipes.insert(*ino, pipe);
                            }
                            file_entry::Kind::Pipe(PipeEnd { pipe_id: *ino })
                        }
                        FdKind::EventFd { count, semaphore } => {
                            let semaphore =
                                match semaphore {
                                    Some(s) => *s,
                                    None => eventfd_is_semaphore(fd.as_fd(), *count).map_err(
                                        |source| DumpError::FileProbe {
                                            pid,
                                            fd: desc.fd,
                                            what: "whether an eventfd counts as a semaphore",
                                            source,
                                        },
                                    )?,
                                };
                            file_entry::Kind::Eventfd(EventFd {
                                count: *count,
                                semaphore,
                            })
                        }
                        FdKind::TimerFd => file_entry::Kind::Timerfd(read_timer(pid, desc, &fd)?),
                        FdKind::SignalFd { sigmask } => {
                            file_entry::Kind::Signalfd(SignalFd { sigmask: *sigmask })
                        }
                        FdKind::Memfd { name } => {
                            let first = self.memfds.insert(key);
                            let mut m = if first {
                                read_memfd(pid, desc, &fd, &meta)?
                            } else {
                                MemfdFile::default()
                            };
                            m.memfd_id = meta.st_ino;
                            m.pos = desc.info.pos;
                            m.first = first;
                            if first {
                                m.name = name.clone();
                            }
                            file_entry::Kind::Memfd(m)
                        }
                        FdKind::Epoll { registrations } => {
                            epolls.push((self.files.len(), desc.fd, registrations.clone()));
                            file_entry::Kind::Epoll(EventPoll {
                                pid: image_u32(pid, "the pid", pid)?,
                                registrations: Vec::new(),
                            })
                        }
                        FdKind::UnixSocket { ino } => {
                            let s: UnixSocket = read_unix(pid, desc.fd, *ino, sockets, &fd)?;
                            file_entry::Kind::UnixSocket(s)
                        }
                        FdKind::Fifo { path, dev, ino } => {
                            let first = self.fifos.insert((*dev, *ino));
                            let mut f = FifoFile {
                                path: path.clone(),
                                dev: *dev,
                                ino: *ino,
                                first,
                                ..FifoFile::default()
                            };
                            if first {
                                let p = read_pipe(pid, desc.fd, &fd, *ino)?;
                                f.data = p.data;
                                f.capacity = p.capacity;
                            }
                            file_entry::Kind::Fifo(f)
                        }
                        FdKind::InetSocket { ino } => {
                            let s: InetSocket = read_inet(pid, desc.fd, *ino, sockets, &fd)?;
                            file_entry::Kind::InetSocket(s)
                        }
                        FdKind::Deleted { path, dev, ino } => {
                            let first = self.deleted.insert((*dev, *ino));
                            let mut d = if first {
                                read_deleted(pid, &format!("fd {}", desc.fd), &fd, &meta)?
                            } else {
                                DeletedFile::default()
                            };
                            d.path = path.clone();
                            d.pos = desc.info.pos;
                            d.dev = *dev;
                            d.ino = *ino;
                            d.first = first;
                            file_entry::Kind::Deleted(d)
                        }
                        FdKind::Inotify { watches } => {
                            // Reading the events would take them from the process; FIONREAD
                            // on the engine's copy counts them without.
                            let queued =
                                pipe_queued(fd.as_fd()).map_err(|source| DumpError::FileProbe {
                                    pid,
                                    fd: desc.fd,
                                    what: "how many bytes of events an inotify instance holds",
                                    source,
                                })?;
                            if queued != 0 {
                                return Err(DumpError::UnsupportedFd {
                                    pid,
                                    fd: desc.fd,
                                    kind: "an inotify descriptor with unread events",
                                    target: "anon_inode:inotify".into(),
                                    hint: "its queued events cannot be read without taking \
                                           them from the process; dump once it has read them",
                                });
                            }
                            file_entry::Kind::Inotify(InotifyFile {
                                watches: watches.clone(),
                            })
                        }
                    };
                    self.files.push((
                        FileEntry {
                            id,
                            flags,
                            kind: Some(kind),
                        },
                        fd,
                        key,
                    ));
                    id
                }
            };
            table.push(Fd {
                fd: image_u32(pid, "a descriptor number", desc.fd)?,
                file_id: id,
                cloexec: desc.info.flags & libc::O_CLOEXEC as u32 != 0,
            });
        }
        for (index, efd, registrations) in epolls {
            let made = self.registrations(pid, efd, &registrations, &table)?;
            if let Some(file_entry::Kind::Epoll(e)) = &mut self.files[index].0.kind {
                e.registrations = made;
            }
        }
        Ok(table)
    }

    /// Gives every mapping of a deleted regular file among `vmas` of `pid` (its path ending in
    /// " (deleted)", checked restorable by [`super::memory::vmas`]) a description of the file
    /// in the table to be mapped from, opened as the mapping needs it (read-write for a shared
    /// mapping that is or may be made writable). The file's
    /// contents are read through `/proc/PID/map_files`, once per file.
    pub fn add_mappings(
        &mut self,
        pid: i32,
        vmas: &mut [crate::image::schema::Vma],
    ) -> Result<(), DumpError> {
        use crate::image::schema::VmaKind;
        for v in vmas.iter_mut() {
            let Some(path) = v.path.strip_suffix(" (deleted)").map(str::to_owned) else {
                continue;
            };
            let shared = v.kind == VmaKind::FileShared as i32;
            if !shared && v.kind != VmaKind::FilePrivate as i32 {
                continue;
            }
            let holder = format!("mapping {:#x}-{:#x}", v.start, v.end);
            let link = format!("/proc/{pid}/map_files/{:x}-{:x}", v.start, v.end);
            let file: OwnedFd = std::fs::File::open(&link)
                .map_err(|source| crate::procfs::ProcError::Io {
                    path: link.clone(),
                    source,
                })?
                .into();
            let meta =
                nix::sys::stat::fstat(&file).map_err(|source| crate::sys::SysError::Call {
                    op: "fstat",
                    tid: pid,
                    source,
                })?;
            let key = (meta.st_dev, meta.st_ino);
            let writable = v.prot & libc::PROT_WRITE as u32 != 0 || v.may_write;
            let mode = if shared && writable {
                libc::O_RDWR
            } else {
                libc::O_RDONLY
            };
            let id = match self.mapped.get(&(key.0, key.1, mode)) {
                Some(&id) => id,
                None => {
                    let id =
                        u32::try_from(self.files.len() + 1).map_err(|_| DumpError::OutOfRange {
                            pid,
                            what: "the number of open files of the tree",
                            value: i64::try_from(self.files.len()).unwrap_or(i64::MAX),
                        })?;
                    let first = self.deleted.insert(key);
                    let mut d = if first {
                        read_deleted(pid, &holder, &file, &meta)?
                    } else {
                        DeletedFile::default()
                    };
                    d.path = path.clone();
                    d.dev = key.0;
                    d.ino = key.1;
                    d.first = first;
                    let entry = FileEntry {
                        id,
                        flags: u32::try_from(mode).unwrap_or(0),
                        kind: Some(file_entry::Kind::Deleted(d)),
                    };
                    self.files.push((entry, file, key));
                    self.mapped.insert((key.0, key.1, mode), id);
                    id
                }
            };
            // The path keeps its " (deleted)" (see the image's Vma.deleted_file).
            v.deleted_file = id;
        }
        Ok(())
    }

    /// The registrations of the epoll instance at `efd` of `pid`, each on the file `pid` has
    /// at the descriptor number it was added with (`table`), or the refusal of one that the
    /// restore could not add again as it is.
    fn registrations(
        &self,
        pid: i32,
        efd: i32,
        tfds: &[EpollTfd],
        table: &[Fd],
    ) -> Result<Vec<EpollRegistration>, DumpError> {
        let refuse =
            |tfd: i32, why: &'static str, hint: &'static str| DumpError::EpollRegistration {
                pid,
                fd: efd,
                tfd,
                why,
                hint,
            };
        let mut seen: BTreeMap<i32, u32> = BTreeMap::new();
        let mut out = Vec::with_capacity(tfds.len());
        for t in tfds {
            // The kernel finds the n-th registration with this number in the order fdinfo
            // lists them (`ep_find_tfd`).
            let toff = seen.entry(t.tfd).or_insert(0);
            let same = epoll_target_is(pid, t.tfd, efd, t.tfd, *toff)?;
            *toff += 1;
            let not_open = "watches a file that is no longer open at that number in the process \
                 (closed, or replaced by another file)";
            let file_id = match same {
                Some(true) => table
                    .iter()
                    .find(|f| i32::try_from(f.fd) == Ok(t.tfd))
                    .map(|f| f.file_id)
                    .ok_or_else(|| refuse(t.tfd, not_open, "keep the file open at that number"))?,
                _ => {
                    return Err(refuse(
                        t.tfd,
                        not_open,
                        "keep the watched file open at the number it was added with, or remove \
                         the registration (EPOLL_CTL_DEL) before closing it",
                    ))
                }
            };
            if t.events & EPOLLONESHOT != 0 && t.events & !EPOLL_PRIVATE == 0 {
                return Err(refuse(
                    t.tfd,
                    "is an EPOLLONESHOT registration that fired and was not rearmed, which adding \
                     it again would arm",
                    "rearm it (EPOLL_CTL_MOD) or remove it before the dump",
                ));
            }
            if t.events & EPOLLET != 0 {
                self.edge_not_ready(file_id, t.events).map_err(|()| {
                    refuse(
                        t.tfd,
                        "is edge-triggered (EPOLLET) on a file that is ready, and whether \
                             that edge was already reported cannot be read",
                        "dump while the file is drained, as an edge-triggered loop leaves it",
                    )
                })?;
            }
            out.push(EpollRegistration {
                tfd: image_u32(pid, "a registered descriptor number", t.tfd)?,
                file_id,
                events: t.events,
                data: t.data,
            });
        }
        Ok(out)
    }

    /// `Err(())` when the file `id` is ready for any of `events` (`poll`, which changes
    /// nothing).
    fn edge_not_ready(&self, id: u32, events: u32) -> Result<(), ()> {
        let Some((_, file, _)) = usize::try_from(id)
            .ok()
            .and_then(|i| i.checked_sub(1))
            .and_then(|i| self.files.get(i))
        else {
            return Err(());
        };
        match ready_for(file.as_fd(), events) {
            Ok(false) => Ok(()),
            _ => Err(()),
        }
    }

    pub fn finish(self) -> crate::image::schema::FileTable {
        let mut pipes: Vec<Pipe> = self.pipes.into_values().collect();
        pipes.sort_by_key(|p| p.id);
        crate::image::schema::FileTable {
            files: self.files.into_iter().map(|(e, _, _)| e).collect(),
            pipes,
        }
    }
}

/// Refuses an open file description that signals a process on I/O (`F_SETOWN`, `F_SETSIG`,
/// `O_ASYNC`): the restore opens files afresh, without any of it.
fn signalling(pid: i32, desc: &FdDesc, file: &OwnedFd) -> Result<(), DumpError> {
    let refuse = |what: String| DumpError::FileSignalling {
        pid,
        fd: desc.fd,
        path: match &desc.kind {
            FdKind::Path { path, .. } => path.clone(),
            FdKind::Pipe { ino } => format!("pipe:[{ino}]"),
            FdKind::Fifo { path, .. } => path.clone(),
            FdKind::EventFd { .. } => "anon_inode:[eventfd]".into(),
            FdKind::TimerFd => "anon_inode:[timerfd]".into(),
            FdKind::SignalFd { .. } => "anon_inode:[signalfd]".into(),
            FdKind::Epoll { .. } => "anon_inode:[eventpoll]".into(),
            FdKind::Memfd { name } => format!("/memfd:{name} (deleted)"),
            FdKind::UnixSocket { ino } | FdKind::InetSocket { ino } => format!("socket:[{ino}]"),
            FdKind::Deleted { path, .. } => format!("{path} (deleted)"),
            FdKind::Inotify { .. } => "anon_inode:inotify".into(),
        },
        what,
    };
    let (kind, owner) = file_owner(file.as_fd())?;
    if owner != 0 {
        let whom = match kind {
            OWNER_TID => "thread",
            OWNER_PGRP => "process group",
            _ => "process",
        };
        return Err(refuse(format!("signals {whom} {owner} on I/O (F_SETOWN)")));
    }
    let sig = file_signal(file.as_fd())?;
    if sig != 0 {
        return Err(refuse(format!("sends signal {sig} on I/O (F_SETSIG)")));
    }
    if desc.info.flags & libc::O_ASYNC as u32 != 0 {
        return Err(refuse("is in O_ASYNC mode".to_string()));
    }
    Ok(())
}

/// A timerfd's clock, flags, time and unread expirations. `timerfd_gettime` first: it folds
/// a periodic timer's unread expirations into its ticks and rearms it (as a read or poll
/// would), so fdinfo then shows the time left and the ticks together, under one lock.
fn read_timer(pid: i32, desc: &FdDesc, file: &OwnedFd) -> Result<TimerFd, DumpError> {
    let me = nix::unistd::getpid().as_raw();
    for _ in 0..8 {
        timerfd_gettime(file.as_fd())?;
        let info = FdInfo::read(me, file.as_raw_fd())?;
        let Some(t) = info.timerfd else {
            break;
        };
        // Expired again between the two: not rearmed yet, so the time left reads zero (a
        // disarmed timer keeps an interval too, but no ticks: setting the time clears them).
        if t.value == (0, 0) && t.interval != (0, 0) && t.ticks > 0 {
            continue;
        }
        let (deadline_sec, deadline_nsec) =
            if t.settime_flags & TFD_TIMER_ABSTIME != 0 && t.value != (0, 0) {
                let (sec, nsec) = clock_now(t.clockid)?;
                let nsec = nsec + t.value.1;
                (sec + t.value.0 + nsec / 1_000_000_000, nsec % 1_000_000_000)
            } else {
                (0, 0)
            };
        return Ok(TimerFd {
            clockid: t.clockid,
            settime_flags: t.settime_flags,
            ticks: t.ticks,
            interval_sec: t.interval.0,
            interval_nsec: t.interval.1,
            value_sec: t.value.0,
            value_nsec: t.value.1,
            deadline_sec,
            deadline_nsec,
        });
    }
    Err(DumpError::UnsupportedFd {
        pid,
        fd: desc.fd,
        kind: "a timerfd whose time could not be read",
        target: "anon_inode:[timerfd]".into(),
        hint: "its interval is shorter than crlab can read it in; lengthen it before the dump",
    })
}

/// A memfd's contents (the pages that are not all zeros, as runs), size, seals, mode and
/// owner; one on hugetlbfs, or larger than [`MEMFD_MAX`], is refused.
fn read_memfd(
    pid: i32,
    desc: &FdDesc,
    file: &OwnedFd,
    meta: &libc::stat,
) -> Result<MemfdFile, DumpError> {
    let refuse = |kind, hint| DumpError::UnsupportedFd {
        pid,
        fd: desc.fd,
        kind,
        target: match &desc.kind {
            FdKind::Memfd { name } => format!("/memfd:{name} (deleted)"),
            _ => String::new(),
        },
        hint,
    };
    if on_hugetlbfs(file.as_fd())? {
        return Err(refuse(
            "a hugetlb memfd (MFD_HUGETLB)",
            "crlab restores memfds on shmem only; close it before the dump",
        ));
    }
    let size = u64::try_from(meta.st_size).unwrap_or(0);
    if size > MEMFD_MAX {
        return Err(refuse(
            "a memfd larger than 64 MiB",
            "crlab keeps memfd contents in files.img, up to 64 MiB; shrink or close it",
        ));
    }
    let seals = memfd_seals(file.as_fd())?;
    // Read through a copy of the descriptor with pread: the description's offset stays.
    let copy = std::fs::File::from(file.try_clone().map_err(|e| DumpError::Transport {
        pid,
        what: format!("duplicating the memfd of fd {}: {e}", desc.fd),
    })?);
    let chunks = read_chunks(pid, &format!("fd {}", desc.fd), "memfd", &copy, size)?;
    Ok(MemfdFile {
        size,
        chunks,
        seals,
        label: crate::selinux::label_of(file.as_fd()),
        mode: meta.st_mode & 0o7777,
        uid: meta.st_uid,
        gid: meta.st_gid,
        ..MemfdFile::default()
    })
}

/// A file's contents up to `size`, as runs of the pages that are not all zeros (`what` names
/// the file in errors).
fn read_chunks(
    pid: i32,
    holder: &str,
    what: &str,
    copy: &std::fs::File,
    size: u64,
) -> Result<Vec<MemfdChunk>, DumpError> {
    let mut chunks: Vec<MemfdChunk> = Vec::new();
    let mut page = vec![0u8; crate::sys::usize_of(crate::sys::PAGE_SIZE)];
    let mut offset = 0;
    while offset < size {
        let want = crate::sys::usize_of((size - offset).min(crate::sys::PAGE_SIZE));
        let buf = &mut page[..want];
        copy.read_exact_at(buf, offset)
            .map_err(|e| DumpError::Transport {
                pid,
                what: format!("reading the {what} of {holder} at {offset}: {e}"),
            })?;
        if buf.iter().any(|&b| b != 0) {
            match chunks.last_mut() {
                Some(c) if c.offset + c.data.len() as u64 == offset => {
                    c.data.extend_from_slice(buf);
                }
                _ => chunks.push(MemfdChunk {
                    offset,
                    data: buf.to_vec(),
                }),
            }
        }
        offset += want as u64;
    }
    Ok(chunks)
}

/// A deleted file's contents (read through a new read-only description opened from the
/// engine's copy, since the process's may be write-only; the process's offset stays), size,
/// mode, owner and label.
fn read_deleted(
    pid: i32,
    holder: &str,
    file: &OwnedFd,
    meta: &libc::stat,
) -> Result<DeletedFile, DumpError> {
    let size = u64::try_from(meta.st_size).unwrap_or(0);
    if size > DELETED_MAX {
        return Err(DumpError::DeletedFile {
            pid,
            holder: holder.to_owned(),
            path: read_link(format!("/proc/self/fd/{}", file.as_raw_fd())).unwrap_or_default(),
            why: "it is larger than 64 MiB, the most of a deleted file's contents crlab keeps",
            hint: "truncate or close it before the dump",
        });
    }
    let path = format!("/proc/self/fd/{}", file.as_raw_fd());
    let copy = std::fs::File::open(&path).map_err(|e| DumpError::Transport {
        pid,
        what: format!("opening the deleted file of {holder} for reading ({path}): {e}"),
    })?;
    let chunks = read_chunks(pid, holder, "deleted file", &copy, size)?;
    Ok(DeletedFile {
        size,
        chunks,
        label: crate::selinux::label_of(file.as_fd()),
        mode: meta.st_mode & 0o7777,
        uid: meta.st_uid,
        gid: meta.st_gid,
        ..DeletedFile::default()
    })
}

/// `TFD_TIMER_ABSTIME`, `TFD_TIMER_CANCEL_ON_SET`.
const TFD_TIMER_ABSTIME: u32 = 1;
const TFD_TIMER_CANCEL_ON_SET: u32 = 2;

/// The contents and capacity of a pipe, left in place.
fn read_pipe(pid: i32, fd: i32, end: &OwnedFd, ino: u64) -> Result<Pipe, DumpError> {
    let flags = nix::fcntl::fcntl(end, nix::fcntl::FcntlArg::F_GETFL).map_err(|source| {
        crate::sys::SysError::Call {
            op: "fcntl(F_GETFL)",
            tid: pid,
            source,
        }
    })?;
    // A write end: open a read end of the same pipe through /proc.
    let reopened;
    let read_end = if flags & libc::O_ACCMODE == libc::O_WRONLY {
        let path = format!("/proc/self/fd/{}", end.as_raw_fd());
        reopened = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&path)
            .map_err(|source| DumpError::Transport {
                pid,
                what: format!("opening a read end of the pipe of fd {fd} ({path}): {source}"),
            })?;
        reopened.as_fd()
    } else {
        end.as_fd()
    };
    let capacity = pipe_capacity(read_end)?;
    let data = peek_pipe(read_end)?;
    Ok(Pipe {
        id: ino,
        data,
        capacity,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_our_own_descriptors() {
        let me = nix::unistd::getpid().as_raw();
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let none = TreeSockets::default();
        let d = classify(me, devnull.as_raw_fd(), &none).unwrap();
        assert_eq!(
            d.kind,
            FdKind::Path {
                path: "/dev/null".into(),
                ftype: PathFileType::CharDevice
            }
        );
        let (r, _w) = nix::unistd::pipe().unwrap();
        assert!(matches!(
            classify(me, r.as_raw_fd(), &none).unwrap().kind,
            FdKind::Pipe { .. }
        ));
        let sock = std::os::unix::net::UnixDatagram::unbound().unwrap();
        let e = classify(me, sock.as_raw_fd(), &none)
            .unwrap_err()
            .to_string();
        assert!(e.contains("socket"), "{e}");
    }

    #[test]
    fn classifies_a_deleted_file_by_whether_its_name_is_free() {
        let me = nix::unistd::getpid().as_raw();
        let none = TreeSockets::default();
        let dir = tempfile::tempdir().unwrap();
        let path = std::fs::canonicalize(dir.path()).unwrap().join("held");
        std::fs::write(&path, b"contents").unwrap();
        let held = std::fs::File::open(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let kind = classify(me, held.as_raw_fd(), &none).unwrap().kind;
        assert!(
            matches!(&kind, FdKind::Deleted { path: p, .. } if std::path::Path::new(p) == path),
            "{kind:?}"
        );
        std::fs::write(&path, b"another").unwrap();
        let e = classify(me, held.as_raw_fd(), &none)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("deleted file") && e.contains("another file"),
            "{e}"
        );
    }
}
