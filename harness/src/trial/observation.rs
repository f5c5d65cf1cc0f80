//! What a trial observed in the lab, typed and serializable: the input of the verdict, of the
//! report, and of `policy-diff` (which compares two policies' observations). Nothing here
//! judges; every field is what the guest showed.

use crate::audit::AuditRecord;
use crate::scenario::Outcome;
use serde::{Deserialize, Serialize};

/// One action the runner took in the lab, and whether the lab could take it (a failed step is
/// the lab's or the scenario's setup failing, not an outcome being judged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub name: String,
    pub ok: bool,
    pub millis: u64,
    pub detail: String,
}

/// What a checkpoint/restore tool did when it was run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ToolRun {
    pub outcome: Outcome,
    /// What the tool said: crlab's stderr, criu's error lines from its log.
    pub said: String,
}

/// A restored thread as the guest showed it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ThreadState {
    pub tid: u32,
    /// `attr/current`.
    pub context: String,
    /// The `Uid:`, `Gid:` and `Groups:` lines of its `status`.
    pub credentials: Vec<String>,
}

/// A restored process and each of its threads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoredProcess {
    pub pid: u32,
    pub threads: Vec<ThreadState>,
}

impl RestoredProcess {
    /// The context of each thread.
    pub fn contexts(&self) -> impl Iterator<Item = &str> {
        self.threads.iter().map(|t| t.context.as_str())
    }

    /// The context of the main thread (empty if it had none).
    pub fn context(&self) -> &str {
        self.threads.first().map_or("", |t| t.context.as_str())
    }
}

/// What the workload answered when it was asked to check itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum SelfCheck {
    /// It wrote `ok`.
    Passed,
    /// It wrote something else: its own account of what is wrong.
    Failed(String),
}

/// Everything a trial observed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    pub steps: Vec<Step>,
    pub dump: Option<ToolRun>,
    /// `crlab check --images-dir`, run before the restore (crlab trials only).
    pub check: Option<ToolRun>,
    pub restore: Option<ToolRun>,
    /// Every restored process, in pre-order (children by pid).
    pub restored: Vec<RestoredProcess>,
    /// The workload's self-check: after the restore, or after a failed dump (then it shows
    /// whether the failed dump left it as it was).
    pub self_check: Option<SelfCheck>,
    /// After a failed restore: what still held the original pid (`None`: nothing did).
    pub left_after_failed_restore: Option<String>,
    /// The audit records of the trial's window from its processes.
    pub audit: Vec<AuditRecord>,
}

impl Observation {
    /// The outcome of a tool step, if it ran.
    pub fn dump_outcome(&self) -> Option<Outcome> {
        self.dump.as_ref().map(|r| r.outcome)
    }

    pub fn check_outcome(&self) -> Option<Outcome> {
        self.check.as_ref().map(|r| r.outcome)
    }

    pub fn restore_outcome(&self) -> Option<Outcome> {
        self.restore.as_ref().map(|r| r.outcome)
    }

    /// The restored root's context (its main thread's), if something was restored and its
    /// context could be read (a process that exited at once has none).
    pub fn root_context(&self) -> Option<&str> {
        self.restored
            .first()
            .map(RestoredProcess::context)
            .filter(|c| !c.is_empty())
    }

    /// The step called `name`, if it ran.
    pub fn step(&self, name: &str) -> Option<&Step> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// What a trial that went as planned observed: set up, dumped, checked, restored into
/// `context` (one process, two threads, root), its self-check passed, no audit record. Tests
/// start from it and change one thing.
#[cfg(test)]
pub(crate) fn restored_example(context: &str) -> Observation {
    let ran = |outcome, said: &str| {
        Some(ToolRun {
            outcome,
            said: said.into(),
        })
    };
    let thread = |tid| ThreadState {
        tid,
        context: context.into(),
        credentials: vec!["Uid:\t0\t0\t0\t0".into()],
    };
    Observation {
        steps: vec![Step {
            name: "start workload".into(),
            ok: true,
            millis: 1,
            detail: String::new(),
        }],
        dump: ran(Outcome::Ok, ""),
        check: ran(Outcome::Ok, "restore allowed"),
        restore: ran(Outcome::Ok, ""),
        restored: vec![RestoredProcess {
            pid: 100,
            threads: vec![thread(100), thread(101)],
        }],
        self_check: Some(SelfCheck::Passed),
        left_after_failed_restore: None,
        audit: vec![],
    }
}
