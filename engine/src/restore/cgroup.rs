//! The cgroups of the restored processes: each is moved, once created and before it runs,
//! into the cgroup it was in in every hierarchy (its pid written to `cgroup.procs` under the
//! hierarchy's mount, found in `/proc/self/mountinfo`); its threads, created later, follow it.
//! A cgroup that no longer exists (a stopped systemd unit's) is made again, and a note says
//! so: its controller settings were not dumped, it has the defaults. A failed restore removes
//! the cgroups it made, once its processes are gone.

use super::RestoreError;
use crate::image::schema::Cgroup;
use crate::procfs::{CgroupLine, CgroupMount};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// One cgroup a process must be in.
struct Join {
    controllers: String,
    path: String,
    dir: PathBuf,
    v2: bool,
}

/// Where every process of the tree goes, resolved before anything is created.
pub struct Cgroups {
    joins: HashMap<i32, Vec<Join>>,
    /// What the restore did that the user should know (cgroups made again).
    pub notes: Vec<String>,
    /// The directories made, in order, removed on drop unless [`Cgroups::keep`] was called.
    made: Vec<PathBuf>,
}

impl Drop for Cgroups {
    fn drop(&mut self) {
        // Deepest first; the restore's tasks were killed and reaped before (declared after).
        for dir in self.made.iter().rev() {
            if let Err(e) = std::fs::remove_dir(dir) {
                tracing::warn!(dir = %dir.display(), error = %e, "removing a cgroup the failed restore made");
            }
        }
    }
}

impl Cgroups {
    /// Finds the directory of every cgroup of `procs` (pid, its cgroups), or refuses one whose
    /// hierarchy this host has not mounted.
    pub fn plan(procs: &[(i32, &[Cgroup])]) -> Result<Cgroups, RestoreError> {
        let mut joins = HashMap::new();
        if procs.iter().all(|(_, c)| c.is_empty()) {
            return Ok(Cgroups {
                joins,
                notes: Vec::new(),
                made: Vec::new(),
            });
        }
        let mounts = CgroupMount::read_own()
            .map_err(|e| RestoreError::Inconsistent(format!("finding the cgroup mounts: {e}")))?;
        for &(pid, cgroups) in procs {
            let mut mine = Vec::with_capacity(cgroups.len());
            for c in cgroups {
                let dir = mounts
                    .iter()
                    .filter(|m| m.serves(&c.controllers))
                    // A mount of the whole hierarchy first.
                    .min_by_key(|m| m.root != "/")
                    .and_then(|m| Some((m.dir_of(&c.path)?, m.v2)));
                let Some((dir, v2)) = dir else {
                    return Err(RestoreError::CgroupNotMounted {
                        pid,
                        hierarchy: crate::image::cgroup_hierarchy(&c.controllers),
                        path: c.path.clone(),
                    });
                };
                mine.push(Join {
                    controllers: c.controllers.clone(),
                    path: c.path.clone(),
                    dir,
                    v2,
                });
            }
            joins.insert(pid, mine);
        }
        Ok(Cgroups {
            joins,
            notes: Vec::new(),
            made: Vec::new(),
        })
    }

    /// The restore succeeded: the cgroups it made stay; returns its notes.
    pub fn keep(mut self) -> Vec<String> {
        self.made.clear();
        std::mem::take(&mut self.notes)
    }

    /// Moves `pid`, just created and not yet run, into its cgroups: those it is not in
    /// already (it starts in its creator's), making a directory that no longer exists.
    pub fn join(&mut self, pid: i32) -> Result<(), RestoreError> {
        let Some(joins) = self.joins.get(&pid) else {
            return Ok(());
        };
        if joins.is_empty() {
            return Ok(());
        }
        failpoint!("restore.cgroup", super::error::injected(pid, "the cgroups"));
        let now = CgroupLine::read(pid, pid).map_err(|e| {
            RestoreError::Inconsistent(format!("reading the cgroups of process {pid}: {e}"))
        })?;
        for j in joins {
            if now
                .iter()
                .any(|l| l.controllers == j.controllers && l.path == j.path)
            {
                continue;
            }
            let fail = |what, source| RestoreError::Cgroup {
                pid,
                hierarchy: crate::image::cgroup_hierarchy(&j.controllers),
                path: j.path.clone(),
                dir: j.dir.clone(),
                what,
                source,
            };
            let made = make_dirs(&j.dir, j.v2, &mut self.made);
            for made in made.map_err(|e| fail("making its directory", e))? {
                self.notes.push(format!(
                    "cgroup {} of {} ({}) no longer existed and was made again for process {pid}, \
                     with default settings: a cgroup's controller settings are not part of the \
                     image",
                    j.path,
                    crate::image::cgroup_hierarchy(&j.controllers),
                    made.display()
                ));
            }
            std::fs::OpenOptions::new()
                .write(true)
                .open(j.dir.join("cgroup.procs"))
                .and_then(|mut f| f.write_all(pid.to_string().as_bytes()))
                .map_err(|e| fail("writing its pid to cgroup.procs", e))?;
        }
        Ok(())
    }
}

/// Makes `dir` and its missing parents, returning those it made (and adding each to `all` as
/// soon as it exists). A new cgroup v1 cpuset has no CPUs or memory nodes, which no process
/// can join: it is given its parent's.
fn make_dirs(dir: &Path, v2: bool, all: &mut Vec<PathBuf>) -> std::io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut at = dir;
    while !at.exists() {
        missing.push(at.to_path_buf());
        match at.parent() {
            Some(p) => at = p,
            None => break,
        }
    }
    missing.reverse();
    for d in &missing {
        std::fs::create_dir(d)?;
        all.push(d.clone());
        if !v2 {
            for knob in ["cpuset.cpus", "cpuset.mems"] {
                let file = d.join(knob);
                let empty = std::fs::read_to_string(&file).is_ok_and(|t| t.trim().is_empty());
                if let (true, Some(parent)) = (empty, d.parent()) {
                    let value = std::fs::read_to_string(parent.join(knob))?;
                    std::fs::write(&file, value.trim())?;
                }
            }
        }
    }
    Ok(missing)
}
