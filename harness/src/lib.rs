//! The scenario runner: turns scenario files into trials run in the VM lab, observes them,
//! and judges what it observed against what each scenario expects.
//!
//! It owns expectations and reports, not VMs (those are `crlab-vm`'s):
//! - [`scenario`] reads and validates the catalog;
//! - [`trial`] runs one scenario with one backend: [`trial::drive`] takes the lab steps and
//!   records a typed [`trial::Observation`], [`trial::verdict`] judges it (a pure function);
//! - [`audit`] parses and normalises audit records, [`context`] reads context strings;
//! - [`report`] writes the table, JSON and JUnit; [`diff`] compares two runs' reports
//!   (what a policy change does to checkpoint/restore); [`suite`] is the libtest-mimic program that
//!   runs the catalog (the `scenarios` test target is its `main`), or one [`shard`] of it;
//!   [`merge`] combines the shards' reports into one;
//! - [`lab`] is the host side of a lab VM: the image recipe, and the agent's steps (its
//!   readiness, its client) around `crlab_vm::boot`;
//! - [`bench`] times crlab against the image's criu on the same workloads in one lab VM.
//!
//! The guest agent is its own crate (`crlab-agent`), which the lab talks to in the messages
//! of `crlab-protocol`.

pub mod audit;
pub mod bench;
pub mod context;
pub mod diff;
pub mod lab;
pub mod merge;
pub mod report;
pub mod scenario;
pub mod shard;
pub mod suite;
pub mod trial;
