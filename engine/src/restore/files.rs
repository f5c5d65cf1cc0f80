//! Recreating a process's descriptors inside it: files reopened by path,
//! pipes recreated with their buffered data, shared open file descriptions
//! kept shared, each at its original number with its close-on-exec flag.

use super::error::StepContext;
use super::RestoreError;
use crate::image::schema::{file_entry, Fd, FileEntry, FileTable, PathFileType, Pipe};
use crate::restore::lsm::put_cstr;
use crate::sys::{Remote, Scratch};
use std::collections::HashMap;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

/// Pipes created so far: pipe id -> (read end, write end) in the task.
#[derive(Default)]
pub struct PipeEnds {
    ends: HashMap<u64, (u64, u64)>,
}

/// Recreates `fds` in the task.
pub fn restore_fds(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    fds: &[Fd],
    table: &FileTable,
) -> Result<(), RestoreError> {
    let files: HashMap<u32, &FileEntry> = table.files.iter().map(|f| (f.id, f)).collect();
    let pipes: HashMap<u64, &Pipe> = table.pipes.iter().map(|p| (p.id, p)).collect();
    let high = fds.iter().map(|f| f.fd as u64).max().unwrap_or(0) + 1;
    // Every open file description once, parked above every target number.
    let mut parked: HashMap<u32, u64> = HashMap::new();
    let mut pipe_ends = PipeEnds::default();
    let mut extra: Vec<u64> = Vec::new();
    for fd in fds {
        if parked.contains_key(&fd.file_id) {
            continue;
        }
        let entry = files.get(&fd.file_id).ok_or_else(|| {
            RestoreError::Inconsistent(format!(
                "fd {} of process {pid} names file {} which files.img lacks",
                fd.fd, fd.file_id
            ))
        })?;
        let opened = match &entry.kind {
            Some(file_entry::Kind::Path(p)) => {
                let flags = entry.flags
                    & !((libc::O_CREAT | libc::O_TRUNC | libc::O_EXCL | libc::O_CLOEXEC) as u32);
                let path = put_cstr(remote, scratch, 0, &p.path).step(pid, "a file path")?;
                let t = remote
                    .syscall("open", libc::SYS_open, &[path, flags as u64, 0])
                    .map_err(|source| RestoreError::File {
                        pid,
                        what: format!("reopening fd {}", fd.fd),
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
                            what: format!("seeking fd {} to {}", fd.fd, p.pos),
                            path: p.path.clone(),
                            source,
                        })?;
                }
                t
            }
            Some(file_entry::Kind::Pipe(end)) => {
                let pipe = pipes.get(&end.pipe_id).ok_or_else(|| {
                    RestoreError::Inconsistent(format!(
                        "file {} names pipe {} which files.img lacks",
                        entry.id, end.pipe_id
                    ))
                })?;
                let (r, w) = pipe_ends.get_or_create(remote, pid, scratch, pipe, high)?;
                let t = if entry.flags & libc::O_ACCMODE as u32 == libc::O_WRONLY as u32 {
                    w
                } else {
                    r
                };
                // Each end is its own open file description: take a fresh one per entry.
                let own = remote
                    .syscall(
                        "open(pipe end)",
                        libc::SYS_open,
                        &[
                            put_cstr(remote, scratch, 0, &format!("/proc/self/fd/{t}"))
                                .step(pid, "a pipe")?,
                            ((entry.flags & !(libc::O_CLOEXEC as u32)) | libc::O_CLOEXEC as u32)
                                as u64,
                            0,
                        ],
                    )
                    .step(pid, "a pipe end")?;
                own
            }
            None => {
                return Err(RestoreError::Inconsistent(format!(
                    "file {} has no kind",
                    entry.id
                )))
            }
        };
        let h = remote
            .syscall(
                "fcntl(F_DUPFD)",
                libc::SYS_fcntl,
                &[
                    opened,
                    libc::F_DUPFD as u64,
                    high + 2 * fds.len() as u64 + 64,
                ],
            )
            .step(pid, "descriptors")?;
        remote
            .syscall("close", libc::SYS_close, &[opened])
            .step(pid, "descriptors")?;
        parked.insert(fd.file_id, h);
    }
    for (r, w) in pipe_ends.ends.values() {
        extra.push(*r);
        extra.push(*w);
    }
    for fd in fds {
        let h = parked[&fd.file_id];
        let flags = if fd.cloexec {
            libc::O_CLOEXEC as u64
        } else {
            0
        };
        remote
            .syscall("dup3", libc::SYS_dup3, &[h, fd.fd as u64, flags])
            .step(pid, "descriptors")?;
    }
    for h in parked.values().chain(extra.iter()) {
        remote
            .syscall("close", libc::SYS_close, &[*h])
            .step(pid, "descriptors")?;
    }
    Ok(())
}

impl PipeEnds {
    fn get_or_create(
        &mut self,
        remote: &mut Remote,
        pid: i32,
        scratch: Scratch,
        pipe: &Pipe,
        high: u64,
    ) -> Result<(u64, u64), RestoreError> {
        if let Some(e) = self.ends.get(&pipe.id) {
            return Ok(*e);
        }
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
        let mut ends = [0u64; 2];
        for (i, fd) in [r, w].into_iter().enumerate() {
            ends[i] = remote
                .syscall(
                    "fcntl(F_DUPFD_CLOEXEC)",
                    libc::SYS_fcntl,
                    &[fd, libc::F_DUPFD_CLOEXEC as u64, high + 32],
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
            // SAFETY: F_SETPIPE_SZ takes an integer; the descriptor is open.
            let _ = unsafe {
                libc::fcntl(
                    f.as_raw_fd(),
                    libc::F_SETPIPE_SZ,
                    pipe.capacity as libc::c_int,
                )
            };
        }
        f.write_all(&pipe.data).map_err(|e| {
            RestoreError::Inconsistent(format!(
                "refilling pipe {} with {} bytes: {e}",
                pipe.id,
                pipe.data.len()
            ))
        })?;
        let e = (ends[0], ends[1]);
        self.ends.insert(pipe.id, e);
        Ok(e)
    }
}
