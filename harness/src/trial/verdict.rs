//! The judgement of a trial: `verdict(expectation, observation) -> problems`, a pure function
//! of what the scenario expects and what the lab observed. No I/O, no lab: unit-tested here
//! over every kind of expectation.

use super::observation::{Observation, SelfCheck};
use crate::audit::AuditRecord;
use crate::context;
use crate::scenario::{AuditExpect, Base, Outcome, Scenario};
use serde::{Deserialize, Serialize};

/// Everything a trial is judged against, for one base.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expectation {
    pub dump: Outcome,
    pub check: Outcome,
    pub restore: Outcome,
    /// Per process, pre-order: a whole context or a type, held by every thread.
    pub restored: Vec<String>,
    pub error_contains: Vec<String>,
    pub audit: Vec<AuditExpect>,
    pub no_other_denials: bool,
    /// The `Uid:`/`Gid:`/`Groups:` lines every restored thread must show.
    pub credentials: Option<Vec<String>>,
}

impl Expectation {
    /// What `s` expects on `base`.
    pub fn of(s: &Scenario, base: Base) -> Expectation {
        let e = s.expect.on(base);
        Expectation {
            dump: e.dump,
            check: e.check,
            restore: e.restore,
            restored: e.restored,
            error_contains: e.error_contains,
            audit: e.audit,
            no_other_denials: e.no_other_denials,
            credentials: s.workload.user.as_ref().map(|u| {
                u.status_lines()
                    .iter()
                    .map(|l| l.trim_end().to_string())
                    .collect()
            }),
        }
    }
}

/// Every way `obs` differs from `want`; empty when the trial passed.
pub fn verdict(want: &Expectation, obs: &Observation) -> Vec<String> {
    let mut p = Vec::new();
    for st in obs.steps.iter().filter(|st| !st.ok) {
        p.push(format!("step {:?} failed: {}", st.name, st.detail));
    }
    let Some(dump) = &obs.dump else {
        if p.is_empty() {
            p.push("the dump did not run".into());
        }
        return p;
    };
    if dump.outcome != want.dump {
        p.push(format!(
            "dump: expected {}, got {}: {}",
            want.dump, dump.outcome, dump.said
        ));
    }
    if dump.outcome == Outcome::Fail {
        words(&mut p, "dump", &dump.said, &want.error_contains);
        match &obs.self_check {
            Some(SelfCheck::Passed) => {}
            Some(SelfCheck::Failed(why)) => p.push(format!(
                "after the failed dump the workload's self-check failed: {why}"
            )),
            None => p.push("the workload's self-check after the failed dump did not run".into()),
        }
    } else if want.restore != Outcome::Skip {
        restore(&mut p, want, obs);
    }
    audit(&mut p, want, &obs.audit);
    p
}

fn words(p: &mut Vec<String>, step: &str, said: &str, want: &[String]) {
    for w in want.iter().filter(|w| !said.contains(w.as_str())) {
        p.push(format!("the {step} error does not name {w:?}: {said}"));
    }
}

fn restore(p: &mut Vec<String>, want: &Expectation, obs: &Observation) {
    if let Some(check) = &obs.check {
        if check.outcome != want.check {
            p.push(format!(
                "crlab check --images-dir: expected {}, got {}: {}",
                want.check, check.outcome, check.said
            ));
        }
    }
    let Some(restore) = &obs.restore else {
        if !obs.steps.iter().any(|s| !s.ok) {
            p.push("the restore did not run".into());
        }
        return;
    };
    if restore.outcome != want.restore {
        p.push(format!(
            "restore: expected {}, got {}: {}",
            want.restore, restore.outcome, restore.said
        ));
    }
    if restore.outcome == Outcome::Fail {
        words(p, "restore", &restore.said, &want.error_contains);
        if let Some(left) = &obs.left_after_failed_restore {
            p.push(format!("the failed restore left a process behind: {left}"));
        }
        return;
    }
    restored(p, want, obs);
    match &obs.self_check {
        Some(SelfCheck::Passed) => {}
        Some(SelfCheck::Failed(why)) => {
            p.push(format!("the restored workload's self-check failed: {why}"))
        }
        None => p.push("the restored workload's self-check did not run".into()),
    }
}

fn restored(p: &mut Vec<String>, want: &Expectation, obs: &Observation) {
    let got = &obs.restored;
    let wrong = got.len() != want.restored.len()
        || got.iter().zip(&want.restored).any(|(proc_, w)| {
            proc_.threads.is_empty() || proc_.contexts().any(|c| !context::matches(w, c))
        });
    if wrong {
        let got: Vec<(u32, Vec<&str>)> = got
            .iter()
            .map(|r| (r.pid, r.contexts().collect()))
            .collect();
        p.push(format!(
            "restored processes (pre-order, each thread) in {got:?}, expected {:?}",
            want.restored
        ));
    }
    if let Some(creds) = &want.credentials {
        for t in got.iter().flat_map(|r| &r.threads) {
            if &t.credentials != creds {
                p.push(format!(
                    "restored thread {} has credentials {:?}, expected {creds:?}",
                    t.tid, t.credentials
                ));
            }
        }
    }
}

/// Whether `r` is the record `want` describes.
pub fn audit_matches(want: &AuditExpect, r: &AuditRecord) -> bool {
    r.kind == want.kind
        && r.permissions.contains(&want.permission)
        && (want.source_type.is_empty() || r.source_type == want.source_type)
        && (want.target_type.is_empty() || r.target_type == want.target_type)
        && (want.class.is_empty() || r.class == want.class)
}

fn audit(p: &mut Vec<String>, want: &Expectation, records: &[AuditRecord]) {
    let mut matched = vec![false; records.len()];
    for w in &want.audit {
        match records.iter().position(|r| audit_matches(w, r)) {
            Some(i) => matched[i] = true,
            None => p.push(format!("expected audit record missing: {w:?}")),
        }
    }
    if want.no_other_denials {
        for (r, _) in records
            .iter()
            .zip(&matched)
            .filter(|(r, m)| !**m && r.result == "denied")
        {
            p.push(format!("unexpected denial: {}", r.normalized));
        }
    }
}

/// Whether a trial of a recorded-only backend (criu) could run: its setup steps worked.
pub fn could_run(obs: &Observation) -> bool {
    obs.steps
        .iter()
        .filter(|st| super::SETUP_STEPS.contains(&st.name.as_str()))
        .all(|st| st.ok)
        && obs.steps.iter().any(|st| st.name == "start workload")
}

#[cfg(test)]
mod tests {
    use super::super::observation::ToolRun;
    use super::*;
    use rstest::rstest;

    const CTR: &str = "system_u:system_r:container_t:s0:c1,c2";

    fn want() -> Expectation {
        Expectation {
            dump: Outcome::Ok,
            check: Outcome::Ok,
            restore: Outcome::Ok,
            restored: vec![CTR.into()],
            error_contains: vec![],
            audit: vec![],
            no_other_denials: true,
            credentials: None,
        }
    }

    fn ran(outcome: Outcome, said: &str) -> Option<ToolRun> {
        Some(ToolRun {
            outcome,
            said: said.into(),
        })
    }

    fn restored_ok() -> Observation {
        super::super::observation::restored_example(CTR)
    }

    fn avc(perm: &str, source: &str, target: &str, class: &str) -> AuditRecord {
        AuditRecord {
            kind: "AVC".into(),
            result: "denied".into(),
            permissions: vec![perm.into()],
            comm: "crlab".into(),
            source_type: source.into(),
            target_type: target.into(),
            class: class.into(),
            normalized: format!("avc: denied {{ {perm} }} {source} {target} {class}"),
        }
    }

    #[test]
    fn a_restore_as_expected_passes() {
        assert_eq!(verdict(&want(), &restored_ok()), Vec::<String>::new());
    }

    #[test]
    fn a_type_expectation_ignores_user_role_and_level() {
        let w = Expectation {
            restored: vec!["container_t".into()],
            ..want()
        };
        assert!(verdict(&w, &restored_ok()).is_empty());
    }

    /// Each case changes one thing of a passing trial and names the problem it must cause.
    #[rstest]
    #[case::failed_setup_step(|o: &mut Observation| o.steps[0].ok = false, "step \"start workload\" failed")]
    #[case::dump_not_run(|o: &mut Observation| { o.steps.clear(); o.dump = None }, "the dump did not run")]
    #[case::dump_failed(|o: &mut Observation| o.dump = ran(Outcome::Fail, "boom"), "dump: expected ok, got fail: boom")]
    #[case::check_disagrees(|o: &mut Observation| o.check = ran(Outcome::Fail, "restore refused"), "crlab check --images-dir: expected ok, got fail")]
    #[case::restore_failed(|o: &mut Observation| o.restore = ran(Outcome::Fail, "denied"), "restore: expected ok, got fail: denied")]
    #[case::restore_not_run(|o: &mut Observation| o.restore = None, "the restore did not run")]
    #[case::wrong_context(|o: &mut Observation| o.restored[0].threads[1].context = "system_u:system_r:container_t:s0:c3,c4".into(), "restored processes")]
    #[case::missing_process(|o: &mut Observation| o.restored.clear(), "restored processes")]
    #[case::extra_process(|o: &mut Observation| { let p = o.restored[0].clone(); o.restored.push(p) }, "restored processes")]
    #[case::self_check_failed(|o: &mut Observation| o.self_check = Some(SelfCheck::Failed("memory differs".into())), "self-check failed: memory differs")]
    #[case::self_check_missing(|o: &mut Observation| o.self_check = None, "self-check did not run")]
    #[case::unexpected_denial(|o: &mut Observation| o.audit.push(avc("read", "container_t", "tmpfs_t", "file")), "unexpected denial: avc: denied { read }")]
    fn a_difference_is_a_problem(#[case] change: fn(&mut Observation), #[case] want_problem: &str) {
        let mut obs = restored_ok();
        change(&mut obs);
        let problems = verdict(&want(), &obs);
        assert!(
            problems.iter().any(|p| p.contains(want_problem)),
            "wanted {want_problem:?} in {problems:?}"
        );
    }

    #[test]
    fn a_failed_dump_must_name_its_cause_and_leave_the_workload_working() {
        let w = Expectation {
            dump: Outcome::Fail,
            restore: Outcome::Skip,
            restored: vec![],
            error_contains: vec!["connectto".into(), "transport socket".into()],
            audit: vec![AuditExpect {
                kind: "AVC".into(),
                permission: "connectto".into(),
                source_type: "container_t".into(),
                target_type: "container_runtime_t".into(),
                class: "unix_stream_socket".into(),
            }],
            ..want()
        };
        let failed = Observation {
            dump: ran(Outcome::Fail, "the transport socket: connectto denied"),
            check: None,
            restore: None,
            restored: vec![],
            audit: vec![avc(
                "connectto",
                "container_t",
                "container_runtime_t",
                "unix_stream_socket",
            )],
            ..restored_ok()
        };
        assert_eq!(verdict(&w, &failed), Vec::<String>::new());

        let mut vague = failed.clone();
        vague.dump = ran(Outcome::Fail, "something failed");
        let p = verdict(&w, &vague);
        assert!(
            p.iter().any(|p| p.contains("does not name \"connectto\"")),
            "{p:?}"
        );

        let mut harmed = failed.clone();
        harmed.self_check = Some(SelfCheck::Failed("registers".into()));
        let p = verdict(&w, &harmed);
        assert!(
            p.iter().any(|p| p.contains("after the failed dump")),
            "{p:?}"
        );

        let mut silent = failed;
        silent.audit.clear();
        let p = verdict(&w, &silent);
        assert!(
            p.iter()
                .any(|p| p.contains("expected audit record missing")),
            "{p:?}"
        );
    }

    #[test]
    fn a_failed_restore_must_leave_nothing_and_its_check_must_agree() {
        let w = Expectation {
            check: Outcome::Fail,
            restore: Outcome::Fail,
            restored: vec![],
            error_contains: vec!["dyntransition".into()],
            audit: vec![AuditExpect {
                kind: "AVC".into(),
                permission: "dyntransition".into(),
                source_type: String::new(),
                target_type: String::new(),
                class: "process".into(),
            }],
            ..want()
        };
        let refused = Observation {
            check: ran(Outcome::Fail, "restore refused"),
            restore: ran(Outcome::Fail, "dyntransition denied"),
            restored: vec![],
            self_check: None,
            audit: vec![avc(
                "dyntransition",
                "unconfined_t",
                "unconfined_service_t",
                "process",
            )],
            ..restored_ok()
        };
        assert_eq!(verdict(&w, &refused), Vec::<String>::new());

        let mut leaky = refused.clone();
        leaky.left_after_failed_restore = Some("Name: memory".into());
        let p = verdict(&w, &leaky);
        assert!(
            p.iter().any(|p| p.contains("left a process behind")),
            "{p:?}"
        );

        let mut optimistic = refused;
        optimistic.check = ran(Outcome::Ok, "restore allowed");
        let p = verdict(&w, &optimistic);
        assert!(
            p.iter().any(|p| p.contains("expected fail, got ok")),
            "{p:?}"
        );
    }

    #[test]
    fn credentials_are_checked_on_every_thread() {
        let w = Expectation {
            credentials: Some(vec!["Uid:\t0\t0\t0\t0".into()]),
            ..want()
        };
        let mut obs = restored_ok();
        assert!(verdict(&w, &obs).is_empty());
        obs.restored[0].threads[1].credentials = vec!["Uid:\t4242\t0\t0\t0".into()];
        let p = verdict(&w, &obs);
        assert!(
            p.iter()
                .any(|p| p.contains("restored thread 101 has credentials")),
            "{p:?}"
        );
    }

    #[test]
    fn denials_may_be_allowed_when_the_scenario_says_so() {
        let w = Expectation {
            no_other_denials: false,
            ..want()
        };
        let mut obs = restored_ok();
        obs.audit
            .push(avc("write", "container_t", "tmpfs_t", "file"));
        assert!(verdict(&w, &obs).is_empty());
        // A granted record (permissive, or auditallow) is never an unexpected denial.
        let mut granted = restored_ok();
        let mut r = avc("write", "container_t", "tmpfs_t", "file");
        r.result = "granted".into();
        granted.audit.push(r);
        assert!(verdict(&want(), &granted).is_empty());
    }

    #[test]
    fn a_recorded_backend_ran_when_its_setup_worked() {
        let mut obs = restored_ok();
        assert!(could_run(&obs));
        obs.restore = ran(Outcome::Fail, "criu said no");
        assert!(could_run(&obs), "an outcome is recorded, not judged");
        obs.steps[0].ok = false;
        assert!(!could_run(&obs));
        assert!(!could_run(&Observation::default()));
    }
}
