//! The scenario runner: turns scenario files into trials run in the VM lab and compares outcomes.
//!
//! It owns expectations and reports, not VMs (those are `crlab-vm`'s):
//! - [`scenario`] reads the catalog, [`runner`] runs one scenario in the lab and
//!   compares, [`audit`] parses and normalises audit records, [`report`] writes
//!   the table, JSON and JUnit;
//! - [`lab`] is the host side of a lab VM (image recipe, boot or warm start,
//!   agent client);
//! - [`agent`] is the guest agent, which runs inside the VM and does what the
//!   host asks over the guest channel, in the messages of [`protocol`].

pub mod agent;
pub mod audit;
pub mod lab;
pub mod protocol;
pub mod report;
pub mod runner;
pub mod scenario;
