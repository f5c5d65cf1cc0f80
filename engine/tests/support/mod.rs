//! Shared helpers of the engine's end-to-end tests: the workload protocol and its driver (both
//! the workloads crate's own files), the processes the tests own, the binaries they run, and
//! image summaries.

#![allow(dead_code)]

pub mod binaries;
pub mod crlab;
#[path = "../../../scenarios/workloads/src/driver.rs"]
pub mod driver;
pub mod images;
pub mod process;
#[path = "../../../scenarios/workloads/src/protocol.rs"]
pub mod protocol;
pub mod rewrite;
pub mod workload;
