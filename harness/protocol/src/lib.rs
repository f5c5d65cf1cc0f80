//! The guest channel between the lab's host and the guest agent: [`frame`] (length-prefixed
//! frames over a byte stream, bounded before allocation) and [`messages`] (the agent's
//! requests and responses, `proto/agent.proto`, as prost types).
//!
//! Both ends use it: the host side (`crlab-vm` for the framing only, `crlab-harness` for the
//! messages) and the guest agent (`crlab-agent`). It depends on nothing of either side.

pub mod frame;
pub mod messages;

pub use messages::*;
