//! Every workload in every wait mode, with no checkpoint in between: it gets ready, is
//! triggered and passes its own check. Also proves the checks can fail, and the protocol
//! text round-trips. Needs no root and no engine.

use std::fs::OpenOptions;
use std::io::Write;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crlab_workloads::protocol::{self, ExternalWrite, Ready, Trigger, WaitMode};

const TIMEOUT: Duration = Duration::from_secs(60);

/// A state dir removed on drop.
struct StateDir(PathBuf);

impl StateDir {
    fn new(name: &str) -> StateDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "crlab-workload-{name}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&dir).expect("creating a state dir");
        StateDir(dir)
    }
}

impl Drop for StateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A started workload, killed and reaped on drop.
struct Running {
    child: Child,
    state: StateDir,
    name: String,
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(self.state.0.join(protocol::LOG)).unwrap_or_default();
            eprintln!("--- log of {}\n{log}", self.name);
        }
    }
}

fn bin(name: &str) -> &'static str {
    match name {
        "idle" => env!("CARGO_BIN_EXE_idle"),
        "memory" => env!("CARGO_BIN_EXE_memory"),
        "registers" => env!("CARGO_BIN_EXE_registers"),
        "signals" => env!("CARGO_BIN_EXE_signals"),
        "files" => env!("CARGO_BIN_EXE_files"),
        "unsupported" => env!("CARGO_BIN_EXE_unsupported"),
        other => panic!("no workload {other}"),
    }
}

fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < TIMEOUT,
            "timed out after {TIMEOUT:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn start(name: &str, mode: WaitMode, args: &[&str]) -> (Running, Ready) {
    let state = StateDir::new(name);
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(state.0.join(protocol::LOG))
        .expect("creating the log");
    let child = Command::new(bin(name))
        .arg(&state.0)
        .arg(mode.name())
        .args(args)
        .env(protocol::MARK_ENV, protocol::MARK_VALUE)
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("dup of the log"))
        .stderr(log)
        .spawn()
        .expect("starting the workload");
    let mut running = Running {
        child,
        state,
        name: format!("{name} ({mode})"),
    };
    let ready_path = running.state.0.join(protocol::READY);
    wait_until("the ready file", || {
        ready_path.exists() || running.child.try_wait().ok().flatten().is_some()
    });
    let text =
        std::fs::read_to_string(&ready_path).expect("the workload ended before it was ready");
    let ready = Ready::parse(&text).expect("a valid ready file");
    assert_eq!(ready.pid, running.child.id() as i32);
    assert_eq!(ready.wait, mode);
    (running, ready)
}

fn trigger(state: &Path, ready: &Ready, pipe_byte: u8, external_writes: bool) {
    if external_writes {
        for w in &ready.external_writes {
            let f = OpenOptions::new()
                .write(true)
                .open(state.join(&w.file))
                .expect("opening the external write's file");
            f.write_all_at(w.text.as_bytes(), w.offset)
                .expect("the external write");
        }
    }
    match ready.trigger {
        Trigger::CheckFile => std::fs::write(state.join(protocol::CHECK), b"").expect("check file"),
        Trigger::PipeFd(fd) => {
            let mut pipe = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(format!("/proc/{}/fd/{fd}", ready.pid))
                .expect("opening the trigger pipe");
            pipe.write_all(&[pipe_byte])
                .expect("writing the trigger pipe");
        }
        Trigger::Signal(sig) => {
            // SAFETY: the pid is our unreaped child.
            assert_eq!(unsafe { libc::kill(ready.pid, sig) }, 0);
        }
    }
}

/// Triggers and returns (result, exit code).
fn finish(
    mut running: Running,
    ready: &Ready,
    pipe_byte: u8,
    external_writes: bool,
) -> (String, i32) {
    trigger(&running.state.0, ready, pipe_byte, external_writes);
    let mut status = None;
    wait_until("the workload to exit", || {
        status = running.child.try_wait().expect("try_wait");
        status.is_some()
    });
    let result =
        std::fs::read_to_string(running.state.0.join(protocol::RESULT)).unwrap_or_default();
    (result, status.and_then(|s| s.code()).unwrap_or(-1))
}

fn self_check(name: &str, args: &[&str]) {
    for mode in WaitMode::ALL {
        let (running, ready) = start(name, mode, args);
        let (result, code) = finish(running, &ready, protocol::TRIGGER_BYTE, true);
        assert_eq!(result, protocol::RESULT_OK, "{name} in {mode}");
        assert_eq!(code, 0, "{name} in {mode}: exit status");
    }
}

#[test]
fn idle_passes_its_check_in_every_wait_mode() {
    self_check("idle", &[]);
}

#[test]
fn memory_passes_its_check_in_every_wait_mode() {
    self_check("memory", &["argv-marker"]);
}

#[test]
fn registers_passes_its_check_in_every_wait_mode() {
    self_check("registers", &[]);
}

#[test]
fn signals_passes_its_check_in_every_wait_mode() {
    self_check("signals", &[]);
}

#[test]
fn files_passes_its_check_in_every_wait_mode() {
    self_check("files", &[]);
}

#[test]
fn unsupported_passes_its_check_with_each_descriptor_kind() {
    self_check("unsupported", &["eventfd"]);
    self_check("unsupported", &["socket"]);
}

#[test]
fn memory_fails_when_the_shared_mapping_misses_the_file_write() {
    let (running, ready) = start("memory", WaitMode::Nanosleep, &[]);
    let (result, code) = finish(running, &ready, protocol::TRIGGER_BYTE, false);
    assert!(
        result.starts_with(protocol::RESULT_FAIL_PREFIX) && result.contains("driver wrote"),
        "{result}"
    );
    assert_eq!(code, protocol::EXIT_FAIL);
}

#[test]
fn a_wrong_byte_in_the_trigger_pipe_fails_the_check() {
    let (running, ready) = start("idle", WaitMode::PipeRead, &[]);
    let (result, code) = finish(running, &ready, b'x', true);
    assert!(result.contains("trigger pipe"), "{result}");
    assert_eq!(code, protocol::EXIT_FAIL);
}

#[test]
fn bad_arguments_exit_with_the_setup_status() {
    let status = Command::new(bin("idle"))
        .arg("/nonexistent")
        .arg("no-such-mode")
        .stderr(Stdio::null())
        .status()
        .expect("running idle");
    assert_eq!(status.code(), Some(protocol::EXIT_SETUP));
}

#[test]
fn ready_text_round_trips() {
    let ready = Ready {
        pid: 42,
        wait: WaitMode::PipeRead,
        trigger: Trigger::PipeFd(7),
        external_writes: vec![ExternalWrite {
            file: "shared.bin".into(),
            offset: 6000,
            text: "hello".into(),
        }],
        extra: vec![("unsupported-fd".into(), "5".into())],
    };
    assert_eq!(Ready::parse(&ready.to_text()), Ok(ready));
}

#[test]
fn every_wait_mode_name_parses_back() {
    for mode in WaitMode::ALL {
        assert_eq!(WaitMode::from_name(mode.name()), Some(mode));
    }
}

#[test]
fn a_ready_file_without_trigger_is_an_error() {
    assert!(Ready::parse("pid 1\nwait spin\n").is_err());
}
