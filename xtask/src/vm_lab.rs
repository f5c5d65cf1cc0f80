//! `cargo xtask vm-test`: the SELinux conformance suite in the VM lab.
//!
//! Builds the payload (engine, guest agent, workloads) in release, makes sure the
//! lab's host packages are there, then runs the scenario runner (the
//! `scenarios` test of crlab-harness) with `CRLAB_VM=1`: it builds or reuses
//! the cached image, boots or warm-starts the VM and runs the catalog. With `--in-place`
//! it runs the catalog on this machine instead (`CRLAB_IN_PLACE=1`: no VM, no lab image;
//! the harness checks the machine, detects its policies and restores its policy state).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Result};
use clap::Args;
use xshell::{cmd, Shell};

use crate::{cargo, is_root, prereq, target_dir};

#[derive(Debug, Args)]
pub struct VmTestArgs {
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// Run shard I of N: the trials whose scenario name hashes to I (the N shards together
    /// are the catalog, each trial in one); the report records the shard for `report merge`
    #[arg(long, value_name = "I/N", value_parser = parse_shard)]
    pub shard: Option<String>,
    /// Run the catalog on this machine, which must run SELinux enforcing (as root, no VM):
    /// its base and container policy are detected, the modules the run loads are removed
    /// at its end (also after a failure or an interrupt)
    #[arg(long, conflicts_with_all = ["distro_policy", "container_policy"])]
    pub in_place: bool,
    /// Arguments for the scenario runner, as for any cargo test: a FILTER, `--list`, `--exact`
    #[arg(last = true, value_name = "ARGS")]
    pub harness_args: Vec<String>,
}

/// The policies under test. xtask only checks them and passes them on (to the scenarios test
/// as `CRLAB_DISTRO_POLICY` / `CRLAB_CONTAINER_POLICY`, to `crlab-lab` as its flags): the
/// harness parses, builds and records them.
#[derive(Debug, Clone, Default, Args)]
pub struct PolicyArgs {
    /// The base policy: `refpolicy` (Debian's, the default) or `fedora=PATH` (Fedora's
    /// selinux-policy built from PATH: a source tree, a tarball, or a git checkout as PATH@REV)
    #[arg(long, value_name = "SPEC")]
    pub distro_policy: Option<String>,
    /// The container policy: `lab` (the lab's stand-in, the default, on refpolicy) or
    /// `container-selinux=PATH` (built from PATH as above, on fedora=PATH)
    #[arg(long, value_name = "SPEC")]
    pub container_policy: Option<String>,
}

impl PolicyArgs {
    /// The specs checked (known kinds, a PATH that exists, pairs that can work) and with
    /// every PATH made absolute: the harness runs elsewhere (cargo test's directory).
    pub fn checked(&self) -> Result<PolicyArgs> {
        let cwd = std::env::current_dir()?;
        let distro = match self.distro_policy.as_deref() {
            None | Some("") | Some("refpolicy") => None,
            Some(spec) => match spec.strip_prefix("fedora=") {
                Some(path) => Some(format!("fedora={}", source_path(&cwd, path)?)),
                None => bail!(
                    "--distro-policy {spec:?}: use `refpolicy` or `fedora=PATH` (a source \
                     tree, a tarball, or a git checkout as PATH@REV)"
                ),
            },
        };
        let container = match self.container_policy.as_deref() {
            None | Some("") | Some("lab") => None,
            Some(spec) => match spec.strip_prefix("container-selinux=") {
                Some(path) => Some(format!("container-selinux={}", source_path(&cwd, path)?)),
                None => bail!(
                    "--container-policy {spec:?}: use `lab` or `container-selinux=PATH` (a \
                     source tree, a tarball, or a git checkout as PATH@REV)"
                ),
            },
        };
        match (&distro, &container) {
            (Some(_), None) => bail!(
                "--distro-policy fedora=PATH needs --container-policy container-selinux=PATH: \
                 the lab's stand-in declares the container-selinux names that Fedora's policy \
                 already has"
            ),
            (None, Some(_)) => bail!(
                "--container-policy container-selinux=PATH needs --distro-policy fedora=PATH: \
                 container-selinux does not build on Debian's refpolicy"
            ),
            _ => {}
        }
        Ok(PolicyArgs {
            distro_policy: distro,
            container_policy: container,
        })
    }

    /// `--distro-policy SPEC --container-policy SPEC`, for `crlab-lab`.
    pub fn flags(&self) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(d) = &self.distro_policy {
            out.extend(["--distro-policy".to_string(), d.clone()]);
        }
        if let Some(c) = &self.container_policy {
            out.extend(["--container-policy".to_string(), c.clone()]);
        }
        out
    }
}

/// `PATH` or `PATH@REV` with PATH absolute; an error when PATH does not exist.
fn source_path(cwd: &std::path::Path, spec: &str) -> Result<String> {
    let absolute = |p: &str| cwd.join(p).display().to_string();
    if spec.is_empty() {
        bail!("a policy source needs a PATH (a source tree, a tarball, or a git checkout as PATH@REV)");
    }
    if cwd.join(spec).exists() {
        return Ok(absolute(spec));
    }
    if let Some((path, rev)) = spec.rsplit_once('@') {
        if !path.is_empty() && !rev.is_empty() {
            if !cwd.join(path).is_dir() {
                bail!("the policy source {path} (in {spec}) is not a directory: PATH@REV needs a git checkout");
            }
            return Ok(format!("{}@{rev}", absolute(path)));
        }
    }
    bail!("the policy source {spec} does not exist: give a source tree, a tarball, or a git checkout as PATH@REV")
}

/// What a run of the VM suite came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Every selected scenario passed.
    Passed,
    /// At least one scenario failed (the runner printed which).
    Failed,
}

/// `I/N` with 1 <= I <= N (the suite checks it again: this is to fail before the build).
fn parse_shard(text: &str) -> Result<String, String> {
    let bad = || format!("{text:?} is not I/N with 1 <= I <= N: write it as 1/3 (shard 1 of 3)");
    let (i, n) = text.split_once('/').ok_or_else(bad)?;
    let (i, n): (u32, u32) = (i.parse().map_err(|_| bad())?, n.parse().map_err(|_| bad())?);
    if i == 0 || i > n {
        return Err(bad());
    }
    Ok(format!("{i}/{n}"))
}

/// Runs the VM suite with the scenario runner's arguments.
pub fn run(sh: &Shell, args: &VmTestArgs) -> Result<Outcome> {
    let policy = args.policy.checked()?;
    let suite = if args.in_place {
        build_in_place_payload(sh)?
    } else {
        build_payload(sh)?
    };
    let mut harness_args = args.harness_args.clone();
    if let Some(shard) = &args.shard {
        harness_args.splice(0..0, ["--shard".to_string(), shard.clone()]);
    }
    run_suite(
        sh,
        &suite,
        &policy,
        &harness_args,
        &target_dir().join("crlab"),
        Reports::WithJunit,
        args.in_place,
    )
}

/// The payload for a run on this machine: no lab packages (no VM, no image), and no root
/// check here (the harness refuses with every reason at once). Returns the suite's binary.
fn build_in_place_payload(sh: &Shell) -> Result<PathBuf> {
    prereq::ensure(sh)?;
    build_release(sh)
}

/// Installs what the lab needs and builds the payload (engine, agent, workloads, release) with
/// the runner; returns the suite's binary.
pub fn build_payload(sh: &Shell) -> Result<PathBuf> {
    prereq::ensure(sh)?;
    prereq::ensure_lab(sh)?;
    if !is_root() {
        bail!("the VM lab builds its image with mmdebstrap and chroot: run `cargo xtask vm-test` as root");
    }
    build_release(sh)
}

/// The one release build of what any lab run uses: the engine, the agent, the workloads, the
/// lab's host tool and the scenario suite's binary, in one cargo invocation. Every command
/// that needs any of them builds this same selection, so cargo resolves features once and
/// builds each crate once: two selections (the payload, then `cargo test` of the suite)
/// built 40 of their 91 shared crates twice, with different features. Returns the suite's
/// binary, which the runner runs directly.
pub fn build_release(sh: &Shell) -> Result<PathBuf> {
    let cargo = cargo();
    eprintln!(
        "==> building crlab, the agent, the workloads, the lab tool and the suite (release, one build)"
    );
    let messages = cmd!(
        sh,
        "{cargo} build --release -p crlab -p crlab-workloads -p crlab-agent -p crlab-harness --bins --test scenarios --message-format=json-render-diagnostics"
    )
    .read()?;
    let suite = suite_executable(&messages)
        .ok_or_else(|| anyhow::anyhow!("cargo named no executable for the scenarios test"))?;
    Ok(PathBuf::from(suite))
}

/// Which reports a suite run writes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reports {
    /// `report.json` and `junit.xml`: the run is a test.
    WithJunit,
    /// `report.json` only: the run's failures are data for a comparison (a policy-diff
    /// side), and must not read as test failures to a CI that collects junit files.
    JsonOnly,
}

/// Runs the scenario catalog under `policy` (already checked), its reports into `reports`.
pub fn run_suite(
    sh: &Shell,
    suite: &std::path::Path,
    policy: &PolicyArgs,
    harness_args: &[String],
    reports: &std::path::Path,
    kind: Reports,
    in_place: bool,
) -> Result<Outcome> {
    let payload = target_dir().join("release");
    eprintln!(
        "==> running the scenario catalog {}",
        if in_place {
            "in place, on this machine"
        } else {
            "in the VM lab"
        }
    );
    // As `cargo test` would run it: from the harness's directory.
    let _dir = sh.push_dir(crate::workspace_root().join("harness"));
    let status = cmd!(sh, "{suite} {harness_args...}")
        .env("CRLAB_VM", "1")
        .env("CRLAB_IN_PLACE", if in_place { "1" } else { "0" })
        .env(
            "CRLAB_DISTRO_POLICY",
            policy.distro_policy.as_deref().unwrap_or("refpolicy"),
        )
        .env(
            "CRLAB_CONTAINER_POLICY",
            policy.container_policy.as_deref().unwrap_or("lab"),
        )
        .env("CRLAB_PAYLOAD_DIR", &payload)
        .env("CRLAB_REPORT_DIR", reports)
        .env(
            "CRLAB_REPORT_JUNIT",
            if kind == Reports::WithJunit { "1" } else { "0" },
        )
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
    #[command(flatten)]
    policy: PolicyArgs,
    /// The command and its arguments
    #[arg(required = true, last = true)]
    command: Vec<String>,
}

pub fn lab_run(sh: &Shell, args: &LabRunArgs) -> Result<()> {
    let policy = args.policy.checked()?.flags();
    prereq::ensure(sh)?;
    prereq::ensure_lab(sh)?;
    let (lab, agent) = lab_tools(sh)?;
    let policy_dir = crate::workspace_root().join("scenarios/policy");
    let run_dir = target_dir()
        .join("crlab/runs")
        .join(format!("lab-run-{}", std::process::id()));
    let context: Vec<String> = match &args.context {
        Some(c) => vec!["--context".into(), c.clone()],
        None => Vec::new(),
    };
    let command = &args.command;
    cmd!(sh, "{lab} run --agent {agent} --policy {policy_dir} --run-dir {run_dir} {context...} {policy...} -- {command...}")
        .run()?;
    Ok(())
}

/// `cargo xtask in-place-proof`.
#[derive(Debug, clap::Args)]
pub struct InPlaceProofArgs {
    /// The scenarios of the second to fourth runs (one of them must load a scenario module)
    #[arg(long, default_value = "systemd-service")]
    filter: String,
    /// The trial of the second run that fails on purpose
    #[arg(long, default_value = "crlab::systemd-service-with-module")]
    fail: String,
}

/// Builds everything the proof copies into the guest, runs it through `crlab-lab
/// in-place-proof`, then compares the whole catalog's outcomes in place with the VM mode's
/// (`target/crlab/report.json`, when a `vm-test` left one) through `crlab-lab diff`.
pub fn in_place_proof(sh: &Shell, args: &InPlaceProofArgs) -> Result<ExitCode> {
    let suite = build_payload(sh)?;
    let (lab, agent) = lab_tools(sh)?;
    let root = crate::workspace_root();
    let policy_dir = root.join("scenarios/policy");
    let payload = target_dir().join("release");
    let crlab_dir = target_dir().join("crlab");
    let out = crlab_dir.join("in-place-proof");
    let run_dir = crlab_dir
        .join("runs")
        .join(format!("in-place-proof-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let (filter, fail) = (&args.filter, &args.fail);
    let proved = cmd!(sh, "{lab} in-place-proof --agent {agent} --policy {policy_dir} --run-dir {run_dir} --payload {payload} --suite {suite} --root {root} --out {out} --filter {filter} --fail {fail}")
        .run();
    let vm_report = crlab_dir.join("report.json");
    let in_place = out.join("run-1/report.json");
    if vm_report.exists() && in_place.exists() {
        eprintln!(
            "==> the catalog in place against the VM mode's {}",
            vm_report.display()
        );
        let diff = out.join("against-vm");
        // Exit 1 there means a trial that passed in the VM fails in place.
        let compared = cmd!(sh, "{lab} diff {vm_report} {in_place} {diff}").run();
        if compared.is_err() {
            eprintln!("the in-place results differ from the VM mode's: see above");
            return Ok(ExitCode::FAILURE);
        }
    } else if !in_place.exists() {
        eprintln!(
            "the proof left no in-place report to compare ({})",
            in_place.display()
        );
    } else {
        eprintln!(
            "note: no VM-mode report at {} to compare with (run `cargo xtask vm-test` first)",
            vm_report.display()
        );
    }
    Ok(if proved.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The test executable in cargo's JSON messages (`"executable":"PATH"` of the scenarios
/// test's artifact).
fn suite_executable(messages: &str) -> Option<String> {
    messages
        .lines()
        .filter(|l| {
            l.contains("\"reason\":\"compiler-artifact\"") && l.contains("\"name\":\"scenarios\"")
        })
        .find_map(|l| {
            let at = l.find("\"executable\":\"")? + "\"executable\":\"".len();
            let rest = &l[at..];
            Some(rest[..rest.find('"')?].to_string())
        })
}

/// Builds the lab's host tool and the guest agent (release); returns their paths.
pub fn lab_tools(sh: &Shell) -> Result<(std::path::PathBuf, std::path::PathBuf)> {
    build_release(sh)?;
    let bin = target_dir().join("release");
    Ok((bin.join("crlab-lab"), bin.join("crlab-agent")))
}

/// `cargo xtask image build|list|clean`, through the harness's `crlab-lab` binary.
pub fn image(sh: &Shell, which: &str, policy: &PolicyArgs) -> Result<()> {
    let cargo = cargo();
    let policy = policy.checked()?.flags();
    if which == "key" {
        // Only the harness's binary: no root, no lab packages, no agent.
        cmd!(
            sh,
            "{cargo} build --release -p crlab-harness --bin crlab-lab"
        )
        .run()?;
        let lab = target_dir().join("release/crlab-lab");
        let policy_dir = crate::workspace_root().join("scenarios/policy");
        cmd!(sh, "{lab} image key --policy {policy_dir} {policy...}").run()?;
        return Ok(());
    }
    if which == "build" {
        prereq::ensure(sh)?;
        prereq::ensure_lab(sh)?;
        if !is_root() {
            bail!("building the lab image needs root (mmdebstrap, chroot): run it as root");
        }
    }
    let (lab, agent) = lab_tools(sh)?;
    if which == "build" {
        let policy_dir = crate::workspace_root().join("scenarios/policy");
        cmd!(
            sh,
            "{lab} image build --agent {agent} --policy {policy_dir} {policy...}"
        )
        .run()?;
    } else {
        cmd!(sh, "{lab} image {which}").run()?;
    }
    Ok(())
}

#[cfg(test)]
mod policy_tests {
    use super::*;

    fn args(distro: Option<&str>, container: Option<&str>) -> PolicyArgs {
        PolicyArgs {
            distro_policy: distro.map(str::to_string),
            container_policy: container.map(str::to_string),
        }
    }

    #[test]
    fn the_default_passes_nothing() {
        let checked = args(None, Some("lab")).checked().expect("the default");
        assert_eq!(checked.flags(), Vec::<String>::new());
        let checked = args(Some("refpolicy"), None)
            .checked()
            .expect("the default");
        assert!(checked.distro_policy.is_none());
    }

    #[test]
    fn paths_become_absolute_and_keep_their_revision() {
        let dir = std::env::temp_dir().join(format!("xtask-policy-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("cs")).expect("test tree");
        std::fs::write(dir.join("f.tar.gz"), b"").expect("test file");
        let checked = args(
            Some(&format!("fedora={}", dir.join("f.tar.gz").display())),
            Some(&format!(
                "container-selinux={}@main",
                dir.join("cs").display()
            )),
        )
        .checked();
        let missing = args(
            Some("fedora=/nonexistent/f.tar.gz"),
            Some("container-selinux=/nonexistent/cs@main"),
        )
        .checked();
        std::fs::remove_dir_all(&dir).expect("remove test tree");
        let flags = checked.expect("existing paths").flags();
        assert_eq!(flags[0], "--distro-policy");
        assert_eq!(
            flags[3],
            format!("container-selinux={}@main", dir.join("cs").display())
        );
        let e = missing.expect_err("missing paths").to_string();
        assert!(e.contains("/nonexistent/f.tar.gz does not exist"), "{e}");
        let cwd = std::env::current_dir().expect("cwd");
        assert_eq!(
            source_path(&cwd, "Cargo.toml").expect("exists"),
            cwd.join("Cargo.toml").display().to_string()
        );
    }

    #[test]
    fn unknown_kinds_and_impossible_pairs_are_refused() {
        let e = args(Some("debian"), None)
            .checked()
            .unwrap_err()
            .to_string();
        assert!(e.contains("fedora=PATH"), "{e}");
        let e = args(None, Some("selinux"))
            .checked()
            .unwrap_err()
            .to_string();
        assert!(e.contains("container-selinux=PATH"), "{e}");
        let e = args(Some("fedora=Cargo.toml"), None)
            .checked()
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("needs --container-policy container-selinux"),
            "{e}"
        );
        let e = args(None, Some("container-selinux=Cargo.toml"))
            .checked()
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs --distro-policy fedora=PATH"), "{e}");
    }
}

#[cfg(test)]
mod shard_tests {
    use super::parse_shard;

    #[test]
    fn shards_are_i_of_n_and_bad_ones_say_how_to_write_them() {
        assert_eq!(parse_shard("2/3").as_deref(), Ok("2/3"));
        assert_eq!(parse_shard("1/1").as_deref(), Ok("1/1"));
        for bad in ["0/3", "4/3", "x", "1/0", "/3", "1/", "1/3/3", "-1/3"] {
            let e = parse_shard(bad).expect_err(bad);
            assert!(e.contains("write it as 1/3 (shard 1 of 3)"), "{bad}: {e}");
        }
    }
}

#[cfg(test)]
mod proof_tests {
    use super::suite_executable;

    #[test]
    fn the_suites_executable_is_found_in_cargos_messages() {
        let msgs = concat!(
            r#"{"reason":"compiler-artifact","target":{"name":"crlab"},"executable":"/t/crlab"}"#,
            "\n",
            r#"{"reason":"compiler-artifact","target":{"kind":["test"],"name":"scenarios"},"executable":"/t/deps/scenarios-abc","fresh":true}"#,
            "\n",
            r#"{"reason":"build-finished","success":true}"#,
            "\n"
        );
        assert_eq!(
            suite_executable(msgs).as_deref(),
            Some("/t/deps/scenarios-abc")
        );
        assert_eq!(suite_executable(r#"{"reason":"build-finished"}"#), None);
    }
}
