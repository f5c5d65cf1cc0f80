//! The engine's end of a `AF_UNIX` socket that receives descriptors: accepting the
//! connection and taking the descriptors of an `SCM_RIGHTS` message into owned ones; and
//! the restore's end of one that hands a descriptor to a process being restored.

use nix::sys::socket::{accept4, recvmsg, ControlMessageOwned, MsgFlags, SockFlag};
use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

/// At most this many descriptors per message (the kernel's `SCM_MAX_FD`).
pub const FDS_PER_MESSAGE: usize = 253;

/// Accepts one connection on `listener`, close-on-exec.
pub fn accept(listener: BorrowedFd<'_>) -> nix::Result<OwnedFd> {
    let fd = accept4(listener.as_raw_fd(), SockFlag::SOCK_CLOEXEC)?;
    // SAFETY: accept4 just returned this descriptor; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Accepts one connection on `listener`, close-on-exec and non-blocking (the restore's accept
/// of a connection it just made again, whose file flags it sets afterwards).
pub fn accept_nonblocking(listener: BorrowedFd<'_>) -> nix::Result<OwnedFd> {
    let fd = accept4(
        listener.as_raw_fd(),
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
    )?;
    // SAFETY: accept4 just returned this descriptor; nobody else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Receives one message of one byte on `conn` and returns the descriptors its `SCM_RIGHTS`
/// carried (at most [`FDS_PER_MESSAGE`]), close-on-exec and owned.
pub fn recv_fds(conn: BorrowedFd<'_>) -> nix::Result<Vec<OwnedFd>> {
    let mut byte = [0u8; 1];
    let mut iov = [IoSliceMut::new(&mut byte)];
    let mut space = nix::cmsg_space!([RawFd; FDS_PER_MESSAGE]);
    let msg = recvmsg::<()>(
        conn.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut got = Vec::new();
    for c in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = c {
            // SAFETY: SCM_RIGHTS just installed these descriptors in our table; nobody
            // else owns them.
            got.extend(
                fds.into_iter()
                    .map(|fd| unsafe { OwnedFd::from_raw_fd(fd) }),
            );
        }
    }
    Ok(got)
}

/// Sends one byte on `conn` with `fd` in an `SCM_RIGHTS` message: how the restore hands a
/// descriptor of the engine to a process, which receives it ([`recvmsg`] run inside it).
pub fn send_fd(conn: BorrowedFd<'_>, fd: BorrowedFd<'_>) -> nix::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage};
    let byte = [b'F'];
    let iov = [std::io::IoSlice::new(&byte)];
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    sendmsg::<()>(conn.as_raw_fd(), &iov, &cmsg, MsgFlags::MSG_DONTWAIT, None).map(drop)
}
