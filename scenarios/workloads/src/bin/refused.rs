//! Holds one piece of state that crlab does not restore, for the refusal tests: the dump must
//! refuse it by name, before anything is killed, and leave this workload running as it was.
//! The kind is the first argument:
//!
//! - `flock`, `posix-lock`, `ofd-lock`, `lease`: a lock or lease on `locked.bin`;
//! - `owner`, `setsig`, `async`: a pipe end with an I/O owner (`F_SETOWN`), an I/O signal
//!   (`F_SETSIG`) or in `O_ASYNC` mode;
//! - `memfd`: a shared mapping of a memfd (the memfd's descriptor alone is restored);
//!   `deleted-dir`: a descriptor of a deleted directory;
//! - `deleted-reused`: a descriptor of a deleted file whose path now names another file;
//!   `deleted-dir-gone`: of a deleted file whose directory was removed too (the name a restore
//!   would give it could not be its own); `deleted-mapping-reused`: a shared mapping of a
//!   deleted file (its descriptor closed) whose path now names another file; `deleted-large`:
//!   a deleted file of 65 MiB (sparse), above what a dump keeps; `aio`: an AIO context
//!   (`io_setup`), whose ring is a mapping of a kernel-internal file;
//! - `deleted-cwd`: a working directory that was deleted;
//! - `seccomp`: an allow-all seccomp filter;
//! - `loginuid`: an audit login uid (1000) that crlab, started by the tests, does not have;
//! - `namespace`: a UTS namespace of its own (`unshare`);
//! - `pdeathsig-root`: a parent-death signal on the root, whose parent is not dumped;
//! - `clone-files`, `clone-fs`: a child made by `clone` sharing the descriptor table or the
//!   filesystem information;
//! - `chroot`: a child that changed its root to the state directory;
//! - `shared-moved`: a child that moved a shared anonymous mapping made by the root to another
//!   address;
//! - `logon-key`: a new session keyring of its own, `crlab-refused`, holding a `user` key
//!   `invocation_id` as systemd gives a service and a `logon` key `crlab:secret`, whose payload
//!   nobody can read back, shared by a child; `thread-keyring`, `process-keyring`: a thread or
//!   process keyring (`KEYCTL_GET_KEYRING_ID` with `create`); `thread-session-keyring`: a
//!   thread that joined a session keyring of its own, `crlab-thread` (credentials are per
//!   thread), then sleeps; `unsearchable-keyring`: a new session keyring whose permissions
//!   (`37370000`) let nobody search it, as SELinux may deny a process its own keyring;
//!   `nested-keyring`: a new session keyring `crlab-refused` holding a keyring `crlab-nested`;
//!   `key-timeout`: a new session keyring `crlab-refused` holding a `user` key that expires
//!   in an hour (`KEYCTL_SET_TIMEOUT`);
//! - `pidfd`, `io-uring`, `perf-event` (a software counter on itself), `fanotify`, `fsopen` (a
//!   mount API context), `landlock` (a ruleset), `bpf-map` (an array map), `memfd-secret`: a
//!   descriptor of an anonymous-inode kind (or a secret memory file) crlab does not restore;
//! - `sysv-shm`: an attached System V shared memory segment, removed (`IPC_RMID`) once
//!   attached so it goes with the workload;
//! - `securebits`: the securebit `SECBIT_NOROOT`; `sched-deadline`: the `SCHED_DEADLINE`
//!   policy (with reset-on-fork).
//!
//! Announces `refused-pid` (the process holding the state) and, for the descriptor kinds,
//! `refused-fd`. Once triggered it checks the state is still there where that can be seen (the
//! lock, the owner, the timer, the segment's byte, the securebits, the policy, the keyring),
//! ends its children and makes the common checks (which compare the descriptor table).

use std::io;

use crlab_workloads::runtime::{Checks, Workload};
use crlab_workloads::sys::{
    self,
    keys::{
        self, KEYCTL_DESCRIBE, KEYCTL_GET_KEYRING_ID, KEYCTL_READ, KEYCTL_SETPERM,
        KEYCTL_SET_TIMEOUT, KEY_SPEC_PROCESS_KEYRING, KEY_SPEC_SESSION_KEYRING,
        KEY_SPEC_THREAD_KEYRING,
    },
};

const PAGE: usize = 4096;
/// `fcntl` commands of `<linux/fcntl.h>` that the libc crate lacks.
const F_SETSIG: i32 = 10;
const F_GETSIG: i32 = 11;
/// Every permission but search, for possessor and owner.
const UNSEARCHABLE: libc::c_long = 0x3737_0000;
/// `SECBIT_NOROOT` of `<linux/securebits.h>`.
const SECBIT_NOROOT: libc::c_ulong = 1;
/// `SCHED_DEADLINE` and `SCHED_FLAG_RESET_ON_FORK` of `<linux/sched.h>`; `SCHED_RESET_ON_FORK`,
/// the bit `sched_getscheduler` adds.
const SCHED_DEADLINE: u32 = 6;
const SCHED_FLAG_RESET_ON_FORK: u64 = 1;
const SCHED_RESET_ON_FORK: i32 = 0x4000_0000;
/// The byte `sysv-shm` writes into its segment.
const SHM_BYTE: u8 = 0x5a;
/// The session keyring `logon-key` and `nested-keyring` join.
const SESSION_NAME: &str = "crlab-refused";
const SESSION_C: &std::ffi::CStr = c"crlab-refused";

/// `struct sched_attr` of `<linux/sched/types.h>` (its first version, 48 bytes).
#[repr(C)]
struct SchedAttr {
    size: u32,
    policy: u32,
    flags: u64,
    nice: i32,
    priority: u32,
    runtime: u64,
    deadline: u64,
    period: u64,
}

/// What the root must end once triggered: a child, and how it ends.
enum Child {
    None,
    /// Killed with SIGKILL and reaped.
    Kill(i32),
}

/// The state set up, for the checks after the trigger.
struct Held {
    holder: i32,
    fd: Option<i32>,
    /// The address of the attached SysV segment (`sysv-shm`).
    shm: Option<usize>,
    child: Child,
}

fn main() {
    let mut w = Workload::from_args("refused");
    let kind = w.args().first().cloned().unwrap_or_default();
    let held = match set_up(&w, &kind) {
        Ok(h) => h,
        Err(e) => w.setup_failed(&format!("{kind}: {e}")),
    };
    w.announce("refused-kind", &kind);
    w.announce("refused-pid", held.holder);
    if let Some(fd) = held.fd {
        w.announce("refused-fd", fd);
    }
    let mut checks = w.wait();
    w.common_checks(&mut checks);
    still_held(&mut checks, &kind, &held);
    end_child(&mut checks, &held.child);
    w.finish(checks)
}

fn set_up(w: &Workload, kind: &str) -> io::Result<Held> {
    let me = sys::getpid();
    let mut held = Held {
        holder: me,
        fd: None,
        shm: None,
        child: Child::None,
    };
    match kind {
        "flock" | "posix-lock" | "ofd-lock" | "lease" => {
            let path = w.path("locked.bin");
            std::fs::write(&path, b"locked")?;
            let c = sys::cstring(&path);
            let mode = if kind == "lease" {
                libc::O_RDONLY
            } else {
                libc::O_RDWR
            };
            // SAFETY: `c` is a valid NUL-terminated path.
            let fd = sys::check(unsafe { libc::open(c.as_ptr(), mode) }.into())? as i32;
            match kind {
                // SAFETY: flock takes only integers.
                "flock" => sys::check(unsafe { libc::flock(fd, libc::LOCK_EX) }.into())?,
                "lease" => {
                    // SAFETY: F_SETLEASE takes an integer argument.
                    sys::check(unsafe { libc::fcntl(fd, libc::F_SETLEASE, libc::F_RDLCK) }.into())?
                }
                _ => {
                    // SAFETY: flock is plain data; all-zero is a valid value.
                    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
                    fl.l_type = libc::F_WRLCK as i16;
                    fl.l_whence = libc::SEEK_SET as i16;
                    fl.l_len = 3;
                    let cmd = if kind == "ofd-lock" {
                        libc::F_OFD_SETLK
                    } else {
                        libc::F_SETLK
                    };
                    // SAFETY: `fl` is a valid struct flock the kernel reads.
                    sys::check(unsafe { libc::fcntl(fd, cmd, &fl) }.into())?
                }
            };
            held.fd = Some(fd);
        }
        "owner" | "setsig" | "async" => {
            let mut fds = [0i32; 2];
            // SAFETY: pipe2 writes two descriptors into `fds`, a live [i32; 2].
            sys::check(unsafe { libc::pipe2(fds.as_mut_ptr(), 0) }.into())?;
            let fd = fds[0];
            match kind {
                // SAFETY: F_SETOWN takes an integer argument.
                "owner" => sys::check(unsafe { libc::fcntl(fd, libc::F_SETOWN, me) }.into())?,
                // SAFETY: F_SETSIG takes an integer argument.
                "setsig" => sys::check(unsafe { libc::fcntl(fd, F_SETSIG, libc::SIGUSR1) }.into())?,
                _ => {
                    let flags = sys::fcntl(fd, libc::F_GETFL)?;
                    // SAFETY: F_SETFL takes an integer argument.
                    let ret = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_ASYNC) };
                    sys::check(ret.into())?
                }
            };
            held.fd = Some(fd);
        }
        "memfd" => {
            // SAFETY: the name is a valid NUL-terminated string.
            let fd = unsafe { libc::memfd_create(c"crlab-refused".as_ptr(), 0) };
            let fd = sys::check(fd.into())? as i32;
            // SAFETY: ftruncate takes integers only; `fd` is the memfd just made.
            sys::check(unsafe { libc::ftruncate(fd, PAGE as libc::off_t) }.into())?;
            // SAFETY: a fresh shared mapping of the memfd's one page, placed by the kernel.
            let addr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            if addr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
        }
        "deleted-dir" => {
            let dir = w.path("gone-dir");
            std::fs::create_dir(&dir)?;
            let c = sys::cstring(&dir);
            // SAFETY: `c` is a valid NUL-terminated path.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_DIRECTORY) };
            held.fd = Some(sys::check(fd.into())? as i32);
            std::fs::remove_dir(&dir)?;
        }
        "deleted-mapping-reused" => {
            let path = w.path("mapped-held.bin");
            std::fs::write(&path, vec![7u8; PAGE])?;
            let c = sys::cstring(&path);
            // SAFETY: `c` is a valid NUL-terminated path.
            let fd = sys::check(unsafe { libc::open(c.as_ptr(), libc::O_RDWR) }.into())? as i32;
            // SAFETY: a fresh shared mapping placed by the kernel.
            let addr = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    PAGE,
                    libc::PROT_READ,
                    libc::MAP_SHARED,
                    fd,
                    0,
                )
            };
            // SAFETY: closes our own descriptor; the mapping stays.
            unsafe { libc::close(fd) };
            if addr == libc::MAP_FAILED {
                return Err(io::Error::last_os_error());
            }
            std::fs::remove_file(&path)?;
            std::fs::write(&path, b"another file at its path")?;
        }
        "aio" => {
            let mut ctx: libc::c_ulong = 0;
            // SAFETY: io_setup writes the new context's id into `ctx`, ours.
            let ret = unsafe { libc::syscall(libc::SYS_io_setup, 1, &mut ctx) };
            sys::check(ret)?;
        }
        "deleted-large" => {
            let path = w.path("large.bin");
            let file = std::fs::File::create(&path)?;
            file.set_len(65 << 20)?;
            drop(file);
            let c = sys::cstring(&path);
            // SAFETY: `c` is a valid NUL-terminated path.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
            held.fd = Some(sys::check(fd.into())? as i32);
            std::fs::remove_file(&path)?;
        }
        "deleted-reused" | "deleted-dir-gone" => {
            let dir = w.path("held-dir");
            std::fs::create_dir(&dir)?;
            let path = dir.join("held.bin");
            std::fs::write(&path, b"the file held")?;
            let c = sys::cstring(&path);
            // SAFETY: `c` is a valid NUL-terminated path.
            let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) };
            held.fd = Some(sys::check(fd.into())? as i32);
            std::fs::remove_file(&path)?;
            if kind == "deleted-reused" {
                std::fs::write(&path, b"another file at its path")?;
            } else {
                std::fs::remove_dir(&dir)?;
            }
        }
        "deleted-cwd" => {
            let dir = w.path("gone-cwd");
            std::fs::create_dir(&dir)?;
            std::env::set_current_dir(&dir)?;
            std::fs::remove_dir(&dir)?;
        }
        "loginuid" => std::fs::write("/proc/self/loginuid", "1000")?,
        "namespace" => {
            // SAFETY: unshare takes an integer only; the UTS namespace is this process's.
            sys::check(unsafe { libc::unshare(libc::CLONE_NEWUTS) }.into())?;
        }
        "pdeathsig-root" => {
            // SAFETY: PR_SET_PDEATHSIG takes an integer only.
            let ret =
                unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGUSR2 as libc::c_ulong) };
            sys::check(ret.into())?;
        }
        "seccomp" => {
            // One instruction: return SECCOMP_RET_ALLOW.
            let allow = [libc::sock_filter {
                code: (libc::BPF_RET | libc::BPF_K) as u16,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            }];
            let prog = libc::sock_fprog {
                len: 1,
                filter: allow.as_ptr().cast_mut(),
            };
            // SAFETY: `prog` points at a valid one-instruction filter, read during the call.
            let ret = unsafe {
                libc::prctl(
                    libc::PR_SET_SECCOMP,
                    libc::SECCOMP_MODE_FILTER,
                    &prog as *const libc::sock_fprog,
                )
            };
            sys::check(ret.into())?;
        }
        "clone-files" | "clone-fs" => {
            let flag = if kind == "clone-files" {
                libc::CLONE_FILES
            } else {
                libc::CLONE_FS
            };
            // SAFETY: a clone without CLONE_VM and without a new stack is a fork that also
            // shares `flag`; the child only pauses (async-signal-safe) until it is killed.
            let pid = unsafe {
                libc::syscall(
                    libc::SYS_clone,
                    (flag | libc::SIGCHLD) as libc::c_ulong,
                    0usize,
                    0usize,
                    0usize,
                    0usize,
                )
            };
            let pid = sys::check(pid)? as i32;
            if pid == 0 {
                pause_forever();
            }
            held.holder = pid;
            held.child = Child::Kill(pid);
        }
        "chroot" => {
            let dir = sys::cstring(w.state_dir());
            let mut fds = [0i32; 2];
            // SAFETY: pipe2 writes two descriptors into `fds`, a live [i32; 2].
            sys::check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }.into())?;
            let pid = fork()?;
            if pid == 0 {
                // SAFETY: `dir` is a valid NUL-terminated path; chroot, write and pause are
                // async-signal-safe. The byte says the root has changed (the ready file must
                // not come before).
                unsafe {
                    let done = [u8::from(libc::chroot(dir.as_ptr()) == 0)];
                    libc::write(fds[1], done.as_ptr().cast(), 1);
                }
                pause_forever();
            }
            // SAFETY: closes our copy of the write end.
            unsafe { libc::close(fds[1]) };
            let mut done = [0u8; 1];
            let n = sys::read(fds[0], &mut done)?;
            // SAFETY: closes the read end, used up.
            unsafe { libc::close(fds[0]) };
            held.holder = pid;
            held.child = Child::Kill(pid);
            if (n, done[0]) != (1, 1) {
                return Err(io::Error::other("the child could not change its root"));
            }
        }
        "shared-moved" => {
            let addr = map_anon(libc::MAP_SHARED)?;
            // SAFETY: `addr` is a fresh page of ours.
            unsafe { std::ptr::write_volatile(addr.cast::<u8>(), 7) };
            let (mut fds, ready) = ([0i32; 2], [1u8]);
            // SAFETY: pipe2 writes two descriptors into `fds`, a live [i32; 2].
            sys::check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }.into())?;
            // Where the child moves it: a hole reserved now, so the address is free there.
            let to = map_anon(libc::MAP_PRIVATE)?;
            let pid = fork()?;
            if pid == 0 {
                // SAFETY: moves our own copy of the shared page onto our own reservation;
                // write and pause are async-signal-safe.
                unsafe {
                    let moved = libc::mremap(
                        addr,
                        PAGE,
                        PAGE,
                        libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED,
                        to,
                    );
                    if moved != to {
                        libc::_exit(3);
                    }
                    libc::write(fds[1], ready.as_ptr().cast(), 1);
                }
                pause_forever();
            }
            // SAFETY: closes our copy of the write end.
            unsafe { libc::close(fds[1]) };
            let mut buf = [0u8; 1];
            let n = sys::read(fds[0], &mut buf)?;
            // SAFETY: closes the read end, used up.
            unsafe { libc::close(fds[0]) };
            if n != 1 {
                return Err(io::Error::other("the child did not move the shared page"));
            }
            held.holder = pid;
            held.child = Child::Kill(pid);
        }
        "logon-key" => {
            keys::join_session_keyring(Some(SESSION_C))?;
            let ring = KEY_SPEC_SESSION_KEYRING;
            keys::add_key(c"user", c"invocation_id", &[0x5au8; 16], ring)?;
            keys::add_key(c"logon", c"crlab:secret", b"not readable", ring)?;
            // A child shares it (its cred is copied at fork).
            let pid = fork()?;
            if pid == 0 {
                pause_forever();
            }
            held.child = Child::Kill(pid);
        }
        "thread-session-keyring" => {
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                // It changes this thread's credentials only.
                let r = keys::join_session_keyring(Some(c"crlab-thread"));
                let _ = tx.send(r.map(drop));
                loop {
                    std::thread::sleep(std::time::Duration::from_secs(3600));
                }
            });
            rx.recv().map_err(io::Error::other)??;
        }
        "unsearchable-keyring" => {
            keys::join_session_keyring(None)?;
            keys::keyctl(KEYCTL_SETPERM, KEY_SPEC_SESSION_KEYRING, UNSEARCHABLE)?;
        }
        "thread-keyring" | "process-keyring" => {
            let spec = if kind == "thread-keyring" {
                KEY_SPEC_THREAD_KEYRING
            } else {
                KEY_SPEC_PROCESS_KEYRING
            };
            // `create`: the keyring is made.
            keys::keyctl(KEYCTL_GET_KEYRING_ID, spec, 1)?;
        }
        "pidfd" | "io-uring" | "perf-event" | "fanotify" | "fsopen" | "landlock" | "bpf-map"
        | "memfd-secret" => held.fd = Some(anon_fd(kind)?),
        "sysv-shm" => {
            // SAFETY: shmget takes integers only.
            let id = sys::check(
                unsafe { libc::shmget(libc::IPC_PRIVATE, PAGE, libc::IPC_CREAT | 0o600) }.into(),
            )? as i32;
            // SAFETY: attaches the fresh segment where the kernel places it.
            let addr = unsafe { libc::shmat(id, std::ptr::null(), 0) };
            // Removed at once, attached or not: the segment goes with its last detach, so none
            // outlives the workload, however it ends. Its mapping stays (`/SYSV… (deleted)`).
            // SAFETY: IPC_RMID reads no buffer.
            let removed = unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
            if addr as isize == -1 {
                return Err(io::Error::last_os_error());
            }
            sys::check(removed.into())?;
            // SAFETY: `addr` is the segment's first page, attached read-write just now.
            unsafe { std::ptr::write_volatile(addr.cast::<u8>(), SHM_BYTE) };
            held.shm = Some(addr as usize);
        }
        "securebits" => {
            // SAFETY: PR_SET_SECUREBITS takes an integer only.
            let ret = unsafe { libc::prctl(libc::PR_SET_SECUREBITS, SECBIT_NOROOT) };
            sys::check(ret.into())?;
        }
        "sched-deadline" => {
            let attr = SchedAttr {
                size: std::mem::size_of::<SchedAttr>() as u32,
                policy: SCHED_DEADLINE,
                flags: SCHED_FLAG_RESET_ON_FORK,
                nice: 0,
                priority: 0,
                runtime: 1_000_000,
                deadline: 10_000_000,
                period: 10_000_000,
            };
            // SAFETY: sched_setattr reads `attr`, a valid struct sched_attr, during the call.
            let ret = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &attr, 0) };
            sys::check(ret)?;
        }
        "key-timeout" => {
            keys::join_session_keyring(Some(SESSION_C))?;
            let key = keys::add_key(c"user", c"crlab:expires", b"soon", KEY_SPEC_SESSION_KEYRING)?;
            keys::keyctl(KEYCTL_SET_TIMEOUT, key, 3600)?;
        }
        "nested-keyring" => {
            keys::join_session_keyring(Some(SESSION_C))?;
            keys::add_key(c"keyring", c"crlab-nested", &[], KEY_SPEC_SESSION_KEYRING)?;
        }
        other => {
            return Err(io::Error::other(format!(
                "unknown kind {other:?}: see the module documentation"
            )))
        }
    }
    Ok(held)
}

/// A descriptor of an anonymous-inode kind crlab does not restore, made in this process.
fn anon_fd(kind: &str) -> io::Result<i32> {
    let ret = match kind {
        // SAFETY: pidfd_open takes integers only; the pidfd is of this process.
        "pidfd" => unsafe { libc::syscall(libc::SYS_pidfd_open, sys::getpid(), 0) },
        "io-uring" => {
            // struct io_uring_params, 120 bytes, all zero: the kernel fills in its answer.
            let mut params = [0u64; 15];
            // SAFETY: io_uring_setup reads and writes `params`, ours, during the call.
            unsafe { libc::syscall(libc::SYS_io_uring_setup, 4, params.as_mut_ptr()) }
        }
        "perf-event" => {
            // struct perf_event_attr of its first size (64 bytes): a software task-clock
            // counter, disabled, user time only.
            const PERF_TYPE_SOFTWARE: u64 = 1;
            const PERF_COUNT_SW_TASK_CLOCK: u64 = 1;
            const DISABLED_EXCLUDE_KERNEL_HV: u64 = 1 | 1 << 5 | 1 << 6;
            let attr: [u64; 8] = [
                PERF_TYPE_SOFTWARE | 64 << 32,
                PERF_COUNT_SW_TASK_CLOCK,
                0,
                0,
                0,
                DISABLED_EXCLUDE_KERNEL_HV,
                0,
                0,
            ];
            // SAFETY: perf_event_open reads `attr` during the call; the counter is of this
            // process (pid 0) on any CPU (-1), in no group (-1).
            unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0) }
        }
        // SAFETY: fanotify_init takes integers only (FAN_CLASS_NOTIF, O_RDONLY).
        "fanotify" => unsafe { libc::syscall(libc::SYS_fanotify_init, 0, 0) },
        // SAFETY: fsopen reads the NUL-terminated filesystem name during the call.
        "fsopen" => unsafe { libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 0) },
        "landlock" => {
            // struct landlock_ruleset_attr, its first field: handles LANDLOCK_ACCESS_FS_READ_FILE.
            let attr = [1u64 << 2];
            // SAFETY: landlock_create_ruleset reads the 8 bytes of `attr` during the call.
            unsafe { libc::syscall(libc::SYS_landlock_create_ruleset, attr.as_ptr(), 8, 0) }
        }
        "bpf-map" => {
            // union bpf_attr for BPF_MAP_CREATE: an array map of one 4-byte value.
            const BPF_MAP_CREATE: i32 = 0;
            const BPF_MAP_TYPE_ARRAY: u32 = 2;
            let attr: [u32; 8] = [BPF_MAP_TYPE_ARRAY, 4, 4, 1, 0, 0, 0, 0];
            // SAFETY: bpf reads the 32 bytes of `attr` during the call.
            unsafe { libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, attr.as_ptr(), 32) }
        }
        // SAFETY: memfd_secret takes flags only.
        "memfd-secret" => unsafe { libc::syscall(libc::SYS_memfd_secret, 0) },
        other => return Err(io::Error::other(format!("no descriptor kind {other:?}"))),
    };
    sys::check(ret).map(|fd| fd as i32)
}

fn fork() -> io::Result<i32> {
    // SAFETY: the workload is single-threaded; the child only makes async-signal-safe calls.
    let pid = unsafe { libc::fork() };
    sys::check(pid.into()).map(|p| p as i32)
}

fn pause_forever() -> ! {
    loop {
        // SAFETY: pause takes no argument.
        unsafe { libc::pause() };
    }
}

fn map_anon(share: i32) -> io::Result<*mut libc::c_void> {
    // SAFETY: a fresh anonymous page, placed by the kernel.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            share | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(addr)
}

/// The state that can be seen from here is still there.
fn still_held(checks: &mut Checks, kind: &str, held: &Held) {
    match kind {
        "logon-key" | "nested-keyring" | "unsearchable-keyring" | "key-timeout" => {
            let ends = if kind != "unsearchable-keyring" {
                format!(";{SESSION_NAME}")
            } else {
                format!(";{UNSEARCHABLE:08x};_ses")
            };
            let text = keys::keyctl_text(KEYCTL_DESCRIBE, KEY_SPEC_SESSION_KEYRING);
            if let Some(text) = checks.io("describing the session keyring", text) {
                checks.that(
                    text.ends_with(&ends),
                    &format!("the session keyring still ends with {ends:?} (found {text:?})"),
                );
            }
            if kind == "nested-keyring" {
                // The nested keyring is still linked in it.
                let list = keys::keyctl_buf(KEYCTL_READ, KEY_SPEC_SESSION_KEYRING);
                if let Some(list) = checks.io("listing the session keyring", list) {
                    let nested = list.chunks_exact(4).any(|c| {
                        let key = i32::from_ne_bytes(c.try_into().unwrap_or([0; 4]));
                        keys::keyctl_text(KEYCTL_DESCRIBE, key.into()).is_ok_and(|d| {
                            d.starts_with("keyring;") && d.ends_with(";crlab-nested")
                        })
                    });
                    checks.that(nested, "the nested keyring crlab-nested is still in it");
                }
            }
        }
        "thread-session-keyring" => {
            // This thread's is still not the other thread's: its own is not crlab-thread.
            let text = keys::keyctl_text(KEYCTL_DESCRIBE, KEY_SPEC_SESSION_KEYRING);
            if let Some(text) = checks.io("describing the main thread's session keyring", text) {
                checks.that(
                    !text.ends_with(";crlab-thread"),
                    &format!("the main thread's session keyring is its own (found {text:?})"),
                );
            }
        }
        "thread-keyring" | "process-keyring" => {
            let spec = if kind == "thread-keyring" {
                KEY_SPEC_THREAD_KEYRING
            } else {
                KEY_SPEC_PROCESS_KEYRING
            };
            // Without `create`: it fails when the keyring is gone.
            let r = keys::keyctl(KEYCTL_GET_KEYRING_ID, spec, 0);
            checks.io(&format!("the {kind} is still there"), r);
        }
        _ => {}
    }
    match kind {
        "sysv-shm" => {
            if let Some(addr) = held.shm {
                // SAFETY: the segment's first page, attached in `set_up` and never detached.
                let byte = unsafe { std::ptr::read_volatile(addr as *const u8) };
                checks.eq("the byte in the SysV segment", SHM_BYTE, byte);
            }
        }
        "securebits" => {
            // SAFETY: PR_GET_SECUREBITS takes no argument.
            let bits = unsafe { libc::prctl(libc::PR_GET_SECUREBITS) };
            checks.eq("securebits", SECBIT_NOROOT as i32, bits);
        }
        "sched-deadline" => {
            // SAFETY: sched_getscheduler takes an integer only.
            let policy = unsafe { libc::sched_getscheduler(0) };
            checks.eq(
                "scheduling policy",
                SCHED_DEADLINE as i32,
                policy & !SCHED_RESET_ON_FORK,
            );
        }
        _ => {}
    }
    let Some(fd) = held.fd else {
        return;
    };
    match kind {
        "flock" | "posix-lock" | "ofd-lock" | "lease" => {
            let text = std::fs::read_to_string(format!("/proc/self/fdinfo/{fd}"));
            if let Some(text) = checks.io("reading the locked file's fdinfo", text) {
                checks.that(
                    text.lines().any(|l| l.starts_with("lock:")),
                    "the lock is still held",
                );
            }
        }
        // SAFETY: F_GETOWN takes no argument.
        "owner" => checks.eq("F_GETOWN", sys::getpid(), unsafe {
            libc::fcntl(fd, libc::F_GETOWN)
        }),
        // SAFETY: F_GETSIG takes no argument.
        "setsig" => checks.eq("F_GETSIG", libc::SIGUSR1, unsafe {
            libc::fcntl(fd, F_GETSIG)
        }),
        "async" => {
            if let Some(flags) = checks.io("F_GETFL", sys::fcntl(fd, libc::F_GETFL)) {
                checks.that(flags & libc::O_ASYNC != 0, "O_ASYNC is still set");
            }
        }
        _ => {}
    }
}

/// Ends the child the state needed.
fn end_child(checks: &mut Checks, child: &Child) {
    if let Child::Kill(pid) = *child {
        // SAFETY: kill takes only integers; `pid` is our unreaped child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        let mut status = 0;
        // SAFETY: waits for one child of ours; `status` is writable.
        let got = unsafe { libc::waitpid(pid, &mut status, 0) };
        if got != pid {
            checks.fail(format!("waitpid({pid}): {}", io::Error::last_os_error()));
        }
    }
}
