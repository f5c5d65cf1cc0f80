//! The transport socket: how a dumped process hands its descriptors to the engine.
//!
//! The engine listens on an abstract `AF_UNIX` `SOCK_SEQPACKET` socket that it
//! creates while its own `attr/sockcreate` holds the dumped process's SELinux
//! context (reset right after), exactly as the reference tool does for its
//! parasite socket. The process then `socket()`s and `connect()`s to it from its
//! own context, by remote system calls, and `sendmsg()`s its descriptors with
//! `SCM_RIGHTS`. A container domain may connect to a socket of its own context
//! but not to one of the runtime's: that is why the label matters.
//!
//! The task's side is built in the scratch area: [`ScratchLayout`] places the
//! socket address, the `msghdr`, its `iovec`, the byte sent and the control message.

use super::DumpError;
use crate::selinux::{self, context_type};
use crate::sys::{accept, recv_fds, usize_of, Remote, Scratch, FDS_PER_MESSAGE};
use nix::sys::socket::{
    bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};

/// Where the task's side of the transport lives in the scratch area: the socket address
/// (at most 108 bytes), the `msghdr` (56) and its one `iovec` (16), the byte sent, then the
/// control message (at most 16 + 4 * [`FDS_PER_MESSAGE`] bytes).
struct ScratchLayout;

impl ScratchLayout {
    const ADDR: u64 = 0;
    const MSGHDR: u64 = 512;
    const IOV: u64 = Self::MSGHDR + 64;
    const BYTE: u64 = Self::IOV + 32;
    const CMSG: u64 = 1024;
}

/// How the engine's listening socket is labelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SocketLabel {
    /// With the dumped process's context, so the process may connect to it from its own.
    #[default]
    ProcessContext,
    /// With the engine's own context: a negative control, never for real use.
    EngineContext,
}

/// An open transport to one process.
pub struct Transport {
    pid: i32,
    conn: OwnedFd,
    remote_fd: u64,
}

impl Transport {
    /// Opens the transport: the engine listens, the process connects.
    pub fn open(
        remote: &mut Remote,
        scratch: Scratch,
        pid: i32,
        context: &str,
        label: SocketLabel,
        opened: &mut Vec<u64>,
    ) -> Result<Transport, DumpError> {
        let terr = |what: String| DumpError::Transport { pid, what };
        let name = format!(
            "crlab-transport-{}-{}-{:x}",
            std::process::id(),
            pid,
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.subsec_nanos())
                .unwrap_or(0)
        );
        failpoint!("dump.transport.listen", |e| terr(format!("socket: {e}")));
        let label_ctx = match label {
            SocketLabel::ProcessContext => context,
            SocketLabel::EngineContext => "",
        };
        let listener = selinux::with_sockcreate(label_ctx, || {
            socket(
                AddressFamily::Unix,
                SockType::SeqPacket,
                SockFlag::SOCK_CLOEXEC,
                None,
            )
        })?
        .map_err(|e| terr(format!("socket: {e}")))?;
        let addr =
            UnixAddr::new_abstract(name.as_bytes()).map_err(|e| terr(format!("address: {e}")))?;
        bind(listener.as_raw_fd(), &addr).map_err(|e| terr(format!("bind: {e}")))?;
        listen(
            &listener,
            Backlog::new(1).map_err(|e| terr(format!("listen: {e}")))?,
        )
        .map_err(|e| terr(format!("listen: {e}")))?;

        // struct sockaddr_un for an abstract name: family, NUL, name.
        let mut sa = Vec::with_capacity(3 + name.len());
        let family = libc::sa_family_t::try_from(libc::AF_UNIX)
            .map_err(|_| terr("the AF_UNIX address family".into()))?;
        sa.extend_from_slice(&family.to_ne_bytes());
        sa.push(0);
        sa.extend_from_slice(name.as_bytes());
        remote.write_mem(scratch.addr + ScratchLayout::ADDR, &sa)?;
        let fd = remote.syscall(
            "socket",
            libc::SYS_socket,
            &[
                libc::AF_UNIX as u64,
                (libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC) as u64,
                0,
            ],
        )?;
        opened.push(fd);
        let mut t = Transport {
            pid,
            conn: listener,
            remote_fd: fd,
        };
        if let Err(source) = remote.syscall(
            "connect",
            libc::SYS_connect,
            &[fd, scratch.addr + ScratchLayout::ADDR, sa.len() as u64],
        ) {
            let socket = ::selinux::SecurityContext::of_file(&t.conn, false)
                .ok()
                .flatten()
                .map(|c| {
                    String::from_utf8_lossy(c.as_bytes())
                        .trim_end_matches('\0')
                        .to_string()
                })
                .unwrap_or_default();
            t.close(remote, opened)?;
            let ty = context_type;
            let rule = if !socket.is_empty() && ty(context) != ty(&socket) {
                format!(
                    "; a policy allowing it says `allow {} {}:unix_stream_socket connectto;`, but a \
                     socket labelled with the process's own context needs no such rule (the engine \
                     labels it so unless --unsafe-unlabelled-transport is given)",
                    ty(context),
                    ty(&socket)
                )
            } else {
                String::new()
            };
            return Err(DumpError::TransportConnect {
                pid,
                context: context.to_string(),
                socket,
                rule,
                source,
            });
        }
        // On an error, the task's end stays in `opened`, which the undo closes.
        t.conn = accept_from(pid, &t.conn)?;
        Ok(t)
    }

    /// Has the process send descriptors `fds` (its numbers) and returns the
    /// engine's copies, in the same order.
    pub fn drain(
        &mut self,
        remote: &mut Remote,
        scratch: Scratch,
        fds: &[i32],
    ) -> Result<Vec<OwnedFd>, DumpError> {
        let mut out = Vec::with_capacity(fds.len());
        for chunk in fds.chunks(FDS_PER_MESSAGE) {
            let data_len = 4 * chunk.len() as u64;
            let cmsg_len = 16 + data_len;
            let space = 16 + data_len.div_ceil(8) * 8;
            // struct msghdr
            let mut hdr = Vec::with_capacity(56);
            for w in [
                0u64,
                0,
                scratch.addr + ScratchLayout::IOV,
                1,
                scratch.addr + ScratchLayout::CMSG,
                space,
                0,
            ] {
                hdr.extend_from_slice(&w.to_ne_bytes());
            }
            remote.write_mem(scratch.addr + ScratchLayout::MSGHDR, &hdr)?;
            let mut iov = Vec::with_capacity(16);
            iov.extend_from_slice(&(scratch.addr + ScratchLayout::BYTE).to_ne_bytes());
            iov.extend_from_slice(&1u64.to_ne_bytes());
            remote.write_mem(scratch.addr + ScratchLayout::IOV, &iov)?;
            remote.write_mem(scratch.addr + ScratchLayout::BYTE, b"F")?;
            let mut cmsg = Vec::with_capacity(usize_of(space));
            cmsg.extend_from_slice(&cmsg_len.to_ne_bytes());
            cmsg.extend_from_slice(&libc::SOL_SOCKET.to_ne_bytes());
            cmsg.extend_from_slice(&libc::SCM_RIGHTS.to_ne_bytes());
            for fd in chunk {
                cmsg.extend_from_slice(&fd.to_ne_bytes());
            }
            cmsg.resize(usize_of(space), 0);
            remote.write_mem(scratch.addr + ScratchLayout::CMSG, &cmsg)?;
            remote.syscall(
                "sendmsg",
                libc::SYS_sendmsg,
                &[self.remote_fd, scratch.addr + ScratchLayout::MSGHDR, 0],
            )?;

            failpoint!("dump.transport.recv", |e| DumpError::Transport {
                pid: self.pid,
                what: format!("recvmsg: {e}"),
            });
            let got = recv_fds(self.conn.as_fd()).map_err(|e| DumpError::Transport {
                pid: self.pid,
                what: format!("recvmsg: {e}"),
            })?;
            if got.len() != chunk.len() {
                return Err(DumpError::Transport {
                    pid: self.pid,
                    what: format!("sent {} descriptors, received {}", chunk.len(), got.len()),
                });
            }
            out.extend(got);
        }
        Ok(out)
    }

    /// Closes the process's end of the transport. `opened` lists the descriptors the dump
    /// opened in the process and has yet to close (the undo closes them): the transport's end
    /// is there from [`Transport::open`] until it is closed here.
    pub fn close(self, remote: &mut Remote, opened: &mut Vec<u64>) -> Result<(), DumpError> {
        remote.syscall("close", libc::SYS_close, &[self.remote_fd])?;
        opened.retain(|&fd| fd != self.remote_fd);
        Ok(())
    }
}

/// The engine's end of the connection the process made to `listener`.
fn accept_from(pid: i32, listener: &OwnedFd) -> Result<OwnedFd, DumpError> {
    let terr = |what: String| DumpError::Transport { pid, what };
    failpoint!("dump.transport.accept", |e| terr(format!("accept: {e}")));
    accept(listener.as_fd()).map_err(|e| terr(format!("accept: {e}")))
}
