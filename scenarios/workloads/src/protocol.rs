//! The file protocol between a workload and whoever drives it (the engine's tests, the lab
//! runner, the benchmark; their side of it is [`crate::driver`]).
//!
//! A workload runs as `<bin> <state-dir> <wait-mode> [args...]` with stdin on `/dev/null` and
//! stdout and stderr appended to `<state-dir>/log`. It sets up its state, writes
//! `<state-dir>/ready` (see [`Ready`]), then waits in the way its wait mode names. Once
//! triggered (see [`Trigger`]) it checks its state and writes `<state-dir>/result`: `ok`, or
//! `fail: <what differed>`, and exits 0 or 1.
//!
//! This file uses `std` only: the engine's tests include it (and the driver) by path, so both
//! sides share one definition of the protocol.

use std::fmt;

/// Written once the workload's state is set up: the [`Ready`] text.
pub const READY: &str = "ready";
/// Written once the workload has checked its state: `ok` or `fail: ...`.
pub const RESULT: &str = "result";
/// Created by the driver to trigger workloads that poll for it.
pub const CHECK: &str = "check";
/// The workload's stdout and stderr.
pub const LOG: &str = "log";
/// The whole content of a successful result file.
pub const RESULT_OK: &str = "ok";
/// Prefix of a failed result file.
pub const RESULT_FAIL_PREFIX: &str = "fail: ";
/// The byte a driver writes into the trigger pipe.
pub const TRIGGER_BYTE: u8 = b'!';
/// An environment variable the driver sets; workloads that check their environment expect it.
/// An argument that makes the `nanosleep-asm` wait sleep 5 s at a time instead of 100 ms,
/// so that a test can stop and continue it inside one sleep and dump it before that sleep
/// ends (the trigger is then seen up to 5 s later).
pub const LONG_SLEEP_ARG: &str = "long-sleep";
/// Its sleep, in seconds.
pub const LONG_SLEEP_SECS: i64 = 5;
pub const MARK_ENV: &str = "CRLAB_WORKLOAD_MARK";
/// The value the driver gives [`MARK_ENV`].
pub const MARK_VALUE: &str = "environ-survives-checkpoint";
/// Exit status of a workload whose state differed from what it set up.
pub const EXIT_FAIL: i32 = 1;
/// Exit status of a workload that could not even set up (bad arguments, a failed syscall).
pub const EXIT_SETUP: i32 = 2;

/// What a workload's result file says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// [`RESULT_OK`]: every check passed.
    Passed,
    /// Anything else, as the file says it (normally [`RESULT_FAIL_PREFIX`] and what differed).
    Failed(String),
}

impl Outcome {
    /// Reads a result file's text; surrounding whitespace does not count.
    pub fn parse(text: &str) -> Outcome {
        match text.trim() {
            RESULT_OK => Outcome::Passed,
            other => Outcome::Failed(other.to_owned()),
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Outcome::Passed => f.write_str(RESULT_OK),
            Outcome::Failed(text) => f.write_str(text),
        }
    }
}

/// How a workload waits for its trigger: the system call (or lack of one) it sits in while it
/// gets checkpointed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WaitMode {
    /// A loop of `nanosleep` calls, checking for the check file between them.
    Nanosleep,
    /// Blocked in `read` on a pipe it holds both ends of; woken by a byte written to that pipe.
    PipeRead,
    /// In `sigsuspend` with every signal but the trigger signal blocked; woken by that signal.
    Sigsuspend,
    /// Pure user space: an `asm!` loop holding known values in callee-saved general registers,
    /// vector registers (ymm with AVX, xmm otherwise) and the x87 stack; checks the registers
    /// and the check file every few hundred million iterations.
    Spin,
    /// An `asm!` loop of raw `nanosleep` and `access` system calls holding the same register
    /// values as [`WaitMode::Spin`] across them; ends once `access` finds the check file.
    NanosleepAsm,
}

impl WaitMode {
    /// Every wait mode, in a stable order.
    pub const ALL: [WaitMode; 5] = [
        WaitMode::Nanosleep,
        WaitMode::PipeRead,
        WaitMode::Sigsuspend,
        WaitMode::Spin,
        WaitMode::NanosleepAsm,
    ];

    /// The name used on the command line and in the ready file.
    pub fn name(self) -> &'static str {
        match self {
            WaitMode::Nanosleep => "nanosleep",
            WaitMode::PipeRead => "pipe-read",
            WaitMode::Sigsuspend => "sigsuspend",
            WaitMode::Spin => "spin",
            WaitMode::NanosleepAsm => "nanosleep-asm",
        }
    }

    /// The mode called `name`, if any.
    pub fn from_name(name: &str) -> Option<WaitMode> {
        WaitMode::ALL.into_iter().find(|m| m.name() == name)
    }
}

impl fmt::Display for WaitMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// How the driver wakes a waiting workload.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// Create `<state-dir>/check`.
    CheckFile,
    /// Write [`TRIGGER_BYTE`] into the pipe behind the workload's descriptor `n`, through
    /// `/proc/<pid>/fd/<n>`.
    PipeFd(i32),
    /// Send this signal to the workload.
    Signal(i32),
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::CheckFile => write!(f, "check-file"),
            Trigger::PipeFd(fd) => write!(f, "pipe-fd {fd}"),
            Trigger::Signal(sig) => write!(f, "signal {sig}"),
        }
    }
}

/// A write the driver makes to a file of the state dir after any restore and before the
/// trigger; the workload checks that it sees it (through a shared mapping, for example).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExternalWrite {
    /// File name inside the state dir.
    pub file: String,
    /// Byte offset to write at.
    pub offset: u64,
    /// The bytes to write (no whitespace).
    pub text: String,
}

/// The content of the ready file: one `key value` pair per line.
///
/// ```text
/// pid 1234
/// wait pipe-read
/// trigger pipe-fd 7
/// external-write shared.bin 6000 written-by-the-driver
/// unsupported-fd 5
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ready {
    /// The workload's pid as `getpid()` gave it.
    pub pid: i32,
    /// The wait mode it is in.
    pub wait: WaitMode,
    /// How to wake it.
    pub trigger: Trigger,
    /// Writes the driver must make before the trigger.
    pub external_writes: Vec<ExternalWrite>,
    /// Any other `key value` lines, in order.
    pub extra: Vec<(String, String)>,
}

impl Ready {
    /// The value of the first extra line with this key.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.extra
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// The ready file's text.
    pub fn to_text(&self) -> String {
        let mut text = format!(
            "pid {}\nwait {}\ntrigger {}\n",
            self.pid, self.wait, self.trigger
        );
        for w in &self.external_writes {
            text.push_str(&format!(
                "external-write {} {} {}\n",
                w.file, w.offset, w.text
            ));
        }
        for (k, v) in &self.extra {
            text.push_str(&format!("{k} {v}\n"));
        }
        text
    }

    /// Parses a ready file's text.
    pub fn parse(text: &str) -> Result<Ready, String> {
        let mut pid = None;
        let mut wait = None;
        let mut trigger = None;
        let mut external_writes = Vec::new();
        let mut extra = Vec::new();
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let (key, value) = line
                .split_once(' ')
                .ok_or_else(|| format!("ready line without a value: {line:?}"))?;
            match key {
                "pid" => pid = Some(parse_num::<i32>(value, line)?),
                "wait" => {
                    wait = Some(
                        WaitMode::from_name(value)
                            .ok_or_else(|| format!("unknown wait mode in {line:?}"))?,
                    )
                }
                "trigger" => trigger = Some(parse_trigger(value, line)?),
                "external-write" => {
                    let mut parts = value.splitn(3, ' ');
                    let (Some(file), Some(offset), Some(text)) =
                        (parts.next(), parts.next(), parts.next())
                    else {
                        return Err(format!("external-write needs file offset text: {line:?}"));
                    };
                    external_writes.push(ExternalWrite {
                        file: file.to_owned(),
                        offset: parse_num(offset, line)?,
                        text: text.to_owned(),
                    });
                }
                _ => extra.push((key.to_owned(), value.to_owned())),
            }
        }
        Ok(Ready {
            pid: pid.ok_or("ready file has no pid line")?,
            wait: wait.ok_or("ready file has no wait line")?,
            trigger: trigger.ok_or("ready file has no trigger line")?,
            external_writes,
            extra,
        })
    }
}

fn parse_num<T: std::str::FromStr>(value: &str, line: &str) -> Result<T, String> {
    value
        .trim()
        .parse()
        .map_err(|_| format!("not a number in ready line {line:?}"))
}

fn parse_trigger(value: &str, line: &str) -> Result<Trigger, String> {
    match value.split_once(' ') {
        None if value == "check-file" => Ok(Trigger::CheckFile),
        Some(("pipe-fd", n)) => Ok(Trigger::PipeFd(parse_num(n, line)?)),
        Some(("signal", n)) => Ok(Trigger::Signal(parse_num(n, line)?)),
        _ => Err(format!("unknown trigger in {line:?}")),
    }
}
