//! What a policy change does to checkpoint/restore: two runs of the catalog (`report.json`
//! under the old policy and under the new), compared trial by trial. Pure: reading the two
//! reports and rendering the table, Markdown and JSON are the only I/O, at the edges.

use crate::scenario::Outcome;
use crate::trial::{Backend, Observation, TrialReport};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// One run's report, as `report.json` holds it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Run {
    #[serde(default)]
    pub lab: serde_json::Value,
    pub trials: Vec<TrialReport>,
}

#[derive(Debug, thiserror::Error)]
pub enum DiffError {
    #[error("reading the {side} run's report {path}: did that run start its lab (see its output above)?")]
    Read {
        side: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the {side} run's report {path} is not a crlab report")]
    Parse {
        side: &'static str,
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error(
        "the {side} run ran no trial ({path}): its lab did not start or the filter matched nothing"
    )]
    Empty { side: &'static str, path: PathBuf },
}

impl Run {
    /// Reads `report.json` of one side (`side` is `old` or `new`, for the messages).
    pub fn read(side: &'static str, path: &Path) -> Result<Run, DiffError> {
        let text = std::fs::read_to_string(path).map_err(|source| DiffError::Read {
            side,
            path: path.to_path_buf(),
            source,
        })?;
        let run: Run = serde_json::from_str(&text).map_err(|source| DiffError::Parse {
            side,
            path: path.to_path_buf(),
            source,
        })?;
        if run.trials.is_empty() {
            return Err(DiffError::Empty {
                side,
                path: path.to_path_buf(),
            });
        }
        Ok(run)
    }
}

/// How one trial differs between the two policies.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TrialChange {
    /// `crlab::NAME` or `criu::NAME`.
    pub trial: String,
    pub backend: Backend,
    /// Judged trials: whether the scenario's expectations held under each policy (recorded
    /// ones: whether they ran).
    pub old_passed: Option<bool>,
    pub new_passed: Option<bool>,
    /// A judged trial that held under the old policy and fails under the new.
    pub regressed: bool,
    /// A judged trial that failed under the old policy and holds under the new.
    pub fixed: bool,
    /// What changed, one line each (outcomes, contexts, check verdicts, self-check).
    pub changes: Vec<String>,
    /// Normalized audit records only the new run has, and only the old run had.
    pub audit_added: Vec<String>,
    pub audit_removed: Vec<String>,
    /// The new run's problems (why a judged trial fails under the new policy).
    pub new_problems: Vec<String>,
}

/// The whole comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyDiff {
    pub old_policy: serde_json::Value,
    pub new_policy: serde_json::Value,
    /// Trials compared (present in both runs).
    pub compared: usize,
    /// Trials that ran in one run only.
    pub only_old: Vec<String>,
    pub only_new: Vec<String>,
    /// Trials that changed in any way, by name.
    pub changed: Vec<TrialChange>,
}

impl PolicyDiff {
    /// The trials that regressed.
    pub fn regressions(&self) -> Vec<&TrialChange> {
        self.changed.iter().filter(|c| c.regressed).collect()
    }
}

fn outcome(o: Option<Outcome>) -> &'static str {
    o.map_or("-", Outcome::name)
}

fn contexts(o: &Observation) -> String {
    if o.restored.is_empty() {
        return "-".into();
    }
    o.restored
        .iter()
        .map(|p| {
            let mut c: Vec<&str> = p.contexts().collect();
            c.dedup();
            c.join("|")
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The self-check's verdict, and its text when it failed. The verdict is what is compared: a
/// workload's account of what went wrong may vary from run to run (which call saw EINTR), the
/// verdict may not.
fn self_check(o: &Observation) -> (&'static str, String) {
    use crate::trial::observation::SelfCheck;
    match &o.self_check {
        None => ("-", String::new()),
        Some(SelfCheck::Passed) => ("ok", String::new()),
        Some(SelfCheck::Failed(why)) => ("failed", format!(" ({why})")),
    }
}

fn audit_set(o: &Observation) -> BTreeSet<String> {
    o.audit.iter().map(|a| a.normalized.clone()).collect()
}

/// Compares two runs of the catalog.
pub fn compare(old: &Run, new: &Run) -> PolicyDiff {
    let mut diff = PolicyDiff {
        old_policy: old.lab.get("policies").cloned().unwrap_or_default(),
        new_policy: new.lab.get("policies").cloned().unwrap_or_default(),
        ..PolicyDiff::default()
    };
    let mut names: Vec<String> = old.trials.iter().map(TrialReport::name).collect();
    names.sort();
    for name in &names {
        let Some(o) = old.trials.iter().find(|t| &t.name() == name) else {
            continue;
        };
        let Some(n) = new.trials.iter().find(|t| &t.name() == name) else {
            diff.only_old.push(name.clone());
            continue;
        };
        diff.compared += 1;
        let (a, b) = (&o.observed, &n.observed);
        let mut changes = Vec::new();
        for (what, x, y) in [
            ("dump", outcome(a.dump_outcome()), outcome(b.dump_outcome())),
            (
                "crlab check",
                outcome(a.check_outcome()),
                outcome(b.check_outcome()),
            ),
            (
                "restore",
                outcome(a.restore_outcome()),
                outcome(b.restore_outcome()),
            ),
        ] {
            if x != y {
                changes.push(format!("{what}: {x} -> {y}"));
            }
        }
        // A recorded backend's restored process may be gone before its context is read
        // (criu's often exit at once): only a judged trial's contexts are compared.
        let (x, y) = (contexts(a), contexts(b));
        if x != y && o.backend.judged() {
            changes.push(format!("restored contexts: {x} -> {y}"));
        }
        let ((x, _), (y, why)) = (self_check(a), self_check(b));
        if x != y {
            changes.push(format!("self-check: {x} -> {y}{why}"));
        }
        let (sa, sb) = (audit_set(a), audit_set(b));
        let audit_added: Vec<String> = sb.difference(&sa).cloned().collect();
        let audit_removed: Vec<String> = sa.difference(&sb).cloned().collect();
        let judged = o.backend.judged();
        let regressed = judged && o.passed && !n.passed;
        let fixed = judged && !o.passed && n.passed;
        if o.passed != n.passed && !judged {
            changes.push(format!(
                "ran: {} -> {}",
                if o.passed { "yes" } else { "no" },
                if n.passed { "yes" } else { "no" }
            ));
        }
        if changes.is_empty()
            && audit_added.is_empty()
            && audit_removed.is_empty()
            && !regressed
            && !fixed
        {
            continue;
        }
        diff.changed.push(TrialChange {
            trial: name.clone(),
            backend: o.backend,
            old_passed: Some(o.passed),
            new_passed: Some(n.passed),
            regressed,
            fixed,
            changes,
            audit_added,
            audit_removed,
            new_problems: n.problems.clone(),
        });
    }
    for t in &new.trials {
        if !names.contains(&t.name()) {
            diff.only_new.push(t.name());
        }
    }
    diff
}

/// The one-line summary that opens every rendering.
pub fn summary(d: &PolicyDiff) -> String {
    let regressions = d.regressions();
    if d.changed.is_empty() && d.only_old.is_empty() && d.only_new.is_empty() {
        return format!(
            "no change: {} trial(s) behave the same under both policies",
            d.compared
        );
    }
    let names: Vec<&str> = regressions.iter().map(|c| c.trial.as_str()).collect();
    let fixed = d.changed.iter().filter(|c| c.fixed).count();
    let mut s = format!(
        "{} of {} trial(s) changed; {} regressed{}; {fixed} fixed",
        d.changed.len(),
        d.compared,
        regressions.len(),
        if names.is_empty() {
            String::new()
        } else {
            format!(" ({})", names.join(", "))
        }
    );
    if !d.only_old.is_empty() || !d.only_new.is_empty() {
        let _ = write!(
            s,
            "; only in the old run: {}; only in the new run: {}",
            d.only_old.len(),
            d.only_new.len()
        );
    }
    s
}

fn verdict_word(c: &TrialChange) -> &'static str {
    if c.regressed {
        "REGRESSED"
    } else if c.fixed {
        "fixed"
    } else {
        "changed"
    }
}

/// The terminal table: one row per changed trial.
pub fn table(d: &PolicyDiff) -> String {
    let mut out = format!("{}\n", summary(d));
    if d.changed.is_empty() {
        return out;
    }
    let _ = writeln!(out, "{:<44} {:<10} WHAT CHANGED", "TRIAL", "VERDICT");
    for c in &d.changed {
        let mut what = c.changes.clone();
        what.extend(
            c.audit_added
                .iter()
                .map(|a| format!("+ {}", short_audit(a))),
        );
        what.extend(
            c.audit_removed
                .iter()
                .map(|a| format!("- {}", short_audit(a))),
        );
        let _ = writeln!(
            out,
            "{:<44} {:<10} {}",
            c.trial,
            verdict_word(c),
            what.first().map(String::as_str).unwrap_or("")
        );
        for w in what.iter().skip(1) {
            let _ = writeln!(out, "{:<44} {:<10} {w}", "", "");
        }
    }
    out
}

/// An audit line cut to what a reader needs: the decision, permissions and contexts.
fn short_audit(line: &str) -> String {
    let start = line.find("avc:").or_else(|| line.find("op=")).unwrap_or(0);
    let s = &line[start..];
    if s.chars().count() > 160 {
        format!("{}...", s.chars().take(160).collect::<String>())
    } else {
        s.to_string()
    }
}

/// `policy-diff.md`: the summary line first, then one section per changed trial, fit for a
/// pull-request comment.
pub fn markdown(d: &PolicyDiff) -> String {
    let mut out = format!("**crlab policy-diff:** {}\n\n", summary(d));
    let _ = writeln!(
        out,
        "Old policy: `{}`  \nNew policy: `{}`\n",
        d.old_policy, d.new_policy
    );
    for c in &d.changed {
        let _ = writeln!(out, "### `{}`: {}\n", c.trial, verdict_word(c));
        for ch in &c.changes {
            let _ = writeln!(out, "- {ch}");
        }
        if c.regressed {
            for p in &c.new_problems {
                // A tool's output may span lines: they stay inside the list item.
                let p = p.trim_end().replace('\n', "\n  ");
                let _ = writeln!(out, "- under the new policy: {p}");
            }
        }
        if !c.audit_added.is_empty() || !c.audit_removed.is_empty() {
            out.push_str("\n```diff\n");
            for a in &c.audit_removed {
                let _ = writeln!(out, "- {a}");
            }
            for a in &c.audit_added {
                let _ = writeln!(out, "+ {a}");
            }
            out.push_str("```\n");
        }
        out.push('\n');
    }
    for (what, list) in [("old", &d.only_old), ("new", &d.only_new)] {
        if !list.is_empty() {
            let _ = writeln!(out, "Only in the {what} run: {}\n", list.join(", "));
        }
    }
    out
}

/// Compares `old` and `new` report files and writes `policy-diff.md` and `policy-diff.json`
/// into `out_dir`; returns the comparison.
pub fn run(
    old: &Path,
    new: &Path,
    out_dir: &Path,
) -> Result<PolicyDiff, Box<dyn std::error::Error>> {
    let d = compare(&Run::read("old", old)?, &Run::read("new", new)?);
    std::fs::create_dir_all(out_dir)?;
    std::fs::write(out_dir.join("policy-diff.md"), markdown(&d))?;
    std::fs::write(
        out_dir.join("policy-diff.json"),
        serde_json::to_string_pretty(&d)?,
    )?;
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::AuditRecord;
    use crate::scenario::Base;
    use crate::trial::observation::{SelfCheck, ToolRun};

    const CTR: &str = "system_u:system_r:container_t:s0:c1,c2";

    fn scenario(name: &str) -> crate::scenario::Scenario {
        let text = format!(
            "description = \"d\"\n[workload]\nprogram = \"idle\"\n[expect]\ndump = \"ok\"\nrestore = \"ok\"\nrestored = [\"{CTR}\"]\n"
        );
        let mut s: crate::scenario::Scenario = toml::from_str(&text).expect("a scenario");
        s.name = name.into();
        s
    }

    fn restored() -> Observation {
        crate::trial::observation::restored_example(CTR)
    }

    fn denied_dyntransition() -> Observation {
        let mut o = restored();
        o.check = Some(ToolRun {
            outcome: Outcome::Fail,
            said: "restore refused".into(),
        });
        o.restore = Some(ToolRun {
            outcome: Outcome::Fail,
            said: "dyntransition denied".into(),
        });
        o.restored.clear();
        o.self_check = None;
        o.audit.push(AuditRecord {
            kind: "AVC".into(),
            result: "denied".into(),
            permissions: vec!["dyntransition".into()],
            comm: "crlab".into(),
            source_type: "container_runtime_t".into(),
            target_type: "container_t".into(),
            class: "process".into(),
            normalized: "type=AVC msg=audit([time]): avc: denied { dyntransition } for pid=[pid] comm=\"crlab\" scontext=system_u:system_r:container_runtime_t:s0 tcontext=system_u:system_r:container_t:s0:c1,c2 tclass=process permissive=0".into(),
        });
        o
    }

    fn run(trials: Vec<(&str, Backend, Observation)>) -> Run {
        Run {
            lab: serde_json::json!({"policies": "p"}),
            trials: trials
                .into_iter()
                .map(|(n, b, o)| TrialReport::judge(&scenario(n), b, Base::Fedora, o, 1))
                .collect(),
        }
    }

    #[test]
    fn identical_runs_have_no_change() {
        let a = run(vec![("a", Backend::Crlab, restored())]);
        let d = compare(&a, &a.clone());
        assert!(d.changed.is_empty() && d.regressions().is_empty());
        assert_eq!(d.compared, 1);
        assert!(summary(&d).starts_with("no change"), "{}", summary(&d));
        assert!(markdown(&d).starts_with("**crlab policy-diff:** no change"));
    }

    #[test]
    fn a_lost_rule_is_a_regression_with_its_denial() {
        let old = run(vec![
            ("a", Backend::Crlab, restored()),
            ("a", Backend::Criu, restored()),
            ("b", Backend::Crlab, restored()),
        ]);
        let new = run(vec![
            ("a", Backend::Crlab, denied_dyntransition()),
            ("a", Backend::Criu, denied_dyntransition()),
            ("b", Backend::Crlab, restored()),
        ]);
        let d = compare(&old, &new);
        let names: Vec<&str> = d.regressions().iter().map(|c| c.trial.as_str()).collect();
        assert_eq!(
            names,
            ["crlab::a"],
            "criu's outcomes are recorded, not judged"
        );
        let a = &d.changed[1];
        assert_eq!(a.trial, "crlab::a");
        assert!(
            a.changes.contains(&"restore: ok -> fail".to_string()),
            "{a:?}"
        );
        assert!(
            a.changes.contains(&"crlab check: ok -> fail".to_string()),
            "{a:?}"
        );
        assert!(a.audit_added[0].contains("dyntransition"));
        assert!(d
            .changed
            .iter()
            .any(|c| c.trial == "criu::a" && !c.regressed));
        let md = markdown(&d);
        assert!(
            md.starts_with(
                "**crlab policy-diff:** 2 of 3 trial(s) changed; 1 regressed (crlab::a)"
            ),
            "{md}"
        );
        assert!(
            md.contains("### `crlab::a`: REGRESSED") && md.contains("+ type=AVC"),
            "{md}"
        );
        assert!(table(&d).contains("crlab::a"));
        // The reverse is a fix, not a regression.
        let back = compare(&new, &old);
        assert!(back.regressions().is_empty());
        assert!(back.changed.iter().any(|c| c.fixed));
    }

    #[test]
    fn trials_in_one_run_only_are_listed() {
        let old = run(vec![("a", Backend::Crlab, restored())]);
        let new = run(vec![("b", Backend::Crlab, restored())]);
        let d = compare(&old, &new);
        assert_eq!(d.only_old, ["crlab::a"]);
        assert_eq!(d.only_new, ["crlab::b"]);
        assert!(summary(&d).contains("only in the old run: 1"));
    }

    #[test]
    fn reports_round_trip_through_json() {
        let a = run(vec![("a", Backend::Crlab, denied_dyntransition())]);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("report.json");
        std::fs::write(&path, serde_json::to_string(&a).unwrap()).unwrap();
        let back = Run::read("old", &path).unwrap();
        assert_eq!(back.trials[0].observed, a.trials[0].observed);
        let empty = dir.path().join("empty.json");
        std::fs::write(&empty, "{\"trials\": []}").unwrap();
        assert!(matches!(
            Run::read("new", &empty),
            Err(DiffError::Empty { .. })
        ));
        assert!(matches!(
            Run::read("new", &dir.path().join("missing.json")),
            Err(DiffError::Read { .. })
        ));
    }

    #[test]
    fn what_varies_from_run_to_run_is_no_change() {
        let mut a = restored();
        a.self_check = Some(SelfCheck::Failed("nanosleep: EINTR".into()));
        let mut b = a.clone();
        b.self_check = Some(SelfCheck::Failed("personality: found 0x0".into()));
        b.restored[0].threads[0].context = String::new();
        let old = run(vec![("a", Backend::Criu, a.clone())]);
        let new = run(vec![("a", Backend::Criu, b)]);
        assert!(compare(&old, &new).changed.is_empty());
        // A judged trial's contexts are compared, and a verdict that changes is a change.
        let mut c = a.clone();
        c.self_check = Some(SelfCheck::Passed);
        let d = compare(&old, &run(vec![("a", Backend::Criu, c)]));
        assert_eq!(d.changed[0].changes, ["self-check: failed -> ok"]);
    }
}
