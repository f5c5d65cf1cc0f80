//! `cargo xtask report merge`: the shards' reports of one run combined into one table and
//! report (through the harness's `crlab-lab report merge`, which owns the report format).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Args, Subcommand};
use xshell::{cmd, Shell};

use crate::{cargo, target_dir};

#[derive(Debug, Subcommand)]
pub enum ReportCommand {
    /// Merge the shards' reports (`--shard I/N` runs) into one table and report
    ///
    /// Each PATH is a report.json or a directory searched for report.json files (an artifact
    /// download: one directory per shard). Prints the merged table and writes report.json,
    /// junit.xml and merge.md (Markdown, for a job summary) into --out. Exits 1 when a shard
    /// is missing, its lab did not start or a trial failed; 2 when the reports are not the
    /// shards of one run (different N or base policy, a shard twice, a trial in a wrong
    /// shard).
    Merge(MergeArgs),
}

#[derive(Debug, Args)]
pub struct MergeArgs {
    /// Where the merged report.json, junit.xml and merge.md go
    #[arg(long, value_name = "DIR", default_value = "target/crlab/merged")]
    pub out: PathBuf,
    /// The shards' report.json files or directories holding them
    #[arg(required = true, value_name = "PATH")]
    pub paths: Vec<PathBuf>,
}

pub fn command(sh: &Shell, cmd: &ReportCommand) -> Result<ExitCode> {
    let ReportCommand::Merge(args) = cmd;
    // The paths are the user's, relative to where they are; the shell is at the root.
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let out = cwd.join(&args.out);
    let paths: Vec<PathBuf> = args.paths.iter().map(|p| cwd.join(p)).collect();
    let cargo = cargo();
    cmd!(
        sh,
        "{cargo} build --release -p crlab-harness --bin crlab-lab"
    )
    .run()?;
    let lab = target_dir().join("release/crlab-lab");
    let status = std::process::Command::new(&lab)
        .arg("report")
        .arg("merge")
        .arg(&out)
        .args(&paths)
        .status()
        .with_context(|| format!("running {}", lab.display()))?;
    match status.code() {
        Some(0) => Ok(ExitCode::SUCCESS),
        Some(1) => Ok(ExitCode::FAILURE),
        _ => bail!("the shards' reports could not be merged ({status}): see the error above"),
    }
}
