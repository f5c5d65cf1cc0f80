//! Reports of a run: a table on the console, `report.json` and `junit.xml`.

use crate::runner::TrialReport;
use crate::scenario::Outcome;
use std::fmt::Write as _;
use std::path::Path;

fn outcome(o: Option<Outcome>) -> &'static str {
    match o {
        Some(Outcome::Ok) => "ok",
        Some(Outcome::Fail) => "fail",
        Some(Outcome::Skip) => "skip",
        None => "-",
    }
}

/// The console table.
pub fn table(reports: &[TrialReport]) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{:<34} {:<8} {:<17} {:<17} {:<40} {:>8}  RESULT",
        "SCENARIO", "BACKEND", "DUMP", "RESTORE", "CONTEXT", "SECONDS"
    );
    for r in reports {
        let denials = r.audit.iter().filter(|a| a.result == "denied").count();
        let _ = writeln!(
            out,
            "{:<34} {:<8} {:<17} {:<17} {:<40} {:>8.1}  {}{}",
            r.scenario,
            r.backend,
            format!(
                "{} (want {})",
                outcome(r.dump),
                outcome(Some(r.expected_dump))
            ),
            format!(
                "{} (want {})",
                outcome(r.restore),
                outcome(Some(r.expected_restore))
            ),
            r.restored_contexts
                .first()
                .map(String::as_str)
                .unwrap_or("-"),
            r.millis as f64 / 1000.0,
            if r.passed { "PASS" } else { "FAIL" },
            if denials > 0 {
                format!(" ({denials} denial(s))")
            } else {
                String::new()
            }
        );
    }
    out
}

fn xml(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// JUnit XML, one testcase per trial.
pub fn junit(reports: &[TrialReport]) -> String {
    let failures = reports.iter().filter(|r| !r.passed).count();
    let total: u64 = reports.iter().map(|r| r.millis).sum();
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuite name=\"crlab-vm\" tests=\"{}\" failures=\"{failures}\" time=\"{:.3}\">",
        reports.len(),
        total as f64 / 1000.0
    );
    for r in reports {
        let _ = write!(
            out,
            "  <testcase classname=\"crlab.{}\" name=\"{}\" time=\"{:.3}\"",
            xml(&r.backend),
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
            for st in &r.steps {
                let _ = writeln!(
                    out,
                    "{} {} {} ms {}",
                    if st.ok { "ok  " } else { "FAIL" },
                    xml(&st.name),
                    st.millis,
                    xml(&st.detail)
                );
            }
            for a in &r.audit {
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

/// Writes `report.json` and `junit.xml` into `dir`.
pub fn write(dir: &Path, reports: &[TrialReport], lab: &serde_json::Value) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let json = serde_json::json!({ "lab": lab, "trials": reports });
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(&json).unwrap_or_default(),
    )?;
    std::fs::write(dir.join("junit.xml"), junit(reports))
}
