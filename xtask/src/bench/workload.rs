//! The `bench_memory` workload seen from xtask: start it, wait until it is ready, make it check itself.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::reaper::{wait_until, Guard};

/// One `bench_memory` process and its state directory (`ready`, `check`, `result`).
pub struct Workload {
    pub process: Guard,
    state: PathBuf,
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
        let mut workload = Self {
            process: Guard::new(pid, "bench_memory"),
            state: state.to_path_buf(),
        };
        let ready = state.join("ready");
        wait_until(
            limit,
            &format!("bench_memory (pid {pid}) to touch {bytes} bytes"),
            || {
                if let Some(status) = workload.process.try_wait()? {
                    bail!("bench_memory (pid {pid}) exited before it was ready: {status}");
                }
                Ok(ready.exists())
            },
        )?;
        Ok(workload)
    }

    pub fn pid(&self) -> libc::pid_t {
        self.process.pid()
    }

    pub fn state(&self) -> &Path {
        &self.state
    }

    /// Makes this very process verify its memory (no dump in between): see [`check`].
    pub fn check_itself(&mut self, limit: Duration) -> Result<()> {
        check(&self.state, &mut self.process, limit)
    }
}

/// Creates `STATE/check`, then requires `STATE/result` to say `ok` and `process` (the workload,
/// or its restored copy) to exit with status 0.
pub fn check(state: &Path, process: &mut Guard, limit: Duration) -> Result<()> {
    let check = state.join("check");
    std::fs::write(&check, b"").with_context(|| format!("creating {}", check.display()))?;
    let result = state.join("result");
    let pid = process.pid();
    let mut status = None;
    wait_until(
        limit,
        &format!("bench_memory (pid {pid}) to verify its memory"),
        || {
            status = process.try_wait()?;
            Ok(status.is_some() || result.exists())
        },
    )?;
    let status = match status {
        Some(status) => status,
        None => process.wait(limit)?,
    };
    let verdict = std::fs::read_to_string(&result)
        .with_context(|| format!("bench_memory (pid {pid}) exited ({status}) without a result"))?;
    if verdict.trim() != "ok" || !status.success() {
        bail!(
            "bench_memory (pid {pid}) says {:?} and exited with {status}",
            verdict.trim()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in with the same protocol, so the plumbing is tested without building anything.
    const FAKE: &str = r#"
        echo $$ > "$1/ready"
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
