//! The SELinux conformance suite as a libtest-mimic program: one trial per scenario of
//! `scenarios/catalog/` and backend (`crlab::NAME`, whose outcomes must be the scenario's,
//! then `criu::NAME`, the image's own criu, whose outcomes are recorded and compared with
//! crlab's), all in one lab VM, one after another; then the table and the reports.
//!
//! Plain `cargo test` lists the trials as ignored (they need the VM lab); `cargo xtask
//! vm-test` sets `CRLAB_VM=1` and the payload directory, and the trials run.
//! `CRLAB_IN_PLACE=1` (`cargo xtask vm-test --in-place`) runs them on this machine instead,
//! through a local agent, with the base detected from the loaded policy
//! ([`crate::lab::host`]); everything else is the same. `CRLAB_ROOT` names the repository
//! (the catalog, the policy modules, the snapshots) when it is not where the binary was
//! built (a copy of the suite on another machine).

use crate::lab::host;
use crate::lab::session::InPlaceOptions;
use crate::lab::{recipe, Lab, LabOptions};
use crate::merge::{self, RunSummary};
use crate::report;
use crate::scenario::{self, Base, Outcome, Scenario};
use crate::shard::{self, Shard};
use crate::trial::{self, Backend, LoadedModules, TrialReport};
use libtest_mimic::{Arguments, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What the trials share: one lab, the audit position, the reports so far.
struct Shared {
    lab: Option<Lab>,
    marker: u64,
    reports: Vec<TrialReport>,
    start_error: Option<String>,
    uploaded: Vec<String>,
    /// The scenario policy modules the trials left loaded.
    modules: LoadedModules,
}

/// How the suite was asked to run (from the environment `cargo xtask vm-test` sets).
struct Settings {
    root: PathBuf,
    base: Base,
    /// The trials run (in a lab VM, or in place).
    in_vm: bool,
    /// The lab is this machine (`CRLAB_IN_PLACE=1`), as detected.
    in_place: Option<host::Detected>,
    run_dir: PathBuf,
    /// `CRLAB_FAIL_ON_PURPOSE=BACKEND::NAME`: that trial's dump expectation is inverted, so
    /// it fails (to show what a failed trial leaves, in place: nothing).
    fail_on_purpose: Option<String>,
}

static START: OnceLock<Instant> = OnceLock::new();

/// The policies the lab was built with (their one-line summary, and what `report.json`
/// records), once the lab has started.
static POLICIES: OnceLock<(String, serde_json::Value)> = OnceLock::new();

fn progress(msg: &str) {
    eprintln!(
        "[lab {:>6.1}s] {msg}",
        START.get_or_init(Instant::now).elapsed().as_secs_f64()
    );
}

/// The payload's binaries, from `CRLAB_PAYLOAD_DIR`: stripped for a VM (the channel is
/// slow), as they are in place.
fn payload(name: &str, run_dir: &Path, strip: bool) -> Result<Vec<u8>, String> {
    let dir = std::env::var("CRLAB_PAYLOAD_DIR").map_err(|_| {
        "CRLAB_PAYLOAD_DIR is not set (run through cargo xtask vm-test)".to_string()
    })?;
    let src = Path::new(&dir).join(name);
    if !strip {
        return std::fs::read(&src).map_err(|e| format!("reading {}: {e}", src.display()));
    }
    let dst = run_dir.join(name);
    let st = std::process::Command::new("strip")
        .arg("--strip-debug")
        .arg("-o")
        .arg(&dst)
        .arg(&src)
        .status()
        .map_err(|e| format!("running strip on {}: {e}", src.display()))?;
    if !st.success() {
        return Err(format!("strip {} failed ({st})", src.display()));
    }
    std::fs::read(&dst).map_err(|e| format!("reading {}: {e}", dst.display()))
}

fn start_lab(set: &Settings) -> Result<Lab, String> {
    let agent =
        PathBuf::from(std::env::var("CRLAB_PAYLOAD_DIR").unwrap_or_default()).join("crlab-agent");
    if let Some(detected) = &set.in_place {
        return start_in_place(set, detected, agent);
    }
    let modules = recipe::policy_modules(&set.root.join("scenarios/policy"))?;
    // The policies under test: CRLAB_DISTRO_POLICY / CRLAB_CONTAINER_POLICY (cargo xtask
    // vm-test --distro-policy / --container-policy); unset, refpolicy and the stand-in.
    let policy =
        recipe::LabPolicy::from_env(&set.root.join("scenarios/policy"), &mut |m| progress(m))
            .map_err(|e| e.to_string())?;
    let info = policy.info();
    let summary = info.summary();
    progress(&format!("policies: {summary}"));
    let _ = POLICIES.set((summary, serde_json::to_value(&info).unwrap_or_default()));
    let opts = LabOptions {
        qemu: std::env::var("CRLAB_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into()),
        memory_mib: 1024,
        cpus: 2,
        run_dir: set.run_dir.clone(),
        agent,
        policy_modules: modules,
        policy,
        cold_boot_timeout: Duration::from_secs(600),
    };
    let lab = Lab::start(&opts, &mut |m| progress(m)).map_err(|e| format!("{e:#}"))?;
    progress(&lab.ready_line());
    Ok(lab)
}

/// The lab on this machine: the lab's modules for the detected base, loaded for the run.
fn start_in_place(
    set: &Settings,
    detected: &host::Detected,
    agent: PathBuf,
) -> Result<Lab, String> {
    let dir = set.root.join("scenarios/policy");
    let lab_modules = recipe::policy_modules(&match detected.base {
        Base::Refpolicy => dir,
        Base::Fedora => dir.join(recipe::FEDORA_MODULES_DIR),
    })?;
    let info = host::policy_info(detected, &lab_modules);
    let summary = info.summary();
    progress(&format!("in place; policies detected: {summary}"));
    let _ = POLICIES.set((summary, serde_json::to_value(&info).unwrap_or_default()));
    let opts = InPlaceOptions {
        agent,
        run_dir: set.run_dir.clone(),
        lab_modules,
    };
    let lab = Lab::start_in_place(&opts, &mut |m| progress(m)).map_err(|e| format!("{e:#}"))?;
    progress(&lab.ready_line());
    Ok(lab)
}

/// `s` with its dump expectation on `base` inverted (`CRLAB_FAIL_ON_PURPOSE`).
fn made_to_fail(s: &Scenario, base: Base) -> Scenario {
    let mut wrong = s.clone();
    let mut e = s.expect.on(base);
    e.dump = match e.dump {
        Outcome::Ok => Outcome::Fail,
        _ => Outcome::Ok,
    };
    wrong.expect = e;
    wrong
}

fn run_trial(
    shared: &Mutex<Shared>,
    set: &Settings,
    s: &Scenario,
    backend: Backend,
) -> Result<(), Failed> {
    let mut g = shared
        .lock()
        .map_err(|_| Failed::from("the lab lock is poisoned"))?;
    if let Some(e) = &g.start_error {
        return Err(format!("the lab did not start: {e}").into());
    }
    if g.lab.is_none() {
        match start_lab(set) {
            Ok(lab) => {
                g.marker = lab.hello.audit_marker;
                g.lab = Some(lab);
            }
            Err(e) => {
                g.start_error = Some(e.clone());
                return Err(format!("the lab did not start: {e}").into());
            }
        }
    }
    for name in ["crlab", s.workload.program.as_str()] {
        if !g.uploaded.iter().any(|u| u == name) {
            let data = payload(name, &set.run_dir, set.in_place.is_none())?;
            let lab = g.lab.as_mut().ok_or("no lab")?;
            let path = format!("{}/{name}", lab.place().bin);
            lab.write_file(&path, &data, 0o755)
                .map_err(|e| e.to_string())?;
            if name == "crlab" {
                label_engine(lab, &path)?;
            }
            g.uploaded.push(name.to_string());
        }
    }
    let marker = g.marker;
    let state = &mut *g;
    let lab = state.lab.as_mut().ok_or("no lab")?;
    let modules = set.root.join("scenarios/policy/modules");
    let wrong;
    let s = if set.fail_on_purpose.as_deref() == Some(&format!("{}::{}", backend.name(), s.name)) {
        progress(&format!(
            "CRLAB_FAIL_ON_PURPOSE: {}::{} expects its dump to go the other way, and fails",
            backend.name(),
            s.name
        ));
        wrong = made_to_fail(s, set.base);
        &wrong
    } else {
        s
    };
    let (rep, next) = trial::run(
        lab,
        s,
        backend,
        set.base,
        marker,
        &modules,
        &mut state.modules,
    );
    g.marker = next;
    let text = failure_text(&rep);
    let passed = rep.passed;
    let snapshot = audit_snapshot(&rep);
    let name = format!("{}__{}", rep.backend.name(), rep.scenario);
    g.reports.push(rep);
    drop(g);
    if !passed {
        return Err(text.into());
    }
    // Recorded backends' audit records are in the report; only judged ones have a snapshot.
    if !backend.judged() {
        return Ok(());
    }
    check_snapshot(&set.root, set.base, &name, &snapshot)
}

/// What a failed trial prints: its problems, steps, audit records and the console's tail.
fn failure_text(rep: &TrialReport) -> String {
    let steps: Vec<String> = rep
        .observed
        .steps
        .iter()
        .map(|st| {
            format!(
                "  {} {} ({} ms) {}",
                if st.ok { "ok  " } else { "FAIL" },
                st.name,
                st.millis,
                st.detail
            )
        })
        .collect();
    let audit: Vec<String> = rep
        .observed
        .audit
        .iter()
        .map(|a| format!("  {}", a.normalized))
        .collect();
    format!(
        "{}\nsteps:\n{}\naudit:\n{}\nconsole tail:\n{}",
        rep.problems.join("\n"),
        steps.join("\n"),
        audit.join("\n"),
        rep.console_tail
    )
}

/// The trial's audit records as its snapshot holds them: normalized, one per line.
pub fn audit_snapshot(rep: &TrialReport) -> String {
    if rep.observed.audit.is_empty() {
        return "(no AVC, USER_AVC or SELINUX_ERR record)\n".into();
    }
    rep.observed
        .audit
        .iter()
        .map(|a| format!("{}\n", a.normalized))
        .collect()
}

/// Where a base's audit snapshots live: each base's policy logs its own records.
pub fn snapshot_dir(root: &Path, base: Base) -> PathBuf {
    match base {
        Base::Refpolicy => root.join("harness/tests/snapshots"),
        Base::Fedora => root.join("harness/tests/snapshots/fedora"),
    }
}

/// Labels the uploaded engine `bin_t`, as a package installs a program in `/usr/bin`: a file
/// the agent writes under `/opt` is `usr_t`, which the runtime's domain may enter but a login
/// shell's `unconfined_t` may not (a `dontaudit`ed `entrypoint` denial on both bases), and
/// the catalog runs the engine from a login shell's context too.
fn label_engine(lab: &mut Lab, path: &str) -> Result<(), Failed> {
    let r = lab
        .run(&["chcon", "-t", "bin_t", path], "", Duration::from_secs(30))
        .map_err(|e| e.to_string())?;
    if r.exit_code != 0 {
        return Err(format!(
            "labelling the engine bin_t (chcon -t bin_t {path}) failed ({}): {}",
            r.exit_code,
            String::from_utf8_lossy(&r.stderr).trim()
        )
        .into());
    }
    Ok(())
}

/// Compares the audit records with the base's snapshot `NAME.snap`; a difference (a policy or
/// engine change) fails the trial, and `cargo insta review` shows and accepts it.
fn check_snapshot(root: &Path, base: Base, name: &str, text: &str) -> Result<(), Failed> {
    let dir = snapshot_dir(root, base);
    let result = std::panic::catch_unwind(|| {
        insta::with_settings!({
            snapshot_path => dir.clone(),
            prepend_module_to_snapshot => false,
            description => "the scenario's audit records, normalized (pids, times, serials, inodes redacted)",
            omit_expression => true,
        }, {
            insta::assert_snapshot!(name, text);
        });
    });
    result.map_err(|_| {
        Failed::from(format!(
            "the audit records differ from the snapshot {}/{name}.snap (the diff is above): if \
             the change is intended, accept it with `cargo insta review`",
            dir.display()
        ))
    })
}

/// The pid that owns a run directory: its name (the suite's), or its last `-` field
/// (`lab-run-PID`, `in-place-proof-PID`: xtask's).
fn run_owner(name: &str) -> Option<u32> {
    name.rsplit('-').next().and_then(|p| p.parse().ok())
}

/// Removes run directories whose process no longer exists.
fn remove_stale_runs(runs: &Path) {
    let Ok(rd) = std::fs::read_dir(runs) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let alive = run_owner(&name).is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The base the lab runs, from `CRLAB_DISTRO_POLICY` (as `--distro-policy` gives it).
fn base_from_env() -> Result<Base, String> {
    let spec = std::env::var("CRLAB_DISTRO_POLICY").unwrap_or_default();
    Base::of_distro_policy(&spec).ok_or_else(|| {
        format!("CRLAB_DISTRO_POLICY={spec:?} names no base policy: use refpolicy or fedora=PATH")
    })
}

/// The suite's `main`: `root` is the repository.
pub fn main(root: &Path) -> ExitCode {
    // `--shard I/N` (or CRLAB_SHARD) is the suite's own: libtest-mimic never sees it.
    let (argv, shard) =
        match shard::take_from_args(std::env::args().collect(), std::env::var(shard::ENV).ok()) {
            Ok(a) => a,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        };
    let mut args = Arguments::from_iter(argv);
    // A copy of the suite on another machine names its tree.
    let root_env = std::env::var_os("CRLAB_ROOT").map(PathBuf::from);
    let root = root_env.as_deref().unwrap_or(root);
    let catalog = match scenario::load_validated(root) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let in_place = std::env::var("CRLAB_IN_PLACE").as_deref() == Ok("1");
    // In place: the machine must be able to host the lab, and its policies decide the base.
    let detected = if in_place && !args.list {
        match in_place_checks() {
            Ok(d) => Some(d),
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        }
    } else {
        None
    };
    let base = match &detected {
        Some(d) => d.base,
        None => match base_from_env() {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {e}");
                return ExitCode::FAILURE;
            }
        },
    };
    // One VM, one scenario at a time.
    args.test_threads = Some(1);
    // Per-run files (the overlay, the console log, sockets) live under target/crlab and are
    // removed at the end; a run that was interrupted (Ctrl-C) leaves its directory, which
    // the next run removes once its owner is gone.
    let runs = root.join("target/crlab/runs");
    remove_stale_runs(&runs);
    let set = Arc::new(Settings {
        root: root.to_path_buf(),
        base,
        in_vm: std::env::var("CRLAB_VM").as_deref() == Ok("1") || in_place,
        in_place: detected,
        run_dir: runs.join(std::process::id().to_string()),
        fail_on_purpose: std::env::var("CRLAB_FAIL_ON_PURPOSE").ok(),
    });
    let shared = Arc::new(Mutex::new(Shared {
        lab: None,
        marker: 0,
        reports: Vec::new(),
        start_error: None,
        uploaded: Vec::new(),
        modules: LoadedModules::default(),
    }));
    if set.in_vm && !args.list {
        if let Err(e) = std::fs::create_dir_all(&set.run_dir) {
            eprintln!("error: creating {}: {e}", set.run_dir.display());
            return ExitCode::FAILURE;
        }
    }
    let selected = shard.unwrap_or(Shard::WHOLE);
    let failed = Arc::new(Mutex::new(Vec::<String>::new()));
    let trials: Vec<Trial> = catalog
        .into_iter()
        .flat_map(|s| Backend::ALL.map(|b| (s.clone(), b)))
        .filter(|(s, backend)| selected.contains(&format!("{}::{}", backend.name(), s.name)))
        .map(|(s, backend)| {
            let (shared, settings, failed) = (shared.clone(), set.clone(), failed.clone());
            let name = format!("{}::{}", backend.name(), s.name);
            Trial::test(name.clone(), move || {
                let result = run_trial(&shared, &settings, &s, backend);
                if result.is_err() {
                    if let Ok(mut f) = failed.lock() {
                        f.push(name);
                    }
                }
                result
            })
            .with_kind("vm")
            .with_ignored_flag(!set.in_vm)
        })
        .collect();
    if let Some(shard) = shard {
        eprintln!(
            "shard {shard}: {} trial(s) of the catalog, chosen by a hash of the scenario's name",
            trials.len()
        );
    }
    if !set.in_vm && !args.list {
        eprintln!("note: these scenarios run in the SELinux VM lab: use `cargo xtask vm-test`");
    }
    let conclusion = libtest_mimic::run(&args, trials);
    let mut g = match shared.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    // A shard writes its report even when it ran nothing (its part of a filter was empty, or
    // its lab did not start): `report merge` tells a shard that ran from a missing one.
    let sharded = shard.is_some() && set.in_vm && !args.list;
    if !g.reports.is_empty() || sharded {
        report::compare_backends(&mut g.reports);
        match POLICIES.get() {
            Some((summary, _)) => println!("\n{summary}"),
            None => println!("\nbase policy: {}", set.base.name()),
        }
        println!("{}", report::table(&g.reports));
        let lab_info = g.lab.as_ref().map(|l| {
            serde_json::json!({
                "base": set.base,
                "warm_start": l.timings.warm,
                "boot_to_ready_seconds": l.timings.boot_to_ready.as_secs_f64(),
                "image_seconds": l.timings.image.as_secs_f64(),
                "accel": l.timings.accel,
                "kernel": l.hello.kernel,
                "selinux_mode": l.hello.selinux_mode,
                "policy_modules": l.hello.policy_modules.len(),
            })
        });
        let mut lab_info = lab_info.unwrap_or_else(|| serde_json::json!({ "base": set.base }));
        if let Some(obj) = lab_info.as_object_mut() {
            obj.insert("in_place".into(), set.in_place.is_some().into());
        }
        if let (Some((_, policies)), Some(obj)) = (POLICIES.get(), lab_info.as_object_mut()) {
            obj.insert("policies".into(), policies.clone());
        }
        let failed = failed.lock().map(|f| f.clone()).unwrap_or_default();
        // What `report merge` needs of a shard: which one it was (1/1 for the whole
        // catalog) and how its run ended (libtest-mimic's counts also count a trial failed
        // by its audit snapshot).
        merge::record_shard(
            &mut lab_info,
            selected,
            RunSummary {
                passed: conclusion.num_passed,
                failed: conclusion.num_failed,
                ignored: conclusion.num_ignored,
                filtered_out: conclusion.num_filtered_out,
                failed_trials: failed,
                lab_error: g.start_error.clone(),
            },
        );
        let dir = std::env::var("CRLAB_REPORT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root.join("target/crlab"));
        // `CRLAB_REPORT_JUNIT=0`: a run whose failures are data (a policy-diff side).
        let junit = std::env::var("CRLAB_REPORT_JUNIT").map_or(true, |v| v != "0");
        let written = if junit {
            report::write(&dir, &g.reports, &lab_info)
                .map(|()| format!("{} and junit.xml", dir.join("report.json").display()))
        } else {
            report::write_json(&dir, &g.reports, &lab_info)
                .map(|()| dir.join("report.json").display().to_string())
        };
        match written {
            Ok(what) => println!("reports: {what}"),
            Err(e) => eprintln!("error: writing the reports to {}: {e}", dir.display()),
        }
    }
    let mut exit = conclusion.exit_code();
    if let Some(lab) = g.lab.take() {
        if let Err(e) = lab.finish(&mut |m| progress(m)) {
            eprintln!("error: {e}");
            exit = ExitCode::FAILURE;
        }
    }
    let _ = std::fs::remove_dir_all(&set.run_dir);
    exit
}

/// What an in-place run checks before any trial: the machine can host the lab (else every
/// reason, and what to do); SIGINT, SIGTERM and SIGHUP undo the run; the base detected.
fn in_place_checks() -> Result<host::Detected, String> {
    host::preflight().map_err(|e| e.to_string())?;
    host::handle_interrupts().map_err(|e| e.to_string())?;
    host::clean_leftover(Path::new(host::STATE_FILE), &mut |m| progress(m))
        .map_err(|e| e.to_string())?;
    let d = host::detect_here().map_err(|e| e.to_string())?;
    if host::which("criu").is_none() {
        eprintln!(
            "note: criu is not installed: the criu:: trials will fail (install criu, or run \
             only crlab's trials with the filter `crlab::`)"
        );
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::run_owner;

    #[test]
    fn a_run_directory_names_its_owner() {
        assert_eq!(run_owner("1234"), Some(1234));
        assert_eq!(run_owner("lab-run-77"), Some(77));
        assert_eq!(run_owner("in-place-proof-23625"), Some(23625));
        assert_eq!(run_owner("stray"), None);
    }
}
