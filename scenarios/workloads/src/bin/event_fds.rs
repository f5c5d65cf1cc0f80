//! Holds the event descriptors a service loop holds, then checks after the trigger that each
//! is what it was. The kind is the first argument:
//!
//! - `eventfd`: a non-blocking eventfd whose counter (2^32 + 5) does not fit `eventfd`'s
//!   `int`, and a blocking semaphore-mode eventfd counting 3: the first reads 2^32 + 5 once,
//!   the second 1 three times, then neither is readable;
//! - `timerfd`: a non-blocking CLOCK_MONOTONIC timer due in 1000 s, then every 500 s; a
//!   CLOCK_REALTIME timer at an absolute time 2000 s away (`TFD_TIMER_ABSTIME`); a 1 ms
//!   one-shot timer that fired and was not read; a disarmed timer keeping a 7 s interval: the
//!   intervals exact, the time left counted down and not reset, the absolute one still due at
//!   its time, the unread expiration still there, the disarmed one still disarmed;
//! - `signalfd`: a non-blocking signalfd of SIGUSR1 and SIGRTMIN+2 (both blocked), SIGUSR1
//!   pending: the mask as it was, the signal read through it, then nothing;
//! - `epoll`: an epoll instance watching, each with its own data, an eventfd counting 2
//!   (level-triggered), the same eventfd again through a second descriptor, a fired timerfd
//!   (`EPOLLONESHOT`), the signalfd of `signalfd` with SIGUSR1 pending, the read end of an
//!   empty pipe (`EPOLLET`), its write end (`EPOLLOUT`) and an eventfd counting 0
//!   (`EPOLLEXCLUSIVE`): its fdinfo lists the same registrations; `epoll_wait` reports exactly
//!   the ready ones, then after a write to the pipe the edge-triggered one and not the
//!   one-shot one again; `EPOLL_CTL_MOD` on every original number succeeds but on the
//!   exclusive one (`EINVAL`, as the kernel refuses it there).
//!
//! - `inotify`: a non-blocking, close-on-exec inotify instance watching a file
//!   (`IN_MODIFY | IN_CLOSE_WRITE`, watch 3) and a directory (`IN_CREATE | IN_DELETE |
//!   IN_EXCL_UNLINK`, watch 5), numbered so by watches added and removed before, and a blocking
//!   one watching the file (`IN_ATTRIB | IN_ONESHOT`, watch 1): the fdinfo watch lines as they
//!   were (masks with their flags), the descriptor flags, no event queued, then a write to the
//!   file, a file made in the directory and a chmod of the file reported with the right watch
//!   numbers, the one-shot watch removed after its event (`IN_IGNORED`).
//!
//! - `memfd`: a memfd made for sealing (pattern bytes at its start and 512 KiB in, a hole
//!   between, 1 MiB long, mode 0640, sealed against shrinking and growing, at offset 4097), a
//!   second description of it opened read-only through /proc at offset 10, and a memfd made
//!   without sealing: names, seals, size, mode, contents and offsets as they were, the two
//!   descriptions one memfd (a write through one is read through the other).
//!
//! What a restore must refuse, with the descriptor holding it announced as `refused-fd`:
//!
//! - `refuse-inotify-pending`: an inotify descriptor with an unread event;
//! - `refuse-inotify-deleted`: an inotify descriptor watching a file that was unlinked while
//!   held open (no path leads to it);
//! - `refuse-userfaultfd`: a userfaultfd;
//! - `refuse-timerfd-cancel-on-set`: a CLOCK_REALTIME timerfd set at an absolute time with
//!   `TFD_TIMER_CANCEL_ON_SET`;
//! - `refuse-epoll-closed`: an epoll instance watching an eventfd added at a number that was
//!   closed since (the eventfd still open at another);
//! - `refuse-epoll-et-ready`: an edge-triggered registration of a readable eventfd whose edge
//!   `epoll_wait` already reported;
//! - `refuse-epoll-oneshot-fired`: an `EPOLLONESHOT` registration that fired.
//!
//! After the trigger a refused kind checks its state is still there (the epoll's fdinfo
//! unchanged, the descriptor open).

use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use crlab_workloads::runtime::{Checks, Workload};
use crlab_workloads::sys;

const SEC: u64 = 1_000_000_000;
/// How far a timer may have counted down between the ready file and the checks.
const SLACK_NS: u64 = 120 * SEC;
const EFD_SEMAPHORE: i32 = 1;
const TFD_TIMER_ABSTIME: i32 = 1;
const TFD_TIMER_CANCEL_ON_SET: i32 = 2;
const BIG_COUNT: u64 = (1 << 32) + 5;
const TIMER_VALUE: u64 = 1000;
const TIMER_INTERVAL: u64 = 500;
const TIMER_ABS_IN: u64 = 2000;

const MEMFD_SIZE: u64 = 1 << 20;
const MEMFD_SECOND: u64 = 512 << 10;
const MEMFD_SEALS: i32 = libc::F_SEAL_SHRINK | libc::F_SEAL_GROW;
const MEMFD_NAME: &str = "/memfd:crlab-memfd (deleted)";

/// The descriptors a kind set up.
#[derive(Default)]
struct Set {
    eventfd: i32,
    semaphore: i32,
    timer: i32,
    timer_abs: i32,
    /// The absolute expiry of `timer_abs` (CLOCK_REALTIME, ns).
    abs_deadline: u64,
    timer_fired: i32,
    timer_disarmed: i32,
    signalfd: i32,
    sigmask: u64,
    epoll: i32,
    /// The eventfd's second descriptor, the pipe's ends, the exclusive eventfd.
    eventfd_dup: i32,
    pipe: [i32; 2],
    idle: i32,
    /// The epoll's fdinfo registrations (tfd, events, data) before the wait.
    registrations: Vec<(i32, u32, u64)>,
    /// The time left of `timer` before the wait (ns).
    timer_left: u64,
    /// The memfd, its read-only description, the memfd made without sealing.
    memfd: i32,
    memfd_ro: i32,
    memfd_plain: i32,
    /// The refused descriptor.
    refused: Option<i32>,
    /// `inotify`: the non-blocking instance, its watches of a file and of a directory (with
    /// numbers that do not start at 1), the blocking instance watching the file too, and
    /// both instances' fdinfo watch lines before the wait.
    inotify: i32,
    inotify_file_wd: i32,
    inotify_dir_wd: i32,
    inotify_blocking: i32,
    inotify_lines: Vec<String>,
    inotify_file: PathBuf,
    inotify_dir: PathBuf,
    /// `refuse-inotify-deleted`: the watched file, unlinked and held open.
    inotify_held: Option<std::fs::File>,
}

fn main() {
    let mut w = Workload::from_args("event_fds");
    let kind = w.args().first().cloned().unwrap_or_default();
    let set = match set_up(&kind, w.state_dir()) {
        Ok(s) => s,
        Err(e) => w.setup_failed(&format!("{kind}: {e}")),
    };
    if let Some(fd) = set.refused {
        w.announce("refused-pid", sys::getpid());
        w.announce("refused-fd", fd);
    }
    let mut checks = w.wait();
    // First, before any signal is taken: the pending ones are part of them.
    w.common_checks(&mut checks);
    check(&mut checks, &kind, &set);
    w.finish(checks)
}

fn ret(r: libc::c_int) -> io::Result<i32> {
    sys::check(r.into()).map(|v| v as i32)
}

fn eventfd(count: u32, flags: i32) -> io::Result<i32> {
    // SAFETY: eventfd takes integers only.
    ret(unsafe { libc::eventfd(count, flags) })
}

fn eventfd_add(fd: i32, n: u64) -> io::Result<()> {
    sys::write(fd, &n.to_ne_bytes()).map(drop)
}

/// One read of an eventfd's counter; `None` when it would block.
fn eventfd_read(fd: i32) -> io::Result<Option<u64>> {
    if !readable(fd)? {
        return Ok(None);
    }
    let mut b = [0u8; 8];
    sys::read(fd, &mut b)?;
    Ok(Some(u64::from_ne_bytes(b)))
}

/// Whether `fd` is readable now (`poll` without waiting).
fn readable(fd: i32) -> io::Result<bool> {
    let mut p = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes one pollfd, `p`, live for the call.
    let n = ret(unsafe { libc::poll(&mut p, 1, 0) })?;
    Ok(n > 0)
}

fn ts(ns: u64) -> libc::timespec {
    libc::timespec {
        tv_sec: (ns / SEC) as libc::time_t,
        tv_nsec: (ns % SEC) as libc::c_long,
    }
}

fn ns(t: libc::timespec) -> u64 {
    t.tv_sec as u64 * SEC + t.tv_nsec as u64
}

fn timerfd(clock: i32, flags: i32, settime: i32, value: u64, interval: u64) -> io::Result<i32> {
    // SAFETY: timerfd_create takes integers only.
    let fd = ret(unsafe { libc::timerfd_create(clock, flags) })?;
    let its = libc::itimerspec {
        it_interval: ts(interval),
        it_value: ts(value),
    };
    // SAFETY: `its` is a valid itimerspec read during the call; the old value is not asked.
    ret(unsafe { libc::timerfd_settime(fd, settime, &its, std::ptr::null_mut()) })?;
    Ok(fd)
}

/// (time left, interval) of a timerfd, in ns.
fn timer_get(fd: i32) -> io::Result<(u64, u64)> {
    let mut its = libc::itimerspec {
        it_interval: ts(0),
        it_value: ts(0),
    };
    // SAFETY: timerfd_gettime writes one itimerspec into `its`.
    ret(unsafe { libc::timerfd_gettime(fd, &mut its) })?;
    Ok((ns(its.it_value), ns(its.it_interval)))
}

fn realtime_ns() -> io::Result<u64> {
    let mut t = ts(0);
    // SAFETY: clock_gettime writes one timespec into `t`.
    ret(unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut t) })?;
    Ok(ns(t))
}

fn signalfd(mask: u64, flags: i32) -> io::Result<i32> {
    sys::set_sigmask(sys::sigmask() | mask)?;
    let set = sys::sigset_of(mask);
    // SAFETY: `set` is a valid sigset_t read during the call.
    ret(unsafe { libc::signalfd(-1, &set, flags) })
}

fn sigrtmin() -> i32 {
    libc::SIGRTMIN()
}

fn epoll_ctl(epoll: i32, op: i32, fd: i32, events: u32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event { events, u64: data };
    // SAFETY: `ev` is a valid epoll_event read during the call.
    ret(unsafe { libc::epoll_ctl(epoll, op, fd, &mut ev) }).map(drop)
}

/// The (data, events) `epoll_wait` reports now, sorted.
fn epoll_ready(epoll: i32) -> io::Result<Vec<(u64, u32)>> {
    let mut evs = [libc::epoll_event { events: 0, u64: 0 }; 16];
    // SAFETY: the kernel writes at most 16 events into `evs`.
    let n = ret(unsafe { libc::epoll_wait(epoll, evs.as_mut_ptr(), 16, 0) })?;
    let mut out: Vec<(u64, u32)> = evs[..n as usize]
        .iter()
        .map(|e| {
            let (data, events) = (e.u64, e.events);
            (data, events)
        })
        .collect();
    out.sort_unstable();
    Ok(out)
}

/// The (tfd, events, data) of an epoll's fdinfo `tfd:` lines, sorted.
fn registrations(epoll: i32) -> io::Result<Vec<(i32, u32, u64)>> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{epoll}"))?;
    let bad = || io::Error::other(format!("fdinfo of the epoll: {text}"));
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("tfd:") else {
            continue;
        };
        let w: Vec<&str> = rest.split_whitespace().collect();
        if w.len() < 5 || w[1] != "events:" || w[3] != "data:" {
            return Err(bad());
        }
        out.push((
            w[0].parse().map_err(|_| bad())?,
            u32::from_str_radix(w[2], 16).map_err(|_| bad())?,
            u64::from_str_radix(w[4], 16).map_err(|_| bad())?,
        ));
    }
    out.sort_unstable();
    Ok(out)
}

/// A line of a descriptor's fdinfo, trimmed after its key.
fn fdinfo_line(fd: i32, key: &str) -> io::Result<String> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| io::Error::other(format!("no {key} in fdinfo of {fd}")))
}

const D_EVENTFD: u64 = 0x1111;
const D_TIMER: u64 = 0x2222_0000_0000;
const D_SIGNAL: u64 = 0x3333;
const D_PIPE_ET: u64 = 0x4444;
const D_PIPE_OUT: u64 = 0x5555;
const D_IDLE: u64 = 0x6666;
const D_DUP: u64 = 0xdead_beef_7777;
const IN: u32 = libc::EPOLLIN as u32;
const OUT: u32 = libc::EPOLLOUT as u32;
const ET: u32 = libc::EPOLLET as u32;
const ONESHOT: u32 = libc::EPOLLONESHOT as u32;
const EXCLUSIVE: u32 = libc::EPOLLEXCLUSIVE as u32;

fn set_up(kind: &str, state: &Path) -> io::Result<Set> {
    let mut s = Set::default();
    match kind {
        "eventfd" => {
            s.eventfd = eventfd(0, libc::EFD_NONBLOCK)?;
            eventfd_add(s.eventfd, BIG_COUNT)?;
            s.semaphore = eventfd(3, EFD_SEMAPHORE)?;
        }
        "timerfd" => {
            s.timer = timerfd(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK,
                0,
                TIMER_VALUE * SEC,
                TIMER_INTERVAL * SEC,
            )?;
            s.abs_deadline = realtime_ns()? + TIMER_ABS_IN * SEC;
            s.timer_abs = timerfd(
                libc::CLOCK_REALTIME,
                0,
                TFD_TIMER_ABSTIME,
                s.abs_deadline,
                0,
            )?;
            s.timer_fired = fired_timer()?;
            s.timer_disarmed = timerfd(libc::CLOCK_MONOTONIC, 0, 0, 0, 7 * SEC)?;
            s.timer_left = timer_get(s.timer)?.0;
        }
        "signalfd" => set_up_signalfd(&mut s)?,
        "epoll" => {
            set_up_signalfd(&mut s)?;
            s.eventfd = eventfd(2, libc::EFD_NONBLOCK)?;
            // SAFETY: dup takes an integer only.
            s.eventfd_dup = ret(unsafe { libc::dup(s.eventfd) })?;
            s.timer_fired = fired_timer()?;
            // SAFETY: pipe2 writes two descriptors into `s.pipe`.
            ret(unsafe { libc::pipe2(s.pipe.as_mut_ptr(), libc::O_NONBLOCK) })?;
            s.idle = eventfd(0, libc::EFD_NONBLOCK)?;
            // SAFETY: epoll_create1 takes an integer only.
            s.epoll = ret(unsafe { libc::epoll_create1(0) })?;
            let add = libc::EPOLL_CTL_ADD;
            epoll_ctl(s.epoll, add, s.eventfd, IN, D_EVENTFD)?;
            epoll_ctl(s.epoll, add, s.eventfd_dup, IN, D_DUP)?;
            epoll_ctl(s.epoll, add, s.timer_fired, IN | ONESHOT, D_TIMER)?;
            epoll_ctl(s.epoll, add, s.signalfd, IN, D_SIGNAL)?;
            epoll_ctl(s.epoll, add, s.pipe[0], IN | ET, D_PIPE_ET)?;
            epoll_ctl(s.epoll, add, s.pipe[1], OUT, D_PIPE_OUT)?;
            epoll_ctl(s.epoll, add, s.idle, IN | EXCLUSIVE, D_IDLE)?;
            s.registrations = registrations(s.epoll)?;
        }
        "memfd" => set_up_memfd(&mut s)?,
        "inotify" => set_up_inotify(&mut s, state)?,
        "refuse-inotify-pending" => {
            let file = state.join("inotify-pending");
            std::fs::write(&file, b"x")?;
            let fd = ret(unsafe_inotify_init(0))?;
            s.inotify_file_wd = add_watch(fd, &file, libc::IN_MODIFY)?;
            // One IN_MODIFY event waits unread in the queue.
            std::fs::OpenOptions::new()
                .append(true)
                .open(&file)
                .and_then(|mut f| io::Write::write_all(&mut f, b"y"))?;
            s.refused = Some(fd);
        }
        "refuse-inotify-deleted" => {
            let file = state.join("inotify-deleted");
            std::fs::write(&file, b"x")?;
            let fd = ret(unsafe_inotify_init(0))?;
            s.inotify_file_wd = add_watch(fd, &file, libc::IN_MODIFY)?;
            // The file stays open (so the watch stays), its name gone: no path leads to it.
            let held = std::fs::OpenOptions::new().append(true).open(&file)?;
            std::fs::remove_file(&file)?;
            s.inotify_held = Some(held);
            s.refused = Some(fd);
        }
        "refuse-userfaultfd" => {
            // SAFETY: userfaultfd takes an integer only.
            let fd = sys::check(unsafe { libc::syscall(libc::SYS_userfaultfd, 0) })?;
            s.refused = Some(fd as i32);
        }
        "refuse-timerfd-cancel-on-set" => {
            let deadline = realtime_ns()? + TIMER_ABS_IN * SEC;
            let flags = TFD_TIMER_ABSTIME | TFD_TIMER_CANCEL_ON_SET;
            s.refused = Some(timerfd(libc::CLOCK_REALTIME, 0, flags, deadline, 0)?);
        }
        "refuse-epoll-closed" | "refuse-epoll-et-ready" | "refuse-epoll-oneshot-fired" => {
            // SAFETY: epoll_create1 takes an integer only.
            s.epoll = ret(unsafe { libc::epoll_create1(0) })?;
            s.eventfd = eventfd(1, libc::EFD_NONBLOCK)?;
            let add = libc::EPOLL_CTL_ADD;
            match kind {
                "refuse-epoll-closed" => {
                    epoll_ctl(s.epoll, add, s.eventfd, IN, D_EVENTFD)?;
                    // SAFETY: dup and close take integers only.
                    let kept = ret(unsafe { libc::dup(s.eventfd) })?;
                    // SAFETY: as above; the number is this process's own eventfd.
                    ret(unsafe { libc::close(s.eventfd) })?;
                    s.eventfd = kept;
                }
                "refuse-epoll-et-ready" => {
                    epoll_ctl(s.epoll, add, s.eventfd, IN | ET, D_EVENTFD)?;
                    expect_ready(s.epoll, D_EVENTFD)?;
                }
                _ => {
                    epoll_ctl(s.epoll, add, s.eventfd, IN | ONESHOT, D_EVENTFD)?;
                    expect_ready(s.epoll, D_EVENTFD)?;
                }
            }
            s.registrations = registrations(s.epoll)?;
            s.refused = Some(s.epoll);
        }
        _ => return Err(io::Error::other(format!("unknown kind {kind:?}"))),
    }
    Ok(s)
}

/// `epoll_wait` reports the registration with `data`, and only it.
fn expect_ready(epoll: i32, data: u64) -> io::Result<()> {
    let ready = epoll_ready(epoll)?;
    if ready.len() != 1 || ready[0].0 != data {
        return Err(io::Error::other(format!("epoll_wait reported {ready:x?}")));
    }
    Ok(())
}

/// A 1 ms one-shot timer that has fired, its expiration not read.
fn fired_timer() -> io::Result<i32> {
    let fd = timerfd(libc::CLOCK_MONOTONIC, libc::TFD_NONBLOCK, 0, SEC / 1000, 0)?;
    for _ in 0..1000 {
        if readable(fd)? {
            return Ok(fd);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
    Err(io::Error::other("the 1 ms timer did not fire"))
}

fn set_up_signalfd(s: &mut Set) -> io::Result<()> {
    s.sigmask = sys::sigbit(libc::SIGUSR1) | sys::sigbit(sigrtmin() + 2);
    s.signalfd = signalfd(s.sigmask, libc::SFD_NONBLOCK)?;
    // SAFETY: raise takes an integer only; SIGUSR1 is blocked, so it stays pending.
    ret(unsafe { libc::raise(libc::SIGUSR1) })?;
    Ok(())
}

fn check(c: &mut Checks, kind: &str, s: &Set) {
    if let Err(e) = check_kind(c, kind, s) {
        c.fail(format!("{kind}: {e}"));
    }
}

fn nonblocking(fd: i32) -> io::Result<bool> {
    Ok(sys::fcntl(fd, libc::F_GETFL)? & libc::O_NONBLOCK != 0)
}

fn check_kind(c: &mut Checks, kind: &str, s: &Set) -> io::Result<()> {
    match kind {
        "eventfd" => {
            c.eq("eventfd O_NONBLOCK", true, nonblocking(s.eventfd)?);
            c.eq(
                "semaphore eventfd O_NONBLOCK",
                false,
                nonblocking(s.semaphore)?,
            );
            c.eq(
                "eventfd-semaphore of the semaphore eventfd",
                "1".to_owned(),
                fdinfo_line(s.semaphore, "eventfd-semaphore:")?,
            );
            c.eq("eventfd read", Some(BIG_COUNT), eventfd_read(s.eventfd)?);
            c.eq("eventfd read again", None, eventfd_read(s.eventfd)?);
            let reads: Vec<Option<u64>> = (0..4)
                .map(|_| eventfd_read(s.semaphore))
                .collect::<io::Result<_>>()?;
            c.eq(
                "semaphore eventfd reads",
                vec![Some(1), Some(1), Some(1), None],
                reads,
            );
        }
        "timerfd" => {
            let (left, interval) = timer_get(s.timer)?;
            c.eq("periodic timerfd interval", TIMER_INTERVAL * SEC, interval);
            c.that(
                left <= s.timer_left && left + SLACK_NS > s.timer_left,
                &format!(
                    "periodic timerfd: {left} ns left after the restore, {} before: not \
                     counted down from where it was",
                    s.timer_left
                ),
            );
            c.eq("periodic timerfd O_NONBLOCK", true, nonblocking(s.timer)?);
            c.eq(
                "periodic timerfd clockid",
                libc::CLOCK_MONOTONIC.to_string(),
                fdinfo_line(s.timer, "clockid:")?,
            );
            let (abs_left, abs_interval) = timer_get(s.timer_abs)?;
            let due = s.abs_deadline.saturating_sub(realtime_ns()?);
            c.eq("absolute timerfd interval", 0, abs_interval);
            c.that(
                abs_left.abs_diff(due) < SEC,
                &format!("absolute timerfd: {abs_left} ns left, but its deadline is {due} ns away"),
            );
            c.eq(
                "absolute timerfd settime flags",
                "01".to_owned(),
                fdinfo_line(s.timer_abs, "settime flags:")?,
            );
            c.eq(
                "absolute timerfd clockid",
                libc::CLOCK_REALTIME.to_string(),
                fdinfo_line(s.timer_abs, "clockid:")?,
            );
            c.eq(
                "fired timerfd's unread expirations",
                Some(1),
                eventfd_read(s.timer_fired)?,
            );
            c.eq("fired timerfd time", (0, 0), timer_get(s.timer_fired)?);
            c.eq(
                "disarmed timerfd time",
                (0, 7 * SEC),
                timer_get(s.timer_disarmed)?,
            );
        }
        "signalfd" => check_signalfd(c, s)?,
        "epoll" => {
            c.eq(
                "epoll registrations (tfd, events, data)",
                &s.registrations,
                &registrations(s.epoll)?,
            );
            let ready = epoll_ready(s.epoll)?;
            let mut expected = vec![
                (D_EVENTFD, IN),
                (D_DUP, IN),
                (D_TIMER, IN),
                (D_SIGNAL, IN),
                (D_PIPE_OUT, OUT),
            ];
            expected.sort_unstable();
            c.eq("epoll_wait after the restore", &expected, &ready);
            sys::write(s.pipe[1], b"x")?;
            let mut expected = vec![
                (D_EVENTFD, IN),
                (D_DUP, IN),
                (D_SIGNAL, IN),
                (D_PIPE_ET, IN),
                (D_PIPE_OUT, OUT),
            ];
            expected.sort_unstable();
            c.eq(
                "epoll_wait after a write to the pipe (the one-shot one fired)",
                &expected,
                &epoll_ready(s.epoll)?,
            );
            c.eq(
                "epoll_wait again (the edge-triggered one reported once)",
                expected
                    .iter()
                    .copied()
                    .filter(|&(d, _)| d != D_PIPE_ET)
                    .collect::<Vec<_>>(),
                epoll_ready(s.epoll)?,
            );
            let m = libc::EPOLL_CTL_MOD;
            for (fd, ev, data) in [
                (s.eventfd, IN, D_EVENTFD),
                (s.eventfd_dup, IN, D_DUP),
                (s.timer_fired, IN | ONESHOT, D_TIMER),
                (s.signalfd, IN, D_SIGNAL),
                (s.pipe[0], IN | ET, D_PIPE_ET),
                (s.pipe[1], OUT, D_PIPE_OUT),
            ] {
                if let Err(e) = epoll_ctl(s.epoll, m, fd, ev, data) {
                    c.fail(format!("EPOLL_CTL_MOD of fd {fd}: {e}"));
                }
            }
            let exclusive = epoll_ctl(s.epoll, m, s.idle, IN | EXCLUSIVE, D_IDLE);
            c.eq(
                "EPOLL_CTL_MOD of the EPOLLEXCLUSIVE registration",
                Some(libc::EINVAL),
                exclusive.err().and_then(|e| e.raw_os_error()),
            );
            check_signalfd(c, s)?;
        }
        "memfd" => check_memfd(c, s)?,
        "inotify" => check_inotify(c, s)?,
        "refuse-inotify-pending" => {
            // The dump counted the event without taking it: it is still there to read.
            let fd = s.refused.unwrap_or(-1);
            c.eq(
                "the queued event after the refused dump",
                vec![(s.inotify_file_wd, libc::IN_MODIFY, String::new())],
                inotify_events(fd)?,
            );
        }
        "refuse-inotify-deleted" => {
            let fd = s.refused.unwrap_or(-1);
            if let Some(held) = &s.inotify_held {
                io::Write::write_all(&mut &*held, b"z")?;
            }
            c.eq(
                "the event of the deleted watched file after the refused dump",
                vec![(s.inotify_file_wd, libc::IN_MODIFY, String::new())],
                inotify_events(fd)?,
            );
        }
        "refuse-userfaultfd" | "refuse-timerfd-cancel-on-set" => {
            let fd = s.refused.unwrap_or(-1);
            c.that(
                sys::fcntl(fd, libc::F_GETFD).is_ok(),
                &format!("fd {fd} is still open"),
            );
        }
        _ => {
            c.eq(
                "epoll registrations (tfd, events, data)",
                &s.registrations,
                &registrations(s.epoll)?,
            );
        }
    }
    Ok(())
}

fn check_signalfd(c: &mut Checks, s: &Set) -> io::Result<()> {
    c.eq(
        "signalfd sigmask",
        format!("{:016x}", s.sigmask),
        fdinfo_line(s.signalfd, "sigmask:")?,
    );
    c.eq("signalfd O_NONBLOCK", true, nonblocking(s.signalfd)?);
    let mut info = [0u8; 128];
    match sys::read(s.signalfd, &mut info) {
        Ok(n) => {
            c.eq("signalfd read size", 128, n);
            let signo = u32::from_ne_bytes([info[0], info[1], info[2], info[3]]);
            c.eq(
                "signal read through the signalfd",
                libc::SIGUSR1 as u32,
                signo,
            );
        }
        Err(e) => c.fail(format!(
            "reading the pending SIGUSR1 through the signalfd: {e}"
        )),
    }
    c.that(
        sys::read(s.signalfd, &mut info).is_err(),
        "the signalfd reads a second signal",
    );
    Ok(())
}

fn pwrite(fd: i32, data: &[u8], at: u64) -> io::Result<()> {
    // SAFETY: the kernel reads `data.len()` bytes from `data`, live for the call.
    let n =
        sys::check(
            unsafe { libc::pwrite(fd, data.as_ptr().cast(), data.len(), at as libc::off_t) }
                as libc::c_long,
        )?;
    if n as usize != data.len() {
        return Err(io::Error::other("short pwrite"));
    }
    Ok(())
}

fn pread(fd: i32, len: usize, at: u64) -> io::Result<Vec<u8>> {
    let mut b = vec![0u8; len];
    // SAFETY: the kernel writes at most `len` bytes into `b`, live for the call.
    let n = sys::check(
        unsafe { libc::pread(fd, b.as_mut_ptr().cast(), len, at as libc::off_t) } as libc::c_long,
    )?;
    b.truncate(n as usize);
    Ok(b)
}

fn unsafe_inotify_init(flags: i32) -> libc::c_int {
    // SAFETY: inotify_init1 takes an integer only.
    unsafe { libc::inotify_init1(flags) }
}

fn add_watch(fd: i32, path: &Path, mask: u32) -> io::Result<i32> {
    let p = std::ffi::CString::new(path.as_os_str().as_bytes()).map_err(io::Error::other)?;
    // SAFETY: `p` is a valid NUL-terminated string, live for the call.
    ret(unsafe { libc::inotify_add_watch(fd, p.as_ptr(), mask) })
}

fn rm_watch(fd: i32, wd: i32) -> io::Result<()> {
    // SAFETY: inotify_rm_watch takes integers only.
    ret(unsafe { libc::inotify_rm_watch(fd, wd) }).map(drop)
}

/// Every event an inotify instance holds now, as (wd, mask, name), read without waiting.
fn inotify_events(fd: i32) -> io::Result<Vec<(i32, u32, String)>> {
    let mut out = Vec::new();
    while readable(fd)? {
        let mut buf = [0u8; 4096];
        let n = sys::read(fd, &mut buf)?;
        let mut at = 0;
        // struct inotify_event: wd (i32), mask, cookie, len (u32), then len bytes of name.
        while at + 16 <= n {
            let word = |i: usize| {
                let mut b = [0u8; 4];
                b.copy_from_slice(&buf[at + i * 4..at + i * 4 + 4]);
                b
            };
            let wd = i32::from_ne_bytes(word(0));
            let mask = u32::from_ne_bytes(word(1));
            let len = u32::from_ne_bytes(word(3)) as usize;
            let name = buf.get(at + 16..at + 16 + len).unwrap_or_default();
            let name = String::from_utf8_lossy(name)
                .trim_end_matches('\0')
                .to_owned();
            out.push((wd, mask, name));
            at += 16 + len;
        }
    }
    Ok(out)
}

/// The `inotify wd:` lines of a descriptor's fdinfo, sorted.
fn inotify_lines(fd: i32) -> io::Result<Vec<String>> {
    let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"))?;
    let mut out: Vec<String> = text
        .lines()
        .filter(|l| l.starts_with("inotify "))
        .map(str::to_owned)
        .collect();
    out.sort_unstable();
    Ok(out)
}

const INOTIFY_FILE_MASK: u32 = libc::IN_MODIFY | libc::IN_CLOSE_WRITE;
const INOTIFY_DIR_MASK: u32 = libc::IN_CREATE | libc::IN_DELETE | libc::IN_EXCL_UNLINK;

fn set_up_inotify(s: &mut Set, state: &Path) -> io::Result<()> {
    s.inotify_file = state.join("inotify-file");
    s.inotify_dir = state.join("inotify-dir");
    std::fs::write(&s.inotify_file, b"watched")?;
    std::fs::create_dir(&s.inotify_dir)?;
    s.inotify = ret(unsafe_inotify_init(libc::IN_NONBLOCK | libc::IN_CLOEXEC))?;
    // Watches added and removed first, so the kept ones are numbered 3 and 5, not 1 and 2.
    let dummy = add_watch(s.inotify, &s.inotify_dir, libc::IN_ACCESS)?;
    rm_watch(s.inotify, dummy)?;
    let dummy = add_watch(s.inotify, &s.inotify_file, libc::IN_OPEN)?;
    rm_watch(s.inotify, dummy)?;
    s.inotify_file_wd = add_watch(s.inotify, &s.inotify_file, INOTIFY_FILE_MASK)?;
    let dummy = add_watch(s.inotify, state, libc::IN_ACCESS)?;
    rm_watch(s.inotify, dummy)?;
    s.inotify_dir_wd = add_watch(s.inotify, &s.inotify_dir, INOTIFY_DIR_MASK)?;
    if (s.inotify_file_wd, s.inotify_dir_wd) != (3, 5) {
        return Err(io::Error::other(format!(
            "watch numbers {} and {}, not 3 and 5",
            s.inotify_file_wd, s.inotify_dir_wd
        )));
    }
    // The removals' IN_IGNORED events, read: the queue is empty.
    inotify_events(s.inotify)?;
    s.inotify_blocking = ret(unsafe_inotify_init(0))?;
    add_watch(
        s.inotify_blocking,
        &s.inotify_file,
        libc::IN_ATTRIB | libc::IN_ONESHOT,
    )?;
    s.inotify_lines = inotify_lines(s.inotify)?;
    s.inotify_lines.extend(inotify_lines(s.inotify_blocking)?);
    Ok(())
}

fn check_inotify(c: &mut Checks, s: &Set) -> io::Result<()> {
    let mut lines = inotify_lines(s.inotify)?;
    lines.extend(inotify_lines(s.inotify_blocking)?);
    c.eq(
        "inotify watches (fdinfo: wd, inode, device, mask, handle)",
        &s.inotify_lines,
        &lines,
    );
    c.eq("inotify O_NONBLOCK", true, nonblocking(s.inotify)?);
    c.eq(
        "inotify FD_CLOEXEC",
        libc::FD_CLOEXEC,
        sys::fcntl(s.inotify, libc::F_GETFD)? & libc::FD_CLOEXEC,
    );
    c.eq(
        "blocking inotify O_NONBLOCK",
        false,
        nonblocking(s.inotify_blocking)?,
    );
    c.eq(
        "blocking inotify FD_CLOEXEC",
        0,
        sys::fcntl(s.inotify_blocking, libc::F_GETFD)? & libc::FD_CLOEXEC,
    );
    c.eq(
        "no event queued after the restore",
        vec![],
        inotify_events(s.inotify)?,
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&s.inotify_file)
        .and_then(|mut f| io::Write::write_all(&mut f, b"!"))?;
    std::fs::write(s.inotify_dir.join("new"), b"")?;
    std::fs::set_permissions(
        &s.inotify_file,
        std::os::unix::fs::PermissionsExt::from_mode(0o600),
    )?;
    c.eq(
        "inotify events (wd, mask, name)",
        vec![
            (s.inotify_file_wd, libc::IN_MODIFY, String::new()),
            (s.inotify_file_wd, libc::IN_CLOSE_WRITE, String::new()),
            (s.inotify_dir_wd, libc::IN_CREATE, "new".to_owned()),
        ],
        inotify_events(s.inotify)?,
    );
    c.eq(
        "blocking inotify events (wd, mask, name)",
        vec![
            (1, libc::IN_ATTRIB, String::new()),
            (1, libc::IN_IGNORED, String::new()),
        ],
        inotify_events(s.inotify_blocking)?,
    );
    Ok(())
}

fn set_up_memfd(s: &mut Set) -> io::Result<()> {
    // SAFETY: the name is a valid NUL-terminated string.
    s.memfd = ret(unsafe { libc::memfd_create(c"crlab-memfd".as_ptr(), libc::MFD_ALLOW_SEALING) })?;
    pwrite(s.memfd, &sys::pattern(1, 0, 5000), 0)?;
    pwrite(s.memfd, &sys::pattern(2, 0, 100), MEMFD_SECOND)?;
    // SAFETY: ftruncate and fchmod take integers only; `s.memfd` is the memfd just made.
    ret(unsafe { libc::ftruncate(s.memfd, MEMFD_SIZE as libc::off_t) })?;
    // SAFETY: as above.
    ret(unsafe { libc::fchmod(s.memfd, 0o640) })?;
    // SAFETY: F_ADD_SEALS takes an integer.
    ret(unsafe { libc::fcntl(s.memfd, libc::F_ADD_SEALS, MEMFD_SEALS) })?;
    sys::lseek(s.memfd, 4097, libc::SEEK_SET)?;
    let path = sys::cstring(std::path::Path::new(&format!("/proc/self/fd/{}", s.memfd)));
    // SAFETY: `path` is a valid NUL-terminated path.
    s.memfd_ro = ret(unsafe { libc::open(path.as_ptr(), libc::O_RDONLY) })?;
    sys::lseek(s.memfd_ro, 10, libc::SEEK_SET)?;
    // SAFETY: the name is a valid NUL-terminated string.
    s.memfd_plain = ret(unsafe { libc::memfd_create(c"crlab-plain".as_ptr(), 0) })?;
    Ok(())
}

fn check_memfd(c: &mut Checks, s: &Set) -> io::Result<()> {
    for fd in [s.memfd, s.memfd_ro] {
        let link = std::fs::read_link(format!("/proc/self/fd/{fd}"))?;
        c.eq(
            &format!("fd {fd}'s memfd"),
            MEMFD_NAME,
            &*link.to_string_lossy(),
        );
    }
    let plain = std::fs::read_link(format!("/proc/self/fd/{}", s.memfd_plain))?;
    c.eq(
        "the plain memfd",
        "/memfd:crlab-plain (deleted)",
        &*plain.to_string_lossy(),
    );
    c.eq(
        "seals",
        MEMFD_SEALS,
        sys::fcntl(s.memfd, libc::F_GET_SEALS)?,
    );
    c.eq(
        "seals of the memfd made without sealing",
        libc::F_SEAL_SEAL,
        sys::fcntl(s.memfd_plain, libc::F_GET_SEALS)?,
    );
    let (st, ro) = (sys::fstat(s.memfd)?, sys::fstat(s.memfd_ro)?);
    c.eq("size", MEMFD_SIZE as i64, st.st_size);
    c.eq("mode", 0o640, st.st_mode & 0o7777);
    c.eq("one memfd behind both descriptions", st.st_ino, ro.st_ino);
    c.eq("offset", 4097, sys::lseek(s.memfd, 0, libc::SEEK_CUR)?);
    c.eq(
        "read-only offset",
        10,
        sys::lseek(s.memfd_ro, 0, libc::SEEK_CUR)?,
    );
    c.eq(
        "read-only access mode",
        libc::O_RDONLY,
        sys::fcntl(s.memfd_ro, libc::F_GETFL)? & libc::O_ACCMODE,
    );
    c.that(
        pread(s.memfd_ro, 5000, 0)? == sys::pattern(1, 0, 5000),
        "the memfd's first bytes",
    );
    c.that(
        pread(s.memfd_ro, 100, MEMFD_SECOND)? == sys::pattern(2, 0, 100),
        "the memfd's bytes at 512 KiB",
    );
    c.that(
        pread(s.memfd_ro, 4096, 8192)?.iter().all(|&b| b == 0),
        "the memfd's hole reads zeros",
    );
    pwrite(s.memfd, b"shared", 100)?;
    c.eq(
        "a write through one description, read through the other",
        b"shared".to_vec(),
        pread(s.memfd_ro, 6, 100)?,
    );
    Ok(())
}
