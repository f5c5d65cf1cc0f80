//! `cargo xtask bench compare`: crlab against the lab image's criu, in one lab VM run, through
//! the harness's `crlab-lab bench` (the workloads, the table, `bench.json`, the chart).

use anyhow::{Context, Result};
use clap::Args;
use xshell::{cmd, Shell};

use crate::target_dir;
use crate::vm_lab::{self, PolicyArgs};

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Dump/restore repetitions per workload and tool (the table shows the median and spread)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=50))]
    runs: u32,
    #[command(flatten)]
    policy: PolicyArgs,
}

pub fn compare(sh: &Shell, args: &CompareArgs) -> Result<()> {
    let policy = args.policy.checked()?.flags();
    vm_lab::build_payload(sh)?;
    let (lab, agent) = vm_lab::lab_tools(sh)?;
    let policy_dir = crate::workspace_root().join("scenarios/policy");
    let payload = target_dir().join("release");
    let out = target_dir().join("crlab");
    let run_dir = out
        .join("runs")
        .join(format!("bench-{}", std::process::id()));
    let runs = args.runs.to_string();
    cmd!(
        sh,
        "{lab} bench --agent {agent} --policy {policy_dir} --run-dir {run_dir} --payload {payload} --runs {runs} --out {out} {policy...}"
    )
    .run()
    .context("the comparison did not complete (see above)")?;
    Ok(())
}
