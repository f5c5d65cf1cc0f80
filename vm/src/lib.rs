//! The VM lab: builds and caches SELinux-enforcing guest images and runs them under QEMU.
//!
//! Filled by the VM lab issue; this crate owns everything about VMs and nothing about scenarios.
