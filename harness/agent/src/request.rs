//! The pure half of handling a request: a frame decoded as a `Request`, then checked, with no
//! effect on the machine (no file touched, no process started, no system call), so that it
//! can be tested and fuzzed on its own. [`crate::server`] acts only on what passed.
//!
//! What is checked here is what each handler checked first, before acting, with the same
//! errors: an empty argv, an environment entry that is not `KEY=VALUE` or a session keyring
//! asked without a context to label it with (`RunCommand`), an
//! empty path (`WriteFile`, `ReadFile`), an empty unit or action or one starting with `-`
//! (`UnitAction`), an operation without its kind or path or a bad type name (`FileOps`), a
//! directory that is not absolute or is `/` (`KillUnder`), an empty path (`WriteAt`). What needs the machine to be checked (a working directory, a context the
//! kernel refuses, a re-exec target) is checked by the handler that acts.

use crlab_protocol::{Request, RequestKind};
use prost::Message;

use super::{command, error_chain, file, file_ops, process, unit};

/// Decodes one frame as a request; `Err` is the error text the agent answers with.
pub fn decode(frame: &[u8]) -> Result<Request, String> {
    Request::decode(frame).map_err(|e| {
        format!(
            "a frame of {} bytes does not decode as a crlab.agent.v1.Request: {e}",
            frame.len()
        )
    })
}

/// Checks a request before anything is done for it; returns what it asks, or the error text
/// the agent answers with.
pub fn check(request: Request) -> Result<RequestKind, String> {
    let Some(kind) = request.kind else {
        return Err(
            "the request carries no kind (a request type this agent does not know?)".to_owned(),
        );
    };
    let checked = match &kind {
        RequestKind::Run(run) => command::check(run).map_err(|e| error_chain(&e)),
        RequestKind::WriteFile(w) => file::check_path(&w.path)
            .map(drop)
            .map_err(|e| error_chain(&e)),
        RequestKind::ReadFile(r) => file::check_path(&r.path)
            .map(drop)
            .map_err(|e| error_chain(&e)),
        RequestKind::Unit(u) => unit::check(u).map_err(|e| error_chain(&e)),
        RequestKind::FileOps(f) => file_ops::check(f).map_err(|e| error_chain(&e)),
        RequestKind::KillUnder(k) => process::check_dir(&k.dir)
            .map(drop)
            .map_err(|e| error_chain(&e)),
        RequestKind::WriteAt(w) => file::check_path(&w.path)
            .map(drop)
            .map_err(|e| error_chain(&e)),
        RequestKind::WriteFd(w) if w.fd < 0 => Err(format!("fd {} is not a descriptor", w.fd)),
        RequestKind::WriteFd(w) => one_process(w.pid),
        RequestKind::Signal(s) => one_process(s.pid),
        RequestKind::WaitGone(_) => Ok(()),
        RequestKind::Hello(_)
        | RequestKind::Audit(_)
        | RequestKind::PowerOff(_)
        | RequestKind::Reexec(_) => Ok(()),
    };
    checked.map(|()| kind)
}

/// A pid that names one process other than init and the agent: `kill` takes 0 for the
/// caller's whole process group, and the agent must not be made to stop itself.
fn one_process(pid: u32) -> Result<(), String> {
    if pid <= 1 || pid == std::process::id() {
        return Err(format!(
            "pid {pid} is not a process the agent acts on (0 is its own group, 1 is init)"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crlab_protocol::{ReadFile, RunCommand, UnitAction, WriteFile};

    use super::*;

    fn checked(kind: RequestKind) -> Result<RequestKind, String> {
        check(Request {
            id: 7,
            kind: Some(kind),
        })
    }

    #[test]
    fn what_each_handler_refuses_first_is_refused_here() {
        let run = |argv: &[&str], env: &[&str]| {
            RequestKind::Run(RunCommand {
                argv: argv.iter().map(|a| (*a).to_owned()).collect(),
                env: env.iter().map(|e| (*e).to_owned()).collect(),
                ..RunCommand::default()
            })
        };
        assert_eq!(
            checked(run(&[], &[])).unwrap_err(),
            "the command has an empty argv"
        );
        assert_eq!(
            checked(run(&["true"], &["=x"])).unwrap_err(),
            "environment entry \"=x\" is not KEY=VALUE"
        );
        assert!(checked(run(&["true"], &["A=b=c"])).is_ok());
        let keyring = RequestKind::Run(RunCommand {
            argv: vec!["true".into()],
            session_keyring: true,
            ..RunCommand::default()
        });
        assert!(checked(keyring)
            .unwrap_err()
            .starts_with("a new session keyring needs a context to label it with"));
        for kind in [
            RequestKind::WriteFile(WriteFile::default()),
            RequestKind::ReadFile(ReadFile::default()),
        ] {
            assert_eq!(checked(kind).unwrap_err(), "the path is empty");
        }
        let unit = RequestKind::Unit(UnitAction {
            unit: "-x".into(),
            action: "start".into(),
        });
        assert!(checked(unit)
            .unwrap_err()
            .contains("does not start with '-'"));
        assert!(check(Request { id: 1, kind: None })
            .unwrap_err()
            .contains("carries no kind"));
    }

    #[test]
    fn a_frame_that_is_not_a_request_is_named() {
        let err = decode(&[0xff; 7]).unwrap_err();
        assert!(
            err.starts_with("a frame of 7 bytes does not decode as a crlab.agent.v1.Request: "),
            "{err}"
        );
    }

    #[test]
    fn a_signal_or_write_must_name_one_other_process() {
        use crlab_protocol::{SendSignal, WriteFd};
        for pid in [0, 1, std::process::id()] {
            let e = checked(RequestKind::Signal(SendSignal { pid, signal: 15 }))
                .expect_err("not one other process");
            assert!(e.contains(&format!("pid {pid}")), "{e}");
        }
        assert!(checked(RequestKind::Signal(SendSignal {
            pid: 4242,
            signal: 15
        }))
        .is_ok());
        let write = |pid, fd| WriteFd {
            pid,
            fd,
            data: b"g".to_vec(),
        };
        assert!(checked(RequestKind::WriteFd(write(0, 4))).is_err());
        assert!(checked(RequestKind::WriteFd(write(4242, -1))).is_err());
        assert!(checked(RequestKind::WriteFd(write(4242, 4))).is_ok());
    }
}
