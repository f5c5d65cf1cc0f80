//! The guest channel's messages (`proto/agent.proto`, package `crlab.agent.v1`), as prost types.
//!
//! Each message travels in one frame of [`crate::frame`]; the host sends a [`Request`] and
//! waits for the [`Response`] with the same id.

#![allow(clippy::doc_markdown)]

include!(concat!(env!("OUT_DIR"), "/crlab.agent.v1.rs"));

/// The `oneof` of a [`Request`].
pub use request::Kind as RequestKind;
/// The `oneof` of a [`Response`].
pub use response::Kind as ResponseKind;
