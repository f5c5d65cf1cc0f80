//! Unix sockets, chosen by the first argument.
//!
//! Restored exactly:
//! - `pairs`: a socketpair of each type (stream, datagram, seqpacket) with messages queued in
//!   both directions (a zero-length datagram and record among them, one message of 5000
//!   bytes); a stream pair shut down for writing by one end after its last words; a
//!   seqpacket pair with options and flags set (`SO_PASSCRED`, `SO_RCVBUF`, `SO_SNDBUF`,
//!   `SO_PEEK_OFF`, `SO_RCVTIMEO`, `SO_SNDTIMEO`, `O_NONBLOCK` on one end). After the wait:
//!   each end's type, the messages read back in order with their boundaries and nothing
//!   more, the pairs still carrying new messages,
//!   the shutdown (the reader sees the end, the writer `EPIPE`), the options and flags, and,
//!   when SELinux is on, each socket's label as it was before the dump.
//!
//! - `listeners`: a stream listener at a path of the state directory (mode 0640, backlog 7)
//!   and a seqpacket listener at an abstract name (backlog 3); on each, a connection accepted
//!   from a client of this process (the seqpacket client bound to an abstract name of its
//!   own), with messages queued both ways. After the wait: the names (`getsockname`,
//!   `getpeername`) of every socket, the queues, the connections still carrying messages, a
//!   new client connecting to each listener and accepted, the socket file's mode, and when
//!   SELinux is on, the labels of the sockets and of the socket file.
//!
//! - `children`: a stream pair between this process and a child, and a connection accepted
//!   by this process from a client in the child, with messages queued both ways on each.
//!   After the wait this process checks its ends, then lets the child (blocked on a pipe)
//!   check its own and report on the pair; the child is restored as this process's child.
//!
//! - `peercred`: run as another user, the peer credentials (`SO_PEERCRED`, `SO_PEERGROUPS`)
//!   of a stream pair this process made (one end also held by a child), of its listener,
//!   of a seqpacket pair the child made and passed one end of here (`SCM_RIGHTS`), and of a
//!   connection the child made to the listener: each checked at setup to name its maker and
//!   its ids, and after the wait to be as it was, the child checking its own ends. Every
//!   other kind checks its Unix sockets' peer credentials too.
//!
//! - `peercred-switched`: run as root, a stream pair made while the thread's effective uid,
//!   gid and groups were others (switched back after): its peer credentials, checked after
//!   the wait, are those, not the process's own.
//!
//! - `inet-listeners`: TCP listeners on 127.0.0.1 (backlog 5, `TCP_NODELAY`, `SO_KEEPALIVE`,
//!   `TCP_KEEPIDLE` 77), on ::1 (`IPV6_V6ONLY`, `SO_REUSEADDR`, `IPV6_UNICAST_HOPS`, backlog
//!   9) and on the IPv6 wildcard, dual-stack (`SO_REUSEPORT`, backlog 3). After the wait: each
//!   name, its options, that it listens, a new client (IPv4 to the wildcard one)
//!   connecting and accepted, and when SELinux is on each socket's label as it was.
//!
//! - `udp`: a UDP socket bound to 127.0.0.1 (`SO_BROADCAST`, `SO_RCVBUF`, `IP_TTL`), two
//!   bound to ::1, one of them connected to the other, one on the IPv6 wildcard
//!   (`IPV6_V6ONLY`), and an unbound one. After the wait: the names, the peer, the options,
//!   datagrams round-tripping between them with their senders' names, and when SELinux is
//!   on each socket's label as it was.
//!
//! - `fifo`: a named pipe of the state directory opened twice (a non-blocking reader and a
//!   writer), 16 KiB of capacity, with bytes buffered. After the wait: the bytes read back
//!   and nothing more, the flags, the capacity, new bytes going through.
//!
//! - `tcp-connections`: over 127.0.0.1, over ::1, and from an IPv4 client to a dual-stack
//!   listener on the IPv6 wildcard (accepted with IPv4-mapped addresses), a TCP listener, a
//!   client connected to it (`TCP_NODELAY`, `SO_KEEPALIVE`, `TCP_KEEPIDLE` 55) and the accepted connection
//!   (`TCP_NODELAY`, `SO_SNDBUF`), with data queued unread both ways (the client's 30000
//!   bytes ending in "ping-data", the server's "pong-bytes"), every send acknowledged before
//!   the wait. After the wait: the queued data whole and in order and nothing more, new data
//!   both ways, each socket's name and peer's name, the options, a new client accepted by
//!   the listener, and when SELinux is on each socket's label as it was.
//!
//! - `bound`: Unix sockets neither connected nor listening, and a datagram socket connected
//!   to one: a datagram socket bound to a path of the state directory (mode 0620,
//!   `SO_RCVBUF`), one bound to an abstract name, a datagram client connected to the path one
//!   (as a logger to `/dev/log`), an unbound datagram socket that sends with `sendto`, and a
//!   stream socket bound to a path but not listening. After the wait: each name and the
//!   client's peer, nothing queued anywhere, a datagram from the client and one from the
//!   unbound socket received in order by the path one (each sender unnamed), one sent to the
//!   abstract one, the stream socket listening and taking a connection, the socket files'
//!   modes, `SO_RCVBUF`, and when SELinux is on each socket's label as it was.
//!
//! - `labelled LABEL`: a stream pair and a datagram pair with messages queued both ways,
//!   made under the socket creation context LABEL (`attr/sockcreate`, cleared after), so
//!   their label is not the process's own (SELinux enabled only: the lab's scenario
//!   `unconfined-socket-labelled-otherwise`). Checked at setup to carry LABEL; after the
//!   wait: each end's label as it was, its queue, new messages going through, and a new pair
//!   made under the process's own context again.
//!
//! Refused at dump (the state still in place after the refused dump, checked after the wait):
//! - `bound-queued`: a datagram socket bound to a path with a datagram queued from an unbound
//!   sender (whose name a restore could not give back);
//! - `bound-outside`: a datagram socket bound to a path, to which a process outside the tree
//!   (a grandchild reparented away, which exits once the workload is gone) is connected;
//! - `pair-disconnected`: an end of a datagram socketpair disconnected (`connect` with
//!   `AF_UNSPEC`), the other end closed: it keeps the peer credentials of its maker, which a
//!   socket made again with `socket` would not have;
//! - `pending`: a listener with a connection not accepted yet;
//! - `peercred-relisten`: a stream connection whose client keeps the peer credentials its
//!   listener had at connect (root's), the listener having listened again since with another
//!   effective uid;
//! - `peercred-exited`: a stream pair a child made and passed here (`SCM_RIGHTS`) before it
//!   exited and was reaped: its peer credentials name a process that is gone;
//! - `peercred-reused`: the same, with the child's pid then given to another child of this
//!   process (`clone3` with `set_tid`), alive in the tree but not the socket's maker;
//! - `outside`: a stream pair whose other end is held by a process outside the tree (a
//!   grandchild reparented away, which exits when its end sees the end of the stream);
//! - `scm-rights`: a stream pair with a descriptor in flight (`SCM_RIGHTS`);
//! - `passcred`: a datagram pair with a message queued to an end that has `SO_PASSCRED`;
//! - `tcp-outside`: an established TCP connection over 127.0.0.1 accepted here from a
//!   client in a process outside the tree (a grandchild reparented away, which exits when
//!   the connection ends);
//! - `tcp-pending`: a TCP listener with a connection not accepted yet;
//! - `tcp-unsent`: an established TCP connection over 127.0.0.1 whose client wrote until its
//!   send buffer was full, the server's small receive buffer closing the window: bytes not
//!   sent yet (after the wait the server reads every byte);
//! - `udp-queued`: a UDP socket with a datagram queued to it;
//! - `tcp-close-wait`: a TCP connection over 127.0.0.1 whose client shut its side
//!   (`SHUT_WR`): the accepted end in `CLOSE_WAIT`, the client, moved to a higher descriptor,
//!   in `FIN_WAIT2` (after the wait the accepted end reads the end of the stream and its
//!   bytes still reach the client);
//! - `udp-bindtodevice`: a UDP socket on 127.0.0.1 bound to `lo` (`SO_BINDTODEVICE`);
//! - `udp-multicast`: a UDP socket that joined multicast group 239.0.0.10 on the interface of
//!   its route (`IP_ADD_MEMBERSHIP`);
//! - `netlink`: a bound `NETLINK_ROUTE` socket (a family not restored);
//! - `fifo-deleted`: a named pipe with bytes buffered whose path was removed;
//! - `fifo-outside`: a named pipe a process outside the tree also holds open;
//! - `oob`: a stream pair with an out-of-band byte queued (`MSG_OOB`);
//! - `tcp-md5`: a TCP listener with a `TCP_MD5SIG` key (which `getsockopt` does not give);
//! - `udp-error`: a UDP socket with an error pending (`ECONNREFUSED` from a closed port);
//! - `unix-filter`: a datagram pair's end with a socket filter (`SO_ATTACH_FILTER`);
//! - `empty-at-end`: a seqpacket pair shut for reading with a zero-length record last in its
//!   queue (which reads as the end of the queue);
//! - `empty-peeked`: a datagram pair with a zero-length datagram between two others that the
//!   process peeked with `SO_PEEK_OFF` (marked peeked: a walk at offsets passes it).
//!
//! Restored exactly, too:
//! - `empty-messages`: zero-length datagrams at the end of a queue shut for reading, a run of
//!   zero-length records before a record in a seqpacket queue shut for reading, and a
//!   datagram queue whose empty head the process peeked. After the wait: every message in
//!   order, nothing more, and the shutdown (`EPIPE` to an end shut for reading).
//! - `options`: `SO_MARK`, `SO_PRIORITY`, `SO_RCVLOWAT`, `SO_PASSRIGHTS` (where the kernel
//!   has it) on a Unix socket; a TCP listener with `TCP_CONGESTION` (`reno`, or `cubic` where
//!   `reno` is the default), `SO_MARK`, `IP_TOS` then `SO_PRIORITY`, `SO_LINGER`,
//!   `TCP_DEFER_ACCEPT`, `TCP_USER_TIMEOUT`, `IP_FREEBIND`, `TCP_MAXSEG`; UDP sockets with
//!   `SO_MARK`, `SO_PRIORITY`, `SO_TIMESTAMP`, `IP_RECVTOS`, `IPV6_RECVPKTINFO`,
//!   `IPV6_TCLASS`. After the wait: each option read back, the sockets still working.

use std::io;

use crlab_workloads::runtime::{Checks, Workload};
use crlab_workloads::sys::{self, pattern};

const BIG_SEED: u64 = 0x50c4;
const BIG_LEN: usize = 5000;
const RCVBUF: i32 = 50_000;
const SNDBUF: i32 = 70_000;
const LAST_WORDS: &[u8] = b"last words before the shutdown";

fn socketpair(ty: i32) -> io::Result<(i32, i32)> {
    let mut fds = [0i32; 2];
    // SAFETY: socketpair writes two descriptors into `fds`, a live [i32; 2].
    let r = unsafe { libc::socketpair(libc::AF_UNIX, ty, 0, fds.as_mut_ptr()) };
    sys::check(r.into()).map(|_| (fds[0], fds[1]))
}

fn send(fd: i32, data: &[u8]) -> io::Result<usize> {
    // SAFETY: `data` is a live buffer of `data.len()` bytes.
    let r = unsafe {
        libc::send(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    sys::check(r as libc::c_long).map(|n| n as usize)
}

fn peek(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    let flags = libc::MSG_DONTWAIT | libc::MSG_PEEK;
    // SAFETY: `buf` is a live buffer of `buf.len()` bytes.
    let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), flags) };
    sys::check(r as libc::c_long).map(|n| n as usize)
}

fn recv(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is a live buffer of `buf.len()` bytes.
    let r = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    sys::check(r as libc::c_long).map(|n| n as usize)
}

fn getsockopt(fd: i32, name: i32) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live; the kernel writes at most `len` bytes into `v`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            std::ptr::addr_of_mut!(v).cast(),
            &mut len,
        )
    };
    sys::check(r.into()).map(|_| v)
}

/// `SO_RCVTIMEO` and `SO_SNDTIMEO` of the options pair, in microseconds.
const RCVTIMEO_US: u64 = 3_000_000;
const SNDTIMEO_US: u64 = 1_250_000;

/// Sets a `struct timeval` option to `us` microseconds.
fn set_timeout(fd: i32, name: i32, us: u64) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: (us / 1_000_000) as libc::time_t,
        tv_usec: (us % 1_000_000) as libc::suseconds_t,
    };
    // SAFETY: the kernel reads one timeval from `tv`.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            std::ptr::addr_of!(tv).cast(),
            std::mem::size_of::<libc::timeval>() as libc::socklen_t,
        )
    };
    sys::check(r.into()).map(drop)
}

/// A `struct timeval` option in microseconds.
fn timeout(fd: i32, name: i32) -> io::Result<u64> {
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = std::mem::size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `tv`.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            std::ptr::addr_of_mut!(tv).cast(),
            &mut len,
        )
    };
    sys::check(r.into())?;
    Ok(tv.tv_sec as u64 * 1_000_000 + tv.tv_usec as u64)
}

fn setsockopt(fd: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: the kernel reads one int from `value`.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            name,
            std::ptr::addr_of!(value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    sys::check(r.into()).map(drop)
}

/// The SELinux label of `fd`, `None` when SELinux is off.
fn label(fd: i32) -> io::Result<Option<Vec<u8>>> {
    if !std::path::Path::new("/sys/fs/selinux/enforce").exists() {
        return Ok(None);
    }
    let mut buf = [0u8; 512];
    // SAFETY: the name is NUL-terminated and `buf` is a live buffer of its length.
    let n = unsafe {
        libc::fgetxattr(
            fd,
            c"security.selinux".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = sys::check(n as libc::c_long)? as usize;
    Ok(Some(buf[..n].to_vec()))
}

/// One end of a pair with what the other end queued to it.
struct End {
    name: String,
    fd: i32,
    ty: i32,
    /// The messages queued to be read on this end, in order.
    queued: Vec<Vec<u8>>,
    label: Option<Vec<u8>>,
    /// Its peer credentials (`SO_PEERCRED`, `SO_PEERGROUPS`) before the dump.
    cred: Cred,
}

/// A socket's peer credentials: pid, effective uid and gid, supplementary groups.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Cred {
    pid: i32,
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

fn peer_cred(fd: i32) -> io::Result<Cred> {
    let mut c = libc::ucred {
        pid: 0,
        uid: 0,
        gid: 0,
    };
    let mut len = std::mem::size_of::<libc::ucred>() as libc::socklen_t;
    // SAFETY: `c` and `len` are live; the kernel writes at most `len` bytes.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERCRED,
            std::ptr::addr_of_mut!(c).cast(),
            &mut len,
        )
    };
    sys::check(r.into())?;
    let mut groups = vec![0u32; 256];
    let mut len = (groups.len() * 4) as libc::socklen_t;
    // SAFETY: `groups` is a live buffer of `len` bytes; the kernel writes at most that many.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &mut len,
        )
    };
    sys::check(r.into())?;
    groups.truncate(len as usize / 4);
    Ok(Cred {
        pid: c.pid,
        uid: c.uid,
        gid: c.gid,
        groups,
    })
}

fn check_cred(checks: &mut Checks, what: &str, fd: i32, want: &Cred) {
    if let Some(c) = checks.io(&format!("{what}: SO_PEERCRED"), peer_cred(fd)) {
        checks.eq(&format!("{what}: peer credentials"), want, &c);
    }
}

fn messages(ty: i32, from: &str) -> Vec<Vec<u8>> {
    let mut m = vec![
        format!("first from {from}").into_bytes(),
        format!("second, longer, from {from}").into_bytes(),
        pattern(BIG_SEED, 0, BIG_LEN),
    ];
    if ty != libc::SOCK_STREAM {
        m.insert(1, Vec::new());
    }
    m
}

fn set_up_pair(w: &Workload, ty: i32, tname: &str) -> (End, End) {
    let (a, b) = w.setup(&format!("socketpair({tname})"), socketpair(ty));
    let to_b = messages(ty, "a");
    let to_a = messages(ty, "b");
    for m in &to_b {
        w.setup(&format!("{tname}: queueing to b"), send(a, m));
    }
    for m in &to_a {
        w.setup(&format!("{tname}: queueing to a"), send(b, m));
    }
    let end = |name: &str, fd, queued| End {
        name: format!("{tname} {name}"),
        fd,
        ty,
        queued,
        label: w.setup("fgetxattr(security.selinux)", label(fd)),
        cred: w.setup("SO_PEERCRED", peer_cred(fd)),
    };
    (end("a", a, to_a), end("b", b, to_b))
}

fn check_end(checks: &mut Checks, e: &End) {
    check_cred(checks, &e.name, e.fd, &e.cred);
    if let Some(ty) = checks.io("SO_TYPE", getsockopt(e.fd, libc::SO_TYPE)) {
        checks.eq(&format!("{}: type", e.name), e.ty, ty);
    }
    if let Some(l) = checks.io("fgetxattr(security.selinux)", label(e.fd)) {
        checks.eq(&format!("{}: SELinux label", e.name), &e.label, &l);
    }
    let mut buf = vec![0u8; 64 * 1024];
    if e.ty == libc::SOCK_STREAM {
        let want: Vec<u8> = e.queued.concat();
        let mut got = Vec::new();
        loop {
            match recv(e.fd, &mut buf) {
                Ok(0) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
                Err(err) if err.raw_os_error() == Some(libc::EAGAIN) => break,
                Err(err) => {
                    checks.fail(format!("{}: recv: {err}", e.name));
                    break;
                }
            }
        }
        checks.that(
            got == want,
            &format!(
                "{}: the stream's bytes: {} read, {} expected, or in another order",
                e.name,
                got.len(),
                want.len()
            ),
        );
        return;
    }
    for (i, m) in e.queued.iter().enumerate() {
        match checks.io(
            &format!("{}: recv of message {i}", e.name),
            recv(e.fd, &mut buf),
        ) {
            Some(n) => checks.that(
                buf[..n] == m[..],
                &format!(
                    "{}: message {i} ({} bytes read, {} expected, or different bytes)",
                    e.name,
                    n,
                    m.len()
                ),
            ),
            None => return,
        }
    }
    match recv(e.fd, &mut buf) {
        Err(err) if err.raw_os_error() == Some(libc::EAGAIN) => {}
        other => checks.fail(format!("{}: more than was queued: {other:?}", e.name)),
    }
}

/// The pair still carries messages both ways.
fn check_alive(checks: &mut Checks, a: &End, b: &End) {
    let mut buf = [0u8; 64];
    for (from, to) in [(a, b), (b, a)] {
        let text = format!("after the restore, to {}", to.name);
        if checks
            .io(
                &format!("{}: send", from.name),
                send(from.fd, text.as_bytes()),
            )
            .is_some()
        {
            if let Some(n) = checks.io(&format!("{}: recv", to.name), recv(to.fd, &mut buf)) {
                checks.eq(
                    &format!("{}: a new message", to.name),
                    text.as_bytes(),
                    &buf[..n],
                );
            }
        }
    }
}

fn pairs(mut w: Workload) -> ! {
    let mut ends = Vec::new();
    for (ty, tname) in [
        (libc::SOCK_STREAM, "stream"),
        (libc::SOCK_DGRAM, "dgram"),
        (libc::SOCK_SEQPACKET, "seqpacket"),
    ] {
        ends.push(set_up_pair(&w, ty, tname));
    }
    // Last words, then no more from `a`.
    let (sa, sb) = w.setup("socketpair(shut)", socketpair(libc::SOCK_STREAM));
    w.setup("shut: last words", send(sa, LAST_WORDS));
    // SAFETY: shutdown takes only integers.
    let r = unsafe { libc::shutdown(sa, libc::SHUT_WR) };
    w.setup("shutdown(SHUT_WR)", sys::check(r.into()));
    // Options and flags.
    let (oa, ob) = w.setup(
        "socketpair(options)",
        socketpair(libc::SOCK_SEQPACKET | libc::SOCK_NONBLOCK),
    );
    w.setup(
        "clearing O_NONBLOCK",
        sys::check(unsafe_fcntl_setfl(ob, libc::O_RDWR).into()),
    );
    w.setup("SO_PASSCRED", setsockopt(oa, libc::SO_PASSCRED, 1));
    w.setup("SO_RCVBUF", setsockopt(ob, libc::SO_RCVBUF, RCVBUF));
    w.setup("SO_SNDBUF", setsockopt(oa, libc::SO_SNDBUF, SNDBUF));
    w.setup("SO_PEEK_OFF", setsockopt(ob, libc::SO_PEEK_OFF, 0));
    w.setup(
        "SO_RCVTIMEO",
        set_timeout(ob, libc::SO_RCVTIMEO, RCVTIMEO_US),
    );
    w.setup(
        "SO_SNDTIMEO",
        set_timeout(oa, libc::SO_SNDTIMEO, SNDTIMEO_US),
    );
    // As the kernel keeps them (in ticks).
    let rcvtimeo = w.setup("SO_RCVTIMEO", timeout(ob, libc::SO_RCVTIMEO));
    let sndtimeo = w.setup("SO_SNDTIMEO", timeout(oa, libc::SO_SNDTIMEO));
    let rcvbuf = w.setup("SO_RCVBUF", getsockopt(ob, libc::SO_RCVBUF));
    let sndbuf = w.setup("SO_SNDBUF", getsockopt(oa, libc::SO_SNDBUF));
    let default_rcv = w.setup("SO_RCVBUF", getsockopt(oa, libc::SO_RCVBUF));

    let mut checks = w.wait();
    w.common_checks(&mut checks);
    for (a, b) in &ends {
        check_end(&mut checks, a);
        check_end(&mut checks, b);
        check_alive(&mut checks, a, b);
    }
    let mut buf = [0u8; 256];
    if let Some(n) = checks.io("shut: recv", recv(sb, &mut buf)) {
        checks.eq("shut: last words", LAST_WORDS, &buf[..n]);
    }
    match recv(sb, &mut buf) {
        Ok(0) => {}
        other => checks.fail(format!("shut: the end of the stream, not {other:?}")),
    }
    match send(sa, b"more") {
        Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
        other => checks.fail(format!(
            "shut: a send after SHUT_WR gives EPIPE, not {other:?}"
        )),
    }
    if let Some(v) = checks.io("SO_PASSCRED", getsockopt(oa, libc::SO_PASSCRED)) {
        checks.eq("options a: SO_PASSCRED", 1, v);
    }
    if let Some(v) = checks.io("SO_PASSCRED", getsockopt(ob, libc::SO_PASSCRED)) {
        checks.eq("options b: SO_PASSCRED", 0, v);
    }
    if let Some(v) = checks.io("SO_PEEK_OFF", getsockopt(ob, libc::SO_PEEK_OFF)) {
        checks.eq("options b: SO_PEEK_OFF", 0, v);
    }
    if let Some(v) = checks.io("SO_PEEK_OFF", getsockopt(oa, libc::SO_PEEK_OFF)) {
        checks.eq("options a: SO_PEEK_OFF (off)", -1, v);
    }
    if let Some(v) = checks.io("SO_RCVBUF", getsockopt(ob, libc::SO_RCVBUF)) {
        checks.eq("options b: SO_RCVBUF", rcvbuf, v);
    }
    if let Some(v) = checks.io("SO_SNDBUF", getsockopt(oa, libc::SO_SNDBUF)) {
        checks.eq("options a: SO_SNDBUF", sndbuf, v);
    }
    if let Some(v) = checks.io("SO_RCVBUF", getsockopt(oa, libc::SO_RCVBUF)) {
        checks.eq("options a: SO_RCVBUF (the default)", default_rcv, v);
    }
    for (what, fd, name, want) in [
        ("options b: SO_RCVTIMEO", ob, libc::SO_RCVTIMEO, rcvtimeo),
        ("options a: SO_SNDTIMEO", oa, libc::SO_SNDTIMEO, sndtimeo),
        ("options a: SO_RCVTIMEO (none)", oa, libc::SO_RCVTIMEO, 0),
    ] {
        if let Some(v) = checks.io(what, timeout(fd, name)) {
            checks.eq(what, want, v);
        }
    }
    if let Some(fl) = checks.io("F_GETFL", sys::fcntl(oa, libc::F_GETFL)) {
        checks.eq(
            "options a: O_NONBLOCK",
            libc::O_NONBLOCK,
            fl & libc::O_NONBLOCK,
        );
    }
    if let Some(fl) = checks.io("F_GETFL", sys::fcntl(ob, libc::F_GETFL)) {
        checks.eq("options b: O_NONBLOCK", 0, fl & libc::O_NONBLOCK);
    }
    w.finish(checks)
}

fn unsafe_fcntl_setfl(fd: i32, flags: i32) -> i32 {
    // SAFETY: F_SETFL takes an integer argument.
    unsafe { libc::fcntl(fd, libc::F_SETFL, flags) }
}

/// A stream pair whose end `b` a grandchild holds, outside the tree once its parent exits.
fn outside(w: &Workload) -> (i32, i32) {
    let (a, b) = w.setup("socketpair", socketpair(libc::SOCK_STREAM));
    outside_process(w, &[a], || {
        let mut buf = [0u8; 64];
        // Until the workload's end closes (or the stream fails).
        // SAFETY: `buf` is live; a blocking read.
        while unsafe { libc::read(b, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        exit_now(0)
    });
    // SAFETY: our copy of the grandchild's end.
    unsafe { libc::close(b) };
    (a, b)
}

/// Runs `body` in a grandchild reparented away from the tree, in a session of its own, once
/// it has closed its copies of `close`, and ends it after; returns when the child between
/// them is reaped.
fn outside_process(w: &Workload, close: &[i32], body: impl FnOnce()) {
    // SAFETY: fork in a single-threaded workload; the children only make system calls.
    let child = w.setup("fork", sys::check(unsafe { libc::fork() }.into()));
    if child == 0 {
        // SAFETY: as above.
        if unsafe { libc::fork() } == 0 {
            // SAFETY: closing this process's copies of the workload's descriptors.
            unsafe {
                for fd in close {
                    libc::close(*fd);
                }
                libc::setsid();
            }
            body();
            exit_now(0);
        }
        exit_now(0);
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    unsafe { libc::waitpid(child as i32, &mut status, 0) };
}

/// Ends this process at once (a child of the workload: nothing of the parent's to flush).
fn exit_now(code: i32) -> ! {
    // SAFETY: _exit takes an integer and does not return.
    unsafe { libc::_exit(code) }
}

fn refused(mut w: Workload, kind: &str) -> ! {
    let me = sys::getpid();
    // `tcp-unsent`: the accepted end and how many bytes the client sent it.
    let mut unsent = None;
    // `tcp-close-wait`: the client, which shut its side.
    let mut closed_client = None;
    let fd = match kind {
        "outside" => outside(&w).0,
        "peercred-relisten" => {
            let path = w.path("relisten.sock");
            use std::os::unix::ffi::OsStrExt;
            let name = path.as_os_str().as_bytes().to_vec();
            let l = w.setup("socket", socket(libc::SOCK_STREAM));
            w.setup("bind", bind(l, &name));
            w.setup("listen", listen(l, 4));
            let c = w.setup("socket", socket(libc::SOCK_STREAM));
            w.setup("connect", connect(c, &name));
            let a = w.setup("accept", accept(l));
            w.setup("queueing", send(a, b"before the second listen"));
            // listen again with another effective uid: the listener's peer credentials change,
            // the client keeps those it copied at connect. (System calls, not libc's: this
            // thread only, and back to root after.)
            let keep = u64::from(u32::MAX);
            // SAFETY: setresuid takes only integers.
            let r = unsafe { libc::syscall(libc::SYS_setresuid, keep, 4242u64, keep) };
            w.setup("setresuid(-1, 4242, -1)", sys::check(r));
            let again = listen(l, 4);
            // SAFETY: as above; the real and saved uids are still 0.
            let r = unsafe { libc::syscall(libc::SYS_setresuid, keep, 0u64, keep) };
            w.setup("setresuid(-1, 0, -1)", sys::check(r));
            w.setup("listen again", again);
            c
        }
        "peercred-exited" | "peercred-reused" => {
            let (x, y, child) = made_by_exited_child(&w);
            w.setup("queueing", send(y, b"made by a child"));
            w.announce("exited-child", child);
            if kind == "peercred-reused" {
                // Its pid given to another child, alive in the tree: still not the maker.
                let mut hold = [0i32; 2];
                // SAFETY: pipe writes two descriptors into `hold`.
                w.setup(
                    "pipe",
                    sys::check(unsafe { libc::pipe(hold.as_mut_ptr()) }.into()),
                );
                let again = child_with_pid(&w, child, hold[0], &[x, y, hold[1]]);
                if again != child {
                    w.setup_failed(&format!("clone3 gave pid {again}, not {child}"));
                }
                // SAFETY: the read end is the new child's.
                unsafe { libc::close(hold[0]) };
            }
            x
        }
        "scm-rights" => {
            let (a, b) = w.setup("socketpair", socketpair(libc::SOCK_STREAM));
            let null = w.setup("opening /dev/null", std::fs::File::open("/dev/null"));
            use std::os::fd::IntoRawFd;
            let passed = null.into_raw_fd();
            w.setup("sending a descriptor", send_fd(a, passed));
            // SAFETY: our copy; the one in flight stays.
            unsafe { libc::close(passed) };
            b
        }
        "passcred" => {
            let (a, b) = w.setup("socketpair", socketpair(libc::SOCK_DGRAM));
            w.setup("SO_PASSCRED", setsockopt(b, libc::SO_PASSCRED, 1));
            w.setup("queueing", send(a, b"with credentials"));
            b
        }
        "tcp-pending" => {
            let l = w.setup("a TCP listener", tcp_listener());
            let port = w.setup("its port", inet_name(l, false)).1;
            let c = w.setup("socket", inet_socket(libc::AF_INET, libc::SOCK_STREAM));
            w.setup("connect", inet_connect(c, &[127, 0, 0, 1], port));
            l
        }
        "tcp-outside" => tcp_outside(&w),
        "tcp-unsent" => {
            let (c, a, total) = tcp_unsent(&w);
            unsent = Some((a, total));
            c
        }
        "netlink" => {
            let ty = libc::SOCK_DGRAM | libc::SOCK_CLOEXEC;
            // SAFETY: socket takes only integers.
            let r = unsafe { libc::socket(libc::AF_NETLINK, ty, libc::NETLINK_ROUTE) };
            let fd = w.setup("socket", sys::check(r.into())) as i32;
            // SAFETY: all zeros is a valid sockaddr_nl (pid 0: the kernel picks one).
            let mut nl: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
            nl.nl_family = libc::AF_NETLINK as libc::sa_family_t;
            // SAFETY: `nl` is a live sockaddr_nl of the given size.
            let r = unsafe {
                libc::bind(
                    fd,
                    std::ptr::addr_of!(nl).cast(),
                    std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
                )
            };
            w.setup("bind", sys::check(r.into()));
            fd
        }
        "fifo-deleted" => {
            let path = w.path("gone.fifo");
            let fd = w.setup("mkfifo and open", open_fifo(&path, libc::O_RDWR));
            w.setup("buffering", sys::write(fd, b"in the fifo"));
            w.setup("unlink", std::fs::remove_file(&path));
            fd
        }
        "fifo-outside" => {
            let path = w.path("shared.fifo");
            w.setup("mkfifo", mkfifo(&path));
            let c = sys::cstring(&path);
            outside_process(&w, &[], || {
                // SAFETY: `c` is a live C string; the reads go to a live buffer.
                let r = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
                let mut buf = [0u8; 64];
                // Until the workload's end closes.
                // SAFETY: `buf` is live; a blocking read.
                while unsafe { libc::read(r, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
                exit_now(0)
            });
            // Blocks until the grandchild has it open for reading.
            w.setup("opening the FIFO", open_fifo(&path, libc::O_WRONLY))
        }
        "bound-outside" => {
            use std::os::unix::ffi::OsStrExt;
            let name = w.path("bound-outside.sock").as_os_str().as_bytes().to_vec();
            let server = w.setup("socket", socket(libc::SOCK_DGRAM));
            w.setup("bind", bind(server, &name));
            let mut ready = [0i32; 2];
            // SAFETY: pipe writes two descriptors into `ready`.
            w.setup(
                "pipe",
                sys::check(unsafe { libc::pipe(ready.as_mut_ptr()) }.into()),
            );
            outside_process(&w, &[server, ready[0]], || {
                let connected =
                    socket(libc::SOCK_DGRAM).and_then(|c| connect(c, &name).map(|()| c));
                let byte = [u8::from(connected.is_ok())];
                // SAFETY: one byte from a live buffer; then the pipe is done.
                unsafe {
                    libc::write(ready[1], byte.as_ptr().cast(), 1);
                    libc::close(ready[1]);
                }
                // Connected, outside the tree, until the workload is gone.
                // SAFETY: signal 0 only asks whether the process exists.
                while unsafe { libc::kill(me, 0) } == 0 {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                exit_now(0)
            });
            // SAFETY: our copy of the write end.
            unsafe { libc::close(ready[1]) };
            let mut byte = [0u8; 1];
            let got = sys::read(ready[0], &mut byte);
            // SAFETY: the read end, used up.
            unsafe { libc::close(ready[0]) };
            w.setup(
                "the outside process's connect",
                got.and_then(|n| {
                    if n == 1 && byte[0] == 1 {
                        Ok(())
                    } else {
                        Err(io::Error::other("the process outside could not connect"))
                    }
                }),
            );
            server
        }
        "pair-disconnected" => {
            let (a, b) = w.setup("socketpair", socketpair(libc::SOCK_DGRAM));
            // SAFETY: sockaddr is plain data; AF_UNSPEC with nothing else disconnects.
            let mut addr: libc::sockaddr = unsafe { std::mem::zeroed() };
            addr.sa_family = libc::AF_UNSPEC as libc::sa_family_t;
            // SAFETY: `addr` is a live sockaddr of the length given.
            let r = unsafe {
                libc::connect(
                    a,
                    &addr,
                    std::mem::size_of::<libc::sockaddr>() as libc::socklen_t,
                )
            };
            w.setup("connect(AF_UNSPEC)", sys::check(r.into()));
            // SAFETY: closes the other end, which no one uses.
            unsafe { libc::close(b) };
            a
        }
        "bound-queued" => {
            use std::os::unix::ffi::OsStrExt;
            let name = w.path("bound-queued.sock").as_os_str().as_bytes().to_vec();
            let server = w.setup("socket", socket(libc::SOCK_DGRAM));
            w.setup("bind", bind(server, &name));
            let sender = w.setup("sender socket", socket(libc::SOCK_DGRAM));
            w.setup("queueing", unix_send_to(sender, &name, b"queued datagram"));
            server
        }
        "tcp-close-wait" => {
            let l = w.setup("a TCP listener", tcp_listener());
            let port = w.setup("its port", inet_name(l, false)).1;
            let c = w.setup("socket", inet_socket(libc::AF_INET, libc::SOCK_STREAM));
            w.setup("connect", inet_connect(c, &[127, 0, 0, 1], port));
            let a = w.setup("accept", accept(l));
            // SAFETY: shutdown takes only integers.
            let r = unsafe { libc::shutdown(c, libc::SHUT_WR) };
            w.setup("shutdown(SHUT_WR)", sys::check(r.into()));
            let mut p = libc::pollfd {
                fd: a,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            let r = unsafe { libc::poll(&mut p, 1, 5000) };
            w.setup(
                "poll for the peer's FIN",
                sys::check(r.into()).and_then(|_| {
                    if r == 1 && p.revents & libc::POLLIN != 0 {
                        Ok(())
                    } else {
                        Err(io::Error::other("the peer's FIN did not come within 5 s"))
                    }
                }),
            );
            // The client (FIN_WAIT2) moved above the accepted end (CLOSE_WAIT), so the dump,
            // going by descriptor number, meets the one in CLOSE_WAIT first.
            // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes integers only.
            let high = unsafe { libc::fcntl(c, libc::F_DUPFD_CLOEXEC, 100) };
            let high = w.setup("moving the client up", sys::check(high.into())) as i32;
            // SAFETY: the old number of the client, now also `high`.
            unsafe { libc::close(c) };
            closed_client = Some(high);
            a
        }
        "udp-bindtodevice" => {
            let u = w.setup("socket", inet_socket(libc::AF_INET, libc::SOCK_DGRAM));
            w.setup("bind", inet_bind(u, &[127, 0, 0, 1], 0));
            let dev = b"lo\0";
            // SAFETY: the kernel reads the `dev.len()` bytes of `dev`, live.
            let r = unsafe {
                libc::setsockopt(
                    u,
                    libc::SOL_SOCKET,
                    libc::SO_BINDTODEVICE,
                    dev.as_ptr().cast(),
                    dev.len() as libc::socklen_t,
                )
            };
            w.setup("SO_BINDTODEVICE lo", sys::check(r.into()));
            u
        }
        "udp-queued" => {
            let u = w.setup("socket", inet_socket(libc::AF_INET, libc::SOCK_DGRAM));
            w.setup("bind", inet_bind(u, &[127, 0, 0, 1], 0));
            let port = w.setup("its port", inet_name(u, false)).1;
            w.setup("connect", inet_connect(u, &[127, 0, 0, 1], port));
            w.setup("queueing", send(u, b"queued datagram"));
            u
        }
        "udp-multicast" => {
            let u = w.setup("socket", inet_socket(libc::AF_INET, libc::SOCK_DGRAM));
            w.setup("bind", inet_bind(u, &[0, 0, 0, 0], 0));
            let mreq = libc::ip_mreq {
                imr_multiaddr: libc::in_addr {
                    s_addr: u32::from_ne_bytes([239, 0, 0, 10]),
                },
                imr_interface: libc::in_addr { s_addr: 0 },
            };
            // SAFETY: the kernel reads one ip_mreq from `mreq`.
            let r = unsafe {
                libc::setsockopt(
                    u,
                    libc::IPPROTO_IP,
                    libc::IP_ADD_MEMBERSHIP,
                    std::ptr::addr_of!(mreq).cast(),
                    std::mem::size_of::<libc::ip_mreq>() as libc::socklen_t,
                )
            };
            w.setup("IP_ADD_MEMBERSHIP 239.0.0.10", sys::check(r.into()));
            u
        }
        "oob" => {
            let (a, b) = w.setup("socketpair", socketpair(libc::SOCK_STREAM));
            w.setup("queueing", send(a, b"in band"));
            // SAFETY: a one-byte live buffer.
            let r = unsafe { libc::send(a, b"!".as_ptr().cast(), 1, libc::MSG_OOB) };
            w.setup("MSG_OOB", sys::check(r as libc::c_long));
            b
        }
        "tcp-md5" => {
            let l = w.setup("a TCP listener", tcp_listener());
            // struct tcp_md5sig: a sockaddr_storage (128 bytes), flags, prefix length, key
            // length, ifindex, then the key (80 bytes).
            let mut sig = vec![0u8; 128 + 8 + 80];
            sig[0..2].copy_from_slice(&(libc::AF_INET as u16).to_ne_bytes());
            sig[4..8].copy_from_slice(&[127, 0, 0, 1]);
            sig[130..132].copy_from_slice(&4u16.to_ne_bytes());
            sig[136..140].copy_from_slice(b"key!");
            // SAFETY: the kernel reads `sig.len()` bytes from `sig`, live.
            let r = unsafe {
                libc::setsockopt(
                    l,
                    libc::IPPROTO_TCP,
                    libc::TCP_MD5SIG,
                    sig.as_ptr().cast(),
                    sig.len() as libc::socklen_t,
                )
            };
            w.setup("TCP_MD5SIG", sys::check(r.into()));
            l
        }
        "udp-error" => {
            // A port nobody listens on: its ICMP port unreachable sets the socket's error.
            let gone = w.setup("socket", inet_socket(libc::AF_INET, libc::SOCK_DGRAM));
            w.setup("bind", inet_bind(gone, &[127, 0, 0, 1], 0));
            let port = w.setup("its port", inet_name(gone, false)).1;
            // SAFETY: ours, done with: its port is now closed.
            unsafe { libc::close(gone) };
            let u = w.setup("socket", inet_socket(libc::AF_INET, libc::SOCK_DGRAM));
            w.setup("connect", inet_connect(u, &[127, 0, 0, 1], port));
            w.setup("sending to a closed port", send(u, b"anyone?"));
            let mut p = libc::pollfd {
                fd: u,
                events: 0,
                revents: 0,
            };
            // SAFETY: one live pollfd.
            let r = unsafe { libc::poll(&mut p, 1, 5000) };
            w.setup("poll for the error", sys::check(r.into()));
            u
        }
        "unix-filter" => {
            let (_a, b) = w.setup("socketpair", socketpair(libc::SOCK_DGRAM));
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
                    b,
                    libc::SOL_SOCKET,
                    libc::SO_ATTACH_FILTER,
                    std::ptr::addr_of!(fprog).cast(),
                    std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
                )
            };
            w.setup("SO_ATTACH_FILTER", sys::check(r.into()));
            b
        }
        "empty-at-end" => {
            let (a, b) = w.setup("socketpair", socketpair(libc::SOCK_SEQPACKET));
            for m in [&b"x"[..], b""] {
                w.setup("queueing", send(a, m));
            }
            // SAFETY: shutdown takes only integers.
            let r = unsafe { libc::shutdown(b, libc::SHUT_RD) };
            w.setup("shutdown(SHUT_RD)", sys::check(r.into()));
            b
        }
        "empty-peeked" => {
            let (a, b) = w.setup("socketpair", socketpair(libc::SOCK_DGRAM));
            for m in [&b"x"[..], b"", b"y"] {
                w.setup("queueing", send(a, m));
            }
            // Peeked through with an offset: the empty one is marked peeked, not first.
            w.setup("SO_PEEK_OFF", setsockopt(b, libc::SO_PEEK_OFF, 0));
            let mut buf = [0u8; 8];
            for _ in 0..3 {
                w.setup("recv(MSG_PEEK)", peek(b, &mut buf));
            }
            b
        }
        "pending" => {
            let name = format!("\0crlab-sockets-pending-{me}").into_bytes();
            let l = w.setup("socket", socket(libc::SOCK_STREAM));
            w.setup("bind", bind(l, &name));
            w.setup("listen", listen(l, 4));
            let c = w.setup("socket", socket(libc::SOCK_STREAM));
            w.setup("connect", connect(c, &name));
            l
        }
        other => w.setup_failed(&format!("unknown kind {other:?}")),
    };
    w.announce("refused-pid", me);
    w.announce("refused-fd", fd);
    let mut checks = w.wait();
    w.common_checks(&mut checks);
    let mut buf = [0u8; 64];
    match kind {
        "outside" => {
            checks.io("sending to the process outside", send(fd, b"still there"));
        }
        "peercred-relisten" => {
            if let Some(n) = checks.io("recv", recv(fd, &mut buf)) {
                checks.eq(
                    "the queued bytes",
                    &b"before the second listen"[..],
                    &buf[..n],
                );
            }
            if let Some(c) = checks.io("SO_PEERCRED", peer_cred(fd)) {
                checks.eq("the client's peer uid (the first listen's)", 0, c.uid);
            }
        }
        "peercred-exited" | "peercred-reused" => {
            if let Some(n) = checks.io("recv", recv(fd, &mut buf)) {
                checks.eq("the queued message", &b"made by a child"[..], &buf[..n]);
            }
            if let Some(c) = checks.io("SO_PEERCRED", peer_cred(fd)) {
                checks.that(c.pid != me, "the pair's credentials still name the child");
            }
        }
        "scm-rights" => match recv_fd(fd) {
            Ok(true) => {}
            other => checks.fail(format!("the descriptor in flight is gone: {other:?}")),
        },
        "oob" => {
            let mut b = [0u8; 1];
            // SAFETY: a one-byte live buffer.
            let r = unsafe { libc::recv(fd, b.as_mut_ptr().cast(), 1, libc::MSG_OOB) };
            if checks
                .io("recv(MSG_OOB)", sys::check(r as libc::c_long))
                .is_some()
            {
                checks.eq("the out-of-band byte", b'!', b[0]);
            }
        }
        "pending" => {
            if let Some(conn) = checks.io("accepting the pending connection", accept(fd)) {
                // SAFETY: ours, done with.
                unsafe { libc::close(conn) };
            }
        }
        "passcred" => {
            if let Some(n) = checks.io("recv", recv(fd, &mut buf)) {
                checks.eq("the queued message", &b"with credentials"[..], &buf[..n]);
            }
        }
        "tcp-unsent" => {
            if let Some((a, total)) = unsent {
                if let Some(got) = checks.io("every byte the client sent", recv_exact(a, total)) {
                    checks.that(
                        got.iter().all(|b| *b == 7),
                        "the client's bytes, all of them",
                    );
                }
            }
        }
        "tcp-outside" => {
            if let Some(got) = checks.io("recv over TCP", recv_exact(fd, 8)) {
                checks.eq("the data over TCP", &b"over tcp"[..], &got[..]);
            }
            checks.io("sending to the peer outside", send(fd, b"still there"));
        }
        "fifo-deleted" => {
            if let Some(n) = checks.io("reading the FIFO", sys::read(fd, &mut buf)) {
                checks.eq("the FIFO's bytes", &b"in the fifo"[..], &buf[..n]);
            }
        }
        "fifo-outside" => {
            checks.io("writing to the FIFO", sys::write(fd, b"still read"));
        }
        "netlink" => {
            if let Some(v) = checks.io("SO_DOMAIN", getsockopt(fd, libc::SO_DOMAIN)) {
                checks.eq("the netlink socket is still one", libc::AF_NETLINK, v);
            }
        }
        "udp-multicast" => {
            // Still a member: leaving the group succeeds only for a member.
            let mreq = libc::ip_mreq {
                imr_multiaddr: libc::in_addr {
                    s_addr: u32::from_ne_bytes([239, 0, 0, 10]),
                },
                imr_interface: libc::in_addr { s_addr: 0 },
            };
            // SAFETY: the kernel reads one ip_mreq from `mreq`.
            let r = unsafe {
                libc::setsockopt(
                    fd,
                    libc::IPPROTO_IP,
                    libc::IP_DROP_MEMBERSHIP,
                    std::ptr::addr_of!(mreq).cast(),
                    std::mem::size_of::<libc::ip_mreq>() as libc::socklen_t,
                )
            };
            checks.io("IP_DROP_MEMBERSHIP (still a member)", sys::check(r.into()));
        }
        "empty-at-end" | "empty-peeked" => {
            let want: &[&[u8]] = if kind == "empty-at-end" {
                &[b"x", b""]
            } else {
                &[b"x", b"", b"y"]
            };
            for (i, m) in want.iter().enumerate() {
                if let Some(n) = checks.io(&format!("recv of message {i}"), recv(fd, &mut buf)) {
                    checks.eq(&format!("message {i}"), *m, &buf[..n]);
                }
            }
        }
        "udp-error" => {
            if let Some(v) = checks.io("SO_ERROR", getsockopt(fd, libc::SO_ERROR)) {
                checks.eq("the error still pending", libc::ECONNREFUSED, v);
            }
        }
        "unix-filter" => {
            if let Some(v) = checks.io("SO_GET_FILTER", getsockopt(fd, libc::SO_GET_FILTER)) {
                checks.that(v != 0, "the filter is still attached (SO_GET_FILTER not 0)");
            }
        }
        "tcp-close-wait" => {
            checks.eq(
                "recv (the end of the peer's stream)",
                0,
                recv(fd, &mut buf).unwrap_or(1),
            );
            checks.io(
                "sending to the half-closed peer",
                send(fd, b"after the FIN"),
            );
            if let Some(c) = closed_client {
                if let Some(got) = checks.io("the client's recv", recv_exact(c, 13)) {
                    checks.eq("the bytes after the FIN", &b"after the FIN"[..], &got[..]);
                }
            }
        }
        "udp-bindtodevice" => {
            let lo = c"lo";
            // SAFETY: `lo` is a NUL-terminated name.
            let index = unsafe { libc::if_nametoindex(lo.as_ptr()) } as i32;
            checks.that(index != 0, "lo has an interface index");
            if let Some(v) = checks.io(
                "SO_BINDTOIFINDEX",
                get_opt(fd, libc::SOL_SOCKET, libc::SO_BINDTOIFINDEX),
            ) {
                checks.eq("the device the socket is bound to (lo's index)", index, v);
            }
        }
        "bound-outside" => {
            let n = name_of(fd, false);
            if let Some(n) = checks.io("the bound socket's name", n) {
                checks.that(
                    n.ends_with(b"bound-outside.sock"),
                    "the socket is still bound to bound-outside.sock",
                );
            }
        }
        "pair-disconnected" => {
            if let Some(c) = checks.io("SO_PEERCRED", peer_cred(fd)) {
                checks.eq(
                    "its peer credentials' pid (its maker's)",
                    sys::getpid(),
                    c.pid,
                );
            }
        }
        "udp-queued" | "bound-queued" => {
            if let Some(n) = checks.io("recv of the datagram", recv(fd, &mut buf)) {
                checks.eq("the queued datagram", &b"queued datagram"[..], &buf[..n]);
            }
        }
        _ => {
            if let Some(v) = checks.io("SO_ACCEPTCONN", getsockopt(fd, libc::SO_ACCEPTCONN)) {
                checks.eq("the TCP listener still listens", 1, v);
            }
        }
    }
    w.finish(checks)
}

fn tcp_listener() -> io::Result<i32> {
    // SAFETY: socket takes only integers.
    let fd =
        sys::check(unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) }.into())? as i32;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from_ne_bytes([127, 0, 0, 1]),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `addr` is a live sockaddr_in of the given size.
    let r = unsafe {
        libc::bind(
            fd,
            std::ptr::addr_of!(addr).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    sys::check(r.into())?;
    // SAFETY: listen takes only integers.
    sys::check(unsafe { libc::listen(fd, 4) }.into())?;
    Ok(fd)
}

fn send_fd(sock: i32, fd: i32) -> io::Result<()> {
    let mut byte = [b'F'];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut space = [0u64; 4];
    // SAFETY: a zeroed msghdr is valid; the pointers set below stay live for the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    // SAFETY: CMSG_SPACE computes a size.
    msg.msg_controllen = unsafe { libc::CMSG_SPACE(4) } as usize;
    // SAFETY: the control buffer holds CMSG_SPACE(4) bytes, so the first header fits.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        (*c).cmsg_level = libc::SOL_SOCKET;
        (*c).cmsg_type = libc::SCM_RIGHTS;
        (*c).cmsg_len = libc::CMSG_LEN(4) as usize;
        std::ptr::write_unaligned(libc::CMSG_DATA(c).cast::<i32>(), fd);
    }
    // SAFETY: `msg` and everything it points to are live.
    sys::check(unsafe { libc::sendmsg(sock, &msg, 0) } as libc::c_long).map(drop)
}

/// Receives one message and says whether it carried a descriptor (closed at once).
fn recv_fd(sock: i32) -> io::Result<bool> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut space = [0u64; 4];
    // SAFETY: a zeroed msghdr is valid; the pointers set below stay live for the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&space);
    // SAFETY: `msg` and everything it points to are live.
    sys::check(unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_DONTWAIT) } as libc::c_long)?;
    // SAFETY: the kernel filled the control buffer `msg` describes.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
            return Ok(false);
        }
        let fd = std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>());
        libc::close(fd);
    }
    Ok(true)
}

/// Receives one message (blocking) and returns the descriptor it carried.
fn take_fd(sock: i32) -> io::Result<i32> {
    let mut byte = [0u8; 1];
    let mut iov = libc::iovec {
        iov_base: byte.as_mut_ptr().cast(),
        iov_len: 1,
    };
    let mut space = [0u64; 4];
    // SAFETY: a zeroed msghdr is valid; the pointers set below stay live for the call.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = space.as_mut_ptr().cast();
    msg.msg_controllen = std::mem::size_of_val(&space);
    // SAFETY: `msg` and everything it points to are live.
    sys::check(unsafe { libc::recvmsg(sock, &mut msg, 0) } as libc::c_long)?;
    // SAFETY: the kernel filled the control buffer `msg` describes.
    unsafe {
        let c = libc::CMSG_FIRSTHDR(&msg);
        if c.is_null() || (*c).cmsg_type != libc::SCM_RIGHTS {
            return Err(io::Error::other("no descriptor in the message"));
        }
        Ok(std::ptr::read_unaligned(libc::CMSG_DATA(c).cast::<i32>()))
    }
}

/// The process's own credentials as a socket's peer credentials give them.
fn own_cred(pid: i32) -> Cred {
    // SAFETY: these calls take no pointer but getgroups', a live buffer of its length.
    unsafe {
        let mut groups = vec![0u32; 256];
        let n = libc::getgroups(256, groups.as_mut_ptr());
        groups.truncate(usize::try_from(n).unwrap_or(0));
        groups.sort_unstable();
        Cred {
            pid,
            uid: libc::geteuid(),
            gid: libc::getegid(),
            groups,
        }
    }
}

/// `peercred`: run as another user (uid, gid, groups), the peer credentials of a pair made
/// by this process (both ends, one of them also held by the child), of its listener, of a
/// seqpacket pair the child made (the child keeps one end and passed the other here with
/// `SCM_RIGHTS`), and of a connection the child made to the listener (accepted here; the
/// child's client end carries the listener's). Each is checked at setup to be what the kernel
/// records (the maker's pid and ids) and after the wait to be what it was; the child checks
/// its own ends and reports over its connection.
fn peercred(mut w: Workload) -> ! {
    let me = sys::getpid();
    let mine = own_cred(me);
    let (pa, pb) = w.setup("socketpair", socketpair(libc::SOCK_STREAM));
    let path = w.path("peercred.sock");
    use std::os::unix::ffi::OsStrExt;
    let name = path.as_os_str().as_bytes().to_vec();
    let listener = w.setup("socket", socket(libc::SOCK_STREAM));
    w.setup("bind", bind(listener, &name));
    w.setup("listen", listen(listener, 4));
    let mut go = [0i32; 2];
    // SAFETY: pipe writes two descriptors into `go`.
    w.setup(
        "pipe",
        sys::check(unsafe { libc::pipe(go.as_mut_ptr()) }.into()),
    );
    // SAFETY: fork in a single-threaded program.
    let child = w.setup("fork", sys::check(unsafe { libc::fork() }.into())) as i32;
    if child == 0 {
        let run = || -> io::Result<String> {
            let kid = own_cred(sys::getpid());
            let (ca, cb) = socketpair(libc::SOCK_SEQPACKET)?;
            send_fd(pb, cb)?;
            // SAFETY: passed to the parent; ours is done with.
            unsafe { libc::close(cb) };
            let client = socket(libc::SOCK_STREAM)?;
            connect(client, &name)?;
            let before = (peer_cred(ca)?, peer_cred(client)?);
            let mut b = [0u8; 1];
            // Blocks until the parent has checked its own sockets.
            sys::read(go[0], &mut b)?;
            let after = (peer_cred(ca)?, peer_cred(client)?);
            let want = (kid, own_cred(me));
            let report = if before != want {
                format!("fail: before the dump, the child's ends had {before:?}, not {want:?}")
            } else if after != before {
                format!("fail: the child's ends have {after:?}, not {before:?}")
            } else {
                "ok".to_owned()
            };
            // SAFETY: a live buffer; a blocking send on the connection.
            unsafe { libc::send(client, report.as_ptr().cast(), report.len(), 0) };
            Ok(report)
        };
        // SAFETY: the parent's descriptors are not the child's.
        unsafe {
            libc::close(pa);
            libc::close(listener);
            libc::close(go[1]);
        }
        let code = i32::from(!matches!(run().as_deref(), Ok("ok")));
        // SAFETY: _exit ends the child at once.
        unsafe { libc::_exit(code) };
    }
    // SAFETY: the pipe's read end is the child's.
    unsafe { libc::close(go[0]) };
    let from_child = w.setup("receiving the child's pair end", take_fd(pa));
    let accepted = w.setup("accept", accept(listener));
    let kid = Cred {
        pid: child,
        ..mine.clone()
    };
    let socks = [
        ("the pair's first end", pa, &mine),
        ("the pair's second end (also the child's)", pb, &mine),
        ("the listener", listener, &mine),
        ("the end of the child's pair", from_child, &kid),
        ("the connection accepted from the child", accepted, &kid),
    ];
    for (what, fd, want) in socks {
        let got = w.setup("SO_PEERCRED", peer_cred(fd));
        if got != *want {
            w.setup_failed(&format!(
                "{what}: peer credentials {got:?} before the dump, not {want:?}"
            ));
        }
    }
    w.announce("child-pid", child);

    let mut checks = w.wait();
    w.common_checks(&mut checks);
    for (what, fd, want) in socks {
        check_cred(&mut checks, what, fd, want);
    }
    checks.io("the go byte", sys::write(go[1], b"g"));
    child_reports(&mut checks, accepted, child);
    w.finish(checks)
}

/// `peercred-switched`: run as root, a stream pair made while this thread's effective uid,
/// gid and groups were others (4242, 4343, [4444], switched by system calls and back): its
/// peer credentials are those, not the process's, before the dump and after the restore.
fn peercred_switched(mut w: Workload) -> ! {
    let keep = u64::from(u32::MAX);
    let groups = [4444u32];
    // SAFETY: setgroups reads one gid from a live array; setresgid and setresuid take
    // integers; they change this thread's credentials only (system calls, not libc's).
    let made = unsafe {
        sys::check(libc::syscall(libc::SYS_setgroups, 1u64, groups.as_ptr()))
            .and_then(|_| sys::check(libc::syscall(libc::SYS_setresgid, keep, 4343u64, keep)))
            .and_then(|_| sys::check(libc::syscall(libc::SYS_setresuid, keep, 4242u64, keep)))
            .and_then(|_| socketpair(libc::SOCK_STREAM))
    };
    // SAFETY: as above; the real and saved uids are still root's, so this may switch back.
    let back = unsafe {
        sys::check(libc::syscall(libc::SYS_setresuid, keep, 0u64, keep))
            .and_then(|_| sys::check(libc::syscall(libc::SYS_setresgid, keep, 0u64, keep)))
            .and_then(|_| sys::check(libc::syscall(libc::SYS_setgroups, 0u64, 0u64)))
    };
    w.setup("switching back to root", back);
    let (a, b) = w.setup("socketpair as 4242", made);
    let want = Cred {
        pid: sys::getpid(),
        uid: 4242,
        gid: 4343,
        groups: groups.to_vec(),
    };
    for fd in [a, b] {
        let got = w.setup("SO_PEERCRED", peer_cred(fd));
        if got != want {
            w.setup_failed(&format!(
                "peer credentials {got:?} before the dump, not {want:?}"
            ));
        }
    }
    let mut checks = w.wait();
    w.common_checks(&mut checks);
    // SAFETY: geteuid cannot fail.
    checks.eq("the process's own euid", 0, unsafe { libc::geteuid() });
    check_cred(&mut checks, "the pair's first end", a, &want);
    check_cred(&mut checks, "the pair's second end", b, &want);
    w.finish(checks)
}

/// A stream pair a child made and passed here (`SCM_RIGHTS`) before it exited and was
/// reaped: its peer credentials name the child. Returns (end with the lower inode, the other
/// end, the child's pid).
fn made_by_exited_child(w: &Workload) -> (i32, i32, i32) {
    let (t1, t2) = w.setup("socketpair", socketpair(libc::SOCK_STREAM));
    // SAFETY: fork in a single-threaded program; the child only makes system calls.
    let child = w.setup("fork", sys::check(unsafe { libc::fork() }.into())) as i32;
    if child == 0 {
        let code = match socketpair(libc::SOCK_STREAM) {
            Ok((x, y)) if send_fd(t2, x).is_ok() && send_fd(t2, y).is_ok() => 0,
            _ => 1,
        };
        // SAFETY: _exit ends the child at once.
        unsafe { libc::_exit(code) };
    }
    let x = w.setup("receiving the child's pair", take_fd(t1));
    let y = w.setup("receiving the child's pair", take_fd(t1));
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(child, &mut status, 0) };
    w.setup("waitpid", sys::check(r.into()));
    // SAFETY: ours, done with.
    unsafe {
        libc::close(t1);
        libc::close(t2);
    }
    let ino = |fd: i32| {
        // SAFETY: a zeroed stat is valid; fstat fills it.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: `st` is live.
        unsafe { libc::fstat(fd, &mut st) };
        st.st_ino
    };
    if ino(x) < ino(y) {
        (x, y, child)
    } else {
        (y, x, child)
    }
}

/// A child of this process with pid `pid` (`clone3` with `set_tid`, which root may ask for),
/// blocked until `hold` (a pipe's read end) sees its writer close, then gone; it closes
/// `close` first (this process's sockets are not its own).
fn child_with_pid(w: &Workload, pid: i32, hold: i32, close: &[i32]) -> i32 {
    let tid = [pid];
    let mut args = [0u64; 11];
    args[4] = libc::SIGCHLD as u64;
    args[8] = tid.as_ptr() as u64;
    args[9] = 1;
    // SAFETY: clone3 with no stack behaves as fork (the child runs on a copy of this
    // single-threaded program's memory); `args` and `tid` are live for the call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args.as_mut_ptr(),
            std::mem::size_of_val(&args),
        )
    };
    let child = w.setup("clone3(set_tid)", sys::check(r)) as i32;
    if child == 0 {
        for &fd in close {
            // SAFETY: this process's copies of the parent's descriptors.
            unsafe { libc::close(fd) };
        }
        let mut b = [0u8; 1];
        // SAFETY: a live buffer; blocks until the workload ends.
        unsafe { libc::read(hold, b.as_mut_ptr().cast(), 1) };
        // SAFETY: _exit ends the child at once.
        unsafe { libc::_exit(0) };
    }
    child
}

/// `sockaddr_un` for `name` (a path, or an abstract name starting with a NUL) and its length.
fn sockaddr(name: &[u8]) -> (libc::sockaddr_un, libc::socklen_t) {
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in sa.sun_path.iter_mut().zip(name) {
        *d = *s as libc::c_char;
    }
    let extra = usize::from(name.first() != Some(&0));
    let len = std::mem::size_of::<libc::sa_family_t>() + name.len() + extra;
    (sa, len as libc::socklen_t)
}

fn socket(ty: i32) -> io::Result<i32> {
    // SAFETY: socket takes only integers.
    sys::check(unsafe { libc::socket(libc::AF_UNIX, ty, 0) }.into()).map(|fd| fd as i32)
}

fn bind(fd: i32, name: &[u8]) -> io::Result<()> {
    let (sa, len) = sockaddr(name);
    // SAFETY: `sa` is a live sockaddr_un of at least `len` bytes.
    sys::check(unsafe { libc::bind(fd, std::ptr::addr_of!(sa).cast(), len) }.into()).map(drop)
}

fn listen(fd: i32, backlog: i32) -> io::Result<()> {
    // SAFETY: listen takes only integers.
    sys::check(unsafe { libc::listen(fd, backlog) }.into()).map(drop)
}

fn connect(fd: i32, name: &[u8]) -> io::Result<()> {
    let (sa, len) = sockaddr(name);
    // SAFETY: `sa` is a live sockaddr_un of at least `len` bytes.
    sys::check(unsafe { libc::connect(fd, std::ptr::addr_of!(sa).cast(), len) }.into()).map(drop)
}

fn accept(fd: i32) -> io::Result<i32> {
    // SAFETY: no address is asked for.
    let r = unsafe { libc::accept4(fd, std::ptr::null_mut(), std::ptr::null_mut(), 0) };
    sys::check(r.into()).map(|fd| fd as i32)
}

/// A socket's own (`peer: false`) or its peer's name: the bytes of `sun_path` the kernel
/// gives, a path without its terminating NUL.
fn name_of(fd: i32, peer: bool) -> io::Result<Vec<u8>> {
    // SAFETY: a zeroed sockaddr_un is valid.
    let mut sa: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let p = std::ptr::addr_of_mut!(sa).cast();
    // SAFETY: `sa` and `len` are live; the kernel writes at most `len` bytes.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    sys::check(r.into())?;
    Ok(sun_name(&sa, len))
}

/// The name in `sa` of length `len` as `sun_path` holds it: a path without its terminating
/// NULs, or an abstract name starting with a NUL.
fn sun_name(sa: &libc::sockaddr_un, len: libc::socklen_t) -> Vec<u8> {
    let n = usize::try_from(len)
        .unwrap_or(0)
        .saturating_sub(std::mem::size_of::<libc::sa_family_t>())
        .min(sa.sun_path.len());
    let mut name: Vec<u8> = sa.sun_path[..n].iter().map(|&c| c as u8).collect();
    if name.first() != Some(&0) {
        while name.last() == Some(&0) {
            name.pop();
        }
    }
    name
}

fn path_label(path: &std::path::Path) -> io::Result<Option<Vec<u8>>> {
    if !std::path::Path::new("/sys/fs/selinux/enforce").exists() {
        return Ok(None);
    }
    let c = sys::cstring(path);
    let mut buf = [0u8; 512];
    // SAFETY: both names are NUL-terminated and `buf` is a live buffer of its length.
    let n = unsafe {
        libc::lgetxattr(
            c.as_ptr(),
            c"security.selinux".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = sys::check(n as libc::c_long)? as usize;
    Ok(Some(buf[..n].to_vec()))
}

/// One listener with the connection accepted on it.
struct Served {
    what: &'static str,
    name: Vec<u8>,
    ty: i32,
    listener: i32,
    listener_label: Option<Vec<u8>>,
    listener_cred: Cred,
    client: End,
    accepted: End,
    client_name: Vec<u8>,
}

fn serve(
    w: &Workload,
    what: &'static str,
    ty: i32,
    name: Vec<u8>,
    backlog: i32,
    client_name: &[u8],
) -> Served {
    let listener = w.setup(&format!("{what}: socket"), socket(ty));
    w.setup(&format!("{what}: bind"), bind(listener, &name));
    w.setup(&format!("{what}: listen"), listen(listener, backlog));
    let client = w.setup(&format!("{what}: client socket"), socket(ty));
    if !client_name.is_empty() {
        w.setup(&format!("{what}: client bind"), bind(client, client_name));
    }
    w.setup(&format!("{what}: connect"), connect(client, &name));
    let accepted = w.setup(&format!("{what}: accept"), accept(listener));
    let to_accepted = messages(ty, "the client");
    let to_client = messages(ty, "the server");
    for m in &to_accepted {
        w.setup(&format!("{what}: queueing to the server"), send(client, m));
    }
    for m in &to_client {
        w.setup(
            &format!("{what}: queueing to the client"),
            send(accepted, m),
        );
    }
    let end = |name: &str, fd, queued| End {
        name: format!("{what} {name}"),
        fd,
        ty,
        queued,
        label: w.setup("fgetxattr(security.selinux)", label(fd)),
        cred: w.setup("SO_PEERCRED", peer_cred(fd)),
    };
    Served {
        what,
        name,
        ty,
        listener,
        listener_label: w.setup("fgetxattr(security.selinux)", label(listener)),
        listener_cred: w.setup("SO_PEERCRED", peer_cred(listener)),
        client: end("client", client, to_client),
        accepted: end("accepted", accepted, to_accepted),
        client_name: client_name.to_vec(),
    }
}

fn check_served(checks: &mut Checks, s: &Served) {
    let what = s.what;
    check_cred(
        checks,
        &format!("{what}: listener"),
        s.listener,
        &s.listener_cred,
    );
    let names = [
        ("listener's name", s.listener, false, &s.name),
        ("accepted end's name", s.accepted.fd, false, &s.name),
        ("accepted end's peer", s.accepted.fd, true, &s.client_name),
        ("client's name", s.client.fd, false, &s.client_name),
        ("client's peer", s.client.fd, true, &s.name),
    ];
    for (which, fd, peer, want) in names {
        if let Some(got) = checks.io(&format!("{what}: {which}"), name_of(fd, peer)) {
            checks.eq(&format!("{what}: {which}"), want, &got);
        }
    }
    if let Some(v) = checks.io("SO_ACCEPTCONN", getsockopt(s.listener, libc::SO_ACCEPTCONN)) {
        checks.eq(&format!("{what}: listening"), 1, v);
    }
    if let Some(ty) = checks.io("SO_TYPE", getsockopt(s.listener, libc::SO_TYPE)) {
        checks.eq(&format!("{what}: listener type"), s.ty, ty);
    }
    if let Some(l) = checks.io("fgetxattr(security.selinux)", label(s.listener)) {
        checks.eq(
            &format!("{what}: listener's SELinux label"),
            &s.listener_label,
            &l,
        );
    }
    check_end(checks, &s.client);
    check_end(checks, &s.accepted);
    check_alive(checks, &s.client, &s.accepted);
    // A new client is accepted.
    let Some(fresh) = checks.io(&format!("{what}: a new client"), socket(s.ty)) else {
        return;
    };
    if checks
        .io(
            &format!("{what}: a new client connects"),
            connect(fresh, &s.name),
        )
        .is_some()
    {
        if let Some(conn) = checks.io(
            &format!("{what}: accepting the new client"),
            accept(s.listener),
        ) {
            let mut buf = [0u8; 32];
            if checks
                .io(&format!("{what}: new client send"), send(fresh, b"hello"))
                .is_some()
            {
                if let Some(n) = checks.io(
                    &format!("{what}: new connection recv"),
                    recv(conn, &mut buf),
                ) {
                    checks.eq(
                        &format!("{what}: the new client's message"),
                        &b"hello"[..],
                        &buf[..n],
                    );
                }
            }
            // SAFETY: ours, done with.
            unsafe { libc::close(conn) };
        }
    }
    // SAFETY: ours, done with.
    unsafe { libc::close(fresh) };
}

fn listeners(mut w: Workload) -> ! {
    let me = sys::getpid();
    let path = w.path("listen.sock");
    use std::os::unix::ffi::OsStrExt;
    let path_name = path.as_os_str().as_bytes().to_vec();
    let stream = serve(&w, "path listener", libc::SOCK_STREAM, path_name, 7, b"");
    w.setup(
        "chmod of the socket file",
        std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o640)),
    );
    let abstract_name = format!("\0crlab-sockets-{me}").into_bytes();
    let client_name = format!("\0crlab-sockets-client-{me}").into_bytes();
    let seq = serve(
        &w,
        "abstract listener",
        libc::SOCK_SEQPACKET,
        abstract_name,
        3,
        &client_name,
    );
    let file_label = w.setup("lgetxattr of the socket file", path_label(&path));

    let mut checks = w.wait();
    w.common_checks(&mut checks);
    check_served(&mut checks, &stream);
    check_served(&mut checks, &seq);
    use std::os::unix::fs::{FileTypeExt, PermissionsExt};
    if let Some(m) = checks.io("lstat of the socket file", std::fs::symlink_metadata(&path)) {
        checks.that(m.file_type().is_socket(), "the socket file is a socket");
        checks.eq(
            "the socket file's mode",
            0o640,
            m.permissions().mode() & 0o7777,
        );
    }
    if let Some(l) = checks.io("lgetxattr of the socket file", path_label(&path)) {
        checks.eq("the socket file's SELinux label", &file_label, &l);
    }
    w.finish(checks)
}

/// Reads every message `e` expects, in order, and says what differed (the child's check).
fn child_check(e: &End) -> Result<(), String> {
    let mut checks = Checks::new();
    check_end(&mut checks, e);
    let failures = checks.into_failures();
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

fn children(mut w: Workload) -> ! {
    let (pa, pc) = w.setup("socketpair", socketpair(libc::SOCK_SEQPACKET));
    let to_child = messages(libc::SOCK_SEQPACKET, "the parent");
    let to_parent = messages(libc::SOCK_SEQPACKET, "the child");
    for m in &to_child {
        w.setup("queueing to the child", send(pa, m));
    }
    for m in &to_parent {
        w.setup("queueing to the parent", send(pc, m));
    }
    let path = w.path("children.sock");
    use std::os::unix::ffi::OsStrExt;
    let served = serve(
        &w,
        "listener",
        libc::SOCK_STREAM,
        path.as_os_str().as_bytes().to_vec(),
        5,
        b"",
    );
    let mut go = [0i32; 2];
    // SAFETY: pipe writes two descriptors into `go`.
    w.setup(
        "pipe",
        sys::check(unsafe { libc::pipe(go.as_mut_ptr()) }.into()),
    );
    let label = |fd| w.setup("fgetxattr(security.selinux)", label(fd));
    let parent_end = End {
        name: "the parent's pair end".into(),
        fd: pa,
        ty: libc::SOCK_SEQPACKET,
        queued: to_parent,
        label: label(pa),
        cred: w.setup("SO_PEERCRED", peer_cred(pa)),
    };
    let child_end = End {
        name: "the child's pair end".into(),
        fd: pc,
        ty: libc::SOCK_SEQPACKET,
        queued: to_child,
        label: label(pc),
        cred: w.setup("SO_PEERCRED", peer_cred(pc)),
    };
    // SAFETY: fork in a single-threaded program.
    let child = w.setup("fork", sys::check(unsafe { libc::fork() }.into())) as i32;
    if child == 0 {
        // SAFETY: the parent's ends, and the pipe's write end, are not the child's.
        unsafe {
            libc::close(pa);
            libc::close(served.listener);
            libc::close(served.accepted.fd);
            libc::close(go[1]);
        }
        let mut b = [0u8; 1];
        // Blocks until the parent has checked its own ends.
        let report = match sys::read(go[0], &mut b) {
            Ok(1) => child_check(&child_end)
                .and_then(|()| child_check(&served.client))
                .map(|()| "ok".to_owned())
                .unwrap_or_else(|e| format!("fail: {e}")),
            other => format!("fail: the go pipe gave {other:?}"),
        };
        // SAFETY: a live buffer; a blocking send on the pair.
        unsafe { libc::send(pc, report.as_ptr().cast(), report.len(), 0) };
        // SAFETY: _exit ends the child at once.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: the child's ends and the pipe's read end are not ours.
    unsafe {
        libc::close(pc);
        libc::close(served.client.fd);
        libc::close(go[0]);
    }
    w.announce("child-pid", child);

    let mut checks = w.wait();
    w.common_checks(&mut checks);
    check_end(&mut checks, &parent_end);
    check_end(&mut checks, &served.accepted);
    if let Some(got) = checks.io(
        "the accepted end's name",
        name_of(served.accepted.fd, false),
    ) {
        checks.eq("the accepted end's name", &served.name, &got);
    }
    checks.io("the go byte", sys::write(go[1], b"g"));
    child_reports(&mut checks, pa, child);
    w.finish(checks)
}

/// Receives the child's report on `fd` (it must say `ok`), then reaps `child`, which must
/// exit 0.
fn child_reports(checks: &mut Checks, fd: i32, child: i32) {
    let mut buf = [0u8; 4096];
    // SAFETY: a live buffer; a blocking receive of the child's report.
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) };
    if let Some(n) = checks.io("the child's report", sys::check(n as libc::c_long)) {
        let report = String::from_utf8_lossy(&buf[..n as usize]).into_owned();
        checks.eq("the child's report", "ok", report.as_str());
    }
    let mut status = 0;
    // SAFETY: waiting for our own child.
    let r = unsafe { libc::waitpid(child, &mut status, 0) };
    if checks.io("waitpid", sys::check(r.into())).is_some() {
        checks.that(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "the child exits 0",
        );
    }
}

fn main() {
    let w = Workload::from_args("sockets");
    let kind = w.args().first().cloned().unwrap_or_default();
    match kind.as_str() {
        "pairs" => pairs(w),
        "listeners" => listeners(w),
        "children" => children(w),
        "peercred" => peercred(w),
        "peercred-switched" => peercred_switched(w),
        "inet-listeners" => inet_listeners(w),
        "udp" => udp(w),
        "fifo" => fifo(w),
        "empty-messages" => empty_messages(w),
        "options" => options(w),
        "tcp-connections" => tcp_connections(w),
        "bound" => bound(w),
        "labelled" => labelled(w),
        other => refused(w, other),
    }
}

/// Sends `data` to the socket named `name` (`sendto`).
fn unix_send_to(fd: i32, name: &[u8], data: &[u8]) -> io::Result<usize> {
    let (addr, len) = sockaddr(name);
    // SAFETY: `data` is a live buffer of `data.len()` bytes, `addr` a live sockaddr_un of
    // `len` bytes.
    let r = unsafe {
        libc::sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            std::ptr::addr_of!(addr).cast(),
            len,
        )
    };
    sys::check(r as libc::c_long).map(|n| n as usize)
}

/// Receives a datagram (`recvfrom`): its bytes and its sender's name (empty when unnamed).
fn unix_recv_from(fd: i32) -> io::Result<(Vec<u8>, Vec<u8>)> {
    let mut buf = vec![0u8; 4096];
    let (n, ss, len) = recv_from_raw(fd, &mut buf)?;
    buf.truncate(n);
    // SAFETY: a Unix socket's sender is a sockaddr_un, which fits in a sockaddr_storage.
    let sa: libc::sockaddr_un = unsafe { std::ptr::read(std::ptr::addr_of!(ss).cast()) };
    Ok((buf, sun_name(&sa, len)))
}

/// Nothing is queued to be read on `fd` (a receive says `EAGAIN`).
fn check_empty(checks: &mut Checks, what: &str, fd: i32) {
    let mut b = [0u8; 1];
    match recv(fd, &mut b) {
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
        Ok(n) => checks.that(false, &format!("{what}: nothing queued (read {n} bytes)")),
        Err(e) => checks.that(false, &format!("{what}: nothing queued ({e})")),
    }
}

fn labelled(mut w: Workload) -> ! {
    let want = w.args().get(1).cloned().unwrap_or_default();
    w.setup(
        "a label to make the sockets under (the second argument)",
        if want.is_empty() {
            Err(io::Error::other("no label given"))
        } else {
            Ok(())
        },
    );
    w.setup(
        "attr/sockcreate",
        sys::write_attr("sockcreate", want.as_bytes()),
    );
    let ends = [
        set_up_pair(&w, libc::SOCK_STREAM, "stream"),
        set_up_pair(&w, libc::SOCK_DGRAM, "dgram"),
    ];
    w.setup(
        "clearing attr/sockcreate",
        sys::write_attr("sockcreate", b"\0"),
    );
    let own = w.setup(
        "a pair in the process's own context",
        socketpair(libc::SOCK_STREAM),
    );
    let own_label = w.setup("fgetxattr(security.selinux)", label(own.0));
    for (a, b) in &ends {
        for e in [a, b] {
            let got = e
                .label
                .as_deref()
                .map(|l| String::from_utf8_lossy(l).trim_end_matches('\0').to_owned());
            w.setup(
                &format!("{}: made under {want}", e.name),
                if got.as_deref() == Some(want.as_str()) {
                    Ok(())
                } else {
                    Err(io::Error::other(format!("its label is {got:?}")))
                },
            );
        }
    }
    let mut checks = w.wait();
    w.common_checks(&mut checks);
    for (a, b) in &ends {
        check_end(&mut checks, a);
        check_end(&mut checks, b);
        check_alive(&mut checks, a, b);
    }
    if let Some(p) = checks.io("a new pair", socketpair(libc::SOCK_STREAM)) {
        if let Some(l) = checks.io("its label", label(p.0)) {
            checks.eq("a new pair's label (the process's own)", &own_label, &l);
        }
    }
    w.finish(checks)
}

fn bound(mut w: Workload) -> ! {
    use std::os::unix::ffi::OsStrExt;
    use std::os::unix::fs::PermissionsExt;
    let me = sys::getpid();
    let path = w.path("bound.sock");
    let path_name = path.as_os_str().as_bytes().to_vec();
    let stream_path = w.path("bound-stream.sock");
    let stream_name = stream_path.as_os_str().as_bytes().to_vec();
    let abstract_name = format!("\0crlab-bound-{me}").into_bytes();

    let server = w.setup("datagram server: socket", socket(libc::SOCK_DGRAM));
    w.setup("datagram server: bind", bind(server, &path_name));
    w.setup(
        "datagram server: SO_RCVBUF",
        setsockopt(server, libc::SO_RCVBUF, RCVBUF),
    );
    w.setup(
        "chmod of the socket file",
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o620)),
    );
    let rcvbuf = w.setup(
        "datagram server: SO_RCVBUF",
        getsockopt(server, libc::SO_RCVBUF),
    );
    let hidden = w.setup("abstract server: socket", socket(libc::SOCK_DGRAM));
    w.setup("abstract server: bind", bind(hidden, &abstract_name));
    let client = w.setup("client: socket", socket(libc::SOCK_DGRAM));
    w.setup("client: connect", connect(client, &path_name));
    let loose = w.setup("unbound sender: socket", socket(libc::SOCK_DGRAM));
    let stream = w.setup("bound stream: socket", socket(libc::SOCK_STREAM));
    w.setup("bound stream: bind", bind(stream, &stream_name));
    let all = [
        ("the datagram server", server),
        ("the abstract server", hidden),
        ("the client", client),
        ("the unbound sender", loose),
        ("the bound stream socket", stream),
    ];
    let labels: Vec<Option<Vec<u8>>> = all
        .iter()
        .map(|(_, fd)| w.setup("fgetxattr(security.selinux)", label(*fd)))
        .collect();
    let file_label = w.setup("lgetxattr of the socket file", path_label(&path));

    let mut checks = w.wait();
    w.common_checks(&mut checks);
    for ((what, fd), want) in all.iter().zip(&labels) {
        if let Some(l) = checks.io(&format!("{what}: label"), label(*fd)) {
            checks.eq(&format!("{what}: SELinux label"), want, &l);
        }
    }
    let names: [(&str, i32, bool, &[u8]); 5] = [
        ("the datagram server's name", server, false, &path_name),
        ("the abstract server's name", hidden, false, &abstract_name),
        ("the client's peer", client, true, &path_name),
        ("the client's name", client, false, b""),
        (
            "the bound stream socket's name",
            stream,
            false,
            &stream_name,
        ),
    ];
    for (what, fd, peer, want) in names {
        if let Some(n) = checks.io(what, name_of(fd, peer)) {
            checks.eq(
                what,
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(&n),
            );
        }
    }
    for (what, fd) in &all[..4] {
        check_empty(&mut checks, what, *fd);
    }
    if let Some(v) = checks.io("SO_RCVBUF", getsockopt(server, libc::SO_RCVBUF)) {
        checks.eq("the datagram server's SO_RCVBUF", rcvbuf, v);
    }
    if let Some(m) = checks.io("lstat of the socket file", std::fs::symlink_metadata(&path)) {
        checks.eq(
            "the socket file's mode",
            0o620,
            m.permissions().mode() & 0o7777,
        );
    }
    if let Some(l) = checks.io("lgetxattr of the socket file", path_label(&path)) {
        checks.eq("the socket file's SELinux label", &file_label, &l);
    }
    checks.io("the client's send", send(client, b"from the client"));
    checks.io(
        "the unbound sender's sendto",
        unix_send_to(loose, &path_name, b"from the unbound sender"),
    );
    checks.io(
        "a sendto to the abstract server",
        unix_send_to(loose, &abstract_name, b"to the abstract one"),
    );
    for want in [&b"from the client"[..], b"from the unbound sender"] {
        if let Some((got, sender)) =
            checks.io("the datagram server's recvfrom", unix_recv_from(server))
        {
            checks.eq(
                "a datagram the server received",
                String::from_utf8_lossy(want),
                String::from_utf8_lossy(&got),
            );
            checks.eq("its sender's name", 0, sender.len());
        }
    }
    if let Some((got, _)) = checks.io("the abstract server's recvfrom", unix_recv_from(hidden)) {
        checks.eq(
            "the datagram the abstract server received",
            &b"to the abstract one"[..],
            got.as_slice(),
        );
    }
    if checks
        .io("the bound stream socket's listen", listen(stream, 1))
        .is_some()
    {
        let c = checks.io("a new client: socket", socket(libc::SOCK_STREAM));
        if let Some(c) = c {
            if checks
                .io("a new client: connect", connect(c, &stream_name))
                .is_some()
            {
                checks.io("the bound stream socket's accept", accept(stream));
            }
        }
    }
    w.finish(checks)
}

fn inet_socket(family: i32, ty: i32) -> io::Result<i32> {
    // SAFETY: socket takes only integers.
    sys::check(unsafe { libc::socket(family, ty | libc::SOCK_CLOEXEC, 0) }.into()).map(|f| f as i32)
}

fn set_opt(fd: i32, level: i32, name: i32, value: i32) -> io::Result<()> {
    // SAFETY: the kernel reads an int from `value`, live.
    let r = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            std::ptr::addr_of!(value).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    sys::check(r.into()).map(|_| ())
}

fn get_opt(fd: i32, level: i32, name: i32) -> io::Result<i32> {
    let mut v: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: `v` and `len` are live and `len` says how big `v` is.
    let r =
        unsafe { libc::getsockopt(fd, level, name, std::ptr::addr_of_mut!(v).cast(), &mut len) };
    sys::check(r.into()).map(|_| v)
}

/// A `sockaddr_in` or `sockaddr_in6` for `addr` (4 or 16 bytes) and `port`.
fn inet_sockaddr(addr: &[u8], port: u16) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all zeros is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    if addr.len() == 4 {
        let sin = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from_ne_bytes([addr[0], addr[1], addr[2], addr[3]]),
            },
            sin_zero: [0; 8],
        };
        // SAFETY: a sockaddr_in fits in a sockaddr_storage, which is aligned for it.
        unsafe { std::ptr::write(std::ptr::addr_of_mut!(ss).cast(), sin) };
        (
            ss,
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    } else {
        let mut a = [0u8; 16];
        a.copy_from_slice(&addr[..16]);
        let sin6 = libc::sockaddr_in6 {
            sin6_family: libc::AF_INET6 as libc::sa_family_t,
            sin6_port: port.to_be(),
            sin6_flowinfo: 0,
            sin6_addr: libc::in6_addr { s6_addr: a },
            sin6_scope_id: 0,
        };
        // SAFETY: a sockaddr_in6 fits in a sockaddr_storage, which is aligned for it.
        unsafe { std::ptr::write(std::ptr::addr_of_mut!(ss).cast(), sin6) };
        (
            ss,
            std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t,
        )
    }
}

fn inet_bind(fd: i32, addr: &[u8], port: u16) -> io::Result<()> {
    let (ss, len) = inet_sockaddr(addr, port);
    // SAFETY: `ss` is a live address of `len` bytes.
    sys::check(unsafe { libc::bind(fd, std::ptr::addr_of!(ss).cast(), len) }.into()).map(|_| ())
}

fn inet_connect(fd: i32, addr: &[u8], port: u16) -> io::Result<()> {
    let (ss, len) = inet_sockaddr(addr, port);
    // SAFETY: `ss` is a live address of `len` bytes.
    sys::check(unsafe { libc::connect(fd, std::ptr::addr_of!(ss).cast(), len) }.into()).map(|_| ())
}

/// A socket's own (or peer's) address and port.
fn inet_name(fd: i32, peer: bool) -> io::Result<(Vec<u8>, u16)> {
    // SAFETY: all zeros is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    let p = std::ptr::addr_of_mut!(ss).cast();
    // SAFETY: `ss` is live and `len` says how big it is.
    let r = unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    };
    sys::check(r.into())?;
    Ok(sockaddr_parts(&ss))
}

fn sockaddr_parts(ss: &libc::sockaddr_storage) -> (Vec<u8>, u16) {
    if i32::from(ss.ss_family) == libc::AF_INET {
        // SAFETY: the family says it holds a sockaddr_in.
        let sin: libc::sockaddr_in = unsafe { std::ptr::read(std::ptr::addr_of!(*ss).cast()) };
        (
            sin.sin_addr.s_addr.to_ne_bytes().to_vec(),
            u16::from_be(sin.sin_port),
        )
    } else {
        // SAFETY: otherwise it holds a sockaddr_in6 (the only other family used here).
        let sin6: libc::sockaddr_in6 = unsafe { std::ptr::read(std::ptr::addr_of!(*ss).cast()) };
        (
            sin6.sin6_addr.s6_addr.to_vec(),
            u16::from_be(sin6.sin6_port),
        )
    }
}

const LOOP4: [u8; 4] = [127, 0, 0, 1];
const LOOP6: [u8; 16] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];

/// One socket with the options it was given, checked after the wait.
struct Inet {
    name: &'static str,
    fd: i32,
    addr: (Vec<u8>, u16),
    opts: Vec<(i32, i32, &'static str, i32)>,
}

fn inet_set_up(
    w: &Workload,
    name: &'static str,
    family: i32,
    ty: i32,
    bind: Option<&[u8]>,
    opts: Vec<(i32, i32, &'static str, i32)>,
) -> Inet {
    let fd = w.setup(name, inet_socket(family, ty));
    for (level, opt, text, v) in &opts {
        w.setup(text, set_opt(fd, *level, *opt, *v));
    }
    if let Some(a) = bind {
        w.setup("bind", inet_bind(fd, a, 0));
    }
    let addr = w.setup("getsockname", inet_name(fd, false));
    Inet {
        name,
        fd,
        addr,
        opts,
    }
}

fn inet_check(checks: &mut Checks, s: &Inet) {
    if let Some(a) = checks.io(s.name, inet_name(s.fd, false)) {
        checks.eq(&format!("{}: its name", s.name), &s.addr, &a);
    }
    for (level, opt, text, v) in &s.opts {
        if let Some(got) = checks.io(text, get_opt(s.fd, *level, *opt)) {
            let got = if *opt == libc::SO_RCVBUF {
                got / 2
            } else {
                got
            };
            checks.eq(&format!("{}: {text}", s.name), *v, got);
        }
    }
}

/// Each descriptor's SELinux label before the wait (none when SELinux is off).
fn labels_of(w: &Workload, fds: &[i32]) -> Vec<(i32, Option<Vec<u8>>)> {
    fds.iter()
        .map(|&fd| (fd, w.setup("fgetxattr(security.selinux)", label(fd))))
        .collect()
}

/// Each descriptor's label after the wait is the one it had.
fn check_labels(checks: &mut Checks, before: &[(i32, Option<Vec<u8>>)]) {
    for (fd, was) in before {
        if let Some(now) = checks.io("fgetxattr(security.selinux)", label(*fd)) {
            checks.eq(&format!("fd {fd}: SELinux label"), was, &now);
        }
    }
}

fn inet_listeners(mut w: Workload) -> ! {
    let tcp = libc::IPPROTO_TCP;
    let sol = libc::SOL_SOCKET;
    let v4 = inet_set_up(
        &w,
        "the 127.0.0.1 listener",
        libc::AF_INET,
        libc::SOCK_STREAM,
        Some(&LOOP4),
        vec![
            (tcp, libc::TCP_NODELAY, "TCP_NODELAY", 1),
            (sol, libc::SO_KEEPALIVE, "SO_KEEPALIVE", 1),
            (tcp, libc::TCP_KEEPIDLE, "TCP_KEEPIDLE", 77),
        ],
    );
    w.setup("listen", listen(v4.fd, 5));
    let v6 = inet_set_up(
        &w,
        "the ::1 listener",
        libc::AF_INET6,
        libc::SOCK_STREAM,
        Some(&LOOP6),
        vec![
            (libc::SOL_IPV6, libc::IPV6_V6ONLY, "IPV6_V6ONLY", 1),
            (sol, libc::SO_REUSEADDR, "SO_REUSEADDR", 1),
            (
                libc::SOL_IPV6,
                libc::IPV6_UNICAST_HOPS,
                "IPV6_UNICAST_HOPS",
                17,
            ),
        ],
    );
    w.setup("listen", listen(v6.fd, 9));
    let any = inet_set_up(
        &w,
        "the wildcard listener",
        libc::AF_INET6,
        libc::SOCK_STREAM,
        Some(&[0; 16]),
        vec![
            (libc::SOL_IPV6, libc::IPV6_V6ONLY, "IPV6_V6ONLY", 0),
            (sol, libc::SO_REUSEPORT, "SO_REUSEPORT", 1),
        ],
    );
    w.setup("listen", listen(any.fd, 3));
    let labels = labels_of(&w, &[v4.fd, v6.fd, any.fd]);

    let mut checks = w.wait();
    w.common_checks(&mut checks);
    check_labels(&mut checks, &labels);
    for (l, to) in [(&v4, &LOOP4[..]), (&v6, &LOOP6[..]), (&any, &LOOP4[..])] {
        inet_check(&mut checks, l);
        if let Some(v) = checks.io("SO_ACCEPTCONN", getsockopt(l.fd, libc::SO_ACCEPTCONN)) {
            checks.eq(&format!("{} listens", l.name), 1, v);
        }
        let family = if to.len() == 4 {
            libc::AF_INET
        } else {
            libc::AF_INET6
        };
        let Some(c) = checks.io("a new client", inet_socket(family, libc::SOCK_STREAM)) else {
            continue;
        };
        if checks
            .io(
                &format!("connecting to {}", l.name),
                inet_connect(c, to, l.addr.1),
            )
            .is_some()
        {
            if let Some(a) = checks.io(&format!("accepting on {}", l.name), accept(l.fd)) {
                checks.io("sending", send(c, b"hello"));
                let mut buf = [0u8; 8];
                if let Some(n) = checks.io("receiving", recv(a, &mut buf)) {
                    checks.eq("the new connection's data", &b"hello"[..], &buf[..n]);
                }
                // SAFETY: ours, done with.
                unsafe { libc::close(a) };
            }
        }
        // SAFETY: ours, done with.
        unsafe { libc::close(c) };
    }
    w.finish(checks)
}

fn recv_from(fd: i32, buf: &mut [u8]) -> io::Result<(usize, (Vec<u8>, u16))> {
    let (n, ss, _) = recv_from_raw(fd, buf)?;
    Ok((n, sockaddr_parts(&ss)))
}

/// `recvfrom` into `buf`: how many bytes, the sender's address and its length.
fn recv_from_raw(
    fd: i32,
    buf: &mut [u8],
) -> io::Result<(usize, libc::sockaddr_storage, libc::socklen_t)> {
    // SAFETY: all zeros is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
    // SAFETY: `buf` and `ss` are live, with their sizes given.
    let r = unsafe {
        libc::recvfrom(
            fd,
            buf.as_mut_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT,
            std::ptr::addr_of_mut!(ss).cast(),
            &mut len,
        )
    };
    let n = sys::check(r as libc::c_long)? as usize;
    Ok((n, ss, len))
}

fn send_to(fd: i32, data: &[u8], to: &(Vec<u8>, u16)) -> io::Result<()> {
    let (ss, len) = inet_sockaddr(&to.0, to.1);
    // SAFETY: `data` and `ss` are live, with their sizes given.
    let r = unsafe {
        libc::sendto(
            fd,
            data.as_ptr().cast(),
            data.len(),
            0,
            std::ptr::addr_of!(ss).cast(),
            len,
        )
    };
    sys::check(r as libc::c_long).map(|_| ())
}

fn udp(mut w: Workload) -> ! {
    let sol = libc::SOL_SOCKET;
    let u4 = inet_set_up(
        &w,
        "the 127.0.0.1 UDP socket",
        libc::AF_INET,
        libc::SOCK_DGRAM,
        Some(&LOOP4),
        vec![
            (sol, libc::SO_BROADCAST, "SO_BROADCAST", 1),
            (sol, libc::SO_RCVBUF, "SO_RCVBUF", 60_000),
            (libc::SOL_IP, libc::IP_TTL, "IP_TTL", 33),
        ],
    );
    let server = inet_set_up(
        &w,
        "the ::1 UDP server",
        libc::AF_INET6,
        libc::SOCK_DGRAM,
        Some(&LOOP6),
        vec![],
    );
    let client = inet_set_up(
        &w,
        "the connected ::1 UDP client",
        libc::AF_INET6,
        libc::SOCK_DGRAM,
        Some(&LOOP6),
        vec![],
    );
    w.setup(
        "connect",
        inet_connect(client.fd, &server.addr.0, server.addr.1),
    );
    let wild6 = inet_set_up(
        &w,
        "the IPv6-only wildcard UDP socket",
        libc::AF_INET6,
        libc::SOCK_DGRAM,
        Some(&[0; 16]),
        vec![(libc::SOL_IPV6, libc::IPV6_V6ONLY, "IPV6_V6ONLY", 1)],
    );
    let unbound = inet_set_up(
        &w,
        "the unbound UDP socket",
        libc::AF_INET,
        libc::SOCK_DGRAM,
        None,
        vec![],
    );
    let labels = labels_of(&w, &[u4.fd, server.fd, client.fd, wild6.fd, unbound.fd]);

    let mut checks = w.wait();
    w.common_checks(&mut checks);
    check_labels(&mut checks, &labels);
    for s in [&u4, &server, &client, &wild6, &unbound] {
        inet_check(&mut checks, s);
    }
    if let Some(p) = checks.io("getpeername", inet_name(client.fd, true)) {
        checks.eq("the client's peer", &server.addr, &p);
    }
    let mut buf = [0u8; 32];
    checks.io("sending to the server", send(client.fd, b"ping"));
    if let Some((n, from)) = checks.io("the server's recvfrom", recv_from(server.fd, &mut buf)) {
        checks.eq("the datagram", &b"ping"[..], &buf[..n]);
        checks.eq("its sender", &client.addr, &from);
        checks.io("answering", send_to(server.fd, b"pong", &from));
        if let Some((n, _)) = checks.io("the client's recv", recv_from(client.fd, &mut buf)) {
            checks.eq("the answer", &b"pong"[..], &buf[..n]);
        }
    }
    checks.io("sending to itself", send_to(u4.fd, b"self", &u4.addr));
    if let Some((n, from)) = checks.io("recvfrom of itself", recv_from(u4.fd, &mut buf)) {
        checks.eq("the datagram to itself", &b"self"[..], &buf[..n]);
        checks.eq("its sender", &u4.addr, &from);
    }
    w.finish(checks)
}

fn mkfifo(path: &std::path::Path) -> io::Result<()> {
    let c = sys::cstring(path);
    // SAFETY: `c` is a live C string.
    sys::check(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }.into()).map(|_| ())
}

/// Opens the FIFO at `path` (made if missing) with `flags`.
fn open_fifo(path: &std::path::Path, flags: i32) -> io::Result<i32> {
    if !path.exists() {
        mkfifo(path)?;
    }
    let c = sys::cstring(path);
    // SAFETY: `c` is a live C string.
    sys::check(unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC) }.into()).map(|f| f as i32)
}

const FIFO_BYTES: &[u8] = b"bytes buffered in a named pipe";

fn fifo(mut w: Workload) -> ! {
    let path = w.path("named.fifo");
    let r = w.setup(
        "opening the FIFO to read",
        open_fifo(&path, libc::O_RDONLY | libc::O_NONBLOCK),
    );
    let wr = w.setup(
        "opening the FIFO to write",
        open_fifo(&path, libc::O_WRONLY),
    );
    // SAFETY: F_SETPIPE_SZ takes an integer argument.
    let r_sz = unsafe { libc::fcntl(wr, libc::F_SETPIPE_SZ, 16384) };
    w.setup("F_SETPIPE_SZ", sys::check(r_sz.into()));
    w.setup("buffering", sys::write(wr, FIFO_BYTES));

    let mut checks = w.wait();
    w.common_checks(&mut checks);
    let mut buf = [0u8; 128];
    if let Some(n) = checks.io("reading the FIFO", sys::read(r, &mut buf)) {
        checks.eq("the FIFO's bytes", FIFO_BYTES, &buf[..n]);
    }
    match sys::read(r, &mut buf) {
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
        other => checks.fail(format!("the FIFO held more than was buffered: {other:?}")),
    }
    if let Some(fl) = checks.io("F_GETFL", sys::fcntl(r, libc::F_GETFL)) {
        checks.eq(
            "the reader's flags",
            libc::O_RDONLY | libc::O_NONBLOCK,
            fl & (libc::O_ACCMODE | libc::O_NONBLOCK),
        );
    }
    if let Some(fl) = checks.io("F_GETFL", sys::fcntl(wr, libc::F_GETFL)) {
        checks.eq(
            "the writer's flags",
            libc::O_WRONLY,
            fl & (libc::O_ACCMODE | libc::O_NONBLOCK),
        );
    }
    if let Some(sz) = checks.io("F_GETPIPE_SZ", sys::fcntl(wr, libc::F_GETPIPE_SZ)) {
        checks.eq("the FIFO's capacity", 16384, sz);
    }
    checks.io("writing anew", sys::write(wr, b"new"));
    if let Some(n) = checks.io("reading anew", sys::read(r, &mut buf)) {
        checks.eq("the new bytes", &b"new"[..], &buf[..n]);
    }
    w.finish(checks)
}

/// Zero-length datagrams and records (`empty-messages`): queues shut for reading that end
/// with them (datagrams) or hold a run of them (records), and a datagram queue whose empty
/// head the process peeked (`MSG_PEEK`, which marks it).
fn empty_messages(mut w: Workload) -> ! {
    let mut queues = Vec::new();
    for (ty, name, msgs, shut, peeked) in [
        (
            libc::SOCK_DGRAM,
            "datagrams shut for reading",
            vec![&b"x"[..], b"", b"y", b"", b""],
            true,
            false,
        ),
        (
            libc::SOCK_SEQPACKET,
            "records shut for reading",
            vec![&b"x"[..], b"", b"", b"y"],
            true,
            false,
        ),
        (
            libc::SOCK_DGRAM,
            "datagrams with an empty head peeked",
            vec![&b""[..], b"z", b""],
            false,
            true,
        ),
    ] {
        let (a, b) = w.setup(&format!("socketpair({name})"), socketpair(ty));
        for m in &msgs {
            w.setup(&format!("{name}: queueing"), send(a, m));
        }
        if shut {
            // SAFETY: shutdown takes only integers.
            let r = unsafe { libc::shutdown(b, libc::SHUT_RD) };
            w.setup("shutdown(SHUT_RD)", sys::check(r.into()));
        }
        if peeked {
            let mut buf = [0u8; 8];
            let n = w.setup("recv(MSG_PEEK)", peek(b, &mut buf));
            w.setup(
                "the head is empty",
                if n == 0 {
                    Ok(())
                } else {
                    Err(io::Error::other("not empty"))
                },
            );
        }
        queues.push((name, ty, a, b, msgs, shut));
    }

    let mut checks = w.wait();
    w.common_checks(&mut checks);
    let mut buf = [0u8; 64];
    for (name, ty, a, b, msgs, shut) in &queues {
        for (i, m) in msgs.iter().enumerate() {
            if let Some(n) = checks.io(&format!("{name}: recv of message {i}"), recv(*b, &mut buf))
            {
                checks.eq(&format!("{name}: message {i}"), *m, &buf[..n]);
            }
        }
        // Nothing more: a datagram queue says EAGAIN, a seqpacket one shut for reading its end.
        match (recv(*b, &mut buf), *ty == libc::SOCK_SEQPACKET && *shut) {
            (Ok(0), true) => {}
            (Err(e), false) if e.raw_os_error() == Some(libc::EAGAIN) => {}
            (other, _) => checks.fail(format!("{name}: more than was queued: {other:?}")),
        }
        if *shut {
            match send(*a, b"more") {
                Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
                other => checks.fail(format!(
                    "{name}: a send to an end shut for reading gives EPIPE, not {other:?}"
                )),
            }
        }
    }
    w.finish(checks)
}

/// The congestion control algorithm a new TCP socket does not get: `reno` (always built in),
/// or `cubic` when `reno` is the default.
fn other_congestion() -> io::Result<&'static str> {
    let default = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_congestion_control")?;
    let available = std::fs::read_to_string("/proc/sys/net/ipv4/tcp_available_congestion_control")?;
    ["reno", "cubic"]
        .into_iter()
        .find(|c| default.trim() != *c && available.split_whitespace().any(|a| a == *c))
        .ok_or_else(|| io::Error::other(format!("no algorithm but {default:?} in {available:?}")))
}

fn congestion(fd: i32) -> io::Result<String> {
    let mut buf = [0u8; 16];
    let mut len = buf.len() as libc::socklen_t;
    // SAFETY: `buf` and `len` are live and `len` says how big `buf` is.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            buf.as_mut_ptr().cast(),
            &mut len,
        )
    };
    sys::check(r.into())?;
    let name = &buf[..len as usize];
    Ok(String::from_utf8_lossy(name.split(|b| *b == 0).next().unwrap_or_default()).into_owned())
}

fn set_congestion(fd: i32, name: &str) -> io::Result<()> {
    // SAFETY: the kernel reads `name.len()` bytes from `name`, live.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_CONGESTION,
            name.as_ptr().cast(),
            name.len() as libc::socklen_t,
        )
    };
    sys::check(r.into()).map(drop)
}

/// `SO_LINGER` as (on, seconds).
fn linger(fd: i32) -> io::Result<(i32, i32)> {
    let mut l = libc::linger {
        l_onoff: 0,
        l_linger: 0,
    };
    let mut len = std::mem::size_of::<libc::linger>() as libc::socklen_t;
    // SAFETY: `l` and `len` are live and `len` says how big `l` is.
    let r = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of_mut!(l).cast(),
            &mut len,
        )
    };
    sys::check(r.into()).map(|_| (l.l_onoff, l.l_linger))
}

fn set_linger(fd: i32, secs: i32) -> io::Result<()> {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: secs,
    };
    // SAFETY: the kernel reads one linger from `l`.
    let r = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            std::ptr::addr_of!(l).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    sys::check(r.into()).map(drop)
}

/// `SO_PASSRIGHTS` (Linux 6.16); older kernels do not know it.
const SO_PASSRIGHTS: i32 = 83;

/// Options beyond the usual ones (`options`): `SO_MARK`, `SO_PRIORITY`, `SO_RCVLOWAT` and
/// `SO_PASSRIGHTS` off on a Unix pair's end; a TCP listener with `SO_MARK`, `SO_PRIORITY`,
/// `TCP_CONGESTION` (an algorithm other than the default), `IP_TOS`, `SO_LINGER`,
/// `TCP_DEFER_ACCEPT`, `TCP_USER_TIMEOUT`, `IP_FREEBIND`, `TCP_MAXSEG`; UDP sockets with
/// `SO_MARK`, `SO_PRIORITY`, `SO_TIMESTAMP`, `IP_RECVTOS`, and on IPv6 `IPV6_RECVPKTINFO` and
/// `IPV6_TCLASS`. After the wait: every option as it was set, and the sockets still working.
fn options(mut w: Workload) -> ! {
    let sol = libc::SOL_SOCKET;
    let tcp = libc::IPPROTO_TCP;
    let ip = libc::SOL_IP;
    let (ua, ub) = w.setup("socketpair", socketpair(libc::SOCK_STREAM));
    let mut unix_opts = vec![
        (sol, libc::SO_MARK, "SO_MARK", 7),
        (sol, libc::SO_PRIORITY, "SO_PRIORITY", 5),
        (sol, libc::SO_RCVLOWAT, "SO_RCVLOWAT", 3),
    ];
    // Kept only where the kernel knows it.
    if get_opt(ub, sol, SO_PASSRIGHTS).is_ok() {
        unix_opts.push((sol, SO_PASSRIGHTS, "SO_PASSRIGHTS", 0));
    }
    for (level, opt, text, v) in &unix_opts {
        w.setup(text, set_opt(ub, *level, *opt, *v));
    }
    let algo = w.setup("a congestion control algorithm", other_congestion());
    let listener = inet_set_up(
        &w,
        "the TCP listener",
        libc::AF_INET,
        libc::SOCK_STREAM,
        None,
        vec![
            (sol, libc::SO_MARK, "SO_MARK", 9),
            // IP_TOS sets the priority from it (6 for 0x10): SO_PRIORITY set after it wins.
            (ip, libc::IP_TOS, "IP_TOS", 0x10),
            (sol, libc::SO_PRIORITY, "SO_PRIORITY", 4),
            (tcp, libc::TCP_DEFER_ACCEPT, "TCP_DEFER_ACCEPT", 3),
            (tcp, libc::TCP_USER_TIMEOUT, "TCP_USER_TIMEOUT", 1234),
            (ip, libc::IP_FREEBIND, "IP_FREEBIND", 1),
            (tcp, libc::TCP_MAXSEG, "TCP_MAXSEG", 1200),
        ],
    );
    w.setup("TCP_CONGESTION", set_congestion(listener.fd, algo));
    w.setup("SO_LINGER", set_linger(listener.fd, 4));
    w.setup("bind", inet_bind(listener.fd, &LOOP4, 0));
    w.setup("listen", listen(listener.fd, 4));
    let listener = Inet {
        addr: w.setup("getsockname", inet_name(listener.fd, false)),
        ..listener
    };
    let udp4 = inet_set_up(
        &w,
        "the UDP socket",
        libc::AF_INET,
        libc::SOCK_DGRAM,
        Some(&LOOP4),
        vec![
            (sol, libc::SO_MARK, "SO_MARK", 11),
            (sol, libc::SO_PRIORITY, "SO_PRIORITY", 3),
            (sol, libc::SO_TIMESTAMP, "SO_TIMESTAMP", 1),
            (ip, libc::IP_RECVTOS, "IP_RECVTOS", 1),
        ],
    );
    let udp6 = inet_set_up(
        &w,
        "the IPv6 UDP socket",
        libc::AF_INET6,
        libc::SOCK_DGRAM,
        Some(&LOOP6),
        vec![
            (
                libc::SOL_IPV6,
                libc::IPV6_RECVPKTINFO,
                "IPV6_RECVPKTINFO",
                1,
            ),
            (libc::SOL_IPV6, libc::IPV6_TCLASS, "IPV6_TCLASS", 0x20),
            (sol, libc::SO_PRIORITY, "SO_PRIORITY", 2),
        ],
    );

    let mut checks = w.wait();
    w.common_checks(&mut checks);
    for (level, opt, text, v) in &unix_opts {
        if let Some(got) = checks.io(text, get_opt(ub, *level, *opt)) {
            checks.eq(&format!("the Unix socket: {text}"), *v, got);
        }
    }
    if let Some(got) = checks.io("SO_MARK", get_opt(ua, sol, libc::SO_MARK)) {
        checks.eq("the Unix socket's peer: SO_MARK (none)", 0, got);
    }
    checks.io("sending on the Unix pair", send(ua, b"abc"));
    let mut buf = [0u8; 8];
    if let Some(n) = checks.io("receiving on the Unix pair", recv(ub, &mut buf)) {
        checks.eq("the Unix pair's message", &b"abc"[..], &buf[..n]);
    }
    for s in [&listener, &udp4, &udp6] {
        inet_check(&mut checks, s);
    }
    if let Some(c) = checks.io("TCP_CONGESTION", congestion(listener.fd)) {
        checks.eq("the TCP listener: TCP_CONGESTION", algo, c.as_str());
    }
    if let Some(l) = checks.io("SO_LINGER", linger(listener.fd)) {
        checks.eq("the TCP listener: SO_LINGER", (1, 4), l);
    }
    if let Some(v) = checks.io(
        "SO_ACCEPTCONN",
        getsockopt(listener.fd, libc::SO_ACCEPTCONN),
    ) {
        checks.eq("the TCP listener listens", 1, v);
    }
    checks.io("sending to itself", send_to(udp4.fd, b"self", &udp4.addr));
    if let Some((n, _)) = checks.io("recvfrom of itself", recv_from(udp4.fd, &mut buf)) {
        checks.eq("the datagram to itself", &b"self"[..], &buf[..n]);
    }
    w.finish(checks)
}

/// `len` bytes from the stream `fd`, waiting up to 3 s for them (already queued, or sent
/// over loopback).
fn recv_exact(fd: i32, len: usize) -> io::Result<Vec<u8>> {
    let mut out = Vec::new();
    let mut buf = vec![0u8; len];
    while out.len() < len {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: `p` is one live pollfd.
        let r = unsafe { libc::poll(&mut p, 1, 3_000) };
        if sys::check(r.into())? == 0 {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("{} of {len} bytes after 3 s", out.len()),
            ));
        }
        let want = len - out.len();
        let n = recv(fd, &mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("the end of the stream after {} of {len} bytes", out.len()),
            ));
        }
        out.extend_from_slice(&buf[..n]);
    }
    Ok(out)
}

/// Waits until everything `fd` sent is acknowledged (`SIOCOUTQ` 0), up to 10 s.
fn acknowledged(fd: i32) -> io::Result<()> {
    for _ in 0..10_000 {
        let mut v: libc::c_int = 0;
        // SAFETY: SIOCOUTQ writes one int into `v`, live.
        sys::check(unsafe { libc::ioctl(fd, libc::TIOCOUTQ, std::ptr::addr_of_mut!(v)) }.into())?;
        if v == 0 {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Err(io::Error::new(
        io::ErrorKind::TimedOut,
        "the send queue still holds data after 10 s",
    ))
}

/// The client's bytes: a pattern, then "ping-data".
fn client_bytes() -> Vec<u8> {
    let mut v = pattern(BIG_SEED, 0, 30_000 - 9);
    v.extend_from_slice(b"ping-data");
    v
}

/// One connection of `tcp-connections`: its listener, client and accepted end.
struct Connection {
    listener: Inet,
    client: Inet,
    accepted: Inet,
    client_peer: (Vec<u8>, u16),
    accepted_peer: (Vec<u8>, u16),
    to: &'static [u8],
}

/// A listener of `family` bound to `at` (the wildcard one dual-stack), a client connecting to
/// it at `to`, the accepted connection, with data queued both ways.
fn set_up_connection(
    w: &Workload,
    family: i32,
    at: &'static [u8],
    to: &'static [u8],
) -> Connection {
    let tcp = libc::IPPROTO_TCP;
    let sol = libc::SOL_SOCKET;
    let dual = if at.len() == 16 && at.iter().all(|b| *b == 0) {
        vec![(libc::SOL_IPV6, libc::IPV6_V6ONLY, "IPV6_V6ONLY", 0)]
    } else {
        vec![]
    };
    let listener = inet_set_up(w, "the listener", family, libc::SOCK_STREAM, Some(at), dual);
    w.setup("listen", listen(listener.fd, 4));
    let family = if to.len() == 4 {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    let client_opts = vec![
        (tcp, libc::TCP_NODELAY, "TCP_NODELAY", 1),
        (sol, libc::SO_KEEPALIVE, "SO_KEEPALIVE", 1),
        (tcp, libc::TCP_KEEPIDLE, "TCP_KEEPIDLE", 55),
    ];
    let c = w.setup("socket", inet_socket(family, libc::SOCK_STREAM));
    for (level, opt, text, v) in &client_opts {
        w.setup(text, set_opt(c, *level, *opt, *v));
    }
    w.setup("connect", inet_connect(c, to, listener.addr.1));
    let a = w.setup("accept", accept(listener.fd));
    let accepted_opts = vec![
        (tcp, libc::TCP_NODELAY, "TCP_NODELAY", 1),
        (sol, libc::SO_SNDBUF, "SO_SNDBUF", 2 * 65_536),
    ];
    for (level, opt, text, v) in &accepted_opts {
        let v = if *opt == libc::SO_SNDBUF { v / 2 } else { *v };
        w.setup(text, set_opt(a, *level, *opt, v));
    }
    let bytes = client_bytes();
    let mut sent = 0;
    while sent < bytes.len() {
        sent += w.setup("the client's bytes", send(c, &bytes[sent..]));
    }
    w.setup("the server's bytes", send(a, b"pong-bytes"));
    w.setup("the client's bytes acknowledged", acknowledged(c));
    w.setup("the server's bytes acknowledged", acknowledged(a));
    Connection {
        client: Inet {
            name: "the client",
            fd: c,
            addr: w.setup("getsockname", inet_name(c, false)),
            opts: client_opts,
        },
        accepted: Inet {
            name: "the accepted connection",
            fd: a,
            addr: w.setup("getsockname", inet_name(a, false)),
            opts: accepted_opts,
        },
        client_peer: w.setup("getpeername", inet_name(c, true)),
        accepted_peer: w.setup("getpeername", inet_name(a, true)),
        listener,
        to,
    }
}

fn check_connection(checks: &mut Checks, k: &Connection) {
    let (c, a) = (k.client.fd, k.accepted.fd);
    inet_check(checks, &k.listener);
    inet_check(checks, &k.client);
    inet_check(checks, &k.accepted);
    if let Some(p) = checks.io("getpeername", inet_name(c, true)) {
        checks.eq("the client's peer", &k.client_peer, &p);
    }
    if let Some(p) = checks.io("getpeername", inet_name(a, true)) {
        checks.eq("the accepted connection's peer", &k.accepted_peer, &p);
    }
    let want = client_bytes();
    if let Some(got) = checks.io("the client's queued bytes", recv_exact(a, want.len())) {
        checks.that(got == want, "the client's queued bytes, whole and in order");
    }
    if let Some(got) = checks.io("the server's queued bytes", recv_exact(c, 10)) {
        checks.eq("the server's queued bytes", &b"pong-bytes"[..], &got[..]);
    }
    let mut buf = [0u8; 8];
    for (fd, who) in [(a, "the accepted connection"), (c, "the client")] {
        match recv(fd, &mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            other => checks.fail(format!("{who}: nothing more queued, not {other:?}")),
        }
    }
    checks.io("sending after the restore", send(c, b"after"));
    if let Some(got) = checks.io("receiving after the restore", recv_exact(a, 5)) {
        checks.eq("new data from the client", &b"after"[..], &got[..]);
    }
    checks.io("answering after the restore", send(a, b"back"));
    if let Some(got) = checks.io("receiving the answer", recv_exact(c, 4)) {
        checks.eq("new data from the server", &b"back"[..], &got[..]);
    }
    let family = if k.to.len() == 4 {
        libc::AF_INET
    } else {
        libc::AF_INET6
    };
    if let Some(n) = checks.io("a new client", inet_socket(family, libc::SOCK_STREAM)) {
        if checks
            .io("connecting again", inet_connect(n, k.to, k.listener.addr.1))
            .is_some()
        {
            if let Some(x) = checks.io("accepting the new client", accept(k.listener.fd)) {
                // SAFETY: ours, done with.
                unsafe { libc::close(x) };
            }
        }
        // SAFETY: ours, done with.
        unsafe { libc::close(n) };
    }
}

fn tcp_connections(mut w: Workload) -> ! {
    let v4 = set_up_connection(&w, libc::AF_INET, &LOOP4, &LOOP4);
    let v6 = set_up_connection(&w, libc::AF_INET6, &LOOP6, &LOOP6);
    // Accepted as an IPv6 socket with IPv4-mapped addresses, its client an IPv4 one.
    let mapped = set_up_connection(&w, libc::AF_INET6, &[0; 16], &LOOP4);
    let fds: Vec<i32> = [&v4, &v6, &mapped]
        .iter()
        .flat_map(|k| [k.listener.fd, k.client.fd, k.accepted.fd])
        .collect();
    let labels = labels_of(&w, &fds);
    let mut checks = w.wait();
    w.common_checks(&mut checks);
    check_labels(&mut checks, &labels);
    check_connection(&mut checks, &v4);
    check_connection(&mut checks, &v6);
    check_connection(&mut checks, &mapped);
    w.finish(checks)
}

/// A connection accepted here from a client in a process outside the tree: a grandchild,
/// reparented away, that sends "over tcp" and exits when the connection ends. Returns the
/// accepted end.
fn tcp_outside(w: &Workload) -> i32 {
    let l = w.setup("a TCP listener", tcp_listener());
    let port = w.setup("its port", inet_name(l, false)).1;
    outside_process(w, &[l], || {
        let Ok(c) = inet_socket(libc::AF_INET, libc::SOCK_STREAM) else {
            exit_now(1)
        };
        if inet_connect(c, &LOOP4, port).is_err() || send(c, b"over tcp").is_err() {
            exit_now(1)
        }
        let mut buf = [0u8; 64];
        // Until the workload's end closes (or the stream fails).
        // SAFETY: `buf` is live; a blocking read.
        while unsafe { libc::read(c, buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
        exit_now(0)
    });
    w.setup("accept", accept(l))
}

/// A connection whose client has bytes not sent yet: the server (accepted from a listener
/// with a 4 KiB receive buffer) reads nothing, and the client writes until its send buffer
/// is full. Returns (the client, the accepted end, the bytes written).
fn tcp_unsent(w: &Workload) -> (i32, i32, usize) {
    let l = w.setup("a TCP listener", tcp_listener());
    w.setup("SO_RCVBUF", setsockopt(l, libc::SO_RCVBUF, 4096));
    let port = w.setup("its port", inet_name(l, false)).1;
    let c = w.setup("socket", inet_socket(libc::AF_INET, libc::SOCK_STREAM));
    w.setup("connect", inet_connect(c, &LOOP4, port));
    let a = w.setup("accept", accept(l));
    let chunk = [7u8; 65536];
    let mut total = 0;
    loop {
        match send(c, &chunk) {
            Ok(n) => total += n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => w.setup_failed(&format!("filling the send buffer: {e}")),
        }
    }
    (c, a, total)
}
