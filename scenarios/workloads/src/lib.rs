//! Shared plumbing of the workload programs: the protocol with their driver, the ways to wait,
//! register holding, and the system interface they read their own state through.
//!
//! Each program in `src/bin` sets up some state, calls [`runtime::Workload::wait`], then checks
//! every piece of that state and calls [`runtime::Workload::finish`].

#[cfg(not(all(target_os = "linux", target_arch = "x86_64")))]
compile_error!("the crlab workloads run on x86_64 Linux only");

pub mod driver;
pub mod held;
pub mod protocol;
pub mod regs;
pub mod runtime;
pub mod sys;
pub mod thread_state;
