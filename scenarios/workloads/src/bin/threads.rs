//! Sixteen threads besides the main one, each with state of its own, waiting in different ways
//! while the process is checkpointed.
//!
//! Each worker thread sets up, before the ready file:
//! - a thread-local variable (fs-base TLS) holding a value of its own;
//! - a blocked signal mask of its own (SIGTERM, one real-time signal per thread and a pattern
//!   of SIGHUP, SIGUSR1, SIGUSR2 and SIGALRM), set with `pthread_sigmask`;
//! - an alternate signal stack of its own size;
//! - and records its tid, fs base, and the kernel state every workload records for its main
//!   thread ([`crlab_workloads::thread_state`]: personality, tid address, robust list, rseq
//!   registration).
//!
//! Then it waits in the way [`KINDS`] gives it: a raw `FUTEX_WAIT`, a std `Condvar`, a raw
//! `read` on a pipe of its own, raw `nanosleep` or `clock_nanosleep` loops, or a user-space
//! spin. Most waits hold values derived from the thread's index in r12-r15 and xmm8-xmm15
//! ([`crlab_workloads::held`]); one spin and one nanosleep loop hold the `registers` workload's
//! values with the ymm upper halves and the x87 stack ([`crlab_workloads::regs`]).
//! Thread 0 also holds two robust error-checking mutexes across the wait.
//!
//! Once triggered, the main thread checks that `/proc/self/task` lists exactly the original
//! tids and that another thread cannot take thread 0's mutex, then wakes every thread. Each
//! checks everything it recorded (tid, TLS, fs base, mask, altstack, personality, tid address,
//! robust list, rseq) and the registers its wait held; thread 0 checks the mutex word names its
//! tid, unlocks one mutex (which only its owner may) and exits still holding the other. The main
//! thread then takes the first mutex, joins every thread with a deadline (`pthread_join`
//! returns only if the kernel clears and wakes each thread's `clear_child_tid`), takes the
//! second mutex expecting `EOWNERDEAD` (the kernel releases it by walking thread 0's robust
//! list as it exits), and checks the thread list shrinks to itself.
//!
//! Announces `tids <main> <thread 0> ... <thread 15>` in the ready file.

use std::cell::{Cell, UnsafeCell};
use std::ffi::CString;
use std::io;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crlab_workloads::held::{self, Held};
use crlab_workloads::protocol;
use crlab_workloads::regs;
use crlab_workloads::runtime::{Checks, Workload};
use crlab_workloads::sys::{self, sigbit};
use crlab_workloads::thread_state;

/// How many worker threads.
const THREADS: usize = 16;

/// How one worker thread waits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wait {
    /// Raw `FUTEX_WAIT` on the go word, holding its registers.
    Futex,
    /// A std `Condvar` wait (a futex wait inside std).
    Condvar,
    /// Raw `read` of one byte from a pipe of its own, holding its registers.
    Pipe,
    /// Raw `nanosleep` loop, holding its registers.
    Nanosleep,
    /// `clock_nanosleep(CLOCK_MONOTONIC)` loop through libc.
    ClockNanosleep,
    /// The `registers` workload's raw nanosleep loop (ymm and x87 too).
    NanosleepRegs,
    /// User-space spin on the go word, holding its registers.
    Spin,
    /// The `registers` workload's spin loop (ymm and x87 too).
    SpinRegs,
}

use Wait::*;

/// The wait of each worker thread: six in futex waits, four in pipe reads, four in sleeps and
/// two spinning (more spinners would starve the machine the tests share).
const KINDS: [Wait; THREADS] = [
    Futex,
    Pipe,
    Nanosleep,
    Spin,
    Condvar,
    Pipe,
    NanosleepRegs,
    Futex,
    Futex,
    Pipe,
    Nanosleep,
    SpinRegs,
    Futex,
    Pipe,
    ClockNanosleep,
    Futex,
];

/// The thread that holds the mutexes.
const HOLDER: usize = 0;
/// Base size of the alternate signal stacks; thread i's is this plus i pages.
const ALTSTACK_BASE: usize = 64 * 1024;
const PAGE: usize = 4096;
/// Thread-local values: this, the thread's index in bits 32-39 and its tid.
const TLS_BASE: u64 = 0x7150_0000_0000_0000;
/// Held-register seed of the worker threads: this plus the index.
const SEED_BASE: u64 = 0x7e00;
/// The file the `registers` loops poll, created by the main thread once triggered.
const GO_FILE: &str = "threads-go";

const SETUP_TIMEOUT: Duration = Duration::from_secs(20);
const REPORT_TIMEOUT: Duration = Duration::from_secs(30);
const JOIN_TIMEOUT: Duration = Duration::from_secs(10);
const ROBUST_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    static TLS_MARK: Cell<u64> = const { Cell::new(0) };
}

/// A glibc `pthread_mutex_t` at a fixed address, made robust and error-checking.
struct PMutex(UnsafeCell<libc::pthread_mutex_t>);

// SAFETY: a pthread mutex is made to be used from several threads at once; every access goes
// through the pthread functions (or an atomic load of its lock word).
unsafe impl Sync for PMutex {}

/// Held by thread 0 across the wait and unlocked by it afterwards.
static HELD: PMutex = PMutex(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER));
/// Held by thread 0 across the wait and never unlocked: released by the kernel at its exit.
static LEFT: PMutex = PMutex(UnsafeCell::new(libc::PTHREAD_MUTEX_INITIALIZER));

impl PMutex {
    fn init_robust(&self) -> io::Result<()> {
        // SAFETY: pthread_mutexattr_t is plain data that pthread_mutexattr_init initialises.
        let mut attr: libc::pthread_mutexattr_t = unsafe { std::mem::zeroed() };
        // SAFETY: `attr` is live; the mutex is initialised before any thread uses it.
        let ret = unsafe {
            let mut r = libc::pthread_mutexattr_init(&mut attr);
            if r == 0 {
                r = libc::pthread_mutexattr_settype(&mut attr, libc::PTHREAD_MUTEX_ERRORCHECK);
            }
            if r == 0 {
                r = libc::pthread_mutexattr_setrobust(&mut attr, libc::PTHREAD_MUTEX_ROBUST);
            }
            if r == 0 {
                r = libc::pthread_mutex_init(self.0.get(), &attr);
            }
            libc::pthread_mutexattr_destroy(&mut attr);
            r
        };
        errno_result(ret)
    }

    fn lock(&self) -> i32 {
        // SAFETY: the mutex was initialised by init_robust and lives for the whole program.
        unsafe { libc::pthread_mutex_lock(self.0.get()) }
    }

    fn try_lock(&self) -> i32 {
        // SAFETY: as in lock.
        unsafe { libc::pthread_mutex_trylock(self.0.get()) }
    }

    fn lock_within(&self, timeout: Duration) -> i32 {
        let mut now = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: clock_gettime writes one timespec into `now`.
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
        let deadline = libc::timespec {
            tv_sec: now.tv_sec + timeout.as_secs() as libc::time_t,
            tv_nsec: now.tv_nsec,
        };
        // SAFETY: as in lock; `deadline` is a valid absolute CLOCK_REALTIME time.
        unsafe { libc::pthread_mutex_timedlock(self.0.get(), &deadline) }
    }

    fn unlock(&self) -> i32 {
        // SAFETY: as in lock.
        unsafe { libc::pthread_mutex_unlock(self.0.get()) }
    }

    fn make_consistent(&self) -> i32 {
        // SAFETY: as in lock.
        unsafe { libc::pthread_mutex_consistent(self.0.get()) }
    }

    /// The owner's tid in the lock word (glibc keeps a robust mutex's futex word, holding the
    /// owner's tid, first in `pthread_mutex_t`).
    fn owner_tid(&self) -> i32 {
        // SAFETY: the first 4 bytes of the mutex are its aligned int lock word, which glibc
        // and the kernel change only atomically; an atomic load of it is sound.
        let word = unsafe { (*self.0.get().cast::<AtomicU32>()).load(Ordering::SeqCst) };
        (word & libc::FUTEX_TID_MASK) as i32
    }
}

fn errno_result(ret: i32) -> io::Result<()> {
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::from_raw_os_error(ret))
    }
}

fn errno_name(e: i32) -> String {
    match e {
        0 => "0".to_owned(),
        libc::EBUSY => "EBUSY".to_owned(),
        libc::EPERM => "EPERM".to_owned(),
        libc::EDEADLK => "EDEADLK".to_owned(),
        libc::EOWNERDEAD => "EOWNERDEAD".to_owned(),
        libc::ETIMEDOUT => "ETIMEDOUT".to_owned(),
        libc::EINVAL => "EINVAL".to_owned(),
        libc::EINTR => "EINTR".to_owned(),
        libc::EAGAIN => "EAGAIN".to_owned(),
        other => format!("errno {other} ({})", io::Error::from_raw_os_error(other)),
    }
}

/// What the threads share with the main thread.
struct Shared {
    /// 0 until the main thread wakes everyone.
    go: AtomicU32,
    /// The condvar thread's flag and condvar.
    condvar: (Mutex<bool>, Condvar),
    /// Each thread's tid, once set up.
    tids: [AtomicI32; THREADS],
    /// Threads set up (or failed to).
    ready: AtomicUsize,
    /// Threads that reported after the wait.
    done: AtomicUsize,
    /// Setup failures.
    setup_errors: Mutex<Vec<String>>,
    /// What each thread found wrong after the wait (`Some` once it reported).
    reports: Mutex<Vec<Option<Vec<String>>>>,
    /// The file the `registers` loops poll.
    go_file: CString,
}

impl Shared {
    fn is_go(&self) -> bool {
        self.go.load(Ordering::SeqCst) != 0
    }
}

/// Thread `i`'s blocked signals.
fn thread_mask(i: usize) -> u64 {
    let pattern = [libc::SIGHUP, libc::SIGUSR1, libc::SIGUSR2, libc::SIGALRM]
        .iter()
        .enumerate()
        .filter(|(bit, _)| i & (1 << bit) != 0)
        .fold(0, |m, (_, &s)| m | sigbit(s));
    sigbit(libc::SIGTERM) | sigbit(libc::SIGRTMIN() + 2 + i as i32) | pattern
}

/// The calling thread's blocked signals as `pthread_sigmask` reports them.
fn pthread_mask() -> io::Result<u64> {
    // SAFETY: sigset_t is plain data; pthread_sigmask fills it.
    let mut set: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: a null new set only reads the mask into `set`.
    errno_result(unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, std::ptr::null(), &mut set) })?;
    let mut mask = 0;
    for s in 1..=64 {
        // SAFETY: `set` is an initialised sigset_t and `s` a valid signal number.
        if unsafe { libc::sigismember(&set, s) } == 1 {
            mask |= sigbit(s);
        }
    }
    Ok(mask)
}

fn set_pthread_mask(mask: u64) -> io::Result<()> {
    let set = sys::sigset_of(mask);
    // SAFETY: `set` is a valid sigset_t; the old mask is not asked for.
    errno_result(unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &set, std::ptr::null_mut()) })
}

/// The calling thread's alternate signal stack: (ss_sp, ss_size, ss_flags).
fn altstack() -> io::Result<(u64, usize, i32)> {
    // SAFETY: stack_t is plain data; all-zero is a valid value.
    let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: a null new stack only reads the current one into `old`.
    let ret = unsafe { libc::sigaltstack(std::ptr::null(), &mut old) };
    sys::check(ret.into()).map(|_| (old.ss_sp as u64, old.ss_size, old.ss_flags))
}

fn set_altstack(size: usize) -> io::Result<()> {
    // SAFETY: a fresh anonymous mapping touches no existing memory.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let ss = libc::stack_t {
        ss_sp: stack,
        ss_flags: 0,
        ss_size: size,
    };
    // SAFETY: `ss` describes the mapping just made, which is never unmapped.
    let ret = unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) };
    sys::check(ret.into()).map(drop)
}

/// What a thread records about itself before the wait and compares after.
#[derive(Debug)]
struct ThreadState {
    tid: i32,
    tls: u64,
    fs_base: u64,
    /// `None` for the main thread, whose mask the common checks compare.
    sigmask: Option<u64>,
    altstack: (u64, usize, i32),
    /// Personality, tid address, robust list and rseq registration.
    kernel: thread_state::ThreadState,
}

impl ThreadState {
    fn record(with_mask: bool) -> io::Result<ThreadState> {
        Ok(ThreadState {
            tid: sys::gettid(),
            tls: TLS_MARK.with(Cell::get),
            fs_base: regs::fs_base(),
            sigmask: if with_mask {
                Some(pthread_mask()?)
            } else {
                None
            },
            altstack: altstack()?,
            kernel: thread_state::ThreadState::record().map_err(io::Error::other)?,
        })
    }

    fn check(&self, f: &mut Vec<String>) {
        let mut eq = |what: &str, expected: String, found: String| {
            if expected != found {
                f.push(format!("{what}: found {found}, expected {expected}"));
            }
        };
        eq("gettid()", self.tid.to_string(), sys::gettid().to_string());
        eq(
            "thread-local variable",
            format!("{:#x}", self.tls),
            format!("{:#x}", std::hint::black_box(TLS_MARK.with(Cell::get))),
        );
        eq(
            "fs base",
            format!("{:#x}", self.fs_base),
            format!("{:#x}", regs::fs_base()),
        );
        if let Some(mask) = self.sigmask {
            let now = pthread_mask().map(|m| format!("{m:#x}"));
            eq(
                "blocked signals (pthread_sigmask)",
                format!("{mask:#x}"),
                now.unwrap_or_else(|e| e.to_string()),
            );
        }
        eq(
            "sigaltstack (sp, size, flags)",
            format!("{:x?}", self.altstack),
            altstack().map_or_else(|e| e.to_string(), |a| format!("{a:x?}")),
        );
        let mut kernel = Checks::new();
        self.kernel.compare(&mut kernel);
        f.extend(kernel.into_failures());
    }
}

/// The tids `/proc/self/task` lists, sorted.
fn task_list() -> io::Result<Vec<i32>> {
    let mut tids: Vec<i32> = std::fs::read_dir("/proc/self/task")?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    tids.sort();
    Ok(tids)
}

/// Polls `cond` every millisecond until it holds or `timeout` passes.
fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() >= timeout {
            return false;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    true
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// A worker thread: sets up, waits, checks, reports.
fn worker(i: usize, shared: &Shared, pipe: Option<i32>) {
    let kind = KINDS[i];
    let state = match setup(i) {
        Ok(state) => state,
        Err(e) => {
            lock(&shared.setup_errors).push(format!("thread {i}: {e}"));
            shared.ready.fetch_add(1, Ordering::SeqCst);
            return;
        }
    };
    shared.tids[i].store(state.tid, Ordering::SeqCst);
    shared.ready.fetch_add(1, Ordering::SeqCst);

    let mut f = Vec::new();
    wait(
        kind,
        Held::from_seed(SEED_BASE + i as u64),
        shared,
        pipe,
        &mut f,
    );
    state.check(&mut f);
    if i == HOLDER {
        let owner = HELD.owner_tid();
        if owner != state.tid {
            f.push(format!(
                "the held mutex's lock word names tid {owner}, expected its holder {}",
                state.tid
            ));
        }
        let ret = HELD.unlock();
        if ret != 0 {
            f.push(format!(
                "pthread_mutex_unlock by the mutex's holder gave {}, expected 0",
                errno_name(ret)
            ));
        }
        // LEFT stays locked: the kernel must release it when this thread exits.
    }
    lock(&shared.reports)[i] = Some(f);
    shared.done.fetch_add(1, Ordering::SeqCst);
}

fn setup(i: usize) -> io::Result<ThreadState> {
    set_pthread_mask(thread_mask(i))?;
    TLS_MARK.with(|t| t.set(TLS_BASE | ((i as u64) << 32) | sys::gettid() as u64));
    set_altstack(ALTSTACK_BASE + i * PAGE)?;
    if i == HOLDER {
        for (m, name) in [(&HELD, "the held mutex"), (&LEFT, "the left mutex")] {
            errno_result(m.lock()).map_err(|e| io::Error::other(format!("locking {name}: {e}")))?;
        }
    }
    ThreadState::record(true)
}

/// Waits as `kind` says until the main thread says go, recording what went wrong.
fn wait(kind: Wait, known: Held, shared: &Shared, pipe: Option<i32>, f: &mut Vec<String>) {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 10_000_000,
    };
    let go_ptr = shared.go.as_ptr() as u64;
    match kind {
        Futex => {
            while !shared.is_go() {
                let op = (libc::FUTEX_WAIT | libc::FUTEX_PRIVATE_FLAG) as u64;
                // SAFETY: FUTEX_WAIT reads the live go word and sleeps; the null timeout
                // waits without a deadline.
                let (ret, found) =
                    unsafe { held::syscall_holding(&known, libc::SYS_futex, [go_ptr, op, 0, 0]) };
                if ret != 0 && ret != -i64::from(libc::EAGAIN) {
                    note(
                        f,
                        format!("FUTEX_WAIT returned {ret}, expected 0 or -EAGAIN"),
                    );
                }
                if let Some(d) = known.diff(&found) {
                    note(f, format!("registers changed across FUTEX_WAIT: {d}"));
                }
            }
        }
        Condvar => {
            let (m, cv) = &shared.condvar;
            let mut woken = lock(m);
            while !*woken {
                woken = cv.wait(woken).unwrap_or_else(|e| e.into_inner());
            }
        }
        Pipe => {
            let fd = pipe.unwrap_or(-1);
            let mut byte = [0u8; 1];
            // SAFETY: read writes at most one byte into `byte`, a live local.
            let (ret, found) = unsafe {
                held::syscall_holding(
                    &known,
                    libc::SYS_read,
                    [fd as u64, byte.as_mut_ptr() as u64, 1, 0],
                )
            };
            if ret != 1 || byte[0] != protocol::TRIGGER_BYTE {
                note(
                    f,
                    format!(
                        "read on its pipe returned {ret} with byte {:#x}, expected 1 with {:#x}",
                        byte[0],
                        protocol::TRIGGER_BYTE
                    ),
                );
            }
            if let Some(d) = known.diff(&found) {
                note(f, format!("registers changed across read: {d}"));
            }
        }
        Nanosleep => {
            while !shared.is_go() {
                let ts_ptr = &ts as *const libc::timespec as u64;
                // SAFETY: nanosleep reads one timespec from `ts`; no remainder is asked for.
                let (ret, found) = unsafe {
                    held::syscall_holding(&known, libc::SYS_nanosleep, [ts_ptr, 0, 0, 0])
                };
                if ret != 0 {
                    // No handler ran, so an interrupted nanosleep is restarted by the kernel.
                    note(f, format!("nanosleep returned {ret}, expected 0"));
                }
                if let Some(d) = known.diff(&found) {
                    note(f, format!("registers changed across nanosleep: {d}"));
                }
            }
        }
        ClockNanosleep => {
            while !shared.is_go() {
                // SAFETY: clock_nanosleep reads one timespec; no remainder is asked for.
                let ret = unsafe {
                    libc::clock_nanosleep(libc::CLOCK_MONOTONIC, 0, &ts, std::ptr::null_mut())
                };
                if ret != 0 {
                    note(f, format!("clock_nanosleep gave {}", errno_name(ret)));
                }
            }
        }
        NanosleepRegs => {
            if let Err(e) = regs::nanosleep_asm_until(&shared.go_file, false) {
                note(f, e);
            }
        }
        Spin => {
            if let Some(d) = known.diff(&held::spin_holding(&known, &shared.go)) {
                note(f, format!("registers changed in the spin loop: {d}"));
            }
        }
        SpinRegs => {
            if let Err(e) = regs::spin_until(&shared.go_file) {
                note(f, e);
            }
        }
    }
}

/// Records `what` once: one line per kind of failure, not one per loop turn.
fn note(f: &mut Vec<String>, what: String) {
    if !f.contains(&what) {
        f.push(what);
    }
}

fn pipe(w: &Workload) -> (i32, i32) {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, a live [i32; 2].
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), 0) };
    w.setup("pipe2 for a reader thread", sys::check(ret.into()));
    (fds[0], fds[1])
}

/// Joins a thread, giving up after [`JOIN_TIMEOUT`]: 0 or the errno.
fn join_within(thread: libc::pthread_t) -> i32 {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into `now`.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let deadline = libc::timespec {
        tv_sec: now.tv_sec + JOIN_TIMEOUT.as_secs() as libc::time_t,
        tv_nsec: now.tv_nsec,
    };
    // SAFETY: `thread` came from JoinHandle::into_pthread_t, so it is joinable and joined only
    // here; the return value is not asked for.
    unsafe { libc::pthread_timedjoin_np(thread, std::ptr::null_mut(), &deadline) }
}

fn main() {
    use std::os::unix::thread::JoinHandleExt;

    let mut w = Workload::from_args("threads");
    // Before any thread exists, so that every thread has it (the wait adds it too late for
    // them): see `thread_state::ADDED_PERSONALITY`.
    w.setup(
        "adding ADDR_NO_RANDOMIZE to the personality",
        thread_state::add_personality_flag(),
    );
    for (m, name) in [(&HELD, "the held mutex"), (&LEFT, "the left mutex")] {
        w.setup(&format!("initialising {name}"), m.init_robust());
    }
    let shared = Arc::new(Shared {
        go: AtomicU32::new(0),
        condvar: (Mutex::new(false), Condvar::new()),
        tids: std::array::from_fn(|_| AtomicI32::new(0)),
        ready: AtomicUsize::new(0),
        done: AtomicUsize::new(0),
        setup_errors: Mutex::new(Vec::new()),
        reports: Mutex::new(vec![None; THREADS]),
        go_file: sys::cstring(&w.path(GO_FILE)),
    });
    let mut pipe_writers = Vec::new();
    let mut threads = Vec::new();
    for (i, kind) in KINDS.into_iter().enumerate() {
        let read_end = (kind == Pipe).then(|| {
            let (r, wr) = pipe(&w);
            pipe_writers.push(wr);
            r
        });
        let shared = Arc::clone(&shared);
        let spawned = std::thread::Builder::new().spawn(move || worker(i, &shared, read_end));
        threads.push(w.setup(&format!("spawning thread {i}"), spawned));
    }
    if !wait_for(SETUP_TIMEOUT, || {
        shared.ready.load(Ordering::SeqCst) == THREADS
    }) {
        w.setup_failed("the threads did not all set up in time");
    }
    let errors = lock(&shared.setup_errors).join("; ");
    if !errors.is_empty() {
        w.setup_failed(&errors);
    }
    let tids: Vec<i32> = shared
        .tids
        .iter()
        .map(|t| t.load(Ordering::SeqCst))
        .collect();
    let main_state = w.setup("recording the main thread", ThreadState::record(false));
    let mut all_tids: Vec<i32> = std::iter::once(main_state.tid)
        .chain(tids.clone())
        .collect();
    let announced: Vec<String> = all_tids.iter().map(i32::to_string).collect();
    all_tids.sort();
    let listed = w.setup("listing /proc/self/task", task_list());
    if listed != all_tids {
        w.setup_failed(&format!(
            "/proc/self/task lists {listed:?}, the threads report {all_tids:?}"
        ));
    }
    w.announce("tids", announced.join(" "));
    w.announce("rseq", main_state.kernel.rseq().is_some());

    let mut checks = w.wait();
    w.common_checks(&mut checks);
    if let Some(listed) = checks.io("listing /proc/self/task", task_list()) {
        checks.eq("tids in /proc/self/task", &all_tids, &listed);
    }
    let mut f = Vec::new();
    main_state.check(&mut f);
    for what in f {
        checks.fail(format!("main thread: {what}"));
    }
    checks.eq(
        "the held mutex's owner (lock word) before its holder wakes",
        tids[HOLDER],
        HELD.owner_tid(),
    );
    let ret = HELD.try_lock();
    if ret != libc::EBUSY {
        checks.fail(format!(
            "pthread_mutex_trylock of thread {HOLDER}'s mutex by the main thread gave {}, \
             expected EBUSY",
            errno_name(ret)
        ));
        if ret == 0 || ret == libc::EOWNERDEAD {
            HELD.unlock();
        }
    }

    wake_everyone(&w, &shared, &pipe_writers, &mut checks);
    let reported = wait_for(REPORT_TIMEOUT, || {
        shared.done.load(Ordering::SeqCst) == THREADS
    });
    let reports = lock(&shared.reports).clone();
    for (i, report) in reports.iter().enumerate() {
        let tid = tids[i];
        let kind = KINDS[i];
        match report {
            Some(f) => {
                for what in f {
                    checks.fail(format!("thread {i} (tid {tid}, {kind:?} wait): {what}"));
                }
            }
            None => checks.fail(format!(
                "thread {i} (tid {tid}, {kind:?} wait) did not report within {REPORT_TIMEOUT:?} \
                 of being woken"
            )),
        }
    }
    if !reported {
        // Joining threads that never came back would only hang.
        w.finish(checks)
    }
    let ret = HELD.try_lock();
    if ret == 0 {
        HELD.unlock();
    } else {
        checks.fail(format!(
            "pthread_mutex_trylock after its holder unlocked it gave {}, expected 0",
            errno_name(ret)
        ));
    }
    for (i, t) in threads.into_iter().enumerate() {
        let ret = join_within(t.into_pthread_t());
        if ret != 0 {
            checks.fail(format!(
                "pthread_join of thread {i} (tid {}) gave {} after {JOIN_TIMEOUT:?}: the kernel \
                 did not clear and wake its clear_child_tid as it exited",
                tids[i],
                errno_name(ret)
            ));
        }
    }
    let ret = LEFT.lock_within(ROBUST_TIMEOUT);
    if ret == libc::EOWNERDEAD {
        LEFT.make_consistent();
        LEFT.unlock();
    } else {
        checks.fail(format!(
            "locking the robust mutex thread {HOLDER} exited holding gave {}, expected \
             EOWNERDEAD (the kernel releases it by walking the exiting thread's robust list)",
            errno_name(ret)
        ));
        if ret == 0 {
            LEFT.unlock();
        }
    }
    let me = vec![main_state.tid];
    let mut listed = Vec::new();
    let alone = wait_for(JOIN_TIMEOUT, || {
        listed = task_list().unwrap_or_default();
        listed == me
    });
    if !alone {
        checks.fail(format!(
            "/proc/self/task lists {listed:?} after every thread was joined, expected {me:?}"
        ));
    }
    w.finish(checks)
}

/// Wakes every thread the way it waits.
fn wake_everyone(w: &Workload, shared: &Shared, pipe_writers: &[i32], checks: &mut Checks) {
    shared.go.store(1, Ordering::SeqCst);
    // SAFETY: FUTEX_WAKE on the live go word wakes its waiters and touches no other memory.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_futex,
            shared.go.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            i32::MAX,
        )
    };
    checks.io("FUTEX_WAKE on the go word", sys::check(ret));
    {
        let (m, cv) = &shared.condvar;
        *lock(m) = true;
        cv.notify_all();
    }
    for &fd in pipe_writers {
        checks.io(
            "waking a reader thread through its pipe",
            sys::write(fd, &[protocol::TRIGGER_BYTE]),
        );
    }
    checks.io("creating the go file", std::fs::write(w.path(GO_FILE), b""));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_thread_blocks_a_mask_of_its_own() {
        let masks: Vec<u64> = (0..THREADS).map(thread_mask).collect();
        for (i, m) in masks.iter().enumerate() {
            assert!(
                m & sigbit(libc::SIGTERM) != 0,
                "thread {i} must block SIGTERM"
            );
            assert_eq!(m & sigbit(libc::SIGKILL), 0);
            assert!(!masks[..i].contains(m), "thread {i} shares a mask");
        }
    }

    #[test]
    fn waits_are_mixed_and_the_holder_waits_in_a_futex() {
        let count = |k: &[Wait]| KINDS.iter().filter(|w| k.contains(w)).count();
        assert!(count(&[Futex, Condvar]) >= 4);
        assert_eq!(count(&[Pipe]), 4);
        assert!(count(&[Nanosleep, ClockNanosleep, NanosleepRegs]) >= 3);
        assert_eq!(count(&[Spin, SpinRegs]), 2);
        assert_eq!(KINDS[HOLDER], Futex);
    }
}
