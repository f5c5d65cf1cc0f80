//! Why a restore failed.

use crate::image::ImageError;
use crate::sys::SysError;

#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("pid {pid} is in use by {holder}; a restore needs the original pid free (is the original still running? dump without --leave-running, or stop it)")]
    PidTaken { pid: i32, holder: String },
    #[error("pid {pid} is still held by a zombie after waiting {waited:?}: its parent {parent} has not reaped it; make the parent wait for its child (or end the parent), or give the restore longer with --pid-wait")]
    PidHeldByZombie {
        pid: i32,
        parent: i32,
        waited: std::time::Duration,
    },
    #[error("the restore was interrupted by signal {signal} and undone: every task it created was killed")]
    Interrupted { signal: i32 },
    #[error(
        "{}: the {what} {value:?} is not a path a dump records ({reason}): the image is damaged \
         or was not written by crlab",
        .file.display()
    )]
    BadPath {
        /// The image file the path was read from.
        file: std::path::PathBuf,
        what: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error(
        "process {pid} was dumped stopped and must be restored so: {what}; it is left to the \
         kernel (continue it with kill -CONT {pid}, or end it)"
    )]
    Stop {
        pid: i32,
        what: String,
        #[source]
        source: Option<nix::errno::Errno>,
    },
    #[error("the images are inconsistent: {0}")]
    Inconsistent(String),
    #[error(
        "watch {wd} of inotify instance {file} of process {pid} cannot be added again: {path} \
         {why}"
    )]
    InotifyWatch {
        pid: i32,
        file: u32,
        wd: i32,
        path: String,
        why: String,
    },
    #[error("the image has a {name} mapping but this kernel provides none; restore on a kernel like the one that dumped it")]
    NoVdso { name: String },
    #[error("the image's {name} is {image} bytes but this kernel's is {here}; restore on the same kernel that dumped it")]
    VdsoSize { name: String, image: u64, here: u64 },
    #[error("{what} ({path}) of process {pid}")]
    File {
        pid: i32,
        what: String,
        path: String,
        #[source]
        source: SysError,
    },
    #[error("restoring {what} of process {pid}")]
    Step {
        pid: i32,
        what: &'static str,
        #[source]
        source: SysError,
    },
    #[error("giving {what} of process {pid} its SELinux label")]
    Label {
        pid: i32,
        what: String,
        #[source]
        source: crate::selinux::SelinuxError,
    },
    #[error(
        "process {pid} was in cgroup {path} of {hierarchy}, which is not mounted here (no such \
         mount in /proc/self/mountinfo shows it); mount that hierarchy, or restore on a host \
         with the same cgroup layout"
    )]
    CgroupNotMounted {
        pid: i32,
        hierarchy: String,
        path: String,
    },
    #[error("process {pid} cannot join cgroup {path} of {hierarchy} ({}): {what}", .dir.display())]
    Cgroup {
        pid: i32,
        hierarchy: String,
        path: String,
        dir: std::path::PathBuf,
        what: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Selinux(#[from] super::context::SelinuxRefusal),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Sys(#[from] SysError),
}

/// An id of the images (a pid, a tid, a process group) as the kernel's `pid_t`: an id above
/// `i32::MAX`, which only a damaged or hostile image holds, is an error, never a wrapped id.
pub fn task_id(id: u32) -> Result<i32, RestoreError> {
    i32::try_from(id).map_err(|_| {
        RestoreError::Inconsistent(format!("the images name task id {id}, which is not a pid"))
    })
}

/// Adds "what was being restored" to a system error.
pub trait StepContext<T> {
    fn step(self, pid: i32, what: &'static str) -> Result<T, RestoreError>;
}

impl<T> StepContext<T> for Result<T, SysError> {
    fn step(self, pid: i32, what: &'static str) -> Result<T, RestoreError> {
        self.map_err(|source| RestoreError::Step { pid, what, source })
    }
}

/// The failure a failpoint injects into restore step `what` of process `pid`, as the step's
/// own error (test builds only, see `crate::failpoint`).
#[cfg(feature = "failpoints")]
pub fn injected(pid: i32, what: &'static str) -> impl FnOnce(std::io::Error) -> RestoreError {
    move |source| RestoreError::Step {
        pid,
        what,
        source: SysError::Io {
            what: format!("the system call restoring {what}"),
            source,
        },
    }
}
