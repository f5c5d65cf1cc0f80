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
use crate::image::schema::{file_entry, Fd, FileTable, InetSocket, UnixSocket, UnixSocketType};

/// How the restored process uses one recreated descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recreated {
    /// An end of a pipe the restore creates, read (`O_RDONLY`), written (`O_WRONLY`) or both.
    Pipe { read: bool, write: bool },
    /// Any other descriptor: a file the restore reopens, or an eventfd, timerfd, signalfd or
    /// epoll instance it creates. Those are anonymous inodes, which carry no label of their
    /// own (the kernel's shared anonymous inode is not checked per use): `fd { use }` is what
    /// applies. A memfd the restore creates is asked `fd { use }` only too: its inode is given
    /// the label it had (`restore::files`, `fsetfilecon` by the engine), so the process uses
    /// it as before; a relabel the policy denies fails the restore before the process runs.
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
                    | file_entry::Kind::Memfd(_)
                    | file_entry::Kind::UnixSocket(_)
                    | file_entry::Kind::InetSocket(_)
                    | file_entry::Kind::Fifo(_)
                    | file_entry::Kind::Deleted(_)
                    | file_entry::Kind::Inotify(_),
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

/// One Unix socket the restore creates in the root, still in the engine's context, under the
/// label the dump recorded (`attr/sockcreate`), then fills and configures from the engine.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketCreation {
    /// Its inode at dump, which names it.
    pub ino: u64,
    /// `unix_stream_socket` (stream and seqpacket) or `unix_dgram_socket`.
    pub class: &'static str,
    /// The label recorded at dump.
    pub label: String,
    /// Whether the restore creates it under its label (`attr/sockcreate`); an accepted end
    /// takes its listener's from `accept`.
    pub created: bool,
    /// What the restore does with it beyond `getopt setopt read write`: `create`, `bind`,
    /// `listen`, `accept`, `connect`, `shutdown`.
    pub permissions: Vec<&'static str>,
    /// The label of the socket file it binds (`attr/fscreate`), empty for none.
    pub file_label: String,
    /// A client's: the label of the listener it connects to.
    pub connects_to: Option<String>,
    /// A datagram socket connected to a bound one alone: that one's label, which its
    /// `connect` asks `sendto` on, and the label of its socket file (empty for an abstract
    /// name), which the engine's `connect` by path asks `write` on.
    pub sends_to: Option<(String, String)>,
}

/// The sockets of `table` that carry a label, as the restore creates them.
pub fn socket_creations(table: &FileTable) -> Vec<SocketCreation> {
    let sockets: std::collections::HashMap<u64, &UnixSocket> = table
        .files
        .iter()
        .filter_map(|f| match &f.kind {
            Some(file_entry::Kind::UnixSocket(s)) => Some((s.ino, s)),
            _ => None,
        })
        .collect();
    let mut out: Vec<SocketCreation> = sockets
        .values()
        .filter(|s| !s.label.is_empty())
        .map(|s| {
            let peer = sockets.get(&s.peer);
            let client_of = peer
                .filter(|p| p.accepted_from != 0)
                .and_then(|p| sockets.get(&p.accepted_from));
            let bound = !s.name.is_empty() && s.accepted_from == 0;
            let mut permissions = Vec::new();
            if s.accepted_from == 0 {
                permissions.push("create");
            }
            if bound {
                permissions.push("bind");
            }
            if s.listening {
                permissions.extend(["listen", "accept"]);
            }
            let sends_to = sockets.get(&s.connected_to);
            if client_of.is_some() || sends_to.is_some() {
                permissions.push("connect");
            }
            if s.shutdown != 0 {
                permissions.push("shutdown");
            }
            SocketCreation {
                ino: s.ino,
                class: match UnixSocketType::try_from(s.r#type) {
                    Ok(UnixSocketType::Dgram) => "unix_dgram_socket",
                    _ => "unix_stream_socket",
                },
                label: s.label.clone(),
                created: s.accepted_from == 0,
                permissions,
                file_label: if bound && s.name.first() != Some(&0) {
                    s.file_label.clone()
                } else {
                    String::new()
                },
                connects_to: client_of.map(|l| l.label.clone()),
                sends_to: sends_to.map(|t| {
                    let file = if t.name.first() == Some(&0) {
                        String::new()
                    } else {
                        t.file_label.clone()
                    };
                    (t.label.clone(), file)
                }),
            }
        })
        .collect();
    out.extend(table.files.iter().filter_map(|f| match &f.kind {
        Some(file_entry::Kind::InetSocket(s)) if !s.label.is_empty() => Some(inet_creation(s)),
        _ => None,
    }));
    out.sort_by_key(|s| s.ino);
    out
}

/// A TCP or UDP socket as the restore creates it: `create` under its label, `bind` when it
/// was bound, `listen` for a listener, `connect` for a connected UDP socket or an established
/// TCP connection (`connect` in repair mode), and `write` for a connection, whose queues the
/// engine refills with `send`. What is not asked: `name_bind` on the port's type and
/// `node_bind` on the address's node type (both with the socket's label as the source, and
/// `name_bind` only for a port outside the ephemeral range or reserved), and a connection's
/// `name_connect` on its peer's port type: the kernel exposes no way to learn the type of a
/// port or a node (`portcon`, `nodecon`) without the policy store or the binary policy, so a
/// denial there fails the restore's `bind` or `connect`, named with the socket and its
/// address.
fn inet_creation(s: &InetSocket) -> SocketCreation {
    let mut permissions = vec!["create"];
    if s.port != 0 || s.addr.iter().any(|b| *b != 0) {
        permissions.push("bind");
    }
    if s.listening {
        permissions.push("listen");
    }
    if s.peer_port != 0 {
        permissions.push("connect");
    }
    if s.tcp.is_some() {
        permissions.push("write");
    }
    SocketCreation {
        ino: s.ino,
        class: if i32::try_from(s.protocol) == Ok(libc::IPPROTO_TCP) {
            "tcp_socket"
        } else {
            "udp_socket"
        },
        label: s.label.clone(),
        created: true,
        permissions,
        file_label: String::new(),
        connects_to: None,
        sends_to: None,
    }
}

/// One question to the kernel: may `source` do `class { permissions }` on `target`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Question {
    pub source: String,
    pub target: String,
    pub class: &'static str,
    pub permissions: Vec<&'static str>,
}

/// What the engine (in context `engine`) must be allowed to recreate socket `s` in the root
/// and fill and configure it from the engine: `process { setsockcreate }` on itself for a
/// socket it creates under a label; on the label, the socket class's `getopt setopt read
/// write` (a `pidfd_getfd` copy, options, sending the queues) and what it does with it
/// (`create`, `bind`, `listen`, `accept`, `connect`, `shutdown`); a datagram's `sendto` from
/// its label to its peer's (the same: a pair shares its creator's); for a socket file,
/// `process { setfscreate }` and `sock_file { create unlink setattr getattr }` on the file's
/// label (the stale one removed, the new one created and given its mode and owner); for a
/// client, `connectto` from its label to its listener's; for a datagram socket connected to a
/// bound one, `sendto` from its label to that one's and `write` on its socket file.
pub fn socket_questions(engine: &str, s: &SocketCreation) -> Vec<Question> {
    let q = |source: &str, target: &str, class, permissions: Vec<&'static str>| Question {
        source: source.to_owned(),
        target: target.to_owned(),
        class,
        permissions,
    };
    let mut out = Vec::new();
    if s.created {
        out.push(q(engine, engine, "process", vec!["setsockcreate"]));
    }
    // The engine reads and writes a Unix socket's queues; a TCP or UDP one it only configures.
    let mut perms = if s.class.starts_with("unix_") {
        vec!["getopt", "setopt", "read", "write"]
    } else {
        vec!["getopt", "setopt"]
    };
    perms.extend(s.permissions.iter().copied());
    out.push(q(engine, &s.label, s.class, perms));
    if s.class == "unix_dgram_socket" {
        out.push(q(&s.label, &s.label, s.class, vec!["sendto"]));
    }
    if !s.file_label.is_empty() {
        out.push(q(engine, engine, "process", vec!["setfscreate"]));
        out.push(q(
            engine,
            &s.file_label,
            "sock_file",
            vec!["create", "unlink", "setattr", "getattr"],
        ));
    }
    if let Some((bound, file)) = &s.sends_to {
        out.push(q(&s.label, bound, "unix_dgram_socket", vec!["sendto"]));
        if !file.is_empty() {
            out.push(q(engine, file, "sock_file", vec!["write"]));
        }
    }
    if let Some(listener) = &s.connects_to {
        out.push(q(
            &s.label,
            listener,
            "unix_stream_socket",
            vec!["connectto"],
        ));
    }
    out
}

/// A socket the engine could not recreate under its label, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SocketRefusal {
    pub ino: u64,
    pub question: Question,
}

impl Question {
    /// The question as a denial: what SELinux would deny, and the rule that would allow it.
    pub fn denial(&self) -> String {
        let perms = match self.permissions.as_slice() {
            [one] => (*one).to_owned(),
            many => format!("{{ {} }}", many.join(" ")),
        };
        format!(
            "SELinux would deny {:?} `{} {}` on {:?}; a policy allowing it says `allow {} {}:{} {};`",
            self.source,
            self.class,
            perms,
            self.target,
            context_type(&self.source),
            context_type(&self.target),
            self.class,
            perms
        )
    }
}

impl fmt::Display for SocketRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "the Unix socket of inode {} (labelled {:?}): {}",
            self.ino,
            self.question.target,
            self.question.denial()
        )
    }
}

/// The first socket of `sockets` the engine (in `engine`) could not recreate under its label,
/// or `None`. Asks the kernel through `oracle`; nothing is audited.
pub fn socket_refusal(
    oracle: &dyn AccessOracle,
    engine: &str,
    sockets: &[SocketCreation],
) -> Result<Option<SocketRefusal>, SelinuxError> {
    for s in sockets {
        if let Some(question) = first_denied(oracle, socket_questions(engine, s))? {
            return Ok(Some(SocketRefusal {
                ino: s.ino,
                question,
            }));
        }
    }
    Ok(None)
}

/// The first of `questions` the kernel answers no to, through `oracle`; nothing is audited.
pub fn first_denied(
    oracle: &dyn AccessOracle,
    questions: Vec<Question>,
) -> Result<Option<Question>, SelinuxError> {
    for question in questions {
        let d = oracle.decide_on(
            &question.source,
            &question.target,
            question.class,
            &question.permissions,
        )?;
        if !d.passes() {
            return Ok(Some(question));
        }
    }
    Ok(None)
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
        use crate::image::schema::{
            EventFd, EventPoll, FileEntry, FileTable, InotifyFile, SignalFd, TimerFd,
        };
        let kinds = [
            file_entry::Kind::Eventfd(EventFd::default()),
            file_entry::Kind::Timerfd(TimerFd::default()),
            file_entry::Kind::Signalfd(SignalFd::default()),
            file_entry::Kind::Epoll(EventPoll::default()),
            file_entry::Kind::Inotify(InotifyFile::default()),
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
        let fds: Vec<Fd> = (1..=5)
            .map(|id| Fd {
                fd: id + 2,
                file_id: id,
                cloexec: false,
            })
            .collect();
        let recreated = recreated(&fds, &table);
        assert_eq!(recreated.len(), 5);
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

    fn socket(class: &'static str, shutdown: bool) -> SocketCreation {
        let mut permissions = vec!["create"];
        if shutdown {
            permissions.push("shutdown");
        }
        SocketCreation {
            ino: 42,
            class,
            label: CONTAINER.to_owned(),
            created: true,
            permissions,
            file_label: String::new(),
            connects_to: None,
            sends_to: None,
        }
    }

    #[test]
    fn a_stream_socket_asks_setsockcreate_and_its_class_on_the_label() {
        let qs = socket_questions(UNCONFINED, &socket("unix_stream_socket", false));
        let asked: Vec<_> = qs
            .iter()
            .map(|q| {
                (
                    q.source.as_str(),
                    q.target.as_str(),
                    q.class,
                    q.permissions.clone(),
                )
            })
            .collect();
        assert_eq!(
            asked,
            vec![
                (UNCONFINED, UNCONFINED, "process", vec!["setsockcreate"]),
                (
                    UNCONFINED,
                    CONTAINER,
                    "unix_stream_socket",
                    vec!["getopt", "setopt", "read", "write", "create"]
                ),
            ]
        );
    }

    #[test]
    fn a_datagram_socket_connected_to_a_bound_one_asks_sendto_and_write_on_its_file() {
        let mut s = socket("unix_dgram_socket", false);
        s.permissions.push("connect");
        s.sends_to = Some(("system_u:system_r:other_t:s0".into(), "file_t_label".into()));
        let qs = socket_questions(UNCONFINED, &s);
        let asked: Vec<_> = qs
            .iter()
            .map(|q| {
                (
                    q.source.as_str(),
                    q.target.as_str(),
                    q.class,
                    q.permissions.clone(),
                )
            })
            .collect();
        assert!(asked.contains(&(
            CONTAINER,
            "system_u:system_r:other_t:s0",
            "unix_dgram_socket",
            vec!["sendto"]
        )));
        assert!(asked.contains(&(UNCONFINED, "file_t_label", "sock_file", vec!["write"])));
    }

    #[test]
    fn a_shut_datagram_socket_also_asks_shutdown_and_sendto() {
        let qs = socket_questions(UNCONFINED, &socket("unix_dgram_socket", true));
        assert!(qs[1].permissions.contains(&"shutdown"));
        assert_eq!(
            (
                qs[2].source.as_str(),
                qs[2].target.as_str(),
                qs[2].permissions.clone()
            ),
            (CONTAINER, CONTAINER, vec!["sendto"])
        );
    }

    /// Grants everything but `class`.
    struct Denies(&'static str);

    impl AccessOracle for Denies {
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
                allowed: class != self.0,
                permissive: false,
            })
        }
    }

    #[test]
    fn a_denied_socket_is_named_with_the_permission_and_the_rule() {
        let sockets = [socket("unix_stream_socket", false)];
        assert_eq!(
            socket_refusal(&Denies("process"), UNCONFINED, &sockets)
                .expect("answered")
                .map(|r| r.question.permissions),
            Some(vec!["setsockcreate"])
        );
        let r = socket_refusal(&Denies("unix_stream_socket"), UNCONFINED, &sockets)
            .expect("answered")
            .expect("refused");
        let text = r.to_string();
        assert!(
            text.starts_with("the Unix socket of inode 42")
                && text.contains("`unix_stream_socket { getopt setopt read write create }`")
                && text.contains("allow unconfined_t container_t:unix_stream_socket"),
            "{text}"
        );
        assert_eq!(
            socket_refusal(&Denies("none"), UNCONFINED, &sockets).ok(),
            Some(None)
        );
    }

    #[test]
    fn a_listener_its_accepted_end_and_its_client_ask_what_the_restore_does() {
        use crate::image::schema::{FileEntry, UnixSocket};
        let entry = |s: UnixSocket| FileEntry {
            id: 1,
            flags: 2,
            kind: Some(file_entry::Kind::UnixSocket(UnixSocket {
                r#type: UnixSocketType::Stream as i32,
                ..s
            })),
        };
        const FILE: &str = "system_u:object_r:container_file_t:s0:c1,c2";
        let table = FileTable {
            files: vec![
                entry(UnixSocket {
                    ino: 1,
                    label: CONTAINER.into(),
                    name: b"/run/l\0".to_vec(),
                    listening: true,
                    file_label: FILE.into(),
                    ..UnixSocket::default()
                }),
                entry(UnixSocket {
                    ino: 2,
                    peer: 3,
                    label: CONTAINER.into(),
                    name: b"/run/l\0".to_vec(),
                    accepted_from: 1,
                    ..UnixSocket::default()
                }),
                entry(UnixSocket {
                    ino: 3,
                    peer: 2,
                    label: UNCONFINED.into(),
                    ..UnixSocket::default()
                }),
                // SELinux off at dump: nothing to ask.
                entry(UnixSocket {
                    ino: 4,
                    ..UnixSocket::default()
                }),
            ],
            pipes: Vec::new(),
        };
        let c = socket_creations(&table);
        assert_eq!(c.iter().map(|s| s.ino).collect::<Vec<_>>(), vec![1, 2, 3]);
        assert_eq!(
            (c[0].permissions.clone(), c[0].file_label.as_str()),
            (vec!["create", "bind", "listen", "accept"], FILE)
        );
        assert_eq!((c[1].created, c[1].permissions.clone()), (false, vec![]));
        assert_eq!(
            (c[2].permissions.clone(), c[2].connects_to.as_deref()),
            (vec!["create", "connect"], Some(CONTAINER))
        );
        let asked = |s: &SocketCreation| {
            socket_questions(UNCONFINED, s)
                .into_iter()
                .map(|q| (q.class, q.permissions))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            asked(&c[0]),
            vec![
                ("process", vec!["setsockcreate"]),
                (
                    "unix_stream_socket",
                    vec!["getopt", "setopt", "read", "write", "create", "bind", "listen", "accept"]
                ),
                ("process", vec!["setfscreate"]),
                ("sock_file", vec!["create", "unlink", "setattr", "getattr"]),
            ]
        );
        assert_eq!(
            asked(&c[1]),
            vec![(
                "unix_stream_socket",
                vec!["getopt", "setopt", "read", "write"]
            )]
        );
        let client = socket_questions(UNCONFINED, &c[2]);
        let last = client.last().expect("connectto");
        assert_eq!(
            (
                last.source.as_str(),
                last.target.as_str(),
                last.permissions.clone()
            ),
            (UNCONFINED, CONTAINER, vec!["connectto"])
        );
    }

    #[test]
    fn tcp_listeners_and_udp_sockets_ask_create_bind_listen_connect_on_their_class() {
        use crate::image::schema::FileEntry;
        let entry = |s: InetSocket| FileEntry {
            id: 1,
            flags: 2,
            kind: Some(file_entry::Kind::InetSocket(s)),
        };
        let table = FileTable {
            files: vec![
                entry(InetSocket {
                    ino: 7,
                    family: 10,
                    protocol: 6,
                    label: CONTAINER.into(),
                    addr: vec![0; 16],
                    port: 8080,
                    listening: true,
                    ..InetSocket::default()
                }),
                entry(InetSocket {
                    ino: 8,
                    family: 2,
                    protocol: 17,
                    label: CONTAINER.into(),
                    addr: vec![127, 0, 0, 1],
                    port: 5353,
                    peer_addr: vec![127, 0, 0, 1],
                    peer_port: 53,
                    ..InetSocket::default()
                }),
                // An unbound UDP socket: created only.
                entry(InetSocket {
                    ino: 9,
                    family: 2,
                    protocol: 17,
                    label: CONTAINER.into(),
                    addr: vec![0; 4],
                    ..InetSocket::default()
                }),
                // An established connection: connected in repair mode, its queues written.
                entry(InetSocket {
                    ino: 11,
                    family: 2,
                    protocol: 6,
                    label: CONTAINER.into(),
                    addr: vec![127, 0, 0, 1],
                    port: 8080,
                    peer_addr: vec![127, 0, 0, 1],
                    peer_port: 40000,
                    tcp: Some(crate::image::schema::TcpConnection::default()),
                    ..InetSocket::default()
                }),
                // SELinux off at dump: nothing to ask.
                entry(InetSocket {
                    ino: 10,
                    ..InetSocket::default()
                }),
            ],
            pipes: Vec::new(),
        };
        let c = socket_creations(&table);
        let asked = |s: &SocketCreation| {
            socket_questions(UNCONFINED, s)
                .into_iter()
                .map(|q| (q.target, q.class, q.permissions))
                .collect::<Vec<_>>()
        };
        let all: Vec<_> = c.iter().map(|s| (s.ino, asked(s))).collect();
        assert_eq!(
            all,
            vec![
                (
                    7,
                    vec![
                        (UNCONFINED.into(), "process", vec!["setsockcreate"]),
                        (
                            CONTAINER.into(),
                            "tcp_socket",
                            vec!["getopt", "setopt", "create", "bind", "listen"]
                        ),
                    ]
                ),
                (
                    8,
                    vec![
                        (UNCONFINED.into(), "process", vec!["setsockcreate"]),
                        (
                            CONTAINER.into(),
                            "udp_socket",
                            vec!["getopt", "setopt", "create", "bind", "connect"]
                        ),
                    ]
                ),
                (
                    9,
                    vec![
                        (UNCONFINED.into(), "process", vec!["setsockcreate"]),
                        (
                            CONTAINER.into(),
                            "udp_socket",
                            vec!["getopt", "setopt", "create"]
                        ),
                    ]
                ),
                (
                    11,
                    vec![
                        (UNCONFINED.into(), "process", vec!["setsockcreate"]),
                        (
                            CONTAINER.into(),
                            "tcp_socket",
                            vec!["getopt", "setopt", "create", "bind", "connect", "write"]
                        ),
                    ]
                ),
            ]
        );
        // Refused by the kernel's answer on the class, named with the permission.
        let r = socket_refusal(&Denies("tcp_socket"), UNCONFINED, &c)
            .expect("asking")
            .expect("a refusal");
        assert_eq!((r.ino, r.question.class), (7, "tcp_socket"));
    }
}
