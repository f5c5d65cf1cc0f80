//! The error type of the raw system interface.

use nix::errno::Errno;

/// A system call made by the engine, or by a traced task on the engine's behalf, failed.
#[derive(Debug, thiserror::Error)]
pub enum SysError {
    /// A call the engine made itself: on task `tid`, or (0) on a descriptor of its own, such
    /// as its copy of a task's socket.
    #[error("{op}{} failed", on_task(.tid))]
    Call {
        op: &'static str,
        tid: i32,
        #[source]
        source: Errno,
    },
    /// A system call run inside the traced task failed.
    #[error("remote {name}() in task {tid} failed: {errno}")]
    Remote {
        name: &'static str,
        tid: i32,
        errno: Errno,
    },
    /// The task stopped for a reason the engine did not ask for.
    #[error("task {tid} stopped unexpectedly while {what}: {status}")]
    UnexpectedStop {
        tid: i32,
        what: &'static str,
        status: String,
    },
    /// The task is gone (killed from outside, or it exited).
    #[error("task {tid} exited while {what}: {status}")]
    Exited {
        tid: i32,
        what: &'static str,
        status: String,
    },
    /// Reading or writing a file under /proc.
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    /// No executable `syscall` instruction was found in the task.
    #[error("no executable syscall instruction found in task {tid}")]
    NoGadget { tid: i32 },
}

impl SysError {
    /// The errno of a failed call, when there is one.
    pub fn errno(&self) -> Option<Errno> {
        match self {
            SysError::Call { source, .. } => Some(*source),
            SysError::Remote { errno, .. } => Some(*errno),
            _ => None,
        }
    }
}

/// The error of the engine's own call `op` (no task), from its errno.
pub(super) fn call_err(op: &'static str) -> impl FnOnce(Errno) -> SysError {
    move |source| SysError::Call { op, tid: 0, source }
}

/// " on task TID", or nothing for a call on the engine's own descriptor (`tid` 0).
fn on_task(tid: &i32) -> String {
    if *tid == 0 {
        String::new()
    } else {
        format!(" on task {tid}")
    }
}
