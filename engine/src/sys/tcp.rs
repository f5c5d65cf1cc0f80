//! An established TCP connection read and made again through `TCP_REPAIR` (the kernel's
//! repair mode, `CAP_NET_ADMIN`): in repair mode a socket sends nothing (no handshake at
//! `connect`, no FIN or reset at `close`), its queues are read with `MSG_PEEK` and filled
//! with `send`, and its sequence numbers, window and negotiated options are set directly.

use super::socket::{set_sockopt_bytes, set_sockopt_int, sockopt_bytes, sockopt_int};
use super::SysError;
use nix::errno::Errno;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};

const TCP_REPAIR: i32 = 19;
const TCP_REPAIR_QUEUE: i32 = 20;
const TCP_QUEUE_SEQ: i32 = 21;
const TCP_REPAIR_OPTIONS: i32 = 22;
const TCP_TIMESTAMP: i32 = 24;
const TCP_REPAIR_WINDOW: i32 = 29;
/// `TCP_RECV_QUEUE` and `TCP_SEND_QUEUE`, the queues `TCP_REPAIR_QUEUE` selects.
pub const TCP_RECV_QUEUE: i32 = 1;
pub const TCP_SEND_QUEUE: i32 = 2;
/// `tcpi_options` bits of `TCP_INFO`.
pub const TCPI_OPT_TIMESTAMPS: u32 = 1;
pub const TCPI_OPT_SACK: u32 = 2;
pub const TCPI_OPT_WSCALE: u32 = 4;
/// `TCPOPT_*` codes `TCP_REPAIR_OPTIONS` takes.
const TCPOPT_MAXSEG: u32 = 2;
const TCPOPT_WINDOW: u32 = 3;
const TCPOPT_SACK_PERM: u32 = 4;
const TCPOPT_TIMESTAMP: u32 = 8;
/// `SIOCOUTQNSD`: bytes of the send queue not sent yet.
const SIOCOUTQNSD: libc::c_ulong = 0x894B;

use super::error::call_err as err;

fn with_op(op: &'static str) -> impl FnOnce(SysError) -> SysError {
    move |e| match e {
        SysError::Call { source, tid, .. } => SysError::Call { op, tid, source },
        other => other,
    }
}

/// How repair mode is left or entered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Repair {
    On,
    /// Off without sending anything (`TCP_REPAIR_OFF_NO_WP`; `TCP_REPAIR_OFF` would send the
    /// peer a window probe, which a peer not made again yet would answer with a reset).
    OffQuiet,
}

/// Puts the TCP socket `fd` in or out of repair mode (`TCP_REPAIR`; on needs
/// `CAP_NET_ADMIN`).
pub fn tcp_repair(fd: BorrowedFd<'_>, mode: Repair) -> Result<(), SysError> {
    let v = match mode {
        Repair::On => 1,
        Repair::OffQuiet => -1,
    };
    set_sockopt_int(fd, libc::IPPROTO_TCP, TCP_REPAIR, v).map_err(with_op("setsockopt(TCP_REPAIR)"))
}

/// Whether the engine may put a TCP socket in repair mode: tried on a new socket of its own.
pub fn tcp_repair_allowed() -> Result<bool, SysError> {
    let s = super::socket::fresh_socket(libc::AF_INET, libc::SOCK_STREAM)?;
    match tcp_repair(s.as_fd(), Repair::On) {
        Ok(()) => Ok(true),
        Err(SysError::Call {
            source: Errno::EPERM,
            ..
        }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// `struct tcp_repair_window`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TcpWindow {
    pub snd_wl1: u32,
    pub snd_wnd: u32,
    pub max_window: u32,
    pub rcv_wnd: u32,
    pub rcv_wup: u32,
}

/// What repair mode shows of an established connection.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TcpRepairState {
    /// `TCP_QUEUE_SEQ` of the send queue (the sequence number after its last byte) and of the
    /// receive queue (the next one expected).
    pub send_seq: u32,
    pub recv_seq: u32,
    /// The send queue (sent and not acknowledged, then not sent yet) and the receive queue
    /// (received and not read).
    pub send_queue: Vec<u8>,
    pub recv_queue: Vec<u8>,
    /// The bytes at the end of the send queue not sent yet (`SIOCOUTQNSD`).
    pub unsent: u32,
    /// The MSS clamp (`TCP_MAXSEG` in repair mode).
    pub mss: u32,
    /// `tcpi_options`, `tcpi_snd_wscale`, `tcpi_rcv_wscale` of `TCP_INFO`.
    pub options: u32,
    pub snd_wscale: u32,
    pub rcv_wscale: u32,
    /// `TCP_TIMESTAMP`: the connection's timestamp clock now.
    pub timestamp: u32,
    pub window: TcpWindow,
}

/// An int `ioctl` of `fd` that counts bytes, never negative.
fn ioctl_count(fd: BorrowedFd<'_>, req: libc::c_ulong, op: &'static str) -> Result<u32, SysError> {
    let v = super::socket::ioctl_int(fd, req, op)?;
    u32::try_from(v).map_err(|_| err(op)(Errno::ERANGE))
}

/// `len` bytes of the selected queue, peeked (`MSG_PEEK`, which in repair mode reads the
/// queue `TCP_REPAIR_QUEUE` chose), all of them or an error.
fn peek(fd: BorrowedFd<'_>, len: u32) -> Result<Vec<u8>, SysError> {
    let len = usize::try_from(len).map_err(|_| err("recv(MSG_PEEK)")(Errno::ERANGE))?;
    let mut buf = vec![0u8; len];
    if len == 0 {
        return Ok(buf);
    }
    // SAFETY: `buf` is a live buffer of `len` bytes; the kernel writes at most that many.
    let n = unsafe {
        libc::recv(
            fd.as_raw_fd(),
            buf.as_mut_ptr().cast(),
            len,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    if n < 0 {
        return Err(err("recv(MSG_PEEK)")(Errno::last()));
    }
    if usize::try_from(n).ok() != Some(len) {
        return Err(err("recv(MSG_PEEK): a short queue")(Errno::EAGAIN));
    }
    Ok(buf)
}

fn select_queue(fd: BorrowedFd<'_>, queue: i32) -> Result<(), SysError> {
    set_sockopt_int(fd, libc::IPPROTO_TCP, TCP_REPAIR_QUEUE, queue)
        .map_err(with_op("setsockopt(TCP_REPAIR_QUEUE)"))
}

/// Reads the state of the established TCP socket `fd`, in repair mode (the caller's).
pub fn tcp_repair_read(fd: BorrowedFd<'_>) -> Result<TcpRepairState, SysError> {
    let u = |v: i32| u32::from_ne_bytes(v.to_ne_bytes());
    let mut s = TcpRepairState::default();
    select_queue(fd, TCP_SEND_QUEUE)?;
    s.send_seq = u(sockopt_int(fd, libc::IPPROTO_TCP, TCP_QUEUE_SEQ)
        .map_err(with_op("getsockopt(TCP_QUEUE_SEQ)"))?);
    let outq = ioctl_count(fd, libc::TIOCOUTQ as libc::c_ulong, "ioctl(SIOCOUTQ)")?;
    s.unsent = ioctl_count(fd, SIOCOUTQNSD, "ioctl(SIOCOUTQNSD)")?;
    s.send_queue = peek(fd, outq)?;
    select_queue(fd, TCP_RECV_QUEUE)?;
    s.recv_seq = u(sockopt_int(fd, libc::IPPROTO_TCP, TCP_QUEUE_SEQ)
        .map_err(with_op("getsockopt(TCP_QUEUE_SEQ)"))?);
    let inq = ioctl_count(fd, libc::FIONREAD as libc::c_ulong, "ioctl(SIOCINQ)")?;
    s.recv_queue = peek(fd, inq)?;
    // Back to no queue: a plain recv in repair mode fails rather than take data.
    select_queue(fd, 0)?;
    s.mss = u(sockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_MAXSEG)
        .map_err(with_op("getsockopt(TCP_MAXSEG)"))?);
    let info = sockopt_bytes(fd, libc::IPPROTO_TCP, libc::TCP_INFO, 8)
        .map_err(with_op("getsockopt(TCP_INFO)"))?;
    let (Some(&opts), Some(&scales)) = (info.get(5), info.get(6)) else {
        return Err(err("getsockopt(TCP_INFO)")(Errno::EBADMSG));
    };
    s.options = u32::from(opts);
    s.snd_wscale = u32::from(scales & 0xf);
    s.rcv_wscale = u32::from(scales >> 4);
    s.timestamp = u(sockopt_int(fd, libc::IPPROTO_TCP, TCP_TIMESTAMP)
        .map_err(with_op("getsockopt(TCP_TIMESTAMP)"))?);
    let w = sockopt_bytes(fd, libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, 20)
        .map_err(with_op("getsockopt(TCP_REPAIR_WINDOW)"))?;
    let at = |i: usize| {
        w.get(i * 4..i * 4 + 4)
            .and_then(|b| b.try_into().ok())
            .map(u32::from_ne_bytes)
            .ok_or_else(|| err("getsockopt(TCP_REPAIR_WINDOW)")(Errno::EBADMSG))
    };
    s.window = TcpWindow {
        snd_wl1: at(0)?,
        snd_wnd: at(1)?,
        max_window: at(2)?,
        rcv_wnd: at(3)?,
        rcv_wup: at(4)?,
    };
    Ok(s)
}

/// Sets the sequence number `TCP_QUEUE_SEQ` of `queue` of the socket `fd`, in repair mode
/// and not connected yet.
pub fn tcp_set_queue_seq(fd: BorrowedFd<'_>, queue: i32, seq: u32) -> Result<(), SysError> {
    select_queue(fd, queue)?;
    set_sockopt_int(
        fd,
        libc::IPPROTO_TCP,
        TCP_QUEUE_SEQ,
        i32::from_ne_bytes(seq.to_ne_bytes()),
    )
    .map_err(with_op("setsockopt(TCP_QUEUE_SEQ)"))
}

/// Sets the options the connection negotiated (`TCP_REPAIR_OPTIONS`): the MSS clamp, and
/// those `options` (`tcpi_options`) names, once connected in repair mode.
pub fn tcp_set_repair_options(
    fd: BorrowedFd<'_>,
    mss: u32,
    options: u32,
    snd_wscale: u32,
    rcv_wscale: u32,
) -> Result<(), SysError> {
    let mut opts = vec![(TCPOPT_MAXSEG, mss)];
    if options & TCPI_OPT_SACK != 0 {
        opts.push((TCPOPT_SACK_PERM, 0));
    }
    if options & TCPI_OPT_WSCALE != 0 {
        opts.push((TCPOPT_WINDOW, snd_wscale | (rcv_wscale << 16)));
    }
    if options & TCPI_OPT_TIMESTAMPS != 0 {
        opts.push((TCPOPT_TIMESTAMP, 0));
    }
    let bytes: Vec<u8> = opts
        .iter()
        .flat_map(|(c, v)| c.to_ne_bytes().into_iter().chain(v.to_ne_bytes()))
        .collect();
    set_sockopt_bytes(fd, libc::IPPROTO_TCP, TCP_REPAIR_OPTIONS, &bytes)
        .map_err(with_op("setsockopt(TCP_REPAIR_OPTIONS)"))
}

/// Sets the connection's timestamp clock (`TCP_TIMESTAMP`), in repair mode.
pub fn tcp_set_timestamp(fd: BorrowedFd<'_>, ts: u32) -> Result<(), SysError> {
    set_sockopt_int(
        fd,
        libc::IPPROTO_TCP,
        TCP_TIMESTAMP,
        i32::from_ne_bytes(ts.to_ne_bytes()),
    )
    .map_err(with_op("setsockopt(TCP_TIMESTAMP)"))
}

/// Sets the connection's windows (`TCP_REPAIR_WINDOW`), in repair mode.
pub fn tcp_set_window(fd: BorrowedFd<'_>, w: &TcpWindow) -> Result<(), SysError> {
    let bytes: Vec<u8> = [w.snd_wl1, w.snd_wnd, w.max_window, w.rcv_wnd, w.rcv_wup]
        .iter()
        .flat_map(|v| v.to_ne_bytes())
        .collect();
    set_sockopt_bytes(fd, libc::IPPROTO_TCP, TCP_REPAIR_WINDOW, &bytes)
        .map_err(with_op("setsockopt(TCP_REPAIR_WINDOW)"))
}

/// Puts `data` in `queue` of the connected socket `fd` in repair mode (`send`: the receive
/// queue as if received, the send queue as if sent), then selects no queue again.
pub fn tcp_fill_queue(fd: BorrowedFd<'_>, queue: i32, data: &[u8]) -> Result<(), SysError> {
    select_queue(fd, queue)?;
    let sent = super::socket::send_all(fd, data, true);
    // The queue is put back whatever the send did.
    select_queue(fd, 0)?;
    sent
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::fd::OwnedFd;

    /// A connection over 127.0.0.1 read in repair mode, made again on two new sockets (the old
    /// ones closed in repair mode, silently), and carrying its queued data and new data.
    #[test]
    fn a_loopback_connection_is_read_and_made_again() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let mut c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        let (mut a, _) = l.accept().unwrap();
        c.write_all(b"ping-data").unwrap();
        a.write_all(b"pong").unwrap();
        // Acknowledged: nothing left in either send queue.
        for s in [&c, &a] {
            while ioctl_count(s.as_fd(), libc::TIOCOUTQ as libc::c_ulong, "outq").unwrap() != 0 {
                std::thread::yield_now();
            }
        }
        let names = [
            (c.local_addr().unwrap(), c.peer_addr().unwrap()),
            (a.local_addr().unwrap(), a.peer_addr().unwrap()),
        ];
        let mut states = Vec::new();
        for s in [&c, &a] {
            tcp_repair(s.as_fd(), Repair::On).unwrap();
            states.push(tcp_repair_read(s.as_fd()).unwrap());
        }
        assert_eq!(states[0].recv_queue, b"pong");
        assert_eq!(states[1].recv_queue, b"ping-data");
        assert!(states[0].send_queue.is_empty() && states[0].unsent == 0);
        assert_eq!(states[0].send_seq, states[1].recv_seq);
        drop((c, a));
        let mut made = Vec::new();
        for ((local, peer), s) in names.iter().zip(&states) {
            let f = match local {
                std::net::SocketAddr::V4(_) => libc::AF_INET,
                std::net::SocketAddr::V6(_) => libc::AF_INET6,
            };
            let n: OwnedFd = super::super::socket::fresh_socket(f, libc::SOCK_STREAM).unwrap();
            tcp_repair(n.as_fd(), Repair::On).unwrap();
            let n = socket2_like(n, *local, *peer, s);
            made.push(n);
        }
        let [mut c, mut a]: [std::net::TcpStream; 2] = made.try_into().unwrap();
        let mut buf = [0u8; 9];
        a.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"ping-data");
        let mut buf = [0u8; 4];
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"pong");
        c.write_all(b"more").unwrap();
        a.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"more");
        a.write_all(b"back").unwrap();
        c.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"back");
    }

    fn raw_addr(a: std::net::SocketAddr) -> (libc::sockaddr_in, libc::socklen_t) {
        let std::net::SocketAddr::V4(v4) = a else {
            panic!("IPv4 only here")
        };
        let sa = libc::sockaddr_in {
            sin_family: libc::sa_family_t::try_from(libc::AF_INET).unwrap(),
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes(v4.ip().octets()),
            },
            sin_zero: [0; 8],
        };
        (
            sa,
            libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_in>()).unwrap(),
        )
    }

    fn socket2_like(
        n: OwnedFd,
        local: std::net::SocketAddr,
        peer: std::net::SocketAddr,
        s: &TcpRepairState,
    ) -> std::net::TcpStream {
        let (l, len) = raw_addr(local);
        // SAFETY: `l` is a live sockaddr_in of `len` bytes.
        let r = unsafe { libc::bind(n.as_raw_fd(), std::ptr::addr_of!(l).cast(), len) };
        assert_eq!(r, 0, "bind: {}", Errno::last());
        let q = |len: usize| u32::try_from(len).unwrap();
        tcp_set_queue_seq(
            n.as_fd(),
            TCP_RECV_QUEUE,
            s.recv_seq.wrapping_sub(q(s.recv_queue.len())),
        )
        .unwrap();
        tcp_set_queue_seq(
            n.as_fd(),
            TCP_SEND_QUEUE,
            s.send_seq.wrapping_sub(q(s.send_queue.len())),
        )
        .unwrap();
        let (p, len) = raw_addr(peer);
        // SAFETY: `p` is a live sockaddr_in of `len` bytes.
        let r = unsafe { libc::connect(n.as_raw_fd(), std::ptr::addr_of!(p).cast(), len) };
        assert_eq!(r, 0, "connect: {}", Errno::last());
        tcp_set_repair_options(n.as_fd(), s.mss, s.options, s.snd_wscale, s.rcv_wscale).unwrap();
        if s.options & TCPI_OPT_TIMESTAMPS != 0 {
            tcp_set_timestamp(n.as_fd(), s.timestamp).unwrap();
        }
        tcp_fill_queue(n.as_fd(), TCP_RECV_QUEUE, &s.recv_queue).unwrap();
        tcp_fill_queue(n.as_fd(), TCP_SEND_QUEUE, &s.send_queue).unwrap();
        tcp_set_window(n.as_fd(), &s.window).unwrap();
        tcp_repair(n.as_fd(), Repair::OffQuiet).unwrap();
        std::net::TcpStream::from(n)
    }
}
