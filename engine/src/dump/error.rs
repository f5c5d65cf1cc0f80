//! Why a dump failed.

use crate::image::ImageError;
use crate::procfs::ProcError;
use crate::selinux::SelinuxError;
use crate::sys::SysError;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("process {pid} does not exist")]
    NoSuchProcess { pid: i32 },
    #[error("cannot dump pid {pid}: it is the engine itself or one of its ancestors")]
    SelfDump { pid: i32 },
    #[error("fd {fd} of process {pid} is {kind} ({target}), which crlab cannot dump yet; {hint}")]
    UnsupportedFd {
        pid: i32,
        fd: i32,
        kind: &'static str,
        target: String,
        hint: &'static str,
    },
    #[error("mapping {start:#x}-{end:#x} ({path}) of process {pid} is {kind}, which crlab cannot dump yet")]
    UnsupportedMapping {
        pid: i32,
        start: u64,
        end: u64,
        path: String,
        kind: &'static str,
    },
    #[error("process {pid} is a zombie; crlab cannot dump zombies yet")]
    Zombie { pid: i32 },
    #[error("transport socket to process {pid}: the process could not connect to the engine's socket; \
             with SELinux enforcing this is the `unix_stream_socket {{ connectto }}` check from the process's \
             context {context:?} to the socket's label {socket:?}{rule}")]
    TransportConnect {
        pid: i32,
        context: String,
        /// The listening socket's label, as the kernel holds it.
        socket: String,
        /// What policy would allow it, when the types differ.
        rule: String,
        #[source]
        source: SysError,
    },
    #[error(
        "{what} of process {pid} is {value}, which the image format cannot record; the kernel \
         reported something crlab does not expect, dump on a supported kernel"
    )]
    OutOfRange {
        pid: i32,
        what: &'static str,
        value: i64,
    },
    #[error("the dump was interrupted by signal {signal}; the processes were left as they were (every change undone, every thread detached) and no new dump was written")]
    Interrupted { signal: i32 },
    #[error("transport socket to process {pid}: {what}")]
    Transport { pid: i32, what: String },
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Selinux(#[from] SelinuxError),
}

/// `value` (a pid, a descriptor number, a flag the kernel reported about process `pid`) as
/// the unsigned number the image records.
pub fn image_u32(
    pid: i32,
    what: &'static str,
    value: impl Into<i64> + Copy,
) -> Result<u32, DumpError> {
    let value: i64 = value.into();
    u32::try_from(value).map_err(|_| DumpError::OutOfRange { pid, what, value })
}
