//! Thin wrappers over the system calls and `/proc/self` files the workloads read their state from.

use std::ffi::CString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

/// Turns a `-1` return into the `errno` error (kept raw, so callers can match on it; they
/// add what failed).
pub fn check(ret: libc::c_long) -> io::Result<libc::c_long> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// A path as a C string.
pub fn cstring(path: &Path) -> CString {
    // Paths built by the workloads never hold a NUL byte.
    CString::new(path.as_os_str().as_bytes()).unwrap_or_default()
}

/// `getpid()` straight from the kernel (no libc cache).
pub fn getpid() -> i32 {
    // SAFETY: getpid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_getpid) as i32 }
}

/// `gettid()` straight from the kernel.
pub fn gettid() -> i32 {
    // SAFETY: gettid takes no arguments and cannot fail.
    unsafe { libc::syscall(libc::SYS_gettid) as i32 }
}

/// The kernel's current program break (`brk(0)`), not libc's cached copy.
pub fn brk() -> u64 {
    // SAFETY: brk(0) asks for the current break and never moves it.
    unsafe { libc::syscall(libc::SYS_brk, 0usize) as u64 }
}

/// The calling thread's blocked signals (signals 1 to 64, bit n-1 for signal n).
pub fn sigmask() -> u64 {
    let mut set: u64 = 0;
    // SAFETY: rt_sigprocmask with a null new set only reads the mask into `set`, a valid u64
    // whose size we pass as the kernel's sigset size (8 bytes on x86_64).
    unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_BLOCK,
            std::ptr::null::<u64>(),
            &mut set as *mut u64,
            8usize,
        );
    }
    set
}

/// Replaces the calling thread's blocked signals.
pub fn set_sigmask(set: u64) -> io::Result<()> {
    // SAFETY: rt_sigprocmask reads 8 bytes from `set`, a valid u64, and writes nothing back
    // (null old set).
    let ret = unsafe {
        libc::syscall(
            libc::SYS_rt_sigprocmask,
            libc::SIG_SETMASK,
            &set as *const u64,
            std::ptr::null_mut::<u64>(),
            8usize,
        )
    };
    check(ret).map(drop)
}

/// The bit of signal `sig` in a 64-bit signal set.
pub fn sigbit(sig: i32) -> u64 {
    1u64 << (sig - 1)
}

/// The kernel's siginfo, with the fields of a queued (`SI_QUEUE`) signal named.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct RawSigInfo {
    /// Signal number.
    pub signo: i32,
    /// Error number (unused here).
    pub errno: i32,
    /// `SI_QUEUE`, `SI_USER`, ...
    pub code: i32,
    _pad: i32,
    /// Sender's pid.
    pub pid: i32,
    /// Sender's uid.
    pub uid: u32,
    /// The `sigval` the sender queued.
    pub value: u64,
    _rest: [u64; 12],
}

impl RawSigInfo {
    /// A `SI_QUEUE` siginfo as `sigqueue(3)` builds it.
    pub fn queued(signo: i32, value: u64) -> RawSigInfo {
        RawSigInfo {
            signo,
            errno: 0,
            code: libc::SI_QUEUE,
            _pad: 0,
            pid: getpid(),
            // SAFETY: getuid cannot fail.
            uid: unsafe { libc::getuid() },
            value,
            _rest: [0; 12],
        }
    }

    fn zeroed() -> RawSigInfo {
        RawSigInfo {
            signo: 0,
            errno: 0,
            code: 0,
            _pad: 0,
            pid: 0,
            uid: 0,
            value: 0,
            _rest: [0; 12],
        }
    }
}

const _: () = assert!(std::mem::size_of::<RawSigInfo>() == 128);

/// Queues `info` to the whole process (`rt_sigqueueinfo`): it lands in the shared pending queue.
pub fn queue_to_process(info: &RawSigInfo) -> io::Result<()> {
    // SAFETY: the kernel reads 128 bytes of siginfo from `info`, which is exactly that size.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_rt_sigqueueinfo,
            getpid(),
            info.signo,
            info as *const _,
        )
    };
    check(ret).map(drop)
}

/// Queues `info` to the calling thread (`rt_tgsigqueueinfo`): it lands in the thread's own queue.
pub fn queue_to_thread(info: &RawSigInfo) -> io::Result<()> {
    // SAFETY: the kernel reads 128 bytes of siginfo from `info`, which is exactly that size.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_rt_tgsigqueueinfo,
            getpid(),
            gettid(),
            info.signo,
            info as *const _,
        )
    };
    check(ret).map(drop)
}

/// Takes one pending signal of `set` without waiting (`rt_sigtimedwait` with a zero timeout).
/// `Ok(None)` when none is pending.
pub fn take_pending(set: u64) -> io::Result<Option<RawSigInfo>> {
    let mut info = RawSigInfo::zeroed();
    let zero = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: the kernel reads an 8-byte set from `set`, a 16-byte timespec from `zero`, and
    // writes at most 128 bytes of siginfo into `info`; all three are live locals.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_rt_sigtimedwait,
            &set as *const u64,
            &mut info as *mut RawSigInfo,
            &zero as *const libc::timespec,
            8usize,
        )
    };
    if ret == -1 {
        let e = io::Error::last_os_error();
        if e.raw_os_error() == Some(libc::EAGAIN) {
            return Ok(None);
        }
        return Err(e);
    }
    Ok(Some(info))
}

/// The `sigaction` of `sig` as the kernel holds it: (handler, flags, mask of signals 1-64).
pub fn sigaction_of(sig: i32) -> io::Result<(usize, u64, u64)> {
    // SAFETY: sigaction is plain data; all-zero is a valid value.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only reads the current one into `old`, a valid sigaction.
    let ret = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
    check(ret.into())?;
    let mut mask = 0u64;
    for s in 1..=64 {
        // SAFETY: `old.sa_mask` is an initialised sigset_t and `s` a valid signal number.
        if unsafe { libc::sigismember(&old.sa_mask, s) } == 1 {
            mask |= sigbit(s);
        }
    }
    Ok((old.sa_sigaction, old.sa_flags as u64, mask))
}

/// A `sigset_t` holding the signals of a 64-bit set.
pub fn sigset_of(bits: u64) -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it right after.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: `set` is a valid sigset_t.
    unsafe { libc::sigemptyset(&mut set) };
    for s in 1..=64 {
        if bits & sigbit(s) != 0 {
            // SAFETY: `set` is a valid sigset_t; glibc rejects its reserved signals with
            // EINVAL, which leaves the set unchanged.
            unsafe { libc::sigaddset(&mut set, s) };
        }
    }
    set
}

/// One line of `/proc/self/maps`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MapLine {
    /// First address.
    pub start: u64,
    /// One past the last address.
    pub end: u64,
    /// `rwxp`-style permissions.
    pub perms: String,
    /// The path or name column (empty for plain anonymous memory).
    pub path: String,
}

/// Parses `/proc/self/maps`.
pub fn maps() -> io::Result<Vec<MapLine>> {
    let text = std::fs::read_to_string("/proc/self/maps")?;
    let mut out = Vec::new();
    for line in text.lines() {
        let mut cols = line.split_whitespace();
        let range = cols.next().unwrap_or_default();
        let perms = cols.next().unwrap_or_default().to_owned();
        let path = cols.nth(3).unwrap_or_default().to_owned();
        let (start, end) = range.split_once('-').unwrap_or(("0", "0"));
        out.push(MapLine {
            start: u64::from_str_radix(start, 16).unwrap_or(0),
            end: u64::from_str_radix(end, 16).unwrap_or(0),
            perms,
            path,
        });
    }
    Ok(out)
}

/// The maps line holding `addr`.
pub fn mapping_at(addr: u64) -> io::Result<Option<MapLine>> {
    Ok(maps()?
        .into_iter()
        .find(|m| m.start <= addr && addr < m.end))
}

/// The value of a `Key:` line of `/proc/self/status`, trimmed.
pub fn status_field(key: &str) -> io::Result<String> {
    let text = std::fs::read_to_string("/proc/self/status")?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .map(|v| v.trim().to_owned())
        .ok_or_else(|| io::Error::other(format!("/proc/self/status has no {key} line")))
}

/// The fields of `/proc/self/stat`, numbered as in proc(5) (index 0 is field 1, the pid).
pub fn stat_fields() -> io::Result<Vec<String>> {
    let text = std::fs::read_to_string("/proc/self/stat")?;
    let close = text
        .rfind(')')
        .ok_or_else(|| io::Error::other("/proc/self/stat has no ')'"))?;
    let (head, tail) = text.split_at(close + 1);
    let mut fields: Vec<String> = head.splitn(2, ' ').map(str::to_owned).collect();
    fields.extend(tail.split_whitespace().map(str::to_owned));
    Ok(fields)
}

/// Open descriptors of this process with what they point at, pipe and socket inode numbers
/// dropped (`pipe:[123]` becomes `pipe`), so two listings compare across a restore.
pub fn fd_table() -> io::Result<Vec<(i32, String)>> {
    let mut out = Vec::new();
    let dir_self = format!("/proc/{}/fd", getpid());
    for entry in std::fs::read_dir("/proc/self/fd")? {
        let entry = entry?;
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(target) = std::fs::read_link(entry.path()) else {
            continue; // the directory's own descriptor, closed by now
        };
        let target = target.to_string_lossy().into_owned();
        if target == dir_self {
            continue; // the descriptor read_dir itself holds
        }
        let kind = match target.split_once(":[") {
            Some((kind, _)) => kind.to_owned(),
            None => target,
        };
        out.push((fd, kind));
    }
    out.sort();
    Ok(out)
}

/// `fcntl(fd, cmd)` returning the integer result.
pub fn fcntl(fd: i32, cmd: i32) -> io::Result<i32> {
    // SAFETY: the fcntl commands used here (F_GETFL, F_GETFD, F_GETPIPE_SZ) take no argument
    // and only return a value.
    let ret = unsafe { libc::fcntl(fd, cmd) };
    check(ret.into()).map(|v| v as i32)
}

/// `fstat(fd)`.
pub fn fstat(fd: i32) -> io::Result<libc::stat> {
    // SAFETY: stat is plain data; all-zero is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `st` is a valid, writable stat buffer.
    let ret = unsafe { libc::fstat(fd, &mut st) };
    check(ret.into()).map(|_| st)
}

/// `lseek(fd, off, whence)`.
pub fn lseek(fd: i32, off: i64, whence: i32) -> io::Result<i64> {
    // SAFETY: lseek only acts on the descriptor table entry; no memory is passed.
    let ret = unsafe { libc::lseek(fd, off, whence) };
    check(ret)
}

/// `read(fd)` into `buf`, returning the count.
pub fn read(fd: i32, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: the kernel writes at most buf.len() bytes into `buf`, which is writable.
    let ret = unsafe { libc::read(fd, buf.as_mut_ptr().cast(), buf.len()) };
    check(ret as libc::c_long).map(|n| n as usize)
}

/// `write(fd, buf)`, returning the count.
pub fn write(fd: i32, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: the kernel reads at most buf.len() bytes from `buf`, which is readable.
    let ret = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
    check(ret as libc::c_long).map(|n| n as usize)
}

/// Writes `contents` to `path` through a temporary file and a rename, so a reader sees all of
/// it or nothing.
pub fn write_atomically(path: &Path, contents: &[u8]) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    std::fs::write(&tmp, contents)?;
    std::fs::rename(&tmp, path)
}

/// A deterministic byte pattern: byte `i` of the stream called `seed`.
pub fn pattern_byte(seed: u64, i: usize) -> u8 {
    let mut x = seed ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^= x >> 29;
    (x >> 24) as u8
}

/// `len` bytes of the pattern called `seed`, starting at byte `from`.
pub fn pattern(seed: u64, from: usize, len: usize) -> Vec<u8> {
    (from..from + len).map(|i| pattern_byte(seed, i)).collect()
}

/// The index of the first byte where `got` differs from the pattern `seed` starting at `from`.
pub fn pattern_mismatch(seed: u64, from: usize, got: &[u8]) -> Option<usize> {
    got.iter()
        .enumerate()
        .find(|&(i, &b)| b != pattern_byte(seed, from + i))
        .map(|(i, _)| i)
}

/// Writes `value` to the calling thread's `/proc/thread-self/attr/NAME` (`exec`, `fscreate`,
/// `keycreate`, `sockcreate`, `current`). A NUL clears it: a write of no bytes never reaches
/// the kernel through `write_all`. Opened without `O_CREAT`, which SELinux audits as a file
/// creation in `/proc` (and refpolicy denies) though the file exists.
pub fn write_attr(name: &str, value: &[u8]) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/thread-self/attr/{name}"))
        .and_then(|mut f| std::io::Write::write_all(&mut f, value))
        .map_err(|e| io::Error::new(e.kind(), format!("writing attr/{name}: {e}")))
}

/// Keyrings (`<linux/keyctl.h>`): the commands and special serials the workloads use, and
/// the calls they make.
pub mod keys {
    use std::ffi::CStr;
    use std::io;

    pub const KEYCTL_GET_KEYRING_ID: libc::c_long = 0;
    pub const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    pub const KEYCTL_SETPERM: libc::c_long = 5;
    pub const KEYCTL_DESCRIBE: libc::c_long = 6;
    pub const KEYCTL_READ: libc::c_long = 11;
    pub const KEYCTL_SET_TIMEOUT: libc::c_long = 15;
    pub const KEYCTL_GET_SECURITY: libc::c_long = 17;
    pub const KEY_SPEC_THREAD_KEYRING: libc::c_long = -1;
    pub const KEY_SPEC_PROCESS_KEYRING: libc::c_long = -2;
    pub const KEY_SPEC_SESSION_KEYRING: libc::c_long = -3;

    /// Joins the session keyring `name`, made if no keyring of that name may be found; a new
    /// anonymous one (`_ses`) for none. Returns its serial.
    pub fn join_session_keyring(name: Option<&CStr>) -> io::Result<libc::c_long> {
        let name = name.map_or(std::ptr::null(), CStr::as_ptr);
        // SAFETY: the kernel reads the NUL-terminated name (if any) during the call.
        super::check(unsafe { libc::syscall(libc::SYS_keyctl, KEYCTL_JOIN_SESSION_KEYRING, name) })
    }

    /// Adds a key of type `kind` (`user`, `logon`, `keyring`) with `payload` to `ring`;
    /// returns its serial.
    pub fn add_key(
        kind: &CStr,
        desc: &CStr,
        payload: &[u8],
        ring: libc::c_long,
    ) -> io::Result<libc::c_long> {
        let data = if payload.is_empty() {
            std::ptr::null()
        } else {
            payload.as_ptr()
        };
        // SAFETY: add_key reads the NUL-terminated type and description and the `payload`
        // bytes during the call.
        super::check(unsafe {
            libc::syscall(
                libc::SYS_add_key,
                kind.as_ptr(),
                desc.as_ptr(),
                data,
                payload.len(),
                ring,
            )
        })
    }

    /// A `keyctl` command that takes integers only (`KEYCTL_GET_KEYRING_ID`,
    /// `KEYCTL_SETPERM`, ...).
    pub fn keyctl(cmd: libc::c_long, a: libc::c_long, b: libc::c_long) -> io::Result<libc::c_long> {
        // SAFETY: these commands take integers only and write no memory of ours.
        super::check(unsafe { libc::syscall(libc::SYS_keyctl, cmd, a, b) })
    }

    /// `KEYCTL_DESCRIBE`, `KEYCTL_READ` or `KEYCTL_GET_SECURITY` of `key`: at most 4096 bytes.
    pub fn keyctl_buf(cmd: libc::c_long, key: libc::c_long) -> io::Result<Vec<u8>> {
        let mut buf = vec![0u8; 4096];
        // SAFETY: the call writes at most `buf.len()` bytes into `buf`.
        let n = super::check(unsafe {
            libc::syscall(libc::SYS_keyctl, cmd, key, buf.as_mut_ptr(), buf.len())
        })?;
        buf.truncate(usize::try_from(n).unwrap_or(0).min(4096));
        Ok(buf)
    }

    /// `keyctl_buf` as text, without its NUL (a description, a label).
    pub fn keyctl_text(cmd: libc::c_long, key: libc::c_long) -> io::Result<String> {
        let b = keyctl_buf(cmd, key)?;
        Ok(String::from_utf8_lossy(&b)
            .trim_end_matches('\0')
            .to_string())
    }
}
