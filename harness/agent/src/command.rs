//! Commands run for the host (`RunCommand`): clean environment, own session (so own process
//! group, as a container runtime gives its container's init), optional
//! SELinux exec context; in the foreground with captured output under a deadline, or in the
//! background with output appended to a file.

use std::{
    fs::OpenOptions,
    io,
    os::unix::{fs::OpenOptionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use super::{
    capture::{self, Finished},
    reaper::Reaper,
    selinux::{ExecContext, ExecContextError},
};
use crlab_protocol::{CommandResult, RunCommand};

/// Deadline of a command whose request gives none.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);

/// The one variable of the clean environment (the request's `env` may replace it).
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("the command has an empty argv")]
    Empty,
    #[error("environment entry {0:?} is not KEY=VALUE")]
    BadEnv(String),
    #[error("working directory {path} is not a directory")]
    Cwd {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(transparent)]
    Context(#[from] ExecContextError),
    #[error(
        "a new session keyring needs a context to label it with: set RunCommand.context, or \
         leave session_keyring false"
    )]
    KeyringWithoutContext,
    #[error("starting {program}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("opening {path}, the output file of a background command")]
    Output {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("waiting for {program} (pid {pid})")]
    Wait {
        program: String,
        pid: u32,
        #[source]
        source: io::Error,
    },
}

/// What [`run`] refuses before it acts: an empty argv, an environment entry that is not
/// `KEY=VALUE` with a non-empty key. Pure: nothing is touched.
pub fn check(req: &RunCommand) -> Result<(), CommandError> {
    if req.argv.is_empty() {
        return Err(CommandError::Empty);
    }
    for entry in &req.env {
        env_entry(entry)?;
    }
    if req.session_keyring && req.context.is_empty() {
        return Err(CommandError::KeyringWithoutContext);
    }
    Ok(())
}

/// `KEY=VALUE` split at its first `=`, the key not empty.
fn env_entry(entry: &str) -> Result<(&str, &str), CommandError> {
    entry
        .split_once('=')
        .filter(|(k, _)| !k.is_empty())
        .ok_or_else(|| CommandError::BadEnv(entry.to_owned()))
}

/// Runs what the request asks, to its end or (background) just started.
pub fn run(req: &RunCommand, reaper: &Reaper) -> Result<CommandResult, CommandError> {
    check(req)?;
    let program = req.argv.first().ok_or(CommandError::Empty)?.clone();
    let (mut cmd, context) = build(req)?;
    if req.background {
        let (out, err) = background_output(&req.stdout_path)?;
        cmd.stdout(out).stderr(err);
        let started = Instant::now();
        let child = spawn(cmd, context.as_deref(), &program)?;
        let pid = child.id();
        tracing::info!(pid, command = ?req.argv, "started in the background");
        reaper.adopt(child, &program);
        return Ok(CommandResult {
            pid,
            elapsed_ms: started.elapsed().as_millis() as u64,
            ..CommandResult::default()
        });
    }
    let timeout = match req.timeout_ms {
        0 => DEFAULT_TIMEOUT,
        ms => Duration::from_millis(u64::from(ms)),
    };
    cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
    let started = Instant::now();
    let child = spawn(cmd, context.as_deref(), &program)?;
    let pid = child.id();
    tracing::debug!(pid, command = ?req.argv, "started");
    let finished = wait(child, started + timeout, reaper, &program)?;
    let (exit_code, signal) = finished.code_and_signal();
    tracing::info!(pid, exit_code, signal, timed_out = finished.timed_out, command = ?req.argv, "command ended");
    Ok(CommandResult {
        exit_code,
        signal,
        stdout: finished.stdout,
        stderr: finished.stderr,
        timed_out: finished.timed_out,
        pid,
        elapsed_ms: started.elapsed().as_millis() as u64,
    })
}

/// Runs `argv` in the foreground with the agent's own context (for the agent's own uses:
/// systemctl, semodule).
pub fn run_argv(
    argv: &[&str],
    timeout: Duration,
    reaper: &Reaper,
) -> Result<CommandResult, CommandError> {
    run(
        &RunCommand {
            argv: argv.iter().map(|a| (*a).to_owned()).collect(),
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            ..RunCommand::default()
        },
        reaper,
    )
}

fn build(req: &RunCommand) -> Result<(Command, Option<Arc<ExecContext>>), CommandError> {
    let mut cmd = Command::new(&req.argv[0]);
    cmd.args(&req.argv[1..])
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .stdin(Stdio::null());
    // SAFETY: the closure runs in the forked child before exec and only calls setsid, which
    // is async-signal-safe; it cannot fail there (the child leads no group yet).
    unsafe {
        cmd.pre_exec(|| {
            nix::unistd::setsid()?;
            Ok(())
        });
    }
    for entry in &req.env {
        let (key, value) = env_entry(entry)?;
        cmd.env(key, value);
    }
    let cwd = if req.cwd.is_empty() {
        "/"
    } else {
        req.cwd.as_str()
    };
    // Checked here because a chdir failure in the child reads like any other spawn error.
    match std::fs::metadata(cwd) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(CommandError::Cwd {
                path: cwd.into(),
                source: io::Error::from_raw_os_error(libc::ENOTDIR),
            })
        }
        Err(source) => {
            return Err(CommandError::Cwd {
                path: cwd.into(),
                source,
            })
        }
    }
    cmd.current_dir(cwd);
    let context = if req.context.is_empty() {
        None
    } else {
        let context = Arc::new(ExecContext::new(&req.context, req.session_keyring)?);
        let in_child = Arc::clone(&context);
        // SAFETY: the closure runs in the forked child before exec; it makes only the
        // async-signal-safe calls open, write, close and keyctl on memory prepared before the
        // fork (no allocation, no lock).
        unsafe {
            cmd.pre_exec(move || in_child.apply_in_child());
        }
        Some(context)
    };
    Ok((cmd, context))
}

fn spawn(
    mut cmd: Command,
    context: Option<&ExecContext>,
    program: &str,
) -> Result<Child, CommandError> {
    match cmd.spawn() {
        Ok(child) => Ok(child),
        Err(source) => Err(match context.and_then(ExecContext::refusal) {
            Some(refused) => refused.into(),
            None => CommandError::Spawn {
                program: program.to_owned(),
                source,
            },
        }),
    }
}

fn wait(
    mut child: Child,
    deadline: Instant,
    reaper: &Reaper,
    program: &str,
) -> Result<Finished, CommandError> {
    let pid = child.id();
    capture::wait_capturing(&mut child, deadline).map_err(|source| {
        // Whatever went wrong, the child is killed and still ours to reap.
        capture::kill_group(pid as i32);
        reaper.adopt(child, program);
        CommandError::Wait {
            program: program.to_owned(),
            pid,
            source,
        }
    })
}

/// A background command's stdout and stderr: both appended to `path`, or /dev/null.
fn background_output(path: &str) -> Result<(Stdio, Stdio), CommandError> {
    if path.is_empty() {
        return Ok((Stdio::null(), Stdio::null()));
    }
    let path = Path::new(path);
    let open = || -> io::Result<_> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o644)
            .open(path)?;
        let copy = file.try_clone()?;
        Ok((Stdio::from(file), Stdio::from(copy)))
    };
    open().map_err(|source| CommandError::Output {
        path: path.to_owned(),
        source,
    })
}
