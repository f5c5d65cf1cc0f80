//! Descriptors and process-wide file state: offsets, flags, pipes, `/dev/null`, a duplicated
//! descriptor, cwd, umask, rlimits.
//!
//! Checks after the wait:
//! - fd 3: `data.bin` read-write at offset 4321, no close-on-exec, same inode as the file;
//!   fd 100 a dup of it (no close-on-exec): same offset, and moving one moves the other;
//! - an `O_APPEND` write-only file with close-on-exec: a write after seeking to 0 still lands
//!   at the end;
//! - a pipe whose both ends it holds, with 3000 bytes buffered and a 128 KiB capacity: the
//!   bytes come out in order and the pipe still carries new ones;
//! - a second pipe whose read end is `O_NONBLOCK` (and write end is not): reading it empty
//!   gives EAGAIN;
//! - `/dev/null` read-write; fd 0 on `/dev/null`, fds 1 and 2 appending to the log;
//! - the cwd (a subdirectory of the state dir; a relative open finds the file put there);
//! - umask 027;
//! - RLIMIT_NOFILE (soft limit lowered to 256) and RLIMIT_CORE (changed).

use std::path::Path;

use crlab_workloads::protocol;
use crlab_workloads::runtime::{Checks, Workload};
use crlab_workloads::sys::{self, pattern, pattern_mismatch};

const DATA_FILE: &str = "data.bin";
const DATA_LEN: usize = 10_000;
const DATA_SEED: u64 = 0xda7a_f11e;
const DATA_OFFSET: i64 = 4321;
const DATA_FD: i32 = 3;
const DUP_FD: i32 = 100;
const APPEND_FILE: &str = "append.log";
const APPEND_BEFORE: &str = "before-the-wait\n";
const APPEND_AFTER: &str = "after-the-wait\n";
const PIPE_BYTES: usize = 3000;
const PIPE_SEED: u64 = 0x919e;
const PIPE_CAPACITY: i32 = 128 * 1024;
const SUBDIR: &str = "cwd";
const CWD_MARKER: &str = "marker";
const CWD_MARKER_TEXT: &str = "found-through-the-cwd";
const UMASK: libc::mode_t = 0o027;
const NOFILE_SOFT: u64 = 256;
const CORE_LIMIT: (u64, u64) = (400 * 1024, 800 * 1024);

fn open(w: &Workload, path: &Path, flags: i32) -> i32 {
    let c = sys::cstring(path);
    // SAFETY: `c` is a valid NUL-terminated path; the mode is used only with O_CREAT.
    let fd = unsafe { libc::open(c.as_ptr(), flags, 0o644) };
    w.setup(
        &format!("opening {}", path.display()),
        sys::check(fd.into()),
    ) as i32
}

fn pipe(w: &Workload, flags: i32) -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, a live [i32; 2].
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), flags) };
    w.setup("pipe2", sys::check(ret.into()));
    (fds[0], fds[1])
}

fn fcntl_set(fd: i32, cmd: i32, arg: i32) -> std::io::Result<i32> {
    // SAFETY: the commands used (F_SETFL, F_SETPIPE_SZ) take an integer argument.
    let ret = unsafe { libc::fcntl(fd, cmd, arg) };
    sys::check(ret.into()).map(|v| v as i32)
}

fn rlimit(resource: libc::__rlimit_resource_t) -> std::io::Result<(u64, u64)> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes one rlimit into `rl`.
    let ret = unsafe { libc::getrlimit(resource, &mut rl) };
    sys::check(ret.into()).map(|_| (rl.rlim_cur, rl.rlim_max))
}

fn set_rlimit(resource: libc::__rlimit_resource_t, (cur, max): (u64, u64)) -> std::io::Result<()> {
    let rl = libc::rlimit {
        rlim_cur: cur,
        rlim_max: max,
    };
    // SAFETY: setrlimit reads one rlimit from `rl`.
    let ret = unsafe { libc::setrlimit(resource, &rl) };
    sys::check(ret.into()).map(drop)
}

fn fionread(fd: i32) -> std::io::Result<i32> {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int into `n`.
    let ret = unsafe { libc::ioctl(fd, libc::FIONREAD, &mut n) };
    sys::check(ret.into()).map(|_| n)
}

fn main() {
    let mut w = Workload::from_args("files");
    let dir = w.state_dir().to_path_buf();

    // fd 3 at an offset, fd 100 duplicating it.
    let data_path = dir.join(DATA_FILE);
    let data = pattern(DATA_SEED, 0, DATA_LEN);
    w.setup("writing data.bin", std::fs::write(&data_path, &data));
    let fd = open(&w, &data_path, libc::O_RDWR);
    if fd != DATA_FD {
        // SAFETY: dup2 onto a descriptor number nothing else in this program uses.
        let ret = unsafe { libc::dup2(fd, DATA_FD) };
        w.setup("dup2 to fd 3", sys::check(ret.into()));
        // SAFETY: `fd` is ours and no longer needed.
        unsafe { libc::close(fd) };
    }
    w.setup(
        "lseek on fd 3",
        sys::lseek(DATA_FD, DATA_OFFSET, libc::SEEK_SET),
    );
    // SAFETY: dup2 onto a descriptor number nothing else in this program uses.
    let ret = unsafe { libc::dup2(DATA_FD, DUP_FD) };
    w.setup("dup2 to fd 100", sys::check(ret.into()));

    // O_APPEND with close-on-exec.
    let append_path = dir.join(APPEND_FILE);
    w.setup(
        "writing append.log",
        std::fs::write(&append_path, APPEND_BEFORE),
    );
    let append = open(
        &w,
        &append_path,
        libc::O_WRONLY | libc::O_APPEND | libc::O_CLOEXEC,
    );

    // A pipe with bytes buffered, and one with a non-blocking read end.
    let (pipe_r, pipe_w) = pipe(&w, 0);
    w.setup(
        "F_SETPIPE_SZ",
        fcntl_set(pipe_w, libc::F_SETPIPE_SZ, PIPE_CAPACITY),
    );
    let written = w.setup(
        "filling the pipe",
        sys::write(pipe_w, &pattern(PIPE_SEED, 0, PIPE_BYTES)),
    );
    if written != PIPE_BYTES {
        w.setup_failed("short write into the pipe");
    }
    let (nb_r, nb_w) = pipe(&w, libc::O_NONBLOCK);
    w.setup("clearing O_NONBLOCK", fcntl_set(nb_w, libc::F_SETFL, 0));

    // /dev/null.
    let null = open(&w, Path::new("/dev/null"), libc::O_RDWR);

    // cwd, umask, rlimits.
    let sub = dir.join(SUBDIR);
    w.setup("creating the cwd", std::fs::create_dir_all(&sub));
    w.setup(
        "writing the cwd marker",
        std::fs::write(sub.join(CWD_MARKER), CWD_MARKER_TEXT),
    );
    w.setup("chdir", std::env::set_current_dir(&sub));
    // SAFETY: umask cannot fail.
    unsafe { libc::umask(UMASK) };
    let (_, nofile_max) = w.setup("getrlimit(NOFILE)", rlimit(libc::RLIMIT_NOFILE));
    w.setup(
        "setrlimit(NOFILE)",
        set_rlimit(libc::RLIMIT_NOFILE, (NOFILE_SOFT, nofile_max)),
    );
    let (_, core_max) = w.setup("getrlimit(CORE)", rlimit(libc::RLIMIT_CORE));
    let core = if core_max >= CORE_LIMIT.1 {
        CORE_LIMIT
    } else {
        (CORE_LIMIT.0.min(core_max), core_max)
    };
    w.setup("setrlimit(CORE)", set_rlimit(libc::RLIMIT_CORE, core));
    let nofile = w.setup("getrlimit(NOFILE)", rlimit(libc::RLIMIT_NOFILE));
    let core = w.setup("getrlimit(CORE)", rlimit(libc::RLIMIT_CORE));
    let log_ino = w.setup(
        "stat of the log",
        std::fs::metadata(dir.join(protocol::LOG)),
    );

    let mut checks = w.wait();
    w.common_checks(&mut checks);

    check_data_fds(&mut checks, &data_path, &data);
    check_append(&mut checks, append, &append_path);
    check_pipes(&mut checks, (pipe_r, pipe_w), (nb_r, nb_w));
    check_null(&mut checks, "/dev/null descriptor", null, true);
    check_null(&mut checks, "fd 0", 0, false);
    for fd in [1, 2] {
        use std::os::unix::fs::MetadataExt;
        if let Some(flags) = checks.io("F_GETFL", sys::fcntl(fd, libc::F_GETFL)) {
            checks.that(
                flags & libc::O_APPEND != 0,
                &format!("fd {fd}: O_APPEND lost"),
            );
        }
        if let Some(st) = checks.io("fstat", sys::fstat(fd)) {
            checks.eq(
                &format!("fd {fd}: inode of the log"),
                log_ino.ino(),
                st.st_ino,
            );
        }
    }

    // cwd, umask, rlimits.
    if let Some(cwd) = checks.io("getcwd", std::env::current_dir()) {
        checks.eq("cwd", sub.as_path(), cwd.as_path());
    }
    if let Some(text) = checks.io(
        "reading the cwd marker by a relative path",
        std::fs::read_to_string(CWD_MARKER),
    ) {
        checks.eq("cwd marker", CWD_MARKER_TEXT, text.as_str());
    }
    if let Some(umask) = checks.io("reading the umask", sys::status_field("Umask")) {
        checks.eq("umask", "0027", umask.as_str());
    }
    if let Some(now) = checks.io("getrlimit(NOFILE)", rlimit(libc::RLIMIT_NOFILE)) {
        checks.eq("RLIMIT_NOFILE", nofile, now);
    }
    if let Some(now) = checks.io("getrlimit(CORE)", rlimit(libc::RLIMIT_CORE)) {
        checks.eq("RLIMIT_CORE", core, now);
    }
    w.finish(checks)
}

fn check_data_fds(checks: &mut Checks, path: &Path, data: &[u8]) {
    use std::os::unix::fs::MetadataExt;
    for fd in [DATA_FD, DUP_FD] {
        if let Some(fdflags) = checks.io("F_GETFD", sys::fcntl(fd, libc::F_GETFD)) {
            checks.eq(
                &format!("fd {fd}: close-on-exec"),
                0,
                fdflags & libc::FD_CLOEXEC,
            );
        }
        if let Some(flags) = checks.io("F_GETFL", sys::fcntl(fd, libc::F_GETFL)) {
            checks.eq(
                &format!("fd {fd}: access mode"),
                libc::O_RDWR,
                flags & libc::O_ACCMODE,
            );
        }
        if let (Some(st), Some(meta)) = (
            checks.io("fstat", sys::fstat(fd)),
            checks.io("stat data.bin", std::fs::metadata(path)),
        ) {
            checks.eq(
                &format!("fd {fd}: inode of data.bin"),
                meta.ino(),
                st.st_ino,
            );
        }
        if let Some(off) = checks.io("lseek", sys::lseek(fd, 0, libc::SEEK_CUR)) {
            checks.eq(&format!("fd {fd}: offset"), DATA_OFFSET, off);
        }
    }
    let mut buf = [0u8; 16];
    if let Some(n) = checks.io("reading fd 3", sys::read(DATA_FD, &mut buf)) {
        checks.eq(
            "bytes read from fd 3",
            &data[DATA_OFFSET as usize..DATA_OFFSET as usize + 16],
            &buf[..n],
        );
    }
    if let Some(off) = checks.io("lseek", sys::lseek(DUP_FD, 0, libc::SEEK_CUR)) {
        checks.eq("fd 100 offset after reading fd 3", DATA_OFFSET + 16, off);
    }
    if checks
        .io("lseek fd 100", sys::lseek(DUP_FD, 1000, libc::SEEK_SET))
        .is_some()
    {
        if let Some(off) = checks.io("lseek", sys::lseek(DATA_FD, 0, libc::SEEK_CUR)) {
            checks.eq("fd 3 offset after seeking fd 100", 1000, off);
        }
    }
    if let Some(now) = checks.io("reading data.bin", std::fs::read(path)) {
        checks.that(
            pattern_mismatch(DATA_SEED, 0, &now).is_none() && now.len() == data.len(),
            "data.bin changed",
        );
    }
}

fn check_append(checks: &mut Checks, fd: i32, path: &Path) {
    if let Some(fdflags) = checks.io("F_GETFD", sys::fcntl(fd, libc::F_GETFD)) {
        checks.eq(
            "append.log fd: close-on-exec",
            libc::FD_CLOEXEC,
            fdflags & libc::FD_CLOEXEC,
        );
    }
    if let Some(flags) = checks.io("F_GETFL", sys::fcntl(fd, libc::F_GETFL)) {
        checks.eq(
            "append.log fd: O_APPEND",
            libc::O_APPEND,
            flags & libc::O_APPEND,
        );
        checks.eq(
            "append.log fd: access mode",
            libc::O_WRONLY,
            flags & libc::O_ACCMODE,
        );
    }
    if checks
        .io("lseek append.log", sys::lseek(fd, 0, libc::SEEK_SET))
        .is_some()
        && checks
            .io(
                "writing append.log",
                sys::write(fd, APPEND_AFTER.as_bytes()),
            )
            .is_some()
    {
        if let Some(text) = checks.io("reading append.log", std::fs::read_to_string(path)) {
            checks.eq("append.log", format!("{APPEND_BEFORE}{APPEND_AFTER}"), text);
        }
    }
}

fn check_pipes(checks: &mut Checks, (r, w): (i32, i32), (nb_r, nb_w): (i32, i32)) {
    for (what, (r, w)) in [("pipe", (r, w)), ("non-blocking pipe", (nb_r, nb_w))] {
        if let (Some(a), Some(b)) = (
            checks.io("fstat", sys::fstat(r)),
            checks.io("fstat", sys::fstat(w)),
        ) {
            checks.that(
                a.st_ino == b.st_ino,
                &format!("{what}: the two ends are different pipes"),
            );
            checks.that(
                a.st_mode & libc::S_IFMT == libc::S_IFIFO,
                &format!("{what}: read end is no pipe"),
            );
        }
        if let Some(flags) = checks.io("F_GETFL", sys::fcntl(r, libc::F_GETFL)) {
            checks.eq(
                &format!("{what}: read end access mode"),
                libc::O_RDONLY,
                flags & libc::O_ACCMODE,
            );
        }
        if let Some(flags) = checks.io("F_GETFL", sys::fcntl(w, libc::F_GETFL)) {
            checks.eq(
                &format!("{what}: write end access mode"),
                libc::O_WRONLY,
                flags & libc::O_ACCMODE,
            );
            checks.eq(
                &format!("{what}: write end O_NONBLOCK"),
                0,
                flags & libc::O_NONBLOCK,
            );
        }
    }
    if let Some(size) = checks.io("F_GETPIPE_SZ", sys::fcntl(w, libc::F_GETPIPE_SZ)) {
        checks.eq("pipe capacity", PIPE_CAPACITY, size);
    }
    // Every read below is of a descriptor that would block if the restore lost what it
    // checks (the buffered bytes, O_NONBLOCK), and the workload holds the write ends itself,
    // so nothing would ever wake it: look first (FIONREAD, F_GETFL, poll) and read only what
    // cannot block, so a loss is named at once instead of costing the driver's timeout.
    let buffered = checks.io("FIONREAD on the pipe", fionread(r));
    if let Some(n) = buffered {
        if n != PIPE_BYTES as i32 {
            checks.fail(format!("pipe data: found {n} bytes, expected {PIPE_BYTES}"));
        }
    }
    let take = buffered.map_or(0, |n| (n.max(0) as usize).min(PIPE_BYTES));
    if take > 0 {
        let mut buf = vec![0u8; take];
        if let Some(n) = read_ready(checks, "pipe", r, &mut buf) {
            checks.eq("bytes read from the pipe", take, n);
            checks.that(
                pattern_mismatch(PIPE_SEED, 0, &buf[..n]).is_none(),
                "bytes read from the pipe differ",
            );
        }
    }
    // Drained (whatever was left of the 3000 bytes): new bytes must come through.
    if buffered.is_some_and(|n| n as usize == take)
        && checks
            .io("writing the pipe", sys::write(w, b"fresh"))
            .is_some()
    {
        let mut buf = [0u8; 16];
        if let Some(n) = read_ready(checks, "pipe after writing 5 bytes", r, &mut buf) {
            checks.eq("bytes through the pipe", &b"fresh"[..], &buf[..n]);
        }
    }
    let Some(flags) = checks.io("F_GETFL", sys::fcntl(nb_r, libc::F_GETFL)) else {
        return;
    };
    if flags & libc::O_NONBLOCK == 0 {
        checks.fail(format!(
            "non-blocking pipe: O_NONBLOCK lost on the read end (flags {flags:#o}; not reading \
             it, the read would block)"
        ));
        return;
    }
    if let Some(n) = checks.io("FIONREAD on the non-blocking pipe", fionread(nb_r)) {
        checks.eq("non-blocking pipe: bytes buffered", 0, n);
    }
    let mut byte = [0u8; 1];
    match sys::read(nb_r, &mut byte) {
        Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => {}
        other => checks.fail(format!(
            "non-blocking pipe: empty read gave {other:?}, expected EAGAIN"
        )),
    }
}

/// Reads `fd` into `buf` if that cannot block (poll says it is readable); otherwise records
/// that `what` had nothing to read.
fn read_ready(checks: &mut Checks, what: &str, fd: i32, buf: &mut [u8]) -> Option<usize> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: poll reads and writes one pollfd, a live local; a zero timeout never waits.
    let ret = unsafe { libc::poll(&mut pfd, 1, 0) };
    let ready = checks.io(&format!("poll on the {what}"), sys::check(ret.into()))?;
    if ready == 0 || pfd.revents & libc::POLLIN == 0 {
        checks.fail(format!(
            "{what}: nothing to read (poll revents {:#x}); not reading, the read would block",
            pfd.revents
        ));
        return None;
    }
    checks.io(&format!("reading the {what}"), sys::read(fd, buf))
}

fn check_null(checks: &mut Checks, what: &str, fd: i32, writable: bool) {
    if let Some(st) = checks.io("fstat", sys::fstat(fd)) {
        checks.that(
            st.st_mode & libc::S_IFMT == libc::S_IFCHR,
            &format!("{what}: not a character device"),
        );
        checks.eq(&format!("{what}: device"), libc::makedev(1, 3), st.st_rdev);
    }
    let mut buf = [0u8; 4];
    if let Some(n) = checks.io(&format!("reading {what}"), sys::read(fd, &mut buf)) {
        checks.eq(&format!("{what}: bytes read"), 0, n);
    }
    if writable {
        if let Some(n) = checks.io(&format!("writing {what}"), sys::write(fd, b"gone")) {
            checks.eq(&format!("{what}: bytes written"), 4, n);
        }
    }
}
