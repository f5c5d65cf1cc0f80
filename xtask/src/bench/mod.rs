//! `cargo xtask bench engine`: dump and restore times of the engine against memcpy, on this
//! host; `cargo xtask bench compare` ([`compare`]): crlab against criu in the lab VM.

mod compare;
mod memcpy;
mod report;
mod workload;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use clap::Args;
use xshell::{cmd, Shell};

use crate::reaper::{run_timed, tail, Guard, Subreaper};
use crate::target_dir;
use crate::tmpfs::Scratch;
use crate::{cargo, is_root};
use report::SizeResult;
use workload::Workload;

pub use compare::{compare, CompareArgs};

const MIB: usize = 1 << 20;
const GIB: usize = 1 << 30;

/// The shapes measured, small first so that a broken engine fails fast: (label, touched
/// bytes of the main mapping, extra arguments of bench_memory). The 16-thread and the
/// 10-process rows beside the single small process show the per-thread and per-process costs.
const SIZES: &[(&str, usize, &[&str])] = &[
    ("10 MiB", 10 * MIB, &[]),
    ("10 MiB, 16 threads", 10 * MIB, &["threads", "16"]),
    ("10 MiB, 10 processes", 10 * MIB, &["procs", "10"]),
    ("1 GiB", GIB, &[]),
];

const MEMCPY_TRIES: usize = 3;
const READY_LIMIT: Duration = Duration::from_secs(120);
const ENGINE_LIMIT: Duration = Duration::from_secs(120);
const CHECK_LIMIT: Duration = Duration::from_secs(120);

#[derive(Debug, Args)]
pub struct EngineArgs {
    /// Dump/restore repetitions per size (the table shows the best and the median)
    #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u32).range(1..=100))]
    reps: u32,
    /// Measure this crlab binary instead of building one (to compare builds)
    #[arg(long, value_name = "PATH")]
    crlab: Option<PathBuf>,
}

/// The binaries under test.
struct Bins {
    crlab: PathBuf,
    bench_memory: PathBuf,
}

pub fn engine(sh: &Shell, args: &EngineArgs) -> Result<()> {
    if !is_root() {
        bail!(
            "the engine benchmark needs root (crlab ptraces the workload and restores its pid \
             with clone3 set_tid): run `sudo -E cargo xtask bench engine`"
        );
    }
    let cargo = cargo();
    let release = target_dir().join("release");
    let crlab = match &args.crlab {
        Some(crlab) => {
            eprintln!(
                "==> building crlab-workloads (release); crlab is {}",
                crlab.display()
            );
            cmd!(sh, "{cargo} build --release -p crlab-workloads").run()?;
            std::path::absolute(crlab).with_context(|| format!("resolving {}", crlab.display()))?
        }
        None => {
            eprintln!("==> building crlab and crlab-workloads (release)");
            cmd!(sh, "{cargo} build --release -p crlab -p crlab-workloads").run()?;
            release.join("crlab")
        }
    };
    let bins = Bins {
        crlab,
        bench_memory: release.join("bench_memory"),
    };
    for bin in [&bins.crlab, &bins.bench_memory] {
        ensure!(bin.exists(), "{} is missing", bin.display());
    }

    let largest = SIZES.iter().map(|&(_, bytes, _)| bytes).max().unwrap_or(0);
    let scratch = Scratch::new(sh, "crlab-bench", (largest + largest / 4 + 64 * MIB) as u64)?;
    // Declared after `scratch`, so dropped before it: leftovers die before their files go.
    let reaper = Subreaper::new()?;
    eprintln!("images go to {} (tmpfs)", scratch.path().display());

    let mut results = Vec::new();
    for (shape, &(label, bytes, extra)) in SIZES.iter().enumerate() {
        eprintln!("==> {label}: memcpy, best of {MEMCPY_TRIES}");
        let memcpy = memcpy::best_of(bytes, MEMCPY_TRIES)?;
        eprintln!("    {:.1} ms", memcpy.as_secs_f64() * 1e3);

        eprintln!("==> {label}: workload self-check (start, touch, check, no dump)");
        let start = Instant::now();
        let state = scratch.path().join(format!("self-check-{shape}"));
        Workload::start(&bins.bench_memory, &state, bytes, extra, READY_LIMIT)?
            .check_itself(CHECK_LIMIT)?;
        std::fs::remove_dir_all(&state).with_context(|| format!("removing {}", state.display()))?;
        eprintln!("    ok in {:.1} ms", start.elapsed().as_secs_f64() * 1e3);

        let mut result = SizeResult {
            label,
            bytes,
            memcpy,
            dumps: Vec::new(),
            restores: Vec::new(),
        };
        for rep in 1..=args.reps {
            eprintln!("==> {label}: dump and restore, run {rep}/{}", args.reps);
            let dir = scratch.path().join(format!("run-{shape}-{rep}"));
            std::fs::create_dir(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let (dump, restore) = dump_and_restore(&bins, &reaper, &dir, bytes, extra)
                .with_context(|| format!("benchmark of {label}, run {rep}"))?;
            std::fs::remove_dir_all(&dir).with_context(|| format!("removing {}", dir.display()))?;
            eprintln!(
                "    dump {:.1} ms, restore {:.1} ms, restored memory verified",
                dump.as_secs_f64() * 1e3,
                restore.as_secs_f64() * 1e3
            );
            result.dumps.push(dump);
            result.restores.push(restore);
        }
        results.push(result);
    }
    println!("\n{}", report::table(&results));
    Ok(())
}

/// One run: start the workload, time the dump, reap the original, time the restore, make the
/// restored process verify its memory. Returns the dump and restore times.
fn dump_and_restore(
    bins: &Bins,
    reaper: &Subreaper,
    dir: &Path,
    bytes: usize,
    extra: &[&str],
) -> Result<(Duration, Duration)> {
    let (crlab, images, pidfile) = (&bins.crlab, dir.join("images"), dir.join("restored.pid"));
    std::fs::create_dir(&images).with_context(|| format!("creating {}", images.display()))?;
    let mut workload = Workload::start(
        &bins.bench_memory,
        &dir.join("state"),
        bytes,
        extra,
        READY_LIMIT,
    )?;
    let pid = workload.pid();

    let mut dump = Command::new(crlab);
    dump.args(["dump", "--tree", &pid.to_string(), "--images-dir"])
        .arg(&images);
    let dumped = run_timed(dump, "crlab dump", &dir.join("dump.log"), ENGINE_LIMIT)?;
    if !dumped.status.success() {
        // A failed dump must leave the process unharmed: say whether it did.
        let survivor = match workload.check_itself(CHECK_LIMIT) {
            Ok(()) => "the workload survived it and verified its memory".to_owned(),
            Err(err) => format!("and the workload was harmed: {err:#}"),
        };
        bail!(
            "crlab dump failed ({}): {}\n({survivor})",
            dumped.status,
            tail(&dumped.output, 40)
        );
    }
    let status = workload
        .process
        .wait(Duration::from_secs(10))
        .context("the dumped workload should be gone after `crlab dump` (no --leave-running)")?;
    eprintln!("    original pid {pid} ended: {status}");
    // Its children (a tree) were ours too once it died: reap them so their pids are free.
    reaper.reap_ended(Duration::from_secs(10));

    let mut restore = Command::new(crlab);
    restore
        .args(["restore", "--images-dir"])
        .arg(&images)
        .args(["--detach", "--pidfile"])
        .arg(&pidfile);
    let restored = run_timed(
        restore,
        "crlab restore",
        &dir.join("restore.log"),
        ENGINE_LIMIT,
    )?;
    if !restored.status.success() {
        bail!(
            "crlab restore failed ({}): {}",
            restored.status,
            tail(&restored.output, 40)
        );
    }
    let text = std::fs::read_to_string(&pidfile).with_context(|| {
        format!(
            "crlab restore succeeded but wrote no pidfile {}",
            pidfile.display()
        )
    })?;
    let restored_pid: libc::pid_t = text
        .trim()
        .parse()
        .with_context(|| format!("pidfile {} holds {text:?}", pidfile.display()))?;
    // Reparented to us (the subreaper) when `crlab restore --detach` exited.
    let mut process = Guard::new(restored_pid, "the restored bench_memory");
    if restored_pid != pid {
        eprintln!("    note: restored as pid {restored_pid}, dumped as pid {pid}");
    }
    workload
        .check_restored(&mut process, CHECK_LIMIT)
        .context("the restored process did not verify its memory")?;
    Ok((dumped.elapsed, restored.elapsed))
}
