//! crlab: a ptrace-driven checkpoint/restore engine for Linux processes that gets SELinux right.

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!("crlab supports x86_64 Linux only");

pub mod image;
