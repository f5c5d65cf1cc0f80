//! Readers and parsers for what `/proc` tells about a task.
//!
//! Parsers take text and are unit-tested; readers add the path and the error.

mod cgroup;
mod fdinfo;
mod maps;
mod pagemap;
mod smaps;
mod stat;
mod status;
mod timers;

pub use cgroup::{mount_points_of, CgroupLine, CgroupMount};
pub use fdinfo::{EpollTfd, EventFdInfo, FdInfo, InotifyWatch};
pub use maps::MapEntry;
pub use pagemap::{DataRun, PagemapReader};
pub use smaps::VmFlags;
pub use stat::Stat;
pub use status::{Caps, Status};
pub use timers::{PosixTimer, SIGEV_THREAD_ID};

use std::path::Path;

/// Failure to read or understand a file under /proc.
#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("reading {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot parse {path}: {what}")]
    Parse { path: String, what: String },
}

pub(crate) fn read_string(path: impl AsRef<Path>) -> Result<String, ProcError> {
    let path = path.as_ref();
    std::fs::read_to_string(path).map_err(|source| ProcError::Io {
        path: path.display().to_string(),
        source,
    })
}

pub(crate) fn read_link(path: impl AsRef<Path>) -> Result<String, ProcError> {
    let path = path.as_ref();
    std::fs::read_link(path)
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|source| ProcError::Io {
            path: path.display().to_string(),
            source,
        })
}

/// The thread ids of a process, sorted, leader first.
pub fn threads(pid: i32) -> Result<Vec<i32>, ProcError> {
    let path = format!("/proc/{pid}/task");
    let rd = std::fs::read_dir(&path).map_err(|source| ProcError::Io {
        path: path.clone(),
        source,
    })?;
    let mut tids: Vec<i32> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort_unstable_by_key(|&t| (t != pid, t));
    Ok(tids)
}

/// The direct children of every thread of a process.
pub fn children(pid: i32) -> Result<Vec<i32>, ProcError> {
    let mut out = Vec::new();
    for tid in threads(pid)? {
        let text = read_string(format!("/proc/{pid}/task/{tid}/children"))?;
        out.extend(
            text.split_whitespace()
                .filter_map(|s| s.parse::<i32>().ok()),
        );
    }
    out.sort_unstable();
    Ok(out)
}

/// Descriptor numbers open in a process, sorted.
pub fn fds(pid: i32) -> Result<Vec<i32>, ProcError> {
    let path = format!("/proc/{pid}/fd");
    let rd = std::fs::read_dir(&path).map_err(|source| ProcError::Io {
        path: path.clone(),
        source,
    })?;
    let mut fds: Vec<i32> = rd
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    fds.sort_unstable();
    Ok(fds)
}

/// `/proc/PID/auxv` as u64 words.
pub fn auxv(pid: i32) -> Result<Vec<u64>, ProcError> {
    let path = format!("/proc/{pid}/auxv");
    let bytes = std::fs::read(&path).map_err(|source| ProcError::Io { path, source })?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            u64::from_ne_bytes(w)
        })
        .collect())
}

/// The SELinux context in `/proc/PID/task/TID/attr/NAME` (`current`, `sockcreate`), without
/// its trailing NUL or newline; empty when SELinux is off or it is unset.
pub fn selinux_attr(pid: i32, tid: i32, name: &str) -> String {
    let path = format!("/proc/{pid}/task/{tid}/attr/{name}");
    match std::fs::read(path) {
        Ok(b) => crate::selinux::context_from_attr(&b),
        Err(_) => String::new(),
    }
}

/// For a thread asleep in `restart_syscall` (`/proc/PID/task/TID/syscall` shows its number):
/// `Some` of its kernel stack (`/proc/PID/task/TID/stack`, root only), `Some(None)` when that
/// cannot be read. `None` for any other thread.
pub fn restart_stack(pid: i32, tid: i32) -> Option<Option<String>> {
    let syscall = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/syscall")).ok()?;
    let nr = syscall.split_whitespace().next()?.parse::<i64>().ok()?;
    if nr != libc::SYS_restart_syscall {
        return None;
    }
    Some(std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stack")).ok())
}
