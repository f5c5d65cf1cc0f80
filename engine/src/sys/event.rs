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

/// Whether an eventfd counts as a semaphore (`EFD_SEMAPHORE`), found by using it, for kernels
/// whose fdinfo does not say (before Linux 6.6). `fd` is the engine's copy of the dumped
/// description and `count` its counter as fdinfo shows it; the dumped tree is held, so nobody
/// else reads or writes it meanwhile.
///
/// Adds 2, then reads once: a semaphore gives 1 (and is read once more), a plain eventfd its
/// whole counter (which is written back less the 2). The counter ends as it was; the reads
/// never block, as the counter is at least 1 when each is made. A readiness change on the way
/// wakes nobody who stays awake: every waiter re-checks a counter that is back to what it was.
pub fn eventfd_is_semaphore(fd: BorrowedFd<'_>, count: u64) -> Result<bool, SysError> {
    if count > u64::MAX - 3 {
        // A write of 2 would block (or fail): the counter's maximum is 2^64 - 2.
        return Err(SysError::Call {
            op: "eventfd write",
            tid: 0,
            source: Errno::EOVERFLOW,
        });
    }
    let raw = fd.as_raw_fd();
    let write = |n: u64| -> Result<(), SysError> {
        let b = n.to_ne_bytes();
        // SAFETY: the kernel reads 8 bytes from `b`, a live array of 8 bytes.
        let r = unsafe { libc::write(raw, b.as_ptr().cast(), b.len()) };
        if r != 8 {
            return Err(SysError::Call {
                op: "eventfd write",
                tid: 0,
                source: Errno::last(),
            });
        }
        Ok(())
    };
    let read = || -> Result<u64, SysError> {
        let mut b = [0u8; 8];
        // SAFETY: the kernel writes at most 8 bytes into `b`, a live array of 8 bytes.
        let r = unsafe { libc::read(raw, b.as_mut_ptr().cast(), b.len()) };
        if r != 8 {
            return Err(SysError::Call {
                op: "eventfd read",
                tid: 0,
                source: Errno::last(),
            });
        }
        Ok(u64::from_ne_bytes(b))
    };
    write(2)?;
    // With a counter of at least 2 a read cannot wait, so cannot be interrupted: it does not
    // fail (were it to, the counter would stay 2 higher, and the error says so).
    let got = read()?;
    if got == 1 {
        read()?;
        Ok(true)
    } else {
        if got > 2 {
            write(got - 2)?;
        }
        Ok(false)
    }
}

/// Opens the object of a file handle (`open_by_handle_at`, which needs
/// `CAP_DAC_READ_SEARCH`) with `O_PATH`, on the filesystem that `mount` is on: how the engine
/// finds what an inotify watch watches from the handle its fdinfo shows.
pub fn open_by_handle(
    mount: BorrowedFd<'_>,
    handle_type: i32,
    handle: &[u8],
) -> Result<std::os::fd::OwnedFd, SysError> {
    use std::os::fd::FromRawFd;
    let err = |source| SysError::Call {
        op: "open_by_handle_at",
        tid: 0,
        source,
    };
    let bytes = u32::try_from(handle.len()).map_err(|_| err(Errno::EINVAL))?;
    // struct file_handle: handle_bytes (u32), handle_type (int), then the bytes; built in
    // u32 words so that it is aligned as the kernel reads it.
    let mut buf = vec![0u32; 2 + handle.len().div_ceil(4)];
    buf[0] = bytes;
    buf[1] = u32::from_ne_bytes(handle_type.to_ne_bytes());
    for (i, b) in handle.iter().enumerate() {
        let word = &mut buf[2 + i / 4];
        let mut w = word.to_ne_bytes();
        w[i % 4] = *b;
        *word = u32::from_ne_bytes(w);
    }
    // SAFETY: the kernel reads a `struct file_handle` at the pointer: 8 bytes of header, then
    // `handle_bytes` bytes, all inside `buf`, live for the call; it returns a new descriptor.
    let r = unsafe {
        libc::syscall(
            libc::SYS_open_by_handle_at,
            mount.as_raw_fd(),
            buf.as_mut_ptr(),
            libc::O_PATH | libc::O_CLOEXEC | libc::O_NOFOLLOW,
        )
    };
    if r < 0 {
        return Err(err(Errno::last()));
    }
    let fd = i32::try_from(r).map_err(|_| err(Errno::EBADF))?;
    // SAFETY: open_by_handle_at just returned this descriptor, owned by nobody else.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

#[cfg(test)]
mod probe_tests {
    use super::*;
    use std::os::fd::{AsFd, FromRawFd, OwnedFd};

    fn eventfd(count: u32, flags: i32) -> OwnedFd {
        // SAFETY: eventfd takes integers only; the result is checked before it is owned.
        let fd = unsafe { libc::eventfd(count, flags | libc::EFD_CLOEXEC) };
        assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
        // SAFETY: `fd` is a new descriptor nobody else owns.
        unsafe { OwnedFd::from_raw_fd(fd) }
    }

    fn count(fd: &OwnedFd) -> u64 {
        let info = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", fd.as_raw_fd()))
            .expect("fdinfo");
        info.lines()
            .find_map(|l| l.strip_prefix("eventfd-count:"))
            .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
            .expect("eventfd-count")
    }

    #[test]
    fn the_mode_is_found_and_the_counter_kept() {
        for semaphore in [false, true] {
            for (start, blocking) in [(0, false), (1, true), (5, false), (7, true)] {
                let mut flags = if semaphore { libc::EFD_SEMAPHORE } else { 0 };
                if !blocking {
                    flags |= libc::EFD_NONBLOCK;
                }
                let fd = eventfd(start, flags);
                let got = eventfd_is_semaphore(fd.as_fd(), u64::from(start)).unwrap();
                assert_eq!(got, semaphore, "count {start}");
                assert_eq!(count(&fd), u64::from(start), "the counter after the probe");
            }
        }
    }

    #[test]
    fn a_counter_near_its_maximum_is_not_probed() {
        let fd = eventfd(0, libc::EFD_NONBLOCK);
        let b = (u64::MAX - 2).to_ne_bytes();
        // SAFETY: the kernel reads 8 bytes from `b`.
        let wrote = unsafe { libc::write(fd.as_raw_fd(), b.as_ptr().cast(), 8) };
        assert_eq!(wrote, 8);
        assert!(eventfd_is_semaphore(fd.as_fd(), u64::MAX - 2).is_err());
        assert_eq!(count(&fd), u64::MAX - 2);
    }
}
