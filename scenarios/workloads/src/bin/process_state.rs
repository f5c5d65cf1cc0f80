//! Sets one piece of per-process or per-thread kernel state that a restore must give back
//! exactly, then checks after the trigger that it is what it was. The kind is the first
//! argument:
//!
//! - `sched-batch`: SCHED_BATCH, nice 7;
//! - `selinux-attrs`: the main thread's `attr/exec`, `attr/keycreate` and `attr/sockcreate`
//!   set to its own context and `attr/fscreate` to the label its files get (SELinux
//!   enabled only: the lab's scenario `unconfined-selinux-attrs`);
//! - `sched-rr`: SCHED_RR at real-time priority 3, nice -3;
//! - `oom-score-adj`: `/proc/self/oom_score_adj` 345;
//! - `ioprio`: the I/O priority best effort, level 5 (`ioprio_set`);
//! - `thp-disable`: `PR_SET_THP_DISABLE`;
//! - `timerslack`: `PR_SET_TIMERSLACK` 123456 ns;
//! - `subreaper`: `PR_SET_CHILD_SUBREAPER`, and an orphan reparented to it: a child that
//!   forked a grandchild and exited; the grandchild checks once the go file appears that its
//!   parent is still the root, and exits 0 if so (the root reaps it and checks);
//! - `no-new-privs`: `PR_SET_NO_NEW_PRIVS`;
//! - `pdeathsig-child`: a child with parent-death signal SIGUSR2, which checks it still has it
//!   once the go file appears and exits 0 if so (the root reaps it and checks);
//! - `itimer`: `ITIMER_REAL` (an hour, repeating every half hour), `ITIMER_VIRTUAL` and
//!   `ITIMER_PROF` (2000 s of CPU time, repeating every 600 s) armed;
//!   after the trigger the intervals are exact and the values counted down, not reset or gone;
//! - `posix-timer`: two `timer_create` timers, one signalling SIGUSR1 with a value on
//!   CLOCK_MONOTONIC (an hour, then every minute), one without notification on CLOCK_REALTIME
//!   (two hours): the same ids, notification and value after the restore, the time counted
//!   down, not reset;
//! - `membarrier`: registered for private expedited membarriers (the command then succeeds
//!   instead of failing with `EPERM`);
//! - `mlock`: one page locked; `madvise`: anonymous pages advised `MADV_DONTFORK`,
//!   `MADV_DONTDUMP`, `MADV_WIPEONFORK`, `MADV_HUGEPAGE`, `MADV_RANDOM`, `MADV_SEQUENTIAL`,
//!   `MADV_NOHUGEPAGE`, and a private writable mapping of a file advised `MADV_RANDOM`, as
//!   their `VmFlags` show;
//! - `affinity`: the CPU affinity narrowed to the first allowed CPU (needs two);
//! - `coredump-filter`: `/proc/self/coredump_filter` 0x7f;
//! - `mce-kill`: `PR_MCE_KILL` early;
//! - `tsc-sigsegv`: `PR_SET_TSC` to `PR_TSC_SIGSEGV` (nothing here reads a clock through the
//!   vDSO afterwards, which would fault);
//! - `mdwe`: memory-deny-write-execute (`PR_SET_MDWE`);
//! - `mlock-user`: a page locked, then the ids changed to 65534 (the lock stays, counted
//!   against the user's limit);
//! - `file-maywrite`: a shared mapping of a file opened for writing, mapped read-only: after
//!   the trigger it can be made writable and a write through it reaches the file;
//! - `thread-state`: a second thread with its own SCHED_BATCH, nice 5, timer slack 77777 ns
//!   and CAP_NET_RAW out of its effective set, which it reads before and after (blocked in a
//!   read of a pipe meanwhile); the main thread's own, untouched, must not change either;
//! - `caps`: as root, capability sets changed in each: CAP_NET_RAW out of the effective set,
//!   CAP_MKNOD out of the permitted (and effective) set,
//!   CAP_NET_BIND_SERVICE into the inheritable and ambient sets, CAP_SYS_BOOT out of the
//!   bounding set, and the keep-capabilities bit;
//! - `caps-user`: the same, then the ids changed to 65534 with the permitted set kept, as a
//!   container's non-root process holding a capability;
//! - `deleted-file`: a file of the state dir (a page of a pattern, two pages of zeros, 100
//!   bytes of a pattern; mode 0640, owner 4242:4343) held by three descriptors, then unlinked: a read-write
//!   `O_APPEND` description at offset 1234 with a `dup` of it, and a read-only `O_NONBLOCK`
//!   one at offset 77. Each descriptor's name ("PATH (deleted)"), flags, offset, the file's
//!   mode, size, link count and contents are compared; after, a write through the first is
//!   read through the other: they are one file;
//! - `deleted-mapping`: a file of three pages of a pattern mapped shared read-write whole,
//!   its last page mapped shared read-only once more and its middle page mapped private (and
//!   written to), its descriptor closed, then unlinked: each mapping's line of
//!   `/proc/self/maps` (permissions, name "PATH (deleted)") and contents are compared; after,
//!   a write through the read-write mapping is read through the read-only one.
//!
//! Each kind's state is read (from `/proc/self` or the system call that tells it) before the
//! wait, where setup also checks it took effect, and again after: the two must be equal.

use std::io;
use std::sync::mpsc;
use std::thread::JoinHandle;

use crlab_workloads::runtime::{Checks, Workload};
use crlab_workloads::sys;

const PAGE: usize = 4096;
/// `deleted-file`'s file and the seed of its pattern.
const DELETED_FILE: &str = "deleted.bin";
const DELETED_SEED: u64 = 0xde1e_7ed0;
const CHILD_GO: &str = "child-go";
const NOBODY: u32 = 65534;
const CAP_NET_BIND_SERVICE: u32 = 10;
const CAP_NET_RAW: u32 = 13;
const CAP_MKNOD: u32 = 27;
const CAP_SYS_BOOT: u32 = 22;
/// `<linux/membarrier.h>`.
const MEMBARRIER_CMD_PRIVATE_EXPEDITED: i32 = 1 << 3;
/// `<linux/prctl.h>`'s machine-check kill policy, which the libc crate lacks for Linux.
const PR_MCE_KILL: i32 = 33;
const PR_MCE_KILL_GET: i32 = 34;
const PR_MCE_KILL_SET: libc::c_ulong = 1;
const PR_MCE_KILL_EARLY: libc::c_ulong = 1;
const MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED: i32 = 1 << 4;

/// What the kind set up that the checks need.
#[derive(Default)]
struct Set {
    child: Option<i32>,
    /// Addresses of the advised or locked pages, or of the shared file mapping.
    pages: Vec<usize>,
    /// Ids of the POSIX timers.
    timers: Vec<i32>,
    /// The second thread of `thread-state`: its handle (it returns its state after the wake),
    /// the pipe end that wakes it, and its state before.
    thread: Option<(JoinHandle<io::Result<String>>, i32, String)>,
    /// The descriptors of `deleted-file`: read-write, its dup, read-only.
    fds: Vec<i32>,
    /// The mappings of `deleted-mapping`: (address, length) of the shared read-write, shared
    /// read-only and private ones.
    mapped: Vec<(usize, usize)>,
}

/// `ioprio` kind's I/O priority: best effort (class 2 << 13), level 5.
const IOPRIO_BE_5: libc::c_long = 2 << 13 | 5;

/// The SELinux label of a file (`security.selinux`), without its trailing NUL.
fn file_label(path: &std::path::Path) -> io::Result<String> {
    let c = sys::cstring(path);
    let mut buf = [0u8; 256];
    // SAFETY: `c` is NUL-terminated; the kernel writes at most buf.len() bytes into `buf`.
    let n = unsafe {
        libc::getxattr(
            c.as_ptr(),
            c"security.selinux".as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    let n = usize::try_from(sys::check(n as libc::c_long)?).unwrap_or(0);
    let text = &buf[..n];
    let text = text.strip_suffix(&[0]).unwrap_or(text);
    Ok(String::from_utf8_lossy(text).into_owned())
}

/// The SELinux attributes of a thread that `selinux-attrs` sets (`attr/current` aside).
const SELINUX_ATTRS: [&str; 4] = ["exec", "fscreate", "keycreate", "sockcreate"];

fn main() {
    let mut w = Workload::from_args("process_state");
    let kind = w.args().first().cloned().unwrap_or_default();
    let set = match set_up(&w, &kind) {
        Ok(s) => s,
        Err(e) => w.setup_failed(&format!("{kind}: {e}")),
    };
    let before = match observe(&kind, &set) {
        Ok(v) => v,
        Err(e) => w.setup_failed(&format!("reading {kind}: {e}")),
    };
    w.announce("state", before.replace(' ', "_"));
    if let Some(child) = set.child {
        w.announce("child-pid", child);
    }
    let mut checks = w.wait();
    w.common_checks(&mut checks);
    if let Some(after) = checks.io(&format!("reading {kind} again"), observe(&kind, &set)) {
        checks.eq(&kind, before, after);
    }
    let mut set = set;
    after_checks(&mut checks, &w, &kind, &mut set);
    w.finish(checks)
}

fn prctl(op: i32, arg: libc::c_ulong) -> io::Result<libc::c_long> {
    // SAFETY: the prctl options used here take integers only, or (the getters) a pointer the
    // callers pass through `prctl_get`.
    let ret = unsafe {
        libc::prctl(
            op,
            arg,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    sys::check(ret.into())
}

/// A prctl getter that stores an int at its second argument.
fn prctl_get(op: i32) -> io::Result<i32> {
    let mut v: libc::c_int = 0;
    // SAFETY: the getter writes one int at the pointer, which is `v`.
    let ret = unsafe { libc::prctl(op, &mut v as *mut libc::c_int) };
    sys::check(ret.into()).map(|_| v)
}

fn set_up(w: &Workload, kind: &str) -> io::Result<Set> {
    let mut set = Set::default();
    match kind {
        "sched-batch" | "sched-rr" => {
            let (policy, prio, nice) = if kind == "sched-batch" {
                (libc::SCHED_BATCH, 0, 7)
            } else {
                (libc::SCHED_RR, 3, -3)
            };
            let param = libc::sched_param {
                sched_priority: prio,
            };
            // SAFETY: `param` is a valid sched_param, read during the call.
            sys::check(unsafe { libc::sched_setscheduler(0, policy, &param) }.into())?;
            // SAFETY: setpriority takes integers only.
            sys::check(unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) }.into())?;
        }
        "oom-score-adj" => std::fs::write("/proc/self/oom_score_adj", "345")?,
        "ioprio" => {
            // SAFETY: ioprio_set takes integers only.
            let r =
                unsafe { libc::syscall(libc::SYS_ioprio_set, 1, 0, IOPRIO_BE_5 as libc::c_long) };
            sys::check(r)?;
        }
        "coredump-filter" => std::fs::write("/proc/self/coredump_filter", "0x7f")?,
        "mce-kill" => {
            // SAFETY: PR_MCE_KILL takes integers only.
            let ret = unsafe {
                libc::prctl(
                    PR_MCE_KILL,
                    PR_MCE_KILL_SET,
                    PR_MCE_KILL_EARLY,
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                )
            };
            sys::check(ret.into())?;
        }
        "tsc-sigsegv" => drop(prctl(
            libc::PR_SET_TSC,
            libc::PR_TSC_SIGSEGV as libc::c_ulong,
        )?),
        "mdwe" => drop(prctl(
            libc::PR_SET_MDWE,
            libc::PR_MDWE_REFUSE_EXEC_GAIN.into(),
        )?),
        "thp-disable" => drop(prctl(libc::PR_SET_THP_DISABLE, 1)?),
        "timerslack" => drop(prctl(libc::PR_SET_TIMERSLACK, 123_456)?),
        "subreaper" => {
            prctl(libc::PR_SET_CHILD_SUBREAPER, 1)?;
            set.child = Some(orphan(w)?);
        }
        "no-new-privs" => drop(prctl(libc::PR_SET_NO_NEW_PRIVS, 1)?),
        "pdeathsig-child" => set.child = Some(pdeathsig_child(w)?),
        "itimer" => {
            let real = itimerval(1800, 3600);
            let virt = itimerval(0, 1000);
            let prof = itimerval(600, 2000);
            // SAFETY: the itimervals are valid and read during the calls; no old value asked.
            unsafe {
                sys::check(libc::setitimer(libc::ITIMER_REAL, &real, std::ptr::null_mut()).into())?;
                sys::check(
                    libc::setitimer(libc::ITIMER_VIRTUAL, &virt, std::ptr::null_mut()).into(),
                )?;
                sys::check(libc::setitimer(libc::ITIMER_PROF, &prof, std::ptr::null_mut()).into())?;
            }
        }
        "posix-timer" => {
            for (clock, notify, signo, value, interval, left) in TIMERS {
                // struct sigevent: sigev_value, sigev_signo, sigev_notify, then padding.
                let mut ev = [0u8; 64];
                ev[0..8].copy_from_slice(&value.to_ne_bytes());
                ev[8..12].copy_from_slice(&signo.to_ne_bytes());
                ev[12..16].copy_from_slice(&notify.to_ne_bytes());
                let mut id: i32 = -1;
                // SAFETY: reads the sigevent and writes the timer's id into `id`.
                let ret = unsafe {
                    libc::syscall(
                        libc::SYS_timer_create,
                        clock,
                        ev.as_ptr(),
                        &mut id as *mut i32,
                    )
                };
                sys::check(ret)?;
                let spec = libc::itimerspec {
                    it_interval: libc::timespec {
                        tv_sec: interval,
                        tv_nsec: 0,
                    },
                    it_value: libc::timespec {
                        tv_sec: left,
                        tv_nsec: 0,
                    },
                };
                // SAFETY: reads `spec`; no old value asked.
                let ret = unsafe {
                    libc::syscall(
                        libc::SYS_timer_settime,
                        id,
                        0,
                        &spec,
                        std::ptr::null_mut::<u8>(),
                    )
                };
                sys::check(ret)?;
                set.timers.push(id);
            }
        }
        "membarrier" => {
            // SAFETY: membarrier takes integers only.
            let ret = unsafe {
                libc::syscall(
                    libc::SYS_membarrier,
                    MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED,
                    0,
                    0,
                )
            };
            sys::check(ret)?;
        }
        "mlock" | "madvise" | "mlock-user" => {
            let advice: &[i32] = if kind != "madvise" {
                &[-1]
            } else {
                &[
                    libc::MADV_DONTFORK,
                    libc::MADV_DONTDUMP,
                    libc::MADV_WIPEONFORK,
                    libc::MADV_HUGEPAGE,
                    libc::MADV_RANDOM,
                    libc::MADV_SEQUENTIAL,
                    libc::MADV_NOHUGEPAGE,
                ]
            };
            for &a in advice {
                // Its own mapping each, so the kernel cannot merge them.
                let addr = map(-1, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE)?;
                // SAFETY: `addr` is a fresh page of ours.
                unsafe { std::ptr::write_volatile(addr as *mut u8, 0x5a) };
                // SAFETY: locks or advises one page of our own mapping; none of these advices
                // drops its contents.
                let ret = unsafe {
                    if a < 0 {
                        libc::mlock(addr as *const libc::c_void, PAGE)
                    } else {
                        libc::madvise(addr as *mut libc::c_void, PAGE, a)
                    }
                };
                sys::check(ret.into())?;
                set.pages.push(addr);
            }
            if kind == "madvise" {
                // A private writable mapping of a file, advised MADV_RANDOM, then written to.
                let path = w.path("advised.bin");
                std::fs::write(&path, vec![7u8; PAGE])?;
                let c = sys::cstring(&path);
                // SAFETY: `c` is a valid NUL-terminated path.
                let fd = sys::check(unsafe { libc::open(c.as_ptr(), libc::O_RDONLY) }.into())?;
                let mapped = map(
                    fd as i32,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_PRIVATE,
                );
                // SAFETY: closes our own descriptor; the mapping stays.
                unsafe { libc::close(fd as i32) };
                let addr = mapped?;
                // SAFETY: advises one page of our own mapping, then writes its private copy.
                let ret = unsafe {
                    let ret = libc::madvise(addr as *mut libc::c_void, PAGE, libc::MADV_RANDOM);
                    std::ptr::write_volatile(addr as *mut u8, 0x5a);
                    ret
                };
                sys::check(ret.into())?;
                set.pages.push(addr);
            }
            if kind == "mlock-user" {
                become_nobody(w)?;
            }
        }
        "affinity" => {
            // SAFETY: cpu_set_t is plain data; all-zero is the empty set.
            let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
            // SAFETY: writes the affinity into `set`, whose size is passed.
            let ret = unsafe { libc::sched_getaffinity(0, std::mem::size_of_val(&set), &mut set) };
            sys::check(ret.into())?;
            let cpus: Vec<usize> = (0..libc::CPU_SETSIZE as usize)
                // SAFETY: reads bit `c` of the set, within CPU_SETSIZE.
                .filter(|&c| unsafe { libc::CPU_ISSET(c, &set) })
                .collect();
            if cpus.len() < 2 {
                return Err(io::Error::other(format!(
                    "the affinity test needs two CPUs, this process may use {cpus:?}"
                )));
            }
            // SAFETY: clears the set and sets one bit below CPU_SETSIZE.
            unsafe {
                libc::CPU_ZERO(&mut set);
                libc::CPU_SET(cpus[0], &mut set);
            }
            // SAFETY: reads the set, whose size is passed.
            let ret = unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
            sys::check(ret.into())?;
        }
        "file-maywrite" => {
            let path = w.path("mapped.bin");
            std::fs::write(&path, vec![b'r'; PAGE])?;
            let c = sys::cstring(&path);
            // SAFETY: `c` is a valid NUL-terminated path.
            let fd = sys::check(unsafe { libc::open(c.as_ptr(), libc::O_RDWR) }.into())? as i32;
            let addr = map(fd, libc::PROT_READ, libc::MAP_SHARED)?;
            // The mapping stays; the descriptor goes, so only the mapping remembers the mode.
            // SAFETY: closes our own descriptor.
            unsafe { libc::close(fd) };
            set.pages.push(addr);
        }
        "thread-state" => set.thread = Some(second_thread()?),
        "deleted-mapping" => {
            let path = w.path(DELETED_FILE);
            std::fs::write(&path, sys::pattern(DELETED_SEED, 0, 3 * PAGE))?;
            let c = sys::cstring(&path);
            // SAFETY: `c` is a valid NUL-terminated path.
            let fd = sys::check(unsafe { libc::open(c.as_ptr(), libc::O_RDWR) }.into())? as i32;
            let rw = libc::PROT_READ | libc::PROT_WRITE;
            for (prot, share, offset, len) in [
                (rw, libc::MAP_SHARED, 0, 3 * PAGE),
                (libc::PROT_READ, libc::MAP_SHARED, 2 * PAGE, PAGE),
                (rw, libc::MAP_PRIVATE, PAGE, PAGE),
            ] {
                let off = libc::off_t::try_from(offset).unwrap_or(0);
                // SAFETY: a fresh mapping placed by the kernel.
                let addr = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, share, fd, off) };
                if addr == libc::MAP_FAILED {
                    return Err(io::Error::last_os_error());
                }
                set.mapped.push((addr as usize, len));
            }
            if let Some(&(private, _)) = set.mapped.last() {
                // SAFETY: the private mapping is ours, mapped read-write, a page long.
                unsafe { std::ptr::write_bytes(private as *mut u8, 0x77, 100) };
            }
            // SAFETY: closes our own descriptor; the mappings stay.
            unsafe { libc::close(fd) };
            std::fs::remove_file(&path)?;
        }
        "deleted-file" => {
            let path = w.path(DELETED_FILE);
            let mut data = sys::pattern(DELETED_SEED, 0, PAGE);
            data.extend(std::iter::repeat_n(0, 2 * PAGE));
            data.extend(sys::pattern(DELETED_SEED, 3 * PAGE, 100));
            std::fs::write(&path, &data)?;
            let c = sys::cstring(&path);
            // SAFETY: `c` is a valid NUL-terminated path.
            let rw = sys::check(
                unsafe { libc::open(c.as_ptr(), libc::O_RDWR | libc::O_APPEND) }.into(),
            )? as i32;
            // SAFETY: as above.
            let ro = sys::check(
                unsafe { libc::open(c.as_ptr(), libc::O_RDONLY | libc::O_NONBLOCK) }.into(),
            )? as i32;
            // SAFETY: duplicates our own descriptor.
            let dup = sys::check(unsafe { libc::dup(rw) }.into())? as i32;
            sys::lseek(rw, 1234, libc::SEEK_SET)?;
            sys::lseek(ro, 77, libc::SEEK_SET)?;
            // SAFETY: changes the mode of our own descriptor's file.
            sys::check(unsafe { libc::fchmod(rw, 0o640) }.into())?;
            // SAFETY: changes the owner of our own descriptor's file (the workload runs as
            // root).
            sys::check(unsafe { libc::fchown(rw, 4242, 4343) }.into())?;
            std::fs::remove_file(&path)?;
            set.fds = vec![rw, dup, ro];
        }
        "selinux-attrs" => {
            // Values the domain may use: its own context for its next exec, its keys and its
            // sockets; for its files, the label a file it creates in its state directory gets
            // anyway (so the files it goes on creating are labelled as they would be).
            let own = std::fs::read_to_string("/proc/thread-self/attr/current")?;
            let own = own.trim_end_matches(['\0', '\n']).to_owned();
            // The label a file created there gets now, found by creating one.
            let probe = w.path("fscreate-probe");
            std::fs::write(&probe, b"")?;
            let dir = file_label(&probe)?;
            std::fs::remove_file(&probe)?;
            for attr in SELINUX_ATTRS {
                let value = if attr == "fscreate" { &dir } else { &own };
                sys::write_attr(attr, value.as_bytes()).map_err(|e| {
                    io::Error::other(format!(
                        "writing attr/{attr} (SELinux must be enabled for this kind): {e}"
                    ))
                })?;
            }
        }
        "caps" | "caps-user" => {
            let (mut eff, mut prm, mut inh) = capget()?;
            eff &= !(1 << CAP_NET_RAW | 1 << CAP_MKNOD);
            prm &= !(1 << CAP_MKNOD);
            inh |= 1 << CAP_NET_BIND_SERVICE;
            capset(eff, prm, inh)?;
            prctl(libc::PR_CAPBSET_DROP, CAP_SYS_BOOT.into())?;
            // SAFETY: PR_CAP_AMBIENT_RAISE takes integers only.
            let ret = unsafe {
                libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    libc::c_ulong::from(CAP_NET_BIND_SERVICE),
                    0 as libc::c_ulong,
                    0 as libc::c_ulong,
                )
            };
            sys::check(ret.into())?;
            prctl(libc::PR_SET_KEEPCAPS, 1)?;
            if kind == "caps-user" {
                become_nobody(w)?;
                // The ids changed: effective was cleared, ambient too; give them back.
                let (_, prm, inh) = capget()?;
                capset(prm & !(1 << CAP_NET_RAW), prm, inh)?;
                // SAFETY: as above.
                let ret = unsafe {
                    libc::prctl(
                        libc::PR_CAP_AMBIENT,
                        libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                        libc::c_ulong::from(CAP_NET_BIND_SERVICE),
                        0 as libc::c_ulong,
                        0 as libc::c_ulong,
                    )
                };
                sys::check(ret.into())?;
            }
        }
        other => {
            return Err(io::Error::other(format!(
                "unknown kind {other:?}: see the module documentation"
            )))
        }
    }
    Ok(set)
}

/// Starts the second thread of `thread-state`: it sets its own state, sends it, then waits for
/// a byte on a pipe and returns its state again.
fn second_thread() -> io::Result<(JoinHandle<io::Result<String>>, i32, String)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, a live [i32; 2].
    sys::check(unsafe { libc::pipe2(fds.as_mut_ptr(), 0) }.into())?;
    let (wait, wake) = (fds[0], fds[1]);
    let (tx, rx) = mpsc::channel::<io::Result<String>>();
    let handle = std::thread::spawn(move || {
        let set_up = || -> io::Result<String> {
            let param = libc::sched_param { sched_priority: 0 };
            // SAFETY: `param` is a valid sched_param; pid 0 is the calling thread.
            sys::check(unsafe { libc::sched_setscheduler(0, libc::SCHED_BATCH, &param) }.into())?;
            let me = sys::gettid() as libc::id_t;
            // SAFETY: setpriority takes integers only; the id is this thread's.
            let ret = unsafe { libc::setpriority(libc::PRIO_PROCESS, me, 5) };
            sys::check(ret.into())?;
            prctl(libc::PR_SET_TIMERSLACK, 77_777)?;
            let (eff, prm, inh) = capget()?;
            capset(eff & !(1 << CAP_NET_RAW), prm, inh)?;
            thread_self_state()
        };
        let before = set_up();
        let failed = before.is_err();
        if tx.send(before).is_err() || failed {
            return Err(io::Error::other("setting up the second thread"));
        }
        let mut byte = [0u8; 1];
        sys::read(wait, &mut byte)?;
        thread_self_state()
    });
    let before = rx
        .recv()
        .map_err(|_| io::Error::other("the second thread ended before it set up"))??;
    Ok((handle, wake, before))
}

/// The calling thread's scheduling, nice value, timer slack and capabilities.
fn thread_self_state() -> io::Result<String> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat")?;
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest.split_whitespace().collect())
        .unwrap_or_default();
    // Fields 19 (nice) and 41 (policy), counted from the state (field 3).
    let field = |n: usize| fields.get(n - 3).copied().unwrap_or("?");
    let status = std::fs::read_to_string("/proc/thread-self/status")?;
    let caps: Vec<&str> = status.lines().filter(|l| l.starts_with("Cap")).collect();
    Ok(format!(
        "nice {} policy {} slack {} {}",
        field(19),
        field(41),
        prctl(libc::PR_GET_TIMERSLACK, 0)?,
        caps.join(" ")
    ))
}

/// Changes every id to 65534 (its state directory given to it first, so it can still write
/// there) and makes itself dumpable again, which the change of ids undid.
fn become_nobody(w: &Workload) -> io::Result<()> {
    std::os::unix::fs::chown(w.state_dir(), Some(NOBODY), Some(NOBODY))?;
    // SAFETY: setgroups with an empty list, setresgid and setresuid take no memory of ours.
    unsafe {
        sys::check(libc::setgroups(0, std::ptr::null()).into())?;
        sys::check(libc::setresgid(NOBODY, NOBODY, NOBODY).into())?;
        sys::check(libc::setresuid(NOBODY, NOBODY, NOBODY).into())?;
    }
    prctl(libc::PR_SET_DUMPABLE, 1).map(drop)
}

/// Forks the child that checks its parent-death signal once the go file appears.
fn pdeathsig_child(w: &Workload) -> io::Result<i32> {
    let go = sys::cstring(&w.path(CHILD_GO));
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, a live [i32; 2].
    sys::check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }.into())?;
    // SAFETY: the workload is single-threaded; the child makes only async-signal-safe calls
    // (prctl, write, close, access, nanosleep, _exit).
    let pid = unsafe { libc::fork() };
    let pid = sys::check(pid.into())? as i32;
    if pid == 0 {
        // SAFETY: as above; `go` is a valid NUL-terminated path, the buffers, timespec and int
        // valid. The byte tells the parent the signal is set (the ready file must not come
        // before).
        unsafe {
            let set = [u8::from(
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGUSR2 as libc::c_ulong) == 0,
            )];
            libc::write(fds[1], set.as_ptr().cast(), 1);
            libc::close(fds[1]);
            let ts = libc::timespec {
                tv_sec: 0,
                tv_nsec: 10_000_000,
            };
            while libc::access(go.as_ptr(), libc::F_OK) != 0 {
                libc::nanosleep(&ts, std::ptr::null_mut());
            }
            let mut sig: libc::c_int = 0;
            if libc::prctl(libc::PR_GET_PDEATHSIG, &mut sig as *mut libc::c_int) != 0 {
                libc::_exit(4);
            }
            libc::_exit(if sig == libc::SIGUSR2 { 0 } else { 5 });
        }
    }
    // SAFETY: closes our copy of the write end.
    unsafe { libc::close(fds[1]) };
    let mut set = [0u8; 1];
    let n = sys::read(fds[0], &mut set);
    // SAFETY: closes the read end, used up.
    unsafe { libc::close(fds[0]) };
    if (n?, set[0]) != (1, 1) {
        return Err(io::Error::other(
            "the child could not set its parent-death signal",
        ));
    }
    Ok(pid)
}

/// Forks a child that forks the orphan and exits; once the child is reaped, the orphan is
/// ours (we are its subreaper). The orphan checks its parent once the go file appears.
fn orphan(w: &Workload) -> io::Result<i32> {
    let go = sys::cstring(&w.path(CHILD_GO));
    let root = sys::getpid();
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, a live [i32; 2].
    sys::check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }.into())?;
    // SAFETY: the workload is single-threaded; the children make only async-signal-safe calls
    // (fork, write, _exit, getppid, access, nanosleep).
    let child = sys::check(unsafe { libc::fork() }.into())? as i32;
    if child == 0 {
        // SAFETY: as above; the buffers and timespec are valid.
        unsafe {
            let orphan = libc::fork();
            if orphan == 0 {
                let ts = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 10_000_000,
                };
                while libc::access(go.as_ptr(), libc::F_OK) != 0 {
                    libc::nanosleep(&ts, std::ptr::null_mut());
                }
                libc::_exit(if libc::getppid() == root { 0 } else { 6 });
            }
            libc::write(fds[1], orphan.to_ne_bytes().as_ptr().cast(), 4);
            libc::_exit(0);
        }
    }
    // SAFETY: closes our copy of the write end.
    unsafe { libc::close(fds[1]) };
    let mut buf = [0u8; 4];
    let n = sys::read(fds[0], &mut buf);
    // SAFETY: closes the read end, used up.
    unsafe { libc::close(fds[0]) };
    let mut status = 0;
    // SAFETY: waits for our own child; `status` is writable.
    let got = unsafe { libc::waitpid(child, &mut status, 0) };
    let orphan = i32::from_ne_bytes(buf);
    if n? != 4 || orphan <= 0 || got != child {
        return Err(io::Error::other("the child did not leave an orphan"));
    }
    // Reparented when its parent exited, before we could reap the parent.
    let ppid = std::fs::read_to_string(format!("/proc/{orphan}/stat"))?
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
    if ppid != Some(root) {
        return Err(io::Error::other(format!(
            "the orphan {orphan} has parent {ppid:?}, not us"
        )));
    }
    Ok(orphan)
}

fn itimerval(interval: i64, value: i64) -> libc::itimerval {
    libc::itimerval {
        it_interval: libc::timeval {
            tv_sec: interval,
            tv_usec: 0,
        },
        it_value: libc::timeval {
            tv_sec: value,
            tv_usec: 0,
        },
    }
}

fn map(fd: i32, prot: i32, share: i32) -> io::Result<usize> {
    let flags = if fd < 0 {
        share | libc::MAP_ANONYMOUS
    } else {
        share
    };
    // SAFETY: a fresh page placed by the kernel.
    let addr = unsafe { libc::mmap(std::ptr::null_mut(), PAGE, prot, flags, fd, 0) };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    Ok(addr as usize)
}

/// `struct __user_cap_header_struct` and `struct __user_cap_data_struct`.
#[repr(C)]
struct CapHeader {
    version: u32,
    pid: i32,
}

#[repr(C)]
#[derive(Clone, Copy, Default)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const CAP_VERSION_3: u32 = 0x2008_0522;

/// The `posix-timer` kind's timers: clock, notification, signal, value, interval and time.
const TIMERS: [(libc::clockid_t, i32, i32, u64, i64, i64); 2] = [
    (
        libc::CLOCK_MONOTONIC,
        libc::SIGEV_SIGNAL,
        libc::SIGUSR1,
        0xabc,
        60,
        3600,
    ),
    (libc::CLOCK_REALTIME, libc::SIGEV_NONE, 0, 0, 0, 7200),
];

/// The calling thread's effective, permitted and inheritable sets.
fn capget() -> io::Result<(u64, u64, u64)> {
    let mut h = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let mut d = [CapData::default(); 2];
    // SAFETY: capget reads the header and writes two data structs, both ours and live.
    let ret = unsafe { libc::syscall(libc::SYS_capget, &mut h as *mut CapHeader, d.as_mut_ptr()) };
    sys::check(ret)?;
    let join = |lo: u32, hi: u32| u64::from(lo) | (u64::from(hi) << 32);
    Ok((
        join(d[0].effective, d[1].effective),
        join(d[0].permitted, d[1].permitted),
        join(d[0].inheritable, d[1].inheritable),
    ))
}

fn capset(eff: u64, prm: u64, inh: u64) -> io::Result<()> {
    let mut h = CapHeader {
        version: CAP_VERSION_3,
        pid: 0,
    };
    let split = |v: u64, hi: bool| if hi { (v >> 32) as u32 } else { v as u32 };
    let d = [false, true].map(|hi| CapData {
        effective: split(eff, hi),
        permitted: split(prm, hi),
        inheritable: split(inh, hi),
    });
    // SAFETY: capset reads the header and two data structs, both ours and live.
    let ret = unsafe { libc::syscall(libc::SYS_capset, &mut h as *mut CapHeader, d.as_ptr()) };
    sys::check(ret).map(drop)
}

/// The `VmFlags` of the mapping at `addr`.
fn vm_flags(addr: usize) -> io::Result<String> {
    let text = std::fs::read_to_string("/proc/self/smaps")?;
    let mut inside = false;
    for line in text.lines() {
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((s, e)) = range.split_once('-') {
                if let (Ok(s), Ok(e)) = (usize::from_str_radix(s, 16), usize::from_str_radix(e, 16))
                {
                    inside = s <= addr && addr < e;
                    continue;
                }
            }
        }
        if inside {
            if let Some(v) = line.strip_prefix("VmFlags:") {
                return Ok(v.trim().to_string());
            }
        }
    }
    Err(io::Error::other(format!(
        "no mapping at {addr:#x} in smaps"
    )))
}

fn status_lines(keys: &[&str]) -> io::Result<String> {
    let mut out = Vec::new();
    for k in keys {
        out.push(format!("{k}={}", sys::status_field(k)?));
    }
    Ok(out.join(" "))
}

/// The state of `kind` as text, compared before and after the checkpoint. Setup is checked
/// here too: a state that did not take is an error, not a vacuous pass.
fn observe(kind: &str, set: &Set) -> io::Result<String> {
    let expect = |ok: bool, what: &str, seen: String| {
        if ok {
            Ok(seen)
        } else {
            Err(io::Error::other(format!("{what}: {seen}")))
        }
    };
    match kind {
        "sched-batch" | "sched-rr" => {
            // SAFETY: sched_getscheduler takes an integer only.
            let policy = unsafe { libc::sched_getscheduler(0) };
            let mut param = libc::sched_param { sched_priority: 0 };
            // SAFETY: writes one sched_param into `param`.
            sys::check(unsafe { libc::sched_getparam(0, &mut param) }.into())?;
            // SAFETY: getpriority takes integers only (-1 is a valid nice value: errno unused).
            let nice = unsafe { libc::getpriority(libc::PRIO_PROCESS, 0) };
            let seen = format!(
                "policy {policy:#x} priority {} nice {nice}",
                param.sched_priority
            );
            let want = if kind == "sched-batch" {
                policy == libc::SCHED_BATCH && nice == 7
            } else {
                policy == libc::SCHED_RR && param.sched_priority == 3 && nice == -3
            };
            expect(want, "scheduling", seen)
        }
        "ioprio" => {
            // SAFETY: ioprio_get takes integers only.
            let r = unsafe { libc::syscall(libc::SYS_ioprio_get, 1, 0) };
            let v = sys::check(r)?;
            expect(v == IOPRIO_BE_5, "ioprio", format!("{v:#x}"))
        }
        "oom-score-adj" => {
            let v = std::fs::read_to_string("/proc/self/oom_score_adj")?;
            expect(v.trim() == "345", "oom_score_adj", v.trim().to_string())
        }
        "coredump-filter" => {
            let v = std::fs::read_to_string("/proc/self/coredump_filter")?;
            expect(
                v.trim() == "0000007f",
                "coredump_filter",
                v.trim().to_string(),
            )
        }
        "mce-kill" => {
            let v = prctl(PR_MCE_KILL_GET, 0)?;
            expect(
                v == PR_MCE_KILL_EARLY as libc::c_long,
                "PR_MCE_KILL_GET",
                v.to_string(),
            )
        }
        "tsc-sigsegv" => {
            let v = prctl_get(libc::PR_GET_TSC)?;
            expect(v == libc::PR_TSC_SIGSEGV, "PR_GET_TSC", v.to_string())
        }
        "mdwe" => {
            let v = prctl(libc::PR_GET_MDWE, 0)?;
            expect(v & 1 == 1, "PR_GET_MDWE", v.to_string())
        }
        "thp-disable" => {
            let v = prctl(libc::PR_GET_THP_DISABLE, 0)?;
            expect(v & 1 == 1, "PR_GET_THP_DISABLE", v.to_string())
        }
        "timerslack" => {
            let v = prctl(libc::PR_GET_TIMERSLACK, 0)?;
            expect(v == 123_456, "PR_GET_TIMERSLACK", v.to_string())
        }
        "subreaper" => {
            let v = prctl_get(libc::PR_GET_CHILD_SUBREAPER)?;
            expect(v == 1, "PR_GET_CHILD_SUBREAPER", v.to_string())
        }
        "no-new-privs" => {
            let v = prctl(libc::PR_GET_NO_NEW_PRIVS, 0)?;
            expect(v == 1, "PR_GET_NO_NEW_PRIVS", v.to_string())
        }
        // The child checks its own; the root sees nothing to compare.
        "pdeathsig-child" => Ok(format!("child {}", set.child.unwrap_or(0))),
        "itimer" => {
            let mut out = Vec::new();
            for (which, interval, max) in [
                (libc::ITIMER_REAL, 1800, 3600),
                (libc::ITIMER_VIRTUAL, 0, 1000),
                (libc::ITIMER_PROF, 600, 2000),
            ] {
                let mut v = itimerval(0, 0);
                // SAFETY: writes one itimerval into `v`.
                sys::check(unsafe { libc::getitimer(which, &mut v) }.into())?;
                let left = v.it_value.tv_sec;
                // Counted down, but not by much: nothing here waits for minutes.
                let ok = v.it_interval.tv_sec == interval
                    && v.it_interval.tv_usec == 0
                    && left <= max
                    && left > max - 300
                    && (left, v.it_value.tv_usec) != (0, 0);
                let seen = format!(
                    "timer {which} interval {}.{:06} value {}.{:06}",
                    v.it_interval.tv_sec, v.it_interval.tv_usec, left, v.it_value.tv_usec
                );
                out.push(expect(ok, "getitimer", seen)?);
                // The values are compared in range here; before and after they differ.
            }
            Ok(format!("{} timers armed as set", out.len()))
        }
        "posix-timer" => {
            let listed = std::fs::read_to_string("/proc/self/timers")?;
            let mut out = vec![listed.replace('\n', "; ")];
            for (&id, (_, _, _, _, interval, left)) in set.timers.iter().zip(TIMERS) {
                // SAFETY: itimerspec is plain data; all-zero is a valid value.
                let mut spec: libc::itimerspec = unsafe { std::mem::zeroed() };
                // SAFETY: writes one itimerspec into `spec`.
                sys::check(unsafe { libc::syscall(libc::SYS_timer_gettime, id, &mut spec) })?;
                let got = spec.it_value.tv_sec;
                // Counted down, but not by much: nothing here waits for minutes.
                let ok = spec.it_interval.tv_sec == interval && got <= left && got > left - 300;
                let seen = format!("timer {id} interval {} left {got}", spec.it_interval.tv_sec);
                expect(ok, "timer_gettime", seen)?;
                out.push(format!("timer {id} interval {interval} armed"));
            }
            Ok(out.join(" | "))
        }
        "membarrier" => {
            // SAFETY: membarrier takes integers only.
            let ret = unsafe {
                libc::syscall(libc::SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0)
            };
            let seen = if ret == 0 {
                "registered".to_string()
            } else {
                format!("not registered: {}", io::Error::last_os_error())
            };
            expect(ret == 0, "MEMBARRIER_CMD_PRIVATE_EXPEDITED", seen)
        }
        "mlock" | "madvise" | "mlock-user" => {
            let codes: &[&str] = if kind != "madvise" {
                &["lo"]
            } else {
                &["dc", "dd", "wf", "hg", "rr", "sr", "nh", "rr"]
            };
            let mut out = Vec::new();
            for (&addr, code) in set.pages.iter().zip(codes) {
                let flags = vm_flags(addr)?;
                let has = flags.split_whitespace().any(|f| f == *code);
                out.push(expect(has, &format!("VmFlags lack {code}"), flags)?);
            }
            Ok(out.join(" | "))
        }
        "affinity" => {
            let v = sys::status_field("Cpus_allowed_list")?;
            expect(!v.contains(['-', ',']), "Cpus_allowed_list", v)
        }
        "file-maywrite" => {
            let addr = set.pages.first().copied().unwrap_or(0);
            let flags = vm_flags(addr)?;
            let has = flags.split_whitespace().any(|f| f == "mw");
            expect(has, "VmFlags lack mw", flags)
        }
        "deleted-mapping" => {
            // Read raw: the name keeps its " (deleted)".
            let maps = std::fs::read_to_string("/proc/self/maps")?;
            let mut out = Vec::new();
            for &(addr, len) in &set.mapped {
                let prefix = format!("{addr:x}-");
                let line = maps
                    .lines()
                    .find(|l| l.starts_with(&prefix))
                    .ok_or_else(|| io::Error::other(format!("no mapping at {addr:#x}")))?;
                // range perms offset dev inode name: all but the device and inode, which a
                // file made again does not keep.
                let fields: Vec<&str> = line.splitn(6, ' ').collect();
                let (range, perms, offset, name) = (
                    fields.first().copied().unwrap_or_default(),
                    fields.get(1).copied().unwrap_or_default(),
                    fields.get(2).copied().unwrap_or_default(),
                    fields.get(5).copied().unwrap_or_default().trim_start(),
                );
                // SAFETY: the mapping is ours, readable, `len` bytes long.
                let bytes = unsafe { std::slice::from_raw_parts(addr as *const u8, len) };
                out.push(format!("{range}:{perms}:{offset}:{name}:{:x}", fnv(bytes)));
            }
            Ok(out.join(" "))
        }
        "deleted-file" => {
            let mut out = Vec::new();
            for &fd in &set.fds {
                let link = std::fs::read_link(format!("/proc/self/fd/{fd}"))?;
                let flags = sys::fcntl(fd, libc::F_GETFL)?;
                let pos = sys::lseek(fd, 0, libc::SEEK_CUR)?;
                out.push(format!("fd{fd}={}:{flags:o}:{pos}", link.display()));
            }
            let (Some(&rw), Some(&ro)) = (set.fds.first(), set.fds.last()) else {
                return Err(io::Error::other("no descriptors"));
            };
            let (a, b) = (sys::fstat(rw)?, sys::fstat(ro)?);
            let mut contents = vec![0u8; usize::try_from(a.st_size).unwrap_or(0)];
            // SAFETY: reads into our own buffer of that length, at an offset (pread leaves
            // the description's offset).
            let n = unsafe { libc::pread(ro, contents.as_mut_ptr().cast(), contents.len(), 0) };
            let n = usize::try_from(sys::check(n as libc::c_long)?).unwrap_or(0);
            let sum = fnv(&contents[..n]);
            out.push(format!(
                "mode={:o} owner={}:{} size={} nlink={} same={} read={n} fnv={sum:x}",
                a.st_mode,
                a.st_uid,
                a.st_gid,
                a.st_size,
                a.st_nlink,
                (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
            ));
            Ok(out.join(" "))
        }
        "caps" | "caps-user" => {
            status_lines(&["Uid", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb"])
        }
        // The main thread's own: untouched, and so it must stay.
        "thread-state" => thread_self_state(),
        "selinux-attrs" => {
            let mut seen = Vec::new();
            for attr in SELINUX_ATTRS {
                let v = std::fs::read_to_string(format!("/proc/thread-self/attr/{attr}"))?;
                let v = v.trim_end_matches(['\0', '\n']).to_owned();
                if v.is_empty() {
                    return Err(io::Error::other(format!("attr/{attr} is empty")));
                }
                seen.push(format!("{attr}={v}"));
            }
            Ok(seen.join(" "))
        }
        _ => Err(io::Error::other("unknown kind")),
    }
}

/// FNV-1a of `bytes`: contents compared before and after in a line.
fn fnv(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
    })
}

/// What can only be checked by acting on the state, after the comparison.
fn after_checks(checks: &mut Checks, w: &Workload, kind: &str, set: &mut Set) {
    if let Some((handle, wake, before)) = set.thread.take() {
        if checks
            .io("waking the second thread", sys::write(wake, b"w"))
            .is_some()
        {
            match handle.join() {
                Ok(Ok(after)) => checks.eq("the second thread's own state", before, after),
                Ok(Err(e)) => checks.fail(format!("the second thread reading its state: {e}")),
                Err(_) => checks.fail("the second thread panicked"),
            }
        }
    }
    match kind {
        "pdeathsig-child" | "subreaper" => {
            let Some(child) = set.child else { return };
            if checks
                .io(
                    "creating the child's go file",
                    std::fs::write(w.path(CHILD_GO), b"go"),
                )
                .is_none()
            {
                return;
            }
            let mut status = 0;
            // SAFETY: waits for our own child; `status` is writable.
            let got = unsafe { libc::waitpid(child, &mut status, 0) };
            checks.eq("waitpid of the child", child, got);
            checks.that(
                libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
                &format!(
                    "the child still has its parent-death signal SIGUSR2, or the orphan its \
                     parent (wait status {status:#x})"
                ),
            );
        }
        "file-maywrite" => {
            let addr = set.pages.first().copied().unwrap_or(0);
            // SAFETY: changes the protection of our own shared file mapping.
            let ret = unsafe {
                libc::mprotect(
                    addr as *mut libc::c_void,
                    PAGE,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            if checks
                .io(
                    "making the shared file mapping writable",
                    sys::check(ret.into()),
                )
                .is_none()
            {
                return;
            }
            // SAFETY: the page is mapped and now writable.
            unsafe { std::ptr::write_volatile(addr as *mut u8, b'w') };
            // SAFETY: syncs our own mapping to its file.
            let ret = unsafe { libc::msync(addr as *mut libc::c_void, PAGE, libc::MS_SYNC) };
            checks.io("msync", sys::check(ret.into()));
            if let Some(data) = checks.io(
                "reading the mapped file",
                std::fs::read(w.path("mapped.bin")),
            ) {
                checks.eq("first byte of the mapped file", Some(&b'w'), data.first());
            }
        }
        "deleted-mapping" => {
            let (Some(&(rw, _)), Some(&(ro, _))) = (set.mapped.first(), set.mapped.get(1)) else {
                return;
            };
            // SAFETY: the read-write shared mapping is three pages long; the read-only one
            // maps its last page.
            let seen = unsafe {
                std::ptr::write_volatile((rw + 2 * PAGE + 10) as *mut u8, 0xa5);
                std::ptr::read_volatile((ro + 10) as *const u8)
            };
            checks.eq(
                "a write through the shared read-write mapping, read through the read-only one",
                0xa5,
                seen,
            );
        }
        "deleted-file" => {
            let (Some(&rw), Some(&ro)) = (set.fds.first(), set.fds.last()) else {
                return;
            };
            let Some(st) = checks.io("fstat", sys::fstat(rw)) else {
                return;
            };
            let end = st.st_size;
            if checks
                .io(
                    "appending through the read-write descriptor",
                    sys::write(rw, b"after"),
                )
                .is_none()
            {
                return;
            }
            let mut got = [0u8; 5];
            // SAFETY: reads into our own 5-byte buffer.
            let n = unsafe { libc::pread(ro, got.as_mut_ptr().cast(), got.len(), end) };
            checks.eq(
                "what the read-only descriptor reads of the append",
                (5, b"after".to_vec()),
                (n, got.to_vec()),
            );
        }
        "madvise" | "mlock" | "mlock-user" => {
            for &addr in &set.pages {
                // SAFETY: the page is ours, mapped and readable.
                let b = unsafe { std::ptr::read_volatile(addr as *const u8) };
                checks.eq("contents of an advised page", 0x5a, b);
            }
        }
        _ => {}
    }
}
