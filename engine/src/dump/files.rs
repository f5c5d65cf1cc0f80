//! Descriptors of a dumped process: what each one is, and the open file
//! descriptions behind them (shared ones recognised with `kcmp`).

use super::error::image_u32;
use super::sockets::{read_unix, socket_ino, TreeSockets};
use super::DumpError;
use crate::image::schema::{
    file_entry, Fd, FileEntry, PathFile, PathFileType, Pipe, PipeEnd, UnixSocket,
};
use crate::procfs::{read_link, FdInfo};
use crate::sys::{
    file_owner, file_signal, peek_pipe, pipe_capacity, same_file, OWNER_PGRP, OWNER_TID,
};
use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};

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
    /// An `AF_UNIX` socket that [`super::sockets::survey`] found restorable.
    UnixSocket {
        ino: u64,
    },
}

/// One descriptor of a process: its number, kind and fdinfo.
#[derive(Debug, Clone)]
pub struct FdDesc {
    pub fd: i32,
    pub kind: FdKind,
    pub info: FdInfo,
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
    let kind = if let Some(rest) = target.strip_prefix("pipe:[") {
        let ino = rest.trim_end_matches(']').parse().unwrap_or(0);
        FdKind::Pipe { ino }
    } else if let Some(ino) = socket_ino(&target).filter(|ino| sockets.contains(*ino)) {
        FdKind::UnixSocket { ino }
    } else if target.starts_with("socket:") {
        return Err(unsupported(
            "a socket",
            "close it before the dump or run the process without it",
        ));
    } else if target.starts_with("anon_inode:") {
        return Err(unsupported(
            "an anonymous-inode descriptor (eventfd, epoll, signalfd, timerfd, ...)",
            "only regular files, directories, pipes and /dev/null-like devices are supported",
        ));
    } else if target.starts_with("/memfd:") {
        return Err(unsupported(
            "a memfd",
            "its contents and seals are not saved yet; close it before the dump",
        ));
    } else if target.ends_with(" (deleted)") {
        return Err(if std::fs::metadata(&link).is_ok_and(|m| m.is_dir()) {
            unsupported(
                "a deleted directory",
                "keep the directory until the dump is done, or close it",
            )
        } else {
            unsupported(
                "a deleted file",
                "keep the file on disk until the dump is done",
            )
        });
    } else if target.starts_with('/') {
        let meta = std::fs::metadata(&link).map_err(|source| crate::procfs::ProcError::Io {
            path: link.clone(),
            source,
        })?;
        let ft = meta.file_type();
        let ftype = if ft.is_file() {
            PathFileType::Regular
        } else if ft.is_dir() {
            PathFileType::Directory
        } else if ft.is_char_device() && STATELESS_DEVICES.contains(&target.as_str()) {
            PathFileType::CharDevice
        } else if ft.is_char_device()
            && (target.starts_with("/dev/pts/") || target.starts_with("/dev/tty"))
        {
            return Err(unsupported(
                "a terminal",
                "start the process with its standard streams redirected to files or /dev/null",
            ));
        } else if ft.is_fifo() {
            return Err(unsupported("a named pipe (FIFO)", "use an anonymous pipe"));
        } else {
            return Err(unsupported(
                "a device or special file",
                "only /dev/null, /dev/zero, /dev/full, /dev/random and /dev/urandom are supported",
            ));
        };
        FdKind::Path {
            path: target.clone(),
            ftype,
        }
    } else {
        return Err(unsupported(
            "an unknown kind of descriptor",
            "see `crlab check`",
        ));
    };
    let info = FdInfo::read(pid, fd)?;
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
                        FdKind::UnixSocket { ino } => {
                            let s: UnixSocket = read_unix(pid, desc.fd, *ino, sockets, &fd)?;
                            file_entry::Kind::UnixSocket(s)
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
        Ok(table)
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
            FdKind::UnixSocket { ino } => format!("socket:[{ino}]"),
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
}
