//! The shards' reports combined into one run's: `report.json` files of `--shard I/N` runs
//! checked (one count N, each shard once, each trial in its own shard and in one report, one
//! base), merged into one report, table and JUnit file, with what keeps the run from being
//! whole: a shard missing, a shard whose lab did not start, a failed trial.
//!
//! Reading the reports and writing the merged one are the only I/O, at the edges.

use crate::diff::Run;
use crate::report;
use crate::shard::Shard;
use crate::trial::TrialReport;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// How a run of the suite ended, as its report's lab section records it (`run`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSummary {
    pub passed: u64,
    /// Trials failed, by their expectations or by their audit snapshot.
    pub failed: u64,
    pub ignored: u64,
    pub filtered_out: u64,
    /// The failed trials' names.
    #[serde(default)]
    pub failed_trials: Vec<String>,
    /// Why the lab did not start, if it did not.
    #[serde(default)]
    pub lab_error: Option<String>,
}

/// Records a run's shard and how it ended in its report's lab section (`shard`, `run`).
pub fn record_shard(lab: &mut serde_json::Value, shard: Shard, run: RunSummary) {
    if !lab.is_object() {
        *lab = serde_json::json!({});
    }
    if let Some(map) = lab.as_object_mut() {
        map.insert("shard".into(), serde_json::json!(shard));
        map.insert("run".into(), serde_json::json!(run));
    }
}

/// One shard's report.
#[derive(Debug, Clone)]
pub struct ShardReport {
    pub path: PathBuf,
    pub shard: Shard,
    /// `None`: the report does not say how its run ended.
    pub summary: Option<RunSummary>,
    pub run: Run,
}

#[derive(Debug, thiserror::Error)]
pub enum MergeError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a crlab report")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
    #[error("no report.json in {paths}: give the shards' report directories (or files)")]
    NoReport { paths: String },
    #[error("{path} records no shard (lab.shard): it was written by a suite without sharding; rerun it with `cargo xtask vm-test --shard I/N`")]
    NoShard { path: PathBuf },
    #[error("{path} is shard {shard} but {other} is shard {other_shard}: merge the shards of one run (one N)")]
    Counts {
        path: PathBuf,
        shard: Shard,
        other: PathBuf,
        other_shard: Shard,
    },
    #[error(
        "shard {shard} is reported twice ({first} and {second}): give each shard's report once"
    )]
    Twice {
        shard: Shard,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{path} (shard {shard}) holds {trial}, which belongs to shard {belongs}: the report was mislabelled or the sharding changed between the runs")]
    WrongShard {
        path: PathBuf,
        shard: Shard,
        trial: String,
        belongs: Shard,
    },
    #[error("{trial} is reported twice ({first} and {second}): give each shard's report once")]
    TrialTwice {
        trial: String,
        first: PathBuf,
        second: PathBuf,
    },
    #[error("{path} ran on {base} but {other} on {other_base}: merge the shards of one run")]
    Bases {
        path: PathBuf,
        base: String,
        other: PathBuf,
        other_base: String,
    },
}

/// The shards merged.
#[derive(Debug, Clone)]
pub struct Merged {
    /// N, the shard count.
    pub count: u32,
    /// Each shard's index and how its run ended (`None`: missing).
    pub shards: BTreeMap<u32, Option<RunSummary>>,
    /// Every trial of every shard, by name.
    pub trials: Vec<TrialReport>,
    /// The first shard's lab section with `shards` (their lab sections) instead of `shard`.
    pub lab: serde_json::Value,
    /// What keeps the merged run from passing: missing shards, shards whose lab did not
    /// start, failed trials. Empty: every shard ran and passed.
    pub problems: Vec<String>,
}

/// The `report.json` files of `paths`: a file itself, a directory's `report.json` and those
/// of its subdirectories (an artifact download gives one directory per shard), sorted.
pub fn find_reports(paths: &[PathBuf]) -> Result<Vec<PathBuf>, MergeError> {
    let mut found = Vec::new();
    for p in paths {
        if p.is_file() {
            found.push(p.clone());
        } else {
            walk(p, &mut found)?;
        }
    }
    found.sort();
    found.dedup();
    if found.is_empty() {
        let paths = paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ");
        return Err(MergeError::NoReport { paths });
    }
    Ok(found)
}

fn walk(dir: &Path, found: &mut Vec<PathBuf>) -> Result<(), MergeError> {
    let read = std::fs::read_dir(dir).map_err(|source| MergeError::Read {
        path: dir.to_path_buf(),
        source,
    })?;
    for e in read.flatten() {
        let path = e.path();
        if path.is_dir() {
            walk(&path, found)?;
        } else if e.file_name() == "report.json" {
            found.push(path);
        }
    }
    Ok(())
}

impl ShardReport {
    /// Reads one shard's `report.json`.
    pub fn read(path: &Path) -> Result<ShardReport, MergeError> {
        let text = std::fs::read_to_string(path).map_err(|source| MergeError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        ShardReport::parse(path, &text)
    }

    fn parse(path: &Path, text: &str) -> Result<ShardReport, MergeError> {
        let parse = |source| MergeError::Parse {
            path: path.to_path_buf(),
            source,
        };
        let run: Run = serde_json::from_str(text).map_err(parse)?;
        let shard = run
            .lab
            .get("shard")
            .cloned()
            .ok_or_else(|| MergeError::NoShard {
                path: path.to_path_buf(),
            })?;
        let shard: Shard = serde_json::from_value(shard).map_err(parse)?;
        if shard.index == 0 || shard.index > shard.count {
            return Err(MergeError::NoShard {
                path: path.to_path_buf(),
            });
        }
        let summary = match run.lab.get("run") {
            Some(v) => Some(serde_json::from_value(v.clone()).map_err(parse)?),
            None => None,
        };
        Ok(ShardReport {
            path: path.to_path_buf(),
            shard,
            summary,
            run,
        })
    }
}

/// Merges the shards' reports. An error when they cannot be one run's (different counts or
/// bases, a shard twice, a trial in the wrong shard or in two reports); otherwise the merged
/// run, whose `problems` say what keeps it from passing.
pub fn merge(mut reports: Vec<ShardReport>) -> Result<Merged, MergeError> {
    reports.sort_by_key(|r| r.shard);
    let Some(first) = reports.first() else {
        return Err(MergeError::NoReport {
            paths: "(none given)".into(),
        });
    };
    let count = first.shard.count;
    // One run's shards share the base and the policies (a shard whose lab did not start
    // records the base only): each is compared where both reports record it.
    let field = |r: &ShardReport, key: &str| r.run.lab.get(key).map(|v| v.to_string());
    let mut by_index: BTreeMap<u32, &ShardReport> = BTreeMap::new();
    let mut seen: BTreeMap<String, &Path> = BTreeMap::new();
    for r in &reports {
        if r.shard.count != count {
            return Err(MergeError::Counts {
                path: r.path.clone(),
                shard: r.shard,
                other: first.path.clone(),
                other_shard: first.shard,
            });
        }
        for key in ["base", "policies"] {
            if let (Some(a), Some(b)) = (field(r, key), field(first, key)) {
                if a != b {
                    return Err(MergeError::Bases {
                        path: r.path.clone(),
                        base: a,
                        other: first.path.clone(),
                        other_base: b,
                    });
                }
            }
        }
        if let Some(prev) = by_index.insert(r.shard.index, r) {
            return Err(MergeError::Twice {
                shard: r.shard,
                first: prev.path.clone(),
                second: r.path.clone(),
            });
        }
        for t in &r.run.trials {
            let name = t.name();
            let belongs = Shard::of(&name, count);
            if belongs != r.shard {
                return Err(MergeError::WrongShard {
                    path: r.path.clone(),
                    shard: r.shard,
                    trial: name,
                    belongs,
                });
            }
            if let Some(first) = seen.insert(name.clone(), &r.path) {
                return Err(MergeError::TrialTwice {
                    trial: name,
                    first: first.to_path_buf(),
                    second: r.path.clone(),
                });
            }
        }
    }
    let mut problems = Vec::new();
    let mut shards = BTreeMap::new();
    for shard in Shard::all(count) {
        let Some(r) = by_index.get(&shard.index) else {
            problems.push(format!(
                "shard {shard} is missing: its job did not write a report (it was cancelled, \
                 or it failed before the suite ran)"
            ));
            shards.insert(shard.index, None);
            continue;
        };
        match &r.summary {
            None => problems.push(format!(
                "shard {shard} ({}) does not record how its run ended (lab.run): rerun it",
                r.path.display()
            )),
            Some(s) => {
                if let Some(e) = &s.lab_error {
                    problems.push(format!("shard {shard}: the lab did not start: {e}"));
                }
                if s.failed > 0 {
                    let names = if s.failed_trials.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", s.failed_trials.join(", "))
                    };
                    problems.push(format!(
                        "shard {shard}: {} trial(s) failed{names}",
                        s.failed
                    ));
                }
            }
        }
        // A judged trial whose report says it failed fails the run, whatever the counts say.
        for t in r.run.trials.iter().filter(|t| !t.passed) {
            let listed = r
                .summary
                .as_ref()
                .is_some_and(|s| s.failed_trials.contains(&t.name()));
            if !listed {
                problems.push(format!("shard {shard}: {} failed", t.name()));
            }
        }
        shards.insert(shard.index, r.summary.clone());
    }
    let mut trials: Vec<TrialReport> = reports
        .iter()
        .flat_map(|r| r.run.trials.iter().cloned())
        .collect();
    trials.sort_by_key(TrialReport::name);
    // The shards compared their own crlab and criu rows (a scenario's trials share a shard);
    // comparing again over the whole keeps that true of reports from elsewhere.
    report::compare_backends(&mut trials);
    let mut lab = first.run.lab.clone();
    if let Some(map) = lab.as_object_mut() {
        map.remove("shard");
        map.remove("run");
        map.insert("shard_count".into(), serde_json::json!(count));
        map.insert(
            "shards".into(),
            serde_json::json!(reports.iter().map(|r| &r.run.lab).collect::<Vec<_>>()),
        );
        map.insert("complete".into(), serde_json::json!(problems.is_empty()));
    }
    Ok(Merged {
        count,
        shards,
        trials,
        lab,
        problems,
    })
}

impl Merged {
    /// Whether every shard ran and passed.
    pub fn passed(&self) -> bool {
        self.problems.is_empty()
    }

    /// The merged run as Markdown: each shard's line, the problems, the table.
    pub fn markdown(&self) -> String {
        let mut out = format!(
            "**crlab: {} shard(s) merged, {} trial(s): {}**\n\n",
            self.count,
            self.trials.len(),
            if self.passed() { "passed" } else { "FAILED" }
        );
        for (index, s) in &self.shards {
            let line = match s {
                None => "missing".to_string(),
                Some(s) => format!(
                    "{} passed, {} failed, {} ignored, {} filtered out{}",
                    s.passed,
                    s.failed,
                    s.ignored,
                    s.filtered_out,
                    if s.lab_error.is_some() {
                        ", lab did not start"
                    } else {
                        ""
                    }
                ),
            };
            let _ = writeln!(out, "- shard {index}/{}: {line}", self.count);
        }
        if !self.problems.is_empty() {
            out.push_str("\nProblems:\n\n");
            for p in &self.problems {
                let _ = writeln!(out, "- {p}");
            }
        }
        let _ = write!(out, "\n```\n{}```\n", report::table(&self.trials));
        out
    }

    /// Writes `report.json`, `junit.xml` and `merge.md` into `dir`.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        report::write(dir, &self.trials, &self.lab)?;
        std::fs::write(dir.join("merge.md"), self.markdown())
    }

    /// The trials' names, sorted.
    pub fn trial_names(&self) -> BTreeSet<String> {
        self.trials.iter().map(TrialReport::name).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::{Base, Outcome};
    use crate::trial::observation::{
        Observation, RestoredProcess, SelfCheck, Step, ThreadState, ToolRun,
    };
    use crate::trial::Backend;

    fn root() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
    }

    /// A trial of a real scenario as the lab would report it when crlab did what the scenario
    /// expects (criu: restored in the runtime's context, a difference).
    fn trial(s: &crate::scenario::Scenario, backend: Backend) -> TrialReport {
        let e = s.expect.on(Base::Refpolicy);
        let ran = |outcome| ToolRun {
            outcome,
            said: String::new(),
        };
        let context = match backend {
            Backend::Crlab => "system_u:system_r:container_t:s0:c1,c2",
            Backend::Criu => "system_u:system_r:container_runtime_t:s0",
        };
        let observed = Observation {
            steps: vec![Step {
                name: "start workload".into(),
                ok: true,
                millis: 3,
                detail: String::new(),
            }],
            dump: Some(ran(e.dump)),
            restore: (e.restore != Outcome::Skip).then(|| ran(e.restore)),
            restored: vec![RestoredProcess {
                pid: 100,
                threads: vec![ThreadState {
                    tid: 100,
                    context: context.into(),
                    credentials: vec![],
                }],
            }],
            self_check: Some(SelfCheck::Passed),
            ..Observation::default()
        };
        // Judged as the lab would when the trial held (whatever this synthetic
        // observation lacks of the scenario's audit expectations).
        TrialReport {
            passed: true,
            problems: Vec::new(),
            ..TrialReport::judge(s, backend, Base::Refpolicy, observed, 1234)
        }
    }

    /// The full run's trials: every scenario of the real catalog with both backends.
    fn full_run() -> Vec<TrialReport> {
        let catalog = crate::scenario::load(&root().join("scenarios/catalog")).expect("catalog");
        catalog
            .iter()
            .flat_map(|s| Backend::ALL.map(|b| trial(s, b)))
            .collect()
    }

    fn lab() -> serde_json::Value {
        serde_json::json!({"base": "refpolicy", "accel": "tcg", "kernel": "6.1"})
    }

    /// What the suite writes at the end of shard `shard` of `trials`, through its own code:
    /// the shard's trials, the backends compared, `record_shard`, `report::write`.
    fn write_shard(dir: &Path, shard: Shard, all: &[TrialReport], failed: &[&str]) -> PathBuf {
        let mut reports: Vec<TrialReport> = all
            .iter()
            .filter(|t| shard.contains(&t.name()))
            .cloned()
            .map(|t| TrialReport {
                passed: !failed.contains(&t.name().as_str()),
                ..t
            })
            .collect();
        report::compare_backends(&mut reports);
        let mut lab = lab();
        record_shard(
            &mut lab,
            shard,
            RunSummary {
                passed: (reports.len() - failed.len()) as u64,
                failed: failed.len() as u64,
                ignored: 0,
                filtered_out: (all.len() - reports.len()) as u64,
                failed_trials: failed.iter().map(|f| f.to_string()).collect(),
                lab_error: None,
            },
        );
        let out = dir.join(format!("report-{}-of-{}", shard.index, shard.count));
        report::write(&out, &reports, &lab).expect("write the shard's report");
        out
    }

    /// The outcomes a run is judged by, per trial: passed, the step outcomes, the contexts,
    /// how criu differs.
    fn outcomes(trials: &[TrialReport]) -> BTreeMap<String, String> {
        trials
            .iter()
            .map(|t| {
                let o = &t.observed;
                let v = format!(
                    "{} {:?} {:?} {:?} {:?}",
                    t.passed,
                    o.dump_outcome(),
                    o.restore_outcome(),
                    o.root_context(),
                    t.differences
                );
                (t.name(), v)
            })
            .collect()
    }

    #[test]
    fn shards_1_to_3_merge_into_the_full_runs_outcomes() {
        let all = full_run();
        let dir = tempfile::tempdir().expect("tempdir");
        // The full run, as the suite writes it without --shard.
        let mut whole = all.clone();
        report::compare_backends(&mut whole);
        let full_dir = dir.path().join("full");
        report::write(&full_dir, &whole, &lab()).expect("write");
        let full = crate::diff::Run::read("full", &full_dir.join("report.json")).expect("read");
        let shards = dir.path().join("shards");
        for shard in Shard::all(3) {
            write_shard(&shards, shard, &all, &[]);
        }
        let found = find_reports(std::slice::from_ref(&shards)).expect("reports");
        assert_eq!(found.len(), 3);
        let reports: Vec<ShardReport> = found
            .iter()
            .map(|p| ShardReport::read(p).expect("read"))
            .collect();
        let merged = merge(reports).expect("merge");
        assert!(merged.passed(), "{:?}", merged.problems);
        assert_eq!(merged.trials.len(), full.trials.len());
        assert_eq!(outcomes(&merged.trials), outcomes(&full.trials));
        // Whole reports too: the merged trials are the full run's, field for field.
        let mut expected = full.trials.clone();
        expected.sort_by_key(TrialReport::name);
        assert_eq!(
            serde_json::to_value(&merged.trials).expect("json"),
            serde_json::to_value(&expected).expect("json")
        );
        let out = dir.path().join("merged");
        merged.write(&out).expect("write merged");
        let again = crate::diff::Run::read("merged", &out.join("report.json")).expect("read");
        assert_eq!(outcomes(&again.trials), outcomes(&full.trials));
        assert_eq!(again.lab["shard_count"], 3);
        assert_eq!(again.lab["complete"], true);
        let md = std::fs::read_to_string(out.join("merge.md")).expect("merge.md");
        assert!(
            md.contains("3 shard(s) merged") && md.contains("passed"),
            "{md}"
        );
        assert!(md.contains("container-1-thread"), "{md}");
    }

    #[test]
    fn a_missing_or_failed_shard_fails_the_merge_and_says_which() {
        let all = full_run();
        let dir = tempfile::tempdir().expect("tempdir");
        let a = write_shard(dir.path(), Shard { index: 1, count: 3 }, &all, &[]);
        let failing = all
            .iter()
            .find(|t| Shard::of(&t.name(), 3).index == 3)
            .expect("shard 3 of the catalog holds a trial")
            .name();
        let c = write_shard(
            dir.path(),
            Shard { index: 3, count: 3 },
            &all,
            &[failing.as_str()],
        );
        let reports = find_reports(&[a, c])
            .expect("found")
            .iter()
            .map(|p| ShardReport::read(p).expect("read"))
            .collect();
        let merged = merge(reports).expect("merge");
        assert!(!merged.passed());
        assert!(
            merged.problems[0].starts_with("shard 2/3 is missing"),
            "{:?}",
            merged.problems
        );
        assert!(
            merged.problems[1].contains(&format!("shard 3/3: 1 trial(s) failed: {failing}")),
            "{:?}",
            merged.problems
        );
        assert_eq!(merged.shards[&2], None);
        assert!(merged.markdown().contains("- shard 2/3: missing"));
    }

    #[test]
    fn reports_of_different_runs_are_refused() {
        let all = full_run();
        let dir = tempfile::tempdir().expect("tempdir");
        let read = |p: PathBuf| ShardReport::read(&p.join("report.json")).expect("read");
        let one = read(write_shard(
            dir.path(),
            Shard { index: 1, count: 3 },
            &all,
            &[],
        ));
        let other = read(write_shard(
            dir.path(),
            Shard { index: 1, count: 2 },
            &all,
            &[],
        ));
        let e = merge(vec![one.clone(), other])
            .expect_err("two counts")
            .to_string();
        assert!(e.contains("merge the shards of one run (one N)"), "{e}");
        let e = merge(vec![one.clone(), one.clone()])
            .expect_err("twice")
            .to_string();
        assert!(e.contains("shard 1/3 is reported twice"), "{e}");
        // Shards of runs on other policies.
        let mut fedora = one.clone();
        fedora.shard = Shard { index: 2, count: 3 };
        fedora.run.trials.clear();
        fedora.run.lab["base"] = serde_json::json!("fedora");
        let e = merge(vec![one.clone(), fedora])
            .expect_err("two bases")
            .to_string();
        assert!(e.contains("ran on \"fedora\" but"), "{e}");
        // A shard holding another shard's trial.
        let mut wrong = one.clone();
        wrong.shard = Shard { index: 2, count: 3 };
        let e = merge(vec![wrong]).expect_err("wrong shard").to_string();
        assert!(e.contains("which belongs to shard 1/3"), "{e}");
        // A report without a shard: written by an older suite.
        let path = dir.path().join("old.json");
        std::fs::write(&path, r#"{"lab": {"base": "refpolicy"}, "trials": []}"#).expect("write");
        let e = ShardReport::read(&path).expect_err("no shard").to_string();
        assert!(e.contains("--shard I/N"), "{e}");
        let e = find_reports(&[dir.path().join("nowhere")]).expect_err("nothing");
        assert!(e.to_string().contains("reading"), "{e}");
    }

    #[test]
    fn an_empty_shard_and_a_lab_that_did_not_start_are_told_apart() {
        let dir = tempfile::tempdir().expect("tempdir");
        // A shard whose part of a filter was empty ran nothing, and passed.
        let empty = write_shard(dir.path(), Shard { index: 1, count: 2 }, &[], &[]);
        let mut lab = lab();
        record_shard(
            &mut lab,
            Shard { index: 2, count: 2 },
            RunSummary {
                failed: 3,
                lab_error: Some("no KVM and TCG timed out".into()),
                ..RunSummary::default()
            },
        );
        let broken = dir.path().join("broken");
        report::write(&broken, &[], &lab).expect("write");
        let reports = find_reports(&[empty, broken])
            .expect("found")
            .iter()
            .map(|p| ShardReport::read(p).expect("read"))
            .collect();
        let merged = merge(reports).expect("merge");
        assert_eq!(
            merged.problems,
            [
                "shard 2/2: the lab did not start: no KVM and TCG timed out",
                "shard 2/2: 3 trial(s) failed"
            ]
        );
    }
}
