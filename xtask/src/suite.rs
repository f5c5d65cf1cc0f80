//! `cargo xtask test`: the whole test suite in order, each step announced and timed, then a summary.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

use crate::vm_lab::{self, Outcome, VmTestArgs};
use crate::{cargo, error_text, is_root, prereq};

/// How a step ended when it did not fail.
enum Done {
    Passed,
}

struct Step {
    name: &'static str,
    run: fn(&Shell) -> Result<Done>,
    /// When it fails, the steps after it cannot run.
    gate: bool,
}

#[rustfmt::skip]
const STEPS: &[Step] = &[
    Step { name: "host prerequisites", run: prerequisites, gate: true },
    Step { name: "cargo fmt --all --check", run: fmt, gate: false },
    Step { name: "cargo clippy --workspace --all-targets -- -D warnings", run: clippy, gate: false },
    Step { name: "cargo test --workspace", run: host_tests, gate: false },
    Step { name: "VM suite (cargo xtask vm-test)", run: vm_suite, gate: false },
];

#[derive(Debug, PartialEq, Eq)]
enum Status {
    Passed,
    Failed,
    NotRun,
}

pub fn run(sh: &Shell) -> Result<ExitCode> {
    let mut results: Vec<(&'static str, Status, Duration)> = Vec::new();
    let mut blocked = false;
    for (i, step) in STEPS.iter().enumerate() {
        if blocked {
            results.push((step.name, Status::NotRun, Duration::ZERO));
            continue;
        }
        eprintln!("\n==> [{}/{}] {}", i + 1, STEPS.len(), step.name);
        let start = Instant::now();
        let status = match (step.run)(sh) {
            Ok(Done::Passed) => Status::Passed,
            Err(err) => {
                eprintln!(
                    "{}",
                    error_text(&err.context(format!("{} failed", step.name)))
                );
                blocked = step.gate;
                Status::Failed
            }
        };
        results.push((step.name, status, start.elapsed()));
    }
    eprintln!("\n{}", summary(&results));
    let failed = results.iter().any(|(_, s, _)| *s == Status::Failed);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn summary(results: &[(&'static str, Status, Duration)]) -> String {
    let width = results
        .iter()
        .map(|(name, ..)| name.len())
        .max()
        .unwrap_or(0);
    let mut out = format!(
        "summary of cargo xtask test:\n  {:<width$}  {:<8}  {:>8}\n",
        "step", "status", "time"
    );
    for (name, status, time) in results {
        let (word, note) = match status {
            Status::Passed => ("ok", ""),
            Status::Failed => ("FAILED", ""),
            Status::NotRun => ("not run", "an earlier step it needs failed"),
        };
        let secs = format!("{:.1}s", time.as_secs_f64());
        let line = format!("  {name:<width$}  {word:<8}  {secs:>8}  {note}");
        out += line.trim_end();
        out.push('\n');
    }
    let failed = results
        .iter()
        .filter(|(_, s, _)| *s == Status::Failed)
        .count();
    out += &match failed {
        0 => "result: ok".to_owned(),
        n => format!("result: FAILED ({n} step(s) failed)"),
    };
    out
}

fn prerequisites(sh: &Shell) -> Result<Done> {
    prereq::ensure(sh)?;
    Ok(Done::Passed)
}

fn fmt(sh: &Shell) -> Result<Done> {
    let cargo = cargo();
    cmd!(sh, "{cargo} fmt --all --check").run()?;
    Ok(Done::Passed)
}

fn clippy(sh: &Shell) -> Result<Done> {
    let cargo = cargo();
    cmd!(
        sh,
        "{cargo} clippy --workspace --all-targets -- -D warnings"
    )
    .run()?;
    Ok(Done::Passed)
}

fn host_tests(sh: &Shell) -> Result<Done> {
    if !is_root() {
        bail!(
            "the engine's end-to-end tests need root (ptrace of other processes, clone3 with \
             set_tid, writing SELinux attributes): run `sudo -E cargo xtask test` (or \
             `cargo test --workspace` as root)"
        );
    }
    let cargo = cargo();
    cmd!(sh, "{cargo} test --workspace").run()?;
    Ok(Done::Passed)
}

fn vm_suite(sh: &Shell) -> Result<Done> {
    let args = VmTestArgs {
        policy: Default::default(),
        harness_args: Vec::new(),
    };
    match vm_lab::run(sh, &args)? {
        Outcome::Passed => Ok(Done::Passed),
        Outcome::Failed => anyhow::bail!("a scenario of the VM suite failed (see the table above)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_every_step_and_its_status() {
        let results = [
            (
                "host prerequisites",
                Status::Passed,
                Duration::from_millis(20),
            ),
            (
                "cargo test --workspace",
                Status::Failed,
                Duration::from_secs(61),
            ),
            ("VM suite", Status::NotRun, Duration::ZERO),
        ];
        let text = summary(&results);
        assert_eq!(
            text,
            "summary of cargo xtask test:\n  \
             step                    status        time\n  \
             host prerequisites      ok            0.0s\n  \
             cargo test --workspace  FAILED       61.0s\n  \
             VM suite                not run       0.0s  an earlier step it needs failed\n\
             result: FAILED (1 step(s) failed)"
        );
    }
}
