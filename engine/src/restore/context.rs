//! The restored process's SELinux context, written by the process itself (only a task may
//! change its own `attr/current`), and the refusals of that write, named.
//!
//! **The ordering rule:** the kernel lets a multi-threaded process change its context only to
//! a context bounded by the old one (`security_bounded_transition`, the `EPERM` of
//! `selinux_setprocattr`). So each process's context is written while it is still
//! single-threaded, and only then are its threads created; they inherit it. [`ContextOrder`]
//! names the two orders; only [`ContextOrder::BeforeThreads`] is correct, the other exists as
//! a negative control for the lab.

use super::RestoreError;
use crate::image::schema::FileTable;
use crate::selinux::{self, context_type, explain_denial, AccessOracle, KernelOracle};
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
         {remedy} (see the audit log for the AVC record)"
    )]
    Denied {
        pid: i32,
        from: String,
        to: String,
        /// The permissions the kernel's access computation denies, named.
        why: String,
        /// What would grant them: `allow` rules, or the engine context a constraint allows.
        remedy: String,
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
    #[error(
        "SELinux would not let process {pid}, restored into {to:?}, use its {refusal}; the \
         engine runs in {engine:?}; nothing was restored"
    )]
    Descriptor {
        pid: i32,
        to: String,
        engine: String,
        refusal: Box<selinux::DescriptorRefusal>,
    },
    #[error(
        "SELinux would not let the engine recreate {refusal}; the engine runs in {engine:?}; \
         nothing was restored"
    )]
    Socket {
        engine: String,
        refusal: Box<selinux::SocketRefusal>,
    },
    #[error(
        "SELinux would not let the engine make again {refusal}; the engine runs in {engine:?}; \
         nothing was restored"
    )]
    Keyring {
        engine: String,
        refusal: Box<selinux::KeyringRefusal>,
    },
    #[error(
        "the dump recorded the SELinux label {label:?} on the Unix socket of inode {ino}, but \
         SELinux is off here: restore where SELinux is on; nothing was restored"
    )]
    SocketLabelWithoutSelinux { ino: u64, label: String },
    #[error("asking the kernel whether the restored processes may use their descriptors")]
    Oracle(#[source] selinux::SelinuxError),
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

/// Refuses, before anything is created, a restore that would hand a process a descriptor it
/// could not use in its restored context (see [`selinux::descriptor_refusal`]): each of
/// `processes` is (pid, the context the restore gives it, its descriptors). Nothing to check
/// when SELinux is off, or for a process the restore leaves in the engine's context.
pub fn check_descriptors(
    processes: &[(i32, &str, Vec<selinux::Descriptor>)],
) -> Result<(), SelinuxRefusal> {
    if !selinux::enabled() {
        return Ok(());
    }
    let engine = selinux::own_context().map_err(SelinuxRefusal::Oracle)?;
    let mut oracle = None;
    for (pid, to, descriptors) in processes {
        if selinux::no_write(&engine, to).is_some() || descriptors.is_empty() {
            continue;
        }
        let oracle = match &oracle {
            Some(o) => o,
            None => oracle.insert(KernelOracle::new().map_err(SelinuxRefusal::Oracle)?),
        };
        if let Some(refusal) = selinux::descriptor_refusal(oracle, &engine, to, descriptors)
            .map_err(SelinuxRefusal::Oracle)?
        {
            return Err(SelinuxRefusal::Descriptor {
                pid: *pid,
                to: (*to).to_owned(),
                engine,
                refusal: Box::new(refusal),
            });
        }
    }
    Ok(())
}

/// Refuses, before anything is created, a restore whose Unix sockets the engine could not
/// create under the labels the dump recorded (see [`selinux::socket_refusal`]), or whose
/// labels SELinux, off here, cannot give back.
pub fn check_sockets(table: &FileTable) -> Result<(), SelinuxRefusal> {
    let sockets = selinux::socket_creations(table);
    let Some(first) = sockets.first() else {
        return Ok(());
    };
    if !selinux::enabled() {
        return Err(SelinuxRefusal::SocketLabelWithoutSelinux {
            ino: first.ino,
            label: first.label.clone(),
        });
    }
    match ask(|oracle, engine| selinux::socket_refusal(oracle, engine, &sockets))? {
        Some((engine, refusal)) => Err(SelinuxRefusal::Socket {
            engine,
            refusal: Box::new(refusal),
        }),
        None => Ok(()),
    }
}

/// Asks the kernel, in the engine's context, what `question` asks; its refusal, if any, with
/// that context.
fn ask<T>(
    question: impl FnOnce(&KernelOracle, &str) -> Result<Option<T>, selinux::SelinuxError>,
) -> Result<Option<(String, T)>, SelinuxRefusal> {
    let engine = selinux::own_context().map_err(SelinuxRefusal::Oracle)?;
    let oracle = KernelOracle::new().map_err(SelinuxRefusal::Oracle)?;
    let refusal = question(&oracle, &engine).map_err(SelinuxRefusal::Oracle)?;
    Ok(refusal.map(|r| (engine, r)))
}

/// Refuses, before anything is created, a restore whose session keyrings SELinux would not
/// let the engine make again under their labels, or the restored processes use (see
/// [`selinux::keyring_refusal`]). Nothing to check when SELinux is off.
pub fn check_keyrings(keyrings: &[selinux::KeyringCreation]) -> Result<(), SelinuxRefusal> {
    if keyrings.is_empty() || !selinux::enabled() {
        return Ok(());
    }
    match ask(|oracle, engine| selinux::keyring_refusal(oracle, engine, keyrings))? {
        Some((engine, refusal)) => Err(SelinuxRefusal::Keyring {
            engine,
            refusal: Box::new(refusal),
        }),
        None => Ok(()),
    }
}

/// Writes `value` to the calling thread's `/proc/thread-self/attr/NAME`.
pub fn write_attr(
    remote: &mut Remote,
    scratch: Scratch,
    name: &str,
    value: &str,
) -> Result<(), SysError> {
    let fd = remote.open(
        "open(attr)",
        scratch,
        &format!("/proc/thread-self/attr/{name}"),
        libc::O_WRONLY | libc::O_CLOEXEC,
    )?;
    let written = remote.put_cstr(scratch, value).and_then(|buf| {
        let len = u64::try_from(value.len()).unwrap_or(u64::MAX);
        remote.syscall("write(attr)", libc::SYS_write, &[fd, buf, len])
    });
    remote.syscall("close", libc::SYS_close, &[fd])?;
    written.map(drop)
}

/// Writes the process's context (its calling thread's, before it has other threads) when
/// SELinux is on and the restore's rule ([`selinux::no_write`]) says it is written; `from` is
/// its current context, the engine's.
pub fn set_context(
    remote: &mut Remote,
    scratch: Scratch,
    pid: i32,
    from: &str,
    to: &str,
) -> Result<(), RestoreError> {
    failpoint!(
        "restore.context",
        super::error::injected(pid, "the SELinux context")
    );
    if selinux::enabled() && selinux::no_write(from, to).is_none() {
        set_process_context(remote, scratch, pid, from, to)?;
    }
    Ok(())
}

/// Moves the process (its calling thread) to `to`; `from` is its current context.
fn set_process_context(
    remote: &mut Remote,
    scratch: Scratch,
    pid: i32,
    from: &str,
    to: &str,
) -> Result<(), SelinuxRefusal> {
    let Err(e) = write_attr(remote, scratch, "current", to) else {
        return Ok(());
    };
    Err(match e.errno() {
        Some(errno @ Errno::EACCES) => {
            let oracle = KernelOracle::new().ok();
            let (why, remedy) =
                explain_denial(oracle.as_ref().map(|o| o as &dyn AccessOracle), from, to);
            SelinuxRefusal::Denied {
                pid,
                from: from.into(),
                to: to.into(),
                why,
                remedy,
                errno,
            }
        }
        Some(Errno::EPERM) => SelinuxRefusal::Bounded {
            pid,
            from: from.into(),
            to: to.into(),
            from_type: context_type(from).to_owned(),
            to_type: context_type(to).to_owned(),
        },
        Some(Errno::EINVAL) => SelinuxRefusal::Invalid { pid, to: to.into() },
        _ => SelinuxRefusal::Other {
            pid,
            to: to.into(),
            source: e,
        },
    })
}
