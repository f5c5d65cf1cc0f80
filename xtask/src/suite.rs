//! `cargo xtask test`: the whole test suite in order, each step announced and timed, then a summary.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::vm_lab::{self, Outcome, PolicyArgs, VmTestArgs};
use crate::{cargo, ci_lint, error_text, fuzz, is_root, prereq};

/// How a step ended when it did not fail.
enum Done {
    Passed,
    /// It could not run here, for this reason (shown in the summary).
    NotHere(&'static str),
}

struct Step {
    name: &'static str,
    run: fn(&Shell) -> Result<Done>,
    /// When it fails, the steps after it cannot run.
    gate: bool,
}

#[rustfmt::skip]
const STEPS: &[Step] = &[
    Step { name: "host prerequisites", run: prerequisites, gate: true },
    Step { name: "cargo fmt --all --check", run: fmt, gate: false },
    Step { name: "cargo clippy --workspace --all-targets -- -D warnings", run: clippy, gate: false },
    Step { name: "actionlint .github/workflows", run: actionlint, gate: false },
    Step { name: "tmt lint (plans/)", run: tmt_lint, gate: false },
    Step { name: "cargo test --workspace", run: host_tests, gate: false },
    Step { name: "cargo xtask fuzz --time 30 (every fuzz target)", run: fuzz_short, gate: false },
    Step { name: "VM suite (cargo xtask vm-test)", run: vm_suite, gate: false },
    Step { name: "VM suite on fedora + container-selinux", run: vm_suite_fedora, gate: false },
    Step { name: "policy-diff: a removed rule regresses, no change is none", run: policy_diff_shown, gate: false },
];

/// The environment variable naming the folder with the pristine policy sources
/// (`container-selinux-*.tar.gz`, `fedora-selinux-policy-*.tar.gz`); `.ci/run` sets it.
const FIXTURES: &str = "CRLAB_POLICY_FIXTURES";
const NO_FIXTURES: &str = "CRLAB_POLICY_FIXTURES is unset (the policy sources to test)";

#[derive(Debug, PartialEq, Eq)]
enum Status {
    Passed,
    Failed,
    NotRun,
    NotHere(&'static str),
}

pub fn run(sh: &Shell) -> Result<ExitCode> {
    let mut results: Vec<(&'static str, Status, Duration)> = Vec::new();
    let mut blocked = false;
    for (i, step) in STEPS.iter().enumerate() {
        if blocked {
            results.push((step.name, Status::NotRun, Duration::ZERO));
            continue;
        }
        eprintln!("\n==> [{}/{}] {}", i + 1, STEPS.len(), step.name);
        let start = Instant::now();
        let status = match (step.run)(sh) {
            Ok(Done::Passed) => Status::Passed,
            Ok(Done::NotHere(why)) => {
                eprintln!("not run here: {why}");
                Status::NotHere(why)
            }
            Err(err) => {
                eprintln!(
                    "{}",
                    error_text(&err.context(format!("{} failed", step.name)))
                );
                blocked = step.gate;
                Status::Failed
            }
        };
        results.push((step.name, status, start.elapsed()));
    }
    eprintln!("\n{}", summary(&results));
    let failed = results.iter().any(|(_, s, _)| *s == Status::Failed);
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn summary(results: &[(&'static str, Status, Duration)]) -> String {
    let width = results
        .iter()
        .map(|(name, ..)| name.len())
        .max()
        .unwrap_or(0);
    let mut out = format!(
        "summary of cargo xtask test:\n  {:<width$}  {:<8}  {:>8}\n",
        "step", "status", "time"
    );
    for (name, status, time) in results {
        let (word, note) = match status {
            Status::Passed => ("ok", ""),
            Status::Failed => ("FAILED", ""),
            Status::NotRun => ("not run", "an earlier step it needs failed"),
            Status::NotHere(why) => ("not run", *why),
        };
        let secs = format!("{:.1}s", time.as_secs_f64());
        let line = format!("  {name:<width$}  {word:<8}  {secs:>8}  {note}");
        out += line.trim_end();
        out.push('\n');
    }
    let failed = results
        .iter()
        .filter(|(_, s, _)| *s == Status::Failed)
        .count();
    out += &match failed {
        0 => "result: ok".to_owned(),
        n => format!("result: FAILED ({n} step(s) failed)"),
    };
    out
}

fn prerequisites(sh: &Shell) -> Result<Done> {
    prereq::ensure(sh)?;
    Ok(Done::Passed)
}

fn fmt(sh: &Shell) -> Result<Done> {
    let cargo = cargo();
    cmd!(sh, "{cargo} fmt --all --check").run()?;
    Ok(Done::Passed)
}

fn clippy(sh: &Shell) -> Result<Done> {
    let cargo = cargo();
    cmd!(
        sh,
        "{cargo} clippy --workspace --all-targets -- -D warnings"
    )
    .run()?;
    Ok(Done::Passed)
}

fn actionlint(sh: &Shell) -> Result<Done> {
    ci_lint::actionlint(sh)?;
    Ok(Done::Passed)
}

fn tmt_lint(sh: &Shell) -> Result<Done> {
    ci_lint::tmt_lint(sh)?;
    Ok(Done::Passed)
}

fn host_tests(sh: &Shell) -> Result<Done> {
    if !is_root() {
        bail!(
            "the engine's end-to-end tests need root (ptrace of other processes, clone3 with \
             set_tid, writing SELinux attributes): run `sudo -E cargo xtask test` (or \
             `cargo test --workspace` as root)"
        );
    }
    let cargo = cargo();
    cmd!(sh, "{cargo} test --workspace").run()?;
    Ok(Done::Passed)
}

/// A short run of every fuzz target, so that a regression of a decoder is caught.
fn fuzz_short(sh: &Shell) -> Result<Done> {
    fuzz::suite_step(sh)?;
    Ok(Done::Passed)
}

fn vm_suite(sh: &Shell) -> Result<Done> {
    let args = VmTestArgs {
        policy: Default::default(),
        shard: None,
        in_place: false,
        harness_args: Vec::new(),
    };
    match vm_lab::run(sh, &args)? {
        Outcome::Passed => Ok(Done::Passed),
        Outcome::Failed => anyhow::bail!("a scenario of the VM suite failed (see the table above)"),
    }
}

/// The fixture tarball whose name starts with `prefix`.
fn fixture(dir: &std::path::Path, prefix: &str) -> Result<std::path::PathBuf> {
    let found: Vec<std::path::PathBuf> = std::fs::read_dir(dir)
        .with_context(|| format!("{FIXTURES}={}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".tar.gz"))
        })
        .collect();
    match found.as_slice() {
        [one] => Ok(one.clone()),
        _ => bail!(
            "expected one {prefix}*.tar.gz in {}, found {found:?}",
            dir.display()
        ),
    }
}

/// The fixtures' folder, absolute, if the variable is set; under CI (`CI` set) it must be.
fn fixtures() -> Result<Option<std::path::PathBuf>> {
    match std::env::var_os(FIXTURES).filter(|d| !d.is_empty()) {
        Some(dir) => Ok(Some(crate::workspace_root().join(dir))),
        None if std::env::var_os("CI").is_some() => {
            bail!("{NO_FIXTURES}: under CI the policy steps must run (.ci/run sets it)")
        }
        None => Ok(None),
    }
}

/// The policy flags for Fedora's policy and container-selinux from the fixtures.
fn fedora_policy(dir: &std::path::Path) -> Result<PolicyArgs> {
    let distro = fixture(dir, "fedora-selinux-policy-")?;
    let container = fixture(dir, "container-selinux-")?;
    Ok(PolicyArgs {
        distro_policy: Some(format!("fedora={}", distro.display())),
        container_policy: Some(format!("container-selinux={}", container.display())),
    })
}

fn vm_suite_fedora(sh: &Shell) -> Result<Done> {
    let Some(dir) = fixtures()? else {
        return Ok(Done::NotHere(NO_FIXTURES));
    };
    let args = VmTestArgs {
        policy: fedora_policy(&dir)?,
        shard: None,
        in_place: false,
        harness_args: Vec::new(),
    };
    match vm_lab::run(sh, &args)? {
        Outcome::Passed => Ok(Done::Passed),
        Outcome::Failed => {
            bail!("a scenario failed on fedora + container-selinux (see the table above)")
        }
    }
}

/// The trials the policy-diff demonstration runs: crlab's of every container scenario, whose
/// restores the runtime's `dyntransition` decides (criu's fail at dump under both policies).
const DIFF_FILTER: &str = "crlab::container-";

/// The container scenarios whose restore moves a process into `container_t`: each must be
/// named as regressed when the runtime may no longer `dyntransition` there.
const MUST_REGRESS: [&str; 4] = [
    "container-1-thread",
    "container-n-threads",
    "container-new-context",
    "container-non-root",
];

/// `policy-diff` shown on a real change: container-selinux with the runtime's `dyntransition`
/// to container domains removed must regress the container scenarios, naming the denial;
/// the same policy on both sides must change nothing.
fn policy_diff_shown(sh: &Shell) -> Result<Done> {
    let Some(dir) = fixtures()? else {
        return Ok(Done::NotHere(NO_FIXTURES));
    };
    let fedora = fedora_policy(&dir)?;
    let distro = fedora.distro_policy.clone();
    let pristine = fixture(&dir, "container-selinux-")?;
    let scratch = tempfile_dir("crlab-policy-diff")?;
    let copy = mutated_copy(sh, &pristine, scratch.path())?;
    let xtask = std::env::current_exe()?;
    let run = |old: &std::path::Path, new: &std::path::Path| -> Result<(i32, String)> {
        let mut c = std::process::Command::new(&xtask);
        c.arg("policy-diff")
            .arg("--old")
            .arg(format!("container-selinux={}", old.display()))
            .arg("--new")
            .arg(format!("container-selinux={}", new.display()));
        if let Some(d) = &distro {
            c.arg("--distro-policy").arg(d);
        }
        c.arg("--").arg(DIFF_FILTER);
        let status = c.status().context("running cargo xtask policy-diff")?;
        let md = std::fs::read_to_string(crate::target_dir().join("crlab/policy-diff.md"))
            .unwrap_or_default();
        Ok((status.code().unwrap_or(-1), md))
    };
    let (code, md) = run(&pristine, &copy)?;
    eprintln!("{md}");
    if code != 1 {
        bail!("policy-diff of the fixture against the copy without dyntransition exited {code}, not 1 (a regression)");
    }
    if !md.contains("dyntransition") {
        bail!("policy-diff.md does not name the dyntransition denial:\n{md}");
    }
    for scenario in MUST_REGRESS {
        if !md.contains(&format!("### `crlab::{scenario}`: REGRESSED")) {
            bail!("policy-diff.md does not name crlab::{scenario} as regressed:\n{md}");
        }
    }
    let (code, md) = run(&pristine, &pristine)?;
    eprintln!("{md}");
    if code != 0 || !md.contains("no change") {
        bail!("policy-diff of the fixture against itself exited {code} and said:\n{md}");
    }
    Ok(Done::Passed)
}

/// A scratch directory removed when dropped.
struct Scratch(std::path::PathBuf);

impl Scratch {
    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn tempfile_dir(prefix: &str) -> Result<Scratch> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    Ok(Scratch(dir))
}

/// The rules the mutation removes `dyntransition` from: the runtime domains' own grant and
/// the one it has as an unconfined domain (container_runtime_t is one).
const DYNTRANSITION_RULES: [(&str, &str); 2] = [
    (
        "allow container_runtime_domain container_domain:process { dyntransition transition };",
        "allow container_runtime_domain container_domain:process transition;",
    ),
    (
        "allow unconfined_domain_type container_domain:process {transition dyntransition};",
        "allow unconfined_domain_type container_domain:process transition;",
    ),
];

/// A copy of the container-selinux tarball's tree with the runtime's `dyntransition` to
/// container domains removed; returns the copy's source directory.
fn mutated_copy(
    sh: &Shell,
    tarball: &std::path::Path,
    into: &std::path::Path,
) -> Result<std::path::PathBuf> {
    cmd!(sh, "tar -xzf {tarball} -C {into}").run()?;
    let tree = std::fs::read_dir(into)?
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("container.te").is_file())
        .with_context(|| format!("no container.te in {}", tarball.display()))?;
    let te = tree.join("container.te");
    let mut text = std::fs::read_to_string(&te)?;
    for (rule, without) in DYNTRANSITION_RULES {
        if !text.contains(rule) {
            bail!(
                "{} no longer holds the rule {rule:?}: update the mutation",
                te.display()
            );
        }
        text = text.replace(rule, without);
    }
    std::fs::write(&te, text)?;
    Ok(tree)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_names_every_step_and_its_status() {
        let results = [
            (
                "host prerequisites",
                Status::Passed,
                Duration::from_millis(20),
            ),
            (
                "cargo test --workspace",
                Status::Failed,
                Duration::from_secs(61),
            ),
            ("VM suite", Status::NotRun, Duration::ZERO),
        ];
        let text = summary(&results);
        assert_eq!(
            text,
            "summary of cargo xtask test:\n  \
             step                    status        time\n  \
             host prerequisites      ok            0.0s\n  \
             cargo test --workspace  FAILED       61.0s\n  \
             VM suite                not run       0.0s  an earlier step it needs failed\n\
             result: FAILED (1 step(s) failed)"
        );
    }
}
