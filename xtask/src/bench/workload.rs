//! The `bench_memory` workload seen from xtask: start it, wait until it is ready, make it check
//! itself; its files are read and written by the workloads' own driver
//! ([`crlab_workloads::driver`]), the waits are xtask's (deadlines, SIGINT, reaping).

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use crlab_workloads::driver::{Driver, Local};
use crlab_workloads::protocol::{Outcome, Ready};

use crate::reaper::{wait_until, Guard};

/// One `bench_memory` process, its state directory and its ready file.
pub struct Workload {
    pub process: Guard,
    driver: Driver<Local>,
    ready: Ready,
}

impl Workload {
    /// Starts `bench_memory STATE BYTES` in a process group of its own, with `/dev/null` as its
    /// standard streams (nothing the engine would have to carry but plain files), and waits
    /// until it has touched all its memory.
    pub fn start(
        bin: &Path,
        state: &Path,
        bytes: usize,
        extra: &[&str],
        limit: Duration,
    ) -> Result<Self> {
        use std::os::unix::process::CommandExt;

        std::fs::create_dir(state).with_context(|| format!("creating {}", state.display()))?;
        let child = Command::new(bin)
            .arg(state)
            .arg(bytes.to_string())
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .with_context(|| format!("starting {}", bin.display()))?;
        let pid = libc::pid_t::try_from(child.id()).context("pid out of range")?;
        let mut process = Guard::new(pid, "bench_memory");
        let mut driver = Driver::new(Local, state);
        let mut ready = None;
        wait_until(
            limit,
            &format!("bench_memory (pid {pid}) to touch {bytes} bytes"),
            || {
                ready = driver.try_ready()?;
                if ready.is_none() {
                    if let Some(status) = process.try_wait()? {
                        let said = driver.try_result()?.map(|o| format!(", saying {o:?}"));
                        bail!(
                            "bench_memory (pid {pid}) exited before it was ready: {status}{}",
                            said.unwrap_or_default()
                        );
                    }
                }
                Ok(ready.is_some())
            },
        )?;
        let ready = ready.context("the ready file vanished")?;
        ensure!(
            ready.pid == pid,
            "bench_memory (pid {pid}) wrote pid {} in its ready file",
            ready.pid
        );
        Ok(Self {
            process,
            driver,
            ready,
        })
    }

    pub fn pid(&self) -> libc::pid_t {
        self.process.pid()
    }

    /// Makes this very process verify its memory (no dump in between).
    pub fn check_itself(&mut self, limit: Duration) -> Result<()> {
        check(&mut self.driver, &self.ready, &mut self.process, limit)
    }

    /// Makes `restored` (this workload's restored copy, in the same state directory) verify
    /// its memory.
    pub fn check_restored(&mut self, restored: &mut Guard, limit: Duration) -> Result<()> {
        check(&mut self.driver, &self.ready, restored, limit)
    }
}

/// Triggers the workload as its ready file says (it creates `STATE/check`), then requires its
/// result to be `ok` and `process` (the workload, or its restored copy) to exit with status 0.
fn check(
    driver: &mut Driver<Local>,
    ready: &Ready,
    process: &mut Guard,
    limit: Duration,
) -> Result<()> {
    let pid = process.pid();
    driver.trigger(ready, pid)?;
    let mut status = None;
    let mut outcome = None;
    wait_until(
        limit,
        &format!("bench_memory (pid {pid}) to verify its memory"),
        || {
            status = process.try_wait()?;
            outcome = driver.try_result()?;
            Ok(status.is_some() || outcome.is_some())
        },
    )?;
    let status = match status {
        Some(status) => status,
        None => process.wait(limit)?,
    };
    let outcome = match outcome {
        Some(outcome) => outcome,
        None => driver.try_result()?.with_context(|| {
            format!("bench_memory (pid {pid}) exited ({status}) without a result")
        })?,
    };
    if outcome != Outcome::Passed || !status.success() {
        bail!("bench_memory (pid {pid}) says {outcome:?} and exited with {status}");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in with the same files, so the plumbing is tested without building anything.
    const FAKE: &str = r#"
        printf 'pid %s\nwait nanosleep\ntrigger check-file\n' $$ > "$1/.ready.tmp"
        mv "$1/.ready.tmp" "$1/ready"
        while [ ! -e "$1/check" ]; do sleep 0.01; done
        echo ok > "$1/result"
    "#;

    #[test]
    fn start_ready_check_ok() -> Result<()> {
        let dir = std::env::temp_dir().join(format!("xtask-workload-{}", std::process::id()));
        std::fs::create_dir(&dir)?;
        let script = dir.join("fake.sh");
        std::fs::write(&script, format!("#!/bin/sh\n{FAKE}"))?;
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let outcome = Workload::start(
            &script,
            &dir.join("state"),
            4096,
            &[],
            Duration::from_secs(30),
        )
        .and_then(|mut workload| workload.check_itself(Duration::from_secs(30)));
        std::fs::remove_dir_all(&dir)?;
        outcome
    }
}
