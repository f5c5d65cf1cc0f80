//! Running the `crlab` CLI: in the foreground with a deadline, or in the background as an
//! owned process, with its output kept for the failure report.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use super::binaries;
use super::process::{Exit, Proc};

/// How long one crlab command may take.
pub const CRLAB_TIMEOUT: Duration = Duration::from_secs(60);

/// One crlab command and what came of it.
#[derive(Debug)]
pub struct Run {
    /// The arguments after `crlab`.
    pub args: Vec<OsString>,
    /// How it ended; `None` while it runs (background) or if it timed out.
    pub exit: Option<Exit>,
    out_path: PathBuf,
    err_path: PathBuf,
}

impl Run {
    /// Its standard output.
    pub fn stdout(&self) -> String {
        std::fs::read_to_string(&self.out_path).unwrap_or_default()
    }

    /// Its standard error.
    pub fn stderr(&self) -> String {
        std::fs::read_to_string(&self.err_path).unwrap_or_default()
    }

    /// How it ended, in words.
    pub fn exit_text(&self) -> String {
        match self.exit {
            Some(e) => e.to_string(),
            None => format!("did not finish within {CRLAB_TIMEOUT:?} and was killed"),
        }
    }

    /// It exited with status 0.
    pub fn succeeded(&self) -> bool {
        self.exit.is_some_and(Exit::success)
    }
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let args: Vec<_> = self.args.iter().map(|a| a.to_string_lossy()).collect();
        writeln!(f, "$ crlab {}  -> {}", args.join(" "), self.exit_text())?;
        let err = self.stderr();
        if !err.is_empty() {
            writeln!(f, "--- stderr\n{}", err.trim_end())?;
        }
        let out = self.stdout();
        if !out.is_empty() {
            let shown: String = out.chars().take(4000).collect();
            writeln!(f, "--- stdout\n{}", shown.trim_end())?;
        }
        Ok(())
    }
}

/// Starts `crlab <args>` with stdin on /dev/null and stdout/stderr in `<log_dir>/<tag>.out`
/// and `.err`.
pub fn spawn(args: &[OsString], log_dir: &Path, tag: &str) -> (Run, Proc) {
    spawn_with_env(args, &[], log_dir, tag)
}

/// As [`spawn`], with `env` added to crlab's environment (a failpoint to arm).
pub fn spawn_with_env(
    args: &[OsString],
    env: &[(&str, &str)],
    log_dir: &Path,
    tag: &str,
) -> (Run, Proc) {
    let out_path = log_dir.join(format!("{tag}.out"));
    let err_path = log_dir.join(format!("{tag}.err"));
    let out = File::create(&out_path).expect("creating crlab's stdout file");
    let err = File::create(&err_path).expect("creating crlab's stderr file");
    // Reaped by pid through the `Proc` guard, not through `Child`.
    #[allow(clippy::zombie_processes)]
    let child = Command::new(binaries::crlab())
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("starting {}: {e}", binaries::crlab().display()));
    let proc = Proc::adopt(i32::try_from(child.id()).expect("a pid fits a pid_t"));
    (
        Run {
            args: args.to_vec(),
            exit: None,
            out_path,
            err_path,
        },
        proc,
    )
}

/// Runs `crlab <args>` to its end, killing it after [`CRLAB_TIMEOUT`].
pub fn run(args: &[OsString], log_dir: &Path, tag: &str) -> Run {
    run_with_env(args, &[], log_dir, tag)
}

/// As [`run`], with `env` added to crlab's environment.
pub fn run_with_env(args: &[OsString], env: &[(&str, &str)], log_dir: &Path, tag: &str) -> Run {
    let (mut run, mut proc) = spawn_with_env(args, env, log_dir, tag);
    run.exit = proc.reap_within(CRLAB_TIMEOUT, "crlab").ok();
    // On a timeout, dropping the guard kills and reaps it.
    drop(proc);
    run
}
