//! `cargo xtask vm-test`: the SELinux conformance suite in the VM lab.
//!
//! Builds the payload (engine, guest agent, workloads) in release, makes sure the
//! lab's host packages are there, then runs the scenario runner (the
//! `scenarios` test of crlab-harness) with `CRLAB_VM=1`: it builds or reuses
//! the cached image, boots or warm-starts the VM and runs the catalog.

use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use xshell::{cmd, Shell};

use crate::{cargo, is_root, prereq, target_dir};

#[derive(Debug, Args)]
pub struct VmTestArgs {
    /// Arguments for the scenario runner, as for any cargo test: a FILTER, `--list`, `--exact`
    #[arg(last = true, value_name = "ARGS")]
    pub harness_args: Vec<String>,
}

/// What a run of the VM suite came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every selected scenario passed.
    Passed,
    /// At least one scenario failed (the runner printed which).
    Failed,
}

/// Runs the VM suite with the scenario runner's arguments.
pub fn run(sh: &Shell, args: &VmTestArgs) -> Result<Outcome> {
    let cargo = cargo();
    let harness_args = &args.harness_args;
    let listing = harness_args.iter().any(|a| a == "--list");
    if !listing {
        prereq::ensure(sh)?;
        prereq::ensure_lab(sh)?;
        if !is_root() {
            bail!("the VM lab builds its image with mmdebstrap and chroot: run `cargo xtask vm-test` as root");
        }
        eprintln!("==> building the payload: crlab, the guest agent, the workloads (release)");
        cmd!(
            sh,
            "{cargo} build --release -p crlab -p crlab-workloads -p crlab-agent --bins"
        )
        .run()?;
    }
    let payload = target_dir().join("release");
    eprintln!("==> running the scenario catalog in the VM lab");
    let status = cmd!(
        sh,
        "{cargo} test --release -p crlab-harness --test scenarios -- {harness_args...}"
    )
    .env("CRLAB_VM", "1")
    .env("CRLAB_PAYLOAD_DIR", &payload)
    .env("CRLAB_REPORT_DIR", target_dir().join("crlab"))
    .run();
    Ok(if status.is_ok() {
        Outcome::Passed
    } else {
        Outcome::Failed
    })
}

/// `cargo xtask vm-test`: exit 0 when the suite passed, 1 when a scenario failed.
pub fn command(sh: &Shell, args: &VmTestArgs) -> Result<ExitCode> {
    match run(sh, args)? {
        Outcome::Passed => Ok(ExitCode::SUCCESS),
        Outcome::Failed => Ok(ExitCode::FAILURE),
    }
}

/// `cargo xtask lab-run`.
#[derive(Debug, clap::Args)]
pub struct LabRunArgs {
    /// The SELinux context to run the command in
    #[arg(long, value_name = "CONTEXT")]
    context: Option<String>,
    /// The command and its arguments
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

pub fn lab_run(sh: &Shell, args: &LabRunArgs) -> Result<()> {
    prereq::ensure(sh)?;
    prereq::ensure_lab(sh)?;
    let cargo = cargo();
    cmd!(
        sh,
        "{cargo} build --release -p crlab-harness -p crlab-agent --bins"
    )
    .run()?;
    let bin = target_dir().join("release");
    let (lab, agent) = (bin.join("crlab-lab"), bin.join("crlab-agent"));
    let policy = crate::workspace_root().join("scenarios/policy");
    let run_dir = target_dir()
        .join("crlab/runs")
        .join(format!("lab-run-{}", std::process::id()));
    let context: Vec<String> = match &args.context {
        Some(c) => vec!["--context".into(), c.clone()],
        None => Vec::new(),
    };
    let command = &args.command;
    cmd!(sh, "{lab} run --agent {agent} --policy {policy} --run-dir {run_dir} {context...} -- {command...}")
        .run()?;
    Ok(())
}

/// `cargo xtask image build|list|clean`, through the harness's `crlab-lab` binary.
pub fn image(sh: &Shell, which: &str) -> Result<()> {
    let cargo = cargo();
    if which == "build" {
        prereq::ensure(sh)?;
        prereq::ensure_lab(sh)?;
        if !is_root() {
            bail!("building the lab image needs root (mmdebstrap, chroot): run it as root");
        }
    }
    cmd!(
        sh,
        "{cargo} build --release -p crlab-harness -p crlab-agent --bins"
    )
    .run()?;
    let bin = target_dir().join("release");
    let lab = bin.join("crlab-lab");
    if which == "build" {
        let agent = bin.join("crlab-agent");
        let policy = crate::workspace_root().join("scenarios/policy");
        cmd!(sh, "{lab} image build --agent {agent} --policy {policy}").run()?;
    } else {
        cmd!(sh, "{lab} image {which}").run()?;
    }
    Ok(())
}
