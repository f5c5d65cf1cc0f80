//! A lab ready for scenarios: a VM brought up by `crlab_vm::boot`, with the agent's steps as
//! its readiness (hello, the agent brought up to date, the guest settled, SELinux
//! enforcing), or this machine itself ([`Lab::start_in_place`]: a local agent, the machine's
//! policy state recorded and restored by [`super::host`]); and the requests the runner
//! makes of the agent, the same for both.

use super::client::{AgentError, Client, Link};
use super::host::{self, HostError, Ledger};
use super::recipe;
use crate::trial::GUEST_BIN;
use crlab_protocol::{
    AuditRecords, AuditSince, CommandResult, FileOp, FileOps, Hello, HelloReply, KillUnder,
    PowerOff, ReadFile, Reexec, RequestKind, ResponseKind, RunCommand, SendSignal, WaitGone,
    WriteAt, WriteFd, WriteFile,
};
use crlab_vm::boot::{self, BootError, BootSpec, Start};
use crlab_vm::local::LocalAgent;
use crlab_vm::machine::{Machine, VmError};
use sha2::{Digest, Sha256};
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
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

/// How to run the lab on this machine (the in-place mode).
#[derive(Debug, Clone)]
pub struct InPlaceOptions {
    /// The agent binary to run here.
    pub agent: PathBuf,
    /// Where the agent's log goes; removed by the caller.
    pub run_dir: PathBuf,
    /// The lab's modules for the detected base (`recipe::LabPolicy`'s), loaded for the run.
    pub lab_modules: Vec<(String, Vec<u8>)>,
}

/// What carries the agent's channel.
enum Transport {
    Vm(Box<Machine>),
    Local(LocalAgent),
}

impl Transport {
    fn link(&mut self) -> &mut dyn Link {
        match self {
            Transport::Vm(m) => &mut **m,
            Transport::Local(a) => a,
        }
    }
}

/// Where the runner's files go on the lab's machine, and how policy modules are loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The payload's binaries.
    pub bin: String,
    /// Where module files are written for semodule (which runs in `semanage_t`, and may read
    /// `/tmp` but not `/var/lib`).
    pub modules: String,
    /// The policy-store priority modules are loaded at (`semodule -X`); None: semodule's
    /// default, in a VM whose disk is thrown away.
    pub priority: Option<u16>,
    /// The modules (`NAME.cil`) the image holds precompiled, each alone, as a binary policy
    /// in `crlab_vm::image::POLICY_VARIANTS_DIR` (with the image's own as `base`): loading
    /// one replaces a `semodule` rebuild. None in place.
    pub variants: Vec<String>,
}

impl Place {
    fn vm(variants: Vec<String>) -> Place {
        Place {
            bin: GUEST_BIN.into(),
            modules: "/tmp".into(),
            priority: None,
            variants,
        }
    }

    /// A run on this machine: private directories named by the runner's pid.
    fn in_place(pid: u32) -> Place {
        Place {
            bin: format!("/opt/crlab-in-place-{pid}"),
            modules: format!("/tmp/crlab-in-place-{pid}"),
            priority: Some(host::PRIORITY),
            variants: Vec::new(),
        }
    }
}

/// A running lab: a VM, or this machine.
pub struct Lab {
    transport: Transport,
    client: Client,
    place: Place,
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
    #[error(transparent)]
    Host(#[from] HostError),
    #[error("making the directory {path}")]
    Dir {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("loading the lab's modules ({command}) failed ({code}): {stderr}")]
    LabModules {
        command: String,
        code: i32,
        stderr: String,
    },
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
        if let Transport::Local(_) = self.transport {
            return format!(
                "lab ready: in place on this machine, agent up in {:.1} s; kernel {}, SELinux {}, agent context {}",
                self.timings.boot_to_ready.as_secs_f64(),
                self.hello.kernel,
                self.hello.selinux_mode,
                self.hello.context
            );
        }
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
            transport: Transport::Vm(Box::new(booted.machine)),
            client,
            place: Place::vm(opts.policy.variant_names()),
            hello: booted.ready,
            timings: booted.timings,
        })
    }

    /// Runs the lab on this machine: refuses unless it can ([`host::preflight`]), removes
    /// what a killed run left, makes the run's private directories, starts the agent here,
    /// and loads the lab's modules for the machine's base; everything it loads or makes is
    /// recorded first and undone by [`Lab::shutdown`] (or an interrupt, see
    /// [`host::handle_interrupts`]), also when this fails halfway.
    pub fn start_in_place(
        opts: &InPlaceOptions,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Lab, LabError> {
        host::preflight()?;
        host::clean_leftover(Path::new(host::STATE_FILE), progress)?;
        let place = Place::in_place(std::process::id());
        let mut ledger = Ledger::new(Path::new(host::STATE_FILE));
        // The trials' directories, when this run makes them.
        for dir in ["/var/tmp/crlab", "/run/crlab"] {
            if !Path::new(dir).exists() {
                ledger.record_dir(dir)?;
            }
        }
        for dir in [&place.bin, &place.modules] {
            ledger.record_dir(dir)?;
        }
        host::set_active(host::Active {
            ledger,
            agent_pgid: None,
            bin_dir: place.bin.clone(),
        });
        let started = Lab::bring_up_here(opts, place, progress);
        if started.is_err() {
            if let Err(e) = host::finish(progress) {
                progress(&format!("error: {e}"));
            }
        }
        started
    }

    fn bring_up_here(
        opts: &InPlaceOptions,
        place: Place,
        progress: &mut dyn FnMut(&str),
    ) -> Result<Lab, LabError> {
        for (dir, mode) in [(&place.bin, 0o755), (&place.modules, 0o700)] {
            // Not recursive: a directory that exists already is not ours.
            std::fs::DirBuilder::new()
                .mode(mode)
                .create(dir)
                .map_err(|source| LabError::Dir {
                    path: dir.clone(),
                    source,
                })?;
        }
        let t = Instant::now();
        let agent = LocalAgent::start(
            &opts.agent,
            &["--stdio", "--poweroff-exits"],
            &opts.run_dir.join("agent.log"),
        )
        .map_err(AgentError::from)?;
        let pgid = agent.pid().and_then(|p| i32::try_from(p).ok());
        host::with_active(|a| a.agent_pgid = pgid);
        let mut lab = Lab {
            transport: Transport::Local(agent),
            client: Client::default(),
            place,
            hello: HelloReply::default(),
            timings: Timings {
                image: Duration::ZERO,
                boot_to_ready: Duration::ZERO,
                warm: false,
                accel: "none (in place, on this machine)".into(),
            },
        };
        lab.hello = match lab.client.call(
            lab.transport.link(),
            "waiting for the local agent",
            RequestKind::Hello(Hello {}),
            Duration::from_secs(30),
        )? {
            Some(ResponseKind::Hello(h)) => h,
            _ => {
                return Err(AgentError::Unexpected {
                    what: "hello".into(),
                }
                .into())
            }
        };
        if lab.hello.selinux_mode != "enforcing" {
            return Err(LabError::NotEnforcing {
                mode: lab.hello.selinux_mode.clone(),
                kernel: lab.hello.kernel.clone(),
            });
        }
        if !opts.lab_modules.is_empty() {
            let names: Vec<String> = opts
                .lab_modules
                .iter()
                .map(|(n, _)| n.trim_end_matches(".cil").to_string())
                .collect();
            progress(&format!(
                "loading the lab's modules for this base at priority {}: {}",
                host::PRIORITY,
                names.join(" ")
            ));
            lab.will_load(&names)?;
            let mut command = format!("semodule -X {}", host::PRIORITY);
            for (name, data) in &opts.lab_modules {
                let path = format!("{}/{name}", lab.place.modules);
                lab.write_file(&path, data, 0o644)?;
                command += &format!(" -i {path}");
            }
            let r = lab.run(&["/bin/sh", "-c", &command], "", Duration::from_secs(600))?;
            if r.timed_out || r.exit_code != 0 {
                return Err(LabError::LabModules {
                    command,
                    code: if r.timed_out { -2 } else { r.exit_code },
                    stderr: String::from_utf8_lossy(&r.stderr).trim().to_string(),
                });
            }
        }
        lab.timings.boot_to_ready = t.elapsed();
        Ok(lab)
    }

    /// Where the runner's files go, and how modules are loaded.
    pub fn place(&self) -> &Place {
        &self.place
    }

    /// Whether the lab is this machine.
    pub fn in_place(&self) -> bool {
        matches!(self.transport, Transport::Local(_))
    }

    /// Records a transient systemd unit about to be started (in place: in the state file,
    /// stopped at the end; in a VM there is nothing to restore).
    pub fn will_start_unit(&mut self, unit: &str) -> Result<(), LabError> {
        if !self.in_place() {
            return Ok(());
        }
        match host::with_active(|a| a.ledger.record_unit(unit)) {
            Some(r) => Ok(r?),
            None => Err(HostError::Policy(
                "no in-place run is recorded: the unit would not be stopped".into(),
            )
            .into()),
        }
    }

    /// Records policy modules about to be loaded (in place: in the state file, before they
    /// are; in a VM there is nothing to restore).
    pub fn will_load(&mut self, names: &[String]) -> Result<(), LabError> {
        if !self.in_place() || names.is_empty() {
            return Ok(());
        }
        match host::with_active(|a| a.ledger.record_modules(names)) {
            Some(r) => Ok(r?),
            None => Err(HostError::Policy(
                "no in-place run is recorded: the modules would not be removed".into(),
            )
            .into()),
        }
    }

    pub fn run(
        &mut self,
        argv: &[&str],
        context: &str,
        timeout: Duration,
    ) -> Result<CommandResult, LabError> {
        run_as(
            self.transport.link(),
            &mut self.client,
            argv,
            context,
            timeout,
        )
    }

    /// Starts a program in the background with `env` added to a clean environment; its
    /// output goes to `log`; returns its pid. With `session_keyring` it first joins a new
    /// session keyring labelled with `context`, as a container runtime's container does.
    pub fn spawn(
        &mut self,
        argv: &[&str],
        env: &[&str],
        context: &str,
        session_keyring: bool,
        log: &str,
    ) -> Result<u32, LabError> {
        let r = self.client.call(
            self.transport.link(),
            &format!("starting {}", argv.join(" ")),
            RequestKind::Run(RunCommand {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                context: context.into(),
                timeout_ms: 0,
                env: env.iter().map(|s| s.to_string()).collect(),
                cwd: "/".into(),
                background: true,
                stdout_path: log.into(),
                session_keyring,
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
        write(self.transport.link(), &mut self.client, path, data, mode)
    }

    /// File system changes the agent makes itself, in order, the first failure ending them
    /// (`FileOps`); `what` names them in an error.
    pub fn file_ops(&mut self, what: &str, ops: Vec<FileOp>) -> Result<(), LabError> {
        self.client.call(
            self.transport.link(),
            what,
            RequestKind::FileOps(FileOps { ops }),
            Duration::from_secs(60),
        )?;
        Ok(())
    }

    /// Kills every process that runs from `dir` (not the agent) and waits until each is gone
    /// or a zombie, up to 10 s (`KillUnder`); returns the pids killed.
    pub fn kill_under(&mut self, dir: &str) -> Result<Vec<u32>, LabError> {
        match self.client.call(
            self.transport.link(),
            &format!("kill what runs from {dir}"),
            RequestKind::KillUnder(KillUnder {
                dir: dir.into(),
                timeout_ms: 10_000,
            }),
            Duration::from_secs(30),
        )? {
            Some(ResponseKind::Killed(k)) => Ok(k.pids),
            _ => Err(AgentError::Unexpected {
                what: "kill_under".into(),
            }
            .into()),
        }
    }

    /// Waits until no `/proc/PID` exists for each of `pids` in turn, up to `each` for each
    /// (`WaitGone`).
    pub fn wait_gone(&mut self, pids: &[u32], each: Duration) -> Result<(), LabError> {
        let deadline = each * u32::try_from(pids.len()).unwrap_or(u32::MAX);
        self.client.call(
            self.transport.link(),
            "wait for the processes to be gone",
            RequestKind::WaitGone(WaitGone {
                pids: pids.to_vec(),
                timeout_ms: u32::try_from(each.as_millis()).unwrap_or(u32::MAX),
            }),
            deadline + Duration::from_secs(10),
        )?;
        Ok(())
    }

    /// Writes `data` at `offset` of the existing file `path` (`WriteAt`).
    pub fn write_at(&mut self, path: &str, offset: u64, data: &[u8]) -> Result<(), LabError> {
        self.client.call(
            self.transport.link(),
            &format!("write at offset {offset} of {path}"),
            RequestKind::WriteAt(WriteAt {
                path: path.into(),
                offset,
                data: data.to_vec(),
            }),
            Duration::from_secs(30),
        )?;
        Ok(())
    }

    /// Writes `data` into descriptor `fd` of process `pid`, opened non-blocking (`WriteFd`).
    pub fn write_fd(&mut self, pid: u32, fd: i32, data: &[u8]) -> Result<(), LabError> {
        self.client.call(
            self.transport.link(),
            &format!("write into /proc/{pid}/fd/{fd}"),
            RequestKind::WriteFd(WriteFd {
                pid,
                fd,
                data: data.to_vec(),
            }),
            Duration::from_secs(30),
        )?;
        Ok(())
    }

    /// Sends `signal` to `pid` (`SendSignal`).
    pub fn signal(&mut self, pid: u32, signal: i32) -> Result<(), LabError> {
        self.client.call(
            self.transport.link(),
            &format!("send signal {signal} to pid {pid}"),
            RequestKind::Signal(SendSignal { pid, signal }),
            Duration::from_secs(30),
        )?;
        Ok(())
    }

    pub fn read_file(&mut self, path: &str) -> Result<Vec<u8>, LabError> {
        match self.client.call(
            self.transport.link(),
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
            self.transport.link(),
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

    /// The console's tail (in place: the agent's log).
    pub fn console_tail(&self, n: usize) -> String {
        match &self.transport {
            Transport::Vm(m) => m.console_tail(n),
            Transport::Local(a) => a.log_tail(n),
        }
    }

    /// Powers the guest off and stops QEMU; in place, ends the agent and restores the
    /// machine's policy state ([`Lab::finish`] says what it removed).
    pub fn shutdown(self) {
        if let Err(e) = self.finish(&mut |m| tracing::info!("{m}")) {
            tracing::error!("{e}");
        }
    }

    /// [`Lab::shutdown`], saying what it undid on this machine through `say`; an error when
    /// the machine's policy state could not be restored (the message says what to do).
    pub fn finish(mut self, say: &mut dyn FnMut(&str)) -> Result<(), LabError> {
        let _ = self.client.call(
            self.transport.link(),
            "powering off",
            RequestKind::PowerOff(PowerOff {}),
            Duration::from_secs(5),
        );
        match self.transport {
            Transport::Vm(m) => {
                m.shutdown();
                Ok(())
            }
            Transport::Local(a) => {
                a.shutdown();
                // Reaped: its group id is nobody's to kill any more.
                host::with_active(|active| active.agent_pgid = None);
                Ok(host::finish(say)?)
            }
        }
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
    machine: &mut dyn Link,
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
            session_keyring: false,
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
    machine: &mut dyn Link,
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
