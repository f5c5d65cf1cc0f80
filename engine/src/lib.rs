//! crlab: a ptrace-driven checkpoint/restore engine for Linux processes that gets SELinux right.
//!
//! - [`dump`] seizes a process tree and writes its images; [`restore`] brings
//!   it back with its original pids and SELinux contexts; [`check`] probes what
//!   both need, and whether SELinux lets a dump be restored. The three are
//!   siblings: none imports another.
//! - [`image`] owns the on-disk format; [`selinux`] is the engine's one vocabulary
//!   of SELinux; `procfs` reads `/proc`; `sys` is the raw system interface
//!   (ptrace, remote system calls), the only place with raw `libc` calls.
//! - [`interrupt`] records the signals that ask the engine to stop, which dump and restore
//!   look at between their steps.
//! - [`failpoint`] injects a fault at a chosen step, in test builds only (the `failpoints`
//!   feature); a normal build has none.
//! - The library never prints; the `crlab` binary does.

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!("crlab supports x86_64 Linux only");

#[macro_use]
pub mod failpoint;

pub mod check;
pub mod dump;
pub mod image;
pub mod interrupt;
pub(crate) mod procfs;
pub mod restore;
pub mod selinux;
pub(crate) mod sys;
