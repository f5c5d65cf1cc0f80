//! The VM lab: builds and caches SELinux-enforcing guest images and runs them under QEMU.
//!
//! This crate owns everything about VMs (images, the cache, QEMU's command
//! line, acceleration, the serial console, warm starts, and [`boot`], the one
//! way a lab VM comes up; [`local`], the agent as a child process when the lab is this
//! machine) and nothing about scenarios: what runs inside is the
//! harness's business. Of the guest channel it knows the framing only
//! (`crlab_protocol::frame`); the messages and what "ready" means are the
//! caller's (see [`boot`]).

pub mod accel;
pub mod boot;
pub mod cache;
pub mod console;
pub mod image;
pub mod local;
pub mod machine;
pub mod monitor;
pub mod policy;
pub mod qemu;
pub mod warm;
