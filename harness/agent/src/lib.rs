//! The guest agent: runs as root in the guest (in `unconfined_t`), serves the guest channel,
//! and does what the host asks: run commands in given SELinux contexts, move files, prepare a
//! trial's directories and kill what runs from them in its own process ([`file_ops`],
//! [`process`]), report audit records, act on systemd units, power off, re-execute itself.
//!
//! The raw system interfaces sit in narrow modules ([`selinux`], [`capture`], [`channel`]);
//! [`server`] is the loop, one module per request kind below it; [`request`] is the pure
//! half of handling one (decode and check, nothing touched), which the fuzz target drives.
//!
//! This crate is the guest side of the lab's seam: it depends on `crlab-protocol` (the frame
//! codec and the messages) and general crates, never on the host side (`crlab-vm`,
//! `crlab-harness`). Its systemd unit is `guest/crlab-agent.service`, which the host bakes
//! into the lab image.

pub mod audit;
pub mod capture;
pub mod channel;
pub mod command;
pub mod config;
pub mod file;
pub mod file_ops;
pub mod identity;
pub mod lifecycle;
pub mod process;
pub mod reaper;
pub mod request;
pub mod selinux;
pub mod server;
pub mod unit;

pub use channel::Channel;
pub use config::{ChannelSpec, Config, Invocation};
pub use server::{serve, Agent, Ended};

/// An error and its sources, as one line: "what failed: why: deeper why".
pub fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(e) = source {
        let part = e.to_string();
        if !text.ends_with(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = e.source();
    }
    text
}
