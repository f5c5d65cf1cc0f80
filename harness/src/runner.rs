//! Running one scenario in the lab VM and comparing what happened with what
//! its file expects.

use crate::audit::{self, AuditRecord};
use crate::lab::Lab;
use crate::scenario::{Outcome, Scenario, Start};
use crlab_workloads::protocol::{Ready, Trigger};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Where the payload binaries live in the guest.
pub const GUEST_BIN: &str = "/opt/crlab/bin";
/// The workloads' environment mark (see the workloads' protocol).
const MARK: &str = "CRLAB_WORKLOAD_MARK=environ-survives-checkpoint";

/// Which checkpoint/restore tool a trial drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// crlab, the engine under test: its outcomes must be the scenario's.
    Crlab,
    /// The image's own criu (Debian's build, without libselinux): its outcomes are recorded
    /// and compared with crlab's, not required to match the scenario's.
    Criu,
}

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Crlab, Backend::Criu];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Crlab => "crlab",
            Backend::Criu => "criu",
        }
    }

    /// The command names whose audit records belong to a trial of this backend.
    fn comm(self) -> &'static str {
        self.name()
    }

    fn dump_argv(self, s: &Scenario, pid: u32, images: &str) -> Vec<String> {
        let mut argv: Vec<String> = match self {
            Backend::Crlab => vec![format!("{GUEST_BIN}/crlab"), "dump".into()],
            Backend::Criu => vec!["criu".into(), "dump".into()],
        };
        argv.extend([
            "--tree".into(),
            pid.to_string(),
            "--images-dir".into(),
            images.into(),
        ]);
        match self {
            Backend::Crlab => argv.extend(s.engine.dump_args.iter().cloned()),
            Backend::Criu => argv.extend(
                CRIU_COMMON
                    .map(String::from)
                    .into_iter()
                    .chain(["--log-file".into(), "dump.log".into()]),
            ),
        }
        argv
    }

    fn restore_argv(self, s: &Scenario, images: &str, pidfile: &str) -> Vec<String> {
        let mut argv: Vec<String> = match self {
            Backend::Crlab => vec![
                format!("{GUEST_BIN}/crlab"),
                "restore".into(),
                "--detach".into(),
            ],
            Backend::Criu => vec!["criu".into(), "restore".into(), "--restore-detached".into()],
        };
        argv.extend([
            "--images-dir".into(),
            images.into(),
            "--pidfile".into(),
            pidfile.into(),
        ]);
        match self {
            Backend::Crlab => argv.extend(s.engine.restore_args.iter().cloned()),
            Backend::Criu => {
                argv.extend(CRIU_COMMON.map(String::from));
                argv.extend(["--log-file".into(), "restore.log".into()]);
                // criu spells the context override with the LSM's name.
                if let Some(ctx) = lsm_profile(s) {
                    argv.extend(["--lsm-profile".into(), format!("selinux:{ctx}")]);
                }
            }
        }
        argv
    }

    /// The scenario's engine options that this backend cannot express.
    pub fn unexpressed_options(self, s: &Scenario) -> Vec<String> {
        match self {
            Backend::Crlab => Vec::new(),
            Backend::Criu => s
                .engine
                .dump_args
                .iter()
                .chain(&s.engine.restore_args)
                .filter(|a| a.starts_with("--unsafe-"))
                .cloned()
                .collect(),
        }
    }
}

/// Options of every criu run: the workloads share the agent's session, and criu logs at
/// level 4 into the images directory, where the runner reads its errors.
const CRIU_COMMON: [&str; 2] = ["--shell-job", "-v4"];

/// The lab policy's boolean that lets the engine domains use `execmem`, on only for criu.
const CRIU_EXECMEM: &str = "crlab_criu_execmem";

/// The `--lsm-profile` value of the scenario's restore options.
fn lsm_profile(s: &Scenario) -> Option<&str> {
    let i = s
        .engine
        .restore_args
        .iter()
        .position(|a| a == "--lsm-profile")?;
    s.engine.restore_args.get(i + 1).map(String::as_str)
}

/// One step of a trial.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    pub millis: u64,
    pub detail: String,
}

/// A restored process and the context of each of its threads.
#[derive(Debug, Clone, Serialize)]
pub struct RestoredProcess {
    pub pid: u32,
    pub contexts: Vec<String>,
}

/// What a trial observed and whether it matched.
#[derive(Debug, Clone, Serialize)]
pub struct TrialReport {
    pub scenario: String,
    pub backend: Backend,
    /// crlab: every expectation held. criu: the trial ran (its outcomes are recorded).
    pub passed: bool,
    pub expected_dump: Outcome,
    pub expected_restore: Outcome,
    pub dump: Option<Outcome>,
    pub restore: Option<Outcome>,
    /// The restored root's contexts, one per thread.
    pub restored_contexts: Vec<String>,
    /// Every restored process, in pre-order (children by pid), with its threads' contexts.
    pub restored_processes: Vec<RestoredProcess>,
    /// What `crlab check --images-dir` predicted before the restore.
    pub check: Option<Outcome>,
    pub steps: Vec<Step>,
    pub audit: Vec<AuditRecord>,
    pub problems: Vec<String>,
    /// criu only: where its outcomes differ from crlab's in the same scenario.
    pub differences: Vec<String>,
    /// Scenario options the backend cannot express (ran without them).
    pub unexpressed_options: Vec<String>,
    pub console_tail: String,
    pub millis: u64,
}

impl TrialReport {
    /// A trial of `s` with `backend` that has observed nothing yet.
    pub fn new(s: &Scenario, backend: Backend) -> TrialReport {
        TrialReport {
            scenario: s.name.clone(),
            backend,
            passed: false,
            expected_dump: s.expect.dump,
            expected_restore: s.expect.restore,
            dump: None,
            restore: None,
            restored_contexts: Vec::new(),
            restored_processes: Vec::new(),
            check: None,
            steps: Vec::new(),
            audit: Vec::new(),
            problems: Vec::new(),
            differences: Vec::new(),
            unexpressed_options: backend.unexpressed_options(s),
            console_tail: String::new(),
            millis: 0,
        }
    }
}

struct Ctx<'a> {
    lab: &'a mut Lab,
    report: TrialReport,
}

impl Ctx<'_> {
    fn step<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Lab) -> Result<(T, String), String>,
    ) -> Option<T> {
        let t = Instant::now();
        let r = f(self.lab);
        let (ok, detail, v) = match r {
            Ok((v, d)) => (true, d, Some(v)),
            Err(e) => (false, e, None),
        };
        self.report.steps.push(Step {
            name: name.into(),
            ok,
            millis: t.elapsed().as_millis() as u64,
            detail,
        });
        v
    }

    fn problem(&mut self, p: String) {
        self.report.problems.push(p);
    }
}

fn sh(
    lab: &mut Lab,
    script: &str,
    context: &str,
    secs: u64,
) -> Result<(i32, String, String), String> {
    let r = lab
        .run(
            &["/bin/sh", "-c", script],
            context,
            Duration::from_secs(secs),
        )
        .map_err(|e| e.to_string())?;
    Ok((
        if r.timed_out { -2 } else { r.exit_code },
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    ))
}

fn wait_file(lab: &mut Lab, path: &str, secs: u64) -> Result<String, String> {
    let start = Instant::now();
    loop {
        if let Ok(data) = lab.read_file(path) {
            return Ok(String::from_utf8_lossy(&data).into_owned());
        }
        if start.elapsed() > Duration::from_secs(secs) {
            return Err(format!("{path} did not appear within {secs} s"));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn selinux_type(ctx: &str) -> String {
    ctx.trim_end_matches(['\0', '\n'])
        .split(':')
        .nth(2)
        .unwrap_or("")
        .to_string()
}

/// Runs `s` with `backend`; `marker` is the audit position before it.
/// `policy_dir` holds the scenario-specific policy modules (`scenarios/policy/modules`).
pub fn run(
    lab: &mut Lab,
    s: &Scenario,
    backend: Backend,
    marker: u64,
    policy_dir: &std::path::Path,
) -> (TrialReport, u64) {
    let start = Instant::now();
    let mut c = Ctx {
        lab,
        report: TrialReport::new(s, backend),
    };
    let dir = format!("/var/tmp/crlab/{}", s.name);
    let state = format!("{dir}/state");
    let images = format!("{dir}/images");
    let prog = format!("{GUEST_BIN}/{}", s.workload.program);
    let engine_ctx = s.engine.context.clone();

    let loaded = c.step("load policy modules", |lab| {
        for m in &s.policy_modules {
            let data = std::fs::read(policy_dir.join(m))
                .map_err(|e| format!("reading policy module {m}: {e}"))?;
            // semodule runs in semanage_t, which may read /tmp but not /var/lib.
            let path = format!("/tmp/{m}");
            lab.write_file(&path, &data, 0o644)
                .map_err(|e| e.to_string())?;
            let (code, _, e) = sh(lab, &format!("semodule -i {path}"), "", 180)?;
            if code != 0 {
                return Err(format!("semodule -i {m}: {e}"));
            }
        }
        Ok(((), s.policy_modules.join(" ")))
    });
    let relabel = if s.workload.files_type.is_empty() {
        String::new()
    } else {
        format!(" && chcon -R -t {} {dir}", s.workload.files_type)
    };
    let relabel = match &s.workload.user {
        Some(u) => format!("{relabel} && chown -R {}:{} {state}", u.uid, u.gid),
        None => relabel,
    };
    let prepared = loaded.and_then(|_| {
        c.step("prepare", |lab| {
            let mut script = format!("rm -rf {dir} && mkdir -p {state} {images}{relabel}");
            if backend == Backend::Criu {
                // criu maps its restorer as executable anonymous memory (see the lab policy).
                script += &format!(" && setsebool {CRIU_EXECMEM} on");
            }
            let (code, _, e) = sh(lab, &script, "", 30)?;
            if code == 0 {
                Ok(((), String::new()))
            } else {
                Err(e)
            }
        })
    });
    let unit = format!("crlab-{}.service", s.name);
    let pid = prepared.and_then(|_| {
        c.step("start workload", |lab| {
            let (wait, log) = (s.workload.wait.clone(), format!("{state}/log"));
            let contexts = format!(
                "CRLAB_MEMBER_CONTEXTS={}",
                s.workload.member_contexts.join(" ")
            );
            let mut env = vec![MARK];
            if !s.workload.member_contexts.is_empty() {
                env.push(&contexts);
            }
            let groups: Vec<String> = s
                .workload
                .user
                .iter()
                .flat_map(|u| u.groups.iter().map(u32::to_string))
                .collect();
            let setpriv = s.workload.user.as_ref().map(|u| {
                [
                    "/usr/bin/setpriv".to_string(),
                    format!("--reuid={}", u.uid),
                    format!("--regid={}", u.gid),
                    if groups.is_empty() {
                        "--clear-groups".to_string()
                    } else {
                        format!("--groups={}", groups.join(","))
                    },
                    "--".to_string(),
                ]
            });
            let mut argv: Vec<&str> = setpriv.iter().flatten().map(String::as_str).collect();
            argv.extend([prog.as_str(), state.as_str(), wait.as_str()]);
            let pid = match s.workload.start {
                Start::Exec => lab
                    .spawn(&argv, &env, &s.workload.context, &log)
                    .map_err(|e| e.to_string())?,
                Start::Unit => start_unit(lab, &unit, &argv, &env, &s.workload.context, &log)?,
            };
            let text = wait_file(lab, &format!("{state}/ready"), 60).map_err(|e| {
                let out = lab.read_file(&log).unwrap_or_default();
                let out = String::from_utf8_lossy(&out);
                let tail: Vec<&str> = out.lines().rev().take(10).collect();
                let tail: Vec<&str> = tail.into_iter().rev().collect();
                format!("{e}; the workload's output ends with:\n{}", tail.join("\n"))
            })?;
            let ready =
                Ready::parse(&text).map_err(|e| format!("the workload's ready file: {e}"))?;
            Ok(((pid, ready), format!("pid {pid}")))
        })
    });
    if let Some((pid, ready)) = pid {
        let dump = c.step("dump", |lab| {
            let argv = backend.dump_argv(s, pid, &images);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let r = lab
                .run(&argv, &engine_ctx, Duration::from_secs(120))
                .map_err(|e| e.to_string())?;
            let err = error_text(lab, backend, &r.stderr, &format!("{images}/dump.log"));
            let outcome = if r.exit_code == 0 {
                Outcome::Ok
            } else {
                Outcome::Fail
            };
            // The step's detail is what the tool said: the report keeps the error.
            Ok(((outcome, err.clone()), err))
        });
        if let Some((outcome, err)) = dump {
            c.report.dump = Some(outcome);
            if outcome != s.expect.dump {
                c.problem(format!(
                    "dump: expected {:?}, got {outcome:?}: {err}",
                    s.expect.dump
                ));
            }
            if outcome == Outcome::Fail {
                for w in &s.expect.error_contains {
                    if !err.contains(w.as_str()) {
                        c.problem(format!("the dump error does not name {w:?}: {err}"));
                    }
                }
                // A failed dump must leave the workload as it was: it still passes its check.
                let pid_text = pid.to_string();
                c.step("workload survived the failed dump", |lab| {
                    trigger(lab, &ready, &pid_text, &state)?;
                    let result = wait_file(lab, &format!("{state}/result"), 60)?;
                    if result.trim() == "ok" {
                        Ok(((), "ok".into()))
                    } else {
                        Err(format!(
                            "after the failed dump the workload says: {}",
                            result.trim()
                        ))
                    }
                });
            }
            if outcome == Outcome::Ok && s.expect.restore != Outcome::Skip {
                restore(
                    &mut c,
                    s,
                    backend,
                    pid,
                    &ready,
                    &images,
                    &state,
                    &dir,
                    &engine_ctx,
                );
            }
        }
    }
    // The audit records of the window, and cleanup.
    let mut next = marker;
    if let Ok(a) = c.lab.audit_since(marker) {
        next = a.next_marker;
        let names = [
            s.workload.program.as_str(),
            backend.comm(),
            "sh",
            "env",
            "setpriv",
        ];
        c.report.audit = a
            .records
            .iter()
            .filter_map(|l| audit::parse(l))
            .filter(|r| names.contains(&r.comm.as_str()) || r.kind == "SELINUX_ERR")
            .collect();
    } else {
        c.problem("could not collect the audit records".into());
    }
    check_audit(&mut c, s);
    let _ = sh(c.lab, &format!("pkill -KILL -f {dir}/ ; true"), "", 30);
    if backend == Backend::Criu {
        let _ = sh(c.lab, &format!("setsebool {CRIU_EXECMEM} off"), "", 30);
    }
    if s.workload.start == Start::Unit {
        let _ = sh(
            c.lab,
            &format!("systemctl stop {unit}; systemctl reset-failed {unit}; true"),
            "",
            60,
        );
    }
    for m in s.policy_modules.iter().filter(|_| loaded.is_some()) {
        let name = m.trim_end_matches(".cil");
        if let Ok((code, _, e)) = sh(c.lab, &format!("semodule -r {name}"), "", 180) {
            if code != 0 {
                c.problem(format!("removing policy module {name}: {e}"));
            }
        }
    }
    c.report.passed = match backend {
        Backend::Crlab => c.report.problems.is_empty() && c.report.steps.iter().all(|st| st.ok),
        // criu's outcomes are recorded, not required: its trial fails only when the lab
        // could not run it (policy, preparation, the workload's start).
        Backend::Criu => c
            .report
            .steps
            .iter()
            .filter(|st| {
                ["load policy modules", "prepare", "start workload"].contains(&st.name.as_str())
            })
            .all(|st| st.ok),
    };
    if !c.report.passed {
        c.report.console_tail = c.lab.console_tail(20);
    }
    c.report.millis = start.elapsed().as_millis() as u64;
    (c.report, next)
}

#[allow(clippy::too_many_arguments)]
fn restore(
    c: &mut Ctx<'_>,
    s: &Scenario,
    backend: Backend,
    original: u32,
    ready: &Ready,
    images: &str,
    state: &str,
    dir: &str,
    engine_ctx: &str,
) {
    // What the engine predicts, from the kernel's access computation, before it tries.
    let check = (backend == Backend::Crlab)
        .then(|| {
            c.step("crlab check --images-dir", |lab| {
                let mut argv = vec![
                    format!("{GUEST_BIN}/crlab"),
                    "check".into(),
                    "--images-dir".into(),
                    images.to_string(),
                ];
                if let Some(ctx) = lsm_profile(s) {
                    argv.extend(["--lsm-profile".into(), ctx.to_string()]);
                }
                let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
                let r = lab
                    .run(&argv, engine_ctx, Duration::from_secs(60))
                    .map_err(|e| e.to_string())?;
                let text = format!(
                    "{}{}",
                    String::from_utf8_lossy(&r.stdout),
                    String::from_utf8_lossy(&r.stderr)
                );
                let outcome = match r.exit_code {
                    0 => Outcome::Ok,
                    1 => Outcome::Fail,
                    other => return Err(format!("crlab check exited with {other}: {text}")),
                };
                Ok((outcome, text.trim().to_string()))
            })
        })
        .flatten();
    if let Some(outcome) = check {
        c.report.check = Some(outcome);
        if outcome != s.expect.check {
            let detail = c.report.steps.last().map(|st| st.detail.clone());
            c.problem(format!(
                "crlab check --images-dir: expected {:?}, got {outcome:?}: {}",
                s.expect.check,
                detail.unwrap_or_default()
            ));
        }
    }
    let r = c.step("restore", |lab| {
        let pidfile = format!("{dir}/restored.pid");
        let argv = backend.restore_argv(s, images, &pidfile);
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        // The originals must be gone (reaped) before their pids can be reused.
        let _ = sh(
            lab,
            &format!(
                "for p in {original} {}; do for i in $(seq 100); do [ -e /proc/$p ] || break; sleep 0.1; done; done",
                members(ready).join(" ")
            ),
            "",
            30,
        );
        let r = lab
            .run(&argv, engine_ctx, Duration::from_secs(120))
            .map_err(|e| e.to_string())?;
        let err = error_text(lab, backend, &r.stderr, &format!("{images}/restore.log"));
        let pid = if r.exit_code == 0 {
            lab.read_file(&pidfile)
                .ok()
                .map(|b| String::from_utf8_lossy(&b).trim().to_string())
        } else {
            None
        };
        Ok((
            (
                if r.exit_code == 0 {
                    Outcome::Ok
                } else {
                    Outcome::Fail
                },
                err.clone(),
                pid,
            ),
            err,
        ))
    });
    let Some((outcome, err, pid)) = r else { return };
    c.report.restore = Some(outcome);
    if outcome != s.expect.restore {
        c.problem(format!(
            "restore: expected {:?}, got {outcome:?}: {err}",
            s.expect.restore
        ));
    }
    if outcome == Outcome::Fail {
        for w in &s.expect.error_contains {
            if !err.contains(w.as_str()) {
                c.problem(format!("the restore error does not name {w:?}: {err}"));
            }
        }
        // A failed restore leaves nothing behind: the original pid is free again.
        c.step("nothing left after the failed restore", |lab| {
            let (code, out, _) = sh(
                lab,
                &format!("test -e /proc/{original} && cat /proc/{original}/status | head -3"),
                "",
                30,
            )?;
            if code == 0 {
                Err(format!(
                    "pid {original} exists after the failed restore: {out}"
                ))
            } else {
                Ok(((), String::new()))
            }
        });
        return;
    }
    let Some(pid) = pid else {
        c.problem("restore succeeded but wrote no pid file".into());
        return;
    };
    let types = c.step("restored context", |lab| {
        let (code, out, e) = sh(
            lab,
            &format!("for t in /proc/{pid}/task/*; do cat $t/attr/current; echo; done"),
            "",
            30,
        )?;
        if code != 0 {
            return Err(e);
        }
        let contexts: Vec<String> = out
            .lines()
            .filter(|l| !l.is_empty())
            .map(|l| l.trim_end_matches(['\0', '\n']).to_string())
            .collect();
        Ok((contexts.clone(), contexts.join(",")))
    });
    if let Some(contexts) = types {
        if !s.expect.restored_context.is_empty()
            && contexts.iter().any(|c| *c != s.expect.restored_context)
        {
            c.problem(format!(
                "restored contexts {contexts:?}, expected every thread in {}",
                s.expect.restored_context
            ));
        }
        let types: Vec<String> = contexts.iter().map(|c| selinux_type(c)).collect();
        if !s.expect.restored_type.is_empty()
            && (types.is_empty() || types.iter().any(|t| *t != s.expect.restored_type))
        {
            c.problem(format!(
                "restored context types {types:?}, expected every thread in {}",
                s.expect.restored_type
            ));
        }
        c.report.restored_contexts = contexts;
    }
    let root_pid = pid.parse::<u32>().unwrap_or(0);
    let tree = c.step("restored tree", |lab| {
        let mut tree = Vec::new();
        restored_tree(lab, root_pid, &mut tree)?;
        let detail = tree
            .iter()
            .map(|p| format!("{} {}", p.pid, p.contexts.join(",")))
            .collect::<Vec<_>>()
            .join("; ");
        Ok((tree, detail))
    });
    if let Some(tree) = tree {
        if !s.expect.processes.is_empty() {
            let got: Vec<&str> = tree
                .iter()
                .map(|p| p.contexts.first().map(String::as_str).unwrap_or(""))
                .collect();
            let threads_agree = tree
                .iter()
                .all(|p| p.contexts.iter().all(|c| Some(c) == p.contexts.first()));
            if got != s.expect.processes || !threads_agree {
                c.problem(format!(
                    "restored processes (pre-order) in {:?}, expected {:?}",
                    tree.iter()
                        .map(|p| (p.pid, &p.contexts))
                        .collect::<Vec<_>>(),
                    s.expect.processes
                ));
            }
        }
        c.report.restored_processes = tree;
    }
    if let Some(user) = &s.workload.user {
        let want = user.status_lines();
        c.step("restored credentials", |lab| {
            let (code, out, e) = sh(
                lab,
                &format!("for t in /proc/{pid}/task/*; do grep -E '^(Uid|Gid|Groups):' $t/status; done"),
                "",
                30,
            )?;
            if code != 0 {
                return Err(format!("reading the restored threads' credentials: {e}"));
            }
            let lines: Vec<&str> = out.lines().map(str::trim_end).collect();
            let threads = lines.len() / 3;
            let wrong: Vec<&str> = lines
                .iter()
                .copied()
                .filter(|l| !want.iter().any(|w| w == l))
                .collect();
            if threads == 0 || lines.len() % 3 != 0 || !wrong.is_empty() {
                return Err(format!(
                    "restored credentials {wrong:?} (of {threads} thread(s)), expected {want:?} in every thread"
                ));
            }
            Ok(((), format!("{threads} thread(s): {}", want.join(", "))))
        });
    }
    c.step("self-check", |lab| {
        trigger(lab, ready, &pid, state)?;
        let result = wait_file(lab, &format!("{state}/result"), 60)?;
        if result.trim() == "ok" {
            Ok(((), "ok".into()))
        } else {
            Err(format!("the restored workload says: {}", result.trim()))
        }
    });
}

/// Starts the workload as a transient systemd service in `context` (`SELinuxContext=`), its
/// output appended to `log`; returns its main pid.
fn start_unit(
    lab: &mut Lab,
    unit: &str,
    argv: &[&str],
    env: &[&str],
    context: &str,
    log: &str,
) -> Result<u32, String> {
    let mut script = format!(
        "systemctl reset-failed {unit} 2>/dev/null; systemd-run --quiet --unit={unit} --collect \
         --property=StandardOutput=append:{log} --property=StandardError=append:{log}"
    );
    if !context.is_empty() {
        script += &format!(" --property=SELinuxContext={context}");
    }
    for e in env {
        script += &format!(" --setenv='{e}'");
    }
    for a in argv {
        script += &format!(" '{a}'");
    }
    script += &format!(" && systemctl show --property=MainPID --value {unit}");
    let (code, out, e) = sh(lab, &script, "", 60)?;
    if code != 0 {
        return Err(format!("systemd-run of {unit} failed ({code}): {e}{out}"));
    }
    match out.trim().parse::<u32>() {
        Ok(pid) if pid != 0 => Ok(pid),
        _ => Err(format!(
            "{unit} has no main pid ({:?}): see journalctl -u {unit}",
            out.trim()
        )),
    }
}

/// The restored tree under `pid`, in pre-order with children by pid, each process with its
/// threads' contexts.
fn restored_tree(lab: &mut Lab, pid: u32, out: &mut Vec<RestoredProcess>) -> Result<(), String> {
    if out.len() > 64 {
        return Err("more than 64 restored processes: a runaway tree?".into());
    }
    let (code, text, e) = sh(
        lab,
        &format!(
            "for t in /proc/{pid}/task/*; do printf 'context %s\\n' \"$(tr -d '\\0' < $t/attr/current)\"; done; \
             echo children $(cat /proc/{pid}/task/*/children)"
        ),
        "",
        30,
    )?;
    if code != 0 {
        return Err(format!(
            "reading the contexts of restored process {pid}: {e}"
        ));
    }
    let mut contexts = Vec::new();
    let mut children = Vec::new();
    for line in text.lines() {
        if let Some(c) = line.strip_prefix("context ") {
            contexts.push(c.trim_end().to_string());
        } else if let Some(list) = line.strip_prefix("children") {
            children = list
                .split_whitespace()
                .filter_map(|p| p.parse::<u32>().ok())
                .collect();
        }
    }
    children.sort_unstable();
    out.push(RestoredProcess { pid, contexts });
    for child in children {
        restored_tree(lab, child, out)?;
    }
    Ok(())
}

/// Does what the workload's ready file asks of the driver, then wakes it the way it waits.
fn trigger(lab: &mut Lab, ready: &Ready, pid: &str, state: &str) -> Result<(), String> {
    for w in &ready.external_writes {
        let script = format!(
            "printf '%s' '{}' | dd of={state}/{} bs=1 seek={} conv=notrunc status=none",
            w.text.replace('\'', ""),
            w.file,
            w.offset
        );
        let (code, _, e) = sh(lab, &script, "", 30)?;
        if code != 0 {
            return Err(format!("the external write to {}: {e}", w.file));
        }
    }
    let script = match ready.trigger {
        Trigger::CheckFile => format!(": > {state}/check"),
        Trigger::PipeFd(fd) => format!("printf '!' > /proc/{pid}/fd/{fd}"),
        Trigger::Signal(sig) => format!("kill -{sig} {pid}"),
    };
    let (code, _, e) = sh(lab, &script, "", 30)?;
    if code != 0 {
        return Err(format!("triggering the workload ({script}): {e}"));
    }
    Ok(())
}

/// What a failed step said: crlab's stderr; criu's own error lines from its log.
fn error_text(lab: &mut Lab, backend: Backend, stderr: &[u8], log: &str) -> String {
    let stderr = String::from_utf8_lossy(stderr).trim().to_string();
    if backend == Backend::Crlab {
        return stderr;
    }
    let Ok(log) = lab.read_file(log) else {
        return stderr;
    };
    let log = String::from_utf8_lossy(&log);
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Error") || l.contains("error"))
        .collect();
    let tail = &errors[errors.len().saturating_sub(6)..];
    format!("{stderr}\n{}", tail.join("\n")).trim().to_string()
}

/// The pids of the members a tree workload announced (`member-NAME PID`).
fn members(ready: &Ready) -> Vec<String> {
    ready
        .extra
        .iter()
        .filter(|(k, _)| k.starts_with("member-"))
        .map(|(_, v)| v.clone())
        .collect()
}

fn check_audit(c: &mut Ctx<'_>, s: &Scenario) {
    let mut matched = vec![false; c.report.audit.len()];
    for want in &s.expect.audit {
        let hit = c.report.audit.iter().position(|r| {
            r.kind == want.kind
                && r.permissions.contains(&want.permission)
                && (want.source_type.is_empty() || r.source_type == want.source_type)
                && (want.target_type.is_empty() || r.target_type == want.target_type)
                && (want.class.is_empty() || r.class == want.class)
        });
        match hit {
            Some(i) => matched[i] = true,
            None => c.problem(format!("expected audit record missing: {want:?}")),
        }
    }
    if s.expect.no_other_denials {
        let extra: Vec<String> = c
            .report
            .audit
            .iter()
            .zip(&matched)
            .filter(|(r, m)| !**m && (r.result == "denied"))
            .map(|(r, _)| r.normalized.clone())
            .collect();
        for e in extra {
            c.problem(format!("unexpected denial: {e}"));
        }
    }
}
