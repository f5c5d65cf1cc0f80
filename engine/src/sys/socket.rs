//! An `AF_UNIX` socket seen from the engine: its queued messages read without taking them
//! (`SO_PEEK_OFF` and `MSG_PEEK`), its integer options, and a copy of a descriptor of a
//! traced task (`pidfd_getfd`), through which the restore fills and configures the sockets it
//! creates in the tree; a socket's peer credentials (`SO_PEERCRED`, `SO_PEERGROUPS`).

use super::SysError;
use nix::errno::Errno;
use nix::sys::socket::{recvmsg, send, ControlMessageOwned, MsgFlags};
use std::io::IoSliceMut;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use super::error::call_err as err;

/// An `ioctl` of the engine's own descriptor `fd` that writes one int (`FIONREAD`,
/// `SIOCOUTQ`, ...); `op` names it in the error.
pub(super) fn ioctl_int(
    fd: BorrowedFd<'_>,
    req: libc::c_ulong,
    op: &'static str,
) -> Result<libc::c_int, SysError> {
    let mut v: libc::c_int = 0;
    // SAFETY: the request writes one int into `v`, live.
    let r = unsafe { libc::ioctl(fd.as_raw_fd(), req, std::ptr::addr_of_mut!(v)) };
    if r < 0 {
        return Err(err(op)(Errno::last()));
    }
    Ok(v)
}

/// An integer socket option (`getsockopt`).
pub fn sockopt_int(fd: BorrowedFd<'_>, level: i32, name: i32) -> Result<i32, SysError> {
    let mut v: libc::c_int = 0;
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
        .map_err(|_| err("getsockopt")(Errno::EINVAL))?;
    // SAFETY: `v` and `len` are live and `len` says how big `v` is; the kernel writes at most
    // that many bytes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::addr_of_mut!(v).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(err("getsockopt")(Errno::last()));
    }
    Ok(v)
}

/// Sets an integer socket option (`setsockopt`).
pub fn set_sockopt_int(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    value: i32,
) -> Result<(), SysError> {
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
        .map_err(|_| err("setsockopt")(Errno::EINVAL))?;
    // SAFETY: the kernel reads `len` bytes from `value`, a live int.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            std::ptr::addr_of!(value).cast(),
            len,
        )
    };
    if r < 0 {
        return Err(err("setsockopt")(Errno::last()));
    }
    Ok(())
}

/// A `struct timeval` socket option (`SO_RCVTIMEO`, `SO_SNDTIMEO`) in microseconds; 0 is none.
pub fn sockopt_timeval(fd: BorrowedFd<'_>, name: i32) -> Result<u64, SysError> {
    let mut v = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::timeval>())
        .map_err(|_| err("getsockopt")(Errno::EINVAL))?;
    // SAFETY: `v` and `len` are live and `len` says how big `v` is; the kernel writes at most
    // that many bytes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            std::ptr::addr_of_mut!(v).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(err("getsockopt")(Errno::last()));
    }
    // The kernel gives a non-negative time (an infinite one reads as zero).
    let sec = u64::try_from(v.tv_sec).unwrap_or(0);
    let usec = u64::try_from(v.tv_usec).unwrap_or(0);
    Ok(sec.saturating_mul(1_000_000).saturating_add(usec))
}

/// Sets a `struct timeval` socket option to `us` microseconds.
pub fn set_sockopt_timeval(fd: BorrowedFd<'_>, name: i32, us: u64) -> Result<(), SysError> {
    let v = libc::timeval {
        tv_sec: libc::time_t::try_from(us / 1_000_000).unwrap_or(libc::time_t::MAX),
        // Below one million: fits.
        tv_usec: libc::suseconds_t::try_from(us % 1_000_000).unwrap_or(0),
    };
    let len = libc::socklen_t::try_from(std::mem::size_of::<libc::timeval>())
        .map_err(|_| err("setsockopt")(Errno::EINVAL))?;
    // SAFETY: the kernel reads `len` bytes from `v`, a live timeval.
    let r = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            name,
            std::ptr::addr_of!(v).cast(),
            len,
        )
    };
    if r < 0 {
        return Err(err("setsockopt")(Errno::last()));
    }
    Ok(())
}

/// The messages queued for reading on a socket, left in place.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Peeked {
    /// Oldest first; a datagram or a record per entry (for a stream, chunks of its bytes).
    pub messages: Vec<Vec<u8>>,
    /// Control messages found in flight, by name (`SCM_RIGHTS`, `SCM_CREDENTIALS`, ...).
    pub control: Vec<&'static str>,
    /// The walk of a seqpacket socket shut for reading ended on zero answers, which may be
    /// zero-length records as well as the end: [`queue_truesize`] against the sender's
    /// [`unix_outq`] tells whether anything was left unseen.
    pub trailing_zeros: bool,
}

/// The first chunk size tried for one message.
const PEEK_CHUNK: usize = 256 * 1024;

/// Reads what is queued on `fd` (an `AF_UNIX` socket of type `sock_type`) without taking it:
/// `SO_PEEK_OFF` is set to 0, the queue walked with `MSG_PEEK`, then the option put back.
/// For datagrams and records each message is kept whole. `read_shut` says the socket cannot
/// receive any more (`RCV_SHUTDOWN`): on a seqpacket socket a zero-length answer may then be
/// the end of the queue as well as an empty record (see [`Peeked::trailing_zeros`]).
///
/// Not seen: a zero-length datagram or record the process peeked itself with `SO_PEEK_OFF`
/// set, or one an earlier walk peeked, when it is not first in the queue (the kernel marks
/// it peeked and every walk at an offset passes it). Only the sender's
/// [`unix_outq`] against [`queue_truesize`] of what was seen tells that it is there.
/// Descriptors that come with a peeked message (`SCM_RIGHTS` copies them) are closed at once.
pub fn peek_queue(fd: BorrowedFd<'_>, sock_type: i32, read_shut: bool) -> Result<Peeked, SysError> {
    let old = sockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF)?;
    set_sockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, 0)?;
    let out = peek_all(fd, sock_type, read_shut);
    let put_back = set_sockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, old);
    let mut out = out?;
    put_back?;
    if sock_type == libc::SOCK_STREAM && has_oob(fd)? {
        out.control.push("out-of-band data (MSG_OOB)");
    }
    Ok(out)
}

/// Whether a stream socket holds an out-of-band byte not read yet, left in place.
fn has_oob(fd: BorrowedFd<'_>) -> Result<bool, SysError> {
    let mut b = [0u8; 1];
    let flags = libc::MSG_OOB | libc::MSG_PEEK | libc::MSG_DONTWAIT;
    // SAFETY: `b` is a live one-byte buffer.
    let r = unsafe { libc::recv(fd.as_raw_fd(), b.as_mut_ptr().cast(), 1, flags) };
    if r >= 0 {
        return Ok(r > 0);
    }
    match Errno::last() {
        // None (EINVAL), or a kernel without out-of-band data on Unix sockets (EOPNOTSUPP).
        Errno::EINVAL | Errno::EOPNOTSUPP | Errno::EAGAIN => Ok(false),
        e => Err(err("recv(MSG_OOB|MSG_PEEK)")(e)),
    }
}

fn peek_all(fd: BorrowedFd<'_>, sock_type: i32, read_shut: bool) -> Result<Peeked, SysError> {
    let stream = sock_type == libc::SOCK_STREAM;
    // The kernel answers 0 at the end of the queue only for a seqpacket socket shut for
    // reading; a datagram socket answers EAGAIN there, so its every 0 is a datagram.
    let eof_is_zero = read_shut && sock_type == libc::SOCK_SEQPACKET;
    let mut out = Peeked::default();
    let mut offset: usize = 0;
    let mut buf = vec![0u8; PEEK_CHUNK];
    // Zero answers in a row on a seqpacket socket shut for reading: records if more follows.
    let mut empty_pending: usize = 0;
    loop {
        let mut flags = MsgFlags::MSG_PEEK | MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC;
        if !stream {
            flags |= MsgFlags::MSG_TRUNC;
        }
        let mut space = nix::cmsg_space!([RawFd; super::FDS_PER_MESSAGE], libc::ucred, [u8; 256]);
        let (n, control) = {
            let mut iov = [IoSliceMut::new(&mut buf)];
            let msg = match recvmsg::<()>(fd.as_raw_fd(), &mut iov, Some(&mut space), flags) {
                Ok(m) => m,
                Err(Errno::EAGAIN) => break,
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(err("recvmsg(MSG_PEEK)")(e)),
            };
            let mut control = Vec::new();
            for c in msg.cmsgs().map_err(err("recvmsg(MSG_PEEK)"))? {
                control.push(match c {
                    ControlMessageOwned::ScmRights(fds) => {
                        for f in fds {
                            // SAFETY: the peek just installed this descriptor in our table;
                            // nobody else owns it, and it is closed here, unused.
                            drop(unsafe { OwnedFd::from_raw_fd(f) });
                        }
                        "SCM_RIGHTS (descriptors)"
                    }
                    ControlMessageOwned::ScmCredentials(_) => "SCM_CREDENTIALS (credentials)",
                    _ => "a control message (SCM_SECURITY or another)",
                });
            }
            if msg.flags.contains(MsgFlags::MSG_CTRUNC) {
                control.push("a truncated control message");
            }
            (msg.bytes, control)
        };
        for c in control {
            if !out.control.contains(&c) {
                out.control.push(c);
            }
        }
        if n > buf.len() {
            // A datagram bigger than the buffer: look at it again, whole.
            buf.resize(n, 0);
            let at = i32::try_from(offset).map_err(|_| err("setsockopt")(Errno::E2BIG))?;
            set_sockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, at)?;
            continue;
        }
        if n == 0 {
            if stream {
                break;
            }
            if eof_is_zero {
                // A zero-length record (now marked peeked, so the next peek at this offset
                // passes it) or the end: only what follows tells.
                empty_pending += 1;
                if empty_pending > EMPTY_RUN_CAP {
                    break;
                }
                continue;
            }
        } else {
            out.messages
                .extend(std::iter::repeat_with(Vec::new).take(empty_pending));
            empty_pending = 0;
        }
        out.messages.push(buf[..n].to_vec());
        offset += n;
    }
    out.trailing_zeros = empty_pending > 0;
    Ok(out)
}

/// How many zero answers in a row the walk of a seqpacket socket shut for reading takes as
/// possible records before it takes them as the end of the queue.
const EMPTY_RUN_CAP: usize = 64;

/// The length of the first message queued on `fd` (an `AF_UNIX` datagram or seqpacket
/// socket), left in place: peeked with `SO_PEEK_OFF` off (then put back), which the kernel
/// answers with the head of the queue even when it is marked peeked; `None` when the queue
/// is empty (`EAGAIN`). On a seqpacket socket shut for reading, 0 is also the end.
pub fn peek_head_len(fd: BorrowedFd<'_>) -> Result<Option<usize>, SysError> {
    let old = sockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF)?;
    set_sockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, -1)?;
    let flags = libc::MSG_PEEK | libc::MSG_DONTWAIT | libc::MSG_TRUNC;
    let got = loop {
        // SAFETY: a zero-length read into no buffer: the kernel writes nothing.
        let r = unsafe { libc::recv(fd.as_raw_fd(), std::ptr::null_mut(), 0, flags) };
        match usize::try_from(r) {
            Ok(n) => break Ok(Some(n)),
            Err(_) => match Errno::last() {
                Errno::EINTR => continue,
                Errno::EAGAIN => break Ok(None),
                e => break Err(err("recv(MSG_PEEK)")(e)),
            },
        }
    };
    let put_back = set_sockopt_int(fd, libc::SOL_SOCKET, libc::SO_PEEK_OFF, old);
    let got = got?;
    put_back?;
    Ok(got)
}

/// What the sender of a Unix socket has in flight (`SIOCOUTQ`): the kernel's size in memory
/// (`truesize`) of every message it sent that no one has read yet.
pub fn unix_outq(fd: BorrowedFd<'_>) -> Result<i64, SysError> {
    ioctl_int(fd, libc::TIOCOUTQ, "ioctl(SIOCOUTQ)").map(i64::from)
}

/// What `messages`, sent as datagrams or records of a new `AF_UNIX` pair of type `sock_type`,
/// weigh in its sender's [`unix_outq`]: the same kernel sizes them as it sized the dumped
/// ones, so a dumped sender holding more has messages in flight that a walk did not see.
pub fn queue_truesize(sock_type: i32, messages: &[Vec<u8>]) -> Result<i64, SysError> {
    let mut fds = [0 as RawFd; 2];
    // SAFETY: socketpair writes two descriptors into `fds`, a live [RawFd; 2].
    let r = unsafe {
        libc::socketpair(
            libc::AF_UNIX,
            sock_type | libc::SOCK_CLOEXEC,
            0,
            fds.as_mut_ptr(),
        )
    };
    if r < 0 {
        return Err(err("socketpair")(Errno::last()));
    }
    // SAFETY: socketpair just made both; nobody else owns them.
    let (a, _b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let big = i32::MAX / 2;
    if set_sockopt_int(a.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUFFORCE, big).is_err() {
        set_sockopt_int(a.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, big)?;
    }
    for m in messages {
        send_all(a.as_fd(), m, false)?;
    }
    unix_outq(a.as_fd())
}

/// A new socket of the engine (`socket(family, ty, 0)`), close-on-exec: what a socket of
/// that kind holds before anyone sets an option on it.
pub fn fresh_socket(family: i32, ty: i32) -> Result<OwnedFd, SysError> {
    // SAFETY: socket takes only integers.
    let fd = unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(err("socket")(Errno::last()));
    }
    // SAFETY: socket just returned this descriptor; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// A socket option as `getsockopt` gives it, at most `max` bytes of it.
pub fn sockopt_bytes(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    max: usize,
) -> Result<Vec<u8>, SysError> {
    let mut v = vec![0u8; max];
    let mut len = libc::socklen_t::try_from(max).map_err(|_| err("getsockopt")(Errno::EINVAL))?;
    // SAFETY: `v` is a live buffer of `len` bytes; the kernel writes at most that many and
    // says how many in `len`.
    let r =
        unsafe { libc::getsockopt(fd.as_raw_fd(), level, name, v.as_mut_ptr().cast(), &mut len) };
    if r < 0 {
        return Err(err("getsockopt")(Errno::last()));
    }
    v.truncate(usize::try_from(len).unwrap_or(0).min(max));
    Ok(v)
}

/// Sets a socket option to `value`, as `getsockopt` gave it (`setsockopt`).
pub fn set_sockopt_bytes(
    fd: BorrowedFd<'_>,
    level: i32,
    name: i32,
    value: &[u8],
) -> Result<(), SysError> {
    let len =
        libc::socklen_t::try_from(value.len()).map_err(|_| err("setsockopt")(Errno::EINVAL))?;
    // SAFETY: the kernel reads at most `len` bytes from `value`, live.
    let r = unsafe { libc::setsockopt(fd.as_raw_fd(), level, name, value.as_ptr().cast(), len) };
    if r < 0 {
        return Err(err("setsockopt")(Errno::last()));
    }
    Ok(())
}

/// Whether a socket has an error pending (`SO_ERROR`, which reading would clear) or messages
/// on its error queue: `poll` says `POLLERR` without taking either.
pub fn has_pending_error(fd: BorrowedFd<'_>) -> Result<bool, SysError> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: 0,
        revents: 0,
    };
    // SAFETY: one live pollfd, no wait.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    if r < 0 {
        return Err(err("poll")(Errno::last()));
    }
    Ok(p.revents & libc::POLLERR != 0)
}

/// Sends `data` as one message on `fd`, without blocking: a full queue is `EAGAIN`.
pub fn send_all(fd: BorrowedFd<'_>, data: &[u8], stream: bool) -> Result<(), SysError> {
    let mut at = 0;
    loop {
        match send(
            fd.as_raw_fd(),
            &data[at..],
            MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_NOSIGNAL,
        ) {
            // Nothing taken of a non-empty rest: no progress to wait for.
            Ok(0) if at < data.len() => return Err(err("send")(Errno::ENOBUFS)),
            Ok(n) => at += n,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(err("send")(e)),
        }
        if !stream || at >= data.len() {
            return Ok(());
        }
    }
}

/// The protocol name the kernel gives the socket a `/proc/PID/fd/N` link leads to (the
/// `system.sockprotoname` attribute: `TCP`, `UDPv6`, `NETLINK`, ...), for sockets no
/// `sock_diag` table lists (an unbound TCP or UDP socket).
pub fn sock_proto_name(link: &std::path::Path) -> Result<String, SysError> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(link.as_os_str().as_bytes())
        .map_err(|_| err("getxattr(system.sockprotoname)")(Errno::EINVAL))?;
    let mut buf = [0u8; 64];
    // SAFETY: both strings are NUL-terminated and live; the kernel writes at most `buf.len()`
    // bytes into `buf`, live.
    let n = unsafe {
        libc::getxattr(
            path.as_ptr(),
            c"system.sockprotoname".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(n).map_err(|_| err("getxattr(system.sockprotoname)")(Errno::last()))?;
    let name = buf.get(..n).unwrap_or_default();
    Ok(String::from_utf8_lossy(name)
        .trim_end_matches('\0')
        .to_owned())
}

/// A socket's peer credentials as the kernel recorded them (`SO_PEERCRED`): the pid (the
/// thread group of the task that made or connected it) and the effective uid and gid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    pub pid: i32,
    pub uid: u32,
    pub gid: u32,
}

/// Whether socket `fd` has a peer (`getpeername`): false when it was never connected
/// (`ENOTCONN`); true for one connected to a peer that has since closed, which it still names.
pub fn has_peer(fd: BorrowedFd<'_>) -> Result<bool, SysError> {
    use nix::sys::socket::{getpeername, SockaddrStorage};
    match getpeername::<SockaddrStorage>(fd.as_raw_fd()) {
        Ok(_) => Ok(true),
        Err(Errno::ENOTCONN) => Ok(false),
        Err(e) => Err(err("getpeername")(e)),
    }
}

/// `SO_PEERCRED` of socket `fd`.
pub fn peer_cred(fd: BorrowedFd<'_>) -> Result<PeerCred, SysError> {
    let mut v = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::ucred>())
        .map_err(|_| err("getsockopt(SO_PEERCRED)")(Errno::EINVAL))?;
    // SAFETY: `v` and `len` are live and `len` says how big `v` is; the kernel writes at most
    // that many bytes.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(v).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return Err(err("getsockopt(SO_PEERCRED)")(Errno::last()));
    }
    Ok(PeerCred {
        pid: v.pid,
        uid: v.uid,
        gid: v.gid,
    })
}

/// `SO_PEERGROUPS` of socket `fd`: the supplementary groups of its peer credentials, as the
/// kernel keeps them (sorted); `None` where the kernel does not have the option.
pub fn peer_groups(fd: BorrowedFd<'_>) -> Result<Option<Vec<u32>>, SysError> {
    let op = "getsockopt(SO_PEERGROUPS)";
    let mut want = 64usize;
    loop {
        let mut v = vec![0u32; want];
        let bytes = want * std::mem::size_of::<u32>();
        let mut len = libc::socklen_t::try_from(bytes).map_err(|_| err(op)(Errno::EINVAL))?;
        // SAFETY: `v` is a live buffer of `len` bytes; the kernel writes at most that many and
        // says how many in `len` (or, with ERANGE, how many it needs).
        let r = unsafe {
            libc::getsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                v.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let got = usize::try_from(len).unwrap_or(0) / std::mem::size_of::<u32>();
        if r == 0 {
            v.truncate(got.min(want));
            return Ok(Some(v));
        }
        match Errno::last() {
            Errno::ENOPROTOOPT => return Ok(None),
            Errno::ERANGE if got > want => want = got,
            e => return Err(err(op)(e)),
        }
    }
}

/// Whether the process `SO_PEERCRED` of socket `fd` names is still the one that made or
/// connected the socket (`SO_PEERPIDFD`, whose `Pid:` in fdinfo is -1 once that process is
/// gone, even when its number was given to another): `Some(pid)` as the pidfd shows it
/// (-1: gone), `None` where the kernel does not have the option.
pub fn peer_pid_now(fd: BorrowedFd<'_>) -> Result<Option<i32>, SysError> {
    let op = "getsockopt(SO_PEERPIDFD)";
    let mut v: libc::c_int = -1;
    let mut len = libc::socklen_t::try_from(std::mem::size_of::<libc::c_int>())
        .map_err(|_| err(op)(Errno::EINVAL))?;
    // SAFETY: `v` and `len` are live and `len` says how big `v` is; the kernel writes at most
    // that many bytes (a new pidfd, close-on-exec, which we own).
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERPIDFD,
            std::ptr::addr_of_mut!(v).cast(),
            &mut len,
        )
    };
    if r < 0 {
        return match Errno::last() {
            Errno::ENOPROTOOPT => Ok(None),
            // The task is gone (and the kernel keeps no stale pidfd for it), or none recorded.
            Errno::ESRCH | Errno::EINVAL | Errno::ENODATA => Ok(Some(-1)),
            e => Err(err(op)(e)),
        };
    }
    // SAFETY: getsockopt just installed this descriptor; nobody else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(v) };
    let path = format!("/proc/self/fdinfo/{}", pidfd.as_raw_fd());
    let info = std::fs::read_to_string(&path).map_err(|e| SysError::Io {
        what: format!("reading {path}"),
        source: e,
    })?;
    Ok(info
        .lines()
        .find_map(|l| l.strip_prefix("Pid:"))
        .and_then(|v| v.trim().parse().ok()))
}

/// A copy, in the engine, of descriptor `fd` of process `pid` (`pidfd_getfd`): the same open
/// file description, close-on-exec. The engine must be allowed to ptrace `pid`.
pub fn fd_of(pid: i32, fd: u64) -> Result<OwnedFd, SysError> {
    let call = |op| {
        move |source| SysError::Call {
            op,
            tid: pid,
            source,
        }
    };
    // SAFETY: pidfd_open takes a pid and flags, no pointer.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
    if pidfd < 0 {
        return Err(call("pidfd_open")(Errno::last()));
    }
    let pidfd = RawFd::try_from(pidfd).map_err(|_| call("pidfd_open")(Errno::EBADF))?;
    // SAFETY: pidfd_open just returned this descriptor; nobody else owns it.
    let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
    let target = RawFd::try_from(fd).map_err(|_| call("pidfd_getfd")(Errno::EBADF))?;
    // SAFETY: pidfd_getfd takes two descriptors and flags, no pointer.
    let got = unsafe { libc::syscall(libc::SYS_pidfd_getfd, pidfd.as_raw_fd(), target, 0) };
    if got < 0 {
        return Err(call("pidfd_getfd")(Errno::last()));
    }
    let got = RawFd::try_from(got).map_err(|_| call("pidfd_getfd")(Errno::EBADF))?;
    // SAFETY: pidfd_getfd just installed this descriptor (close-on-exec); nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(got) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixDatagram, UnixStream};

    #[test]
    fn datagrams_are_peeked_whole_and_left_in_place() {
        let (a, b) = UnixDatagram::pair().unwrap();
        a.send(b"one").unwrap();
        a.send(b"").unwrap();
        a.send(b"three!").unwrap();
        let p = peek_queue(b.as_fd(), libc::SOCK_DGRAM, false).unwrap();
        assert_eq!(
            p.messages,
            vec![b"one".to_vec(), Vec::new(), b"three!".to_vec()]
        );
        assert!(p.control.is_empty());
        assert_eq!(
            sockopt_int(b.as_fd(), libc::SOL_SOCKET, libc::SO_PEEK_OFF).unwrap(),
            -1
        );
        let mut r = [0u8; 16];
        assert_eq!(b.recv(&mut r).unwrap(), 3);
    }

    #[test]
    fn zero_length_messages_at_the_end_of_a_queue_shut_for_reading() {
        for ty in [libc::SOCK_DGRAM, libc::SOCK_SEQPACKET] {
            let mut fds = [0; 2];
            // SAFETY: socketpair writes two descriptors into `fds`.
            let r = unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) };
            assert_eq!(r, 0);
            // SAFETY: just made, ours.
            let (a, b) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
            let sent = [
                b"x".to_vec(),
                Vec::new(),
                b"y".to_vec(),
                Vec::new(),
                Vec::new(),
            ];
            for m in &sent {
                send_all(a.as_fd(), m, false).unwrap();
            }
            nix::sys::socket::shutdown(b.as_raw_fd(), nix::sys::socket::Shutdown::Read).unwrap();
            let p = peek_queue(b.as_fd(), ty, true).unwrap();
            let weight = unix_outq(a.as_fd()).unwrap();
            assert_eq!(weight, queue_truesize(ty, &sent).unwrap());
            if ty == libc::SOCK_DGRAM {
                // The end is EAGAIN: every zero-length datagram is seen.
                assert_eq!(p.messages, sent.to_vec());
                assert!(!p.trailing_zeros);
            } else {
                // The end reads as 0: the trailing records are not told from it, and what
                // was seen weighs less than what the sender has in flight.
                assert_eq!(p.messages, sent[..3].to_vec());
                assert!(p.trailing_zeros);
                assert!(queue_truesize(ty, &p.messages).unwrap() < weight);
            }
            // A walk again: the empty ones are marked peeked now; a walk at offsets passes
            // the middle one, which only the weight shows.
            let again = peek_queue(b.as_fd(), ty, true).unwrap();
            assert!(queue_truesize(ty, &again.messages).unwrap() < weight);
        }
    }

    #[test]
    fn a_big_datagram_is_peeked_whole() {
        let (a, b) = UnixDatagram::pair().unwrap();
        set_sockopt_int(a.as_fd(), libc::SOL_SOCKET, libc::SO_SNDBUF, 1 << 20).unwrap();
        set_sockopt_int(b.as_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 1 << 20).unwrap();
        let big: Vec<u8> = (0..400u32 * 1024)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        a.send(b"x").unwrap();
        a.send(&big).unwrap();
        let p = peek_queue(b.as_fd(), libc::SOCK_DGRAM, false).unwrap();
        assert_eq!(p.messages, vec![b"x".to_vec(), big]);
    }

    #[test]
    fn a_stream_is_peeked_in_order_and_rights_in_flight_are_named() {
        use std::io::Write;
        let (mut a, b) = UnixStream::pair().unwrap();
        a.write_all(b"hello ").unwrap();
        a.write_all(b"world").unwrap();
        let p = peek_queue(b.as_fd(), libc::SOCK_STREAM, false).unwrap();
        assert_eq!(p.messages.concat(), b"hello world".to_vec());
        let devnull = std::fs::File::open("/dev/null").unwrap();
        let fds = [devnull.as_raw_fd()];
        nix::sys::socket::sendmsg::<()>(
            a.as_raw_fd(),
            &[std::io::IoSlice::new(b"!")],
            &[nix::sys::socket::ControlMessage::ScmRights(&fds)],
            MsgFlags::empty(),
            None,
        )
        .unwrap();
        let p = peek_queue(b.as_fd(), libc::SOCK_STREAM, false).unwrap();
        assert_eq!(p.control, vec!["SCM_RIGHTS (descriptors)"]);
        assert_eq!(p.messages.concat(), b"hello world!".to_vec());
    }

    #[test]
    fn out_of_band_data_is_named() {
        let (a, b) = UnixStream::pair().unwrap();
        nix::sys::socket::send(a.as_raw_fd(), b"ab", MsgFlags::empty()).unwrap();
        assert!(peek_queue(b.as_fd(), libc::SOCK_STREAM, false)
            .unwrap()
            .control
            .is_empty());
        nix::sys::socket::send(a.as_raw_fd(), b"!", MsgFlags::MSG_OOB).unwrap();
        let p = peek_queue(b.as_fd(), libc::SOCK_STREAM, false).unwrap();
        assert_eq!(p.control, vec!["out-of-band data (MSG_OOB)"]);
    }

    #[test]
    fn timeouts_are_seen() {
        let (a, _b) = UnixStream::pair().unwrap();
        assert_eq!(sockopt_timeval(a.as_fd(), libc::SO_RCVTIMEO).unwrap(), 0);
        a.set_read_timeout(Some(std::time::Duration::from_millis(1500)))
            .unwrap();
        assert_eq!(
            sockopt_timeval(a.as_fd(), libc::SO_RCVTIMEO).unwrap(),
            1_500_000
        );
        // A multiple of every HZ's tick: the kernel keeps jiffies.
        set_sockopt_timeval(a.as_fd(), libc::SO_SNDTIMEO, 2_020_000).unwrap();
        assert_eq!(
            sockopt_timeval(a.as_fd(), libc::SO_SNDTIMEO).unwrap(),
            2_020_000
        );
    }

    #[test]
    fn so_get_filter_reads_zero_without_a_filter_and_not_with_one() {
        use std::os::fd::AsFd;
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(
            sockopt_int(s.as_fd(), libc::SOL_SOCKET, libc::SO_GET_FILTER).ok(),
            Some(0)
        );
        // One instruction: accept everything.
        let mut prog = [libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: u32::MAX,
        }];
        let fprog = libc::sock_fprog {
            len: 1,
            filter: prog.as_mut_ptr(),
        };
        // SAFETY: `fprog` and the program it points to are live for the call.
        let r = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_ATTACH_FILTER,
                std::ptr::addr_of!(fprog).cast(),
                libc::socklen_t::try_from(std::mem::size_of::<libc::sock_fprog>()).unwrap(),
            )
        };
        assert_eq!(r, 0);
        assert_ne!(
            sockopt_int(s.as_fd(), libc::SOL_SOCKET, libc::SO_GET_FILTER).ok(),
            Some(0)
        );
    }
}
