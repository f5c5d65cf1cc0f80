//! Holds a descriptor the engine does not support, for the refusal test: `inotify` (watching
//! the state directory for created files, with the events of the protocol's files unread: the
//! engine restores inotify instances, but not their queued events) or `socket` (a UDP socket on
//! 127.0.0.1 with a datagram queued, from a UDP socket connected to it; UDP sockets are
//! restored, not their queued datagrams), chosen by the first argument.
//!
//! Announces `unsupported-kind <kind>` and `unsupported-fd <n>` in the ready file. Checks that
//! the descriptor still works as set up (the watch reports the files the protocol created in
//! the state directory, the buffered bytes), plus the common checks, which also catch a
//! descriptor a failed dump left behind.

use crlab_workloads::runtime::{Checks, Workload};
use crlab_workloads::sys;

const SOCKET_BYTES: &[u8] = b"still-buffered";

fn main() {
    let mut w = Workload::from_args("unsupported");
    let kind = w.args().first().cloned().unwrap_or_default();
    let (fd, peer) = match kind.as_str() {
        "inotify" => {
            // SAFETY: inotify_init1 takes no pointer; the result is checked.
            let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK) };
            let fd = w.setup("inotify_init1", sys::check(fd.into())) as i32;
            let dir = sys::cstring(w.state_dir());
            // SAFETY: `dir` is a valid NUL-terminated path.
            let watch = unsafe { libc::inotify_add_watch(fd, dir.as_ptr(), libc::IN_CREATE) };
            w.setup("inotify_add_watch", sys::check(watch.into()));
            (fd, -1)
        }
        // The receiving end, the lower number, is the one the dump names first.
        "socket" => match udp_pair() {
            Ok((receiver, sender)) => {
                w.setup("writing into the socket", sys::write(sender, SOCKET_BYTES));
                (receiver, sender)
            }
            Err(e) => w.setup_failed(&format!("two UDP sockets on 127.0.0.1: {e}")),
        },
        other => w.setup_failed(&format!(
            "unknown descriptor kind {other:?}: expected inotify or socket"
        )),
    };
    w.announce("unsupported-kind", &kind);
    w.announce("unsupported-fd", fd);

    let mut checks = w.wait();
    w.common_checks(&mut checks);
    if kind == "inotify" {
        // The ready file and the trigger's check file were created since the watch was added.
        let mut buf = [0u8; 4096];
        if let Some(n) = checks.io("reading the inotify events", sys::read(fd, &mut buf)) {
            checks.that(n > 0, "the inotify watch reports the files created since");
        }
    } else {
        read_socket(&mut checks, fd, peer);
    }
    w.finish(checks)
}

fn read_socket(checks: &mut Checks, fd: i32, peer: i32) {
    let mut buf = [0u8; 64];
    if let Some(n) = checks.io("reading the socket", sys::read(fd, &mut buf)) {
        checks.eq("bytes buffered in the socket", SOCKET_BYTES, &buf[..n]);
    }
    // Still connected both ways.
    if checks
        .io("writing to the socket", sys::write(fd, b"pong"))
        .is_some()
    {
        if let Some(n) = checks.io("reading the socket's peer", sys::read(peer, &mut buf)) {
            checks.eq("bytes through the socket", &b"pong"[..], &buf[..n]);
        }
    }
}

/// Two UDP sockets on 127.0.0.1 connected to each other: (the one made first, the other).
fn udp_pair() -> std::io::Result<(i32, i32)> {
    use std::os::fd::IntoRawFd;
    let a = std::net::UdpSocket::bind("127.0.0.1:0")?;
    let b = std::net::UdpSocket::bind("127.0.0.1:0")?;
    a.connect(b.local_addr()?)?;
    b.connect(a.local_addr()?)?;
    Ok((a.into_raw_fd(), b.into_raw_fd()))
}
