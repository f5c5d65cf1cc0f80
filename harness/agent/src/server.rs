//! The agent's loop: read a request, handle it, answer with the same id; never stop on bad
//! input.

use std::{path::PathBuf, time::Duration};

use super::{
    audit::Source,
    channel::{Channel, ChannelError, Incoming},
    command,
    config::Config,
    error_chain, file, file_ops, identity, lifecycle, process,
    reaper::Reaper,
    request, unit,
};
use crlab_protocol::{Done, Request, RequestKind, Response, ResponseKind};

/// How often a persistent channel is looked at again while the host is away.
const RECONNECT_POLL: Duration = Duration::from_millis(200);

/// Why [`serve`] returned.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// The peer closed a non-persistent channel.
    PeerClosed,
    /// PowerOff with `--poweroff-exits`.
    PowerOff,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error("reading requests")]
    Read(#[source] std::io::Error),
    #[error(transparent)]
    Write(#[from] ChannelError),
}

/// What the agent does once a response is out.
#[derive(Debug)]
enum After {
    Serve,
    PowerOff,
    Reexec(PathBuf),
}

/// The agent's state across requests.
pub struct Agent {
    config: Config,
    reaper: Reaper,
}

impl Agent {
    /// Starts reaping the children a previous agent image handed over.
    pub fn new(config: Config) -> Self {
        let reaper = Reaper::default();
        for pid in &config.adopt {
            reaper.adopt_pid(*pid);
        }
        Self { config, reaper }
    }

    fn audit_source(&self) -> Source {
        Source::resolve(self.config.audit_log.as_deref())
    }

    /// Handles one request: checked first ([`request::check`], pure), then done. Never panics
    /// on what the request holds.
    fn handle(&self, request: Request) -> (Response, After) {
        let id = request.id;
        let reply = |kind: Option<ResponseKind>, error: String| Response { id, error, kind };
        let done = || Some(ResponseKind::Done(Done {}));
        let done_or = |r: Result<(), String>| match r {
            Ok(()) => (reply(done(), String::new()), After::Serve),
            Err(e) => (reply(None, e), After::Serve),
        };
        let kind = match request::check(request) {
            Ok(kind) => kind,
            Err(error) => {
                tracing::warn!(id, %error, "request failed");
                return (reply(None, error), After::Serve);
            }
        };
        let name = kind_name(&kind);
        let _span = tracing::info_span!("request", id, kind = name).entered();
        let (response, after) = match kind {
            RequestKind::Hello(_) => {
                let (hello, problems) = identity::hello(&self.audit_source(), &self.reaper);
                (
                    reply(Some(ResponseKind::Hello(hello)), problems.join("; ")),
                    After::Serve,
                )
            }
            RequestKind::Run(run) => match command::run(&run, &self.reaper) {
                Ok(result) => (
                    reply(Some(ResponseKind::Run(result)), String::new()),
                    After::Serve,
                ),
                Err(e) => (reply(None, error_chain(&e)), After::Serve),
            },
            RequestKind::WriteFile(w) => match file::write(&w) {
                Ok(()) => (reply(done(), String::new()), After::Serve),
                Err(e) => (reply(None, error_chain(&e)), After::Serve),
            },
            RequestKind::ReadFile(r) => match file::read(&r) {
                Ok(data) => (
                    reply(Some(ResponseKind::File(data)), String::new()),
                    After::Serve,
                ),
                Err(e) => (reply(None, error_chain(&e)), After::Serve),
            },
            RequestKind::Audit(a) => match self.audit_source().since(a.marker) {
                Ok(records) => (
                    reply(Some(ResponseKind::Audit(records)), String::new()),
                    After::Serve,
                ),
                Err(e) => (reply(None, error_chain(&e)), After::Serve),
            },
            RequestKind::Unit(u) => match unit::act(&u, &self.reaper) {
                Ok(result) => {
                    let error = unit::failure(&u, &result).unwrap_or_default();
                    (reply(Some(ResponseKind::Run(result)), error), After::Serve)
                }
                Err(e) => (reply(None, error_chain(&e)), After::Serve),
            },
            RequestKind::FileOps(f) => done_or(file_ops::apply(&f).map_err(|e| error_chain(&e))),
            RequestKind::KillUnder(k) => match process::kill_under(&k) {
                Ok(killed) => (
                    reply(Some(ResponseKind::Killed(killed)), String::new()),
                    After::Serve,
                ),
                Err(e) => (reply(None, error_chain(&e)), After::Serve),
            },
            RequestKind::WaitGone(w) => {
                done_or(process::wait_gone(&w).map_err(|e| error_chain(&e)))
            }
            RequestKind::WriteAt(w) => done_or(file::write_into(&w).map_err(|e| error_chain(&e))),
            RequestKind::WriteFd(w) => done_or(process::write_fd(&w).map_err(|e| error_chain(&e))),
            RequestKind::Signal(s) => {
                done_or(process::send_signal(&s).map_err(|e| error_chain(&e)))
            }
            RequestKind::PowerOff(_) => (reply(done(), String::new()), After::PowerOff),
            RequestKind::Reexec(r) => match lifecycle::check_reexec_target(&r.path) {
                Ok(path) => (reply(done(), String::new()), After::Reexec(path)),
                Err(e) => (reply(None, error_chain(&e)), After::Serve),
            },
        };
        if !response.error.is_empty() {
            tracing::warn!(error = %response.error, "request failed");
        }
        (response, after)
    }
}

fn kind_name(kind: &RequestKind) -> &'static str {
    match kind {
        RequestKind::Hello(_) => "hello",
        RequestKind::Run(_) => "run",
        RequestKind::WriteFile(_) => "write_file",
        RequestKind::ReadFile(_) => "read_file",
        RequestKind::Audit(_) => "audit",
        RequestKind::Unit(_) => "unit",
        RequestKind::FileOps(_) => "file_ops",
        RequestKind::KillUnder(_) => "kill_under",
        RequestKind::WaitGone(_) => "wait_gone",
        RequestKind::WriteAt(_) => "write_at",
        RequestKind::WriteFd(_) => "write_fd",
        RequestKind::Signal(_) => "signal",
        RequestKind::PowerOff(_) => "power_off",
        RequestKind::Reexec(_) => "reexec",
    }
}

/// Serves `channel` until the peer closes it (non-persistent channels) or a PowerOff with
/// `--poweroff-exits`; a persistent channel (the virtio port) outlives its host.
pub fn serve(agent: &Agent, channel: &mut Channel) -> Result<Ended, ServeError> {
    let mut host_away = false;
    loop {
        let (response, after) = match channel.receive() {
            Incoming::Request(request) => {
                if host_away {
                    tracing::info!("the host is back");
                    host_away = false;
                }
                agent.handle(*request)
            }
            Incoming::Bad(error) => {
                tracing::warn!(%error, "answering a frame that is not a request");
                (
                    Response {
                        id: 0,
                        error,
                        kind: None,
                    },
                    After::Serve,
                )
            }
            Incoming::Closed(cause) => {
                if !channel.persistent() {
                    return match cause {
                        None => Ok(Ended::PeerClosed),
                        Some(e) => Err(ServeError::Read(e)),
                    };
                }
                if !host_away {
                    tracing::info!(cause = ?cause, "the host is away; waiting for it");
                    host_away = true;
                }
                std::thread::sleep(RECONNECT_POLL);
                continue;
            }
        };
        if let Err(e) = channel.send(&response) {
            if !channel.persistent() {
                return Err(e.into());
            }
            tracing::warn!(error = %error_chain(&e), "the response was lost");
        }
        match after {
            After::Serve => {}
            After::PowerOff if agent.config.poweroff_exits => {
                tracing::info!("PowerOff: ending the agent (--poweroff-exits)");
                return Ok(Ended::PowerOff);
            }
            After::PowerOff => {
                if let Err(e) = lifecycle::power_off() {
                    tracing::error!(error = %error_chain(&e), "could not power off");
                }
            }
            After::Reexec(path) => {
                let e = lifecycle::reexec(&path, channel, &agent.config, &agent.reaper);
                tracing::error!(error = %error_chain(&e), "re-executing failed; this agent goes on serving");
            }
        }
    }
}
