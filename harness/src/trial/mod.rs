//! One trial: a scenario run with one backend in the lab. It drives (the lab steps), observes
//! (a typed [`Observation`]) and then judges ([`verdict::verdict`], a pure function), in that
//! order and in separate modules.

pub mod backend;
pub mod drive;
pub mod observation;
pub mod verdict;

pub use backend::{Backend, GUEST_BIN};
pub use drive::LoadedModules;
pub use observation::Observation;
pub use verdict::Expectation;

use crate::lab::Lab;
use crate::scenario::{Base, Outcome, Scenario};
use serde::{Deserialize, Serialize};
use std::path::Path;
use std::time::Instant;

/// The steps that set a trial up: when one fails the lab, not the tool, failed.
pub const SETUP_STEPS: [&str; 3] = ["load policy modules", "prepare", "start workload"];

/// A trial's expectation, observation and judgement.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TrialReport {
    pub scenario: String,
    pub backend: Backend,
    /// The base policy the expectations were taken for.
    pub base: Base,
    /// Judged backends (crlab): every expectation held. Recorded ones (criu): the trial ran.
    pub passed: bool,
    pub expected: Expectation,
    pub observed: Observation,
    /// Judged backends: how the observation differs from the expectation.
    pub problems: Vec<String>,
    /// Recorded backends: where its outcomes differ from crlab's in the same scenario.
    pub differences: Vec<String>,
    /// Scenario options the backend cannot express (it ran without them).
    pub unexpressed_options: Vec<String>,
    pub console_tail: String,
    pub millis: u64,
}

impl TrialReport {
    /// Judges `observed` against what `s` expects on `base`.
    pub fn judge(
        s: &Scenario,
        backend: Backend,
        base: Base,
        observed: Observation,
        millis: u64,
    ) -> TrialReport {
        let expected = Expectation::of(s, base);
        let problems = verdict::verdict(&expected, &observed);
        let passed = if backend.judged() {
            problems.is_empty()
        } else {
            verdict::could_run(&observed)
        };
        TrialReport {
            scenario: s.name.clone(),
            backend,
            base,
            passed,
            expected,
            observed,
            problems: if backend.judged() {
                problems
            } else {
                Vec::new()
            },
            differences: Vec::new(),
            unexpressed_options: backend.unexpressed_options(s),
            console_tail: String::new(),
            millis,
        }
    }

    /// The name the trial has in the suite (`crlab::NAME`).
    pub fn name(&self) -> String {
        format!("{}::{}", self.backend.name(), self.scenario)
    }
}

/// Runs `s` with `backend` on a lab of `base`; `marker` is the audit position before it.
/// Returns the judged report and the audit position after it.
pub fn run(
    lab: &mut Lab,
    s: &Scenario,
    backend: Backend,
    base: Base,
    marker: u64,
    policy_dir: &Path,
    modules: &mut LoadedModules,
) -> (TrialReport, u64) {
    let start = Instant::now();
    let restore = s.expect.on(base).restore != Outcome::Skip;
    let (observed, next) =
        drive::drive(lab, s, backend, base, restore, marker, policy_dir, modules);
    let millis = u64::try_from(start.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut report = TrialReport::judge(s, backend, base, observed, millis);
    if !report.passed {
        report.console_tail = lab.console_tail(20);
    }
    (report, next)
}
