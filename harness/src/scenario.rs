//! The scenario catalog: one TOML file per scenario in `scenarios/catalog/`, typed and
//! validated when it loads (see [`validate`]), so a mistake in a scenario is an error before
//! any VM starts.

pub mod validate;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};

/// A scenario as written in its file.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// File stem; set when loaded.
    #[serde(skip_deserializing)]
    pub name: String,
    pub description: String,
    /// Policy modules of `scenarios/policy/modules/` loaded for this scenario only.
    #[serde(default)]
    pub policy_modules: Vec<String>,
    pub workload: Workload,
    #[serde(default)]
    pub engine: Engine,
    pub expect: Expect,
}

impl Scenario {
    /// The policy modules loaded for it on `base`: `[workload.BASE] policy_modules` when
    /// given, else `policy_modules`.
    pub fn policy_modules_on(&self, base: Base) -> &[String] {
        self.workload
            .on(base)
            .and_then(|o| o.policy_modules.as_deref())
            .unwrap_or(&self.policy_modules)
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// A program of crlab-workloads (`memory`, `threads`, `tree`, ...).
    pub program: String,
    /// Its wait mode (`nanosleep`, `pipe-read`, ...).
    #[serde(default = "default_wait")]
    pub wait: String,
    /// Its arguments after the wait mode (a program's kind, such as `sockets pairs`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<String>,
    /// The SELinux context it starts in; empty: the agent's own (`unconfined_t`).
    #[serde(default)]
    pub context: String,
    /// How it starts: from the agent as from a shell, or as a systemd unit.
    #[serde(default)]
    pub start: Start,
    /// The `tree` workload's members, in the order root, a, b, a1, b1: each writes its own
    /// context after it has forked its children (as a runtime's init does before it starts
    /// the payload), so the tree ends up with mixed contexts. Empty: every member keeps the
    /// context it started in.
    #[serde(default)]
    pub member_contexts: Vec<String>,
    /// The SELinux type its state directory is labelled with (e.g. `container_file_t`).
    #[serde(default)]
    pub files_type: String,
    /// The user it runs as (through `setpriv`); none: root, as the agent.
    #[serde(default)]
    pub user: Option<User>,
    /// Whether it starts with a new anonymous session keyring of its own, labelled with its
    /// context, as a container runtime gives each container one under its label (runc's is
    /// named `_ses.<container id>`, searchable by its owner); otherwise it has the agent's, as
    /// a program started from a shell. Only for a workload the agent executes in a context.
    #[serde(default)]
    pub session_keyring: bool,
    /// What differs on one base policy (`[workload.refpolicy]`, `[workload.fedora]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refpolicy: Option<WorkloadOverride>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fedora: Option<WorkloadOverride>,
}

/// How a workload starts differently on one base, with the reason.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WorkloadOverride {
    /// Why this base needs it (the rule that differs).
    pub reason: String,
    /// The context it starts in on that base.
    pub context: Option<String>,
    /// The policy modules loaded for it on that base, in place of the scenario's
    /// `policy_modules` (e.g. a rule the real policy has on one base and the stand-in lacks).
    pub policy_modules: Option<Vec<String>>,
}

fn default_wait() -> String {
    "nanosleep".into()
}

/// The number of processes in the `tree` workload (root, a, b, a1, b1).
pub const TREE_MEMBERS: usize = 5;

impl Workload {
    /// The context it starts in on `base` (empty: the agent's own, or for a unit the one
    /// systemd's own transition gives).
    pub fn context_on(&self, base: Base) -> &str {
        self.on(base)
            .and_then(|o| o.context.as_deref())
            .unwrap_or(&self.context)
    }

    /// The override for `base`, if any.
    fn on(&self, base: Base) -> Option<&WorkloadOverride> {
        match base {
            Base::Refpolicy => self.refpolicy.as_ref(),
            Base::Fedora => self.fedora.as_ref(),
        }
    }

    /// How many processes the workload's tree has.
    pub fn processes(&self) -> usize {
        match self.program.as_str() {
            "tree" => TREE_MEMBERS,
            // The keyring's holder and the child that shares it.
            "keyrings" => 2,
            _ => 1,
        }
    }
}

/// A workload's user: ids and supplementary groups; the restore must give them back to every
/// thread.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub uid: u32,
    pub gid: u32,
    #[serde(default)]
    pub groups: Vec<u32>,
}

impl User {
    /// `Uid`, `Gid` and `Groups` as `/proc/PID/status` shows them for this user.
    pub fn status_lines(&self) -> [String; 3] {
        let groups: Vec<String> = self.groups.iter().map(u32::to_string).collect();
        [
            format!("Uid:\t{0}\t{0}\t{0}\t{0}", self.uid),
            format!("Gid:\t{0}\t{0}\t{0}\t{0}", self.gid),
            format!("Groups:\t{}", groups.join(" ")),
        ]
    }
}

/// How a workload starts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Start {
    /// Executed by the agent (as from a root shell), in `context` if given.
    #[default]
    Exec,
    /// A transient systemd service (`systemd-run`), with `SELinuxContext=` set to `context`
    /// when one is given (none: the context systemd's own transition gives the program).
    Unit,
}

/// How the engine runs: its context and the options a scenario may set.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Engine {
    /// The context the engine runs in; empty: the agent's own.
    #[serde(default)]
    pub context: String,
    /// Restore every process into this context instead of its own (crlab's `--lsm-profile`,
    /// criu's `--lsm-profile selinux:CTX`).
    #[serde(default)]
    pub target_context: Option<String>,
    /// An unsafe engine behaviour that a negative control turns on (crlab only).
    #[serde(default)]
    pub negative_control: Option<NegativeControl>,
}

/// The engine's unsafe behaviours, each the opposite of a rule it keeps, which a negative
/// control turns on to show the rule matters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum NegativeControl {
    /// The transport socket keeps the engine's context (`crlab dump
    /// --unsafe-unlabelled-transport`): the dump must fail.
    UnlabelledTransport,
    /// Contexts are written after the threads exist (`crlab restore
    /// --unsafe-context-after-threads`): the restore of a multi-threaded process must fail.
    ContextAfterThreads,
}

impl NegativeControl {
    /// The crlab flag, and whether it belongs to the dump (else the restore).
    pub fn flag(self) -> (&'static str, bool) {
        match self {
            NegativeControl::UnlabelledTransport => ("--unsafe-unlabelled-transport", true),
            NegativeControl::ContextAfterThreads => ("--unsafe-context-after-threads", false),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Fail,
    Skip,
}

impl Outcome {
    pub fn name(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Fail => "fail",
            Outcome::Skip => "skip",
        }
    }
}

impl fmt::Display for Outcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The base policy a lab image runs: expectations may differ per base, each with its reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Base {
    /// Debian's refpolicy (`selinux-policy-default`) with the lab's stand-in module.
    Refpolicy,
    /// Fedora's selinux-policy (targeted) with container-selinux.
    Fedora,
}

impl Base {
    /// The base named by a `--distro-policy` value (`refpolicy`, `fedora=PATH`).
    pub fn of_distro_policy(spec: &str) -> Option<Base> {
        match spec.split_once('=').map_or(spec, |(k, _)| k) {
            "" | "refpolicy" => Some(Base::Refpolicy),
            "fedora" => Some(Base::Fedora),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Base::Refpolicy => "refpolicy",
            Base::Fedora => "fedora",
        }
    }
}

/// What a scenario expects. Per-base tables (`[expect.fedora]`, `[expect.refpolicy]`) replace
/// the fields they set on that base, and say why.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub dump: Outcome,
    pub restore: Outcome,
    /// The restored context of every process of the tree, in pre-order (children by pid), each
    /// checked on every thread: a whole context (level included) or a bare type.
    #[serde(default)]
    pub restored: Vec<String>,
    /// The verdict of `crlab check --images-dir` run before the restore, as the engine's
    /// context: `ok` when it predicts the restore may change every context, `fail` when the
    /// kernel's access computation says it may not.
    #[serde(default = "ok")]
    pub check: Outcome,
    /// Words the failing step's error must contain.
    #[serde(default)]
    pub error_contains: Vec<String>,
    /// Records that must appear in the audit log of the scenario's window.
    #[serde(default)]
    pub audit: Vec<AuditExpect>,
    /// No other denial by the scenario's processes may appear.
    #[serde(default = "yes")]
    pub no_other_denials: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refpolicy: Option<Override>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fedora: Option<Override>,
}

/// Expectations that differ on one base, with the reason.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Override {
    /// Why this base behaves differently (the rule or constraint that differs).
    pub reason: String,
    pub dump: Option<Outcome>,
    pub restore: Option<Outcome>,
    pub restored: Option<Vec<String>>,
    pub check: Option<Outcome>,
    pub error_contains: Option<Vec<String>>,
    pub audit: Option<Vec<AuditExpect>>,
    pub no_other_denials: Option<bool>,
}

fn ok() -> Outcome {
    Outcome::Ok
}

fn yes() -> bool {
    true
}

impl Expect {
    /// The expectations that hold on `base`: the common ones with that base's table applied.
    pub fn on(&self, base: Base) -> Expect {
        let over = match base {
            Base::Refpolicy => self.refpolicy.as_ref(),
            Base::Fedora => self.fedora.as_ref(),
        };
        let mut e = Expect {
            refpolicy: None,
            fedora: None,
            ..self.clone()
        };
        if let Some(o) = over {
            let o = o.clone();
            e.dump = o.dump.unwrap_or(e.dump);
            e.restore = o.restore.unwrap_or(e.restore);
            e.restored = o.restored.unwrap_or(e.restored);
            e.check = o.check.unwrap_or(e.check);
            e.error_contains = o.error_contains.unwrap_or(e.error_contains);
            e.audit = o.audit.unwrap_or(e.audit);
            e.no_other_denials = o.no_other_denials.unwrap_or(e.no_other_denials);
        }
        e
    }

    /// The overrides a scenario writes, with their base.
    pub fn overrides(&self) -> impl Iterator<Item = (Base, &Override)> {
        [
            (Base::Refpolicy, self.refpolicy.as_ref()),
            (Base::Fedora, self.fedora.as_ref()),
        ]
        .into_iter()
        .filter_map(|(b, o)| o.map(|o| (b, o)))
    }
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuditExpect {
    /// `AVC`, `USER_AVC` or `SELINUX_ERR`.
    pub kind: String,
    pub permission: String,
    #[serde(default)]
    pub source_type: String,
    #[serde(default)]
    pub target_type: String,
    #[serde(default)]
    pub class: String,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("reading the scenario catalog {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("scenario {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("no scenario found in {0}: the catalog is empty")]
    Empty(PathBuf),
    #[error("scenario {path} is inconsistent:\n  - {}", problems.join("\n  - "))]
    Invalid {
        path: PathBuf,
        problems: Vec<String>,
    },
}

/// Loads every `*.toml` of `dir`, sorted by name, without validating them against the tree
/// (see [`load_validated`]).
pub fn load(dir: &Path) -> Result<Vec<Scenario>, CatalogError> {
    Ok(read(dir)?.into_iter().map(|(_, s)| s).collect())
}

fn read(dir: &Path) -> Result<Vec<(PathBuf, Scenario)>, CatalogError> {
    let rd = std::fs::read_dir(dir).map_err(|source| CatalogError::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    let mut paths: Vec<PathBuf> = rd
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "toml"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for path in paths {
        let text = std::fs::read_to_string(&path).map_err(|source| CatalogError::Io {
            path: path.clone(),
            source,
        })?;
        let mut s: Scenario = toml::from_str(&text).map_err(|e| CatalogError::Parse {
            path: path.clone(),
            message: e.to_string(),
        })?;
        s.name = path
            .file_stem()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((path, s));
    }
    if out.is_empty() {
        return Err(CatalogError::Empty(dir.to_path_buf()));
    }
    Ok(out)
}

/// Loads the catalog of the repository at `root` and validates every scenario against it
/// (its policy modules and workload programs exist, its fields agree with each other).
pub fn load_validated(root: &Path) -> Result<Vec<Scenario>, CatalogError> {
    let tree = validate::Tree::of_repository(root)?;
    let mut out = Vec::new();
    for (path, s) in read(&root.join("scenarios/catalog"))? {
        let problems = validate::problems(&s, &tree);
        if !problems.is_empty() {
            return Err(CatalogError::Invalid { path, problems });
        }
        out.push(s);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn parse(text: &str) -> Scenario {
        let mut s: Scenario = toml::from_str(text).expect("a valid scenario");
        s.name = "s".into();
        s
    }

    #[test]
    fn the_repository_catalog_loads_and_validates() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let all = load_validated(&root).unwrap();
        assert!(!all.is_empty());
        for s in &all {
            assert!(!s.description.is_empty(), "{}", s.name);
        }
    }

    #[test]
    fn unknown_fields_are_refused_with_the_file_named() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("x.toml"),
            "description = \"d\"\nbogus = 1\n[workload]\nprogram = \"idle\"\n[expect]\ndump = \"ok\"\nrestore = \"ok\"\n",
        )
        .unwrap();
        let e = load(dir.path()).unwrap_err().to_string();
        assert!(e.contains("x.toml") && e.contains("bogus"), "{e}");
        let empty = tempfile::tempdir().unwrap();
        assert!(matches!(load(empty.path()), Err(CatalogError::Empty(_))));
    }

    #[test]
    fn a_base_table_replaces_only_what_it_sets() {
        let s = parse(
            "description = \"d\"\n[workload]\nprogram = \"idle\"\n\
             [expect]\ndump = \"ok\"\nrestore = \"fail\"\nerror_contains = [\"connectto\"]\n\
             [expect.fedora]\nreason = \"fedora does not constrain connectto by level\"\n\
             restore = \"ok\"\nerror_contains = []\nrestored = [\"container_t\"]\n",
        );
        let r = s.expect.on(Base::Refpolicy);
        assert_eq!(r.restore, Outcome::Fail);
        assert_eq!(r.error_contains, ["connectto"]);
        let f = s.expect.on(Base::Fedora);
        assert_eq!(f.restore, Outcome::Ok);
        assert!(f.error_contains.is_empty());
        assert_eq!(f.restored, ["container_t"]);
        assert_eq!(f.dump, Outcome::Ok);
        assert!(f.fedora.is_none());
    }

    #[test]
    fn distro_policy_values_name_their_base() {
        assert_eq!(Base::of_distro_policy("refpolicy"), Some(Base::Refpolicy));
        assert_eq!(Base::of_distro_policy(""), Some(Base::Refpolicy));
        assert_eq!(
            Base::of_distro_policy("fedora=/src/selinux-policy@v1"),
            Some(Base::Fedora)
        );
        assert_eq!(Base::of_distro_policy("arch"), None);
    }
}
