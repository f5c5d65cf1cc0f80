//! `cargo xtask policy-diff`: what a container policy change does to checkpoint/restore.
//!
//! Builds both images first (a policy that does not build is an error, named with the
//! compiler's file and line, before any VM boots), runs the catalog under the old policy and
//! under the new one (their failures are data here, not errors), then compares the two
//! reports with `crlab-lab diff`: a table, `target/crlab/policy-diff.md` and
//! `policy-diff.json`; exit 0 when nothing regressed, 1 when a scenario whose expectations
//! held under `--old` fails under `--new`.

use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::Args;
use xshell::{cmd, Shell};

use crate::target_dir;
use crate::vm_lab::{self, PolicyArgs};

#[derive(Debug, Args)]
pub struct PolicyDiffArgs {
    /// The container policy before the change: `lab` or `container-selinux=PATH` (a source
    /// tree, a tarball, or a git checkout as PATH@REV)
    #[arg(long, value_name = "SPEC")]
    pub old: String,
    /// The container policy after the change, as for --old
    #[arg(long, value_name = "SPEC")]
    pub new: String,
    /// The base policy both run on: `refpolicy` (with `lab` only) or `fedora=PATH`
    #[arg(long, value_name = "SPEC")]
    pub distro_policy: Option<String>,
    /// Arguments for the scenario runner, as for vm-test: a FILTER, `--exact`
    #[arg(last = true, value_name = "ARGS")]
    pub harness_args: Vec<String>,
}

/// The two sides, each checked.
fn sides(args: &PolicyDiffArgs) -> Result<[(&'static str, PolicyArgs); 2]> {
    let side = |name: &'static str, spec: &str| -> Result<(&'static str, PolicyArgs)> {
        let p = PolicyArgs {
            distro_policy: args.distro_policy.clone(),
            container_policy: Some(spec.to_string()),
        };
        let checked = p
            .checked()
            .with_context(|| format!("the {name} side (--{name} {spec})"))?;
        Ok((name, checked))
    };
    Ok([side("old", &args.old)?, side("new", &args.new)?])
}

pub fn command(sh: &Shell, args: &PolicyDiffArgs) -> Result<ExitCode> {
    if args.harness_args.iter().any(|a| a == "--list") {
        bail!("policy-diff runs the catalog: use `cargo xtask vm-test -- --list` to list it");
    }
    let sides = sides(args)?;
    let suite = vm_lab::build_payload(sh)?;
    let (lab, agent) = vm_lab::lab_tools(sh)?;
    let policy_dir = crate::workspace_root().join("scenarios/policy");
    // Both images first: a policy that does not build stops here, before any VM boots.
    for (name, policy) in &sides {
        eprintln!("==> policy-diff: the {name} side's image");
        let flags = policy.flags();
        cmd!(
            sh,
            "{lab} image build --agent {agent} --policy {policy_dir} {flags...}"
        )
        .run()
        .with_context(|| {
            format!("the {name} side's policy did not build (an error, not a regression)")
        })?;
    }
    let out = target_dir().join("crlab");
    let mut reports = Vec::new();
    for (name, policy) in &sides {
        eprintln!("==> policy-diff: the catalog under the {name} policy");
        let dir = out.join("policy-diff").join(name);
        let report = dir.join("report.json");
        // A report left by an earlier run must never stand in for this one (nor a junit.xml
        // an older version wrote here read as this run's test failures).
        for stale in [&report, &dir.join("junit.xml")] {
            match std::fs::remove_file(stale) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(e).with_context(|| format!("removing {}", stale.display()))
                }
                _ => {}
            }
        }
        let outcome = vm_lab::run_suite(
            sh,
            &suite,
            policy,
            &args.harness_args,
            &dir,
            vm_lab::Reports::JsonOnly,
            false,
        )?;
        eprintln!("==> the {name} side: {outcome:?} (failures are compared, not errors)");
        if !report.exists() {
            bail!(
                "the {name} side wrote no report ({}): its lab did not start; see the output above",
                report.display()
            );
        }
        reports.push(report);
    }
    eprintln!("==> policy-diff: comparing");
    let (old, new) = (&reports[0], &reports[1]);
    let status = std::process::Command::new(&lab)
        .arg("diff")
        .arg(old)
        .arg(new)
        .arg(&out)
        .status()
        .with_context(|| format!("running {}", lab.display()))?;
    match status.code() {
        Some(0) => Ok(ExitCode::SUCCESS),
        Some(1) => Ok(ExitCode::FAILURE),
        _ => bail!("comparing the two runs failed ({status})"),
    }
}
