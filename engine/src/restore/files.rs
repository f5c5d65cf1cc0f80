//! Recreating descriptors: every open file description of the tree is opened
//! once, in the root before the tree is forked, and parked at a high number;
//! forked processes inherit the parked descriptors, so descriptions shared
//! across `fork()` (and their offsets) stay shared, and a pipe between two
//! processes is one pipe. Each process then `dup3`s what it had to its
//! original numbers and closes the parked ones.

use super::error::StepContext;
use super::RestoreError;
use crate::image::schema::{file_entry, Fd, FileEntry, FileTable, PathFileType, Pipe};
use crate::sys::{set_pipe_capacity, Remote, Scratch};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::fd::AsFd;
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
    for (next, entry) in (above..).zip(table.files.iter()) {
        let opened = open_one(
            remote,
            pid,
            scratch,
            entry,
            &pipes,
            &mut pipe_ends,
            scratch_fds,
        )?;
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
