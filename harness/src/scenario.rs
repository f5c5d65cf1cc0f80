//! The scenario catalog: one TOML file per scenario in `scenarios/catalog/`.

use serde::{Deserialize, Serialize};
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

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// A program of crlab-workloads (`memory`, `threads`, `tree`, ...).
    pub program: String,
    /// Its wait mode (`nanosleep`, `pipe-read`, ...).
    #[serde(default = "default_wait")]
    pub wait: String,
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
}

fn default_wait() -> String {
    "nanosleep".into()
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
    /// A transient systemd service (`systemd-run`), with `SELinuxContext=` set to `context`.
    Unit,
}

#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Engine {
    /// The context crlab runs in; empty: the agent's own.
    #[serde(default)]
    pub context: String,
    #[serde(default)]
    pub dump_args: Vec<String>,
    #[serde(default)]
    pub restore_args: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    Ok,
    Fail,
    Skip,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Expect {
    pub dump: Outcome,
    pub restore: Outcome,
    /// The SELinux type of the restored process (every thread).
    #[serde(default)]
    pub restored_type: String,
    /// The whole context of the restored process, level included (every thread).
    #[serde(default)]
    pub restored_context: String,
    /// The restored context of every process of the tree, in pre-order (children by pid),
    /// each checked on every thread. Empty: only `restored_type`/`restored_context` apply.
    #[serde(default)]
    pub processes: Vec<String>,
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
}

fn ok() -> Outcome {
    Outcome::Ok
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuditExpect {
    /// `AVC` or `SELINUX_ERR`.
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
}

/// Loads every `*.toml` of `dir`, sorted by name.
pub fn load(dir: &Path) -> Result<Vec<Scenario>, CatalogError> {
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
        out.push(s);
    }
    if out.is_empty() {
        return Err(CatalogError::Empty(dir.to_path_buf()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_repository_catalog_loads() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/catalog");
        let all = load(&dir).unwrap();
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
}
