//! The seeds of the guest channel's fuzz targets, from real traffic: the requests the lab's
//! runner sends (shaped as `crlab-harness`'s `lab::session` builds them, on paths in a scratch
//! directory), served by the real agent loop in-process over a socket pair, every frame of
//! both directions recorded.
//!
//! `cargo +nightly run --example seeds -- OUT_DIR` writes `OUT_DIR/agent_request/<name>` (one
//! request's payload each) and `OUT_DIR/frame/<name>` (the whole stream of one exchange,
//! length prefixes included: the request's frame, then the response's).
//!
//! Harmless on the machine it runs on: the commands are `echo` and `sh -c 'echo ... >&2'`,
//! the files live in the scratch directory, the unit action and the re-exec are ones the
//! agent refuses, and PowerOff ends the loop (`poweroff_exits`).

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use crlab_agent::{serve, Agent, Channel, Config};
use crlab_protocol::frame::{read_frame, write_frame};
use crlab_protocol::{
    AuditSince, Hello, PowerOff, ReadFile, Reexec, Request, RequestKind, RunCommand, UnitAction,
    WriteFile,
};
use prost::Message;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [out] = args.as_slice() else {
        eprintln!("usage: seeds OUT_DIR");
        return ExitCode::FAILURE;
    };
    match run(Path::new(out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn requests(scratch: &Path) -> Vec<(&'static str, RequestKind)> {
    let file = scratch
        .join("payload/crlab-workloads")
        .display()
        .to_string();
    let log = scratch.join("workload.log").display().to_string();
    vec![
        ("hello", RequestKind::Hello(Hello {})),
        (
            "run",
            RequestKind::Run(RunCommand {
                argv: vec!["echo".into(), "ready".into()],
                context: String::new(),
                timeout_ms: 300_000,
                env: vec![],
                cwd: "/".into(),
                background: false,
                stdout_path: String::new(),
            }),
        ),
        (
            "run_stderr",
            RequestKind::Run(RunCommand {
                argv: vec!["sh".into(), "-c".into(), "echo denied >&2; exit 3".into()],
                timeout_ms: 10_000,
                env: vec!["CRLAB_LOG=debug".into()],
                cwd: "/".into(),
                ..RunCommand::default()
            }),
        ),
        (
            "run_background",
            RequestKind::Run(RunCommand {
                argv: vec!["echo".into(), "started".into()],
                context: String::new(),
                timeout_ms: 0,
                env: vec!["CRLAB_READY_DIR=/run/crlab/ready".into()],
                cwd: "/".into(),
                background: true,
                stdout_path: log.clone(),
            }),
        ),
        (
            "run_in_context",
            RequestKind::Run(RunCommand {
                argv: vec!["/opt/crlab/bin/crlab".into(), "check".into()],
                context: "system_u:system_r:container_t:s0:c1,c2".into(),
                timeout_ms: 60_000,
                cwd: "/nonexistent-crlab-fuzz-seed".into(),
                ..RunCommand::default()
            }),
        ),
        (
            "write_file",
            RequestKind::WriteFile(WriteFile {
                path: file.clone(),
                data: b"\x7fELF\x02\x01\x01\0 a payload chunk".to_vec(),
                append: false,
                mode: 0o755,
            }),
        ),
        (
            "write_file_append",
            RequestKind::WriteFile(WriteFile {
                path: file.clone(),
                data: b" and the next chunk".to_vec(),
                append: true,
                mode: 0o755,
            }),
        ),
        ("read_file", RequestKind::ReadFile(ReadFile { path: file })),
        (
            "audit",
            RequestKind::Audit(AuditSince {
                marker: 1 << 63 | 1234,
            }),
        ),
        (
            "unit_refused",
            RequestKind::Unit(UnitAction {
                unit: "crlab-workload.service".into(),
                action: "--now".into(),
            }),
        ),
        ("reexec_refused", RequestKind::Reexec(Reexec { path: log })),
        ("power_off", RequestKind::PowerOff(PowerOff {})),
    ]
}

fn run(out: &Path) -> Result<(), String> {
    let scratch = std::env::temp_dir().join(format!("crlab-channel-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&scratch).map_err(|e| format!("creating the scratch dir: {e}"))?;
    let result = exchange(out, &scratch);
    let _ = std::fs::remove_dir_all(&scratch);
    result
}

fn exchange(out: &Path, scratch: &Path) -> Result<(), String> {
    let (mut host, guest) = UnixStream::pair().map_err(|e| format!("socketpair: {e}"))?;
    host.set_read_timeout(Some(Duration::from_secs(60)))
        .map_err(|e| e.to_string())?;
    let config = Config {
        audit_log: Some(scratch.join("audit.log")),
        poweroff_exits: true,
        ..Config::default()
    };
    let server = std::thread::spawn(move || {
        let mut channel = Channel::from_stream(guest).map_err(|e| e.to_string())?;
        serve(&Agent::new(config), &mut channel).map_err(|e| e.to_string())
    });
    for dir in ["agent_request", "frame"] {
        std::fs::create_dir_all(out.join(dir)).map_err(|e| format!("creating {dir}: {e}"))?;
    }
    for (id, (name, kind)) in (1u64..).zip(requests(scratch)) {
        let payload = Request {
            id,
            kind: Some(kind),
        }
        .encode_to_vec();
        let mut stream = Vec::new();
        write_frame(&mut stream, &payload).map_err(|e| e.to_string())?;
        write_frame(&mut host, &payload).map_err(|e| format!("sending {name}: {e}"))?;
        let response = read_frame(&mut host).map_err(|e| format!("answer to {name}: {e}"))?;
        write_frame(&mut stream, &response).map_err(|e| e.to_string())?;
        let write = |dir: &str, bytes: &[u8]| {
            std::fs::write(out.join(dir).join(name), bytes)
                .map_err(|e| format!("writing {dir}/{name}: {e}"))
        };
        write("agent_request", &payload)?;
        write("frame", &stream)?;
    }
    drop(host);
    server
        .join()
        .map_err(|_| "the agent loop panicked".to_owned())??;
    Ok(())
}
