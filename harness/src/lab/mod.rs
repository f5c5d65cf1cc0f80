//! The host side of the lab: the Debian image recipe ([`recipe`]), the agent's steps around
//! `crlab_vm::boot` ([`session`]: its readiness, then the runner's requests), and the agent
//! client ([`client`]: one request, one response, with a deadline).

pub mod client;
pub mod host;
pub mod recipe;
pub mod session;

pub use session::{Lab, LabOptions, Timings};
