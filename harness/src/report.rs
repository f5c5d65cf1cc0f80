//! Reports of a run: a table on the console, `report.json` and `junit.xml`.

use crate::scenario::Outcome;
use crate::trial::{Backend, TrialReport};
use std::fmt::Write as _;
use std::path::Path;

fn outcome(o: Option<Outcome>) -> &'static str {
    o.map_or("-", Outcome::name)
}

/// The console table: each scenario's crlab row, then its criu row.
pub fn table(reports: &[TrialReport]) -> String {
    let mut rows: Vec<&TrialReport> = reports.iter().collect();
    rows.sort_by_key(|r| (r.scenario.clone(), r.backend != Backend::Crlab));
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<34} {:<7} {:<17} {:<5} {:<17} {:<40} {:>7}  RESULT",
        "SCENARIO", "BACKEND", "DUMP", "CHECK", "RESTORE", "CONTEXT", "SECONDS"
    );
    for r in rows {
        let denials = r
            .observed
            .audit
            .iter()
            .filter(|a| a.result == "denied" || a.kind == "SELINUX_ERR")
            .count();
        let result = match r.backend {
            Backend::Crlab if r.passed => "PASS".to_string(),
            Backend::Crlab => "FAIL".to_string(),
            Backend::Criu if !r.passed => "NOT RUN (lab)".to_string(),
            Backend::Criu if r.differences.is_empty() => "recorded, same as crlab".to_string(),
            Backend::Criu => format!(
                "recorded, differs: {}",
                r.differences
                    .iter()
                    .map(|d| short(d, 72))
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        };
        let _ = writeln!(
            out,
            "{:<34} {:<7} {:<17} {:<5} {:<17} {:<40} {:>7.1}  {result}{}",
            r.scenario,
            r.backend.name(),
            format!(
                "{} (want {})",
                outcome(r.observed.dump_outcome()),
                outcome(Some(r.expected.dump))
            ),
            outcome(r.observed.check_outcome()),
            format!(
                "{} (want {})",
                outcome(r.observed.restore_outcome()),
                outcome(Some(r.expected.restore))
            ),
            r.observed.root_context().unwrap_or("-"),
            r.millis as f64 / 1000.0,
            if denials > 0 {
                format!(" [{denials} denial(s)]")
            } else {
                String::new()
            }
        );
    }
    out
}

/// `text` cut to `max` characters, marked when cut.
fn short(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_string();
    }
    let cut: String = text.chars().take(max).collect();
    format!("{cut}...")
}

/// Fills each criu trial's `differences` with how its outcomes differ from crlab's trial of
/// the same scenario.
pub fn compare_backends(reports: &mut [TrialReport]) {
    let crlab: Vec<TrialReport> = reports
        .iter()
        .filter(|r| r.backend == Backend::Crlab)
        .cloned()
        .collect();
    for r in reports.iter_mut().filter(|r| r.backend == Backend::Criu) {
        let Some(c) = crlab.iter().find(|c| c.scenario == r.scenario) else {
            continue;
        };
        r.differences = differences(c, r);
    }
}

fn differences(crlab: &TrialReport, criu: &TrialReport) -> Vec<String> {
    let (ours, theirs) = (&crlab.observed, &criu.observed);
    let mut d = Vec::new();
    for (step, a, b) in [
        ("dump", ours.dump_outcome(), theirs.dump_outcome()),
        ("restore", ours.restore_outcome(), theirs.restore_outcome()),
    ] {
        if a != b {
            d.push(format!("{step} {} (crlab {})", outcome(b), outcome(a)));
        }
    }
    if theirs.restore_outcome() == Some(Outcome::Ok) {
        let first = |o: &crate::trial::Observation| {
            o.root_context()
                .map(str::to_string)
                .unwrap_or_else(|| "- (gone before its context was read)".into())
        };
        if ours.restore_outcome() != Some(Outcome::Ok) || first(ours) != first(theirs) {
            d.push(format!("restored in {}", first(theirs)));
        }
    }
    if let Some(crate::trial::observation::SelfCheck::Failed(why)) = &theirs.self_check {
        let why: String = why.trim_start_matches("fail: ").chars().take(160).collect();
        if theirs.dump_outcome() == Some(Outcome::Fail) {
            d.push(format!("its failed dump disturbed the workload: {why}"));
        } else {
            d.push(format!("self-check failed: {why}"));
        }
    }
    let (dc, dk) = (denials(ours), denials(theirs));
    let extra: Vec<&str> = dk
        .iter()
        .filter(|x| !dc.contains(x))
        .map(String::as_str)
        .collect();
    if !extra.is_empty() {
        d.push(format!(
            "denials crlab does not cause: {}",
            extra.join(", ")
        ));
    }
    d
}

/// A trial's denials and SELinux errors, one short line each, sorted and without repeats.
pub fn denials(o: &crate::trial::Observation) -> Vec<String> {
    let mut v: Vec<String> = o
        .audit
        .iter()
        .filter(|a| a.result == "denied" || a.kind == "SELINUX_ERR")
        .map(|a| {
            format!(
                "{} {} {}->{}",
                a.kind,
                a.permissions.join(","),
                a.source_type,
                a.target_type
            )
        })
        .collect();
    v.sort();
    v.dedup();
    v
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// JUnit XML, one testcase per trial; the suite's properties say which policies were tested
/// (from `lab.policies`, as `report.json` has them).
pub fn junit(reports: &[TrialReport], lab: &serde_json::Value) -> String {
    let failures = reports.iter().filter(|r| !r.passed).count();
    let total: u64 = reports.iter().map(|r| r.millis).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuite name=\"crlab-vm\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">",
        reports.len(),
        total as f64 / 1000.0
    );
    if let Some(policies) = lab.get("policies").and_then(|p| p.as_object()) {
        out.push_str("  <properties>\n");
        for (part, v) in policies {
            if v.is_array() {
                continue;
            }
            let field = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("-").to_string();
            let _ = writeln!(
                out,
                "    <property name=\"policy.{}\" value=\"{} {} (source {}, revision {}, sha256 {})\"/>",
                xml(part),
                xml(&field("kind")),
                xml(&field("version")),
                xml(&field("source")),
                xml(&field("revision")),
                xml(&field("sha256"))
            );
        }
        out.push_str("  </properties>\n");
    }
    for r in reports {
        let _ = write!(
            out,
            "  <testcase classname=\"crlab.{}\" name=\"{}\" time=\"{:.3}\"",
            xml(r.backend.name()),
            xml(&r.scenario),
            r.millis as f64 / 1000.0
        );
        if r.passed {
            out.push_str("/>\n");
        } else {
            let _ = writeln!(
                out,
                ">\n    <failure message=\"{}\">",
                xml(&r.problems.join("; "))
            );
            for st in &r.observed.steps {
                let _ = writeln!(
                    out,
                    "{} {} {} ms {}",
                    if st.ok { "ok  " } else { "FAIL" },
                    xml(&st.name),
                    st.millis,
                    xml(&st.detail)
                );
            }
            for a in &r.observed.audit {
                let _ = writeln!(out, "audit: {}", xml(&a.normalized));
            }
            let _ = writeln!(
                out,
                "console:\n{}\n    </failure>\n  </testcase>",
                xml(&r.console_tail)
            );
        }
    }
    out.push_str("</testsuite>\n");
    out
}

/// Writes `report.json` and `junit.xml` into `dir`; `lab` describes the lab that ran them
/// (its image, policies, kernel, timings).
pub fn write(dir: &Path, reports: &[TrialReport], lab: &serde_json::Value) -> std::io::Result<()> {
    write_json(dir, reports, lab)?;
    std::fs::write(dir.join("junit.xml"), junit(reports, lab))
}

/// Writes `report.json` only: for runs whose failures are data for a comparison (a
/// `policy-diff` side), where a `junit.xml` would read as test failures to any CI that
/// collects junit files.
pub fn write_json(
    dir: &Path,
    reports: &[TrialReport],
    lab: &serde_json::Value,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::json!({ "lab": lab, "trials": reports });
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::Base;
    use crate::trial::observation::{Observation, SelfCheck, ToolRun};

    fn trial(backend: Backend, dump: Outcome, restore: Option<Outcome>) -> TrialReport {
        let text = "description = \"d\"\n[workload]\nprogram = \"idle\"\n[expect]\ndump = \"ok\"\nrestore = \"ok\"\nrestored = [\"container_t\"]\n";
        let mut s: crate::scenario::Scenario = toml::from_str(text).expect("a valid scenario");
        s.name = "s".into();
        let ran = |outcome| ToolRun {
            outcome,
            said: String::new(),
        };
        let observed = Observation {
            dump: Some(ran(dump)),
            check: None,
            restore: restore.map(ran),
            ..crate::trial::observation::restored_example("system_u:system_r:container_t:s0:c1,c2")
        };
        TrialReport::judge(&s, backend, Base::Refpolicy, observed, 1000)
    }

    #[test]
    fn criu_rows_say_how_they_differ_from_crlab() {
        let crlab = trial(Backend::Crlab, Outcome::Ok, Some(Outcome::Ok));
        assert!(crlab.passed, "{:?}", crlab.problems);
        let mut criu = trial(Backend::Criu, Outcome::Ok, Some(Outcome::Ok));
        criu.observed.restored[0].threads[0].context =
            "system_u:system_r:container_runtime_t:s0".into();
        criu.observed.self_check = Some(SelfCheck::Failed("fail: personality".into()));
        let failed_dump = TrialReport {
            scenario: "t".into(),
            ..trial(Backend::Criu, Outcome::Fail, None)
        };
        let mut all = vec![
            criu,
            crlab.clone(),
            failed_dump,
            TrialReport {
                scenario: "t".into(),
                ..crlab
            },
        ];
        compare_backends(&mut all);
        assert_eq!(
            all[0].differences,
            [
                "restored in system_u:system_r:container_runtime_t:s0",
                "self-check failed: personality"
            ]
        );
        assert_eq!(
            all[2].differences,
            ["dump fail (crlab ok)", "restore - (crlab ok)"]
        );
        let table = table(&all);
        let lines: Vec<&str> = table.lines().collect();
        // crlab's row first, then criu's, per scenario.
        assert!(
            lines[1].starts_with("s ") && lines[1].contains(" crlab "),
            "{table}"
        );
        assert!(
            lines[2].contains(" criu ") && lines[2].contains("recorded, differs: restored in"),
            "{table}"
        );
        assert!(
            lines[4].contains("recorded, differs: dump fail (crlab ok)"),
            "{table}"
        );
    }

    #[test]
    fn a_comparison_side_writes_no_junit() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let failed = trial(Backend::Crlab, Outcome::Fail, None);
        write_json(
            dir.path(),
            std::slice::from_ref(&failed),
            &serde_json::Value::Null,
        )
        .expect("write");
        assert!(dir.path().join("report.json").exists());
        assert!(!dir.path().join("junit.xml").exists());
        write(dir.path(), &[failed], &serde_json::Value::Null).expect("write");
        let xml = std::fs::read_to_string(dir.path().join("junit.xml")).expect("junit.xml");
        assert!(xml.contains("<failure"), "{xml}");
    }

    #[test]
    fn junit_names_the_policies_tested() {
        let lab = serde_json::json!({"policies": {
            "distro": {"kind": "fedora", "source": "/src/selinux-policy", "revision": "abc", "sha256": "95a9", "version": null},
            "container": {"kind": "container-selinux", "source": "/src/cs", "revision": null, "sha256": "f8e5", "version": "2.250.0"},
            "lab_modules": [{"name": "crlab-fedora.cil", "sha256": "00"}]
        }});
        let xml = junit(&[], &lab);
        assert!(
            xml.contains("<property name=\"policy.container\" value=\"container-selinux 2.250.0 (source /src/cs, revision -, sha256 f8e5)\"/>"),
            "{xml}"
        );
        assert!(
            xml.contains(
                "name=\"policy.distro\" value=\"fedora - (source /src/selinux-policy, revision abc"
            ),
            "{xml}"
        );
        assert!(!junit(&[], &serde_json::Value::Null).contains("<properties>"));
    }
}
