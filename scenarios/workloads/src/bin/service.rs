//! A small containerised service, shaped like the ones checkpointed in production: one
//! process, an event loop on an epoll instance, and a pool of worker threads.
//!
//! Before the ready file it sets up, and uses once:
//! - a listening Unix stream socket bound at `<state-dir>/service.sock`;
//! - a client connected to it and the connection the service accepted (both ends in this
//!   process), which serves one request (`ping-0`) before the wait and leaves a second one
//!   (`ping-1`) queued, unread, in the accepted connection;
//! - an eventfd the workers count their finished replies on;
//! - a timerfd ticking every 200 ms;
//! - an epoll instance watching the listener, the connection, the eventfd and the timerfd,
//!   each with its own data;
//! - [`WORKERS`] worker threads blocked in `read` on the job pipe, each answering a request it
//!   is handed with `pong-<request>` on the request's connection.
//!
//! It records each socket's SELinux label (`security.selinux`, none when SELinux is off).
//!
//! Once triggered, the loop runs again and must, within [`DEADLINE`]: answer the queued
//! `ping-1` on the old connection; accept a new client (a thread of its own that connects to
//! the socket's path and sends `ping-2`) and answer it; count both replies on the eventfd; see
//! the timer tick. Then it checks each socket's label is the one it had, the new connection
//! carries the listener's label (the kernel gives an accepted socket its listener's), and the
//! listener's and the client's names are the path. A restore that recreated the sockets in
//! the runtime's context, not the service's, fails here (on an enforcing system, it fails
//! earlier: the service is denied `accept` on its own listener).

use std::io;
use std::mem::size_of;
use std::path::Path;
use std::time::{Duration, Instant};

use crlab_workloads::runtime::{Checks, Workload};
use crlab_workloads::sys;

/// How many worker threads.
const WORKERS: usize = 4;
/// How long the loop may take after the trigger.
const DEADLINE: Duration = Duration::from_secs(20);
/// The timer's period.
const TICK_NS: i64 = 200_000_000;
/// A job's size on the pipe: the descriptor (4 bytes), the request's length (1), the request.
/// Every job is one atomic write of this size, so every read of this size takes one job.
const JOB: usize = 64;

/// The epoll data of each watched descriptor: its kind in the high half, its number in the low.
const LISTENER: u64 = 1 << 32;
const CONNECTION: u64 = 2 << 32;
const EVENTS: u64 = 3 << 32;
const TIMER: u64 = 4 << 32;

/// What the service holds.
struct Service {
    listener: i32,
    client: i32,
    conn: i32,
    eventfd: i32,
    timer: i32,
    epoll: i32,
    /// The job pipe: the loop writes, the workers read.
    jobs: [i32; 2],
    workers: Vec<std::thread::JoinHandle<()>>,
    /// Each socket's label before the wait: listener, client, connection.
    labels: [Option<String>; 3],
}

fn main() {
    let mut w = Workload::from_args("service");
    let path = w.path("service.sock");
    let service = match set_up(&path) {
        Ok(s) => s,
        Err(e) => w.setup_failed(&format!("setting up the service: {e}")),
    };
    w.announce("socket", path.display());
    let mut checks = w.wait();
    w.common_checks(&mut checks);
    if let Err(e) = after_restore(&mut checks, &service, &path) {
        checks.fail(format!("the service loop: {e}"));
    }
    stop_workers(&mut checks, service);
    w.finish(checks)
}

fn ret(r: libc::c_int) -> io::Result<i32> {
    sys::check(r.into()).map(|v| v as i32)
}

/// `sockaddr_un` for `path`, with its length.
fn address(path: &Path) -> io::Result<(libc::sockaddr_un, libc::socklen_t)> {
    use std::os::unix::ffi::OsStrExt;
    // SAFETY: sockaddr_un is plain data; all zeroes is a valid (empty) address.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    a.sun_family = libc::AF_UNIX as libc::sa_family_t;
    let bytes = path.as_os_str().as_bytes();
    if bytes.len() >= a.sun_path.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("socket path {} is too long", path.display()),
        ));
    }
    for (d, s) in a.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    let len = size_of::<libc::sa_family_t>() + bytes.len() + 1;
    Ok((a, len as libc::socklen_t))
}

fn unix_socket(flags: i32) -> io::Result<i32> {
    // SAFETY: socket takes integers only.
    ret(unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM | flags, 0) })
}

fn connect(fd: i32, path: &Path) -> io::Result<()> {
    let (a, len) = address(path)?;
    // SAFETY: `a` is a valid sockaddr_un of `len` bytes.
    ret(unsafe { libc::connect(fd, (&a as *const libc::sockaddr_un).cast(), len) }).map(drop)
}

fn accept(listener: i32) -> io::Result<i32> {
    // SAFETY: no address is asked for; the flags are integers.
    ret(unsafe {
        libc::accept4(
            listener,
            std::ptr::null_mut(),
            std::ptr::null_mut(),
            libc::SOCK_CLOEXEC,
        )
    })
}

/// The path a socket (`peer == false`) or its peer is bound to.
fn name(fd: i32, peer: bool) -> io::Result<String> {
    // SAFETY: as in `address`.
    let mut a: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    let mut len = size_of::<libc::sockaddr_un>() as libc::socklen_t;
    let p = (&mut a as *mut libc::sockaddr_un).cast();
    // SAFETY: `a` is writable for `len` bytes, and the kernel writes no more.
    ret(unsafe {
        if peer {
            libc::getpeername(fd, p, &mut len)
        } else {
            libc::getsockname(fd, p, &mut len)
        }
    })?;
    let bytes: Vec<u8> = a
        .sun_path
        .iter()
        .take_while(|&&c| c != 0)
        .map(|&c| c as u8)
        .collect();
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// A descriptor's SELinux label; `None` when it has none (SELinux off).
fn label(fd: i32) -> io::Result<Option<String>> {
    let mut buf = [0u8; 256];
    // SAFETY: the name is NUL-terminated; the kernel writes at most buf.len() bytes.
    let n = unsafe {
        libc::fgetxattr(
            fd,
            c"security.selinux".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return match e.raw_os_error() {
            Some(libc::ENODATA | libc::EOPNOTSUPP) => Ok(None),
            _ => Err(e),
        };
    }
    let text = &buf[..n as usize];
    let text = text.strip_suffix(&[0]).unwrap_or(text);
    Ok(Some(String::from_utf8_lossy(text).into_owned()))
}

fn epoll_add(epoll: i32, fd: i32, data: u64) -> io::Result<()> {
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: data | fd as u32 as u64,
    };
    // SAFETY: `ev` is a valid epoll_event.
    ret(unsafe { libc::epoll_ctl(epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) }).map(drop)
}

fn set_up(path: &Path) -> io::Result<Service> {
    let listener = unix_socket(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)?;
    let (a, len) = address(path)?;
    // SAFETY: `a` is a valid sockaddr_un of `len` bytes.
    ret(unsafe { libc::bind(listener, (&a as *const libc::sockaddr_un).cast(), len) })?;
    // SAFETY: listen takes integers only.
    ret(unsafe { libc::listen(listener, 16) })?;
    let client = unix_socket(libc::SOCK_CLOEXEC)?;
    connect(client, path)?;
    let conn = accept(listener)?;
    // SAFETY: eventfd takes integers only.
    let eventfd = ret(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
    // SAFETY: timerfd_create takes integers only.
    let timer = ret(unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
        )
    })?;
    let period = libc::timespec {
        tv_sec: 0,
        tv_nsec: TICK_NS,
    };
    let spec = libc::itimerspec {
        it_interval: period,
        it_value: period,
    };
    // SAFETY: `spec` is a valid itimerspec; the old value is not asked for.
    ret(unsafe { libc::timerfd_settime(timer, 0, &spec, std::ptr::null_mut()) })?;
    // SAFETY: epoll_create1 takes an integer only.
    let epoll = ret(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
    epoll_add(epoll, listener, LISTENER)?;
    epoll_add(epoll, conn, CONNECTION)?;
    epoll_add(epoll, eventfd, EVENTS)?;
    epoll_add(epoll, timer, TIMER)?;
    let mut jobs = [0i32; 2];
    // SAFETY: `jobs` has room for the two descriptors.
    ret(unsafe { libc::pipe2(jobs.as_mut_ptr(), libc::O_CLOEXEC) })?;
    let workers = (0..WORKERS)
        .map(|_| {
            let (jobs, eventfd) = (jobs[0], eventfd);
            std::thread::spawn(move || worker(jobs, eventfd))
        })
        .collect();
    let labels = [label(listener)?, label(client)?, label(conn)?];
    let s = Service {
        listener,
        client,
        conn,
        eventfd,
        timer,
        epoll,
        jobs,
        workers,
        labels,
    };
    // One request served before the checkpoint, one left queued across it.
    sys::write(client, b"ping-0")?;
    let mut state = Loop::default();
    run_loop(&s, &mut state, |st| st.answered >= 1)?;
    expect_reply(client, "pong-ping-0")?;
    sys::write(client, b"ping-1")?;
    Ok(s)
}

/// A worker: reads jobs (a descriptor and a request) from the pipe, answers each on its
/// descriptor, and counts it on the eventfd; a job for descriptor -1 ends it.
fn worker(jobs: i32, eventfd: i32) {
    let mut job = [0u8; JOB];
    loop {
        match sys::read(jobs, &mut job) {
            Ok(JOB) => {}
            // A signal the kernel did not restart the read for: read again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            _ => return,
        }
        let fd = i32::from_ne_bytes([job[0], job[1], job[2], job[3]]);
        if fd < 0 {
            return;
        }
        let len = usize::from(job[4]).min(JOB - 5);
        let mut reply = b"pong-".to_vec();
        reply.extend_from_slice(&job[5..5 + len]);
        if sys::write(fd, &reply).is_ok() {
            let _ = sys::write(eventfd, &1u64.to_ne_bytes());
        }
    }
}

/// One job as the pipe carries it.
fn job(fd: i32, request: &[u8]) -> [u8; JOB] {
    let mut j = [0u8; JOB];
    j[..4].copy_from_slice(&fd.to_ne_bytes());
    let len = request.len().min(JOB - 5);
    j[4] = len as u8;
    j[5..5 + len].copy_from_slice(&request[..len]);
    j
}

/// What the loop has seen.
#[derive(Default)]
struct Loop {
    /// Replies the workers counted on the eventfd.
    answered: u64,
    /// Timer expirations read.
    ticks: u64,
    /// Connections accepted.
    accepted: Vec<i32>,
}

/// Runs the event loop until `done` or the deadline.
fn run_loop(s: &Service, st: &mut Loop, done: impl Fn(&Loop) -> bool) -> io::Result<()> {
    let start = Instant::now();
    while !done(st) {
        if start.elapsed() > DEADLINE {
            return Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "not done after {DEADLINE:?}: {} replies, {} ticks, {} accepted",
                    st.answered,
                    st.ticks,
                    st.accepted.len()
                ),
            ));
        }
        // SAFETY: epoll_event is plain data.
        let mut events: [libc::epoll_event; 8] = unsafe { std::mem::zeroed() };
        // SAFETY: `events` has room for 8 entries.
        let n = match ret(unsafe { libc::epoll_wait(s.epoll, events.as_mut_ptr(), 8, 100) }) {
            Ok(n) => n as usize,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        for ev in &events[..n] {
            let data = ev.u64;
            let fd = data as u32 as i32;
            match data & !0xffff_ffff {
                LISTENER => {
                    let c = accept(s.listener)?;
                    epoll_add(s.epoll, c, CONNECTION)?;
                    st.accepted.push(c);
                }
                CONNECTION => {
                    let mut req = [0u8; 64];
                    let got = sys::read(fd, &mut req)?;
                    if got == 0 {
                        // The peer closed: stop watching it.
                        // SAFETY: EPOLL_CTL_DEL takes no event.
                        ret(unsafe {
                            libc::epoll_ctl(s.epoll, libc::EPOLL_CTL_DEL, fd, std::ptr::null_mut())
                        })?;
                        continue;
                    }
                    sys::write(s.jobs[1], &job(fd, &req[..got]))?;
                }
                EVENTS => {
                    let mut b = [0u8; 8];
                    sys::read(s.eventfd, &mut b)?;
                    st.answered += u64::from_ne_bytes(b);
                }
                TIMER => {
                    let mut b = [0u8; 8];
                    sys::read(s.timer, &mut b)?;
                    st.ticks += u64::from_ne_bytes(b);
                }
                other => {
                    return Err(io::Error::other(format!(
                        "epoll reported unknown data {other:#x}"
                    )))
                }
            }
        }
    }
    Ok(())
}

/// Reads one reply from a blocking client socket, with a timeout, and compares it.
fn expect_reply(client: i32, want: &str) -> io::Result<()> {
    let tv = libc::timeval {
        tv_sec: DEADLINE.as_secs() as libc::time_t,
        tv_usec: 0,
    };
    // SAFETY: `tv` is a valid timeval of the size given.
    ret(unsafe {
        libc::setsockopt(
            client,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&tv as *const libc::timeval).cast(),
            size_of::<libc::timeval>() as libc::socklen_t,
        )
    })?;
    let mut buf = [0u8; 64];
    let n = sys::read(client, &mut buf)?;
    let got = String::from_utf8_lossy(&buf[..n]);
    if got != want {
        return Err(io::Error::other(format!(
            "the reply was {got:?}, not {want:?}"
        )));
    }
    Ok(())
}

/// After the trigger: the queued request answered, a new client served, the timer ticking,
/// the labels and names as they were.
fn after_restore(c: &mut Checks, s: &Service, path: &Path) -> io::Result<()> {
    let path_text = path.display().to_string();
    // The client's receive timeout, set before the checkpoint by its first reply's wait.
    let mut tv = libc::timeval {
        tv_sec: 0,
        tv_usec: 0,
    };
    let mut len = size_of::<libc::timeval>() as libc::socklen_t;
    // SAFETY: the kernel writes at most `len` bytes into `tv`.
    ret(unsafe {
        libc::getsockopt(
            s.client,
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            (&mut tv as *mut libc::timeval).cast(),
            &mut len,
        )
    })?;
    c.eq(
        "the client's SO_RCVTIMEO (s)",
        DEADLINE.as_secs() as libc::time_t,
        tv.tv_sec,
    );
    let new_client = {
        let path = path.to_owned();
        std::thread::spawn(move || -> io::Result<()> {
            let fd = unix_socket(libc::SOCK_CLOEXEC)?;
            connect(fd, &path)?;
            sys::write(fd, b"ping-2")?;
            let r = expect_reply(fd, "pong-ping-2");
            // SAFETY: `fd` is this thread's own descriptor.
            unsafe { libc::close(fd) };
            r
        })
    };
    let mut st = Loop::default();
    let looped = run_loop(s, &mut st, |st| {
        st.answered >= 2 && st.ticks >= 1 && !st.accepted.is_empty()
    });
    c.io(
        "the queued request answered",
        expect_reply(s.client, "pong-ping-1"),
    );
    match new_client.join() {
        Ok(r) => {
            c.io("a new client served after the restore", r);
        }
        Err(_) => c.fail("the new client's thread panicked"),
    }
    looped?;
    c.eq("replies counted on the eventfd", 2, st.answered);
    c.that(st.ticks >= 1, "the timer ticked after the restore");
    c.eq("connections accepted", 1, st.accepted.len());
    let now = [label(s.listener)?, label(s.client)?, label(s.conn)?];
    for (what, (before, after)) in ["listener", "client", "connection"]
        .iter()
        .zip(s.labels.iter().zip(&now))
    {
        c.eq(&format!("the {what}'s SELinux label"), before, after);
    }
    if let Some(&new) = st.accepted.first() {
        c.eq(
            "the new connection's label (the listener's)",
            &s.labels[0],
            &label(new)?,
        );
    }
    c.eq(
        "the listener's name",
        path_text.clone(),
        name(s.listener, false)?,
    );
    c.eq("the client's peer name", path_text, name(s.client, true)?);
    Ok(())
}

/// Ends every worker (a job for descriptor -1 each) and joins them.
fn stop_workers(c: &mut Checks, s: Service) {
    for _ in 0..WORKERS {
        if let Err(e) = sys::write(s.jobs[1], &job(-1, b"")) {
            c.fail(format!("stopping a worker: {e}"));
            return;
        }
    }
    for h in s.workers {
        if h.join().is_err() {
            c.fail("a worker thread panicked");
        }
    }
}
