//! Reading what a pipe holds without taking it out (`tee(2)`), and refilling one.

use super::SysError;
use nix::errno::Errno;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd};

use super::error::call_err as err;
use super::socket::ioctl_int;

/// Capacity of the pipe behind `fd` (`F_GETPIPE_SZ`).
pub fn pipe_capacity(fd: BorrowedFd<'_>) -> Result<u32, SysError> {
    // SAFETY: F_GETPIPE_SZ takes no pointer argument.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETPIPE_SZ) };
    if r < 0 {
        return Err(err("fcntl(F_GETPIPE_SZ)")(Errno::last()));
    }
    // Not negative: checked above.
    u32::try_from(r).map_err(|_| err("fcntl(F_GETPIPE_SZ)")(Errno::ERANGE))
}

/// How many bytes the pipe behind `fd` holds (`FIONREAD`).
pub fn pipe_queued(fd: BorrowedFd<'_>) -> Result<u32, SysError> {
    let n = ioctl_int(fd, libc::FIONREAD, "ioctl(FIONREAD)")?;
    u32::try_from(n).map_err(|_| err("ioctl(FIONREAD)")(Errno::ERANGE))
}

fn new_pipe(capacity: u32) -> Result<(OwnedFd, OwnedFd), SysError> {
    let mut fds = [0i32; 2];
    // SAFETY: `fds` has room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC | libc::O_NONBLOCK) } < 0 {
        return Err(err("pipe2")(Errno::last()));
    }
    // SAFETY: pipe2 just returned these two descriptors, owned by nobody else.
    let (r, w) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    set_pipe_capacity(w.as_fd(), capacity)?;
    Ok((r, w))
}

/// Sets the capacity of the pipe behind `fd` (`F_SETPIPE_SZ`); the kernel rounds it up to a
/// power of two pages.
pub fn set_pipe_capacity(fd: BorrowedFd<'_>, capacity: u32) -> Result<(), SysError> {
    let capacity =
        libc::c_int::try_from(capacity).map_err(|_| err("fcntl(F_SETPIPE_SZ)")(Errno::EINVAL))?;
    // SAFETY: F_SETPIPE_SZ takes an integer argument; `fd` is open for the call.
    if unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETPIPE_SZ, capacity) } < 0 {
        return Err(err("fcntl(F_SETPIPE_SZ)")(Errno::last()));
    }
    Ok(())
}

/// The bytes buffered in the pipe whose read end is `read_end`, left in place.
pub fn peek_pipe(read_end: BorrowedFd<'_>) -> Result<Vec<u8>, SysError> {
    let capacity = pipe_capacity(read_end)?;
    let (r, w) = new_pipe(capacity)?;
    // SAFETY: both descriptors are open pipes for the duration of the call.
    let n = unsafe {
        libc::tee(
            read_end.as_raw_fd(),
            w.as_raw_fd(),
            capacity as usize,
            libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        let e = Errno::last();
        if e == Errno::EAGAIN {
            return Ok(Vec::new());
        }
        return Err(err("tee")(e));
    }
    // Not negative: checked above.
    let mut data = vec![0u8; usize::try_from(n).unwrap_or(0)];
    let mut got = 0;
    while got < data.len() {
        match nix::unistd::read(&r, &mut data[got..]) {
            Ok(0) => break,
            Ok(k) => got += k,
            Err(Errno::EINTR) => continue,
            Err(e) => return Err(err("read")(e)),
        }
    }
    data.truncate(got);
    Ok(data)
}
