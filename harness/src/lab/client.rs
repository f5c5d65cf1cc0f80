//! Talking to the guest agent: one request, one response, with a deadline, over a [`Link`]
//! (a lab VM's channel, or a local agent's in the in-place mode).

use crlab_protocol::{Request, RequestKind, Response, ResponseKind};
use crlab_vm::local::LocalAgent;
use crlab_vm::machine::{Machine, VmError};
use prost::Message;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error("the agent's reply to {what} does not decode: {source}")]
    Decode {
        what: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error("the agent answered {what} with id {got}, expected {want}")]
    WrongId { what: String, got: u64, want: u64 },
    #[error("the agent could not {what}: {error}")]
    Refused { what: String, error: String },
    #[error("the agent answered {what} with an unexpected reply")]
    Unexpected { what: String },
}

/// Where frames go to and come from: the agent's channel, whatever carries it.
pub trait Link {
    fn send(&mut self, what: &str, frame: &[u8]) -> Result<(), VmError>;
    fn recv(&mut self, what: &str, timeout: Duration) -> Result<Vec<u8>, VmError>;
}

impl Link for Machine {
    fn send(&mut self, what: &str, frame: &[u8]) -> Result<(), VmError> {
        Machine::send(self, what, frame)
    }
    fn recv(&mut self, what: &str, timeout: Duration) -> Result<Vec<u8>, VmError> {
        Machine::recv(self, what, timeout)
    }
}

impl Link for LocalAgent {
    fn send(&mut self, what: &str, frame: &[u8]) -> Result<(), VmError> {
        LocalAgent::send(self, what, frame)
    }
    fn recv(&mut self, what: &str, timeout: Duration) -> Result<Vec<u8>, VmError> {
        LocalAgent::recv(self, what, timeout)
    }
}

/// Request ids and the exchange.
#[derive(Debug, Default)]
pub struct Client {
    next_id: u64,
}

impl Client {
    /// Sends `kind`, returns the reply's content; an agent-side error is an `Err`.
    pub fn call(
        &mut self,
        machine: &mut dyn Link,
        what: &str,
        kind: RequestKind,
        timeout: Duration,
    ) -> Result<Option<ResponseKind>, AgentError> {
        self.next_id += 1;
        let id = self.next_id;
        let req = Request {
            id,
            kind: Some(kind),
        };
        machine.send(what, &req.encode_to_vec())?;
        let start = std::time::Instant::now();
        let resp = loop {
            let raw = machine.recv(what, timeout.saturating_sub(start.elapsed()))?;
            let resp = Response::decode(raw.as_slice()).map_err(|source| AgentError::Decode {
                what: what.into(),
                source,
            })?;
            // A late answer to an earlier request that timed out: skip it.
            if resp.id != 0 && resp.id < id {
                tracing::debug!(stale = resp.id, want = id, "skipping a late reply");
                continue;
            }
            break resp;
        };
        if resp.id != id {
            return Err(AgentError::WrongId {
                what: what.into(),
                got: resp.id,
                want: id,
            });
        }
        if !resp.error.is_empty() {
            return Err(AgentError::Refused {
                what: what.into(),
                error: resp.error,
            });
        }
        Ok(resp.kind)
    }
}
