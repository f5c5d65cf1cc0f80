//! Every workload in every wait mode, with no checkpoint in between: it gets ready, is
//! triggered and passes its own check. Also proves the checks can fail, the protocol text
//! round-trips, and the driver says why it could not drive. Needs no root and no engine.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use crlab_workloads::driver::{DriveError, Driver, Host, Local};
use crlab_workloads::protocol::{self, ExternalWrite, Outcome, Ready, Trigger, WaitMode};

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
        "event_fds" => env!("CARGO_BIN_EXE_event_fds"),
        "service" => env!("CARGO_BIN_EXE_service"),
        other => panic!("no workload {other}"),
    }
}

/// How a child ended, once it has (for the driver's waits).
fn ended(child: &mut Child) -> impl FnMut() -> Option<String> + '_ {
    || match child.try_wait() {
        Ok(status) => status.map(|s| s.to_string()),
        Err(e) => Some(format!("unknown: {e}")),
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
    let ready = Driver::new(Local, &running.state.0)
        .wait_ready(TIMEOUT, ended(&mut running.child))
        .unwrap_or_else(|e| panic!("{}", e.with_sources()));
    assert_eq!(i64::from(ready.pid), i64::from(running.child.id()));
    assert_eq!(ready.wait, mode);
    (running, ready)
}

/// Triggers (with `pipe_byte` if through a pipe, without the external writes unless
/// `external_writes`) and returns (result, exit code).
fn finish(
    mut running: Running,
    ready: &Ready,
    pipe_byte: u8,
    external_writes: bool,
) -> (Outcome, i32) {
    let mut driver = Driver::new(Local, &running.state.0);
    if external_writes {
        driver.external_writes(ready).expect("the external writes");
    }
    driver
        .wake(ready, ready.pid, pipe_byte)
        .expect("waking the workload");
    let outcome = driver
        .wait_result(TIMEOUT, ended(&mut running.child))
        .unwrap_or_else(|e| panic!("{}", e.with_sources()));
    let status = running.child.wait().expect("waiting for the workload");
    (outcome, status.code().unwrap_or(-1))
}

fn self_check(name: &str, args: &[&str]) {
    for mode in WaitMode::ALL {
        let (running, ready) = start(name, mode, args);
        let (result, code) = finish(running, &ready, protocol::TRIGGER_BYTE, true);
        assert_eq!(result, Outcome::Passed, "{name} in {mode}");
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
    self_check("unsupported", &["inotify"]);
    self_check("unsupported", &["socket"]);
}

#[test]
fn event_fds_passes_its_check_with_each_kind() {
    for kind in [
        "eventfd", "timerfd", "signalfd", "epoll", "memfd", "inotify",
    ] {
        self_check("event_fds", &[kind]);
    }
}

#[test]
fn service_answers_its_clients_in_every_wait_mode() {
    self_check("service", &[]);
}

#[test]
fn memory_fails_when_the_shared_mapping_misses_the_file_write() {
    let (running, ready) = start("memory", WaitMode::Nanosleep, &[]);
    let (result, code) = finish(running, &ready, protocol::TRIGGER_BYTE, false);
    let Outcome::Failed(result) = result else {
        panic!("memory passed without the external write")
    };
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
    assert!(
        matches!(&result, Outcome::Failed(text) if text.contains("trigger pipe")),
        "{result}"
    );
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

#[test]
fn a_result_file_reads_as_its_outcome() {
    assert_eq!(Outcome::parse("ok\n"), Outcome::Passed);
    assert_eq!(
        Outcome::parse("fail: pid\n"),
        Outcome::Failed("fail: pid".into())
    );
    assert_eq!(Outcome::parse(""), Outcome::Failed(String::new()));
}

#[test]
fn the_driver_gives_up_on_a_missing_ready_file() {
    let state = StateDir::new("missing");
    let err = Driver::new(Local, &state.0)
        .wait_ready(Duration::from_millis(30), || None)
        .expect_err("no ready file was written");
    assert!(matches!(err, DriveError::Timeout { .. }), "{err}");
}

#[test]
fn the_driver_says_how_the_workload_ended_and_what_it_wrote() {
    let state = StateDir::new("ended");
    std::fs::write(state.0.join(protocol::RESULT), "fail: setup: no memory\n")
        .expect("writing a result");
    let err = Driver::new(Local, &state.0)
        .wait_ready(TIMEOUT, || Some("exit status: 2".into()))
        .expect_err("the workload ended");
    assert_eq!(
        err.to_string(),
        format!(
            "the workload ended (exit status: 2) before it wrote {}; its result file says \
             \"fail: setup: no memory\"",
            state.0.join(protocol::READY).display()
        )
    );
}

#[test]
fn a_result_before_the_ready_file_ends_the_wait_at_once() {
    let state = StateDir::new("result-first");
    std::fs::write(
        state.0.join(protocol::RESULT),
        "fail: setup: inotify: denied\n",
    )
    .expect("writing a result");
    let start = std::time::Instant::now();
    let err = Driver::new(Local, &state.0)
        .wait_ready(Duration::from_secs(60), || None)
        .expect_err("a workload that wrote its result is never ready");
    assert!(matches!(err, DriveError::ResultBeforeReady { .. }), "{err}");
    assert!(
        err.to_string().contains("fail: setup: inotify: denied"),
        "{err}"
    );
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "it waited out the limit"
    );
}

#[test]
fn a_bad_ready_file_is_an_error_of_its_own() {
    let state = StateDir::new("bad-ready");
    std::fs::write(state.0.join(protocol::READY), "pid 1\n").expect("writing a ready file");
    let err = Driver::new(Local, &state.0)
        .try_ready()
        .expect_err("a ready file without wait and trigger");
    assert!(matches!(err, DriveError::BadReady { .. }), "{err}");
}

/// A host that records what it is asked, to see each trigger go its way.
#[derive(Default)]
struct Recorder(Vec<String>);

impl Host for Recorder {
    type Error = std::io::Error;

    fn read(&mut self, path: &Path) -> std::io::Result<Option<Vec<u8>>> {
        self.0.push(format!("read {}", path.display()));
        Ok(None)
    }

    fn write_at(&mut self, path: &Path, offset: u64, bytes: &[u8]) -> std::io::Result<()> {
        let text = String::from_utf8_lossy(bytes);
        self.0
            .push(format!("write {text} at {offset} of {}", path.display()));
        Ok(())
    }

    fn create(&mut self, path: &Path) -> std::io::Result<()> {
        self.0.push(format!("create {}", path.display()));
        Ok(())
    }

    fn write_fd(&mut self, pid: i32, fd: i32, bytes: &[u8]) -> std::io::Result<()> {
        self.0.push(format!("write {bytes:?} into {pid}/{fd}"));
        Ok(())
    }

    fn signal(&mut self, pid: i32, signal: i32) -> std::io::Result<()> {
        if signal == 0 {
            return Err(std::io::Error::from_raw_os_error(libc::ESRCH));
        }
        self.0.push(format!("signal {signal} to {pid}"));
        Ok(())
    }
}

#[test]
fn the_trigger_makes_the_external_writes_then_wakes_the_workload_its_way() {
    let writes = vec![ExternalWrite {
        file: "shared.bin".into(),
        offset: 6000,
        text: "hello".into(),
    }];
    let cases = [
        (Trigger::CheckFile, "create /s/check"),
        (Trigger::PipeFd(7), "write [33] into 42/7"),
        (Trigger::Signal(15), "signal 15 to 42"),
    ];
    for (trigger, wake) in cases {
        let ready = Ready {
            pid: 1,
            wait: WaitMode::Nanosleep,
            trigger,
            external_writes: writes.clone(),
            extra: Vec::new(),
        };
        let mut recorder = Recorder::default();
        Driver::new(&mut recorder, "/s")
            .trigger(&ready, 42)
            .expect("a recording host does everything");
        assert_eq!(
            recorder.0,
            ["write hello at 6000 of /s/shared.bin", wake],
            "{trigger}"
        );
    }
}

#[test]
fn a_failed_trigger_says_what_it_tried() {
    let ready = Ready {
        pid: 1,
        wait: WaitMode::Sigsuspend,
        trigger: Trigger::Signal(0),
        external_writes: Vec::new(),
        extra: Vec::new(),
    };
    let err = Driver::new(Recorder::default(), "/s")
        .trigger(&ready, 42)
        .expect_err("the recorder refuses signal 0");
    assert!(
        err.with_sources()
            .starts_with("sending signal 0 to pid 42: No such process"),
        "{}",
        err.with_sources()
    );
}
