//! `crlab check --images-dir DIR [--lsm-profile CONTEXT]`: before a restore, asks the kernel
//! whether the calling process's SELinux context may give each process of the dump its
//! context, as `crlab restore` would.
//!
//! The restore writes `attr/current` from inside each restored process while it still runs in
//! the engine's context (the engine created it), when the target differs from that context
//! ([`selinux::no_write`]). For that write the kernel checks, in this order
//! (`selinux_setprocattr`):
//!
//! 1. `process { setcurrent }` from the engine's context to itself;
//! 2. the target is a context the loaded policy knows (else `EINVAL`);
//! 3. `process { dyntransition }` from the engine's context to the target;
//! 4. `process { ptrace }` from the process's tracer, the engine, to the target: the
//!    restored process is still traced by the engine when it writes its context.
//!
//! Each answer comes from the kernel's own access computation (`security_compute_av`, which
//! audits nothing) and context check (`/sys/fs/selinux/context`), never from a reading of the
//! policy. The bounded-transition rule for multi-threaded writers does not apply: the restore
//! writes the context while the process is single-threaded and creates its threads after.
//!
//! [`evaluate`] and [`render`] are pure: they take the kernel's decisions through
//! [`AccessOracle`], which [`KernelOracle`] implements with libselinux.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use crate::image::schema::file_entry;
use crate::image::schema::{FileTable, ProcessState, Task, ThreadCore};
use crate::image::{self, FileKind, ImageDirReader, ImageError, Trust};
use crate::selinux::{
    self, context_type, AccessOracle, Decision, DenialCause, Descriptor, DescriptorRefusal,
    KernelOracle, NoWrite, ProcessPermission, SelinuxError, SocketCreation, SocketRefusal,
};

/// Why `crlab check --images-dir` could not answer.
#[derive(Debug, thiserror::Error)]
pub enum RestoreCheckError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Selinux(#[from] SelinuxError),
}

/// One process of the dump, as the restore sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DumpedProcess {
    pub pid: u32,
    /// Its threads, the leader included.
    pub threads: usize,
    /// Its leader's context at dump time (`selinux_context` of its first core): what the
    /// restore gives the whole process. Empty when SELinux was off at dump.
    pub context: String,
    /// Some other thread was dumped in another context than the leader's; the restore gives
    /// every thread the leader's (threads inherit it).
    pub threads_differ: bool,
    /// Its descriptors, as the restore recreates them (in the engine's context).
    pub descriptors: Vec<Descriptor>,
    /// Its labelled Unix sockets, as the restore recreates them under their labels.
    pub sockets: Vec<SocketCreation>,
    /// Its session keyring as a restore in its own context makes it, when the dump recorded
    /// one with labels.
    pub keyring: Option<selinux::KeyringCreation>,
}

/// Reads the process tree and every thread core of the dump in `dir`, after
/// [`ImageDirReader::open_with`] has checked every file against the inventory (and who could
/// have written it, as `trust` says) and [`ImageDirReader::process_tree`] the tree.
pub fn read_dump(dir: &Path, trust: Trust) -> Result<Vec<DumpedProcess>, RestoreCheckError> {
    let reader = ImageDirReader::open_with(dir, trust)?;
    let pstree = reader.process_tree()?;
    let table: FileTable = reader.read_message(image::FILES, FileKind::Files)?;
    let sockets = selinux::socket_creations(&table);
    let mut out: Vec<DumpedProcess> = Vec::with_capacity(pstree.processes.len());
    for entry in &pstree.processes {
        if entry.state == ProcessState::Zombie as i32 {
            // A zombie is made again by its parent and ends at once: no context of its own.
            continue;
        }
        let mut contexts = Vec::with_capacity(entry.threads.len());
        for &tid in &entry.threads {
            let core: ThreadCore = reader.read_message(&image::core_name(tid), FileKind::Core)?;
            contexts.push(core.selinux_context);
        }
        let context = contexts.first().cloned().unwrap_or_default();
        let task: Task = reader.read_message(&image::task_name(entry.pid), FileKind::Task)?;
        // The sockets its descriptors are on.
        let held: Vec<u64> = table
            .files
            .iter()
            .filter(|f| task.fds.iter().any(|fd| fd.file_id == f.id))
            .filter_map(|f| match &f.kind {
                Some(file_entry::Kind::UnixSocket(s)) => Some(s.ino),
                Some(file_entry::Kind::InetSocket(s)) => Some(s.ino),
                _ => None,
            })
            .collect();
        let own = selinux::Relabel {
            dumped: &context,
            target: &context,
        };
        let pid = i32::try_from(entry.pid).unwrap_or(0);
        let keyring = selinux::KeyringCreation::of(pid, task.session_keyring.as_ref(), own);
        out.push(DumpedProcess {
            pid: entry.pid,
            threads: contexts.len(),
            threads_differ: contexts.iter().any(|c| *c != context),
            context,
            descriptors: selinux::recreated_descriptors(&task.fds, &table),
            sockets: sockets
                .iter()
                .filter(|s| held.contains(&s.ino))
                .cloned()
                .collect(),
            keyring,
        });
    }
    Ok(out)
}

/// The kernel's answers about the target context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetAccess {
    /// The loaded policy does not know the target context: the write fails with `EINVAL`.
    Invalid,
    Checked {
        dyntransition: Decision,
        ptrace: Decision,
    },
}

/// What the restore would do with one process's context, and what the kernel says of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContextWrite {
    None(NoWrite),
    Checked {
        setcurrent: Decision,
        target: TargetAccess,
    },
}

/// How one process would fare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Allowed,
    /// Denied by the policy, but SELinux would not enforce it (an AVC record is logged).
    AllowedPermissive,
    Refused,
}

/// One process checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcessCheck {
    pub pid: u32,
    pub threads: usize,
    pub threads_differ: bool,
    /// The context the restore would give it.
    pub target: String,
    pub write: ContextWrite,
    /// What refuses each denied permission ([`ProcessCheck::denied`]), in the same order.
    pub causes: Vec<DenialCause>,
    /// A descriptor the restored process could not use (the restore refuses it first).
    pub descriptor: Option<DescriptorRefusal>,
    /// A Unix socket of the process the engine could not recreate under its label (the
    /// restore refuses it first).
    pub socket: Option<SocketRefusal>,
    /// Its session keyring, which the engine could not make again or the process use (the
    /// restore refuses it first).
    pub keyring: Option<selinux::KeyringRefusal>,
}

impl ProcessCheck {
    /// How the process would fare.
    pub fn verdict(&self) -> Verdict {
        if self.descriptor.is_some() || self.socket.is_some() || self.keyring.is_some() {
            return Verdict::Refused;
        }
        let (setcurrent, target) = match self.write {
            ContextWrite::None(_) => return Verdict::Allowed,
            ContextWrite::Checked { setcurrent, target } => (setcurrent, target),
        };
        let mut decisions = vec![setcurrent];
        match target {
            TargetAccess::Invalid => return Verdict::Refused,
            TargetAccess::Checked {
                dyntransition,
                ptrace,
            } => decisions.extend([dyntransition, ptrace]),
        }
        if !decisions.iter().all(|d| d.passes()) {
            Verdict::Refused
        } else if decisions.iter().all(|d| d.allowed) {
            Verdict::Allowed
        } else {
            Verdict::AllowedPermissive
        }
    }

    /// The permissions the policy denies, in the kernel's order of checking.
    pub fn denied(&self) -> Vec<ProcessPermission> {
        let ContextWrite::Checked { setcurrent, target } = self.write else {
            return Vec::new();
        };
        let mut out = Vec::new();
        if !setcurrent.allowed {
            out.push(ProcessPermission::Setcurrent);
        }
        if let TargetAccess::Checked {
            dyntransition,
            ptrace,
        } = target
        {
            if !dyntransition.allowed {
                out.push(ProcessPermission::Dyntransition);
            }
            if !ptrace.allowed {
                out.push(ProcessPermission::Ptrace);
            }
        }
        out
    }
}

/// The whole check, ready to render.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreCheck {
    /// The calling process's context: the restored processes' context until they write theirs.
    pub engine_context: String,
    /// SELinux enforces (not permissive).
    pub enforcing: bool,
    /// `--lsm-profile`: the context every process is given instead of its dumped one.
    pub lsm_profile: Option<String>,
    pub processes: Vec<ProcessCheck>,
}

impl RestoreCheck {
    /// How many processes the kernel would refuse.
    pub fn refused(&self) -> usize {
        self.processes
            .iter()
            .filter(|p| p.verdict() == Verdict::Refused)
            .count()
    }
}

/// What `crlab check --images-dir` found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// SELinux is off: the restore writes no context, there is nothing to check.
    SelinuxOff {
        images_dir: PathBuf,
        processes: usize,
    },
    Checked(RestoreCheck),
}

impl Outcome {
    /// The report, as `crlab check --images-dir` prints it.
    pub fn render(&self) -> String {
        match self {
            Outcome::SelinuxOff {
                images_dir,
                processes,
            } => render_selinux_off(images_dir, *processes),
            Outcome::Checked(check) => render(check),
        }
    }

    /// How many processes the kernel would refuse (0 when SELinux is off).
    pub fn refused(&self) -> usize {
        match self {
            Outcome::SelinuxOff { .. } => 0,
            Outcome::Checked(check) => check.refused(),
        }
    }
}

/// Reads the dump in `images_dir` and, when SELinux is on, asks the kernel about every
/// process. The images are read (and checked, who could have written them included, as
/// `trust` says) first, whatever the SELinux state.
pub fn check(
    images_dir: &Path,
    lsm_profile: Option<&str>,
    trust: Trust,
) -> Result<Outcome, RestoreCheckError> {
    let dumped = read_dump(images_dir, trust)?;
    if !selinux::enabled() {
        return Ok(Outcome::SelinuxOff {
            images_dir: images_dir.to_owned(),
            processes: dumped.len(),
        });
    }
    let engine_context = selinux::own_context()?;
    let oracle = KernelOracle::new()?;
    let processes = evaluate(&engine_context, &dumped, lsm_profile, &oracle)?;
    Ok(Outcome::Checked(RestoreCheck {
        engine_context,
        enforcing: oracle.enforcing(),
        lsm_profile: lsm_profile.map(str::to_owned),
        processes,
    }))
}

/// What the restore would do with each process, with the kernel's decisions. Pure but for
/// `oracle`; each distinct question is asked once.
pub fn evaluate(
    engine_context: &str,
    dumped: &[DumpedProcess],
    lsm_profile: Option<&str>,
    oracle: &dyn AccessOracle,
) -> Result<Vec<ProcessCheck>, SelinuxError> {
    let mut valid: HashMap<String, bool> = HashMap::new();
    let mut decisions: HashMap<(String, ProcessPermission), Decision> = HashMap::new();
    let mut decide = |target: &str, permission| -> Result<Decision, SelinuxError> {
        let key = (target.to_owned(), permission);
        if let Some(d) = decisions.get(&key) {
            return Ok(*d);
        }
        let d = oracle.decide(engine_context, target, permission)?;
        decisions.insert(key, d);
        Ok(d)
    };
    let mut out = Vec::with_capacity(dumped.len());
    for p in dumped {
        let target = lsm_profile.unwrap_or(&p.context).to_owned();
        // The restore's own rule decides whether anything is written.
        let write = if let Some(no) = selinux::no_write(engine_context, &target) {
            ContextWrite::None(no)
        } else {
            let setcurrent = decide(engine_context, ProcessPermission::Setcurrent)?;
            let known = match valid.get(&target) {
                Some(v) => *v,
                None => {
                    let v = oracle.context_is_valid(&target)?;
                    valid.insert(target.clone(), v);
                    v
                }
            };
            let target = if known {
                TargetAccess::Checked {
                    dyntransition: decide(&target, ProcessPermission::Dyntransition)?,
                    ptrace: decide(&target, ProcessPermission::Ptrace)?,
                }
            } else {
                TargetAccess::Invalid
            };
            ContextWrite::Checked { setcurrent, target }
        };
        let keyring = match &p.keyring {
            Some(k) => selinux::keyring_refusal(oracle, engine_context, &[k.moved_to(&target)])?,
            None => None,
        };
        let mut check = ProcessCheck {
            pid: p.pid,
            threads: p.threads,
            threads_differ: p.threads_differ,
            target,
            write,
            causes: Vec::new(),
            descriptor: None,
            socket: selinux::socket_refusal(oracle, engine_context, &p.sockets)?,
            keyring,
        };
        if matches!(check.write, ContextWrite::Checked { .. }) {
            check.descriptor =
                selinux::descriptor_refusal(oracle, engine_context, &check.target, &p.descriptors)?;
        }
        check.causes = check
            .denied()
            .into_iter()
            .map(|perm| {
                let to = if perm == ProcessPermission::Setcurrent {
                    engine_context
                } else {
                    check.target.as_str()
                };
                selinux::denial_cause(oracle, engine_context, to, perm)
            })
            .collect();
        out.push(check);
    }
    Ok(out)
}

fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// What `crlab check --images-dir` prints when SELinux is off.
pub fn render_selinux_off(images_dir: &Path, processes: usize) -> String {
    format!(
        "SELinux is off here: nothing to check (the restore writes no SELinux context); {} in {}\n",
        plural(processes, "process", "processes"),
        images_dir.display()
    )
}

/// One line of the table: pid, threads, target, the three decisions, the verdict.
fn table_row(p: &ProcessCheck) -> [String; 7] {
    let word = |d: Decision| if d.allowed { "allowed" } else { "denied" };
    let (setcurrent, dyntransition, ptrace) = match p.write {
        ContextWrite::None(_) => ("-", "-", "-"),
        ContextWrite::Checked { setcurrent, target } => match target {
            TargetAccess::Invalid => (word(setcurrent), "-", "-"),
            TargetAccess::Checked {
                dyntransition,
                ptrace,
            } => (word(setcurrent), word(dyntransition), word(ptrace)),
        },
    };
    let verdict = match (p.verdict(), p.write) {
        (Verdict::Allowed, ContextWrite::None(NoWrite::SameContext)) => {
            "allowed: same context, nothing to write"
        }
        (Verdict::Allowed, ContextWrite::None(NoWrite::Empty)) => "allowed: no context to write",
        (Verdict::Allowed, _) => "allowed",
        (Verdict::AllowedPermissive, _) => "allowed: permissive",
        (
            Verdict::Refused,
            ContextWrite::Checked {
                target: TargetAccess::Invalid,
                ..
            },
        ) => "refused: invalid context",
        (Verdict::Refused, _) => "refused",
    };
    let target = if p.target.is_empty() {
        "-".to_owned()
    } else {
        p.target.clone()
    };
    [
        p.pid.to_string(),
        p.threads.to_string(),
        target,
        setcurrent.to_owned(),
        dyntransition.to_owned(),
        ptrace.to_owned(),
        verdict.to_owned(),
    ]
}

/// The report: the engine's context, a table with one line per process, notes and the
/// reasons of every refusal, then one summary line starting with `restore allowed` or
/// `restore refused:`.
pub fn render(check: &RestoreCheck) -> String {
    let engine = check.engine_context.as_str();
    let mut out = String::new();
    let mode = if check.enforcing {
        "enforcing"
    } else {
        "permissive"
    };
    let _ = writeln!(out, "engine context: {engine} (SELinux {mode})");
    match &check.lsm_profile {
        Some(profile) => {
            let _ = writeln!(
                out,
                "target context: {profile} for every process (--lsm-profile)"
            );
        }
        None => out.push_str("target context: each process's own, as dumped\n"),
    }

    let rows: Vec<[String; 7]> = check.processes.iter().map(table_row).collect();
    let header = [
        "PID",
        "THREADS",
        "TARGET CONTEXT",
        "SETCURRENT",
        "DYNTRANSITION",
        "PTRACE",
        "VERDICT",
    ];
    let mut widths = header.map(str::len);
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.len());
        }
    }
    let mut line = |cells: [&str; 7]| {
        let mut text = String::new();
        for (i, cell) in cells.iter().enumerate() {
            let _ = write!(text, "{cell:<w$}  ", w = widths[i]);
        }
        out.push_str(text.trim_end());
        out.push('\n');
    };
    line(header);
    for row in &rows {
        line(row.each_ref().map(String::as_str));
    }

    if check.processes.iter().any(|p| p.threads > 1) {
        out.push_str(
            "note: the restore writes each process's context while it is single-threaded and \
             creates its threads after (they inherit it), so the kernel's bounded-transition \
             rule for multi-threaded processes does not apply\n",
        );
    }
    for p in check.processes.iter().filter(|p| p.threads_differ) {
        let _ = writeln!(
            out,
            "note: threads of process {} were dumped in other contexts than its leader's; the \
             restore gives all of them {:?}",
            p.pid, p.target
        );
    }
    for p in &check.processes {
        for reason in reasons(engine, p) {
            out.push_str(&reason);
            out.push('\n');
        }
    }

    let total = check.processes.len();
    let refused = check.refused();
    let permissive = check
        .processes
        .iter()
        .any(|p| p.verdict() == Verdict::AllowedPermissive);
    let all = plural(total, "process", "processes");
    if refused > 0 {
        let _ = writeln!(
            out,
            "restore refused: SELinux would refuse {refused} of the dump's {all} (see above)"
        );
    } else if permissive {
        let _ = writeln!(
            out,
            "restore allowed (permissive): SELinux would let {engine} restore the dump's {all}, \
             logging the denials above"
        );
    } else {
        let _ = writeln!(
            out,
            "restore allowed: SELinux lets {engine} restore the dump's {all}"
        );
    }
    out
}

/// Why a process would be refused (or only let through by permissive mode), in the words of
/// the restore's own errors (`SelinuxRefusal`).
fn reasons(engine: &str, p: &ProcessCheck) -> Vec<String> {
    let (pid, to) = (p.pid, p.target.as_str());
    let mut out = Vec::new();
    // Whether or not its context is written: the engine makes its sockets either way.
    if let Some(refusal) = &p.socket {
        out.push(format!(
            "SELinux would not let the engine recreate, for process {pid}, {refusal}"
        ));
    }
    if let Some(refusal) = &p.keyring {
        out.push(format!(
            "SELinux would not let the engine make again {refusal}"
        ));
    }
    let ContextWrite::Checked { setcurrent, target } = p.write else {
        return out;
    };
    let denied = p.denied();
    if !denied.is_empty() {
        let (from_type, to_type) = (context_type(engine), context_type(to));
        let list = denied
            .iter()
            .map(|d| format!("`process {{ {} }}`", d.name()))
            .collect::<Vec<_>>()
            .join(" and ");
        let causes: Vec<(ProcessPermission, DenialCause)> = denied
            .iter()
            .copied()
            .zip(
                p.causes
                    .iter()
                    .copied()
                    .chain(std::iter::repeat(DenialCause::TypeRules)),
            )
            .collect();
        let remedy = selinux::remedy(engine, to, &causes);
        let needs = format!(
            "the engine's domain needs `process {{ setcurrent }}` on itself and `process {{ \
             dyntransition }}` from {from_type} to {to_type}, and as the process's tracer \
             `process {{ ptrace }}` from {from_type} to {to_type}; the policy denies {list}; \
             {remedy}"
        );
        let enforced = !setcurrent.passes()
            || matches!(target, TargetAccess::Checked { dyntransition, ptrace }
                if !dyntransition.passes() || !ptrace.passes());
        if enforced {
            out.push(format!(
                "SELinux would refuse to move process {pid} from {engine:?} to {to:?}: {needs}"
            ));
        } else {
            out.push(format!(
                "SELinux would not enforce the denial (permissive): it would move process {pid} \
                 from {engine:?} to {to:?} and log an AVC record; enforcing, it would refuse: \
                 {needs}"
            ));
        }
    }
    if let Some(refusal) = &p.descriptor {
        out.push(format!(
            "SELinux would not let process {pid}, restored into {to:?}, use its {refusal}"
        ));
    }
    if target == TargetAccess::Invalid {
        out.push(format!(
            "SELinux does not know the context {to:?} (EINVAL) for process {pid}: is the policy \
             module that declares it loaded?"
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    use crate::selinux::examples::{CONTAINER, CONTAINER2, RUNTIME, SERVICE, UNCONFINED};

    const ALLOW: Decision = Decision {
        allowed: true,
        permissive: false,
    };
    const DENY: Decision = Decision {
        allowed: false,
        permissive: false,
    };

    /// A policy given as a list of granted (source type, target type, permission), with the
    /// contexts it knows; it counts the questions.
    struct FakePolicy {
        grants: Vec<(&'static str, &'static str, &'static str)>,
        known: Vec<&'static str>,
        permissive: bool,
        asked: RefCell<Vec<String>>,
        /// The one object class `decide_on` denies, if any.
        denied_class: Option<&'static str>,
    }

    impl FakePolicy {
        fn new(grants: &[(&'static str, &'static str, &'static str)]) -> FakePolicy {
            FakePolicy {
                grants: grants.to_vec(),
                known: vec![UNCONFINED, SERVICE, RUNTIME, CONTAINER, CONTAINER2],
                permissive: false,
                asked: RefCell::new(Vec::new()),
                denied_class: None,
            }
        }
    }

    impl AccessOracle for FakePolicy {
        fn context_is_valid(&self, context: &str) -> Result<bool, SelinuxError> {
            self.asked.borrow_mut().push(format!("valid {context}"));
            Ok(self.known.contains(&context))
        }

        fn decide(
            &self,
            source: &str,
            target: &str,
            permission: ProcessPermission,
        ) -> Result<Decision, SelinuxError> {
            let (s, t) = (context_type(source), context_type(target));
            self.asked
                .borrow_mut()
                .push(format!("{s} {t} {}", permission.name()));
            let allowed = self.grants.contains(&(s, t, permission.name()));
            Ok(Decision {
                allowed,
                permissive: self.permissive,
            })
        }

        fn decide_on(
            &self,
            _: &str,
            _: &str,
            class: &'static str,
            _: &[&'static str],
        ) -> Result<Decision, SelinuxError> {
            Ok(Decision {
                allowed: self.denied_class != Some(class),
                permissive: false,
            })
        }
    }

    #[test]
    fn a_socket_the_engine_could_not_recreate_refuses_its_process() {
        let mut policy = FakePolicy::new(&[]);
        policy.denied_class = Some("unix_stream_socket");
        let mut p = dumped(10, 1, UNCONFINED);
        p.sockets = vec![SocketCreation {
            ino: 42,
            class: "unix_stream_socket",
            label: CONTAINER.into(),
            created: true,
            permissions: vec!["create"],
            file_label: String::new(),
            connects_to: None,
            sends_to: None,
        }];
        let c = checked(UNCONFINED, &[p, dumped(11, 1, UNCONFINED)], None, &policy);
        assert_eq!(c.processes[0].verdict(), Verdict::Refused);
        assert_eq!(c.processes[1].verdict(), Verdict::Allowed);
        assert_eq!(c.refused(), 1);
        let text = reasons(UNCONFINED, &c.processes[0]).join("\n");
        assert!(
            text.contains("recreate, for process 10, the Unix socket of inode 42")
                && text.contains("allow unconfined_t container_t:unix_stream_socket"),
            "{text}"
        );
    }

    #[test]
    fn a_keyring_the_engine_could_not_label_refuses_its_process() {
        let mut policy = FakePolicy::new(&[]);
        policy.denied_class = Some("key");
        let mut p = dumped(10, 1, UNCONFINED);
        p.keyring = Some(selinux::KeyringCreation {
            pid: 10,
            serial: 77,
            label: CONTAINER.into(),
            key_labels: Vec::new(),
            target: UNCONFINED.into(),
        });
        let c = checked(UNCONFINED, &[p, dumped(11, 1, UNCONFINED)], None, &policy);
        assert_eq!(c.processes[0].verdict(), Verdict::Refused);
        assert_eq!(c.processes[1].verdict(), Verdict::Allowed);
        let text = reasons(UNCONFINED, &c.processes[0]).join("\n");
        assert!(
            text.contains("make again the session keyring 77 of process 10")
                && text.contains("allow unconfined_t container_t:key"),
            "{text}"
        );
    }

    fn dumped(pid: u32, threads: usize, context: &str) -> DumpedProcess {
        DumpedProcess {
            pid,
            threads,
            context: context.to_owned(),
            threads_differ: false,
            descriptors: Vec::new(),
            sockets: Vec::new(),
            keyring: None,
        }
    }

    fn checked(
        engine: &str,
        procs: &[DumpedProcess],
        lsm_profile: Option<&str>,
        policy: &FakePolicy,
    ) -> RestoreCheck {
        RestoreCheck {
            engine_context: engine.to_owned(),
            enforcing: !policy.permissive,
            lsm_profile: lsm_profile.map(str::to_owned),
            processes: evaluate(engine, procs, lsm_profile, policy).expect("the fake answers"),
        }
    }

    #[test]
    fn the_restores_rule_decides_what_is_written() {
        let policy = FakePolicy::new(&[]);
        let procs = [dumped(10, 1, UNCONFINED), dumped(11, 1, "")];
        let c = checked(UNCONFINED, &procs, None, &policy);
        assert_eq!(
            c.processes[0].write,
            ContextWrite::None(NoWrite::SameContext)
        );
        assert_eq!(c.processes[1].write, ContextWrite::None(NoWrite::Empty));
        assert_eq!(c.refused(), 0);
        assert!(
            policy.asked.borrow().is_empty(),
            "nothing is written, so nothing is asked: {:?}",
            policy.asked.borrow()
        );
        // An empty --lsm-profile writes nothing either, as in the restore.
        let c = checked(UNCONFINED, &[dumped(10, 1, SERVICE)], Some(""), &policy);
        assert_eq!(c.processes[0].write, ContextWrite::None(NoWrite::Empty));
    }

    #[test]
    fn each_question_is_asked_once() {
        let policy = FakePolicy::new(&[
            ("container_runtime_t", "container_runtime_t", "setcurrent"),
            ("container_runtime_t", "container_t", "dyntransition"),
            ("container_runtime_t", "container_t", "ptrace"),
        ]);
        let procs = [
            dumped(10, 17, CONTAINER),
            dumped(11, 1, CONTAINER),
            dumped(12, 1, CONTAINER2),
        ];
        let c = checked(RUNTIME, &procs, None, &policy);
        assert_eq!(c.refused(), 0);
        assert!(c.processes.iter().all(|p| p.verdict() == Verdict::Allowed));
        assert_eq!(
            *policy.asked.borrow(),
            [
                "container_runtime_t container_runtime_t setcurrent",
                &format!("valid {CONTAINER}"),
                "container_runtime_t container_t dyntransition",
                "container_runtime_t container_t ptrace",
                &format!("valid {CONTAINER2}"),
                "container_runtime_t container_t dyntransition",
                "container_runtime_t container_t ptrace",
            ]
        );
    }

    #[test]
    fn verdicts_follow_the_decisions() {
        let p = |write| ProcessCheck {
            pid: 1,
            threads: 1,
            threads_differ: false,
            target: SERVICE.into(),
            write,
            causes: Vec::new(),
            descriptor: None,
            socket: None,
            keyring: None,
        };
        let checked = |s, d, t| ContextWrite::Checked {
            setcurrent: s,
            target: TargetAccess::Checked {
                dyntransition: d,
                ptrace: t,
            },
        };
        let lenient = Decision {
            allowed: false,
            permissive: true,
        };
        assert_eq!(p(checked(ALLOW, ALLOW, ALLOW)).verdict(), Verdict::Allowed);
        assert_eq!(p(checked(DENY, ALLOW, ALLOW)).verdict(), Verdict::Refused);
        assert_eq!(p(checked(ALLOW, DENY, ALLOW)).verdict(), Verdict::Refused);
        assert_eq!(p(checked(ALLOW, ALLOW, DENY)).verdict(), Verdict::Refused);
        assert_eq!(
            p(checked(ALLOW, lenient, ALLOW)).verdict(),
            Verdict::AllowedPermissive
        );
        let invalid = ContextWrite::Checked {
            setcurrent: ALLOW,
            target: TargetAccess::Invalid,
        };
        assert_eq!(p(invalid).verdict(), Verdict::Refused);
        assert_eq!(
            p(checked(DENY, ALLOW, DENY)).denied(),
            [ProcessPermission::Setcurrent, ProcessPermission::Ptrace]
        );
    }

    /// The catalog's systemd-service row: `unconfined_t` may not dyntransition to
    /// `unconfined_service_t`; a child already in the engine's context; a context no module
    /// declares.
    #[test]
    fn render_a_refused_restore() {
        let policy = FakePolicy::new(&[
            ("unconfined_t", "unconfined_t", "setcurrent"),
            ("unconfined_t", "unconfined_service_t", "ptrace"),
        ]);
        let procs = [
            dumped(4242, 3, SERVICE),
            dumped(4250, 1, UNCONFINED),
            dumped(4251, 1, "system_u:system_r:not_loaded_t:s0"),
        ];
        let c = checked(UNCONFINED, &procs, None, &policy);
        assert_eq!(c.refused(), 2);
        insta::assert_snapshot!(render(&c));
    }

    #[test]
    fn render_an_allowed_restore_into_a_new_context() {
        let policy = FakePolicy::new(&[
            ("container_runtime_t", "container_runtime_t", "setcurrent"),
            ("container_runtime_t", "container_t", "dyntransition"),
            ("container_runtime_t", "container_t", "ptrace"),
        ]);
        let mut root = dumped(300, 17, CONTAINER);
        root.threads_differ = true;
        let c = checked(RUNTIME, &[root], Some(CONTAINER2), &policy);
        assert_eq!(c.refused(), 0);
        insta::assert_snapshot!(render(&c));
    }

    #[test]
    fn render_a_permissive_restore() {
        let mut policy = FakePolicy::new(&[
            ("unconfined_t", "unconfined_t", "setcurrent"),
            ("unconfined_t", "unconfined_service_t", "ptrace"),
        ]);
        policy.permissive = true;
        let c = checked(UNCONFINED, &[dumped(77, 1, SERVICE)], None, &policy);
        assert_eq!(c.refused(), 0);
        insta::assert_snapshot!(render(&c));
    }

    #[test]
    fn render_when_selinux_is_off() {
        let off = Outcome::SelinuxOff {
            images_dir: "/tmp/img".into(),
            processes: 1,
        };
        assert_eq!(off.refused(), 0);
        assert_eq!(
            off.render(),
            "SELinux is off here: nothing to check (the restore writes no SELinux context); \
             1 process in /tmp/img\n"
        );
    }
}
