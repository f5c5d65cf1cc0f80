//! Event descriptors the engine holds: a timerfd's time (`timerfd_gettime`), a clock's time,
//! and whether a file is ready (`poll`, which changes nothing).

use super::SysError;
use nix::errno::Errno;
use std::os::fd::{AsRawFd, BorrowedFd};

/// A time as (seconds, nanoseconds).
pub type Time = (u64, u64);

/// A timerfd's time left and interval.
///
/// The kernel folds expirations of a periodic timer that nobody has read yet into its
/// `ticks` here and rearms it, as a `read` or `poll` of it would: nothing is lost, and the
/// time left that fdinfo shows afterwards is the rearmed one.
pub fn timerfd_gettime(fd: BorrowedFd<'_>) -> Result<(Time, Time), SysError> {
    let mut its = libc::itimerspec {
        it_interval: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
        it_value: libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        },
    };
    // SAFETY: timerfd_gettime writes one `struct itimerspec` at the pointer, which is `its`,
    // live for the call and laid out as the kernel's (the libc crate's type).
    if unsafe { libc::timerfd_gettime(fd.as_raw_fd(), &mut its) } < 0 {
        return Err(SysError::Call {
            op: "timerfd_gettime",
            tid: 0,
            source: Errno::last(),
        });
    }
    let t = |ts: libc::timespec| {
        (
            u64::try_from(ts.tv_sec).unwrap_or(0),
            u64::try_from(ts.tv_nsec).unwrap_or(0),
        )
    };
    Ok((t(its.it_value), t(its.it_interval)))
}

/// The time of clock `clockid` (`clock_gettime`), as (seconds, nanoseconds).
pub fn clock_now(clockid: i32) -> Result<(u64, u64), SysError> {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one `struct timespec` at the pointer, which is `ts`, live
    // for the call.
    if unsafe { libc::clock_gettime(clockid, &mut ts) } < 0 {
        return Err(SysError::Call {
            op: "clock_gettime",
            tid: 0,
            source: Errno::last(),
        });
    }
    Ok((
        u64::try_from(ts.tv_sec).unwrap_or(0),
        u64::try_from(ts.tv_nsec).unwrap_or(0),
    ))
}

/// Whether the file behind `fd` is ready for any of `events` (the low 16 bits of an epoll
/// event mask: `EPOLLIN`, `EPOLLOUT`, ...), asked with a `poll` that does not wait.
pub fn ready_for(fd: BorrowedFd<'_>, events: u32) -> Result<bool, SysError> {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: i16::from_ne_bytes(
            u16::try_from(events & 0xffff)
                .unwrap_or(u16::MAX)
                .to_ne_bytes(),
        ),
        revents: 0,
    };
    // SAFETY: poll reads and writes one `struct pollfd` at the pointer, which is `p`, live for
    // the call; a zero timeout never waits.
    let r = unsafe { libc::poll(&mut p, 1, 0) };
    if r < 0 {
        return Err(SysError::Call {
            op: "poll",
            tid: 0,
            source: Errno::last(),
        });
    }
    Ok(r > 0)
}
