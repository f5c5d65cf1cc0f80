//! The SELinux conformance suite: one trial per scenario of `scenarios/catalog/` and backend
//! (`crlab::NAME`, whose outcomes must be the scenario's, then `criu::NAME`, the image's own
//! criu, whose outcomes are recorded and compared with crlab's).
//!
//! Plain `cargo test` lists the trials as ignored (they need the VM lab);
//! `cargo xtask vm-test` sets `CRLAB_VM=1` and the payload directory, and the
//! trials run, one after another, in one lab VM.

use crlab_harness::lab::{recipe, Lab, LabOptions};
use crlab_harness::report;
use crlab_harness::runner::{self, Backend, TrialReport, GUEST_BIN};
use crlab_harness::scenario::{self, Scenario};
use libtest_mimic::{Arguments, Failed, Trial};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

struct Shared {
    lab: Option<Lab>,
    marker: u64,
    reports: Vec<TrialReport>,
    start_error: Option<String>,
    uploaded: Vec<String>,
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn progress(msg: &str) {
    eprintln!(
        "[lab {:>6.1}s] {msg}",
        START.get_or_init(Instant::now).elapsed().as_secs_f64()
    );
}

static START: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// The payload's binaries, stripped, from `CRLAB_PAYLOAD_DIR`.
fn payload(name: &str, run_dir: &Path) -> Result<Vec<u8>, String> {
    let dir = std::env::var("CRLAB_PAYLOAD_DIR").map_err(|_| {
        "CRLAB_PAYLOAD_DIR is not set (run through cargo xtask vm-test)".to_string()
    })?;
    let src = Path::new(&dir).join(name);
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

fn start_lab(run_dir: &Path) -> Result<Lab, String> {
    let agent =
        PathBuf::from(std::env::var("CRLAB_PAYLOAD_DIR").unwrap_or_default()).join("crlab-agent");
    let modules = recipe::policy_modules(&root().join("scenarios/policy"))?;
    let opts = LabOptions {
        qemu: std::env::var("CRLAB_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into()),
        memory_mib: 1024,
        cpus: 2,
        run_dir: run_dir.to_path_buf(),
        agent,
        policy_modules: modules,
        cold_boot_timeout: Duration::from_secs(600),
    };
    let lab = Lab::start(&opts, &mut |m| progress(m)).map_err(|e| format!("{e:#}"))?;
    progress(&format!(
        "lab ready: {} start, boot-to-ready {:.1} s (image {:.1} s); guest kernel {}, SELinux {}, agent context {}",
        if lab.timings.warm { "warm" } else { "cold" },
        lab.timings.boot_to_ready.as_secs_f64(),
        lab.timings.image.as_secs_f64(),
        lab.hello.kernel,
        lab.hello.selinux_mode,
        lab.hello.context
    ));
    Ok(lab)
}

fn run_trial(
    shared: &Arc<Mutex<Shared>>,
    s: &Scenario,
    backend: Backend,
    run_dir: &Path,
) -> Result<(), Failed> {
    let mut g = shared
        .lock()
        .map_err(|_| Failed::from("the lab lock is poisoned"))?;
    if let Some(e) = &g.start_error {
        return Err(format!("the lab did not start: {e}").into());
    }
    if g.lab.is_none() {
        match start_lab(run_dir) {
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
            let data = payload(name, run_dir)?;
            let lab = g.lab.as_mut().ok_or("no lab")?;
            lab.write_file(&format!("{GUEST_BIN}/{name}"), &data, 0o755)
                .map_err(|e| e.to_string())?;
            g.uploaded.push(name.to_string());
        }
    }
    let marker = g.marker;
    let lab = g.lab.as_mut().ok_or("no lab")?;
    let (rep, next) = runner::run(
        lab,
        s,
        backend,
        marker,
        &root().join("scenarios/policy/modules"),
    );
    g.marker = next;
    let passed = rep.passed;
    let text = format!(
        "{}\nsteps:\n{}\naudit:\n{}\nconsole tail:\n{}",
        rep.problems.join("\n"),
        rep.steps
            .iter()
            .map(|st| format!(
                "  {} {} ({} ms) {}",
                if st.ok { "ok  " } else { "FAIL" },
                st.name,
                st.millis,
                st.detail
            ))
            .collect::<Vec<_>>()
            .join("\n"),
        rep.audit
            .iter()
            .map(|a| format!("  {}", a.normalized))
            .collect::<Vec<_>>()
            .join("\n"),
        rep.console_tail
    );
    let snapshot = audit_snapshot(&rep);
    let name = format!("{}__{}", rep.backend.name(), rep.scenario);
    g.reports.push(rep);
    drop(g);
    if !passed {
        return Err(text.into());
    }
    // criu's records are in the report; only crlab's are held to a snapshot.
    if backend != Backend::Crlab {
        return Ok(());
    }
    check_snapshot(&name, &snapshot)
}

/// The trial's audit records as its snapshot holds them: normalized, one per line.
fn audit_snapshot(rep: &TrialReport) -> String {
    if rep.audit.is_empty() {
        return "(no AVC, USER_AVC or SELINUX_ERR record)\n".into();
    }
    rep.audit
        .iter()
        .map(|a| format!("{}\n", a.normalized))
        .collect()
}

/// Compares the audit records with `harness/tests/snapshots/NAME.snap`; a difference (a
/// policy or engine change) fails the trial, and `cargo insta review` shows and accepts it.
fn check_snapshot(name: &str, text: &str) -> Result<(), Failed> {
    let result = std::panic::catch_unwind(|| {
        insta::with_settings!({
            snapshot_path => root().join("harness/tests/snapshots"),
            prepend_module_to_snapshot => false,
            description => "the scenario's audit records, normalized (pids, times, serials, inodes redacted)",
            omit_expression => true,
        }, {
            insta::assert_snapshot!(name, text);
        });
    });
    result.map_err(|_| {
        Failed::from(format!(
            "the audit records differ from the snapshot harness/tests/snapshots/{name}.snap \
             (the diff is above): if the change is intended, accept it with `cargo insta review`"
        ))
    })
}

/// Removes run directories whose process no longer exists.
fn remove_stale_runs(runs: &Path) {
    let Ok(rd) = std::fs::read_dir(runs) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let alive = name
            .parse::<u32>()
            .is_ok_and(|pid| Path::new(&format!("/proc/{pid}")).exists());
        if !alive {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

fn main() -> ExitCode {
    let mut args = Arguments::from_args();
    let catalog = match scenario::load(&root().join("scenarios/catalog")) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let in_vm = std::env::var("CRLAB_VM").as_deref() == Ok("1");
    // One VM, one scenario at a time.
    args.test_threads = Some(1);
    // Per-run files (the overlay, the console log, sockets) live under target/crlab and are
    // removed at the end; a run that was interrupted (Ctrl-C) leaves its directory, which
    // the next run removes once its owner is gone.
    let runs = root().join("target/crlab/runs");
    remove_stale_runs(&runs);
    let run_dir = runs.join(std::process::id().to_string());
    let shared = Arc::new(Mutex::new(Shared {
        lab: None,
        marker: 0,
        reports: Vec::new(),
        start_error: None,
        uploaded: Vec::new(),
    }));
    if in_vm && !args.list {
        if let Err(e) = std::fs::create_dir_all(&run_dir) {
            eprintln!("error: creating {}: {e}", run_dir.display());
            return ExitCode::FAILURE;
        }
    }
    let trials: Vec<Trial> = catalog
        .into_iter()
        .flat_map(|s| Backend::ALL.map(|b| (s.clone(), b)))
        .map(|(s, backend)| {
            let shared = shared.clone();
            let run_dir = run_dir.clone();
            let name = format!("{}::{}", backend.name(), s.name);
            Trial::test(name, move || run_trial(&shared, &s, backend, &run_dir))
                .with_kind("vm")
                .with_ignored_flag(!in_vm)
        })
        .collect();
    if !in_vm && !args.list {
        eprintln!("note: these scenarios run in the SELinux VM lab: use `cargo xtask vm-test`");
    }
    let conclusion = libtest_mimic::run(&args, trials);
    let mut g = match shared.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    };
    if !g.reports.is_empty() {
        report::compare_backends(&mut g.reports);
        println!("\n{}", report::table(&g.reports));
        let lab_info = g.lab.as_ref().map(|l| {
            serde_json::json!({
                "warm_start": l.timings.warm,
                "boot_to_ready_seconds": l.timings.boot_to_ready.as_secs_f64(),
                "image_seconds": l.timings.image.as_secs_f64(),
                "accel": l.timings.accel,
                "kernel": l.hello.kernel,
                "selinux_mode": l.hello.selinux_mode,
                "policy_modules": l.hello.policy_modules.len(),
            })
        });
        let dir = std::env::var("CRLAB_REPORT_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|_| root().join("target/crlab"));
        match report::write(&dir, &g.reports, &lab_info.unwrap_or_default()) {
            Ok(()) => println!(
                "reports: {} and {}",
                dir.join("report.json").display(),
                dir.join("junit.xml").display()
            ),
            Err(e) => eprintln!("error: writing the reports to {}: {e}", dir.display()),
        }
    }
    if let Some(lab) = g.lab.take() {
        lab.shutdown();
    }
    let _ = std::fs::remove_dir_all(&run_dir);
    conclusion.exit_code()
}
