//! Sockets of the dumped tree: which ones the restore gives back exactly, and the refusal, by
//! name, of every other one, decided for the whole tree before any process is touched.
//!
//! Restored: `AF_UNIX` pairs (stream, datagram, seqpacket) whose both ends are in the tree,
//! unnamed, with what is queued in each direction, the shutdown state, the SELinux label and
//! the options that matter. Refused: a peer outside the tree, a socket of another family,
//! a listener, a bound or unconnected socket, control messages in flight.

use super::DumpError;
use crate::image::schema::{UnixSocket, UnixSocketType};
use crate::procfs::read_link;
use crate::sys::{peek_queue, sockopt_int, unix_diag, UnixDiag, UNIX_ESTABLISHED, UNIX_LISTEN};
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};

/// Where one socket of the tree is held.
#[derive(Debug, Clone)]
struct Held {
    pid: i32,
    fd: i32,
    diag: UnixDiag,
}

/// The `AF_UNIX` sockets of the whole tree, by inode, every one of them restorable.
#[derive(Debug, Default)]
pub struct TreeSockets {
    unix: HashMap<u64, Held>,
}

impl TreeSockets {
    /// Whether the socket of inode `ino` passed [`survey`].
    pub fn contains(&self, ino: u64) -> bool {
        self.unix.contains_key(&ino)
    }
}

/// The inode of a `socket:[N]` link target.
pub fn socket_ino(target: &str) -> Option<u64> {
    target
        .strip_prefix("socket:[")?
        .strip_suffix(']')?
        .parse()
        .ok()
}

/// Looks at every socket of the processes `pids` and refuses, by name, the first the restore
/// could not give back; runs before any process is touched.
pub fn survey(pids: &[i32]) -> Result<TreeSockets, DumpError> {
    let mut tree = TreeSockets::default();
    for &pid in pids {
        for fd in crate::procfs::fds(pid)? {
            // A descriptor closed meanwhile is not a socket; classify reads it again.
            let Ok(target) = read_link(format!("/proc/{pid}/fd/{fd}")) else {
                continue;
            };
            let Some(ino) = socket_ino(&target) else {
                continue;
            };
            failpoint!("dump.sock_diag", |source| crate::sys::SysError::Io {
                what: format!("asking sock_diag about {target}"),
                source,
            });
            match unix_diag(ino)? {
                Some(diag) => {
                    tree.unix.insert(ino, Held { pid, fd, diag });
                }
                None => {
                    return Err(DumpError::Socket {
                        pid,
                        fd,
                        what: other_family(pid, ino).to_owned(),
                        target,
                        hint: "only Unix sockets whose peers are in the dumped tree are \
                               supported; close it before the dump",
                    })
                }
            }
        }
    }
    for (ino, held) in &tree.unix {
        if let Some((what, hint)) = refusal(*ino, &held.diag, &tree) {
            return Err(DumpError::Socket {
                pid: held.pid,
                fd: held.fd,
                what,
                target: format!("socket:[{ino}]"),
                hint,
            });
        }
    }
    Ok(tree)
}

/// Why the restore could not give back the Unix socket `ino`, or `None`.
fn refusal(ino: u64, d: &UnixDiag, tree: &TreeSockets) -> Option<(String, &'static str)> {
    let kind = match i32::from(d.sock_type) {
        libc::SOCK_STREAM => "a Unix stream socket",
        libc::SOCK_DGRAM => "a Unix datagram socket",
        libc::SOCK_SEQPACKET => "a Unix seqpacket socket",
        _ => "a Unix socket of an unknown type",
    };
    let close = "close it before the dump";
    if d.state == UNIX_LISTEN {
        return Some((
            format!("{kind} listening on {}", name_text(&d.name)),
            "listening sockets are not restored yet; close it before the dump",
        ));
    }
    if !matches!(
        i32::from(d.sock_type),
        libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET
    ) {
        return Some((kind.to_owned(), close));
    }
    if !d.name.is_empty() {
        return Some((
            format!("{kind} bound to {}", name_text(&d.name)),
            "bound sockets are not restored yet; only unnamed pairs (socketpair) are",
        ));
    }
    if d.peer == 0 || d.state != UNIX_ESTABLISHED && i32::from(d.sock_type) != libc::SOCK_DGRAM {
        return Some((
            format!("{kind} that is not connected"),
            "only connected pairs are restored; close it before the dump",
        ));
    }
    let peer = u64::from(d.peer);
    let Some(other) = tree.unix.get(&peer) else {
        return Some((
            format!("a Unix socket connected to a process outside the dump (peer inode {peer})"),
            "dump the process holding the other end with it (one tree), or close the socket",
        ));
    };
    if u64::from(other.diag.peer) != ino {
        return Some((
            format!("{kind} connected one way to socket inode {peer}, which is not connected back"),
            close,
        ));
    }
    if !other.diag.name.is_empty() {
        return Some((
            format!(
                "{kind} connected to a bound socket ({}), an accepted connection",
                name_text(&other.diag.name)
            ),
            "accepted connections are not restored yet; close it before the dump",
        ));
    }
    None
}

/// A socket name as `sun_path` holds it, in words: `@name` for an abstract one.
pub fn name_text(name: &[u8]) -> String {
    match name.split_first() {
        None => "no name".to_owned(),
        Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
        Some(_) => String::from_utf8_lossy(name).into_owned(),
    }
}

/// What the socket of inode `ino` (not an `AF_UNIX` one) is, from the tables of
/// `/proc/PID/net`.
fn other_family(pid: i32, ino: u64) -> &'static str {
    const TABLES: &[(&str, &str, usize)] = &[
        ("tcp", "a TCP socket", 9),
        ("tcp6", "a TCP socket", 9),
        ("udp", "a UDP socket", 9),
        ("udp6", "a UDP socket", 9),
        ("udplite", "a UDP-Lite socket", 9),
        ("udplite6", "a UDP-Lite socket", 9),
        ("raw", "a raw IP socket", 9),
        ("raw6", "a raw IP socket", 9),
        ("netlink", "a netlink socket", 8),
        ("packet", "a packet socket", 8),
    ];
    let wanted = ino.to_string();
    for (table, what, column) in TABLES {
        let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/{table}")) else {
            continue;
        };
        if text
            .lines()
            .skip(1)
            .any(|l| l.split_whitespace().nth(*column) == Some(wanted.as_str()))
        {
            return what;
        }
    }
    "a socket of a family other than Unix"
}

/// Reads the socket of inode `ino` of `pid` (its descriptor `fd`), received as `sock`: its
/// label, options and queue, left in place. Refuses control messages in flight and queued
/// messages that would carry the engine's credentials after the restore.
pub fn read_unix(
    pid: i32,
    fd: i32,
    ino: u64,
    tree: &TreeSockets,
    sock: &OwnedFd,
) -> Result<UnixSocket, DumpError> {
    let held = tree.unix.get(&ino).ok_or_else(|| DumpError::Socket {
        pid,
        fd,
        what: "a socket that appeared after the dump began".to_owned(),
        target: format!("socket:[{ino}]"),
        hint: "try again",
    })?;
    let d = &held.diag;
    let refuse = |what: String, hint: &'static str| DumpError::Socket {
        pid,
        fd,
        what,
        target: format!("socket:[{ino}]"),
        hint,
    };
    let sock_type = i32::from(d.sock_type);
    let ty = match sock_type {
        libc::SOCK_STREAM => UnixSocketType::Stream,
        libc::SOCK_DGRAM => UnixSocketType::Dgram,
        _ => UnixSocketType::Seqpacket,
    };
    let opt = |name| sockopt_int(sock.as_fd(), libc::SOL_SOCKET, name);
    let passcred = opt(libc::SO_PASSCRED)? != 0;
    let passsec = opt(libc::SO_PASSSEC)? != 0;
    let rcvbuf = opt(libc::SO_RCVBUF)?;
    let sndbuf = opt(libc::SO_SNDBUF)?;
    let shutdown = d.shutdown.unwrap_or(0);
    let peeked = peek_queue(sock.as_fd(), sock_type, shutdown & 1 != 0)?;
    if let Some(c) = peeked.control.first() {
        return Err(refuse(
            format!("a Unix socket with {c} in flight in its queue"),
            "let the process read its queue before the dump",
        ));
    }
    if !peeked.messages.is_empty() && (passcred || passsec) {
        return Err(refuse(
            format!(
                "a Unix socket with queued data that carries its sender's {} (SCM_CREDENTIALS \
                 or SCM_SECURITY in flight)",
                if passcred {
                    "credentials (SO_PASSCRED)"
                } else {
                    "security context (SO_PASSSEC)"
                }
            ),
            "let the process read its queue before the dump",
        ));
    }
    let label = crate::selinux::label_of(sock.as_fd());
    let as_u32 = |v: i32| u32::try_from(v).unwrap_or(0);
    Ok(UnixSocket {
        ino,
        r#type: ty as i32,
        peer: u64::from(d.peer),
        queue: peeked.messages,
        shutdown: u32::from(shutdown),
        label,
        passcred,
        passsec,
        rcvbuf: as_u32(rcvbuf),
        sndbuf: as_u32(sndbuf),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(ino: u32, peer: u32, name: &[u8]) -> (u64, Held) {
        (
            u64::from(ino),
            Held {
                pid: 1,
                fd: 3,
                diag: UnixDiag {
                    sock_type: 1,
                    state: UNIX_ESTABLISHED,
                    ino,
                    name: name.to_vec(),
                    peer,
                    ..UnixDiag::default()
                },
            },
        )
    }

    #[test]
    fn link_targets_and_names() {
        assert_eq!(socket_ino("socket:[1234]"), Some(1234));
        assert_eq!(socket_ino("pipe:[1234]"), None);
        assert_eq!(name_text(b"\0abs"), "@abs");
        assert_eq!(name_text(b"/run/s"), "/run/s");
        assert_eq!(name_text(b""), "no name");
    }

    #[test]
    fn a_pair_inside_the_tree_passes_and_a_peer_outside_is_named() {
        let tree = TreeSockets {
            unix: [held(10, 11, b""), held(11, 10, b""), held(12, 99, b"")]
                .into_iter()
                .collect(),
        };
        assert_eq!(refusal(10, &tree.unix[&10].diag, &tree), None);
        let (what, _) = refusal(12, &tree.unix[&12].diag, &tree).expect("refused");
        assert_eq!(
            what,
            "a Unix socket connected to a process outside the dump (peer inode 99)"
        );
    }

    #[test]
    fn listeners_bound_and_accepted_sockets_are_refused_by_name() {
        let mut listener = held(20, 0, b"/run/l").1;
        listener.diag.state = UNIX_LISTEN;
        let tree = TreeSockets {
            unix: [(20, listener), held(21, 22, b"/run/l"), held(22, 21, b"")]
                .into_iter()
                .collect(),
        };
        let r = |i: u64| refusal(i, &tree.unix[&i].diag, &tree).expect("refused").0;
        assert_eq!(r(20), "a Unix stream socket listening on /run/l");
        assert_eq!(r(21), "a Unix stream socket bound to /run/l");
        assert!(r(22).contains("an accepted connection"), "{}", r(22));
    }
}
