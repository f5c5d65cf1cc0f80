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
}
