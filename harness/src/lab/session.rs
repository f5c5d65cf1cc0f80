//! A lab VM ready for scenarios: image ensured, accelerator chosen, booted or
//! warm-started, agent answering, and the agent brought up to date.

use super::client::{AgentError, Client};
use super::recipe;
use crlab_protocol::{
    AuditRecords, AuditSince, CommandResult, Hello, HelloReply, PowerOff, ReadFile, Reexec,
    RequestKind, ResponseKind, RunCommand, WriteFile,
};
use crlab_vm::machine::{Machine, VmError};
use crlab_vm::qemu::{lab_cmdline, Accel, VmConfig};
use crlab_vm::{accel, image, warm};
use sha2::{Digest, Sha256};
use std::path::PathBuf;
use std::time::{Duration, Instant};

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
    pub cold_boot_timeout: Duration,
}

/// What starting the lab took.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    pub image: Duration,
    pub boot_to_ready: Duration,
    pub warm: bool,
    pub accel: String,
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
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Warm(#[from] warm::WarmError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Agent(#[from] AgentError),
    #[error(transparent)]
    Monitor(#[from] crlab_vm::monitor::MonitorError),
    #[error("reading the agent binary {path}")]
    AgentBinary {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the guest runs SELinux {mode}, the lab needs enforcing (kernel {kernel})")]
    NotEnforcing { mode: String, kernel: String },
    #[error("{0}")]
    Guest(String),
}

/// The agent's systemd unit, baked into the image.
pub const UNIT: &str = include_str!("../../agent/guest/crlab-agent.service");

fn sha256(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl Lab {
    /// Boots (or warm-starts) the lab; `progress` hears about each long step.
    pub fn start(opts: &LabOptions, progress: &mut dyn FnMut(&str)) -> Result<Lab, LabError> {
        let agent = std::fs::read(&opts.agent).map_err(|source| LabError::AgentBinary {
            path: opts.agent.clone(),
            source,
        })?;
        let agent_sha = sha256(&agent);
        let t0 = Instant::now();
        let recipe = recipe::debian(agent.clone(), UNIT, opts.policy_modules.clone());
        let img = image::ensure(&recipe, progress)?;
        let image_time = t0.elapsed();

        let choice = accel::choose(
            &opts.qemu,
            &img.kernel,
            &img.initrd,
            &opts.run_dir,
            Duration::from_secs(6),
        );
        if choice.accel == Accel::Tcg {
            progress(&format!("notice: {}", choice.reason));
        } else {
            progress(&choice.reason);
        }
        let mut config = VmConfig {
            accel: choice.accel,
            memory_mib: opts.memory_mib,
            cpus: opts.cpus,
            kernel: img.kernel.clone(),
            initrd: img.initrd.clone(),
            cmdline: lab_cmdline(""),
            disk: opts.run_dir.join("disk.qcow2"),
            console_log: opts.run_dir.join("console.log"),
            channel_socket: opts.run_dir.join("agent.sock"),
            monitor_socket: opts.run_dir.join("monitor.sock"),
            loadvm: None,
        };
        let cache = crlab_vm::cache::cache_dir().map_err(image::ImageError::from)?;
        let saved = warm::path(
            &cache,
            &warm::key(&img, &warm::qemu_version(&opts.qemu), &config),
        );
        let is_warm = warm::prepare_disk(&img, &saved, &config.disk)?;
        if is_warm {
            config.loadvm = Some(warm::SNAPSHOT.into());
            progress("starting the lab VM from its saved state (warm start)");
        } else {
            progress("booting the lab VM (cold boot; its state is saved for the next runs)");
        }
        let boot = Instant::now();
        let mut machine = Machine::start(&opts.qemu, config)?;
        machine.connect_channel(Duration::from_secs(30))?;
        let mut client = Client::default();
        let timeout = if is_warm {
            Duration::from_secs(60)
        } else {
            opts.cold_boot_timeout
        };
        let mut hello = wait_hello(&mut machine, &mut client, timeout)?;
        if hello.agent_sha256 != agent_sha {
            progress("updating the guest agent");
            // Not /run: systemd mounts it noexec, and the exec would fail with EACCES.
            let path = "/var/lib/crlab/crlab-agent";
            write(&mut machine, &mut client, path, &agent, 0o755)?;
            client.call(
                &mut machine,
                "replacing the agent",
                RequestKind::Reexec(Reexec { path: path.into() }),
                Duration::from_secs(10),
            )?;
            hello = wait_hello(&mut machine, &mut client, Duration::from_secs(30))?;
            if hello.agent_sha256 != agent_sha {
                return Err(LabError::Guest(format!(
                    "the guest agent was not replaced (it still reports sha256 {}): see \
                     `journalctl -u crlab-agent` in the guest",
                    hello.agent_sha256
                )));
            }
        }
        if !is_warm {
            progress("waiting for the guest's services to settle");
            let r = run(
                &mut machine,
                &mut client,
                &["systemctl", "is-system-running", "--wait"],
                Duration::from_secs(300),
            )?;
            let state = String::from_utf8_lossy(&r.stdout).trim().to_string();
            if state != "running" && state != "degraded" {
                return Err(LabError::Guest(format!(
                    "the guest did not settle: systemctl says {state:?}"
                )));
            }
            progress("saving the VM state for warm starts");
            let mut mon = machine.monitor(Duration::from_secs(120))?;
            mon.command("stop", Duration::from_secs(10))?;
            mon.command(
                &format!("savevm {}", warm::SNAPSHOT),
                Duration::from_secs(300),
            )?;
            warm::store(machine.disk(), &saved)?;
            mon.command("cont", Duration::from_secs(10))?;
        }
        let boot_to_ready = boot.elapsed();
        if hello.selinux_mode != "enforcing" {
            return Err(LabError::NotEnforcing {
                mode: hello.selinux_mode.clone(),
                kernel: hello.kernel.clone(),
            });
        }
        Ok(Lab {
            machine,
            client,
            hello,
            timings: Timings {
                image: image_time,
                boot_to_ready,
                warm: is_warm,
                accel: choice.reason,
            },
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

    /// Starts a program in the background; its output goes to `log`; returns its pid.
    /// Starts a program in the background with `env` added to a clean environment.
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

    pub fn qemu_pid(&self) -> Option<u32> {
        self.machine.pid()
    }
}

/// Asks Hello every two seconds until the agent answers or `timeout` passes.
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

fn run(
    machine: &mut Machine,
    client: &mut Client,
    argv: &[&str],
    timeout: Duration,
) -> Result<CommandResult, LabError> {
    run_as(machine, client, argv, "", timeout)
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
            timeout_ms: timeout.as_millis() as u32,
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
