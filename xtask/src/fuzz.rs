//! `cargo xtask fuzz`: every fuzz target (cargo-fuzz, nightly) run for a time box, one after
//! another, with bounds on memory, on each allocation and on the time of one input; a table of
//! executions, executions per second, corpus and result; a failure names the input to
//! reproduce it with.
//!
//! The targets live in two cargo-fuzz crates outside the workspace: `engine/fuzz` (the image
//! decoders: one file's framing, one file's message, the inventory, a whole directory as
//! `crlab show` and the other readers read it) and `harness/fuzz` (the guest channel's frame
//! decoder and the agent's request handling, decode and check only). Each target starts from
//! its committed seeds (`seeds/<target>`, from a real dump and real agent traffic) and grows
//! its own corpus (`corpus/<target>`, not committed).

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::{prereq, target_dir, workspace_root};

/// One fuzz target: its cargo-fuzz crate (relative to the workspace root) and its name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Target {
    pub crate_dir: &'static str,
    pub name: &'static str,
}

/// Every target, in the order they run.
#[rustfmt::skip]
pub const TARGETS: &[Target] = &[
    Target { crate_dir: "engine/fuzz", name: "framing" },
    Target { crate_dir: "engine/fuzz", name: "image_file" },
    Target { crate_dir: "engine/fuzz", name: "inventory" },
    Target { crate_dir: "engine/fuzz", name: "show" },
    Target { crate_dir: "harness/fuzz", name: "frame" },
    Target { crate_dir: "harness/fuzz", name: "agent_request" },
];

/// The fuzzing process may use this much memory (libFuzzer's `-rss_limit_mb`).
pub const RSS_LIMIT_MB: u32 = 1024;
/// No single allocation may be larger (`-malloc_limit_mb`): an input of a few KiB has no
/// business asking for more. The channel's frames are bounded at 16 MiB by design.
pub const MALLOC_LIMIT_MB: u32 = 64;
/// One input taking longer than this is a hang (`-timeout`).
pub const HANG_SECS: u32 = 10;

/// The time box of each target when none is given.
pub const DEFAULT_SECS: u64 = 60;

#[derive(Debug, clap::Args)]
pub struct FuzzArgs {
    /// Seconds each target runs
    #[arg(long, value_name = "S", default_value_t = DEFAULT_SECS)]
    pub time: u64,
    /// The targets to run (default: all): framing, image_file, inventory, show, frame,
    /// agent_request
    #[arg(value_name = "TARGET")]
    pub targets: Vec<String>,
}

/// How one target's run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Crash,
    Hang,
    /// Over the memory or allocation bound.
    Oom,
    /// It did not run to its end for another reason (the build, a missing directory).
    Error,
}

/// What one run reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub executions: Option<u64>,
    pub exec_per_sec: Option<u64>,
    /// The corpus at the end: units and their total size, as libFuzzer prints it (`20/38Kb`).
    pub corpus: Option<String>,
    pub verdict: Verdict,
    /// The input that made it fail.
    pub artifact: Option<String>,
}

pub fn command(sh: &Shell, args: &FuzzArgs) -> Result<ExitCode> {
    let targets = select(&args.targets)?;
    Ok(if run(sh, &targets, args.time)? {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The targets named (all when none is), in table order; an unknown name is an error.
pub fn select(names: &[String]) -> Result<Vec<Target>> {
    if names.is_empty() {
        return Ok(TARGETS.to_vec());
    }
    for name in names {
        if !TARGETS.iter().any(|t| t.name == name) {
            let known: Vec<&str> = TARGETS.iter().map(|t| t.name).collect();
            bail!(
                "no fuzz target {name:?}; the targets are {}",
                known.join(", ")
            );
        }
    }
    Ok(TARGETS
        .iter()
        .filter(|t| names.iter().any(|n| n == t.name))
        .copied()
        .collect())
}

/// Builds the targets' crates, runs each target for `secs`, prints the table; `Ok(false)`
/// when a target crashed, hung, went over a bound or did not run.
pub fn run(sh: &Shell, targets: &[Target], secs: u64) -> Result<bool> {
    let started = Instant::now();
    prereq::ensure_fuzz(sh)?;
    let root = workspace_root();
    let mut crates: Vec<&str> = targets.iter().map(|t| t.crate_dir).collect();
    crates.dedup();
    for krate in crates {
        let building = Instant::now();
        let dir = root.join(krate);
        eprintln!("building the fuzz targets of {krate} (nightly, sanitizer: address)");
        nightly(sh)
            .args(["fuzz", "build", "--debug-assertions", "--fuzz-dir"])
            .arg(&dir)
            .run()
            .with_context(|| format!("building the fuzz targets of {krate}"))?;
        eprintln!("built {krate} in {:.0?}", building.elapsed());
    }
    let built = started.elapsed();
    let mut rows = Vec::new();
    for target in targets {
        eprintln!("fuzzing {} for {secs} s", target.name);
        let report = run_one(sh, &root, *target, secs)?;
        rows.push((*target, report));
    }
    eprintln!("\n{}", table(&rows));
    eprintln!(
        "{} target(s), {secs} s each: {:.0?} in all, {:.0?} of it building",
        rows.len(),
        started.elapsed(),
        built
    );
    let mut ok = true;
    for (target, report) in &rows {
        if report.verdict == Verdict::Ok {
            continue;
        }
        ok = false;
        let dir = root.join(target.crate_dir);
        match &report.artifact {
            Some(artifact) => eprintln!(
                "{}: {:?}; reproduce with `cargo +nightly fuzz run --fuzz-dir {} {} {artifact}`",
                target.name,
                report.verdict,
                dir.display(),
                target.name
            ),
            None => eprintln!(
                "{}: {:?}; see {}",
                target.name,
                report.verdict,
                run_dir(*target).join(LOG).display()
            ),
        }
    }
    Ok(ok)
}

/// libFuzzer's output, in the target's run directory (its one job writes it there).
const LOG: &str = "fuzz-0.log";

/// Where a target's run keeps its logs: `target/fuzz/<target>`.
fn run_dir(target: Target) -> PathBuf {
    target_dir().join("fuzz").join(target.name)
}

/// A `cargo +nightly` command at `dir`, through rustup's proxy (the `cargo` running xtask is
/// the stable toolchain's own binary, which knows no `+nightly`).
fn nightly(sh: &Shell) -> xshell::Cmd<'_> {
    cmd!(sh, "cargo +nightly")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("RUSTDOC")
        .env_remove("CARGO")
}

/// Runs one target for `secs` in its run directory and reads what libFuzzer reported.
fn run_one(sh: &Shell, root: &Path, target: Target, secs: u64) -> Result<Report> {
    let dir = root.join(target.crate_dir);
    let corpus = dir.join("corpus").join(target.name);
    let seeds = dir.join("seeds").join(target.name);
    let runs = run_dir(target);
    for d in [&corpus, &runs] {
        std::fs::create_dir_all(d).with_context(|| format!("creating {}", d.display()))?;
    }
    let log = runs.join(LOG);
    let _ = std::fs::remove_file(&log);
    let cargo_log = runs.join("cargo-fuzz.log");
    let flags = libfuzzer_flags(secs);
    let _cwd = sh.push_dir(&runs);
    let output = nightly(sh)
        .args(["fuzz", "run", "--debug-assertions", "--fuzz-dir"])
        .arg(&dir)
        .arg(target.name)
        .arg(&corpus)
        .arg(&seeds)
        .arg("--")
        .args(&flags)
        .ignore_status()
        .quiet()
        .output()
        .with_context(|| format!("running the fuzz target {}", target.name))?;
    let mut cargo_text = String::from_utf8_lossy(&output.stdout).into_owned();
    cargo_text += &String::from_utf8_lossy(&output.stderr);
    std::fs::write(&cargo_log, &cargo_text)
        .with_context(|| format!("writing {}", cargo_log.display()))?;
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let mut report = parse(&text);
    if report.verdict == Verdict::Ok && !output.status.success() {
        report.verdict = Verdict::Error;
        let tail: Vec<&str> = cargo_text.lines().rev().take(15).collect();
        eprintln!(
            "cargo fuzz run {} ended with {}:\n{}",
            target.name,
            output.status,
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    Ok(report)
}

/// libFuzzer's flags for a time box of `secs`: the bounds, one job in one worker, final
/// statistics printed.
pub fn libfuzzer_flags(secs: u64) -> Vec<String> {
    vec![
        format!("-max_total_time={secs}"),
        format!("-rss_limit_mb={RSS_LIMIT_MB}"),
        format!("-malloc_limit_mb={MALLOC_LIMIT_MB}"),
        format!("-timeout={HANG_SECS}"),
        "-jobs=1".to_owned(),
        "-workers=1".to_owned(),
        "-print_final_stats=1".to_owned(),
    ]
}

/// Reads libFuzzer's output: the final statistics, the last corpus size, and how it ended.
pub fn parse(log: &str) -> Report {
    let stat = |name: &str| {
        log.lines()
            .rev()
            .find_map(|l| l.trim().strip_prefix(name))
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let corpus = log
        .lines()
        .rev()
        .find_map(|l| l.split(" corp: ").nth(1))
        .and_then(|rest| rest.split_whitespace().next())
        .map(str::to_owned);
    let verdict = if log.contains("ERROR: libFuzzer: timeout") {
        Verdict::Hang
    } else if log.contains("ERROR: libFuzzer: out-of-memory")
        || log.contains("ERROR: libFuzzer: malloc limit")
    {
        Verdict::Oom
    } else if log.contains("ERROR: libFuzzer: deadly signal")
        || log.contains("ERROR: AddressSanitizer")
        || log.contains("ERROR: libFuzzer: fuzz target exited")
        || log.contains("ERROR: libFuzzer: leak")
    {
        Verdict::Crash
    } else if log.contains("stat::number_of_executed_units") {
        Verdict::Ok
    } else {
        Verdict::Error
    };
    let artifact = log
        .lines()
        .find_map(|l| l.split("Test unit written to ").nth(1))
        .map(|a| a.trim().to_owned());
    Report {
        executions: stat("stat::number_of_executed_units:"),
        exec_per_sec: stat("stat::average_exec_per_sec:"),
        corpus,
        verdict,
        artifact,
    }
}

/// The per-target table.
pub fn table(rows: &[(Target, Report)]) -> String {
    let mut out = format!(
        "{:<14} {:>12} {:>8} {:>14}  {}\n",
        "target", "executions", "exec/s", "corpus", "result"
    );
    let num = |n: Option<u64>| n.map_or("?".to_owned(), |n| n.to_string());
    for (target, r) in rows {
        let result = match r.verdict {
            Verdict::Ok => "ok",
            Verdict::Crash => "CRASH",
            Verdict::Hang => "HANG",
            Verdict::Oom => "OUT OF MEMORY",
            Verdict::Error => "DID NOT RUN",
        };
        out += &format!(
            "{:<14} {:>12} {:>8} {:>14}  {result}\n",
            target.name,
            num(r.executions),
            num(r.exec_per_sec),
            r.corpus.as_deref().unwrap_or("?"),
        );
    }
    out.trim_end().to_owned()
}

/// The time box of the short run in `cargo xtask test`.
pub const SUITE_SECS: u64 = 30;

/// `cargo xtask test`'s step: every target for [`SUITE_SECS`].
pub fn suite_step(sh: &Shell) -> Result<()> {
    if !run(sh, TARGETS, SUITE_SECS)? {
        bail!("a fuzz target failed (see the table above)");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_clean_run_reports_its_statistics() {
        let log = "\
#40\tNEW    cov: 3132 ft: 4251 corp: 19/35Kb lim: 4097 exec/s: 0 rss: 60Mb L: 4043/4097
#23046\tDONE   cov: 4880 ft: 10111 corp: 978/457Kb lim: 4097 exec/s: 1440 rss: 362Mb
Done 23046 runs in 16 second(s)
stat::number_of_executed_units: 23046
stat::average_exec_per_sec:     1440
stat::new_units_added:          970
";
        assert_eq!(
            parse(log),
            Report {
                executions: Some(23046),
                exec_per_sec: Some(1440),
                corpus: Some("978/457Kb".into()),
                verdict: Verdict::Ok,
                artifact: None,
            }
        );
    }

    #[test]
    fn crashes_hangs_and_ooms_name_their_input() {
        let crash = "\
thread '<unnamed>' panicked at engine/src/image/reader.rs:10:5:
==123== ERROR: libFuzzer: deadly signal
artifact_prefix='/w/engine/fuzz/artifacts/show/'; Test unit written to /w/engine/fuzz/artifacts/show/crash-abc
stat::number_of_executed_units: 77
";
        let r = parse(crash);
        assert_eq!(r.verdict, Verdict::Crash);
        assert_eq!(
            r.artifact.as_deref(),
            Some("/w/engine/fuzz/artifacts/show/crash-abc")
        );
        assert_eq!(r.executions, Some(77));
        let hang = "==1== ERROR: libFuzzer: timeout after 10 seconds\n\
                    Test unit written to /a/timeout-1\n";
        assert_eq!(parse(hang).verdict, Verdict::Hang);
        let oom = "==1== ERROR: libFuzzer: out-of-memory (malloc(104857600))\n";
        assert_eq!(parse(oom).verdict, Verdict::Oom);
        assert_eq!(parse("").verdict, Verdict::Error);
    }

    #[test]
    fn targets_are_selected_by_name_in_table_order() {
        let all = select(&[]).expect("all targets");
        assert_eq!(all.len(), TARGETS.len());
        let some = select(&["frame".into(), "show".into()]).expect("known names");
        assert_eq!(
            some.iter().map(|t| t.name).collect::<Vec<_>>(),
            ["show", "frame"]
        );
        assert!(select(&["nope".into()]).is_err());
    }

    #[test]
    fn every_target_has_its_source_and_seeds() {
        let root = workspace_root();
        for t in TARGETS {
            let dir = root.join(t.crate_dir);
            let source = dir.join("fuzz_targets").join(format!("{}.rs", t.name));
            assert!(source.is_file(), "{} is missing", source.display());
            let seeds = dir.join("seeds").join(t.name);
            let count = std::fs::read_dir(&seeds)
                .map(|d| d.count())
                .unwrap_or_default();
            assert!(count > 0, "{} holds no seed", seeds.display());
        }
    }

    #[test]
    fn the_bounds_reach_libfuzzer() {
        let flags = libfuzzer_flags(30);
        for want in [
            "-max_total_time=30",
            "-rss_limit_mb=1024",
            "-malloc_limit_mb=64",
            "-timeout=10",
            "-jobs=1",
            "-workers=1",
        ] {
            assert!(flags.iter().any(|f| f == want), "{want} missing: {flags:?}");
        }
    }
}
