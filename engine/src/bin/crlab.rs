//! The `crlab` command line: dump, restore, show, check (the kernel, or the restore of a dump).

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use crlab::dump::{self, DumpOptions, SocketLabel};
use crlab::image::{Existing, Trust};
use crlab::restore::{self, ContextOrder, RestoreOptions};
use nix::sys::wait::{waitpid, WaitStatus};
use nix::unistd::Pid;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Checkpoint/restore of Linux processes, SELinux included.
#[derive(Parser)]
#[command(name = "crlab", version, about)]
struct Cli {
    /// More logging (-v info, -vv debug); CRLAB_LOG overrides.
    #[arg(short, long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Dump a process and its descendants to a directory of images.
    Dump {
        /// The root of the tree to dump.
        #[arg(long, value_name = "PID")]
        tree: i32,
        /// Where to write the images: a new directory (created 0700) or an empty one.
        #[arg(long, value_name = "DIR")]
        images_dir: PathBuf,
        /// Replace what the images directory holds (an older dump): the new dump is written
        /// beside it and swapped in whole once complete, so a failed dump leaves the old one.
        #[arg(long)]
        replace: bool,
        /// Let the processes go on after the dump instead of killing them.
        #[arg(long)]
        leave_running: bool,
        /// UNSAFE, a negative control for the lab: leave the transport socket with the
        /// engine's own SELinux context instead of the dumped process's. Under
        /// container-selinux a container_t process may not connectto it, so the dump fails.
        #[arg(long)]
        unsafe_unlabelled_transport: bool,
    },
    /// Restore a dumped tree with its original pids.
    Restore {
        #[arg(long, value_name = "DIR")]
        images_dir: PathBuf,
        /// Accept images that another user than the caller or root could have written (see
        /// SECURITY.md): the restore acts on them with the caller's privileges.
        #[arg(long)]
        allow_untrusted_images: bool,
        /// How long to wait, in seconds, for pids of the dump still held by zombies.
        #[arg(long, value_name = "SECONDS", default_value_t = restore::DEFAULT_PID_WAIT.as_secs_f64())]
        pid_wait: f64,
        /// Return once the tree runs, instead of waiting for its root to exit.
        #[arg(long)]
        detach: bool,
        /// Write the root's pid to this file once it runs.
        #[arg(long, value_name = "FILE")]
        pidfile: Option<PathBuf>,
        /// Restore into this SELinux context instead of the dumped one.
        #[arg(long, value_name = "CONTEXT")]
        lsm_profile: Option<String>,
        /// UNSAFE, a negative control for the lab: write each process's SELinux context
        /// after creating its threads. The kernel then allows only a bounded transition, so
        /// restoring a multi-threaded process into another context fails.
        #[arg(long)]
        unsafe_context_after_threads: bool,
    },
    /// Print the images of a dump as JSON.
    Show {
        #[arg(long, value_name = "DIR")]
        images_dir: PathBuf,
        /// Read images that another user than the caller or root could have written.
        #[arg(long)]
        allow_untrusted_images: bool,
    },
    /// Check the kernel features and SELinux state the engine relies on, or with
    /// --images-dir whether SELinux lets this process restore a dump.
    ///
    /// With --images-dir, the kernel's own access decisions (no audit record) say, for each
    /// process of the dump, whether this process's context may write the process's context
    /// as `crlab restore` does: `process { setcurrent }` on itself, `process { dyntransition }`
    /// and, as the restored process's tracer, `process { ptrace }` to the target context. The
    /// last line says `restore allowed` or `restore refused: ...`; the exit status is 1 when a
    /// process would be refused.
    Check {
        /// A dump to check the restore of, instead of probing the kernel.
        #[arg(long, value_name = "DIR")]
        images_dir: Option<PathBuf>,
        /// Check the restore into this SELinux context instead of the dumped ones, as
        /// `crlab restore --lsm-profile` would do it.
        #[arg(long, value_name = "CONTEXT", requires = "images_dir")]
        lsm_profile: Option<String>,
        /// Read images that another user than the caller or root could have written.
        #[arg(long, requires = "images_dir")]
        allow_untrusted_images: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let default = match cli.verbose {
        0 => "warn",
        1 => "info",
        _ => "debug",
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("CRLAB_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("crlab: error: {e:#}");
            match e.downcast_ref::<Stopped>() {
                // 128 + the signal, as a shell reports a process the signal ended.
                Some(Stopped(signo)) => ExitCode::from(128 + u8::try_from(*signo).unwrap_or(0)),
                None => ExitCode::from(1),
            }
        }
    }
}

fn run(command: Command) -> Result<ExitCode> {
    match command {
        Command::Dump {
            tree,
            images_dir,
            replace,
            leave_running,
            unsafe_unlabelled_transport,
        } => {
            let opts = DumpOptions {
                root: tree,
                images_dir: images_dir.clone(),
                leave_running,
                socket_label: if unsafe_unlabelled_transport {
                    eprintln!("crlab: warning: --unsafe-unlabelled-transport: the transport socket keeps the engine's context");
                    SocketLabel::EngineContext
                } else {
                    SocketLabel::ProcessContext
                },
                existing: if replace {
                    Existing::Replace
                } else {
                    Existing::Refuse
                },
            };
            let s = interruptible(|| dump::dump(&opts).map_err(Box::new)).with_context(|| {
                format!("dumping process tree {tree} to {}", images_dir.display())
            })?;
            eprintln!(
                "crlab: dumped {} process(es), {} thread(s), {} MiB of pages to {}",
                s.processes,
                s.threads,
                s.page_bytes >> 20,
                images_dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore {
            images_dir,
            allow_untrusted_images,
            pid_wait,
            detach,
            pidfile,
            lsm_profile,
            unsafe_context_after_threads,
        } => {
            let pid_wait = Duration::try_from_secs_f64(pid_wait)
                .context("--pid-wait takes a number of seconds, 0 or more")?;
            let opts = RestoreOptions {
                images_dir: images_dir.clone(),
                trust: trust(allow_untrusted_images),
                pid_wait,
                lsm_profile,
                context_order: if unsafe_context_after_threads {
                    eprintln!("crlab: warning: --unsafe-context-after-threads: contexts are written after the threads exist");
                    ContextOrder::AfterThreads
                } else {
                    ContextOrder::BeforeThreads
                },
            };
            let r = interruptible(|| restore::restore(&opts).map_err(Box::new))
                .with_context(|| format!("restoring from {}", images_dir.display()))?;
            for note in &r.notes {
                eprintln!("crlab: note: {note}");
            }
            if let Some(path) = &pidfile {
                std::fs::write(path, format!("{}\n", r.root_pid))
                    .with_context(|| format!("writing the pid file {}", path.display()))?;
            }
            if detach {
                return Ok(ExitCode::SUCCESS);
            }
            wait_for(r.root_pid)
        }
        Command::Show {
            images_dir,
            allow_untrusted_images,
        } => {
            let json = crlab::image::show_with(&images_dir, trust(allow_untrusted_images))
                .with_context(|| format!("reading {}", images_dir.display()))?;
            println!("{}", serde_json::to_string_pretty(&json)?);
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            images_dir: Some(images_dir),
            lsm_profile,
            allow_untrusted_images,
        } => {
            let trust = trust(allow_untrusted_images);
            let outcome = crlab::check::restore::check(&images_dir, lsm_profile.as_deref(), trust)
                .with_context(|| {
                    format!(
                        "checking whether SELinux lets this process restore {}",
                        images_dir.display()
                    )
                })?;
            print!("{}", outcome.render());
            let refused = outcome.refused();
            if refused > 0 {
                bail!(
                    "SELinux would refuse to restore {refused} process{} of {} (see the table above)",
                    if refused == 1 { "" } else { "es" },
                    images_dir.display()
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Check {
            images_dir: None, ..
        } => {
            let checks = crlab::check::run_checks();
            print!("{}", crlab::check::render(&checks));
            if checks.iter().any(|c| c.required && !c.ok) {
                bail!("a feature crlab needs is missing (see the table above)");
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn trust(allow_untrusted_images: bool) -> Trust {
    if allow_untrusted_images {
        Trust::Anyone
    } else {
        Trust::OwnerOnly
    }
}

/// A dump or restore was stopped by SIGINT, SIGTERM or SIGHUP, after undoing its work: crlab
/// exits as the signal asked, with status 128 + its number.
#[derive(Debug)]
struct Stopped(i32);

impl std::fmt::Display for Stopped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stopped by signal {}", self.0)
    }
}

impl std::error::Error for Stopped {}

/// Runs `work` with SIGINT, SIGTERM and SIGHUP recorded instead of ending crlab, so the
/// library can undo what it did; a failure after such a signal becomes [`Stopped`] (with the
/// library's error as its context). A signal that arrives once the work succeeded does not
/// undo it: the work is done.
fn interruptible<T, E>(work: impl FnOnce() -> Result<T, E>) -> Result<T>
where
    E: std::error::Error + Send + Sync + 'static,
{
    crlab::interrupt::catch().context("catching SIGINT, SIGTERM and SIGHUP")?;
    let result = work();
    crlab::interrupt::release().context("restoring SIGINT, SIGTERM and SIGHUP")?;
    match (result, crlab::interrupt::requested()) {
        (Ok(v), _) => Ok(v),
        (Err(e), Some(signo)) => Err(anyhow::Error::new(e).context(Stopped(signo))),
        (Err(e), None) => Err(e.into()),
    }
}

/// Waits for the restored root and exits as it did.
fn wait_for(pid: i32) -> Result<ExitCode> {
    loop {
        match waitpid(Pid::from_raw(pid), None) {
            // An exit status is the low byte of the code the process passed to exit.
            Ok(WaitStatus::Exited(_, code)) => return Ok(ExitCode::from(code.to_le_bytes()[0])),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Ok(ExitCode::from(128 + sig as u8)),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => bail!("waiting for restored process {pid}: {e}"),
        }
    }
}
