//! The scenario runner: turns scenario files into trials run in the VM lab and compares outcomes.
//!
//! Filled by the VM lab and conformance issues; it owns expectations and reports, not VMs.
