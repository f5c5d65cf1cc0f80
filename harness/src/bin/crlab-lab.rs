//! `crlab-lab image build|list|clean`: the lab image cache, for `cargo xtask image`;
//! `crlab-lab run`: one command in the lab VM, for `cargo xtask lab-run` (looking around
//! in the guest while writing a scenario). Both take the policies under test
//! (`--distro-policy`, `--container-policy`, as `cargo xtask` passes them).
//! `crlab-lab diff OLD.json NEW.json OUT_DIR`: what a policy change does, for `cargo xtask
//! policy-diff` (exit 1 when a trial regressed, 2 on an error).
//! `crlab-lab report merge OUT_DIR PATH...`: the shards' reports as one, for `cargo xtask
//! report merge` (exit 1 when a shard failed or is missing, 2 on an error).
//! `crlab-lab image key --policy DIR [POLICIES]`: the image recipe's key (CI's cache key).
//! `crlab-lab bench --agent PATH --policy DIR --run-dir DIR --payload DIR --runs N --out DIR
//! [POLICIES]`: crlab against the image's criu in one lab VM, for `cargo xtask bench compare`.
//! `crlab-lab in-place-proof --agent PATH --policy DIR --run-dir DIR --payload DIR --suite PATH
//! --root DIR --out DIR [--filter F] [--fail BACKEND::NAME]`: the in-place mode proven inside a
//! lab VM (an SELinux-enforcing Debian host), for `cargo xtask in-place-proof`: the suite
//! copied in runs the catalog in place; the guest's modules are compared before and after
//! each run (whole, with a trial failed on purpose, interrupted, killed and cleaned up by
//! the next run).

use crlab_harness::lab::host;
use crlab_harness::lab::recipe::{self, LabPolicy};
use crlab_harness::lab::{session::UNIT, Lab, LabOptions};
use crlab_vm::image;
use crlab_vm::policy::PolicySelection;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str = "usage: crlab-lab image build --agent PATH --policy DIR [POLICIES] | image list | image clean\n       \
     crlab-lab run --agent PATH --policy DIR --run-dir DIR [--context CTX] [POLICIES] -- COMMAND [ARG]...\n       \
     crlab-lab diff OLD_REPORT NEW_REPORT OUT_DIR\n       \
     crlab-lab report merge OUT_DIR REPORT_OR_DIR...\n       \
     crlab-lab image key --policy DIR [POLICIES]\n       \
     crlab-lab bench --agent PATH --policy DIR --run-dir DIR --payload DIR --runs N --out DIR [POLICIES]\n       \
     crlab-lab in-place-proof --agent PATH --policy DIR --run-dir DIR --payload DIR --suite PATH --root DIR --out DIR [--filter F] [--fail BACKEND::NAME]\n       \
     POLICIES: [--distro-policy refpolicy|fedora=PATH] [--container-policy lab|container-selinux=PATH]\n       \
     (PATH: a source tree, a tarball, or a git checkout as PATH@REV)";

/// The `--name value` options of `image build` and `run`.
#[derive(Debug, Default, PartialEq)]
struct Options {
    agent: Option<String>,
    policy: Option<String>,
    run_dir: Option<String>,
    context: Option<String>,
    distro_policy: Option<String>,
    container_policy: Option<String>,
    /// `bench`: where crlab and bench_memory are, how many runs, where the results go.
    payload: Option<String>,
    runs: Option<String>,
    out: Option<String>,
    /// `in-place-proof`: the suite's binary, the repository, the second runs' filter and
    /// the trial failed on purpose.
    suite: Option<String>,
    root: Option<String>,
    filter: Option<String>,
    fail: Option<String>,
    /// After `--`: the command to run.
    command: Vec<String>,
}

fn parse_options(args: &[&str]) -> Result<Options, String> {
    let mut o = Options::default();
    let mut i = 0;
    while i < args.len() {
        let name = args[i];
        if name == "--" {
            o.command = args[i + 1..].iter().map(|s| s.to_string()).collect();
            break;
        }
        let value = args
            .get(i + 1)
            .map(|v| v.to_string())
            .ok_or_else(|| format!("{name} needs a value\n{USAGE}"))?;
        let slot = match name {
            "--agent" => &mut o.agent,
            "--policy" => &mut o.policy,
            "--run-dir" => &mut o.run_dir,
            "--context" => &mut o.context,
            "--distro-policy" => &mut o.distro_policy,
            "--container-policy" => &mut o.container_policy,
            "--payload" => &mut o.payload,
            "--runs" => &mut o.runs,
            "--out" => &mut o.out,
            "--suite" => &mut o.suite,
            "--root" => &mut o.root,
            "--filter" => &mut o.filter,
            "--fail" => &mut o.fail,
            _ => return Err(format!("unknown argument {name:?}\n{USAGE}")),
        };
        *slot = Some(value);
        i += 2;
    }
    Ok(o)
}

fn required<'a>(v: &'a Option<String>, name: &str) -> Result<&'a str, String> {
    v.as_deref()
        .ok_or_else(|| format!("{name} is required\n{USAGE}"))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["image", "list"] => list(),
        ["image", "clean"] => image::clean().map_err(|e| e.to_string()).map(|()| {
            println!("removed every cached lab image and saved VM state");
        }),
        ["image", "build", rest @ ..] => parse_options(rest).and_then(|o| build(&o)),
        ["run", rest @ ..] => parse_options(rest).and_then(|o| run(&o)),
        ["diff", old, new, out] => return diff(old, new, out),
        ["report", "merge", out, paths @ ..] if !paths.is_empty() => return merge(out, paths),
        ["image", "key", rest @ ..] => parse_options(rest).and_then(|o| key(&o)),
        ["bench", rest @ ..] => parse_options(rest).and_then(|o| bench(&o)),
        ["in-place-proof", rest @ ..] => parse_options(rest).and_then(|o| in_place_proof(&o)),
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crlab-lab: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// The lab a one-off command (`run`, `in-place-proof`) starts: 1 GiB, 2 CPUs, a cold boot
/// allowed 10 minutes.
fn lab_options(
    o: &Options,
    dir: &str,
    agent: &str,
    policy: LabPolicy,
) -> Result<LabOptions, String> {
    Ok(LabOptions {
        qemu: std::env::var("CRLAB_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into()),
        memory_mib: 1024,
        cpus: 2,
        run_dir: PathBuf::from(dir),
        agent: PathBuf::from(agent),
        policy_modules: recipe::policy_modules(&PathBuf::from(required(&o.policy, "--policy")?))?,
        policy,
        cold_boot_timeout: std::time::Duration::from_secs(600),
    })
}

/// The policies the options name, resolved, with the lab's modules of `--policy DIR`.
fn lab_policy(o: &Options, progress: &mut dyn FnMut(&str)) -> Result<LabPolicy, String> {
    let dir = PathBuf::from(required(&o.policy, "--policy")?);
    let selection =
        PolicySelection::parse(o.distro_policy.as_deref(), o.container_policy.as_deref())
            .map_err(|e| e.to_string())?;
    let policy = LabPolicy::resolve(&selection, &dir, progress).map_err(|e| e.to_string())?;
    progress(&format!("policies: {}", policy.info().summary()));
    Ok(policy)
}

/// Starts the lab (warm when it can), runs the command in its context and prints its output;
/// exits with the command's status.
fn run(o: &Options) -> Result<(), String> {
    let agent = required(&o.agent, "--agent")?;
    let dir = required(&o.run_dir, "--run-dir")?;
    if o.command.is_empty() {
        return Err(format!("no command after --\n{USAGE}"));
    }
    let mut progress = |m: &str| eprintln!("[lab] {m}");
    let policy = lab_policy(o, &mut progress)?;
    let opts = lab_options(o, dir, agent, policy)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {dir}: {e}"))?;
    let lab = Lab::start(&opts, &mut progress);
    let mut lab = match lab {
        Ok(lab) => lab,
        Err(e) => {
            let _ = std::fs::remove_dir_all(dir);
            return Err(format!("{e:#}"));
        }
    };
    progress(&lab.ready_line());
    let argv: Vec<&str> = o.command.iter().map(String::as_str).collect();
    let context = o.context.as_deref().unwrap_or("");
    let r = lab.run(&argv, context, std::time::Duration::from_secs(300));
    lab.shutdown();
    let _ = std::fs::remove_dir_all(dir);
    let r = r.map_err(|e| format!("{e:#}"))?;
    use std::io::Write;
    let _ = std::io::stdout().write_all(&r.stdout);
    let _ = std::io::stderr().write_all(&r.stderr);
    if r.timed_out {
        return Err("the command did not finish within 300 s".into());
    }
    if r.exit_code != 0 {
        return Err(format!("the command exited with {}", r.exit_code));
    }
    Ok(())
}

/// The memory of a bench lab: the 512 MiB workload, its images on a tmpfs, and the tools.
const BENCH_MEMORY_MIB: u32 = 3072;

/// Starts a lab with room for the benchmark's workloads, uploads crlab and bench_memory, runs
/// `crlab_harness::bench`, prints the table and writes `bench.json` and `bench.svg` to `--out`.
fn bench(o: &Options) -> Result<(), String> {
    let agent = required(&o.agent, "--agent")?;
    let dir = required(&o.run_dir, "--run-dir")?;
    let payload = PathBuf::from(required(&o.payload, "--payload")?);
    let out = PathBuf::from(required(&o.out, "--out")?);
    let runs: usize = required(&o.runs, "--runs")?
        .parse()
        .ok()
        .filter(|n| (1..=50).contains(n))
        .ok_or_else(|| format!("--runs takes a number from 1 to 50\n{USAGE}"))?;
    let binaries: Vec<(&str, Vec<u8>)> = ["crlab", "bench_memory"]
        .into_iter()
        .map(|name| {
            let path = payload.join(name);
            std::fs::read(&path)
                .map(|data| (name, data))
                .map_err(|e| format!("reading {}: {e} (is the payload built?)", path.display()))
        })
        .collect::<Result<_, _>>()?;
    let mut progress = |m: &str| eprintln!("[bench] {m}");
    let policy = lab_policy(o, &mut progress)?;
    let policies = policy.info().summary();
    let opts = LabOptions {
        qemu: std::env::var("CRLAB_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into()),
        memory_mib: BENCH_MEMORY_MIB,
        cpus: 2,
        run_dir: PathBuf::from(dir),
        agent: PathBuf::from(agent),
        policy_modules: recipe::policy_modules(&PathBuf::from(required(&o.policy, "--policy")?))?,
        policy,
        cold_boot_timeout: std::time::Duration::from_secs(600),
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {dir}: {e}"))?;
    let mut lab = match Lab::start(&opts, &mut progress) {
        Ok(lab) => lab,
        Err(e) => {
            let _ = std::fs::remove_dir_all(dir);
            return Err(format!("{e:#}"));
        }
    };
    let ready = lab.ready_line();
    progress(&ready);
    let measured = (|| {
        for (name, data) in &binaries {
            let path = format!("{}/{name}", crlab_harness::trial::GUEST_BIN);
            lab.write_file(&path, data, 0o755)
                .map_err(|e| format!("uploading {name}: {e}"))?;
        }
        crlab_harness::bench::run(&mut lab, runs, &mut progress)
    })();
    lab.shutdown();
    let _ = std::fs::remove_dir_all(dir);
    let mut report = measured?;
    report.lab = ready;
    report.policies = policies;
    print!("{}", crlab_harness::bench::render(&report));
    std::fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
    let json = out.join("bench.json");
    let text = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
    std::fs::write(&json, text).map_err(|e| format!("writing {}: {e}", json.display()))?;
    let svg = out.join("bench.svg");
    crlab_harness::bench::chart(&report, &svg)?;
    println!("results: {} and {}", json.display(), svg.display());
    if report.rows.iter().any(|r| r.failure.is_some()) {
        return Err("some runs failed (see above): their rows are incomplete".into());
    }
    Ok(())
}

/// The guest side of `in-place-proof`.
const PROOF_SCRIPT: &str = include_str!("in-place-proof.sh");

/// Where the proof puts the suite in the guest: `bin/` (the suite, crlab, the agent, the
/// workloads) and `tree/` (what the suite reads of the repository).
const PROOF_DIR: &str = "/opt/crlab-proof";
const PROOF_OUT: &str = "/var/tmp/crlab-proof";

/// The files of the repository at `root` the suite reads: the catalog, the policy modules,
/// the workloads' names (validation) and the audit snapshots.
fn suite_tree(root: &std::path::Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    fn walk(
        root: &std::path::Path,
        dir: &std::path::Path,
        ext: &str,
        out: &mut Vec<(String, Vec<u8>)>,
    ) -> Result<(), String> {
        let rd = std::fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(root, &p, ext, out)?;
            } else if p.extension().is_some_and(|x| x == ext) {
                let data =
                    std::fs::read(&p).map_err(|e| format!("reading {}: {e}", p.display()))?;
                let rel = p.strip_prefix(root).map_err(|e| e.to_string())?;
                out.push((rel.display().to_string(), data));
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    for (dir, ext) in [
        ("scenarios/catalog", "toml"),
        ("scenarios/policy", "cil"),
        ("scenarios/workloads/src/bin", "rs"),
        ("harness/tests/snapshots", "snap"),
    ] {
        walk(root, &root.join(dir), ext, &mut out)?;
    }
    Ok(out)
}

/// A binary stripped of its debug information into `dir` (the channel is slow), read back.
fn stripped(src: &std::path::Path, dir: &std::path::Path) -> Result<Vec<u8>, String> {
    let name = src.file_name().ok_or("no file name")?;
    let dst = dir.join(name);
    let st = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&dst)
        .arg(src)
        .status()
        .map_err(|e| format!("running strip on {}: {e}", src.display()))?;
    if !st.success() {
        return Err(format!("strip {} failed ({st})", src.display()));
    }
    std::fs::read(&dst).map_err(|e| format!("reading {}: {e}", dst.display()))
}

/// What the proof's guest script leaves in its out directory, fetched back.
const PROOF_FILES: &[&str] = &[
    "before-1",
    "after-1",
    "run-1.log",
    "run-1.rc",
    "run-1/report.json",
    "run-1/junit.xml",
    "before-2",
    "after-2",
    "run-2.log",
    "run-2.rc",
    "run-2/report.json",
    "run-2/junit.xml",
    "before-3",
    "after-3",
    "run-3.log",
    "run-3.rc",
    "before-4",
    "killed-4",
    "after-4",
    "run-4.log",
    "run-4.rc",
    "run-4.state",
    "run-4b.log",
    "run-4b.rc",
    "leftovers.txt",
];

/// The in-place mode proven in a lab VM (see the module's documentation).
fn in_place_proof(o: &Options) -> Result<(), String> {
    let agent = required(&o.agent, "--agent")?;
    let dir = required(&o.run_dir, "--run-dir")?;
    let payload = PathBuf::from(required(&o.payload, "--payload")?);
    let suite = PathBuf::from(required(&o.suite, "--suite")?);
    let root = PathBuf::from(required(&o.root, "--root")?);
    let out = PathBuf::from(required(&o.out, "--out")?);
    let filter = o.filter.as_deref().unwrap_or("systemd-service");
    let fail = o
        .fail
        .as_deref()
        .unwrap_or("crlab::systemd-service-with-module");
    let tree = suite_tree(&root)?;
    let programs: Vec<String> = tree
        .iter()
        .filter_map(|(p, _)| p.strip_prefix("scenarios/workloads/src/bin/"))
        .filter_map(|p| p.strip_suffix(".rs"))
        .map(str::to_string)
        .collect();
    let mut progress = |m: &str| eprintln!("[proof] {m}");
    let policy = lab_policy(o, &mut progress)?;
    let opts = lab_options(o, dir, agent, policy)?;
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {dir}: {e}"))?;
    let mut lab = match Lab::start(&opts, &mut progress) {
        Ok(lab) => lab,
        Err(e) => {
            let _ = std::fs::remove_dir_all(dir);
            return Err(format!("{e:#}"));
        }
    };
    progress(&lab.ready_line());
    let ran = (|| -> Result<Vec<(String, Vec<u8>)>, String> {
        let mut bins: Vec<PathBuf> = ["crlab", "crlab-agent"]
            .iter()
            .map(|n| payload.join(n))
            .chain(programs.iter().map(|n| payload.join(n)))
            .collect();
        bins.push(suite.clone());
        for b in &bins {
            let data = stripped(b, std::path::Path::new(dir))?;
            let name = b.file_name().map(|n| n.to_string_lossy().into_owned());
            let name = name.unwrap_or_default();
            // The suite's binary is `scenarios-HASH`: the script runs `bin/scenarios`.
            let name = if *b == suite {
                "scenarios".to_string()
            } else {
                name
            };
            progress(&format!("copying {name} in ({} KiB)", data.len() >> 10));
            lab.write_file(&format!("{PROOF_DIR}/bin/{name}"), &data, 0o755)
                .map_err(|e| format!("copying {name}: {e}"))?;
        }
        progress(&format!(
            "copying {} files of the repository in",
            tree.len()
        ));
        for (rel, data) in &tree {
            lab.write_file(&format!("{PROOF_DIR}/tree/{rel}"), data, 0o644)
                .map_err(|e| format!("copying {rel}: {e}"))?;
        }
        lab.write_file(
            &format!("{PROOF_DIR}/in-place-proof.sh"),
            PROOF_SCRIPT.as_bytes(),
            0o755,
        )
        .map_err(|e| e.to_string())?;
        progress(&format!(
            "running the proof in the guest (the catalog in place, then {filter:?} failed on purpose, interrupted and killed); this takes a while under TCG"
        ));
        let script = format!(
            "INSTA_WORKSPACE_ROOT={PROOF_DIR}/tree /bin/sh {PROOF_DIR}/in-place-proof.sh              {PROOF_DIR} {PROOF_OUT} '{filter}' '{fail}'"
        );
        let r = lab
            .run(
                &["/bin/sh", "-c", &script],
                "",
                std::time::Duration::from_secs(75 * 60),
            )
            .map_err(|e| format!("{e:#}"))?;
        if r.exit_code != 0 || r.timed_out {
            return Err(format!(
                "the proof's script failed ({}): {}",
                r.exit_code,
                String::from_utf8_lossy(&r.stderr)
            ));
        }
        let mut files = Vec::new();
        for f in PROOF_FILES {
            if let Ok(data) = lab.read_file(&format!("{PROOF_OUT}/{f}")) {
                files.push((f.to_string(), data));
            }
        }
        Ok(files)
    })();
    lab.shutdown();
    let _ = std::fs::remove_dir_all(dir);
    let files = ran?;
    for (f, data) in &files {
        let p = out.join(f);
        if let Some(parent) = p.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        std::fs::write(&p, data).map_err(|e| format!("writing {}: {e}", p.display()))?;
    }
    let text = |name: &str| -> String {
        files
            .iter()
            .find(|(f, _)| f == name)
            .map(|(_, d)| String::from_utf8_lossy(d).into_owned())
            .unwrap_or_default()
    };
    let mut problems = Vec::new();
    for (run, what, before, after, want_rc) in [
        ("1", "the whole catalog", "before-1", "after-1", Some("0")),
        (
            "2",
            "a trial failed on purpose",
            "before-2",
            "after-2",
            Some("101"),
        ),
        (
            "3",
            "interrupted (SIGINT)",
            "before-3",
            "after-3",
            Some("130"),
        ),
        (
            "4",
            "killed (SIGKILL), then the next run",
            "before-4",
            "after-4",
            None,
        ),
    ] {
        let rc = text(&format!("run-{run}.rc")).trim().to_string();
        let same = !text(before).is_empty() && text(before) == text(after);
        let log = text(&format!("run-{run}.log"));
        let result: Vec<&str> = log
            .lines()
            .filter(|l| l.starts_with("test result"))
            .collect();
        println!(
            "run {run}, {what}: exit {rc}; modules {} ({} modules before){}",
            if same {
                "identical before and after"
            } else {
                "DIFFER"
            },
            text(before).lines().count(),
            result.first().map(|r| format!("; {r}")).unwrap_or_default()
        );
        if !same {
            problems.push(format!("run {run}: the guest's modules differ after it"));
        }
        if want_rc.is_some_and(|w| w != rc) {
            problems.push(format!(
                "run {run}: exit {rc}, expected {}",
                want_rc.unwrap_or("")
            ));
        }
    }
    let killed = text("killed-4");
    let left: Vec<&str> = killed
        .lines()
        .filter(|l| l.starts_with(&format!("{} ", host::PRIORITY)))
        .collect();
    println!(
        "run 4: after SIGKILL the store held crlab's {}; the next run said:\n{}",
        left.join(", "),
        text("run-4b.log")
            .lines()
            .filter(|l| l.contains("left from") || l.contains("leftover") || l.contains("removed"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    println!("results in {}", out.display());
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn list() -> Result<(), String> {
    let images = image::list().map_err(|e| e.to_string())?;
    if images.is_empty() {
        println!("no cached lab image");
    }
    for (key, bytes) in images {
        println!("{key:<40} {:>8.1} MiB", bytes as f64 / (1 << 20) as f64);
    }
    Ok(())
}

fn build(o: &Options) -> Result<(), String> {
    let agent = PathBuf::from(required(&o.agent, "--agent")?);
    let agent = std::fs::read(&agent).map_err(|e| format!("reading {}: {e}", agent.display()))?;
    let mut progress = |m: &str| eprintln!("{m}");
    let policy = lab_policy(o, &mut progress)?;
    let modules = recipe::policy_modules(&PathBuf::from(required(&o.policy, "--policy")?))?;
    let r = recipe::for_policy(agent, UNIT, modules, &policy);
    let img = image::ensure(&r, &mut progress).map_err(|e| e.to_string())?;
    println!("lab image {} is ready in {}", img.key, img.dir.display());
    println!("{}", policy.info().summary());
    Ok(())
}

/// Prints the key of the image the policies give (the recipe's hash; the agent is not
/// part of it), without building anything.
fn key(o: &Options) -> Result<(), String> {
    let policy = lab_policy(o, &mut |m: &str| eprintln!("{m}"))?;
    let modules = recipe::policy_modules(&PathBuf::from(required(&o.policy, "--policy")?))?;
    println!(
        "{}",
        recipe::for_policy(Vec::new(), UNIT, modules, &policy).key()
    );
    Ok(())
}

/// Merges the shards' reports found in `paths` into `out` (`report.json`, `junit.xml`,
/// `merge.md`) and prints the table; exit 1 when a shard failed or is missing, 2 when the
/// reports cannot be merged.
fn merge(out: &str, paths: &[&str]) -> ExitCode {
    use crlab_harness::merge;
    let paths: Vec<PathBuf> = paths.iter().map(PathBuf::from).collect();
    let merged = merge::find_reports(&paths).and_then(|found| {
        found
            .iter()
            .map(|p| merge::ShardReport::read(p))
            .collect::<Result<Vec<_>, _>>()
            .and_then(merge::merge)
    });
    let merged = match merged {
        Ok(m) => m,
        Err(e) => {
            let mut text = e.to_string();
            let mut cause = std::error::Error::source(&e);
            while let Some(c) = cause {
                text += &format!(": {c}");
                cause = c.source();
            }
            eprintln!("crlab-lab: error: {text}");
            return ExitCode::from(2);
        }
    };
    print!("{}", merged.markdown());
    let out = PathBuf::from(out);
    if let Err(e) = merged.write(&out) {
        eprintln!(
            "crlab-lab: error: writing the merged report to {}: {e}",
            out.display()
        );
        return ExitCode::from(2);
    }
    println!(
        "written: {}, {} and {}",
        out.join("report.json").display(),
        out.join("junit.xml").display(),
        out.join("merge.md").display()
    );
    if merged.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

/// Compares two runs' reports: prints the table, writes `policy-diff.md` and
/// `policy-diff.json` into `out`; exit 1 when a trial regressed, 2 when the comparison could
/// not be made.
fn diff(old: &str, new: &str, out: &str) -> ExitCode {
    let out = PathBuf::from(out);
    match crlab_harness::diff::run(&PathBuf::from(old), &PathBuf::from(new), &out) {
        Ok(d) => {
            print!("{}", crlab_harness::diff::table(&d));
            println!(
                "written: {} and {}",
                out.join("policy-diff.md").display(),
                out.join("policy-diff.json").display()
            );
            if d.regressions().is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("crlab-lab: error: {e}");
            ExitCode::from(2)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_come_in_any_order_and_the_command_follows_the_double_dash() {
        let o = parse_options(&[
            "--container-policy",
            "container-selinux=/c",
            "--agent",
            "/a",
            "--policy",
            "/p",
            "--distro-policy",
            "fedora=/f",
            "--run-dir",
            "/r",
            "--",
            "ausearch",
            "-m",
            "AVC",
        ])
        .unwrap();
        assert_eq!(o.agent.as_deref(), Some("/a"));
        assert_eq!(o.distro_policy.as_deref(), Some("fedora=/f"));
        assert_eq!(o.container_policy.as_deref(), Some("container-selinux=/c"));
        assert_eq!(o.command, ["ausearch", "-m", "AVC"]);
        assert!(parse_options(&["--agent"])
            .unwrap_err()
            .contains("needs a value"));
        assert!(parse_options(&["--bogus", "x"])
            .unwrap_err()
            .contains("unknown argument"));
        assert_eq!(parse_options(&[]).unwrap(), Options::default());
    }
}
