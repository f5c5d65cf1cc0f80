//! What the kernel says about one `AF_UNIX` socket through `NETLINK_SOCK_DIAG` (`UNIX_DIAG`):
//! its type and state, its peer, its name, pending connections, queue lengths and shutdown
//! state. The request is built and the answer parsed here, by hand (a few fixed structures and
//! attributes), and the parser is unit-tested on bytes.

use super::SysError;
use nix::errno::Errno;
use nix::sys::socket::{
    recv, send, socket, AddressFamily, MsgFlags, SockFlag, SockProtocol, SockType,
};
use std::os::fd::AsRawFd;

/// `SOCK_DIAG_BY_FAMILY`, the request and answer type.
const SOCK_DIAG_BY_FAMILY: u16 = 20;
const NLMSG_ERROR: u16 = 2;
const NLMSG_HDRLEN: usize = 16;
/// `sizeof(struct unix_diag_msg)`.
const UNIX_DIAG_MSG_LEN: usize = 16;

const UDIAG_SHOW_NAME: u32 = 0x01;
const UDIAG_SHOW_VFS: u32 = 0x02;
const UDIAG_SHOW_PEER: u32 = 0x04;
const UDIAG_SHOW_ICONS: u32 = 0x08;
const UDIAG_SHOW_RQLEN: u32 = 0x10;

const UNIX_DIAG_NAME: u16 = 0;
const UNIX_DIAG_VFS: u16 = 1;
const UNIX_DIAG_PEER: u16 = 2;
const UNIX_DIAG_ICONS: u16 = 3;
const UNIX_DIAG_RQLEN: u16 = 4;
const UNIX_DIAG_SHUTDOWN: u16 = 6;

/// The state of a listening socket (`TCP_LISTEN`).
pub const UNIX_LISTEN: u8 = 10;
/// The state of a connected socket (`TCP_ESTABLISHED`).
pub const UNIX_ESTABLISHED: u8 = 1;

/// One `AF_UNIX` socket as `UNIX_DIAG` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnixDiag {
    /// `SOCK_STREAM`, `SOCK_DGRAM` or `SOCK_SEQPACKET`.
    pub sock_type: u8,
    /// [`UNIX_LISTEN`], [`UNIX_ESTABLISHED`], `TCP_CLOSE` (7) when unconnected, ...
    pub state: u8,
    pub ino: u32,
    /// The bound name as `sun_path` holds it (an abstract name starts with a NUL); empty when
    /// unbound.
    pub name: Vec<u8>,
    /// The inode and device of the socket file of a name in the filesystem.
    pub vfs: Option<(u32, u32)>,
    /// The peer's inode, 0 for none.
    pub peer: u32,
    /// A listener's not yet accepted connections (the inodes of their server ends).
    pub icons: Vec<u32>,
    /// (receive queue, send queue): bytes for a connected socket; for a listener, the pending
    /// connections and the backlog.
    pub rqlen: Option<(u32, u32)>,
    /// `RCV_SHUTDOWN` (1) and `SEND_SHUTDOWN` (2).
    pub shutdown: Option<u8>,
}

/// The request for the socket of inode `ino` (`unix_diag_req`, no cookie), in a netlink header.
pub fn request(ino: u32, seq: u32) -> Vec<u8> {
    let mut b = Vec::with_capacity(NLMSG_HDRLEN + 24);
    let len = u32::try_from(NLMSG_HDRLEN + 24).unwrap_or(u32::MAX);
    b.extend_from_slice(&len.to_ne_bytes());
    b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    // NLM_F_REQUEST.
    b.extend_from_slice(&1u16.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // sdiag_family, sdiag_protocol, pad.
    b.push(u8::try_from(libc::AF_UNIX).unwrap_or(1));
    b.push(0);
    b.extend_from_slice(&0u16.to_ne_bytes());
    // udiag_states: all.
    b.extend_from_slice(&u32::MAX.to_ne_bytes());
    b.extend_from_slice(&ino.to_ne_bytes());
    let show =
        UDIAG_SHOW_NAME | UDIAG_SHOW_VFS | UDIAG_SHOW_PEER | UDIAG_SHOW_ICONS | UDIAG_SHOW_RQLEN;
    b.extend_from_slice(&show.to_ne_bytes());
    // udiag_cookie: INET_DIAG_NOCOOKIE.
    b.extend_from_slice(&u32::MAX.to_ne_bytes());
    b.extend_from_slice(&u32::MAX.to_ne_bytes());
    b
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_ne_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// Why an answer is not one socket's description.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The kernel answered with an error (`ENOENT`: no `AF_UNIX` socket has that inode).
    Errno(i32),
    /// Too short, or lengths that do not add up.
    Malformed(&'static str),
}

/// Parses the answer to [`request`]: one netlink message.
pub fn parse(b: &[u8]) -> Result<UnixDiag, ParseError> {
    let bad = ParseError::Malformed;
    let len = usize::try_from(u32_at(b, 0).ok_or(bad("no netlink header"))?)
        .map_err(|_| bad("netlink length"))?;
    if len < NLMSG_HDRLEN || len > b.len() {
        return Err(bad("netlink length"));
    }
    let ty = u16_at(b, 4).ok_or(bad("netlink type"))?;
    let body = &b[NLMSG_HDRLEN..len];
    if ty == NLMSG_ERROR {
        let e = u32_at(body, 0).ok_or(bad("netlink error"))?;
        let e = i32::from_ne_bytes(e.to_ne_bytes());
        return Err(ParseError::Errno(-e));
    }
    if ty != SOCK_DIAG_BY_FAMILY {
        return Err(bad("netlink type"));
    }
    if body.len() < UNIX_DIAG_MSG_LEN {
        return Err(bad("unix_diag_msg"));
    }
    let mut d = UnixDiag {
        sock_type: body[1],
        state: body[2],
        ino: u32_at(body, 4).ok_or(bad("unix_diag_msg"))?,
        ..UnixDiag::default()
    };
    let mut at = UNIX_DIAG_MSG_LEN;
    while at + 4 <= body.len() {
        let alen = usize::from(u16_at(body, at).ok_or(bad("attribute"))?);
        let aty = u16_at(body, at + 2).ok_or(bad("attribute"))?;
        if alen < 4 || at + alen > body.len() {
            return Err(bad("attribute length"));
        }
        let payload = &body[at + 4..at + alen];
        match aty {
            UNIX_DIAG_NAME => d.name = payload.to_vec(),
            UNIX_DIAG_VFS => {
                let ino = u32_at(payload, 0).ok_or(bad("UNIX_DIAG_VFS"))?;
                let dev = u32_at(payload, 4).ok_or(bad("UNIX_DIAG_VFS"))?;
                d.vfs = Some((ino, dev));
            }
            UNIX_DIAG_PEER => d.peer = u32_at(payload, 0).ok_or(bad("UNIX_DIAG_PEER"))?,
            UNIX_DIAG_ICONS => {
                d.icons = payload
                    .chunks_exact(4)
                    .filter_map(|c| c.try_into().ok().map(u32::from_ne_bytes))
                    .collect();
            }
            UNIX_DIAG_RQLEN => {
                let r = u32_at(payload, 0).ok_or(bad("UNIX_DIAG_RQLEN"))?;
                let w = u32_at(payload, 4).ok_or(bad("UNIX_DIAG_RQLEN"))?;
                d.rqlen = Some((r, w));
            }
            UNIX_DIAG_SHUTDOWN => {
                d.shutdown = Some(*payload.first().ok_or(bad("UNIX_DIAG_SHUTDOWN"))?);
            }
            _ => {}
        }
        at += alen.div_ceil(4) * 4;
    }
    Ok(d)
}

/// Asks the kernel about the `AF_UNIX` socket of inode `ino` (in the engine's network
/// namespace, which a dumped tree shares: the dump refuses other namespaces). `None` when
/// no `AF_UNIX` socket has that inode (a socket of another family).
pub fn unix_diag(ino: u64) -> Result<Option<UnixDiag>, SysError> {
    let err = |op: &'static str| move |source| SysError::Call { op, tid: 0, source };
    let ino32 = u32::try_from(ino).map_err(|_| err("sock_diag")(Errno::ERANGE))?;
    let nl = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .map_err(err("socket(NETLINK_SOCK_DIAG)"))?;
    let req = request(ino32, 1);
    send(nl.as_raw_fd(), &req, MsgFlags::empty()).map_err(err("send(sock_diag)"))?;
    let mut buf = vec![0u8; 8192];
    let n = recv(nl.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(err("recv(sock_diag)"))?;
    match parse(&buf[..n]) {
        Ok(d) => Ok(Some(d)),
        Err(ParseError::Errno(e)) if e == libc::ENOENT => Ok(None),
        Err(ParseError::Errno(e)) => Err(err("sock_diag")(Errno::from_raw(e))),
        Err(ParseError::Malformed(_)) => Err(err("parsing sock_diag")(Errno::EBADMSG)),
    }
}

/// Every `AF_UNIX` socket of the engine's network namespace with the inode of its peer, for
/// those that have one: (inode, peer inode).
pub fn unix_peers_all() -> Result<Vec<(u64, u64)>, SysError> {
    let mut req = request(0, 1);
    // A dump of every socket, peers only: NLM_F_REQUEST | NLM_F_DUMP, no inode.
    req[6..8].copy_from_slice(&NLM_F_DUMP_REQUEST.to_ne_bytes());
    req[NLMSG_HDRLEN + 12..NLMSG_HDRLEN + 16].copy_from_slice(&UDIAG_SHOW_PEER.to_ne_bytes());
    let found = dump(&req, "unix_diag", parse_all)?;
    Ok(found
        .into_iter()
        .filter(|d| d.peer != 0)
        .map(|d| (u64::from(d.ino), u64::from(d.peer)))
        .collect())
}

/// Parses one buffer of a `UNIX_DIAG` dump: its sockets, and whether the dump is done.
pub fn parse_all(b: &[u8]) -> Result<(Vec<UnixDiag>, bool), ParseError> {
    let bad = ParseError::Malformed;
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let len = usize::try_from(u32_at(b, at).ok_or(bad("no netlink header"))?)
            .map_err(|_| bad("netlink length"))?;
        if len < NLMSG_HDRLEN || at + len > b.len() {
            return Err(bad("netlink length"));
        }
        if u16_at(b, at + 4).ok_or(bad("netlink type"))? == NLMSG_DONE {
            return Ok((out, true));
        }
        out.push(parse(&b[at..at + len])?);
        // Messages are aligned to 4 bytes.
        at += (len + 3) & !3;
    }
    Ok((out, false))
}

/// `NLM_F_REQUEST | NLM_F_DUMP`.
const NLM_F_DUMP_REQUEST: u16 = 0x301;
const NLMSG_DONE: u16 = 3;
/// `sizeof(struct inet_diag_req_v2)` and `sizeof(struct inet_diag_msg)`.
const INET_DIAG_REQ_LEN: usize = 56;
const INET_DIAG_MSG_LEN: usize = 72;

/// One TCP or UDP socket as `INET_DIAG` describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InetDiag {
    /// `AF_INET` or `AF_INET6`.
    pub family: u8,
    /// `IPPROTO_TCP` or `IPPROTO_UDP`.
    pub protocol: u8,
    /// The kernel's TCP state (`TCP_LISTEN` 10, `TCP_ESTABLISHED` 1, `TCP_CLOSE` 7, ...); for
    /// UDP, `TCP_ESTABLISHED` when connected, `TCP_CLOSE` otherwise.
    pub state: u8,
    /// Local and remote address (4 or 16 bytes, network order) and port.
    pub src: Vec<u8>,
    pub sport: u16,
    pub dst: Vec<u8>,
    pub dport: u16,
    /// The device it is bound to (`SO_BINDTODEVICE`), 0 for none.
    pub bound_if: u32,
    /// A listener's connections not accepted yet and its backlog; otherwise the bytes queued
    /// to be read and to be sent.
    pub rqueue: u32,
    pub wqueue: u32,
    pub ino: u32,
    /// `TCP_MD5SIG` keys (`INET_DIAG_MD5SIG`, which the kernel sends a requester with
    /// `CAP_NET_ADMIN`), which `getsockopt` does not give.
    pub md5sig: bool,
}

/// `INET_DIAG_INFO` and `INET_DIAG_MD5SIG`.
const INET_DIAG_INFO: u8 = 2;
const INET_DIAG_MD5SIG: u16 = 18;

/// Whether the attributes `attrs` (after an `inet_diag_msg`) hold one of type `ty`.
fn has_attr(attrs: &[u8], ty: u16) -> bool {
    let mut at = 0;
    while let (Some(len), Some(t)) = (u16_at(attrs, at), u16_at(attrs, at + 2)) {
        let len = usize::from(len);
        if len < 4 {
            return false;
        }
        if t & 0x3fff == ty {
            return true;
        }
        at += len.div_ceil(4) * 4;
    }
    false
}

/// The dump request for every socket of `family` and `protocol`, in every state.
pub fn inet_request(family: u8, protocol: u8, seq: u32) -> Vec<u8> {
    let len = NLMSG_HDRLEN + INET_DIAG_REQ_LEN;
    let mut b = Vec::with_capacity(len);
    b.extend_from_slice(&u32::try_from(len).unwrap_or(u32::MAX).to_ne_bytes());
    b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
    b.extend_from_slice(&NLM_F_DUMP_REQUEST.to_ne_bytes());
    b.extend_from_slice(&seq.to_ne_bytes());
    b.extend_from_slice(&0u32.to_ne_bytes());
    // sdiag_family, sdiag_protocol, idiag_ext, pad, idiag_states (all). The extension asked
    // for is INET_DIAG_INFO, with which the kernel also sends a TCP socket's MD5 keys.
    b.extend_from_slice(&[family, protocol, 1 << (INET_DIAG_INFO - 1), 0]);
    b.extend_from_slice(&u32::MAX.to_ne_bytes());
    // inet_diag_sockid: ports, addresses, interface, cookie: all zero for a dump.
    b.resize(len, 0);
    b
}

/// Parses one buffer of answers to [`inet_request`]: the sockets it holds, and whether the
/// dump is done (`NLMSG_DONE`).
pub fn inet_parse(b: &[u8]) -> Result<(Vec<InetDiag>, bool), ParseError> {
    let bad = ParseError::Malformed;
    let mut out = Vec::new();
    let mut at = 0;
    while at < b.len() {
        let len = usize::try_from(u32_at(b, at).ok_or(bad("no netlink header"))?)
            .map_err(|_| bad("netlink length"))?;
        if len < NLMSG_HDRLEN || at + len > b.len() {
            return Err(bad("netlink length"));
        }
        let ty = u16_at(b, at + 4).ok_or(bad("netlink type"))?;
        let body = &b[at + NLMSG_HDRLEN..at + len];
        match ty {
            NLMSG_DONE => return Ok((out, true)),
            NLMSG_ERROR => {
                let e = u32_at(body, 0).ok_or(bad("netlink error"))?;
                return Err(ParseError::Errno(-i32::from_ne_bytes(e.to_ne_bytes())));
            }
            SOCK_DIAG_BY_FAMILY => {
                if body.len() < INET_DIAG_MSG_LEN {
                    return Err(bad("inet_diag_msg"));
                }
                let family = body[0];
                let alen = if i32::from(family) == libc::AF_INET6 {
                    16
                } else {
                    4
                };
                let port = |o: usize| u16::from_be_bytes([body[o], body[o + 1]]);
                out.push(InetDiag {
                    family,
                    protocol: 0,
                    state: body[1],
                    sport: port(4),
                    dport: port(6),
                    src: body[8..8 + alen].to_vec(),
                    dst: body[24..24 + alen].to_vec(),
                    bound_if: u32_at(body, 40).ok_or(bad("inet_diag_msg"))?,
                    rqueue: u32_at(body, 56).ok_or(bad("inet_diag_msg"))?,
                    wqueue: u32_at(body, 60).ok_or(bad("inet_diag_msg"))?,
                    ino: u32_at(body, 68).ok_or(bad("inet_diag_msg"))?,
                    md5sig: has_attr(&body[INET_DIAG_MSG_LEN..], INET_DIAG_MD5SIG),
                });
            }
            _ => return Err(bad("netlink type")),
        }
        at += len.div_ceil(4) * 4;
    }
    Ok((out, false))
}

/// Every TCP and UDP socket, IPv4 and IPv6, of the engine's network namespace (which a dumped
/// tree shares: the dump refuses other namespaces), by inode.
pub fn inet_diag_all() -> Result<std::collections::HashMap<u64, InetDiag>, SysError> {
    let mut all = std::collections::HashMap::new();
    let families = [libc::AF_INET, libc::AF_INET6].map(|f| u8::try_from(f).unwrap_or(0));
    let protocols = [libc::IPPROTO_TCP, libc::IPPROTO_UDP].map(|p| u8::try_from(p).unwrap_or(0));
    for family in families {
        for protocol in protocols {
            let found = dump(&inet_request(family, protocol, 1), "inet_diag", inet_parse)?;
            for mut d in found {
                d.protocol = protocol;
                all.insert(u64::from(d.ino), d);
            }
        }
    }
    Ok(all)
}

/// Sends the dump request `req` on a new `NETLINK_SOCK_DIAG` socket and gathers what
/// `parse` finds in each answer until the dump is done; `what` names the errors.
fn dump<T>(
    req: &[u8],
    what: &'static str,
    parse: impl Fn(&[u8]) -> Result<(Vec<T>, bool), ParseError>,
) -> Result<Vec<T>, SysError> {
    let err = |op: &'static str| move |source| SysError::Call { op, tid: 0, source };
    let nl = socket(
        AddressFamily::Netlink,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        SockProtocol::NetlinkSockDiag,
    )
    .map_err(err("socket(NETLINK_SOCK_DIAG)"))?;
    send(nl.as_raw_fd(), req, MsgFlags::empty()).map_err(err("send(sock_diag)"))?;
    let mut all = Vec::new();
    let mut buf = vec![0u8; 32768];
    loop {
        let n =
            recv(nl.as_raw_fd(), &mut buf, MsgFlags::empty()).map_err(err("recv(sock_diag)"))?;
        if n == 0 {
            break;
        }
        let (found, done) = parse(&buf[..n]).map_err(|e| match e {
            ParseError::Errno(e) => err(what)(Errno::from_raw(e)),
            ParseError::Malformed(_) => err("parsing sock_diag")(Errno::EBADMSG),
        })?;
        all.extend(found);
        if done {
            break;
        }
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attr(ty: u16, payload: &[u8]) -> Vec<u8> {
        let mut a = Vec::new();
        a.extend_from_slice(&u16::try_from(4 + payload.len()).unwrap().to_ne_bytes());
        a.extend_from_slice(&ty.to_ne_bytes());
        a.extend_from_slice(payload);
        while a.len() % 4 != 0 {
            a.push(0);
        }
        a
    }

    fn answer(ty: u8, state: u8, ino: u32, attrs: &[Vec<u8>]) -> Vec<u8> {
        let mut body = vec![1, ty, state, 0];
        body.extend_from_slice(&ino.to_ne_bytes());
        body.extend_from_slice(&[0xff; 8]);
        for a in attrs {
            body.extend_from_slice(a);
        }
        let mut b = Vec::new();
        b.extend_from_slice(&u32::try_from(16 + body.len()).unwrap().to_ne_bytes());
        b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        b.extend_from_slice(&[0; 10]);
        b.extend_from_slice(&body);
        b
    }

    #[test]
    fn the_request_asks_for_one_inode_with_every_attribute_needed() {
        let r = request(4242, 7);
        assert_eq!(r.len(), 40);
        assert_eq!(u32_at(&r, 0), Some(40));
        assert_eq!(u16_at(&r, 4), Some(20));
        assert_eq!(r[16], 1);
        assert_eq!(u32_at(&r, 24), Some(4242));
        assert_eq!(u32_at(&r, 28), Some(0x1f));
        assert_eq!(&r[32..40], &[0xff; 8]);
    }

    #[test]
    fn a_listener_with_a_name_and_pending_connections() {
        let mut icons = Vec::new();
        icons.extend_from_slice(&11u32.to_ne_bytes());
        icons.extend_from_slice(&12u32.to_ne_bytes());
        let mut rq = 2u32.to_ne_bytes().to_vec();
        rq.extend_from_slice(&16u32.to_ne_bytes());
        let mut vfs = 77u32.to_ne_bytes().to_vec();
        vfs.extend_from_slice(&3u32.to_ne_bytes());
        let b = answer(
            1,
            UNIX_LISTEN,
            10,
            &[
                attr(UNIX_DIAG_NAME, b"/tmp/s"),
                attr(UNIX_DIAG_VFS, &vfs),
                attr(UNIX_DIAG_PEER, &0u32.to_ne_bytes()),
                attr(UNIX_DIAG_ICONS, &icons),
                attr(UNIX_DIAG_RQLEN, &rq),
                attr(UNIX_DIAG_SHUTDOWN, &[0]),
            ],
        );
        let d = parse(&b).unwrap();
        assert_eq!(
            d,
            UnixDiag {
                sock_type: 1,
                state: UNIX_LISTEN,
                ino: 10,
                name: b"/tmp/s".to_vec(),
                vfs: Some((77, 3)),
                peer: 0,
                icons: vec![11, 12],
                rqlen: Some((2, 16)),
                shutdown: Some(0),
            }
        );
    }

    #[test]
    fn a_connected_pair_end_with_an_abstract_name_and_shutdown() {
        let b = answer(
            5,
            UNIX_ESTABLISHED,
            20,
            &[
                attr(UNIX_DIAG_NAME, b"\0abs"),
                attr(UNIX_DIAG_PEER, &21u32.to_ne_bytes()),
                attr(UNIX_DIAG_SHUTDOWN, &[2]),
            ],
        );
        let d = parse(&b).unwrap();
        assert_eq!(
            (d.sock_type, d.peer, d.name, d.shutdown),
            (5, 21, b"\0abs".to_vec(), Some(2))
        );
    }

    #[test]
    fn an_error_answer_is_its_errno() {
        let mut b = Vec::new();
        b.extend_from_slice(&36u32.to_ne_bytes());
        b.extend_from_slice(&NLMSG_ERROR.to_ne_bytes());
        b.extend_from_slice(&[0; 10]);
        b.extend_from_slice(&(-libc::ENOENT).to_ne_bytes());
        b.extend_from_slice(&[0; 16]);
        assert_eq!(parse(&b), Err(ParseError::Errno(libc::ENOENT)));
    }

    #[test]
    fn truncated_answers_are_malformed_not_panics() {
        let full = answer(1, 1, 3, &[attr(UNIX_DIAG_PEER, &4u32.to_ne_bytes())]);
        for cut in 0..full.len() {
            assert!(parse(&full[..cut]).is_err(), "cut at {cut}");
        }
        let mut bad_attr = answer(1, 1, 3, &[attr(UNIX_DIAG_PEER, &4u32.to_ne_bytes())]);
        // An attribute claiming more than the message holds.
        bad_attr[32] = 200;
        assert!(matches!(parse(&bad_attr), Err(ParseError::Malformed(_))));
    }

    #[test]
    fn a_real_socketpair_is_described_with_its_peer() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let (a, b) = std::os::unix::net::UnixStream::pair().unwrap();
        let ino = |fd: i32| {
            std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .unwrap()
                .ino()
        };
        let (ia, ib) = (ino(a.as_raw_fd()), ino(b.as_raw_fd()));
        let d = unix_diag(ia).unwrap().expect("a unix socket");
        assert_eq!(u64::from(d.ino), ia);
        assert_eq!(u64::from(d.peer), ib);
        assert_eq!(d.state, UNIX_ESTABLISHED);
        assert_eq!(i32::from(d.sock_type), libc::SOCK_STREAM);
    }

    fn inet_answer(family: u8, state: u8, ino: u32) -> Vec<u8> {
        let mut body = vec![family, state, 0, 0];
        body.extend_from_slice(&8080u16.to_be_bytes());
        body.extend_from_slice(&0u16.to_be_bytes());
        let mut src = [0u8; 16];
        src[..4].copy_from_slice(&[127, 0, 0, 1]);
        body.extend_from_slice(&src);
        body.extend_from_slice(&[0; 16]);
        body.extend_from_slice(&3u32.to_ne_bytes());
        body.extend_from_slice(&[0xff; 8]);
        body.extend_from_slice(&0u32.to_ne_bytes());
        body.extend_from_slice(&2u32.to_ne_bytes());
        body.extend_from_slice(&9u32.to_ne_bytes());
        body.extend_from_slice(&0u32.to_ne_bytes());
        body.extend_from_slice(&ino.to_ne_bytes());
        let mut b = Vec::new();
        b.extend_from_slice(&u32::try_from(16 + body.len()).unwrap().to_ne_bytes());
        b.extend_from_slice(&SOCK_DIAG_BY_FAMILY.to_ne_bytes());
        b.extend_from_slice(&[0; 10]);
        b.extend_from_slice(&body);
        b
    }

    #[test]
    fn a_dump_answer_gives_every_socket_then_says_done() {
        let peer = |p: u32| {
            let mut a = Vec::new();
            a.extend_from_slice(&8u16.to_ne_bytes());
            a.extend_from_slice(&UNIX_DIAG_PEER.to_ne_bytes());
            a.extend_from_slice(&p.to_ne_bytes());
            a
        };
        let mut b = answer(1, UNIX_ESTABLISHED, 11, &[peer(12)]);
        b.extend(answer(2, UNIX_ESTABLISHED, 13, &[]));
        let (found, done) = parse_all(&b).expect("two sockets");
        assert!(!done);
        assert_eq!(
            found.iter().map(|d| (d.ino, d.peer)).collect::<Vec<_>>(),
            vec![(11, 12), (13, 0)]
        );
        let mut end = Vec::new();
        end.extend_from_slice(&20u32.to_ne_bytes());
        end.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        end.extend_from_slice(&[0; 14]);
        assert_eq!(parse_all(&end), Ok((Vec::new(), true)));
    }

    #[test]
    fn the_dump_of_peers_finds_both_ends_of_a_pair() {
        use std::os::unix::fs::MetadataExt;
        let (a, b) = std::os::unix::net::UnixStream::pair().expect("socketpair");
        let ino = |s: &std::os::unix::net::UnixStream| {
            let fd = std::os::fd::AsRawFd::as_raw_fd(s);
            std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .expect("its inode")
                .ino()
        };
        let (ia, ib) = (ino(&a), ino(&b));
        let all = unix_peers_all().expect("a UNIX_DIAG dump");
        assert!(
            all.contains(&(ia, ib)) && all.contains(&(ib, ia)),
            "{ia} {ib} in {all:?}"
        );
    }

    #[test]
    fn the_inet_request_dumps_one_family_and_protocol_in_every_state() {
        let r = inet_request(2, 6, 1);
        assert_eq!(r.len(), 72);
        assert_eq!(u16_at(&r, 6), Some(0x301));
        assert_eq!(&r[16..19], &[2, 6, 2]);
        assert_eq!(u32_at(&r, 20), Some(u32::MAX));
    }

    #[test]
    fn inet_answers_are_parsed_until_done_and_truncation_is_malformed() {
        let mut b = inet_answer(2, 10, 77);
        let mut done = Vec::new();
        done.extend_from_slice(&20u32.to_ne_bytes());
        done.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        done.extend_from_slice(&[0; 14]);
        let one = b.len();
        b.extend_from_slice(&done);
        let (found, finished) = inet_parse(&b).unwrap();
        assert!(finished);
        assert_eq!(
            found,
            vec![InetDiag {
                family: 2,
                protocol: 0,
                state: 10,
                src: vec![127, 0, 0, 1],
                sport: 8080,
                dst: vec![0; 4],
                dport: 0,
                bound_if: 3,
                rqueue: 2,
                wqueue: 9,
                ino: 77,
                md5sig: false,
            }]
        );
        for cut in 1..one {
            assert!(inet_parse(&b[..cut]).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn a_real_tcp_listener_is_found_with_its_backlog() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        let ino = std::fs::metadata(format!("/proc/self/fd/{}", l.as_raw_fd()))
            .unwrap()
            .ino();
        let all = inet_diag_all().unwrap();
        let d = &all[&ino];
        assert_eq!((d.state, d.sport, d.rqueue), (10, port, 0));
        assert_eq!(i32::from(d.protocol), libc::IPPROTO_TCP);
        assert_eq!(d.src, vec![127, 0, 0, 1]);
        // std's listen backlog.
        assert_eq!(d.wqueue, 128);
        assert!(!d.md5sig);
    }

    #[test]
    fn a_listener_with_a_tcp_md5sig_key_is_told() {
        use std::os::fd::AsRawFd;
        use std::os::unix::fs::MetadataExt;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        // struct tcp_md5sig: a sockaddr_storage (128 bytes), flags, prefix length, key length,
        // ifindex, then the key (80 bytes).
        let mut sig = vec![0u8; 128 + 8 + 80];
        sig[0..2].copy_from_slice(&u16::try_from(libc::AF_INET).unwrap().to_ne_bytes());
        sig[4..8].copy_from_slice(&[127, 0, 0, 1]);
        sig[130..132].copy_from_slice(&4u16.to_ne_bytes());
        sig[136..140].copy_from_slice(b"key!");
        // SAFETY: the kernel reads `sig.len()` bytes from `sig`, live.
        let r = unsafe {
            libc::setsockopt(
                l.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_MD5SIG,
                sig.as_ptr().cast(),
                libc::socklen_t::try_from(sig.len()).unwrap(),
            )
        };
        assert_eq!(r, 0, "{}", std::io::Error::last_os_error());
        let ino = std::fs::metadata(format!("/proc/self/fd/{}", l.as_raw_fd()))
            .unwrap()
            .ino();
        assert!(inet_diag_all().unwrap()[&ino].md5sig);
    }
}
