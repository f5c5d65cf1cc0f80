//! SELinux on restore: the restored task's own context, written by the task
//! itself (only a task may change its own `attr/current`).
//!
//! **The ordering rule** (the seed's "Restoring a multi-threaded process with
//! SELinux"): the kernel lets a multi-threaded process change its context only
//! to a context bounded by the old one. So each process's context is written
//! while it is still single-threaded, and only then are its threads created;
//! they inherit it. [`ContextOrder`] names the two orders; only
//! [`ContextOrder::BeforeThreads`] is correct, the other exists as a negative
//! control for the lab.

use super::RestoreError;
use crate::sys::{Remote, Scratch, SysError};
use nix::errno::Errno;

/// When a process's context is written relative to creating its threads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ContextOrder {
    /// While single-threaded, then the threads (the rule).
    #[default]
    BeforeThreads,
    /// After the threads exist: fails under SELinux unless bounded (negative control).
    AfterThreads,
}

/// An SELinux refusal, named as the kernel reports it.
#[derive(Debug, thiserror::Error)]
pub enum SelinuxRefusal {
    #[error(
        "SELinux refused to move process {pid} from {from:?} to {to:?} ({errno}): {why}; \
         a policy allowing it says `{rules}` (see the audit log for the AVC record)"
    )]
    Denied {
        pid: i32,
        from: String,
        to: String,
        /// The permissions the kernel's access computation denies, named.
        why: String,
        rules: String,
        errno: Errno,
    },
    #[error(
        "SELinux refused to move multi-threaded process {pid} from {from:?} to {to:?}: the kernel allows a \
         multi-threaded process only a context bounded by its old one (security_bounded_transition); \
         write the context before creating threads, or declare `typebounds {from_type} {to_type};`"
    )]
    Bounded {
        pid: i32,
        from: String,
        to: String,
        from_type: String,
        to_type: String,
    },
    #[error("SELinux does not know the context {to:?} (EINVAL) for process {pid}: is the policy module that declares it loaded?")]
    Invalid { pid: i32, to: String },
    #[error("writing the SELinux context {to:?} of process {pid}")]
    Other {
        pid: i32,
        to: String,
        #[source]
        source: SysError,
    },
}

/// The type field of a `user:role:type:level` context, owned.
fn context_type(ctx: &str) -> String {
    crate::check::restore::context_type(ctx).to_string()
}

/// Writes `path` NUL-terminated into the scratch area; returns its address.
pub fn put_cstr(remote: &Remote, scratch: Scratch, off: u64, s: &str) -> Result<u64, SysError> {
    let mut b = s.as_bytes().to_vec();
    b.push(0);
    if off + b.len() as u64 > scratch.len {
        return Err(SysError::Remote {
            name: "put_cstr",
            tid: remote.tid(),
            errno: Errno::ENAMETOOLONG,
        });
    }
    remote.write_mem(scratch.addr + off, &b)?;
    Ok(scratch.addr + off)
}

/// Writes `value` to the calling thread's `/proc/thread-self/attr/NAME`.
pub fn write_attr(
    remote: &mut Remote,
    scratch: Scratch,
    name: &str,
    value: &str,
) -> Result<(), SysError> {
    let path = put_cstr(
        remote,
        scratch,
        0,
        &format!("/proc/thread-self/attr/{name}"),
    )?;
    let fd = remote.syscall(
        "open(attr)",
        libc::SYS_open,
        &[path, (libc::O_WRONLY | libc::O_CLOEXEC) as u64, 0],
    )?;
    let buf = put_cstr(remote, scratch, 256, value)?;
    let written = remote.syscall(
        "write(attr)",
        libc::SYS_write,
        &[fd, buf, value.len() as u64],
    );
    remote.syscall("close", libc::SYS_close, &[fd])?;
    written.map(drop)
}

/// Which of the permissions a context write needs the kernel denies from `from` to `to` (asked
/// again after the write failed, without auditing), and the rules that would allow them.
fn denied_permissions(from: &str, to: &str) -> (String, String) {
    use crate::check::restore::{allow_rules, AccessOracle, KernelOracle, ProcessPermission};
    let asked = [
        (ProcessPermission::Setcurrent, from),
        (ProcessPermission::Dyntransition, to),
        (ProcessPermission::Ptrace, to),
    ];
    let denied: Option<Vec<ProcessPermission>> = KernelOracle::new().ok().and_then(|oracle| {
        asked
            .iter()
            .map(|&(p, target)| oracle.decide(from, target, p).map(|d| (p, d)))
            .collect::<Result<Vec<_>, _>>()
            .ok()
            .map(|d| {
                d.into_iter()
                    .filter(|(_, d)| !d.allowed)
                    .map(|(p, _)| p)
                    .collect()
            })
    });
    let (from_type, to_type) = (context_type(from), context_type(to));
    match denied {
        Some(denied) if !denied.is_empty() => {
            let names: Vec<String> = denied
                .iter()
                .map(|p| match p {
                    ProcessPermission::Setcurrent => format!("`process {{ setcurrent }}` of {from_type} on itself"),
                    ProcessPermission::Dyntransition => format!("`process {{ dyntransition }}` from {from_type} to {to_type}"),
                    ProcessPermission::Ptrace => format!("`process {{ ptrace }}` from {from_type} (the restored process's tracer) to {to_type}"),
                })
                .collect();
            (
                format!("the policy denies {}", names.join(" and ")),
                allow_rules(from, to, &denied).join(" "),
            )
        }
        // The type rules allow it all (an MLS/MCS constraint refused the levels), or the
        // kernel could not be asked: say what the write needs.
        _ => (
            format!(
                "the engine's domain needs `process {{ setcurrent }}` on itself and `process {{ dyntransition }}` \
                 from {from_type} to {to_type} (and, when the levels differ, the MLS/MCS constraints must allow them)"
            ),
            format!("allow {from_type} {to_type}:process dyntransition;"),
        ),
    }
}

/// Moves the process (its calling thread) to `to`; `from` is its current context.
pub fn set_process_context(
    remote: &mut Remote,
    scratch: Scratch,
    pid: i32,
    from: &str,
    to: &str,
) -> Result<(), RestoreError> {
    match write_attr(remote, scratch, "current", to) {
        Ok(()) => Ok(()),
        Err(e) => {
            let refusal = match e.errno() {
                Some(errno @ Errno::EACCES) => {
                    let (why, rules) = denied_permissions(from, to);
                    SelinuxRefusal::Denied {
                        pid,
                        from: from.into(),
                        to: to.into(),
                        why,
                        rules,
                        errno,
                    }
                }
                Some(Errno::EPERM) => SelinuxRefusal::Bounded {
                    pid,
                    from: from.into(),
                    to: to.into(),
                    from_type: context_type(from),
                    to_type: context_type(to),
                },
                Some(Errno::EINVAL) => SelinuxRefusal::Invalid { pid, to: to.into() },
                _ => SelinuxRefusal::Other {
                    pid,
                    to: to.into(),
                    source: e,
                },
            };
            Err(refusal.into())
        }
    }
}
