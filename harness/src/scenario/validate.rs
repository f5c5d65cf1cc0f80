//! Scenario validation: what a scenario file names exists, and its fields agree with each
//! other, checked when the catalog loads so a mistake never costs a VM boot.

use super::{Base, CatalogError, Expect, NegativeControl, Outcome, Scenario, Start};
use crate::context;
use crlab_workloads::protocol::WaitMode;
use std::path::{Path, PathBuf};

/// What a scenario may refer to in the repository.
#[derive(Debug, Clone)]
pub struct Tree {
    /// Policy modules a scenario may load (file names in `scenarios/policy/modules/`).
    pub modules: Vec<String>,
    /// Workload programs (`scenarios/workloads/src/bin/*.rs` stems).
    pub programs: Vec<String>,
}

impl Tree {
    /// The modules and programs of the repository at `root`.
    pub fn of_repository(root: &Path) -> Result<Tree, CatalogError> {
        Ok(Tree {
            modules: names(&root.join("scenarios/policy/modules"), "cil", true)?,
            programs: names(&root.join("scenarios/workloads/src/bin"), "rs", false)?,
        })
    }
}

fn names(dir: &Path, ext: &str, keep_ext: bool) -> Result<Vec<String>, CatalogError> {
    let rd = std::fs::read_dir(dir).map_err(|source| CatalogError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut out: Vec<String> = rd
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .filter_map(|p: PathBuf| {
            let n = if keep_ext {
                p.file_name()
            } else {
                p.file_stem()
            };
            n.map(|n| n.to_string_lossy().into_owned())
        })
        .collect();
    out.sort();
    Ok(out)
}

/// Everything inconsistent in `s`, each said in a sentence; empty when it is sound.
pub fn problems(s: &Scenario, tree: &Tree) -> Vec<String> {
    let mut p = Vec::new();
    let w = &s.workload;
    if s.description.trim().is_empty() {
        p.push("the description is empty".into());
    }
    let per_base = [&w.refpolicy, &w.fedora]
        .into_iter()
        .flatten()
        .filter_map(|o| o.policy_modules.as_ref())
        .flatten();
    for m in s.policy_modules.iter().chain(per_base) {
        if !tree.modules.contains(m) {
            p.push(format!(
                "policy module {m:?} is not in scenarios/policy/modules/ (there: {})",
                tree.modules.join(", ")
            ));
        }
    }
    if !tree.programs.contains(&w.program) {
        p.push(format!(
            "workload program {:?} does not exist (programs: {})",
            w.program,
            tree.programs.join(", ")
        ));
    }
    if WaitMode::from_name(&w.wait).is_none() {
        let modes: Vec<&str> = WaitMode::ALL.iter().map(|m| m.name()).collect();
        p.push(format!(
            "wait mode {:?} is unknown (modes: {})",
            w.wait,
            modes.join(", ")
        ));
    }
    for (base, o) in [("refpolicy", &w.refpolicy), ("fedora", &w.fedora)] {
        if let Some(o) = o {
            if o.reason.trim().is_empty() {
                p.push(format!(
                    "[workload.{base}] gives no reason: say which rule differs on that base"
                ));
            }
            if let Some(c) = o
                .context
                .as_deref()
                .filter(|c| !c.is_empty() && !context::is_full(c))
            {
                p.push(format!(
                    "workload.{base}.context {c:?} is not a full context (user:role:type:level)"
                ));
            }
        }
    }
    for (what, ctx) in [
        ("workload.context", w.context.as_str()),
        ("engine.context", s.engine.context.as_str()),
        (
            "engine.target_context",
            s.engine.target_context.as_deref().unwrap_or(""),
        ),
    ] {
        if !ctx.is_empty() && !context::is_full(ctx) {
            p.push(format!(
                "{what} {ctx:?} is not a full context (user:role:type:level)"
            ));
        }
    }
    if s.engine.target_context.as_deref() == Some("") {
        p.push("engine.target_context is empty: leave it out to keep each process's own".into());
    }
    if !w.member_contexts.is_empty() {
        if w.program != "tree" {
            p.push(format!(
                "workload.member_contexts is for the tree workload, not {:?}",
                w.program
            ));
        } else if w.member_contexts.len() != super::TREE_MEMBERS {
            p.push(format!(
                "workload.member_contexts has {} entries; the tree has {} members (root a b a1 b1)",
                w.member_contexts.len(),
                super::TREE_MEMBERS
            ));
        }
        for c in w.member_contexts.iter().filter(|c| !context::is_full(c)) {
            p.push(format!("member context {c:?} is not a full context"));
        }
    }
    if w.session_keyring && (w.start != Start::Exec || w.context.is_empty()) {
        p.push(
            "workload.session_keyring is for a workload the agent executes in a context \
             (start = \"exec\" and a workload.context)"
                .into(),
        );
    }
    if w.user.as_ref().is_some_and(|u| u.uid == 0) {
        p.push("workload.user has uid 0: leave it out to run as root".into());
    }
    if w.start == Start::Unit && w.user.is_some() {
        p.push("a unit workload cannot also set workload.user".into());
    }
    for (base, o) in s.expect.overrides() {
        if o.reason.trim().is_empty() {
            p.push(format!(
                "[expect.{}] gives no reason: say which rule differs on that base",
                base.name()
            ));
        }
    }
    for base in [Base::Refpolicy, Base::Fedora] {
        let prefix = if s.expect.overrides().any(|(b, _)| b == base) {
            format!("on {}: ", base.name())
        } else {
            String::new()
        };
        for e in expectation_problems(s, &s.expect.on(base)) {
            let line = format!("{prefix}{e}");
            if !p.contains(&line) {
                p.push(line);
            }
        }
    }
    p
}

/// Problems of one base's expectations against the scenario's options.
fn expectation_problems(s: &Scenario, e: &Expect) -> Vec<String> {
    let mut p = Vec::new();
    if e.dump == Outcome::Skip {
        p.push("expect.dump cannot be skip: every scenario dumps".into());
    }
    if e.dump == Outcome::Fail && e.restore != Outcome::Skip {
        p.push("expect.dump is fail, so expect.restore must be skip".into());
    }
    if e.restore == Outcome::Ok {
        let n = s.workload.processes();
        if e.restored.len() != n {
            p.push(format!(
                "expect.restored has {} entries; the {} workload restores {n} process(es), pre-order",
                e.restored.len(),
                s.workload.program
            ));
        }
    } else if !e.restored.is_empty() {
        p.push(format!(
            "expect.restored is set but expect.restore is {}",
            e.restore
        ));
    }
    for r in &e.restored {
        if !context::is_full(r) && !context::is_type(r) {
            p.push(format!(
                "expect.restored entry {r:?} is neither a full context nor a type"
            ));
        }
        if let Some(target) = &s.engine.target_context {
            if context::is_full(r) && r != target {
                p.push(format!(
                    "expect.restored entry {r:?} contradicts engine.target_context {target:?}"
                ));
            }
        }
    }
    let fails = e.dump == Outcome::Fail || e.restore == Outcome::Fail;
    if !e.error_contains.is_empty() && !fails {
        p.push("expect.error_contains is set but no step is expected to fail".into());
    }
    if e.restore == Outcome::Skip && e.check != Outcome::Ok {
        p.push("expect.check is judged before a restore, and this scenario has none".into());
    }
    match s.engine.negative_control {
        Some(NegativeControl::UnlabelledTransport) if e.dump != Outcome::Fail => p.push(
            "negative control unlabelled-transport must make the dump fail (expect.dump = \"fail\")"
                .into(),
        ),
        Some(NegativeControl::ContextAfterThreads) if e.restore != Outcome::Fail => p.push(
            "negative control context-after-threads must make the restore fail (expect.restore = \"fail\")"
                .into(),
        ),
        _ => {}
    }
    for a in &e.audit {
        if !["AVC", "USER_AVC", "SELINUX_ERR"].contains(&a.kind.as_str()) {
            p.push(format!(
                "expect.audit kind {:?} is not AVC, USER_AVC or SELINUX_ERR",
                a.kind
            ));
        }
        if a.permission.is_empty() {
            p.push("an expect.audit record has no permission".into());
        }
    }
    p
}

#[cfg(test)]
mod tests {
    use super::super::tests::parse;
    use super::*;
    use rstest::rstest;

    fn tree() -> Tree {
        Tree {
            modules: vec!["restore-unconfined-service.cil".into()],
            programs: vec!["idle".into(), "threads".into(), "tree".into()],
        }
    }

    const GOOD: &str = "description = \"d\"\n[workload]\nprogram = \"idle\"\n\
        [expect]\ndump = \"ok\"\nrestore = \"ok\"\nrestored = [\"unconfined_t\"]\n";

    #[test]
    fn a_sound_scenario_has_no_problem() {
        assert_eq!(problems(&parse(GOOD), &tree()), Vec::<String>::new());
    }

    #[rstest]
    #[case::missing_module(
        "policy_modules = [\"nope.cil\"]\n[workload]\nprogram = \"idle\"",
        "[expect]\ndump = \"ok\"\nrestore = \"ok\"\nrestored = [\"unconfined_t\"]",
        "policy module \"nope.cil\""
    )]
    #[case::missing_program(
        "[workload]\nprogram = \"ghost\"",
        "[expect]\ndump = \"ok\"\nrestore = \"ok\"\nrestored = [\"unconfined_t\"]",
        "workload program \"ghost\""
    )]
    #[case::unknown_wait(
        "[workload]\nprogram = \"idle\"\nwait = \"doze\"",
        "[expect]\ndump = \"ok\"\nrestore = \"ok\"\nrestored = [\"unconfined_t\"]",
        "wait mode \"doze\""
    )]
    #[case::members_of_a_single_process(
        "[workload]\nprogram = \"idle\"\nmember_contexts = [\"system_u:system_r:container_t:s0\"]",
        "[expect]\ndump = \"ok\"\nrestore = \"ok\"\nrestored = [\"unconfined_t\"]",
        "member_contexts is for the tree workload"
    )]
    #[case::keyring_without_context(
        "[workload]\nprogram = \"idle\"\nsession_keyring = true",
        "[expect]\ndump = \"ok\"\nrestore = \"ok\"\nrestored = [\"unconfined_t\"]",
        "workload.session_keyring is for a workload the agent executes in a context"
    )]
    #[case::not_a_context(
        "[workload]\nprogram = \"idle\"\ncontext = \"container_t\"",
        "[expect]\ndump = \"ok\"\nrestore = \"ok\"\nrestored = [\"unconfined_t\"]",
        "workload.context \"container_t\" is not a full context"
    )]
    #[case::count_against_the_tree(
        "[workload]\nprogram = \"tree\"",
        "[expect]\ndump = \"ok\"\nrestore = \"ok\"\nrestored = [\"unconfined_t\"]",
        "the tree workload restores 5 process(es)"
    )]
    #[case::restore_after_a_failed_dump(
        "[workload]\nprogram = \"idle\"",
        "[expect]\ndump = \"fail\"\nrestore = \"ok\"\nrestored = [\"unconfined_t\"]",
        "expect.dump is fail, so expect.restore must be skip"
    )]
    #[case::negative_control_that_succeeds(
        "[workload]\nprogram = \"idle\"\n[engine]\nnegative_control = \"unlabelled-transport\"",
        "[expect]\ndump = \"ok\"\nrestore = \"ok\"\nrestored = [\"unconfined_t\"]",
        "must make the dump fail"
    )]
    #[case::target_contradicts_restored(
        "[workload]\nprogram = \"idle\"\n[engine]\ntarget_context = \"system_u:system_r:container_t:s0:c5,c6\"",
        "[expect]\ndump = \"ok\"\nrestore = \"ok\"\nrestored = [\"system_u:system_r:container_t:s0:c1,c2\"]",
        "contradicts engine.target_context"
    )]
    #[case::error_words_without_a_failure(
        "[workload]\nprogram = \"idle\"",
        "[expect]\ndump = \"ok\"\nrestore = \"ok\"\nrestored = [\"unconfined_t\"]\nerror_contains = [\"x\"]",
        "no step is expected to fail"
    )]
    #[case::base_table_without_reason(
        "[workload]\nprogram = \"idle\"",
        "[expect]\ndump = \"ok\"\nrestore = \"ok\"\nrestored = [\"unconfined_t\"]\n[expect.fedora]\nreason = \"\"",
        "[expect.fedora] gives no reason"
    )]
    #[case::workload_base_table_without_reason(
        "[workload]\nprogram = \"idle\"\n[workload.refpolicy]\nreason = \"\"\ncontext = \"system_u:system_r:unconfined_service_t:s0\"",
        "[expect]\ndump = \"ok\"\nrestore = \"ok\"\nrestored = [\"unconfined_t\"]",
        "[workload.refpolicy] gives no reason"
    )]
    #[case::base_table_that_contradicts(
        "[workload]\nprogram = \"idle\"",
        "[expect]\ndump = \"ok\"\nrestore = \"ok\"\nrestored = [\"unconfined_t\"]\n[expect.fedora]\nreason = \"r\"\nrestore = \"fail\"",
        "on fedora: expect.restored is set but expect.restore is fail"
    )]
    fn inconsistencies_are_named(#[case] head: &str, #[case] expect: &str, #[case] want: &str) {
        let text = format!("description = \"d\"\n{head}\n{expect}\n");
        let s = parse(&text);
        let found = problems(&s, &tree());
        assert!(
            found.iter().any(|p| p.contains(want)),
            "wanted a problem containing {want:?}, got {found:?}\n{text}"
        );
    }
}
