//! The VM lab: builds and caches SELinux-enforcing guest images and runs them under QEMU.
//!
//! This crate owns everything about VMs (images, the cache, QEMU's command
//! line, acceleration, the serial console, the guest channel's framing) and
//! nothing about scenarios: what runs inside is the harness's business.

pub mod accel;
pub mod cache;
pub mod channel;
pub mod console;
pub mod image;
pub mod machine;
pub mod monitor;
pub mod qemu;
pub mod warm;
