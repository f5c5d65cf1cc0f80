//! Whether a restored process may use the descriptors the restore recreates for it.
//!
//! The restore opens every descriptor from a task that still runs in the engine's context,
//! before it writes the process's own context (`crate::restore`): each open file description
//! therefore carries the engine's context (checked as `fd { use }` whenever another context
//! uses it), and each pipe, which takes the context of the task that creates it, is a
//! `fifo_file` labelled with the engine's context. Once the process runs in its own context,
//! the kernel checks every `read` and `write` on such a pipe against that label
//! (`selinux_file_permission` revalidates when the contexts differ). A policy can refuse it:
//! Debian's MCS constraints forbid `fifo_file { read write }` to a `mcs_constrained_type`
//! process whose level does not dominate the pipe's, so a pipe the engine made at
//! `s0-s0:c0.c1023` is unusable to a container at `s0:c1,c2`. A restore that went on would
//! hand the process a pipe it cannot use, state lost; [`refusal`] finds it first.

use std::fmt;

use super::access::fields;
use super::{context_type, AccessOracle, SelinuxError};
use crate::image::schema::{file_entry, Fd, FileTable};

/// How the restored process uses one recreated descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recreated {
    /// An end of a pipe the restore creates, read (`O_RDONLY`), written (`O_WRONLY`) or both.
    Pipe { read: bool, write: bool },
    /// Any other descriptor: a file the restore reopens, or an eventfd, timerfd, signalfd or
    /// epoll instance it creates. Those are anonymous inodes, which carry no label of their
    /// own (the kernel's shared anonymous inode is not checked per use): `fd { use }` is what
    /// applies. A memfd the restore creates is asked `fd { use }` only too: its inode takes
    /// the label a file created by the engine on the kernel's internal tmpfs gets, which this
    /// check does not compute yet.
    Other,
}

/// One descriptor of a process, as the restore recreates it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Descriptor {
    pub fd: i32,
    pub kind: Recreated,
}

/// A descriptor the restored process could not use, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DescriptorRefusal {
    pub fd: i32,
    /// What it is, and why it carries the engine's context.
    pub what: &'static str,
    /// The object class and permissions the kernel would deny.
    pub class: &'static str,
    pub permissions: Vec<&'static str>,
    /// What would grant them.
    pub remedy: String,
}

impl fmt::Display for DescriptorRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "descriptor {}, {}: SELinux would deny it `{} {{ {} }}`; {}",
            self.fd,
            self.what,
            self.class,
            self.permissions.join(" "),
            self.remedy
        )
    }
}

/// The descriptors `fds` of one process, as the restore recreates them from `table`. A
/// descriptor naming a file the table lacks is left out: the restore refuses it on its own.
pub fn recreated(fds: &[Fd], table: &FileTable) -> Vec<Descriptor> {
    fds.iter()
        .filter_map(|fd| {
            let entry = table.files.iter().find(|f| f.id == fd.file_id)?;
            let kind = match entry.kind {
                Some(file_entry::Kind::Pipe(_)) => {
                    let mode = entry.flags & libc::O_ACCMODE as u32;
                    Recreated::Pipe {
                        read: mode != libc::O_WRONLY as u32,
                        write: mode != libc::O_RDONLY as u32,
                    }
                }
                Some(
                    file_entry::Kind::Path(_)
                    | file_entry::Kind::Eventfd(_)
                    | file_entry::Kind::Timerfd(_)
                    | file_entry::Kind::Signalfd(_)
                    | file_entry::Kind::Epoll(_)
                    | file_entry::Kind::Memfd(_),
                )
                | None => Recreated::Other,
            };
            Some(Descriptor {
                fd: i32::try_from(fd.fd).unwrap_or(i32::MAX),
                kind,
            })
        })
        .collect()
}

/// The first of `descriptors` that a process restored into `target` by an engine running in
/// `engine` could not use (a denial that SELinux would enforce), or `None`. Asks the kernel
/// through `oracle`; nothing is audited.
pub fn refusal(
    oracle: &dyn AccessOracle,
    engine: &str,
    target: &str,
    descriptors: &[Descriptor],
) -> Result<Option<DescriptorRefusal>, SelinuxError> {
    for d in descriptors {
        let mut questions: Vec<(&'static str, Vec<&'static str>, &'static str)> = vec![(
            "fd",
            vec!["use"],
            "which the restore opens in the engine's context",
        )];
        if let Recreated::Pipe { read, write } = d.kind {
            let mut perms = Vec::new();
            if read {
                perms.push("read");
            }
            if write {
                perms.push("write");
            }
            if !perms.is_empty() {
                questions.push((
                    "fifo_file",
                    perms,
                    "a pipe end, in a pipe the restore creates in the engine's context",
                ));
            }
        }
        for (class, permissions, what) in questions {
            let decision = oracle.decide_on(target, engine, class, &permissions)?;
            if decision.passes() {
                continue;
            }
            let remedy = remedy(oracle, engine, target, class, &permissions);
            return Ok(Some(DescriptorRefusal {
                fd: d.fd,
                what,
                class,
                permissions,
                remedy,
            }));
        }
    }
    Ok(None)
}

/// What would let the process use an object labelled with the engine's context: the engine
/// at the process's level, if the kernel says that would do (an MLS/MCS constraint), else the
/// `allow` rule.
fn remedy(
    oracle: &dyn AccessOracle,
    engine: &str,
    target: &str,
    class: &'static str,
    permissions: &[&'static str],
) -> String {
    if let (Some([eu, er, et, el]), Some([.., tl])) = (fields(engine), fields(target)) {
        let at_level = format!("{eu}:{er}:{et}:{tl}");
        let granted = at_level != engine
            && oracle.context_is_valid(&at_level).unwrap_or(false)
            && oracle
                .decide_on(target, &at_level, class, permissions)
                .is_ok_and(|d| d.allowed);
        if granted {
            return format!(
                "no `allow` rule is missing: the type rules grant it, but an MLS/MCS constraint \
                 refuses it, as the process's level {tl} does not dominate the engine's {el}; \
                 the kernel would grant it if the engine ran at {tl} (e.g. `runcon -l {tl} \
                 crlab restore ...`)"
            );
        }
    }
    let perms = match permissions {
        [one] => (*one).to_owned(),
        many => format!("{{ {} }}", many.join(" ")),
    };
    format!(
        "a policy allowing it says `allow {} {}:{class} {perms};`",
        context_type(target),
        context_type(engine)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::selinux::examples::{CONTAINER, UNCONFINED};
    use crate::selinux::{Decision, ProcessPermission};

    /// Grants `fd { use }` always and `fifo_file` access only when the subject's level is the
    /// object's (an MCS constraint), or never (`fifo_by_level: false`, a missing rule).
    struct Policy {
        fifo_by_level: bool,
    }

    impl AccessOracle for Policy {
        fn context_is_valid(&self, _: &str) -> Result<bool, SelinuxError> {
            Ok(true)
        }

        fn decide(&self, _: &str, _: &str, _: ProcessPermission) -> Result<Decision, SelinuxError> {
            Ok(Decision {
                allowed: true,
                permissive: false,
            })
        }

        fn decide_on(
            &self,
            source: &str,
            target: &str,
            class: &'static str,
            _: &[&'static str],
        ) -> Result<Decision, SelinuxError> {
            let level = |c: &str| c.splitn(4, ':').nth(3).map(str::to_owned);
            let allowed = class == "fd" || (self.fifo_by_level && level(source) == level(target));
            Ok(Decision {
                allowed,
                permissive: false,
            })
        }
    }

    const PIPE_READ: Descriptor = Descriptor {
        fd: 5,
        kind: Recreated::Pipe {
            read: true,
            write: false,
        },
    };

    #[test]
    fn a_pipe_refused_by_a_level_constraint_names_the_level_that_would_do() {
        let files = [
            Descriptor {
                fd: 3,
                kind: Recreated::Other,
            },
            PIPE_READ,
        ];
        let r = refusal(
            &Policy {
                fifo_by_level: true,
            },
            UNCONFINED,
            CONTAINER,
            &files,
        )
        .expect("answered")
        .expect("refused");
        assert_eq!(
            (r.fd, r.class, r.permissions.clone()),
            (5, "fifo_file", vec!["read"])
        );
        let text = r.to_string();
        assert!(
            text.starts_with("descriptor 5, a pipe end")
                && text.contains("does not dominate the engine's s0-s0:c0.c1023")
                && text.contains("`runcon -l s0:c1,c2 crlab restore ...`"),
            "{text}"
        );
    }

    #[test]
    fn a_pipe_refused_by_the_type_rules_gets_the_allow_rule() {
        let r = refusal(
            &Policy {
                fifo_by_level: false,
            },
            UNCONFINED,
            CONTAINER,
            &[PIPE_READ],
        )
        .expect("answered")
        .expect("refused");
        assert_eq!(
            r.remedy,
            "a policy allowing it says `allow container_t unconfined_t:fifo_file read;`"
        );
    }

    /// Refuses `fd { use }` of every descriptor.
    struct NoFdUse;

    impl AccessOracle for NoFdUse {
        fn context_is_valid(&self, _: &str) -> Result<bool, SelinuxError> {
            Ok(true)
        }

        fn decide(&self, _: &str, _: &str, _: ProcessPermission) -> Result<Decision, SelinuxError> {
            Ok(Decision {
                allowed: true,
                permissive: false,
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
                allowed: class != "fd",
                permissive: false,
            })
        }
    }

    #[test]
    fn event_descriptors_are_asked_fd_use() {
        use crate::image::schema::{EventFd, EventPoll, FileEntry, FileTable, SignalFd, TimerFd};
        let kinds = [
            file_entry::Kind::Eventfd(EventFd::default()),
            file_entry::Kind::Timerfd(TimerFd::default()),
            file_entry::Kind::Signalfd(SignalFd::default()),
            file_entry::Kind::Epoll(EventPoll::default()),
        ];
        let table = FileTable {
            files: (1..)
                .zip(kinds)
                .map(|(id, kind)| FileEntry {
                    id,
                    flags: 2,
                    kind: Some(kind),
                })
                .collect(),
            pipes: Vec::new(),
        };
        let fds: Vec<Fd> = (1..=4)
            .map(|id| Fd {
                fd: id + 2,
                file_id: id,
                cloexec: false,
            })
            .collect();
        let recreated = recreated(&fds, &table);
        assert_eq!(recreated.len(), 4);
        for d in &recreated {
            assert_eq!(d.kind, Recreated::Other);
            let r = refusal(&NoFdUse, UNCONFINED, CONTAINER, &[*d])
                .expect("answered")
                .expect("refused");
            assert_eq!((r.fd, r.class), (d.fd, "fd"));
        }
    }

    #[test]
    fn files_and_usable_pipes_pass() {
        let policy = Policy {
            fifo_by_level: true,
        };
        let files = [Descriptor {
            fd: 3,
            kind: Recreated::Other,
        }];
        assert_eq!(
            refusal(&policy, UNCONFINED, CONTAINER, &files).ok(),
            Some(None)
        );
        assert_eq!(
            refusal(&policy, CONTAINER, CONTAINER, &[PIPE_READ]).ok(),
            Some(None)
        );
    }
}
