//! Failpoints: a fault injected at one chosen step of a dump or a restore, for the engine's own
//! tests, which check that every step's failure is undone (issue 11, "a fault at every step").
//!
//! [`ALL`] is the one list of them. A failpoint is compiled in only with the `failpoints`
//! cargo feature, which is off by default and which the engine's tests turn on (the crate is
//! its own dev-dependency), so a normal or release `crlab` has none: there the macro expands
//! to nothing. In a test build, `CRLAB_FAILPOINT=NAME` in the environment of `crlab` arms
//! failpoint NAME: the first time the engine reaches it (`NAME@N`: the N-th time), the step
//! fails through its real error path, as if its system call or read had failed, with an I/O
//! error that says `injected failure at NAME`, so a test can tell the failpoint was reached.
//! Each reach is logged at trace level (`CRLAB_LOG=crlab::failpoint=trace`: `failpoint NAME
//! reached`), which is how a test learns how often a run reaches each one.
//!
//! Both directions are checked: a name given to `failpoint!` that is not in [`ALL`] does not
//! compile (feature on), and the failpoint test arms every name of [`ALL`] and fails when the
//! engine does not report it, so a failpoint on a path the engine never takes fails too.

/// The environment variable that arms a failpoint (test builds only).
pub const ENV: &str = "CRLAB_FAILPOINT";

/// Whether this build has failpoints (the `failpoints` feature).
pub const ENABLED: bool = cfg!(feature = "failpoints");

/// One failpoint: its name and the step it fails.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Failpoint {
    /// `dump.*` or `restore.*`: which command reaches it.
    pub name: &'static str,
    /// What fails there, in words.
    pub step: &'static str,
}

const fn fp(name: &'static str, step: &'static str) -> Failpoint {
    Failpoint { name, step }
}

/// Every failpoint, in the order a dump or a restore reaches them.
pub const ALL: &[Failpoint] = &[
    // Dump.
    fp(
        "dump.seize",
        "seizing a thread after the previous one stopped",
    ),
    fp("dump.seize.stop", "waiting for a seized thread to stop"),
    fp(
        "dump.proc.stat",
        "reading /proc/PID/stat of a seized process",
    ),
    fp("dump.proc.fds", "listing /proc/PID/fd"),
    fp("dump.proc.fd", "reading a descriptor's link and fdinfo"),
    fp(
        "dump.sock_diag",
        "asking sock_diag about a socket of the tree",
    ),
    fp("dump.proc.maps", "reading /proc/PID/maps"),
    fp("dump.proc.status", "reading /proc/PID/status"),
    fp("dump.proc.cgroup", "reading /proc/PID/cgroup"),
    fp(
        "dump.proc.mem",
        "reading /proc/PID/mem for a syscall instruction",
    ),
    fp("dump.remote.mmap", "the remote mmap of the scratch area"),
    fp(
        "dump.remote.keyctl.keyctl_get_keyring_id",
        "a remote keyctl(KEYCTL_GET_KEYRING_ID) of a thread, process or session keyring",
    ),
    fp(
        "dump.remote.keyctl.keyctl_describe",
        "the remote keyctl(KEYCTL_DESCRIBE) of a keyring or key",
    ),
    fp(
        "dump.remote.keyctl.keyctl_get_security",
        "the remote keyctl(KEYCTL_GET_SECURITY) of a session keyring or key",
    ),
    fp(
        "dump.remote.keyctl.keyctl_read",
        "the remote keyctl(KEYCTL_READ) of a session keyring or key",
    ),
    fp("dump.remote.brk", "the remote brk"),
    fp(
        "dump.remote.prctl.pr_get_dumpable",
        "the remote prctl(PR_GET_DUMPABLE)",
    ),
    fp("dump.remote.rt_sigaction", "a remote rt_sigaction"),
    fp(
        "dump.transport.listen",
        "the engine's end of the transport socket",
    ),
    fp("dump.remote.socket", "the remote socket of the transport"),
    fp("dump.remote.connect", "the remote connect of the transport"),
    fp(
        "dump.transport.accept",
        "accepting the transport connection",
    ),
    fp(
        "dump.remote.write_mem",
        "writing the task's memory (the transport's message)",
    ),
    fp(
        "dump.remote.sendmsg",
        "the remote sendmsg of the descriptors",
    ),
    fp("dump.transport.recv", "receiving the descriptors"),
    fp("dump.remote.close", "the remote close of the transport"),
    fp(
        "dump.thread.ptrace",
        "reading a thread's FPU state through ptrace",
    ),
    fp("dump.remote.sigaltstack", "a remote sigaltstack"),
    fp(
        "dump.remote.read_mem",
        "reading the task's memory (a remote call's result)",
    ),
    fp(
        "dump.remote.prctl.pr_get_tid_address",
        "a remote prctl(PR_GET_TID_ADDRESS)",
    ),
    fp(
        "dump.remote.prctl.pr_get_pdeathsig",
        "a remote prctl(PR_GET_PDEATHSIG)",
    ),
    fp(
        "dump.remote.prctl.pr_get_timerslack",
        "a remote prctl(PR_GET_TIMERSLACK)",
    ),
    fp(
        "dump.remote.prctl.pr_mce_kill_get",
        "a remote prctl(PR_MCE_KILL_GET)",
    ),
    fp("dump.remote.prctl.pr_get_tsc", "a remote prctl(PR_GET_TSC)"),
    fp(
        "dump.remote.prctl.pr_get_no_new_privs",
        "a remote prctl(PR_GET_NO_NEW_PRIVS)",
    ),
    fp(
        "dump.remote.prctl.pr_get_securebits",
        "a remote prctl(PR_GET_SECUREBITS)",
    ),
    fp(
        "dump.remote.prctl.pr_get_mdwe",
        "the remote prctl(PR_GET_MDWE) (a refusal means: not set, or no MDWE here)",
    ),
    fp(
        "dump.remote.prctl.pr_get_child_subreaper",
        "the remote prctl(PR_GET_CHILD_SUBREAPER)",
    ),
    fp(
        "dump.remote.prctl.pr_get_thp_disable",
        "the remote prctl(PR_GET_THP_DISABLE)",
    ),
    fp("dump.remote.getitimer", "a remote getitimer"),
    fp(
        "dump.remote.prctl.pr_timer_create_restore_ids",
        "the remote prctl(PR_TIMER_CREATE_RESTORE_IDS) of a process with POSIX timers",
    ),
    fp(
        "dump.remote.timer_gettime",
        "a remote timer_gettime of a POSIX timer",
    ),
    fp(
        "dump.remote.membarrier",
        "a remote membarrier query (a refusal means: not registered)",
    ),
    fp("dump.image.pages", "creating a pages image"),
    fp("dump.proc.pagemap", "reading /proc/PID/pagemap"),
    fp(
        "dump.pages",
        "copying pages out of the task (process_vm_readv)",
    ),
    fp("dump.image.pages.write", "writing pages to the pages image"),
    fp("dump.proc.cwd", "reading /proc/PID/cwd"),
    fp("dump.proc.auxv", "reading /proc/PID/auxv"),
    fp("dump.proc.exe", "reading /proc/PID/exe"),
    fp("dump.image.task", "writing a task image"),
    fp("dump.image.mm", "writing an mm image"),
    fp("dump.image.core", "writing a thread's core image"),
    fp("dump.image.pstree", "writing the process tree image"),
    fp("dump.image.files", "writing the open files image"),
    fp(
        "dump.commit.fsync",
        "fsyncing the images before the inventory",
    ),
    fp("dump.commit.inventory", "writing the inventory"),
    fp("dump.commit.rename", "renaming the inventory into place"),
    fp("dump.commit.swap", "moving a staged dump into place"),
    fp(
        "dump.remote.munmap",
        "the remote munmap of the scratch area (the undo)",
    ),
    // Restore.
    fp("restore.task.root", "creating the root task"),
    fp(
        "restore.cgroup",
        "moving a created process into its cgroups",
    ),
    fp("restore.shed", "dropping what the root keeps of the engine"),
    fp("restore.map.trampoline", "mapping the trampoline"),
    fp("restore.map.clear", "clearing the inherited address space"),
    fp("restore.files.open", "opening the tree's files in the root"),
    fp(
        "restore.files.socket",
        "creating a Unix socket or pair in the process that made it",
    ),
    fp("restore.session", "making a session or process group"),
    fp("restore.task.process", "creating a child process"),
    fp("restore.zombie", "ending a zombie as it ended"),
    fp("restore.map.vmas", "mapping an image mapping"),
    fp("restore.fill", "filling pages (process_vm_writev)"),
    fp(
        "restore.map.mm_fields",
        "setting the mm fields (PR_SET_MM_MAP)",
    ),
    fp(
        "restore.files.install",
        "installing a process's descriptors",
    ),
    fp(
        "restore.state",
        "process-wide state: handlers, cwd, umask, personality",
    ),
    fp("restore.context", "writing a process's SELinux context"),
    fp(
        "restore.keyring",
        "making or joining a process's session keyring",
    ),
    fp("restore.task.thread", "creating a thread"),
    fp("restore.thread", "a thread's own state"),
    fp("restore.signals", "queueing pending signals"),
    fp("restore.rlimits", "setting resource limits"),
    fp("restore.creds", "setting a thread's credentials"),
    fp("restore.dumpable", "setting the dumpable flag"),
    fp("restore.map.unmap_trampoline", "unmapping the trampoline"),
    fp("restore.regs", "setting a thread's final registers"),
    fp(
        "restore.options",
        "dropping PTRACE_O_EXITKILL before the detach",
    ),
    fp(
        "restore.stop",
        "queueing the group stop of a process dumped stopped",
    ),
    fp(
        "restore.detach",
        "detaching a task after another was detached",
    ),
];

/// Whether `name` is in [`ALL`] (usable in a constant, which is how `failpoint!` checks it).
pub const fn is_known(name: &str) -> bool {
    let mut i = 0;
    while i < ALL.len() {
        if str_eq(ALL[i].name, name) {
            return true;
        }
        i += 1;
    }
    false
}

const fn str_eq(a: &str, b: &str) -> bool {
    let (a, b) = (a.as_bytes(), b.as_bytes());
    if a.len() != b.len() {
        return false;
    }
    let mut i = 0;
    while i < a.len() {
        if a[i] != b[i] {
            return false;
        }
        i += 1;
    }
    true
}

/// The failure failpoint `name` injects, if it is the armed one and this is the reach it is
/// armed for.
#[cfg(feature = "failpoints")]
pub fn injected(name: &str) -> Option<std::io::Error> {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static REACHED: AtomicU64 = AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| {
        let spec = std::env::var(ENV).ok()?;
        Some(match spec.split_once('@') {
            // A count that is not a number arms nothing the engine reaches.
            Some((name, at)) => (name.to_owned(), at.parse().unwrap_or(0)),
            None => (spec, 1),
        })
    });
    tracing::trace!("failpoint {name} reached");
    if !is_known(name) {
        // A failpoint named at run time (a remote call's) that the list lacks: every test
        // build fails on it, so the list cannot fall behind the code.
        return Some(std::io::Error::other(format!(
            "failpoint {name} is missing from crlab::failpoint::ALL"
        )));
    }
    let (_, at) = armed.as_ref().filter(|(armed, _)| armed == name)?;
    if REACHED.fetch_add(1, Ordering::SeqCst) + 1 != *at {
        return None;
    }
    tracing::warn!(failpoint = name, reach = *at, "injecting a failure");
    Some(std::io::Error::other(format!("injected failure at {name}")))
}

/// `failpoint!("NAME", |e: std::io::Error| ERROR)`: when failpoint NAME is armed (test builds
/// only, see the module), the enclosing function returns `Err(ERROR.into())`, ERROR being the
/// step's own error built around the injected `std::io::Error`. Without the `failpoints`
/// feature it expands to nothing.
macro_rules! failpoint {
    ($name:literal, $err:expr) => {
        #[cfg(feature = "failpoints")]
        {
            const _: () = assert!(
                $crate::failpoint::is_known($name),
                concat!("failpoint ", $name, " is not in crlab::failpoint::ALL")
            );
            if let Some(injected) = $crate::failpoint::injected($name) {
                #[allow(clippy::redundant_closure_call)]
                return Err(($err)(injected).into());
            }
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_say_which_command_reaches_them() {
        for (i, f) in ALL.iter().enumerate() {
            assert!(
                f.name.starts_with("dump.") || f.name.starts_with("restore."),
                "{}",
                f.name
            );
            assert!(
                f.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._".contains(&b)),
                "{}",
                f.name
            );
            assert!(
                ALL[..i].iter().all(|g| g.name != f.name),
                "{} twice",
                f.name
            );
            assert!(is_known(f.name));
        }
        assert!(!is_known("dump.nothing"));
        assert!(!is_known("dump.seiz"));
    }
}
