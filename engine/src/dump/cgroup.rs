//! The cgroups of a dumped process: its line of `/proc/PID/cgroup` in every hierarchy (v1 and
//! v2), the same for each of its threads or refused: the restore moves a process, whose
//! threads follow, into one cgroup per hierarchy.

use super::DumpError;
use crate::image::schema::Cgroup;
use crate::procfs::CgroupLine;

/// The cgroups of `pid`, each thread of `tids` checked to be in the same.
pub fn read(pid: i32, tids: &[i32]) -> Result<Vec<Cgroup>, DumpError> {
    failpoint!("dump.proc.cgroup", |source| crate::procfs::ProcError::Io {
        path: format!("/proc/{pid}/cgroup"),
        source,
    });
    let lines = CgroupLine::read(pid, pid)?;
    for l in &lines {
        // `/..` when the process is outside the engine's cgroup namespace.
        crate::image::check_path(&l.path).map_err(|why| DumpError::CgroupPath {
            pid,
            hierarchy: crate::image::cgroup_hierarchy(&l.controllers),
            path: l.path.clone(),
            why,
        })?;
    }
    for &tid in tids.iter().filter(|&&t| t != pid) {
        let theirs = CgroupLine::read(pid, tid)?;
        if let Some(t) = theirs.iter().find(|t| !lines.contains(t)) {
            let process = lines
                .iter()
                .find(|l| l.hierarchy == t.hierarchy)
                .map_or("none", |l| l.path.as_str());
            return Err(DumpError::ThreadCgroup {
                pid,
                tid,
                hierarchy: crate::image::cgroup_hierarchy(&t.controllers),
                thread: t.path.clone(),
                process: process.to_owned(),
            });
        }
    }
    Ok(lines
        .into_iter()
        .map(|l| Cgroup {
            hierarchy: l.hierarchy,
            controllers: l.controllers,
            path: l.path,
        })
        .collect())
}
