//! Sockets of the dumped tree: which ones the restore gives back exactly, and the refusal, by
//! name, of every other one, decided for the whole tree before any process is touched.
//!
//! Restored: `AF_UNIX` pairs (stream, datagram, seqpacket) whose both ends are in the tree,
//! unnamed, with what is queued in each direction, the shutdown state, the SELinux label and
//! the options that matter, and its peer credentials (`SO_PEERCRED`, `SO_PEERGROUPS`), which
//! the restore gives back by making the socket in the process they name; listeners and the
//! connections accepted from them. TCP listeners
//! and UDP sockets (IPv4 and IPv6, bound, a UDP one maybe connected) with their address,
//! backlog, label and options (those of `image::sockopt` when not at a new socket's value).
//! Established TCP connections (IPv4 and IPv6) whose both ends are in the tree, with their
//! state read in repair mode (`TCP_REPAIR`) on the engine's copy and left at once; the copies
//! are kept ([`Connections`]) and put in repair mode again just before the tree is killed.
//! Refused: peer credentials that name no living process of the tree (the socket's maker
//! exited), a pair whose ends' differ, a client whose differ from its listener's; a peer
//! outside the tree, a socket of another family (raw, netlink, packet, ...), a
//! bound or unconnected Unix socket, control messages in flight, zero-length messages a walk
//! of the queue cannot place, an option a new socket does not take back, a pending error, a
//! TCP socket in any state but listening or established, a connection whose peer is outside
//! the tree (no network lock: the peer's packets would meet a reset) or with bytes not sent
//! yet, any connection when the engine may not use `TCP_REPAIR` (no `CAP_NET_ADMIN`), a
//! listener's pending connections, a UDP socket with datagrams queued.

use super::DumpError;
use crate::image::schema::TcpConnection;
use crate::image::schema::{InetSocket, PeerCred, SocketOption, UnixSocket, UnixSocketType};
use crate::image::{sockopt, unix_socket_path};
use crate::procfs::read_link;
use crate::sys::{
    fd_of, fresh_socket, has_pending_error, inet_diag_all, peek_queue, peer_cred, peer_groups,
    peer_pid_now, queue_truesize, set_sockopt_bytes, sockopt_bytes, sockopt_int, sockopt_timeval,
    tcp_repair, tcp_repair_allowed, tcp_repair_read, unix_diag, unix_outq, InetDiag, Repair,
    TcpRepairState, UnixDiag, UNIX_ESTABLISHED, UNIX_LISTEN,
};
use std::cell::RefCell;
use std::collections::HashMap;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::FileTypeExt;

/// Where one socket of the tree is held.
#[derive(Debug, Clone)]
struct Held {
    pid: i32,
    fd: i32,
    diag: UnixDiag,
    /// Never connected (`getpeername` says `ENOTCONN`) and not listening. The kernel's state
    /// does not tell: a datagram socket is `TCP_ESTABLISHED` from its creation on recent
    /// kernels, and one whose peer has closed names no peer inode either.
    unconnected: bool,
}

/// What a Unix socket of the tree is, as the restore rebuilds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// An end of an unnamed pair (`socketpair`).
    Pair,
    /// A listener (`socket`, `bind`, `listen`).
    Listener,
    /// The server end of a connection accepted from the listener of inode `listener`.
    Accepted { listener: u64 },
    /// The client end of such a connection (`connect`), bound or not.
    Client,
    /// Neither connected nor listening, bound to a name or not (a datagram server's socket,
    /// one that sends with `sendto`): made again alone, with nothing queued.
    Alone,
    /// A datagram socket connected to the bound socket of inode `to`, which is alone (a
    /// client of a datagram server, as a logger of `/dev/log`).
    Sender { to: u64 },
}

/// The `AF_UNIX` sockets of the whole tree, by inode, every one of them restorable.
#[derive(Debug, Default)]
pub struct TreeSockets {
    unix: HashMap<u64, Held>,
    roles: HashMap<u64, Role>,
    /// Each Unix socket's peer credentials (`SO_PEERCRED`, `SO_PEERGROUPS`), by inode.
    creds: HashMap<u64, PeerCred>,
    /// The TCP listeners, established TCP connections and UDP sockets of the tree, by inode.
    inet: HashMap<u64, InetDiag>,
    /// Where each of them is first held: (pid, fd).
    inet_held: HashMap<u64, (i32, i32)>,
    /// The engine's copies of the established TCP connections read so far, with what repair
    /// mode showed of each: put in repair mode again just before the tree is killed.
    connections: RefCell<Vec<Connection>>,
}

/// An established TCP connection of the tree as the dump read it.
#[derive(Debug)]
struct Connection {
    pid: i32,
    fd: i32,
    ino: u64,
    named: String,
    copy: OwnedFd,
    state: TcpRepairState,
}

/// The established TCP connections of a dump, held by the engine until the tree is killed.
///
/// Each was read in repair mode and left it at once (the process may go on). [`freeze`]
/// puts them all in repair mode again, so that the tree's death closes them without a FIN or
/// a reset (the restore makes both ends again); [`thaw`] takes them out of it when the dump
/// does not end with the kill.
///
/// [`freeze`]: Connections::freeze
/// [`thaw`]: Connections::thaw
#[derive(Debug, Default)]
pub struct Connections(Vec<Connection>);

impl Connections {
    /// Puts every connection in repair mode and checks that it is still as the image holds
    /// it (sequence numbers, queues, windows); on any error, each is out of repair mode again.
    pub fn freeze(&self) -> Result<(), DumpError> {
        for (i, c) in self.0.iter().enumerate() {
            let checked = tcp_repair(c.copy.as_fd(), Repair::On)
                .and_then(|()| tcp_repair_read(c.copy.as_fd()))
                .map_err(DumpError::from)
                .and_then(|now| {
                    let same = TcpRepairState {
                        timestamp: c.state.timestamp,
                        ..now.clone()
                    };
                    if same == c.state {
                        Ok(())
                    } else {
                        Err(DumpError::Socket {
                            pid: c.pid,
                            fd: c.fd,
                            what: format!(
                                "{} that moved while the dump read the tree (its sequence \
                                 numbers, queues or windows changed)",
                                c.named
                            ),
                            target: format!("socket:[{}]", c.ino),
                            hint: "try again once the connection is idle",
                        })
                    }
                });
            if let Err(e) = checked {
                for done in &self.0[..=i] {
                    done.thaw();
                }
                return Err(e);
            }
        }
        Ok(())
    }

    /// Takes every connection out of repair mode, sending nothing; a failure is logged.
    pub fn thaw(&self) {
        for c in &self.0 {
            c.thaw();
        }
    }
}

impl Connection {
    fn thaw(&self) {
        if let Err(e) = tcp_repair(self.copy.as_fd(), Repair::OffQuiet) {
            tracing::error!(pid = self.pid, fd = self.fd, error = %e, "leaving TCP repair mode");
        }
    }
}

impl TreeSockets {
    /// Whether the Unix socket of inode `ino` passed [`survey`].
    pub fn contains(&self, ino: u64) -> bool {
        self.roles.contains_key(&ino)
    }

    /// Whether the TCP or UDP socket of inode `ino` passed [`survey`].
    pub fn contains_inet(&self, ino: u64) -> bool {
        self.inet.contains_key(&ino)
    }

    /// The established TCP connections read so far, for the kill.
    pub fn take_connections(&self) -> Connections {
        Connections(std::mem::take(&mut *self.connections.borrow_mut()))
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
    let mut inet: Option<HashMap<u64, InetDiag>> = None;
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
                    let unconnected = diag.peer == 0 && diag.state != UNIX_LISTEN && {
                        let copy = fd_of(pid, u64::try_from(fd).unwrap_or(u64::MAX))?;
                        !crate::sys::has_peer(copy.as_fd())?
                    };
                    tree.unix.insert(
                        ino,
                        Held {
                            pid,
                            fd,
                            diag,
                            unconnected,
                        },
                    );
                }
                None => {
                    if inet.is_none() {
                        inet = Some(inet_diag_all()?);
                    }
                    let unlisted = inet
                        .as_ref()
                        .filter(|all| !all.contains_key(&ino))
                        .and_then(|_| unlisted_inet(pid, fd, ino));
                    let listed = inet.as_ref().and_then(|all| all.get(&ino));
                    if let Some(d) = listed.or(unlisted.as_ref()) {
                        let checked = inet_role(d).and_then(|()| {
                            if i32::from(d.protocol) == libc::IPPROTO_UDP {
                                no_joined_groups(pid, d)
                            } else {
                                Ok(())
                            }
                        });
                        if let Err((what, hint)) = checked {
                            return Err(DumpError::Socket {
                                pid,
                                fd,
                                what,
                                target,
                                hint,
                            });
                        }
                        tree.inet.insert(ino, d.clone());
                        tree.inet_held.entry(ino).or_insert((pid, fd));
                        continue;
                    }
                    return Err(DumpError::Socket {
                        pid,
                        fd,
                        what: other_family(pid, ino).to_owned(),
                        target,
                        hint: "crlab restores Unix sockets whose peers are in the dumped \
                               tree, TCP listeners and UDP sockets only; close it before the \
                               dump",
                    });
                }
            }
        }
    }
    connections_inside(&tree)?;
    // Listeners first: a connection not accepted yet is named on its listener.
    let mut order: Vec<(&u64, &Held)> = tree.unix.iter().collect();
    order.sort_by_key(|(ino, h)| (h.diag.state != UNIX_LISTEN, **ino));
    let mut roles = HashMap::new();
    for (ino, held) in order {
        match role(*ino, held, &tree.unix) {
            Ok(r) => {
                roles.insert(*ino, r);
            }
            Err((what, hint)) => {
                return Err(DumpError::Socket {
                    pid: held.pid,
                    fd: held.fd,
                    what,
                    target: format!("socket:[{ino}]"),
                    hint,
                })
            }
        }
    }
    outside_senders(&tree.unix, &roles)?;
    tree.roles = roles;
    tree.creds = peer_creds(pids, &tree)?;
    Ok(tree)
}

/// Refuses a socket of the tree alone and bound that a socket outside the tree is connected
/// to (a logger of a `/dev/log`-like socket): its own description names no such peer, and
/// after the restore the outsider, still connected to the dead socket, could send no more.
fn outside_senders(unix: &HashMap<u64, Held>, roles: &HashMap<u64, Role>) -> Result<(), DumpError> {
    let bound = |ino: &u64| {
        roles.get(ino) == Some(&Role::Alone)
            && unix.get(ino).is_some_and(|h| !h.diag.name.is_empty())
    };
    if !unix.keys().any(bound) {
        return Ok(());
    }
    for (sender, peer) in crate::sys::unix_peers_all()? {
        if unix.contains_key(&sender) || !bound(&peer) {
            continue;
        }
        let Some(held) = unix.get(&peer) else {
            continue;
        };
        return Err(DumpError::Socket {
            pid: held.pid,
            fd: held.fd,
            what: format!(
                "a Unix datagram socket bound to {} to which a socket outside the dump is \
                 connected (inode {sender})",
                name_text(&held.diag.name)
            ),
            target: format!("socket:[{peer}]"),
            hint: "dump the process holding the connected socket with it (one tree), or let it \
                   disconnect first: after the restore its sends would be refused",
        });
    }
    Ok(())
}

/// Reads the peer credentials of every Unix socket of `tree` and refuses, by name, one the
/// restore could not make again: the restore makes each socket in the process its
/// credentials name (one of `pids`, the living processes of the tree), with those
/// credentials; a pair's ends share them, and a client holds its listener's.
fn peer_creds(pids: &[i32], tree: &TreeSockets) -> Result<HashMap<u64, PeerCred>, DumpError> {
    let mut creds = HashMap::new();
    let mut order: Vec<(&u64, &Held)> = tree.unix.iter().collect();
    order.sort_by_key(|(ino, _)| **ino);
    let mut live = HashMap::new();
    // A socket never connected nor listening has none (SO_PEERGROUPS says ENODATA), and
    // needs none: it is made again in a process holding it. One that has some came from a
    // socketpair and was disconnected (or connected elsewhere) since: made again with
    // `socket`, it would have none.
    let unpaired =
        |ino: &u64| matches!(tree.roles.get(ino), Some(Role::Alone | Role::Sender { .. }));
    for (&ino, held) in order.iter().filter(|(ino, _)| unpaired(ino)) {
        let sock = fd_of(held.pid, u64::try_from(held.fd).unwrap_or(u64::MAX))?;
        let c = peer_cred(sock.as_fd())?;
        if c.pid != 0 {
            return Err(DumpError::Socket {
                pid: held.pid,
                fd: held.fd,
                what: format!(
                    "a Unix datagram socket made by socketpair (its peer credentials name \
                     process {}) and disconnected or connected elsewhere since",
                    c.pid
                ),
                target: format!("socket:[{ino}]"),
                hint: "crlab makes such a socket again with socket(), which records no peer \
                       credentials; keep it connected to its pair's other end",
            });
        }
    }
    order.retain(|(ino, _)| !unpaired(ino));
    for (&ino, held) in &order {
        let sock = fd_of(held.pid, u64::try_from(held.fd).unwrap_or(u64::MAX))?;
        let c = peer_cred(sock.as_fd())?;
        let groups = peer_groups(sock.as_fd())?;
        live.insert(ino, peer_pid_now(sock.as_fd())?);
        creds.insert(
            ino,
            PeerCred {
                pid: u32::try_from(c.pid).unwrap_or(0),
                uid: c.uid,
                gid: c.gid,
                groups_known: groups.is_some(),
                groups: groups.unwrap_or_default(),
            },
        );
    }
    let hint = "crlab makes a Unix socket again in the process that made or connected it, \
                with the credentials the kernel recorded (SO_PEERCRED); keep that process \
                alive in the dumped tree, or make the socket again in a process of it";
    for (&ino, held) in &order {
        let Some(c) = creds.get(&ino) else {
            continue;
        };
        let refuse_with = |why: String, hint: &'static str| DumpError::Socket {
            pid: held.pid,
            fd: held.fd,
            what: format!(
                "a Unix socket whose peer credentials ({}) {why}",
                crate::image::cred_text(c)
            ),
            target: format!("socket:[{ino}]"),
            hint,
        };
        let refuse = |why: String| refuse_with(why, hint);
        let pid = i32::try_from(c.pid).unwrap_or(0);
        if pid == 0 {
            return Err(refuse("name no process".into()));
        }
        // SO_PEERPIDFD's process: -1 once the maker is reaped, even if its pid was reused.
        let gone = live
            .get(&ino)
            .copied()
            .flatten()
            .is_some_and(|now| now != pid);
        let why = match (gone, pids.contains(&pid)) {
            (true, true) => Some(format!(
                "name process {pid}, which made it and has exited: pid {pid} is now another \
                 process of the tree"
            )),
            (true, false) => Some(format!("name process {pid}, which made it and has exited")),
            (false, false) => Some(format!(
                "name process {pid}, which is not a living process of the dumped tree"
            )),
            (false, true) => None,
        };
        if let Some(why) = why {
            return Err(refuse(why));
        }
        let peer = u64::from(held.diag.peer);
        let same_as = match tree.roles.get(&ino) {
            Some(Role::Pair) => Some((peer, "its pair's other end")),
            Some(Role::Client) => match tree.roles.get(&peer) {
                Some(Role::Accepted { listener }) => Some((*listener, "its listener")),
                _ => None,
            },
            _ => None,
        };
        if let Some((other, what)) = same_as {
            if let Some(o) = creds.get(&other).filter(|o| *o != c) {
                return Err(refuse_with(
                    format!(
                        "differ from those of {what} (socket:[{other}], {}), which one call \
                         cannot make again",
                        crate::image::cred_text(o)
                    ),
                    "the restore makes a pair's ends with one socketpair, and a client takes \
                     its listener's credentials when it connects; connect again after the \
                     listener's last listen",
                ));
            }
        }
    }
    Ok(creds)
}

type Refusal = (String, &'static str);

/// An address as IPv4 when it is an IPv4-mapped IPv6 one (`::ffff:a.b.c.d`, how a dual-stack
/// IPv6 socket names an IPv4 peer), as it is otherwise.
fn unmapped(addr: &[u8]) -> &[u8] {
    match addr.split_at_checked(12) {
        Some((head, v4))
            if addr.len() == 16 && head == [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff] =>
        {
            v4
        }
        _ => addr,
    }
}

/// Refuses, by name, an established TCP connection of `tree` whose peer is not in it, and
/// any when the engine may not use `TCP_REPAIR`.
fn connections_inside(tree: &TreeSockets) -> Result<(), DumpError> {
    let mut order: Vec<(&u64, &InetDiag)> = tree
        .inet
        .iter()
        .filter(|(_, d)| i32::from(d.protocol) == libc::IPPROTO_TCP && d.state == TCP_ESTABLISHED)
        .collect();
    order.sort_by_key(|(ino, _)| **ino);
    let mut allowed = None;
    for (&ino, d) in order {
        let (pid, fd) = tree.inet_held.get(&ino).copied().unwrap_or((0, -1));
        let named = format!(
            "an established TCP connection ({} -> {})",
            inet_text(&d.src, d.sport),
            inet_text(&d.dst, d.dport)
        );
        let refuse = refusal(pid, fd, ino);
        let peer_inside = tree.inet.values().any(|p| {
            i32::from(p.protocol) == libc::IPPROTO_TCP
                && p.state == TCP_ESTABLISHED
                && (unmapped(&p.src), p.sport, unmapped(&p.dst), p.dport)
                    == (unmapped(&d.dst), d.dport, unmapped(&d.src), d.sport)
        });
        if !peer_inside {
            return Err(refuse(
                format!("{named} whose peer is outside the dumped tree"),
                "crlab restores a TCP connection only with both ends in the tree: it holds no \
                 network lock, so what the peer sends while the process is down would be \
                 answered with a reset; dump the peer with it or close the connection",
            ));
        }
        if allowed.is_none() {
            allowed = Some(tcp_repair_allowed()?);
        }
        if allowed == Some(false) {
            return Err(refuse(
                format!("{named}, which needs CAP_NET_ADMIN for TCP_REPAIR"),
                "run the dump with CAP_NET_ADMIN (and the restore too), or close the \
                 connection before the dump",
            ));
        }
    }
    Ok(())
}

/// `TCP_ESTABLISHED`, `TCP_CLOSE` and `TCP_LISTEN`.
const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE: u8 = 7;
const TCP_LISTEN: u8 = 10;

/// A UDP socket may have joined multicast groups (`IP_ADD_MEMBERSHIP`, `IPV6_JOIN_GROUP`),
/// which nothing shows per socket and the restore does not make again. So a UDP socket is
/// refused when `pid`'s network namespace is a member of any group beyond those the kernel
/// joins by itself (`/proc/PID/net/igmp` and `igmp6`: all-hosts, all-routers, solicited-node),
/// rather than restored without one.
fn no_joined_groups(pid: i32, d: &InetDiag) -> Result<(), Refusal> {
    let local = inet_text(&d.src, d.sport);
    let hint = "crlab does not restore multicast memberships and cannot tell which socket \
                holds one; leave the groups before the dump";
    let v4 = crate::procfs::read_string(format!("/proc/{pid}/net/igmp")).unwrap_or_default();
    if let Some(g) = joined_v4(&v4) {
        return Err((
            format!(
                "a UDP socket on {local} in a network namespace that joined multicast group {g}"
            ),
            hint,
        ));
    }
    let v6 = crate::procfs::read_string(format!("/proc/{pid}/net/igmp6")).unwrap_or_default();
    if let Some(g) = joined_v6(&v6) {
        return Err((
            format!(
                "a UDP socket on {local} in a network namespace that joined multicast group {g}"
            ),
            hint,
        ));
    }
    Ok(())
}

/// The first IPv4 group of `/proc/net/igmp` that is not all-hosts (224.0.0.1), in words.
fn joined_v4(text: &str) -> Option<String> {
    text.lines()
        .filter(|l| l.starts_with('\t') || l.starts_with(' '))
        .filter_map(|l| l.split_whitespace().next())
        .filter_map(|g| u32::from_str_radix(g, 16).ok())
        // The kernel prints the group as it holds it, in network order, as a host integer.
        .map(|g| std::net::Ipv4Addr::from(g.to_le_bytes()))
        .find(|g| *g != std::net::Ipv4Addr::new(224, 0, 0, 1))
        .map(|g| g.to_string())
}

/// The first IPv6 group of `/proc/net/igmp6` the kernel does not join by itself (all-nodes,
/// all-routers, solicited-node), in words.
fn joined_v6(text: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .filter_map(|g| u128::from_str_radix(g, 16).ok())
        .map(std::net::Ipv6Addr::from)
        .find(|g| {
            let s = g.segments();
            let kernels = matches!(s[0], 0xff01 | 0xff02 | 0xff05)
                && s[1..7] == [0, 0, 0, 0, 0, 0]
                && matches!(s[7], 1 | 2);
            let solicited =
                s[0] == 0xff02 && s[1..5] == [0, 0, 0, 0] && s[5] == 1 && s[6] >> 8 == 0xff;
            !kernels && !solicited
        })
        .map(|g| g.to_string())
}

/// The kernel's name of a TCP state.
fn tcp_state(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        _ => "an unknown state",
    }
}

/// An address and port in words: `127.0.0.1:80`, `[::1]:80`, `*:80` for the wildcard.
pub fn inet_text(addr: &[u8], port: u16) -> String {
    if addr.iter().all(|b| *b == 0) {
        return format!("*:{port}");
    }
    match addr.len() {
        4 => {
            let a: [u8; 4] = addr.try_into().unwrap_or_default();
            format!("{}:{port}", std::net::Ipv4Addr::from(a))
        }
        16 => {
            let a: [u8; 16] = addr.try_into().unwrap_or_default();
            format!("[{}]:{port}", std::net::Ipv6Addr::from(a))
        }
        _ => format!("?:{port}"),
    }
}

/// A TCP or UDP socket no `sock_diag` table lists: one never bound (nor listening or
/// connected), described as such from its protocol's name.
fn unlisted_inet(pid: i32, fd: i32, ino: u64) -> Option<InetDiag> {
    let name =
        crate::sys::sock_proto_name(std::path::Path::new(&format!("/proc/{pid}/fd/{fd}"))).ok()?;
    let (family, protocol) = match name.as_str() {
        "TCP" => (libc::AF_INET, libc::IPPROTO_TCP),
        "TCPv6" => (libc::AF_INET6, libc::IPPROTO_TCP),
        "UDP" => (libc::AF_INET, libc::IPPROTO_UDP),
        "UDPv6" => (libc::AF_INET6, libc::IPPROTO_UDP),
        _ => return None,
    };
    let len = if family == libc::AF_INET6 { 16 } else { 4 };
    Some(InetDiag {
        family: u8::try_from(family).ok()?,
        protocol: u8::try_from(protocol).ok()?,
        state: TCP_CLOSE,
        src: vec![0; len],
        dst: vec![0; len],
        ino: u32::try_from(ino).ok()?,
        ..InetDiag::default()
    })
}

/// What the TCP or UDP socket `d` is, in words: `a TCP socket`, `a UDP IPv6 socket`, ...
fn inet_kind(d: &InetDiag) -> &'static str {
    let tcp = i32::from(d.protocol) == libc::IPPROTO_TCP;
    match (tcp, i32::from(d.family) == libc::AF_INET6) {
        (true, false) => "a TCP socket",
        (true, true) => "a TCP IPv6 socket",
        (false, false) => "a UDP socket",
        (false, true) => "a UDP IPv6 socket",
    }
}

/// Whether the restore can give the TCP or UDP socket `d` back, or why not.
fn inet_role(d: &InetDiag) -> Result<(), Refusal> {
    let tcp = i32::from(d.protocol) == libc::IPPROTO_TCP;
    let kind = inet_kind(d);
    let local = inet_text(&d.src, d.sport);
    if d.bound_if != 0 {
        return Err((
            format!(
                "{kind} on {local} bound to network interface {} (SO_BINDTODEVICE)",
                d.bound_if
            ),
            "crlab does not restore a socket bound to a device; close it before the dump",
        ));
    }
    if d.md5sig {
        return Err((
            format!("{kind} on {local} with TCP_MD5SIG keys"),
            "crlab cannot read TCP_MD5SIG keys to restore them; remove them before the dump",
        ));
    }
    // fe80::/10: bound with a scope (an interface) that INET_DIAG does not show.
    if d.src.len() == 16 && d.src[0] == 0xfe && d.src[1] & 0xc0 == 0x80 {
        return Err((
            format!("{kind} on the link-local address {local}"),
            "crlab does not restore a link-local IPv6 address's scope; bind another address",
        ));
    }
    if tcp {
        return match d.state {
            TCP_LISTEN if d.rqueue > 0 => Err((
                format!(
                    "a TCP listener on {local} with {} connection(s) not accepted yet (pending)",
                    d.rqueue
                ),
                "let the process accept its pending connections before the dump",
            )),
            TCP_LISTEN => Ok(()),
            // Its peer and the engine's privilege are looked at once the tree is known.
            TCP_ESTABLISHED => Ok(()),
            TCP_CLOSE => Err((
                format!("{kind} on {local} that is neither listening nor connected (CLOSE)"),
                "only TCP listeners and established connections are restored; close it or let \
                 it listen before the dump",
            )),
            s => Err((
                format!(
                    "{kind} in state {} ({local} -> {})",
                    tcp_state(s),
                    inet_text(&d.dst, d.dport)
                ),
                "only TCP listeners and established connections are restored; let the \
                 connection end before the dump",
            )),
        };
    }
    if d.rqueue > 0 || d.wqueue > 0 {
        return Err((
            format!(
                "{kind} on {local} with datagrams queued ({} bytes to read, {} to send)",
                d.rqueue, d.wqueue
            ),
            "let the process read its datagrams before the dump; crlab does not restore them",
        ));
    }
    Ok(())
}

/// What the Unix socket `ino` is to the restore, or why the restore could not give it back.
fn role(ino: u64, held: &Held, unix: &HashMap<u64, Held>) -> Result<Role, Refusal> {
    let d = &held.diag;
    let ty = i32::from(d.sock_type);
    let kind = match ty {
        libc::SOCK_STREAM => "a Unix stream socket",
        libc::SOCK_DGRAM => "a Unix datagram socket",
        libc::SOCK_SEQPACKET => "a Unix seqpacket socket",
        _ => "a Unix socket of an unknown type",
    };
    let close = "close it before the dump";
    if !matches!(
        ty,
        libc::SOCK_STREAM | libc::SOCK_DGRAM | libc::SOCK_SEQPACKET
    ) {
        return Err((kind.to_owned(), close));
    }
    if d.state == UNIX_LISTEN {
        let pending = d.icons.len().max(d.rqlen.map_or(0, |r| r.0 as usize));
        if pending > 0 {
            return Err((
                format!(
                    "{kind} listening on {} with {pending} connection(s) not accepted yet \
                     (pending)",
                    name_text(&d.name)
                ),
                "let the process accept its pending connections before the dump",
            ));
        }
        check_name(kind, d)?;
        return Ok(Role::Listener);
    }
    if held.unconnected {
        check_name(kind, d)?;
        return Ok(Role::Alone);
    }
    let peer = u64::from(d.peer);
    if d.peer == 0 || d.state != UNIX_ESTABLISHED && ty != libc::SOCK_DGRAM {
        let what = if d.name.is_empty() {
            format!("{kind} that is not connected")
        } else {
            format!("{kind} bound to {} and not connected", name_text(&d.name))
        };
        return Err((
            what,
            "only connected pairs and listeners are restored; close it before the dump",
        ));
    }
    let Some(other) = unix.get(&peer) else {
        if let Some(l) = unix.values().find(|l| l.diag.icons.contains(&d.peer)) {
            return Err((
                format!(
                    "{kind} whose connection to {} is not accepted yet (pending)",
                    name_text(&l.diag.name)
                ),
                "let the listening process accept it before the dump",
            ));
        }
        return Err((
            format!("a Unix socket connected to a process outside the dump (peer inode {peer})"),
            "dump the process holding the other end with it (one tree), or close the socket",
        ));
    };
    if ty == libc::SOCK_DGRAM && other.unconnected && !other.diag.name.is_empty() {
        check_name(kind, d)?;
        check_name(kind, &other.diag)?;
        return Ok(Role::Sender { to: peer });
    }
    if u64::from(other.diag.peer) != ino {
        return Err((
            format!("{kind} connected one way to socket inode {peer}, which is not connected back"),
            close,
        ));
    }
    if let Some(listener) = listener_of(d, unix) {
        return Ok(Role::Accepted { listener });
    }
    if listener_of(&other.diag, unix).is_some() {
        if !d.name.is_empty() {
            check_name(kind, d)?;
        }
        return Ok(Role::Client);
    }
    if d.name.is_empty() && other.diag.name.is_empty() {
        return Ok(Role::Pair);
    }
    let named = if d.name.is_empty() { &other.diag } else { d };
    Err((
        format!(
            "{kind} connected through the name {}, whose listener is not in the dump",
            name_text(&named.name)
        ),
        "only pairs and connections accepted from a listener of the dumped tree are restored",
    ))
}

/// The listener of the tree the socket `d` was accepted from: one listening on its name (for
/// a name in the filesystem, on the same socket file), of its type.
fn listener_of(d: &UnixDiag, unix: &HashMap<u64, Held>) -> Option<u64> {
    if d.name.is_empty() {
        return None;
    }
    unix.iter()
        .find(|(_, l)| {
            l.diag.state == UNIX_LISTEN
                && l.diag.name == d.name
                && l.diag.sock_type == d.sock_type
                && (d.name.first() == Some(&0) || l.diag.vfs.map(|v| v.0) == d.vfs.map(|v| v.0))
        })
        .map(|(ino, _)| *ino)
}

/// Refuses a bound name the restore could not bind again: a relative path, or a path whose
/// socket file is no longer this socket's.
fn check_name(kind: &str, d: &UnixDiag) -> Result<(), Refusal> {
    match d.name.first() {
        None | Some(0) => Ok(()),
        Some(b'/') => {
            use std::os::unix::fs::MetadataExt;
            let path = unix_socket_path(&d.name).unwrap_or_default();
            let canonical = path
                .to_str()
                .ok_or("not UTF-8")
                .and_then(crate::image::check_path);
            if let Err(why) = canonical {
                return Err((
                    format!(
                        "{kind} bound to {}, a path the image cannot hold ({why})",
                        name_text(&d.name)
                    ),
                    "bind it to an absolute, canonical, UTF-8 path",
                ));
            }
            let same = std::fs::symlink_metadata(&path).is_ok_and(|m| {
                m.file_type().is_socket() && d.vfs.is_some_and(|v| u64::from(v.0) == m.ino())
            });
            if same {
                Ok(())
            } else {
                Err((
                    format!(
                        "{kind} bound to {}, whose socket file was removed or replaced",
                        name_text(&d.name)
                    ),
                    "keep the socket file in place until the dump is done",
                ))
            }
        }
        Some(_) => Err((
            format!("{kind} bound to the relative path {}", name_text(&d.name)),
            "bind it to an absolute path",
        )),
    }
}

/// A socket name as `sun_path` holds it, in words: `@name` for an abstract one.
pub fn name_text(name: &[u8]) -> String {
    match name.split_first() {
        None => "no name".to_owned(),
        Some((0, rest)) => format!("@{}", String::from_utf8_lossy(rest)),
        Some(_) => String::from_utf8_lossy(name)
            .trim_end_matches('\0')
            .to_owned(),
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
        ("netlink", "a netlink socket", 9),
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
    let (Some(held), Some(role)) = (tree.unix.get(&ino), tree.roles.get(&ino)) else {
        return Err(refusal(pid, fd, ino)(
            "a socket that appeared after the dump began".to_owned(),
            "try again",
        ));
    };
    let d = &held.diag;
    let refuse = refusal(pid, fd, ino);
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
    let peek_off = opt(libc::SO_PEEK_OFF)?;
    let rcvtimeo_us = sockopt_timeval(sock.as_fd(), libc::SO_RCVTIMEO)?;
    let sndtimeo_us = sockopt_timeval(sock.as_fd(), libc::SO_SNDTIMEO)?;
    // Options the restore does not set: refused when not at their default. Not known to every
    // kernel: an error means it is not set.
    if opt(libc::SO_PASSPIDFD).is_ok_and(|v| v != 0) {
        return Err(refuse(
            "a Unix socket with SO_PASSPIDFD set".to_owned(),
            "crlab does not restore that option yet; unset it before the dump",
        ));
    }
    let shutdown = d.shutdown.unwrap_or(0);
    // A listener queues connections, not data: its pending ones were refused by `survey`.
    // Nor does a stream or seqpacket socket never connected, which has no queue.
    let queueless = *role == Role::Alone && sock_type != libc::SOCK_DGRAM;
    let mut peeked = if *role == Role::Listener || queueless {
        crate::sys::Peeked::default()
    } else {
        peek_queue(sock.as_fd(), sock_type, shutdown & 1 != 0)?
    };
    if let Some(c) = peeked.control.first() {
        return Err(refuse(
            format!("a Unix socket with {c} in flight in its queue"),
            "let the process read its queue before the dump",
        ));
    }
    let unpaired = matches!(role, Role::Alone | Role::Sender { .. });
    if unpaired && sock_type == libc::SOCK_DGRAM {
        // What its senders sent: their addresses (and whether they were in the tree) are
        // not kept, so no send at restore could give it back. An empty datagram counts too.
        let head = crate::sys::peek_head_len(sock.as_fd()).map_err(crate::dump::DumpError::from)?;
        if !peeked.messages.is_empty() || head.is_some() {
            return Err(refuse(
                format!(
                    "a Unix datagram socket {} with datagrams queued from senders that are not \
                     a pair's other end",
                    if d.name.is_empty() {
                        "that is not bound".to_owned()
                    } else {
                        format!("bound to {}", name_text(&d.name))
                    }
                ),
                "let the process read its datagrams before the dump; crlab does not keep \
                 their senders' addresses",
            ));
        }
    }
    if sock_type != libc::SOCK_STREAM && *role != Role::Listener && !unpaired {
        unseen_messages(tree, d, sock_type, sock, &mut peeked)
            .map_err(|(what, hint)| refuse(what, hint))?;
    }
    if *role != Role::Listener && has_pending_error(sock.as_fd())? {
        return Err(refuse(
            "a Unix socket with an error pending (SO_ERROR)".to_owned(),
            "let the process read its error (SO_ERROR) before the dump",
        ));
    }
    // A socket filter (SO_ATTACH_FILTER, SO_ATTACH_BPF): SO_GET_FILTER reads 0 without one.
    if !matches!(opt(libc::SO_GET_FILTER), Ok(0)) {
        return Err(refuse(
            "a Unix socket with a socket filter attached".to_owned(),
            "crlab does not restore socket filters; detach it before the dump",
        ));
    }
    let fresh = fresh_socket(libc::AF_UNIX, sock_type)?;
    let options = read_options(sock, &fresh, sockopt::UNIX, false)
        .map_err(|(what, hint)| refuse(format!("a Unix socket with {what}"), hint))?;
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
    let (peer, connected_to) = match *role {
        Role::Sender { to } => (0, to),
        _ => (u64::from(d.peer), 0),
    };
    let mut out = UnixSocket {
        ino,
        r#type: ty as i32,
        peer,
        connected_to,
        queue: peeked.messages,
        shutdown: u32::from(shutdown),
        label,
        passcred,
        passsec,
        rcvbuf: as_u32(rcvbuf),
        sndbuf: as_u32(sndbuf),
        name: d.name.clone(),
        peek_off: (peek_off >= 0).then_some(peek_off),
        rcvtimeo_us,
        sndtimeo_us,
        options,
        peer_cred: tree.creds.get(&ino).cloned(),
        ..UnixSocket::default()
    };
    match *role {
        Role::Listener => {
            out.listening = true;
            out.backlog = d.rqlen.map_or(0, |r| r.1);
        }
        Role::Accepted { listener } => {
            out.accepted_from = listener;
            // The restore's accept gives the listener's label: refuse one that differs.
            if let Some(l) = tree.unix.get(&listener) {
                let path = format!("/proc/{}/fd/{}", l.pid, l.fd);
                let theirs = crate::selinux::label_of_path(std::path::Path::new(&path), true);
                if theirs != out.label {
                    return Err(refuse(
                        format!(
                            "an accepted Unix connection labelled {:?}, not as its listener \
                             ({theirs:?})",
                            out.label
                        ),
                        "the restore's accept would label it as the listener",
                    ));
                }
            }
        }
        Role::Pair | Role::Client | Role::Alone | Role::Sender { .. } => {}
    }
    // The socket file this socket bound (a listener's, or a bound client's).
    let path = unix_socket_path(&d.name).filter(|_| !matches!(role, Role::Accepted { .. }));
    if let Some(path) = path {
        use std::os::unix::fs::MetadataExt;
        let meta =
            std::fs::symlink_metadata(&path).map_err(|source| crate::procfs::ProcError::Io {
                path: path.display().to_string(),
                source,
            })?;
        out.file_mode = meta.mode() & 0o7777;
        out.file_uid = meta.uid();
        out.file_gid = meta.gid();
        out.file_label = crate::selinux::label_of_path(&path, false);
    }
    Ok(out)
}

/// Reads the TCP listener or UDP socket of inode `ino` of `pid` (its descriptor `fd`),
/// received as `sock`: its address, label and options. Refuses options the restore does not
/// set when they are not at their default.
pub fn read_inet(
    pid: i32,
    fd: i32,
    ino: u64,
    tree: &TreeSockets,
    sock: &OwnedFd,
) -> Result<InetSocket, DumpError> {
    let refuse = refusal(pid, fd, ino);
    let Some(d) = tree.inet.get(&ino) else {
        return Err(refuse(
            "a socket that appeared after the dump began".to_owned(),
            "try again",
        ));
    };
    let tcp = i32::from(d.protocol) == libc::IPPROTO_TCP;
    let v6 = i32::from(d.family) == libc::AF_INET6;
    let opt = |level, name| sockopt_int(sock.as_fd(), level, name);
    let flag = |level, name| opt(level, name).map(|v| v != 0);
    let as_u32 = |v: i32| u32::try_from(v).unwrap_or(0);
    let fresh = fresh_socket(
        i32::from(d.family),
        if tcp {
            libc::SOCK_STREAM
        } else {
            libc::SOCK_DGRAM
        },
    )?;
    let kind = if tcp { sockopt::TCP } else { sockopt::UDP };
    let connected = tcp && d.state == TCP_ESTABLISHED;
    let named = if connected {
        format!(
            "an established TCP connection ({} -> {})",
            inet_text(&d.src, d.sport),
            inet_text(&d.dst, d.dport)
        )
    } else {
        format!("{} on {}", inet_kind(d), inet_text(&d.src, d.sport))
    };
    // A connection's TCP_MAXSEG is the MSS it negotiated, given back by TCP_REPAIR_OPTIONS;
    // an accepted one's multicast TTL, hop limit and interface are what the kernel took from
    // the SYN, which no TCP socket uses and setsockopt refuses on one.
    let skip: &[(i32, i32)] = if connected {
        &[
            (libc::IPPROTO_TCP, libc::TCP_MAXSEG),
            (libc::SOL_IP, libc::IP_MULTICAST_TTL),
            (libc::SOL_IPV6, libc::IPV6_MULTICAST_HOPS),
            (libc::SOL_IPV6, libc::IPV6_MULTICAST_IF),
        ]
    } else {
        &[]
    };
    let options = read_options_but(sock, &fresh, kind, v6, skip)
        .map_err(|(what, hint)| refuse(format!("{named} with {what}"), hint))?;
    if (!tcp || connected) && has_pending_error(sock.as_fd())? {
        return Err(refuse(
            format!("{named} with an error pending (SO_ERROR or its error queue)"),
            "let the process read its errors before the dump",
        ));
    }
    // A socket filter (SO_ATTACH_FILTER, SO_ATTACH_BPF): SO_GET_FILTER reads 0 without one.
    if !matches!(opt(libc::SOL_SOCKET, libc::SO_GET_FILTER), Ok(0)) {
        return Err(refuse(
            format!("{named} with a socket filter attached"),
            "crlab does not restore socket filters; detach it before the dump",
        ));
    }
    let mut out = InetSocket {
        ino,
        family: u32::from(d.family),
        protocol: u32::from(d.protocol),
        label: crate::selinux::label_of(sock.as_fd()),
        addr: d.src.clone(),
        port: u32::from(d.sport),
        listening: tcp && d.state == TCP_LISTEN,
        backlog: if tcp { d.wqueue } else { 0 },
        reuseaddr: flag(libc::SOL_SOCKET, libc::SO_REUSEADDR)?,
        reuseport: flag(libc::SOL_SOCKET, libc::SO_REUSEPORT)?,
        keepalive: flag(libc::SOL_SOCKET, libc::SO_KEEPALIVE)?,
        broadcast: flag(libc::SOL_SOCKET, libc::SO_BROADCAST)?,
        v6only: v6 && flag(libc::SOL_IPV6, libc::IPV6_V6ONLY)?,
        ttl: as_u32(if v6 {
            opt(libc::SOL_IPV6, libc::IPV6_UNICAST_HOPS)?
        } else {
            opt(libc::SOL_IP, libc::IP_TTL)?
        }),
        rcvbuf: as_u32(opt(libc::SOL_SOCKET, libc::SO_RCVBUF)?),
        sndbuf: as_u32(opt(libc::SOL_SOCKET, libc::SO_SNDBUF)?),
        rcvtimeo_us: sockopt_timeval(sock.as_fd(), libc::SO_RCVTIMEO)?,
        sndtimeo_us: sockopt_timeval(sock.as_fd(), libc::SO_SNDTIMEO)?,
        options,
        ..InetSocket::default()
    };
    if tcp {
        out.nodelay = flag(libc::IPPROTO_TCP, libc::TCP_NODELAY)?;
        out.keepidle = as_u32(opt(libc::IPPROTO_TCP, libc::TCP_KEEPIDLE)?);
        out.keepintvl = as_u32(opt(libc::IPPROTO_TCP, libc::TCP_KEEPINTVL)?);
        out.keepcnt = as_u32(opt(libc::IPPROTO_TCP, libc::TCP_KEEPCNT)?);
    }
    if d.state == TCP_ESTABLISHED {
        out.peer_addr = d.dst.clone();
        out.peer_port = u32::from(d.dport);
    }
    if connected {
        // Peeking at offsets would read from the process's offset, not the queue's head. A
        // kernel without a peek offset for TCP (before 6.10) has none that could be set.
        let peek_off = match opt(libc::SOL_SOCKET, libc::SO_PEEK_OFF) {
            Err(e) if e.errno() == Some(nix::errno::Errno::EOPNOTSUPP) => -1,
            other => other?,
        };
        if peek_off >= 0 {
            return Err(refuse(
                format!("{named} with SO_PEEK_OFF set"),
                "crlab reads a connection's queue from its head; unset SO_PEEK_OFF before \
                 the dump",
            ));
        }
        let (tcp_state, copy) = read_connection(sock).map_err(|e| {
            refuse(
                format!("{named} whose state repair mode could not read ({e})"),
                "try again",
            )
        })?;
        if tcp_state.unsent != 0 {
            return Err(refuse(
                format!(
                    "{named} with {} bytes not sent yet (its peer's window is full)",
                    tcp_state.unsent
                ),
                "let the peer read its queue before the dump",
            ));
        }
        let w = tcp_state.window;
        out.tcp = Some(TcpConnection {
            send_seq: tcp_state.send_seq,
            recv_seq: tcp_state.recv_seq,
            send_queue: tcp_state.send_queue.clone(),
            recv_queue: tcp_state.recv_queue.clone(),
            mss: tcp_state.mss,
            options: tcp_state.options,
            snd_wscale: tcp_state.snd_wscale,
            rcv_wscale: tcp_state.rcv_wscale,
            timestamp: tcp_state.timestamp,
            snd_wl1: w.snd_wl1,
            snd_wnd: w.snd_wnd,
            max_window: w.max_window,
            rcv_wnd: w.rcv_wnd,
            rcv_wup: w.rcv_wup,
        });
        tree.connections.borrow_mut().push(Connection {
            pid,
            fd,
            ino,
            named,
            copy,
            state: tcp_state,
        });
    }
    Ok(out)
}

/// Reads the established connection `sock` in repair mode, left again at once (sending
/// nothing) whatever happened; returns it with a copy of the descriptor to keep.
fn read_connection(sock: &OwnedFd) -> Result<(TcpRepairState, OwnedFd), crate::sys::SysError> {
    let copy = sock.try_clone().map_err(|e| crate::sys::SysError::Call {
        op: "dup",
        tid: 0,
        source: nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EBADF)),
    })?;
    tcp_repair(copy.as_fd(), Repair::On)?;
    let read = tcp_repair_read(copy.as_fd());
    let off = tcp_repair(copy.as_fd(), Repair::OffQuiet);
    let state = read?;
    off?;
    Ok((state, copy))
}

/// The options of [`sockopt::OPTIONS`] for a socket of `kind` on `sock` that are not at the
/// value of `fresh` (a new socket of its kind), or that are always kept; each then set on
/// `fresh` and read back, as the restore will: one a new socket does not take back is refused
/// by name, with its value.
fn read_options(
    sock: &OwnedFd,
    fresh: &OwnedFd,
    kind: u8,
    v6: bool,
) -> Result<Vec<SocketOption>, Refusal> {
    read_options_but(sock, fresh, kind, v6, &[])
}

/// [`read_options`] but for those of `skip` (level, name).
fn read_options_but(
    sock: &OwnedFd,
    fresh: &OwnedFd,
    kind: u8,
    v6: bool,
    skip: &[(i32, i32)],
) -> Result<Vec<SocketOption>, Refusal> {
    let hint = "crlab cannot set that option again on a new socket; unset it before the dump";
    let mut kept = Vec::new();
    for k in sockopt::options_for(kind, v6).filter(|k| !skip.contains(&(k.level, k.name))) {
        let mine = sockopt_bytes(sock.as_fd(), k.level, k.name, k.max);
        let new = sockopt_bytes(fresh.as_fd(), k.level, k.name, k.max);
        match (mine, new) {
            // Not known to this kernel, or not to this kind of socket.
            (Err(_), Err(_)) => {}
            (Err(e), Ok(_)) => return Err((format!("{} that cannot be read ({e})", k.text), hint)),
            (Ok(v), Ok(n)) if v == n && !k.always => {}
            (Ok(v), _) => kept.push((k, v)),
        }
    }
    let mut out = Vec::new();
    for (k, value) in kept {
        let back = set_sockopt_bytes(fresh.as_fd(), k.level, k.name, &value)
            .and_then(|()| sockopt_bytes(fresh.as_fd(), k.level, k.name, k.max));
        match back {
            Ok(b) if b == value => {}
            Ok(b) => {
                return Err((
                    format!(
                        "{} set to {}, which a new socket reads back as {}",
                        k.text,
                        sockopt::value_text(&value),
                        sockopt::value_text(&b)
                    ),
                    hint,
                ))
            }
            Err(e) => {
                return Err((
                    format!("{} set to {} ({e})", k.text, sockopt::value_text(&value)),
                    hint,
                ))
            }
        }
        out.push(SocketOption {
            level: k.level,
            name: k.name,
            value,
        });
    }
    // All set, each still as it was (one may change another: `IP_TOS` sets the priority).
    for o in &out {
        let k =
            sockopt::known(o.level, o.name).ok_or_else(|| (format!("option {}", o.name), hint))?;
        match sockopt_bytes(fresh.as_fd(), o.level, o.name, k.max) {
            Ok(b) if b == o.value => {}
            other => {
                return Err((
                    format!(
                        "{} set to {}, which a new socket given its other options reads \
                         back as {}",
                        k.text,
                        sockopt::value_text(&o.value),
                        other.map_or_else(|e| e.to_string(), |b| sockopt::value_text(&b))
                    ),
                    hint,
                ))
            }
        }
    }
    Ok(out)
}

/// Refuses a datagram or seqpacket socket `d` (received as `sock`) whose sender (its peer, in
/// the tree) has more in flight than what the walk `peeked` saw weighs: zero-length messages
/// the walk could not place, after the end of a seqpacket queue shut for reading (which reads
/// as 0 too), or already marked peeked (by the process, or by an earlier dump) where a walk
/// passes them. One such message first in the queue (a process's plain `MSG_PEEK` marks the
/// head) is placed: the head, peeked alone, is empty while the walk began with another.
fn unseen_messages(
    tree: &TreeSockets,
    d: &UnixDiag,
    sock_type: i32,
    sock: &OwnedFd,
    peeked: &mut crate::sys::Peeked,
) -> Result<(), Refusal> {
    let Some(sender) = tree.unix.get(&u64::from(d.peer)) else {
        return Ok(());
    };
    let io = |e: crate::sys::SysError| {
        (
            format!("a Unix socket whose queue could not be weighed ({e})"),
            "try again",
        )
    };
    let fd = u64::try_from(sender.fd).map_err(|_| {
        io(crate::sys::SysError::Call {
            op: "pidfd_getfd",
            tid: sender.pid,
            source: nix::errno::Errno::EBADF,
        })
    })?;
    let copy = crate::sys::fd_of(sender.pid, fd).map_err(io)?;
    let weight = unix_outq(copy.as_fd()).map_err(io)?;
    let mut seen = queue_truesize(sock_type, &peeked.messages).map_err(io)?;
    if weight == seen {
        return Ok(());
    }
    // Something is unseen, so the queue is not empty: a head of 0 bytes is a message, and
    // one the walk did not see unless it began with an empty one too.
    let walk_began_otherwise = !matches!(peeked.messages.first(), Some(m) if m.is_empty());
    if walk_began_otherwise && crate::sys::peek_head_len(sock.as_fd()).map_err(io)? == Some(0) {
        let mut with_head = vec![Vec::new()];
        with_head.extend(peeked.messages.iter().cloned());
        let weighs = queue_truesize(sock_type, &with_head).map_err(io)?;
        if weighs == weight {
            peeked.messages = with_head;
            return Ok(());
        }
        seen = weighs;
    }
    let (kind, what) = if sock_type == libc::SOCK_DGRAM {
        ("a Unix datagram socket", "datagrams")
    } else {
        ("a Unix seqpacket socket", "records")
    };
    let why = if peeked.trailing_zeros {
        "at the end of a queue shut for reading, where they read as its end, or already peeked"
    } else {
        "already peeked (MSG_PEEK with SO_PEEK_OFF, or an earlier dump)"
    };
    Err((
        format!(
            "{kind} with zero-length {what} in its queue that the dump cannot place ({why}; \
             its sender has {weight} bytes in flight, what was seen weighs {seen})"
        ),
        "let the process read its queue before the dump",
    ))
}

/// The refusal of socket `ino`, held at `fd` by process `pid`: what it is, and what to do.
fn refusal(pid: i32, fd: i32, ino: u64) -> impl Fn(String, &'static str) -> DumpError {
    move |what, hint| DumpError::Socket {
        pid,
        fd,
        what,
        target: format!("socket:[{ino}]"),
        hint,
    }
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
                unconnected: false,
            },
        )
    }

    fn listener(ino: u32, name: &[u8], icons: &[u32]) -> (u64, Held) {
        let (i, mut h) = held(ino, 0, name);
        h.diag.state = UNIX_LISTEN;
        h.diag.icons = icons.to_vec();
        (i, h)
    }

    fn roles(unix: &HashMap<u64, Held>) -> HashMap<u64, Result<Role, String>> {
        unix.iter()
            .map(|(i, h)| (*i, role(*i, h, unix).map_err(|e| e.0)))
            .collect()
    }

    #[test]
    fn link_targets_and_names() {
        assert_eq!(socket_ino("socket:[1234]"), Some(1234));
        assert_eq!(socket_ino("pipe:[1234]"), None);
        assert_eq!(name_text(b"\0abs"), "@abs");
        assert_eq!(name_text(b"/run/s\0"), "/run/s");
        assert_eq!(name_text(b""), "no name");
    }

    #[test]
    fn a_pair_inside_the_tree_passes_and_a_peer_outside_is_named() {
        let unix = [held(10, 11, b""), held(11, 10, b""), held(12, 99, b"")]
            .into_iter()
            .collect();
        let r = roles(&unix);
        assert_eq!(r[&10], Ok(Role::Pair));
        assert_eq!(
            r[&12],
            Err("a Unix socket connected to a process outside the dump (peer inode 99)".into())
        );
    }

    #[test]
    fn an_accepted_connection_and_its_bound_client_are_told_apart() {
        let unix = [
            listener(20, b"\0srv", &[]),
            held(21, 22, b"\0srv"),
            held(22, 21, b"\0cli"),
        ]
        .into_iter()
        .collect();
        let r = roles(&unix);
        assert_eq!(r[&20], Ok(Role::Listener));
        assert_eq!(r[&21], Ok(Role::Accepted { listener: 20 }));
        assert_eq!(r[&22], Ok(Role::Client));
    }

    #[test]
    fn pending_connections_and_lost_listeners_are_refused_by_name() {
        let unix = [
            listener(30, b"\0srv", &[33]),
            held(31, 33, b""),
            held(34, 35, b"\0gone"),
            held(35, 34, b""),
        ]
        .into_iter()
        .collect();
        let r = roles(&unix);
        assert_eq!(
            r[&30],
            Err(
                "a Unix stream socket listening on @srv with 1 connection(s) not accepted yet \
                 (pending)"
                    .into()
            )
        );
        assert_eq!(
            r[&31],
            Err(
                "a Unix stream socket whose connection to @srv is not accepted yet (pending)"
                    .into()
            )
        );
        assert!(
            r[&34]
                .as_ref()
                .is_err_and(|e| e.contains("@gone, whose listener is not in the dump")),
            "{:?}",
            r[&34]
        );
    }

    #[test]
    fn other_families_are_named_from_proc_net() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let me = nix::unistd::getpid().as_raw();
        let ino = |fd: i32| {
            std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .expect("a descriptor of ours")
                .ino()
        };
        let nl = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Netlink,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            nix::sys::socket::SockProtocol::NetlinkRoute,
        )
        .expect("a netlink socket");
        // Listed once bound.
        nix::sys::socket::bind(nl.as_raw_fd(), &nix::sys::socket::NetlinkAddr::new(0, 0))
            .expect("binding the netlink socket");
        assert_eq!(other_family(me, ino(nl.as_raw_fd())), "a netlink socket");
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").expect("a TCP listener");
        assert_eq!(other_family(me, ino(tcp.as_raw_fd())), "a TCP socket");
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").expect("a UDP socket");
        assert_eq!(other_family(me, ino(udp.as_raw_fd())), "a UDP socket");
    }

    #[test]
    fn a_relative_or_replaced_socket_file_is_refused() {
        let unix: HashMap<u64, Held> = [
            listener(40, b"rel.sock", &[]),
            listener(41, b"/nonexistent/crlab.sock\0", &[]),
            listener(42, b"/tmp//crlab.sock\0", &[]),
        ]
        .into_iter()
        .collect();
        let r = roles(&unix);
        assert!(r[&40].as_ref().is_err_and(|e| e.contains("relative path")));
        assert!(r[&41]
            .as_ref()
            .is_err_and(|e| e.contains("removed or replaced")));
        assert!(r[&42]
            .as_ref()
            .is_err_and(|e| e.contains("a path the image cannot hold (an empty component")));
    }

    fn inet(protocol: i32, state: u8, rqueue: u32) -> InetDiag {
        InetDiag {
            family: 2,
            protocol: u8::try_from(protocol).unwrap(),
            state,
            src: vec![127, 0, 0, 1],
            sport: 8080,
            dst: vec![127, 0, 0, 1],
            dport: 40000,
            rqueue,
            ..InetDiag::default()
        }
    }

    #[test]
    fn tcp_listeners_and_idle_udp_sockets_pass_and_the_rest_is_named() {
        let tcp = libc::IPPROTO_TCP;
        let udp = libc::IPPROTO_UDP;
        let why = |d: InetDiag| inet_role(&d).err().map(|e| e.0);
        assert_eq!(why(inet(tcp, TCP_LISTEN, 0)), None);
        assert_eq!(why(inet(udp, TCP_CLOSE, 0)), None);
        assert_eq!(why(inet(udp, TCP_ESTABLISHED, 0)), None);
        assert_eq!(
            why(inet(tcp, TCP_LISTEN, 2)).as_deref(),
            Some(
                "a TCP listener on 127.0.0.1:8080 with 2 connection(s) not accepted yet \
                 (pending)"
            )
        );
        // Its peer and the engine's privilege are looked at for the whole tree.
        assert_eq!(why(inet(tcp, TCP_ESTABLISHED, 0)), None);
        assert_eq!(
            why(inet(tcp, 8, 0)).as_deref(),
            Some("a TCP socket in state CLOSE_WAIT (127.0.0.1:8080 -> 127.0.0.1:40000)")
        );
        assert!(why(inet(tcp, TCP_CLOSE, 0)).is_some_and(|w| w.contains("(CLOSE)")));
        assert!(why(inet(udp, TCP_CLOSE, 768)).is_some_and(|w| w.contains("datagrams queued")));
        let mut local = inet(udp, TCP_CLOSE, 0);
        local.src = vec![0xfe, 0x80, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        assert!(why(local).is_some_and(|w| w.contains("link-local")));
        let mut bound = inet(udp, TCP_CLOSE, 0);
        bound.bound_if = 2;
        assert!(why(bound).is_some_and(|w| w.contains("SO_BINDTODEVICE")));
        assert_eq!(inet_text(&[0; 16], 80), "*:80");
        let mut one = [0u8; 16];
        one[15] = 1;
        assert_eq!(inet_text(&one, 80), "[::1]:80");
    }

    fn tree_of(sockets: &[InetDiag]) -> TreeSockets {
        let mut t = TreeSockets::default();
        for (i, d) in sockets.iter().enumerate() {
            let ino = u64::from(d.ino);
            t.inet.insert(ino, d.clone());
            t.inet_held.insert(ino, (1, i32::try_from(i).unwrap() + 3));
        }
        t
    }

    #[test]
    fn a_connection_passes_with_its_peer_in_the_tree_and_is_named_without() {
        let tcp = libc::IPPROTO_TCP;
        let mut a = inet(tcp, TCP_ESTABLISHED, 0);
        a.ino = 1;
        let mut b = inet(tcp, TCP_ESTABLISHED, 0);
        (b.src, b.sport, b.dst, b.dport) = (a.dst.clone(), a.dport, a.src.clone(), a.sport);
        b.ino = 2;
        connections_inside(&tree_of(&[a.clone(), b.clone()]))
            .expect("both ends in the tree (root)");
        // The same with one end an IPv6 socket naming both with IPv4-mapped addresses.
        let mapped = |v4: &[u8]| {
            let mut m = vec![0u8; 10];
            m.extend_from_slice(&[0xff, 0xff]);
            m.extend_from_slice(v4);
            m
        };
        let mut b6 = b;
        (b6.family, b6.src, b6.dst) = (10, mapped(&b6.src), mapped(&b6.dst));
        connections_inside(&tree_of(&[a.clone(), b6])).expect("an IPv4-mapped peer");
        let e = connections_inside(&tree_of(&[a])).expect_err("a peer outside");
        let text = e.to_string();
        assert!(
            text.contains(
                "an established TCP connection (127.0.0.1:8080 -> 127.0.0.1:40000) whose peer \
                 is outside the dumped tree"
            ) && text.contains("no network lock"),
            "{text}"
        );
    }

    #[test]
    fn options_are_kept_when_not_a_new_sockets_and_refused_when_not_taken_back() {
        use std::os::fd::AsRawFd;
        let l = OwnedFd::from(std::net::TcpListener::bind("127.0.0.1:0").expect("a listener"));
        let fresh = || fresh_socket(libc::AF_INET, libc::SOCK_STREAM).expect("a new socket");
        assert_eq!(
            read_options(&l, &fresh(), sockopt::TCP, false).map(|o| o.len()),
            Ok(1)
        );
        let mark = 7i32.to_ne_bytes();
        crate::sys::set_sockopt_bytes(l.as_fd(), libc::SOL_SOCKET, libc::SO_MARK, &mark)
            .expect("SO_MARK (root)");
        let rate = (5u64 << 30).to_ne_bytes();
        crate::sys::set_sockopt_bytes(l.as_fd(), libc::SOL_SOCKET, libc::SO_MAX_PACING_RATE, &rate)
            .expect("SO_MAX_PACING_RATE");
        let got = read_options(&l, &fresh(), sockopt::TCP, false).expect("kept");
        let value = |name| got.iter().find(|o| o.name == name).map(|o| o.value.clone());
        assert_eq!(value(libc::SO_MARK), Some(mark.to_vec()));
        assert_eq!(value(libc::SO_MAX_PACING_RATE), Some(rate.to_vec()));
        // Always kept: the buffer locks.
        assert_eq!(
            value(sockopt::SO_BUF_LOCK),
            Some(0i32.to_ne_bytes().to_vec())
        );
        // A "new socket" that cannot take the TCP options (a UDP one): the first TCP option
        // not at its value there is refused by name, with its value.
        let udp = fresh_socket(libc::AF_INET, libc::SOCK_DGRAM).expect("a UDP socket");
        let who = read_options(&l, &udp, sockopt::TCP, false)
            .expect_err("a UDP socket takes no TCP option")
            .0;
        assert!(who.contains(" set to "), "{who}");
        let _ = l.as_raw_fd();
    }

    #[test]
    fn an_unbound_udp_socket_is_told_by_its_protocol_name() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let me = nix::unistd::getpid().as_raw();
        let s = nix::sys::socket::socket(
            nix::sys::socket::AddressFamily::Inet6,
            nix::sys::socket::SockType::Datagram,
            nix::sys::socket::SockFlag::SOCK_CLOEXEC,
            None,
        )
        .expect("a UDP socket");
        let fd = s.as_raw_fd();
        let ino = std::fs::metadata(format!("/proc/self/fd/{fd}"))
            .expect("a descriptor of ours")
            .ino();
        let d = unlisted_inet(me, fd, ino).expect("a UDP socket");
        assert_eq!(
            (i32::from(d.family), i32::from(d.protocol), d.sport),
            (libc::AF_INET6, libc::IPPROTO_UDP, 0)
        );
        assert_eq!(inet_role(&d), Ok(()));
        assert_eq!(joined_v4("Idx\tDevice    : Count Querier\tGroup    Users Timer\tReporter\n1\tlo        :     1      V3\n\t\t\t\t010000E0     1 0:00000000\t\t0\n"), None);
        assert_eq!(
            joined_v4("1\tlo        :     2      V3\n\t\t\t\t0A0000EF     1 0:00000000\t\t0\n\t\t\t\t010000E0     1 0:00000000\t\t0\n").as_deref(),
            Some("239.0.0.10")
        );
        let v6 = "1    lo              ff020000000000000000000000000001     1 0000000C 0\n\
                  4    eth0            ff0200000000000000000001ff000002     1 00000004 0\n";
        assert_eq!(joined_v6(v6), None);
        let mdns =
            format!("{v6}4    eth0            ff0200000000000000000000000000fb     1 00000004 0\n");
        assert_eq!(joined_v6(&mdns).as_deref(), Some("ff02::fb"));
    }
}
