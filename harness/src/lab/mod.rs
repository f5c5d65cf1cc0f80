//! The host side of the lab: the Debian image recipe, a booted (or warm-started)
//! VM with its agent, and the agent client.

pub mod client;
pub mod recipe;
pub mod session;

pub use session::{Lab, LabOptions, Timings};
