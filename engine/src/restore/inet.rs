//! TCP listeners, established TCP connections and UDP sockets: each made in the root under
//! the label the dump recorded (`attr/sockcreate`), given its options from the engine through
//! a `pidfd_getfd` copy (those that must precede `bind` among them), then bound, and
//! listening (TCP) or connected to its peer (a connected UDP socket) by the root itself, as
//! the process did. An established connection is made in repair mode (`TCP_REPAIR`, from the
//! engine's copy, before `bind`): bound to its address (its listener's port shared), its
//! queues' sequence numbers set, connected without a handshake, its negotiated options
//! (`TCP_REPAIR_OPTIONS`) and timestamp clock set, its queues refilled, its windows
//! (`TCP_REPAIR_WINDOW`) set, and out of repair mode without a window probe. Connections are
//! made after every other file (`files::open_all`), so after the listener they share a port
//! with.

use super::error::StepContext;
use super::files::{
    check_socket_options, move_above, open_flags, set_buffer, set_socket_options, under_label,
    SOCKADDR_AT,
};
use super::RestoreError;
use crate::image::schema::InetSocket;
use crate::sys::{
    fd_of, set_sockopt_int, set_sockopt_timeval, sockopt_int, tcp_fill_queue, tcp_repair,
    tcp_set_queue_seq, tcp_set_repair_options, tcp_set_timestamp, tcp_set_window, Remote, Repair,
    Scratch, TcpWindow, TCPI_OPT_TIMESTAMPS, TCP_RECV_QUEUE, TCP_SEND_QUEUE,
};
use std::os::fd::{AsFd, OwnedFd};

/// Creates the socket `s` in the root (`pid`), above `above`, with its open file's `flags`;
/// returns its descriptor there.
pub(super) fn create(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    s: &InetSocket,
    flags: u32,
    above: u64,
) -> Result<u64, RestoreError> {
    let (family, ty, proto) = kind(s)?;
    failpoint!(
        "restore.files.socket",
        super::error::injected(pid, "a TCP or UDP socket")
    );
    let fd = under_label(remote, pid, scratch, "sockcreate", &s.label, |r| {
        r.syscall(
            "socket",
            libc::SYS_socket,
            &[
                crate::sys::int_arg(family),
                crate::sys::int_arg(ty | libc::SOCK_CLOEXEC),
                crate::sys::int_arg(proto),
            ],
        )
        .step(pid, "a TCP or UDP socket")
    })?;
    let fd = move_above(remote, pid, fd, above, "a TCP or UDP socket")?;
    let copy = fd_of(pid, fd).map_err(fail(s, "taking a copy".into()))?;
    let made = make(remote, pid, scratch, s, fd, &copy);
    if s.tcp.is_some() {
        // Quietly: a window probe could reach a peer not made yet, whose port's listener
        // would answer with a reset. Leaving repair mode clears SO_REUSEADDR: set again.
        let off = tcp_repair(copy.as_fd(), Repair::OffQuiet)
            .and_then(|()| {
                if s.reuseaddr {
                    set_sockopt_int(copy.as_fd(), libc::SOL_SOCKET, libc::SO_REUSEADDR, 1)
                } else {
                    Ok(())
                }
            })
            .map_err(fail(s, "leaving repair mode".into()));
        made?;
        off?;
    } else {
        made?;
    }
    // As they were set, still, once bound and listening.
    check_socket_options(
        &format!("the TCP or UDP socket of inode {}", s.ino),
        &copy,
        &s.options,
    )?;
    let fl = nix::fcntl::OFlag::from_bits_retain(open_flags(flags));
    nix::fcntl::fcntl(&copy, nix::fcntl::FcntlArg::F_SETFL(fl)).map_err(|source| {
        fail(s, "setting its file flags".into())(crate::sys::SysError::Call {
            op: "fcntl(F_SETFL)",
            tid: 0,
            source,
        })
    })?;
    Ok(fd)
}

/// Binds the socket `s` (the process's `fd`, the engine's `copy`), and makes it listen, or
/// connects it (a connection in repair mode, with its sequence numbers, options, queues and
/// windows).
fn make(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    s: &InetSocket,
    fd: u64,
    copy: &OwnedFd,
) -> Result<(), RestoreError> {
    set_options(s, copy)?;
    if s.tcp.is_some() {
        // After the options (SO_REUSEADDR would undo it) and before bind: repair mode lets it
        // share its port (an accepted connection's is its listener's), and makes its connect
        // send nothing.
        tcp_repair(copy.as_fd(), Repair::On).map_err(fail(
            s,
            "entering repair mode (TCP_REPAIR needs CAP_NET_ADMIN)".into(),
        ))?;
    }
    if s.port != 0 || s.addr.iter().any(|b| *b != 0) {
        let sa = sockaddr(s.family, &s.addr, s.port).ok_or_else(|| bad(s, "bound address"))?;
        with_address(remote, pid, scratch, fd, &sa, Address::Bind)?;
    }
    if s.listening {
        remote
            .syscall("listen", libc::SYS_listen, &[fd, u64::from(s.backlog)])
            .step(pid, "a listening TCP socket")?;
    }
    if let Some(t) = &s.tcp {
        let len = |q: &[u8]| u32::try_from(q.len()).map_err(|_| bad(s, "queue length"));
        let c = copy.as_fd();
        tcp_set_queue_seq(
            c,
            TCP_RECV_QUEUE,
            t.recv_seq.wrapping_sub(len(&t.recv_queue)?),
        )
        .map_err(fail(
            s,
            "setting its receive queue's sequence number".into(),
        ))?;
        tcp_set_queue_seq(
            c,
            TCP_SEND_QUEUE,
            t.send_seq.wrapping_sub(len(&t.send_queue)?),
        )
        .map_err(fail(s, "setting its send queue's sequence number".into()))?;
    }
    if s.peer_port != 0 {
        let sa =
            sockaddr(s.family, &s.peer_addr, s.peer_port).ok_or_else(|| bad(s, "peer address"))?;
        let call = if s.tcp.is_some() {
            Address::Repair
        } else {
            Address::Connect
        };
        with_address(remote, pid, scratch, fd, &sa, call)?;
    }
    if let Some(t) = &s.tcp {
        // Again once connected: connect computes some for the connection (TCP_WINDOW_CLAMP).
        let who = format!("the TCP connection of inode {}", s.ino);
        set_socket_options(&who, copy, &s.options)?;
        let c = copy.as_fd();
        tcp_set_repair_options(c, t.mss, t.options, t.snd_wscale, t.rcv_wscale)
            .map_err(fail(s, "setting its negotiated options".into()))?;
        if t.options & TCPI_OPT_TIMESTAMPS != 0 {
            tcp_set_timestamp(c, t.timestamp)
                .map_err(fail(s, "setting its timestamp clock".into()))?;
        }
        tcp_fill_queue(c, TCP_RECV_QUEUE, &t.recv_queue)
            .map_err(fail(s, "refilling its receive queue".into()))?;
        tcp_fill_queue(c, TCP_SEND_QUEUE, &t.send_queue)
            .map_err(fail(s, "refilling its send queue".into()))?;
        // After the receive queue: the window's last update may not be ahead of it.
        let w = TcpWindow {
            snd_wl1: t.snd_wl1,
            snd_wnd: t.snd_wnd,
            max_window: t.max_window,
            rcv_wnd: t.rcv_wnd,
            rcv_wup: t.rcv_wup,
        };
        tcp_set_window(c, &w).map_err(fail(s, "setting its windows".into()))?;
    }
    Ok(())
}

/// The family, type and protocol `socket` takes for `s`.
fn kind(s: &InetSocket) -> Result<(i32, i32, i32), RestoreError> {
    let family = match i32::try_from(s.family) {
        Ok(f @ (libc::AF_INET | libc::AF_INET6)) => f,
        _ => return Err(bad(s, "family")),
    };
    let tcp_ok = if s.listening {
        s.tcp.is_none() && s.peer_port == 0
    } else {
        // A connection without its state would make its own handshake.
        s.tcp.is_some() == (s.peer_port != 0)
    };
    match i32::try_from(s.protocol) {
        Ok(libc::IPPROTO_TCP) if !tcp_ok => Err(bad(s, "connection state")),
        Ok(libc::IPPROTO_TCP) => Ok((family, libc::SOCK_STREAM, libc::IPPROTO_TCP)),
        Ok(libc::IPPROTO_UDP) if !s.listening && s.tcp.is_none() => {
            Ok((family, libc::SOCK_DGRAM, libc::IPPROTO_UDP))
        }
        _ => Err(bad(s, "protocol")),
    }
}

/// A `sockaddr_in` or `sockaddr_in6` (no flow label, no scope) for `addr` and `port`; `None`
/// when the family, the address's length or the port is not one.
pub fn sockaddr(family: u32, addr: &[u8], port: u32) -> Option<Vec<u8>> {
    let port = u16::try_from(port).ok()?;
    let family16 = u16::try_from(family).ok()?;
    let mut sa = family16.to_ne_bytes().to_vec();
    sa.extend_from_slice(&port.to_be_bytes());
    match (i32::try_from(family).ok()?, addr.len()) {
        (libc::AF_INET, 4) => {
            sa.extend_from_slice(addr);
            sa.extend_from_slice(&[0; 8]);
        }
        (libc::AF_INET6, 16) => {
            sa.extend_from_slice(&[0; 4]);
            sa.extend_from_slice(addr);
            sa.extend_from_slice(&[0; 4]);
        }
        _ => return None,
    }
    Some(sa)
}

fn bad(s: &InetSocket, what: &str) -> RestoreError {
    RestoreError::Inconsistent(format!(
        "the TCP or UDP socket of inode {} has no valid {what}",
        s.ino
    ))
}

fn fail(s: &InetSocket, what: String) -> impl FnOnce(crate::sys::SysError) -> RestoreError {
    let ino = s.ino;
    move |e| {
        RestoreError::Inconsistent(format!("the TCP or UDP socket of inode {ino}: {what}: {e}"))
    }
}

/// Every option the dump recorded, set where a new socket's differs; all before `bind`
/// (`SO_REUSEADDR`, `SO_REUSEPORT` and `IPV6_V6ONLY` decide what `bind` may do).
fn set_options(s: &InetSocket, c: &OwnedFd) -> Result<(), RestoreError> {
    let tcp = i32::try_from(s.protocol) == Ok(libc::IPPROTO_TCP);
    let v6 = i32::try_from(s.family) == Ok(libc::AF_INET6);
    let int = |v: u32| i32::try_from(v).unwrap_or(i32::MAX);
    let mut opts = vec![
        (
            libc::SOL_SOCKET,
            libc::SO_REUSEADDR,
            "SO_REUSEADDR",
            i32::from(s.reuseaddr),
        ),
        (
            libc::SOL_SOCKET,
            libc::SO_REUSEPORT,
            "SO_REUSEPORT",
            i32::from(s.reuseport),
        ),
        (
            libc::SOL_SOCKET,
            libc::SO_KEEPALIVE,
            "SO_KEEPALIVE",
            i32::from(s.keepalive),
        ),
        (
            libc::SOL_SOCKET,
            libc::SO_BROADCAST,
            "SO_BROADCAST",
            i32::from(s.broadcast),
        ),
    ];
    if s.ttl != 0 {
        opts.push(if v6 {
            (
                libc::SOL_IPV6,
                libc::IPV6_UNICAST_HOPS,
                "IPV6_UNICAST_HOPS",
                int(s.ttl),
            )
        } else {
            (libc::SOL_IP, libc::IP_TTL, "IP_TTL", int(s.ttl))
        });
    }
    if v6 {
        opts.push((
            libc::SOL_IPV6,
            libc::IPV6_V6ONLY,
            "IPV6_V6ONLY",
            i32::from(s.v6only),
        ));
    }
    if tcp {
        opts.push((
            libc::IPPROTO_TCP,
            libc::TCP_NODELAY,
            "TCP_NODELAY",
            i32::from(s.nodelay),
        ));
        for (name, text, v) in [
            (libc::TCP_KEEPIDLE, "TCP_KEEPIDLE", s.keepidle),
            (libc::TCP_KEEPINTVL, "TCP_KEEPINTVL", s.keepintvl),
            (libc::TCP_KEEPCNT, "TCP_KEEPCNT", s.keepcnt),
        ] {
            if v != 0 {
                opts.push((libc::IPPROTO_TCP, name, text, int(v)));
            }
        }
    }
    for (level, name, text, want) in opts {
        let now =
            sockopt_int(c.as_fd(), level, name).map_err(fail(s, format!("reading {text}")))?;
        if now != want {
            set_sockopt_int(c.as_fd(), level, name, want)
                .map_err(fail(s, format!("setting {text} to {want}")))?;
        }
    }
    let who = format!("the TCP or UDP socket of inode {}", s.ino);
    set_buffer(&who, c, libc::SO_RCVBUF, libc::SO_RCVBUFFORCE, s.rcvbuf)?;
    set_buffer(&who, c, libc::SO_SNDBUF, libc::SO_SNDBUFFORCE, s.sndbuf)?;
    for (name, text, us) in [
        (libc::SO_RCVTIMEO, "SO_RCVTIMEO", s.rcvtimeo_us),
        (libc::SO_SNDTIMEO, "SO_SNDTIMEO", s.sndtimeo_us),
    ] {
        if us != 0 {
            set_sockopt_timeval(c.as_fd(), name, us).map_err(fail(s, format!("setting {text}")))?;
        }
    }
    set_socket_options(&who, c, &s.options)
}

/// What a socket address is given to.
#[derive(Clone, Copy)]
enum Address {
    Bind,
    Connect,
    /// A TCP connection's `connect` in repair mode (no handshake).
    Repair,
}

/// `bind` or `connect` of the process's socket `fd` to `sa`, written to its scratch page.
fn with_address(
    remote: &mut Remote,
    pid: i32,
    scratch: Scratch,
    fd: u64,
    sa: &[u8],
    call: Address,
) -> Result<(), RestoreError> {
    let (name, nr, what) = match call {
        Address::Bind => (
            "bind",
            libc::SYS_bind,
            "binding a TCP or UDP socket (is the port taken?)",
        ),
        Address::Connect => (
            "connect",
            libc::SYS_connect,
            "connecting a UDP socket to its peer",
        ),
        Address::Repair => (
            "connect",
            libc::SYS_connect,
            "connecting a TCP connection to its peer in repair mode (is its address taken?)",
        ),
    };
    remote
        .write_mem(scratch.addr + SOCKADDR_AT, sa)
        .step(pid, "a socket address")?;
    remote
        .syscall(name, nr, &[fd, scratch.addr + SOCKADDR_AT, sa.len() as u64])
        .step(pid, what)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::schema::SocketOption;

    fn tcp_socket() -> OwnedFd {
        let s = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        OwnedFd::from(s)
    }

    #[test]
    fn a_congestion_control_algorithm_not_available_fails_the_restore_by_name() {
        let mut name = b"crlab-no-such-algo".to_vec();
        name.truncate(15);
        name.resize(16, 0);
        let opt = SocketOption {
            level: libc::IPPROTO_TCP,
            name: libc::TCP_CONGESTION,
            value: name,
        };
        let e = set_socket_options("the listener", &tcp_socket(), &[opt])
            .expect_err("no such algorithm")
            .to_string();
        assert!(
            e.contains("the listener: setting TCP_CONGESTION to \"crlab-no-such-a\"")
                && e.contains("ENOENT")
                && e.contains("tcp_available_congestion_control"),
            "{e}"
        );
        let mut reno = b"reno".to_vec();
        reno.resize(16, 0);
        let ok = SocketOption {
            level: libc::IPPROTO_TCP,
            name: libc::TCP_CONGESTION,
            value: reno,
        };
        set_socket_options("the listener", &tcp_socket(), &[ok]).expect("reno is built in");
    }

    #[test]
    fn an_option_the_list_lacks_is_not_set() {
        let opt = SocketOption {
            level: libc::SOL_SOCKET,
            name: libc::SO_ATTACH_FILTER,
            value: vec![0; 16],
        };
        let e = set_socket_options("the listener", &tcp_socket(), &[opt])
            .expect_err("not in the list")
            .to_string();
        assert!(e.contains("which crlab does not set"), "{e}");
    }

    #[test]
    fn addresses_are_laid_out_as_the_kernel_reads_them() {
        let v4 = sockaddr(2, &[127, 0, 0, 1], 8080).unwrap();
        assert_eq!(v4.len(), 16);
        assert_eq!(&v4[..8], &[2, 0, 0x1f, 0x90, 127, 0, 0, 1]);
        let mut one = [0u8; 16];
        one[15] = 1;
        let v6 = sockaddr(10, &one, 443).unwrap();
        assert_eq!(v6.len(), 28);
        assert_eq!(&v6[..4], &[10, 0, 1, 0xbb]);
        assert_eq!(&v6[8..24], &one);
        assert_eq!(sockaddr(2, &one, 1), None);
        assert_eq!(sockaddr(10, &[0; 4], 1), None);
        assert_eq!(sockaddr(2, &[0; 4], 70_000), None);
    }
}
