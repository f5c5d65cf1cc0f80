//! Signal state: handlers, the blocked mask, queued signals, the alternate signal stack.
//!
//! Checks after the wait:
//! - SIGUSR1's handler (SA_SIGINFO | SA_RESTART | SA_ONSTACK, mask {SIGQUIT, SIGWINCH}) is the
//!   same; raised, it runs once, on the alternate stack, with SIGUSR1, its mask and the
//!   blocked mask blocked;
//! - SIGUSR2 is still ignored: raised, nothing happens and nothing stays pending;
//! - the blocked mask (SIGRTMIN, SIGRTMIN+1, SIGPROF on top of what it started with);
//! - pending signals: two SIGRTMIN queued to the process (shared queue, `ShdPnd`) with values
//!   and one SIGRTMIN+1 queued to the thread (`SigPnd`), taken back with `rt_sigtimedwait` in
//!   order, with their values, `SI_QUEUE` code and sender pid, and nothing more queued;
//! - `sigaltstack` reports the same stack, not in use.

use std::sync::atomic::{AtomicU64, Ordering};

use crlab_workloads::runtime::{Checks, Workload};
use crlab_workloads::sys::{self, sigbit, RawSigInfo};

const ALTSTACK_SIZE: usize = 64 * 1024;
const SHARED_VALUES: [u64; 2] = [0x5eed_0001, 0x5eed_0002];
const THREAD_VALUE: u64 = 0x7ead_0001;

static USR1_COUNT: AtomicU64 = AtomicU64::new(0);
static USR1_SP: AtomicU64 = AtomicU64::new(0);
static USR1_MASK: AtomicU64 = AtomicU64::new(0);

extern "C" fn on_usr1(_sig: libc::c_int, _info: *mut libc::siginfo_t, _ctx: *mut libc::c_void) {
    let local = 0u8;
    USR1_SP.store(
        std::hint::black_box(&local) as *const u8 as u64,
        Ordering::SeqCst,
    );
    USR1_MASK.store(sys::sigmask(), Ordering::SeqCst);
    USR1_COUNT.fetch_add(1, Ordering::SeqCst);
}

fn set_action(w: &Workload, sig: i32, handler: usize, flags: i32, mask: u64) {
    // SAFETY: sigaction is plain data; all-zero is a valid value.
    let mut sa: libc::sigaction = unsafe { std::mem::zeroed() };
    sa.sa_sigaction = handler;
    sa.sa_flags = flags;
    sa.sa_mask = sys::sigset_of(mask);
    // SAFETY: `sa` is a valid sigaction; the handler only touches atomics and makes one
    // async-signal-safe system call.
    let ret = unsafe { libc::sigaction(sig, &sa, std::ptr::null_mut()) };
    w.setup("sigaction", sys::check(ret.into()));
}

fn altstack() -> std::io::Result<libc::stack_t> {
    // SAFETY: stack_t is plain data; all-zero is a valid value.
    let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: a null new stack only reads the current one into `old`.
    let ret = unsafe { libc::sigaltstack(std::ptr::null(), &mut old) };
    sys::check(ret.into()).map(|_| old)
}

fn raise(sig: i32) -> std::io::Result<()> {
    // SAFETY: tgkill to our own thread; a signal that is not blocked is delivered before the
    // call returns.
    let ret = unsafe { libc::syscall(libc::SYS_tgkill, sys::getpid(), sys::gettid(), sig) };
    sys::check(ret).map(drop)
}

fn pending_bits(checks: &mut Checks, key: &str) -> u64 {
    checks
        .io("reading /proc/self/status", sys::status_field(key))
        .and_then(|v| u64::from_str_radix(&v, 16).ok())
        .unwrap_or(0)
}

fn main() {
    let mut w = Workload::from_args("signals");
    let rtmin = libc::SIGRTMIN();

    // Alternate signal stack.
    // SAFETY: a fresh anonymous mapping touches no existing memory.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            ALTSTACK_SIZE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        w.setup_failed("mmap for the alternate signal stack");
    }
    let ss = libc::stack_t {
        ss_sp: stack,
        ss_flags: 0,
        ss_size: ALTSTACK_SIZE,
    };
    // SAFETY: `ss` describes the mapping just made, which is never unmapped.
    let ret = unsafe { libc::sigaltstack(&ss, std::ptr::null_mut()) };
    w.setup("sigaltstack", sys::check(ret.into()));

    // Handlers.
    let handler =
        on_usr1 as extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) as usize;
    let usr1_mask = sigbit(libc::SIGQUIT) | sigbit(libc::SIGWINCH);
    set_action(
        &w,
        libc::SIGUSR1,
        handler,
        libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK,
        usr1_mask,
    );
    set_action(&w, libc::SIGUSR2, libc::SIG_IGN, 0, 0);
    let usr1_action = w.setup("reading SIGUSR1's action", sys::sigaction_of(libc::SIGUSR1));
    let usr2_action = w.setup("reading SIGUSR2's action", sys::sigaction_of(libc::SIGUSR2));

    // Blocked mask and queued signals.
    let blocked = sys::sigmask() | sigbit(rtmin) | sigbit(rtmin + 1) | sigbit(libc::SIGPROF);
    w.setup("blocking signals", sys::set_sigmask(blocked));
    for v in SHARED_VALUES {
        w.setup(
            "queueing SIGRTMIN to the process",
            sys::queue_to_process(&RawSigInfo::queued(rtmin, v)),
        );
    }
    w.setup(
        "queueing SIGRTMIN+1 to the thread",
        sys::queue_to_thread(&RawSigInfo::queued(rtmin + 1, THREAD_VALUE)),
    );
    let alt_before = w.setup("reading the alternate stack", altstack());

    let mut checks = w.wait();
    w.common_checks(&mut checks);
    // The blocked mask outside the wait is part of the common checks (it may also hold the
    // trigger signal); check it still holds ours.
    let mask_now = sys::sigmask();
    checks.eq("blocked signals set up", blocked, mask_now & blocked);

    // Handlers.
    if let Some(now) = checks.io("reading SIGUSR1's action", sys::sigaction_of(libc::SIGUSR1)) {
        checks.eq("SIGUSR1 action (handler, flags, mask)", usr1_action, now);
        checks.eq("SIGUSR1 handler", handler, now.0);
        let want = (libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK) as u64;
        checks.eq(
            "SIGUSR1 flags SA_SIGINFO|SA_RESTART|SA_ONSTACK",
            want,
            now.1 & want,
        );
        checks.eq("SIGUSR1 handler mask", usr1_mask, now.2);
    }
    if let Some(now) = checks.io("reading SIGUSR2's action", sys::sigaction_of(libc::SIGUSR2)) {
        checks.eq("SIGUSR2 action", usr2_action, now);
        checks.eq("SIGUSR2 handler (SIG_IGN)", libc::SIG_IGN, now.0);
    }

    // Pending signals: which queue they are in, then their content.
    let shared = pending_bits(&mut checks, "ShdPnd");
    let thread = pending_bits(&mut checks, "SigPnd");
    checks.eq(
        "process-wide pending signals (ShdPnd)",
        sigbit(rtmin),
        shared,
    );
    checks.eq("thread pending signals (SigPnd)", sigbit(rtmin + 1), thread);
    for (i, v) in SHARED_VALUES.iter().enumerate() {
        take_queued(
            &mut checks,
            &format!("queued SIGRTMIN #{i}"),
            rtmin,
            Some(*v),
        );
    }
    take_queued(&mut checks, "third SIGRTMIN", rtmin, None);
    take_queued(
        &mut checks,
        "queued SIGRTMIN+1",
        rtmin + 1,
        Some(THREAD_VALUE),
    );
    take_queued(&mut checks, "second SIGRTMIN+1", rtmin + 1, None);

    // The alternate stack, then a handler running on it.
    if let Some(now) = checks.io("reading the alternate stack", altstack()) {
        checks.eq(
            "sigaltstack ss_sp",
            alt_before.ss_sp as u64,
            now.ss_sp as u64,
        );
        checks.eq("sigaltstack ss_size", alt_before.ss_size, now.ss_size);
        checks.eq("sigaltstack ss_flags", 0, now.ss_flags);
    }
    if checks.io("raising SIGUSR1", raise(libc::SIGUSR1)).is_some() {
        checks.eq("SIGUSR1 handler runs", 1, USR1_COUNT.load(Ordering::SeqCst));
        let sp = USR1_SP.load(Ordering::SeqCst);
        let lo = stack as u64;
        checks.that(
            (lo..lo + ALTSTACK_SIZE as u64).contains(&sp),
            &format!("SIGUSR1 handler ran at sp {sp:#x}, outside the alternate stack {lo:#x}"),
        );
        let want = mask_now | usr1_mask | sigbit(libc::SIGUSR1);
        checks.eq(
            "blocked mask inside the SIGUSR1 handler",
            want,
            USR1_MASK.load(Ordering::SeqCst),
        );
        checks.eq(
            "blocked mask after the SIGUSR1 handler",
            mask_now,
            sys::sigmask(),
        );
    }
    if checks.io("raising SIGUSR2", raise(libc::SIGUSR2)).is_some() {
        let pending = pending_bits(&mut checks, "SigPnd") | pending_bits(&mut checks, "ShdPnd");
        checks.eq(
            "pending after raising the ignored SIGUSR2",
            0,
            pending & sigbit(libc::SIGUSR2),
        );
        checks.eq(
            "SIGUSR1 handler runs after SIGUSR2",
            1,
            USR1_COUNT.load(Ordering::SeqCst),
        );
    }
    w.finish(checks)
}

fn take_queued(checks: &mut Checks, what: &str, sig: i32, value: Option<u64>) {
    let Some(got) = checks.io(what, sys::take_pending(sigbit(sig))) else {
        return;
    };
    match (value, got) {
        (None, None) => {}
        (None, Some(info)) => checks.fail(format!("{what}: pending, with value {:#x}", info.value)),
        (Some(_), None) => checks.fail(format!("{what}: not pending")),
        (Some(v), Some(info)) => {
            checks.eq(&format!("{what}: signal"), sig, info.signo);
            checks.eq(&format!("{what}: value"), v, info.value);
            checks.eq(&format!("{what}: si_code"), libc::SI_QUEUE, info.code);
            checks.eq(&format!("{what}: sender pid"), sys::getpid(), info.pid);
        }
    }
}
