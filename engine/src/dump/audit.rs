//! What a dump refuses before it changes anything in the tree: state a restore could not give
//! back exactly, each refusal naming the state and the process that holds it. Everything here
//! reads `/proc` or compares kernel objects with `kcmp`; nothing touches a task, so a refusal
//! leaves the tree as it was once the seized threads are detached. Zombies a restore could not
//! end the same way (`zombie`) and processes another tracer holds (`not_traced`) are looked at
//! before the seize, as the tree is collected.
//!
//! Refused elsewhere, where the state is read: descriptors the engine cannot reopen and file
//! locks (`files::classify`), I/O signalling of open files (`files`), mappings it cannot
//! recreate (`memory::classify`), the parent-death signal of the root, SCHED_DEADLINE and securebits (`thread`, read by remote
//! calls), and POSIX timers the restore could not recreate with their ids (`process`).

use super::DumpError;
use crate::image::layout::{self, Member};
use crate::image::schema::Vma;
use crate::image::{schema::VmaKind, shmem_mismatch};
use crate::procfs::{self, MapEntry, Stat, Status, VmFlags};
use crate::sys::{share, Shared};

/// `VmFlags` codes of `/proc/PID/smaps` that a restore does not give back, with what they
/// mean (the advice and locks it does give back are read by `memory::vmas`).
const REFUSED_VM_FLAGS: &[(&str, &str)] = &[
    ("ui", "registered with userfaultfd"),
    ("uw", "registered with userfaultfd"),
    ("sl", "sealed (mseal)"),
];

/// The namespaces of `/proc/PID/ns`, the `*_for_children` ones included: a process that
/// unshared a pid or time namespace has its children made in it.
const NAMESPACES: &[&str] = &[
    "mnt",
    "net",
    "uts",
    "ipc",
    "pid",
    "pid_for_children",
    "user",
    "cgroup",
    "time",
    "time_for_children",
];

/// A process in a tracing stop is held by another tracer, which the dump cannot share it
/// with; it is refused before it is seized. One in group stop (`T`) is dumped, and restored
/// stopped (`stop`).
pub fn not_traced(pid: i32, stat: &Stat) -> Result<(), DumpError> {
    match stat.state {
        't' => Err(DumpError::Traced { pid }),
        _ => Ok(()),
    }
}

/// A zombie of the tree is restored as one: its parent creates it again and it ends as it
/// ended, its status (`/proc/PID/stat`'s exit code, as `waitpid` reports it) kept. Refused:
/// a zombie root (its parent is not part of the dump), a leader whose other threads still run
/// (the process has not ended), and a death that dumped core (a status with the core-dump
/// bit, which only dumping core again would give).
pub fn zombie(pid: i32, root: bool, stat: &Stat) -> Result<(), DumpError> {
    let refuse = |why: String| Err(DumpError::Zombie { pid, why });
    if root {
        return refuse("it is the root of the tree, whose parent is not dumped".into());
    }
    let threads = procfs::threads(pid)?;
    if threads.len() > 1 {
        return refuse(format!(
            "its leader exited but its threads {:?} still run",
            &threads[1..]
        ));
    }
    let status = stat.exit_code;
    if status & 0x80 != 0 {
        return refuse(format!(
            "it was killed by signal {} and dumped core, a status (core-dump bit) the restore \
             could only give it by dumping core again",
            status & 0x7f
        ));
    }
    let signal = status & 0x7f;
    if signal != 0 && (signal == 0x7f || !(1..=64).contains(&signal)) {
        return refuse(format!(
            "its status {status:#x} is neither an exit nor a death by a signal"
        ));
    }
    Ok(())
}

/// Everything about the seized tree `pids` (root first) and its `zombies` (after them) that
/// is refused from `/proc` alone. Returns the `VmFlags` of each process's mappings, in the
/// order of `pids`, which the dump uses again: reading `/proc/PID/smaps` walks every page
/// table of the process, a cost that grows with its memory, and the tree is held still.
pub fn tree(pids: &[i32], zombies: &[Member]) -> Result<Vec<Vec<VmFlags>>, DumpError> {
    let mut members = Vec::with_capacity(pids.len() + zombies.len());
    let mut vmas: Vec<Vec<Vma>> = Vec::with_capacity(pids.len());
    let mut all_flags = Vec::with_capacity(pids.len());
    for &pid in pids {
        process(pid)?;
        let stat = Stat::read(pid)?;
        members.push(Member {
            pid,
            ppid: stat.ppid,
            pgid: stat.pgid,
            sid: stat.sid,
        });
        let maps = MapEntry::read(pid)?;
        let flags = VmFlags::read(pid)?;
        mapping_flags(pid, &maps, &flags)?;
        vmas.push(super::memory::vmas(pid, &maps, &flags)?);
        all_flags.push(flags);
    }
    shared_objects(pids)?;
    members.extend_from_slice(zombies);
    session_layout(&members)?;
    let all: Vec<&[Vma]> = vmas.iter().map(Vec::as_slice).collect();
    if let Some(m) = shmem_mismatch(&all) {
        return Err(DumpError::SharedMemoryAddresses {
            shmem_id: m.shmem_id,
            first_pid: pids[m.first.0],
            first_start: m.first.1.start,
            second_pid: pids[m.second.0],
            second_start: m.second.1.start,
        });
    }
    Ok(all_flags)
}

/// One process's threads, namespaces, audit login, root directory and working directory.
fn process(pid: i32) -> Result<(), DumpError> {
    for tid in procfs::threads(pid)? {
        let path = format!("/proc/{pid}/task/{tid}/status");
        let text = procfs::read_string(&path)?;
        let status = Status::parse(&text).ok_or_else(|| crate::procfs::ProcError::Parse {
            path,
            what: "unexpected Uid/Gid/Cap lines".into(),
        })?;
        if status.seccomp != 0 {
            return Err(DumpError::Seccomp {
                pid,
                tid,
                mode: status.seccomp,
            });
        }
    }
    for &ns in NAMESPACES {
        // A namespace this kernel lacks is nobody's.
        let Ok(ours) = procfs::read_link(format!("/proc/self/ns/{ns}")) else {
            continue;
        };
        let theirs = procfs::read_link(format!("/proc/{pid}/ns/{ns}"))?;
        if theirs != ours {
            return Err(DumpError::Namespace {
                pid,
                ns,
                theirs,
                ours,
            });
        }
    }
    for (file, what) in [("loginuid", "login uid"), ("sessionid", "session id")] {
        // Absent without CONFIG_AUDIT: then nobody has one.
        let Ok(ours) = procfs::read_string(format!("/proc/self/{file}")) else {
            continue;
        };
        let theirs = procfs::read_string(format!("/proc/{pid}/{file}"))?;
        if theirs.trim() != ours.trim() {
            return Err(DumpError::AuditSession {
                pid,
                what,
                theirs: theirs.trim().to_string(),
                ours: ours.trim().to_string(),
            });
        }
    }
    let root = procfs::read_link(format!("/proc/{pid}/root"))?;
    if root != "/" {
        return Err(DumpError::Chroot { pid, root });
    }
    let cwd = procfs::read_link(format!("/proc/{pid}/cwd"))?;
    if cwd.ends_with(" (deleted)") {
        return Err(DumpError::DeletedCwd { pid, path: cwd });
    }
    Ok(())
}

/// The first refused `VmFlags` code among `flags`, with its meaning.
fn refused_flag(flags: &[String]) -> Option<(&'static str, &'static str)> {
    REFUSED_VM_FLAGS
        .iter()
        .find(|(code, _)| flags.iter().any(|f| f == code))
        .copied()
}

/// Mappings registered or sealed in ways the restore does not repeat. The kernel's own special
/// mappings (vDSO, vvar) carry such flags by nature and are recreated by the kernel.
fn mapping_flags(pid: i32, maps: &[MapEntry], flags: &[VmFlags]) -> Result<(), DumpError> {
    for m in maps {
        let kind = match super::memory::classify(pid, m) {
            Ok(Some(kind)) => kind,
            // Not dumped at all, or refused by the memory step with its own message.
            Ok(None) | Err(_) => continue,
        };
        if matches!(
            kind,
            VmaKind::Vdso | VmaKind::Vvar | VmaKind::VvarVclock | VmaKind::Vsyscall
        ) {
            continue;
        }
        let Some(f) = flags.iter().find(|f| f.start == m.start) else {
            continue;
        };
        if let Some((flag, what)) = refused_flag(&f.flags) {
            return Err(DumpError::MappingFlags {
                pid,
                start: m.start,
                end: m.end,
                path: if m.path.is_empty() {
                    "anonymous".to_string()
                } else {
                    m.path.clone()
                },
                flag: flag.to_string(),
                what,
            });
        }
    }
    Ok(())
}

/// Processes of the tree that share what `clone` can share without `CLONE_THREAD`.
fn shared_objects(pids: &[i32]) -> Result<(), DumpError> {
    for (i, &a) in pids.iter().enumerate() {
        for &b in &pids[i + 1..] {
            for what in Shared::ALL {
                if share(a, b, what)? {
                    return Err(DumpError::SharedWithProcess {
                        pid: a,
                        other: b,
                        what: match what {
                            Shared::Files => "descriptor table (CLONE_FILES)",
                            Shared::Fs => "root, working directory and umask (CLONE_FS)",
                            Shared::Sighand => "table of signal handlers (CLONE_SIGHAND)",
                            Shared::Vm => "address space (CLONE_VM or vfork)",
                        },
                    });
                }
            }
        }
    }
    Ok(())
}

/// The sessions and process groups of the tree, refused when no order of `setsid` and
/// `setpgid` calls rebuilds them ([`layout::plan`], which the restore follows).
/// `members` is the tree, root first, parents before children.
pub fn session_layout(members: &[Member]) -> Result<(), DumpError> {
    layout::plan(members)
        .map(drop)
        .map_err(|r| DumpError::SessionLayout {
            pid: r.pid,
            sid: r.sid,
            pgid: r.pgid,
            why: r.why,
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refused_flags_are_named() {
        let f = |s: &[&str]| s.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        assert_eq!(refused_flag(&f(&["rd", "wr", "mr"])), None);
        assert_eq!(refused_flag(&f(&["rd", "lo", "nh"])), None);
        assert_eq!(refused_flag(&f(&["rd", "sl"])).map(|(c, _)| c), Some("sl"));
    }
}
