//! Kernel state of the calling thread that glibc sets up at start and that no `/proc` file or
//! register shows: the personality, the `clear_child_tid` address, the robust futex list and
//! the rseq registration. A restored task is a fresh copy of the engine, so each of these is
//! wrong unless the restore sets it again by its own system call.
//!
//! [`ThreadState::record`] reads them before the wait, [`ThreadState::compare`] after it.

use std::ffi::CStr;
use std::io;

use crate::regs;
use crate::runtime::Checks;
use crate::sys;

/// The personality flag every workload adds to its own before the wait: without it the
/// personality would be 0, the same as the engine's, and a restore that forgot it would pass.
/// It only changes how the next `execve` lays out memory, which no workload does.
pub const ADDED_PERSONALITY: u32 = libc::ADDR_NO_RANDOMIZE as u32;

/// The rseq signature glibc registers with on x86 (`RSEQ_SIG`).
const RSEQ_SIG: u32 = 0x5305_3053;

/// `personality(0xffffffff)`: the current personality, unchanged.
pub fn personality() -> io::Result<u32> {
    // SAFETY: personality(0xffffffff) only reads the calling task's personality.
    let ret = unsafe { libc::personality(0xffff_ffff) };
    sys::check(ret.into()).map(|v| v as u32)
}

/// Adds [`ADDED_PERSONALITY`] to the calling task's personality.
pub fn add_personality_flag() -> io::Result<()> {
    let now = personality()?;
    // SAFETY: personality takes a plain integer and touches no memory.
    let ret = unsafe { libc::personality((now | ADDED_PERSONALITY) as libc::c_ulong) };
    sys::check(ret.into()).map(drop)
}

/// The `clear_child_tid` address (`prctl(PR_GET_TID_ADDRESS)`): glibc points it at the
/// thread's tid field, which the kernel clears (and futex-wakes) when the thread exits.
pub fn tid_address() -> io::Result<u64> {
    let mut addr: u64 = 0;
    // SAFETY: PR_GET_TID_ADDRESS writes one pointer into `addr`, a live u64.
    let ret = unsafe {
        libc::prctl(
            libc::PR_GET_TID_ADDRESS,
            &mut addr as *mut u64 as libc::c_ulong,
            0,
            0,
            0,
        )
    };
    sys::check(ret.into()).map(|_| addr)
}

/// The robust futex list (`get_robust_list(0)`): head address and length.
pub fn robust_list() -> io::Result<(u64, u64)> {
    let (mut head, mut len) = (0u64, 0u64);
    // SAFETY: get_robust_list writes one pointer into `head` and one size into `len`.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_get_robust_list,
            0,
            &mut head as *mut u64,
            &mut len as *mut u64,
        )
    };
    sys::check(ret).map(|_| (head, len))
}

/// Where glibc's rseq area of the calling thread is and how long its registration is.
///
/// Why a probe and not the area's `cpu_id`: the kernel only writes `cpu_id` when the thread
/// is preempted, migrated or gets a signal, and the area keeps the last value written before
/// the dump when nothing is registered, so a stale `cpu_id >= 0` proves nothing. A
/// registration call instead answers at once and exactly: `rseq(area, len, 0, RSEQ_SIG)`
/// fails with EBUSY if and only if this very area, length and signature are registered
/// (EINVAL or EPERM if another one is, success if none is).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RseqArea {
    /// Thread pointer + `__rseq_offset`.
    pub addr: u64,
    /// The registered length.
    pub len: u32,
}

fn glibc_symbol(name: &CStr) -> Option<*const libc::c_void> {
    // SAFETY: `name` is a valid C string; RTLD_DEFAULT searches the loaded objects.
    let p = unsafe { libc::dlsym(libc::RTLD_DEFAULT, name.as_ptr()) };
    (!p.is_null()).then_some(p.cast_const())
}

/// `rseq(area, len, 0, RSEQ_SIG)`: `Err(errno)` or `Ok` if it registered the area.
fn rseq_register(area: RseqArea) -> Result<(), i32> {
    // SAFETY: rseq registration with an address of glibc's area in the static TLS block of
    // this thread, which lives as long as the thread. If no registration exists the kernel
    // takes this one, which is glibc's own area with glibc's own signature.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_rseq,
            area.addr,
            area.len as libc::c_ulong,
            0,
            RSEQ_SIG as libc::c_ulong,
        )
    };
    if ret == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    }
}

/// glibc's rseq area (from `__rseq_offset` and `__rseq_size`, glibc >= 2.35) and the length
/// it registered, found by probing: EBUSY names the registered length.
fn glibc_rseq_area() -> Result<RseqArea, String> {
    let (Some(offset), Some(size)) = (glibc_symbol(c"__rseq_offset"), glibc_symbol(c"__rseq_size"))
    else {
        return Err("this glibc has no __rseq_offset/__rseq_size (older than 2.35)".into());
    };
    // SAFETY: glibc defines __rseq_offset as a ptrdiff_t and __rseq_size as an unsigned int,
    // both constant after startup.
    let (offset, size) = unsafe { (*offset.cast::<isize>(), *size.cast::<u32>()) };
    if size == 0 {
        return Err("glibc did not register rseq (__rseq_size is 0)".into());
    }
    let addr = regs::fs_base().wrapping_add_signed(offset as i64);
    // glibc up to 2.39 registers 32 bytes and says so in __rseq_size; later ones publish the
    // used size (20, or the kernel's feature size) and register at least 32, rounded up.
    let mut lens = vec![32, size, size.next_multiple_of(32)];
    lens.sort_unstable();
    lens.dedup();
    let mut probes = Vec::new();
    for len in lens {
        let area = RseqArea { addr, len };
        match rseq_register(area) {
            Err(libc::EBUSY) => return Ok(area),
            r => probes.push(format!("len {len}: {r:?}")),
        }
    }
    Err(format!(
        "no probe of glibc's rseq area at {addr:#x} gave EBUSY ({})",
        probes.join(", ")
    ))
}

/// Records a failure naming `what` unless `found == expected`, both shown in hex.
fn eq_hex(checks: &mut Checks, what: &str, expected: u64, found: u64) {
    if expected != found {
        checks.fail(format!("{what}: found {found:#x}, expected {expected:#x}"));
    }
}

/// The thread state recorded before the wait.
#[derive(Debug)]
pub struct ThreadState {
    personality: u32,
    tid_address: u64,
    robust_list: (u64, u64),
    /// `None` where glibc registered no rseq area (an old glibc, or rseq turned off with
    /// `GLIBC_TUNABLES=glibc.pthread.rseq=0`): logged, and not checked.
    rseq: Option<RseqArea>,
}

impl ThreadState {
    /// Reads the calling thread's state. Fails if any of it is missing (a personality without
    /// [`ADDED_PERSONALITY`], no tid address, no robust list), since the checks would then
    /// prove nothing; a missing rseq registration is only logged, as glibc may be told not to
    /// make one.
    pub fn record() -> Result<ThreadState, String> {
        let personality = personality().map_err(|e| format!("personality: {e}"))?;
        if personality & ADDED_PERSONALITY == 0 {
            return Err(format!(
                "personality {personality:#x} lacks ADDR_NO_RANDOMIZE, added before recording"
            ));
        }
        let tid_address = tid_address().map_err(|e| format!("prctl(PR_GET_TID_ADDRESS): {e}"))?;
        let robust_list = robust_list().map_err(|e| format!("get_robust_list: {e}"))?;
        if tid_address == 0 || robust_list.0 == 0 {
            return Err(format!(
                "glibc set no tid address ({tid_address:#x}) or robust list ({:#x})",
                robust_list.0
            ));
        }
        let rseq = glibc_rseq_area()
            .inspect_err(|e| eprintln!("rseq registration not checked: {e}"))
            .ok();
        Ok(ThreadState {
            personality,
            tid_address,
            robust_list,
            rseq,
        })
    }

    /// glibc's rseq area as recorded, if it registered one.
    pub fn rseq(&self) -> Option<RseqArea> {
        self.rseq
    }

    /// Compares the calling thread's state with the recorded one.
    pub fn compare(&self, checks: &mut Checks) {
        if let Some(p) = checks.io("personality(0xffffffff)", personality()) {
            eq_hex(checks, "personality", self.personality.into(), p.into());
        }
        if let Some(a) = checks.io("prctl(PR_GET_TID_ADDRESS)", tid_address()) {
            eq_hex(checks, "clear_child_tid address", self.tid_address, a);
        }
        if let Some((head, len)) = checks.io("get_robust_list", robust_list()) {
            eq_hex(checks, "robust list head", self.robust_list.0, head);
            checks.eq("robust list length", self.robust_list.1, len);
        }
        let Some(area) = self.rseq else {
            return;
        };
        match rseq_register(area) {
            Err(libc::EBUSY) => {}
            Ok(()) => checks.fail(format!(
                "rseq registration lost: registering glibc's area {:#x} (len {}) again \
                 succeeded, expected EBUSY",
                area.addr, area.len
            )),
            Err(e) => checks.fail(format!(
                "rseq registration changed: registering glibc's area {:#x} (len {}) again \
                 failed with {}, expected EBUSY (EINVAL: another area or length, EPERM: \
                 another signature)",
                area.addr,
                area.len,
                io::Error::from_raw_os_error(e)
            )),
        }
    }
}
