//! The raw system interface: ptrace, remote system calls, `clone3`, `kcmp`.
//!
//! Everything above this module works in terms of [`Tracee`] and [`Remote`];
//! raw `libc` calls live here and nowhere else in the engine.

mod clone3;
mod error;
mod kcmp;
mod pipe;
mod ptrace;
mod remote;

pub use clone3::spawn_stopped_with_pid;
pub use error::SysError;
pub use kcmp::same_file;
pub use pipe::{peek_pipe, pipe_capacity};
pub use ptrace::{Regs, Tracee};
pub use remote::{find_syscall_gadget, resume_regs, Remote, Scratch};

/// Size of a page on x86_64.
pub const PAGE_SIZE: u64 = 4096;
