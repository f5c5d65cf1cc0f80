//! Running one scenario in the lab VM and comparing what happened with what
//! its file expects.

use crate::audit::{self, AuditRecord};
use crate::lab::Lab;
use crate::scenario::{Outcome, Scenario};
use crlab_workloads::protocol::{Ready, Trigger};
use serde::Serialize;
use std::time::{Duration, Instant};

/// Where the payload binaries live in the guest.
pub const GUEST_BIN: &str = "/opt/crlab/bin";
/// The workloads' environment mark (see the workloads' protocol).
const MARK: &str = "CRLAB_WORKLOAD_MARK=environ-survives-checkpoint";

/// One step of a trial.
#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    pub millis: u64,
    pub detail: String,
}

/// What a trial observed and whether it matched.
#[derive(Debug, Clone, Serialize)]
pub struct TrialReport {
    pub scenario: String,
    pub backend: String,
    pub passed: bool,
    pub expected_dump: Outcome,
    pub expected_restore: Outcome,
    pub dump: Option<Outcome>,
    pub restore: Option<Outcome>,
    /// The restored contexts, one per thread.
    pub restored_contexts: Vec<String>,
    pub steps: Vec<Step>,
    pub audit: Vec<AuditRecord>,
    pub problems: Vec<String>,
    pub console_tail: String,
    pub millis: u64,
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

/// Runs `s` with crlab as the backend; `marker` is the audit position before it.
/// `policy_dir` holds the scenario-specific policy modules (`scenarios/policy/modules`).
pub fn run(
    lab: &mut Lab,
    s: &Scenario,
    marker: u64,
    policy_dir: &std::path::Path,
) -> (TrialReport, u64) {
    let start = Instant::now();
    let mut c = Ctx {
        lab,
        report: TrialReport {
            scenario: s.name.clone(),
            backend: "crlab".into(),
            passed: false,
            expected_dump: s.expect.dump,
            expected_restore: s.expect.restore,
            dump: None,
            restore: None,
            restored_contexts: Vec::new(),
            steps: Vec::new(),
            audit: Vec::new(),
            problems: Vec::new(),
            console_tail: String::new(),
            millis: 0,
        },
    };
    let dir = format!("/var/tmp/crlab/{}", s.name);
    let state = format!("{dir}/state");
    let images = format!("{dir}/images");
    let prog = format!("{GUEST_BIN}/{}", s.workload.program);
    let crlab = format!("{GUEST_BIN}/crlab");
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
    let prepared = loaded.and_then(|_| {
        c.step("prepare", |lab| {
            let script = format!("rm -rf {dir} && mkdir -p {state} {images}{relabel}");
            let (code, _, e) = sh(lab, &script, "", 30)?;
            if code == 0 {
                Ok(((), String::new()))
            } else {
                Err(e)
            }
        })
    });
    let pid = prepared.and_then(|_| {
        c.step("start workload", |lab| {
            let (wait, log) = (s.workload.wait.clone(), format!("{state}/log"));
            let pid = lab
                .spawn(
                    &[prog.as_str(), state.as_str(), wait.as_str()],
                    &[MARK],
                    &s.workload.context,
                    &log,
                )
                .map_err(|e| e.to_string())?;
            let text = wait_file(lab, &format!("{state}/ready"), 60)?;
            let ready =
                Ready::parse(&text).map_err(|e| format!("the workload's ready file: {e}"))?;
            Ok(((pid, ready), format!("pid {pid}")))
        })
    });
    if let Some((pid, ready)) = pid {
        let dump = c.step("dump", |lab| {
            let mut argv = vec![
                crlab.clone(),
                "dump".into(),
                "--tree".into(),
                pid.to_string(),
                "--images-dir".into(),
                images.clone(),
            ];
            argv.extend(s.engine.dump_args.iter().cloned());
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let r = lab
                .run(&argv, &engine_ctx, Duration::from_secs(120))
                .map_err(|e| e.to_string())?;
            let err = String::from_utf8_lossy(&r.stderr).trim().to_string();
            Ok((
                if r.exit_code == 0 {
                    (Outcome::Ok, err)
                } else {
                    (Outcome::Fail, err)
                },
                String::new(),
            ))
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
                    pid,
                    &ready,
                    &crlab,
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
        let names = [s.workload.program.as_str(), "crlab", "sh", "env"];
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
    for m in s.policy_modules.iter().filter(|_| loaded.is_some()) {
        let name = m.trim_end_matches(".cil");
        if let Ok((code, _, e)) = sh(c.lab, &format!("semodule -r {name}"), "", 180) {
            if code != 0 {
                c.problem(format!("removing policy module {name}: {e}"));
            }
        }
    }
    c.report.passed = c.report.problems.is_empty() && c.report.steps.iter().all(|st| st.ok);
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
    original: u32,
    ready: &Ready,
    crlab: &str,
    images: &str,
    state: &str,
    dir: &str,
    engine_ctx: &str,
) {
    let r = c.step("restore", |lab| {
        let pidfile = format!("{dir}/restored.pid");
        let mut argv = vec![
            crlab.to_string(),
            "restore".into(),
            "--images-dir".into(),
            images.to_string(),
            "--detach".into(),
            "--pidfile".into(),
            pidfile.clone(),
        ];
        argv.extend(s.engine.restore_args.iter().cloned());
        let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
        // The original must be gone (reaped) before its pid can be reused.
        let _ = sh(
            lab,
            &format!("for i in $(seq 100); do [ -e /proc/{original} ] || break; sleep 0.1; done"),
            "",
            20,
        );
        let r = lab
            .run(&argv, engine_ctx, Duration::from_secs(120))
            .map_err(|e| e.to_string())?;
        let err = String::from_utf8_lossy(&r.stderr).trim().to_string();
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
                err,
                pid,
            ),
            String::new(),
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
