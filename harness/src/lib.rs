//! The scenario runner: turns scenario files into trials run in the VM lab and compares outcomes.
//!
//! Filled by the VM lab and conformance issues; it owns expectations and reports, not VMs.
//! It also holds the guest agent ([`agent`]), which runs inside the VM and does what the
//! host asks over the guest channel, in the messages of [`protocol`].

pub mod agent;
pub mod protocol;
