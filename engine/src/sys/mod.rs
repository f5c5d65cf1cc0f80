//! The raw system interface: ptrace, remote system calls, `clone3`, `kcmp`, file owners, pipes,
//! timerfds, eventfds, memfds, sockets (`sock_diag`, peeking their queues), I/O priorities,
//! resource limits, `prctl`, keyrings (`keyctl`), the transport socket's receiving end, the probes' throwaway child,
//! the engine's own stop signals.
//!
//! Everything above this module works in terms of [`Tracee`] and [`Remote`]; raw `libc`
//! calls live here and nowhere else in the engine (the tidy test of xtask checks it).

mod clone3;
mod error;
mod event;
mod filemap;
mod fork;
mod ioprio;
mod kcmp;
mod keyring;
mod memfd;
mod owner;
mod pipe;
mod prctl;
mod ptrace;
mod remote;
mod rlimit;
mod sock_diag;
mod socket;
mod stop;
mod tcp;
mod unix;

pub use clone3::{clone3_probe, spawn_stopped_with_pid, Clone3Probe};
pub use error::SysError;
pub use event::{clock_now, eventfd_is_semaphore, open_by_handle, ready_for, timerfd_gettime};
pub use filemap::FileMap;
pub use fork::fork_paused;
pub use ioprio::ioprio;
pub use kcmp::{epoll_target_is, same_file, share, Shared};
pub use keyring::{
    keyctl_text, keyring_serials, own_keyring, remote_keyctl_buf, KEYCTL_CHOWN, KEYCTL_DESCRIBE,
    KEYCTL_GET_KEYRING_ID, KEYCTL_GET_SECURITY, KEYCTL_JOIN_SESSION_KEYRING, KEYCTL_READ,
    KEYCTL_SETPERM, KEY_DESC_MAX, KEY_PAYLOAD_MAX, KEY_SPEC_PROCESS_KEYRING,
    KEY_SPEC_SESSION_KEYRING, KEY_SPEC_THREAD_KEYRING, KEY_SPEC_USER_SESSION_KEYRING,
};
pub use memfd::{memfd_seals, on_hugetlbfs};
pub use owner::{file_owner, file_signal, OWNER_PGRP, OWNER_TID};
pub use pipe::{peek_pipe, pipe_capacity, pipe_queued, set_pipe_capacity};
pub use prctl::mm_map_size;
#[cfg(test)]
pub use ptrace::zeroed_regs;
pub use ptrace::{Regs, Tracee};
pub use remote::{find_syscall_gadget, resume_regs, Remote, Scratch};
pub use rlimit::{rlimit, set_rlimit, RLIMITS};
pub use sock_diag::{
    inet_diag_all, unix_diag, unix_peers_all, InetDiag, UnixDiag, UNIX_ESTABLISHED, UNIX_LISTEN,
};
pub use socket::{
    fd_of, fresh_socket, has_peer, has_pending_error, peek_head_len, peek_queue, peer_cred,
    peer_groups, peer_pid_now, queue_truesize, send_all, set_sockopt_bytes, set_sockopt_int,
    set_sockopt_timeval, sock_proto_name, sockopt_bytes, sockopt_int, sockopt_timeval, unix_outq,
    Peeked,
};
pub use stop::{catch_stop_signals, default_stop_signals, stop_requested};
pub use tcp::{
    tcp_fill_queue, tcp_repair, tcp_repair_allowed, tcp_repair_read, tcp_set_queue_seq,
    tcp_set_repair_options, tcp_set_timestamp, tcp_set_window, Repair, TcpRepairState, TcpWindow,
    TCPI_OPT_TIMESTAMPS, TCP_RECV_QUEUE, TCP_SEND_QUEUE,
};
pub use unix::{accept, accept_nonblocking, recv_fds, send_fd, FDS_PER_MESSAGE};

/// Size of a page on x86_64.
pub const PAGE_SIZE: u64 = PAGE_SIZE_U32 as u64;
/// [`PAGE_SIZE`] as the image's inventory records it.
pub const PAGE_SIZE_U32: u32 = 4096;

/// A 64-bit length, offset or address as a `usize`. Lossless: the engine builds for x86_64
/// only (`compile_error!` in lib.rs), where `usize` is 64 bits.
pub const fn usize_of(v: u64) -> usize {
    #[allow(clippy::cast_possible_truncation)]
    let v = v as usize;
    v
}

/// A register's 64 bits read as signed (a system call's `rax`: -4095..-1 is `-errno`).
pub const fn signed(v: u64) -> i64 {
    i64::from_ne_bytes(v.to_ne_bytes())
}

/// A signed value's 64 bits as a register holds them (`orig_rax` of -1, a syscall number).
pub const fn unsigned(v: i64) -> u64 {
    u64::from_ne_bytes(v.to_ne_bytes())
}

/// A C `int` (a flag, a signal number, a constant) as a system call argument register: its 32
/// bits, zero-extended, which is how the kernel reads an `int` argument.
pub const fn int_arg(v: i32) -> u64 {
    // The bits are the point: a negative constant (`AT_FDCWD`) keeps its two's complement
    // in the low 32 bits, the kernel ignores the high ones.
    #[allow(clippy::cast_sign_loss)]
    let bits = v as u32;
    bits as u64
}
