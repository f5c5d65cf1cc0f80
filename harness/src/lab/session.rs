//! A lab VM ready for scenarios: brought up by `crlab_vm::boot`, with the agent's steps as
//! its readiness (hello, the agent brought up to date, the guest settled, SELinux
//! enforcing), and the requests the runner makes of the agent.

use super::client::{AgentError, Client};
use super::recipe;
use crlab_protocol::{
    AuditRecords, AuditSince, CommandResult, Hello, HelloReply, PowerOff, ReadFile, Reexec,
    RequestKind, ResponseKind, RunCommand, WriteFile,
};
use crlab_vm::boot::{self, BootError, BootSpec, Start};
use crlab_vm::machine::{Machine, VmError};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use crlab_vm::boot::Timings;

/// How to start the lab.
#[derive(Debug, Clone)]
pub struct LabOptions {
    pub qemu: String,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Per-run files (overlay, console log, sockets); removed by the caller.
    pub run_dir: PathBuf,
    /// The agent binary the guest must run.
    pub agent: PathBuf,
    /// SELinux policy modules to build into the image (name.cil, contents).
    pub policy_modules: Vec<(String, Vec<u8>)>,
    /// The policies under test, resolved (`recipe::LabPolicy::from_env`; its `info()` is
    /// what the report records).
    pub policy: recipe::LabPolicy,
    pub cold_boot_timeout: Duration,
}

/// A running lab VM.
pub struct Lab {
    machine: Machine,
    client: Client,
    pub hello: HelloReply,
    pub timings: Timings,
}

#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error(transparent)]
    Boot(#[from] BootError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error("reading the agent binary {path}")]
    AgentBinary {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "the guest agent was not replaced (it still reports sha256 {sha256}): see \
         `journalctl -u crlab-agent` in the guest"
    )]
    AgentNotReplaced { sha256: String },
    #[error(
        "the guest did not settle: `systemctl is-system-running` says {state:?}, not running \
         or degraded"
    )]
    NotSettled { state: String },
    #[error("the guest runs SELinux {mode}, the lab needs enforcing (kernel {kernel})")]
    NotEnforcing { mode: String, kernel: String },
}

/// The agent's systemd unit, baked into the image.
pub const UNIT: &str = include_str!("../../agent/guest/crlab-agent.service");

/// Where an agent sent over the channel is written. Not /run: systemd mounts it noexec, and
/// the exec would fail with EACCES.
const UPDATED_AGENT_PATH: &str = "/var/lib/crlab/crlab-agent";

/// How long a warm-started guest's agent may take to answer.
const WARM_HELLO: Duration = Duration::from_secs(60);

fn sha256(data: &[u8]) -> String {
    format!("{:x}", Sha256::digest(data))
}

impl Lab {
    /// One line saying how the lab came up: warm or cold, how long it took, the guest's
    /// kernel, SELinux mode and the agent's context.
    pub fn ready_line(&self) -> String {
        format!(
            "lab ready: {} start, boot-to-ready {:.1} s (image {:.1} s); guest kernel {}, SELinux {}, agent context {}",
            if self.timings.warm { "warm" } else { "cold" },
            self.timings.boot_to_ready.as_secs_f64(),
            self.timings.image.as_secs_f64(),
            self.hello.kernel,
            self.hello.selinux_mode,
            self.hello.context
        )
    }

    /// Boots (or warm-starts) the lab; `progress` hears about each long step.
    pub fn start(opts: &LabOptions, progress: &mut dyn FnMut(&str)) -> Result<Lab, LabError> {
        let agent = std::fs::read(&opts.agent).map_err(|source| LabError::AgentBinary {
            path: opts.agent.clone(),
            source,
        })?;
        let recipe = recipe::for_policy(
            agent.clone(),
            UNIT,
            opts.policy_modules.clone(),
            &opts.policy,
        );
        let spec = BootSpec {
            qemu: opts.qemu.clone(),
            memory_mib: opts.memory_mib,
            cpus: opts.cpus,
            run_dir: opts.run_dir.clone(),
        };
        let mut client = Client::default();
        let booted = boot::boot(&spec, &recipe, progress, |machine, start, progress| {
            let hello_timeout = match start {
                Start::Warm => WARM_HELLO,
                Start::Cold => opts.cold_boot_timeout,
            };
            ready(machine, &mut client, start, &agent, hello_timeout, progress)
        })?;
        Ok(Lab {
            machine: booted.machine,
            client,
            hello: booted.ready,
            timings: booted.timings,
        })
    }

    pub fn run(
        &mut self,
        argv: &[&str],
        context: &str,
        timeout: Duration,
    ) -> Result<CommandResult, LabError> {
        run_as(&mut self.machine, &mut self.client, argv, context, timeout)
    }

    /// Starts a program in the background with `env` added to a clean environment; its
    /// output goes to `log`; returns its pid.
    pub fn spawn(
        &mut self,
        argv: &[&str],
        env: &[&str],
        context: &str,
        log: &str,
    ) -> Result<u32, LabError> {
        let r = self.client.call(
            &mut self.machine,
            &format!("starting {}", argv.join(" ")),
            RequestKind::Run(RunCommand {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                context: context.into(),
                timeout_ms: 0,
                env: env.iter().map(|s| s.to_string()).collect(),
                cwd: "/".into(),
                background: true,
                stdout_path: log.into(),
            }),
            Duration::from_secs(30),
        )?;
        match r {
            Some(ResponseKind::Run(c)) => Ok(c.pid),
            _ => Err(AgentError::Unexpected {
                what: "spawn".into(),
            }
            .into()),
        }
    }

    pub fn write_file(&mut self, path: &str, data: &[u8], mode: u32) -> Result<(), LabError> {
        write(&mut self.machine, &mut self.client, path, data, mode)
    }

    pub fn read_file(&mut self, path: &str) -> Result<Vec<u8>, LabError> {
        match self.client.call(
            &mut self.machine,
            &format!("reading {path}"),
            RequestKind::ReadFile(ReadFile { path: path.into() }),
            Duration::from_secs(30),
        )? {
            Some(ResponseKind::File(f)) => Ok(f.data),
            _ => Err(AgentError::Unexpected {
                what: "read".into(),
            }
            .into()),
        }
    }

    pub fn audit_since(&mut self, marker: u64) -> Result<AuditRecords, LabError> {
        match self.client.call(
            &mut self.machine,
            "collecting audit records",
            RequestKind::Audit(AuditSince { marker }),
            Duration::from_secs(30),
        )? {
            Some(ResponseKind::Audit(a)) => Ok(a),
            _ => Err(AgentError::Unexpected {
                what: "audit".into(),
            }
            .into()),
        }
    }

    pub fn console_tail(&self, n: usize) -> String {
        self.machine.console_tail(n)
    }

    /// Powers the guest off and stops QEMU.
    pub fn shutdown(mut self) {
        let _ = self.client.call(
            &mut self.machine,
            "powering off",
            RequestKind::PowerOff(PowerOff {}),
            Duration::from_secs(5),
        );
        self.machine.shutdown();
    }
}

/// The agent's steps of readiness: its hello; the host's agent binary sent and exec'd when
/// the guest runs another; after a cold boot, the guest's services settled; SELinux
/// enforcing (checked before a cold boot's state is saved, so no refused state is kept).
fn ready(
    machine: &mut Machine,
    client: &mut Client,
    start: Start,
    agent: &[u8],
    hello_timeout: Duration,
    progress: &mut dyn FnMut(&str),
) -> Result<HelloReply, LabError> {
    let agent_sha = sha256(agent);
    let mut hello = wait_hello(machine, client, hello_timeout)?;
    if hello.agent_sha256 != agent_sha {
        progress("updating the guest agent");
        write(machine, client, UPDATED_AGENT_PATH, agent, 0o755)?;
        client.call(
            machine,
            "replacing the agent",
            RequestKind::Reexec(Reexec {
                path: UPDATED_AGENT_PATH.into(),
            }),
            Duration::from_secs(10),
        )?;
        hello = wait_hello(machine, client, Duration::from_secs(30))?;
        if hello.agent_sha256 != agent_sha {
            return Err(LabError::AgentNotReplaced {
                sha256: hello.agent_sha256,
            });
        }
    }
    if start == Start::Cold {
        progress("waiting for the guest's services to settle");
        let r = run_as(
            machine,
            client,
            &["systemctl", "is-system-running", "--wait"],
            "",
            Duration::from_secs(300),
        )?;
        let state = String::from_utf8_lossy(&r.stdout).trim().to_string();
        if state != "running" && state != "degraded" {
            return Err(LabError::NotSettled { state });
        }
    }
    if hello.selinux_mode != "enforcing" {
        return Err(LabError::NotEnforcing {
            mode: hello.selinux_mode,
            kernel: hello.kernel,
        });
    }
    Ok(hello)
}

/// Asks Hello, again after each call that timed out (at most 5 s each), until the agent
/// answers or `timeout` passes.
fn wait_hello(
    machine: &mut Machine,
    client: &mut Client,
    timeout: Duration,
) -> Result<HelloReply, LabError> {
    let start = Instant::now();
    loop {
        let left = timeout.saturating_sub(start.elapsed());
        match client.call(
            machine,
            "waiting for the guest agent",
            RequestKind::Hello(Hello {}),
            left.min(Duration::from_secs(5)),
        ) {
            Ok(Some(ResponseKind::Hello(h))) => return Ok(h),
            Ok(_) => {
                return Err(AgentError::Unexpected {
                    what: "hello".into(),
                }
                .into())
            }
            // The agent is not up yet; ask again (a late reply to this one is skipped).
            Err(AgentError::Vm(VmError::Timeout { .. })) if start.elapsed() < timeout => {}
            Err(e) => return Err(e.into()),
        }
    }
}

fn run_as(
    machine: &mut Machine,
    client: &mut Client,
    argv: &[&str],
    context: &str,
    timeout: Duration,
) -> Result<CommandResult, LabError> {
    let r = client.call(
        machine,
        &format!("running {}", argv.join(" ")),
        RequestKind::Run(RunCommand {
            argv: argv.iter().map(|s| s.to_string()).collect(),
            context: context.into(),
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            env: vec![],
            cwd: "/".into(),
            background: false,
            stdout_path: String::new(),
        }),
        timeout + Duration::from_secs(10),
    )?;
    match r {
        Some(ResponseKind::Run(c)) => Ok(c),
        _ => Err(AgentError::Unexpected { what: "run".into() }.into()),
    }
}

/// Writes a file in the guest, in chunks that fit a frame.
fn write(
    machine: &mut Machine,
    client: &mut Client,
    path: &str,
    data: &[u8],
    mode: u32,
) -> Result<(), LabError> {
    const CHUNK: usize = 4 << 20;
    let mut first = true;
    for chunk in data.chunks(CHUNK).chain(data.is_empty().then_some(&[][..])) {
        client.call(
            machine,
            &format!("writing {path}"),
            RequestKind::WriteFile(WriteFile {
                path: path.into(),
                data: chunk.to_vec(),
                append: !first,
                mode,
            }),
            Duration::from_secs(60),
        )?;
        first = false;
    }
    Ok(())
}
