//! Shared helpers of the engine's end-to-end tests: the workload protocol (shared with the
//! workloads crate), the processes the tests own, the binaries they run, and image summaries.

#![allow(dead_code)]

pub mod binaries;
pub mod crlab;
pub mod images;
pub mod process;
#[path = "../../../scenarios/workloads/src/protocol.rs"]
pub mod protocol;
pub mod workload;
