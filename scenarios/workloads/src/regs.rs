//! Register state held in `asm!` loops (callee-saved general registers, xmm/ymm, the x87
//! stack) and the FPU control registers, MXCSR and the fs base.

use std::arch::asm;
use std::ffi::CStr;

/// Iterations of the spin loop between two looks at the registers and the check file.
pub const SPIN_ITERATIONS: u64 = 1 << 28;

/// The values an `asm!` loop holds in registers, and the values it found there at its end.
#[repr(C, align(32))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RegFile {
    /// r12, r13, r14, r15 (offset 0).
    pub gp: [u64; 4],
    /// ymm8 to ymm15 as four u64 each (offset 32); without AVX only the low two (xmm) are used.
    pub vec: [[u64; 4]; 8],
    /// Bit patterns of two doubles pushed on the x87 stack (offset 288).
    pub x87: [u64; 2],
}

const _: () = {
    assert!(std::mem::offset_of!(RegFile, gp) == 0);
    assert!(std::mem::offset_of!(RegFile, vec) == 32);
    assert!(std::mem::offset_of!(RegFile, x87) == 288);
};

impl RegFile {
    /// The known values, with the ymm upper halves used only when `avx` is true.
    pub fn known(avx: bool) -> RegFile {
        let mut vec = [[0u64; 4]; 8];
        for (r, lanes) in vec.iter_mut().enumerate() {
            for (l, lane) in lanes.iter_mut().enumerate() {
                if l < 2 || avx {
                    *lane = 0x7e57_0000_0000_0000 | ((r as u64 + 8) << 16) | (l as u64 + 1);
                }
            }
        }
        RegFile {
            gp: [
                0x1212_1212_0c0c_0c0c,
                0x1313_1313_0d0d_0d0d,
                0x1414_1414_0e0e_0e0e,
                0x1515_1515_0f0f_0f0f,
            ],
            vec,
            x87: [
                std::f64::consts::PI.to_bits(),
                (-2.718_281_828_459_045e300_f64).to_bits(),
            ],
        }
    }

    fn zeroed() -> RegFile {
        RegFile {
            gp: [0; 4],
            vec: [[0; 4]; 8],
            x87: [0; 2],
        }
    }

    /// What differs between the expected (`self`) and the found values, `None` if nothing.
    pub fn diff(&self, found: &RegFile) -> Option<String> {
        let mut out = Vec::new();
        for (i, (e, f)) in self.gp.iter().zip(found.gp).enumerate() {
            if *e != f {
                out.push(format!("r{} is {f:#x}, expected {e:#x}", 12 + i));
            }
        }
        for (i, (e, f)) in self.vec.iter().zip(found.vec).enumerate() {
            if *e != f {
                out.push(format!("ymm{} is {f:x?}, expected {e:x?}", 8 + i));
            }
        }
        for (i, (e, f)) in self.x87.iter().zip(found.x87).enumerate() {
            if *e != f {
                out.push(format!("x87 st({i}) bits are {f:#x}, expected {e:#x}"));
            }
        }
        (!out.is_empty()).then(|| out.join(", "))
    }
}

/// Whether this CPU (and kernel) let user space use AVX.
pub fn has_avx() -> bool {
    std::arch::is_x86_feature_detected!("avx")
}

/// Spins in user space until the check file exists, checking the held registers every
/// [`SPIN_ITERATIONS`]. Err names the registers that changed.
pub fn spin_until(check: &CStr) -> Result<(), String> {
    let avx = has_avx();
    let known = RegFile::known(avx);
    loop {
        let mut found = RegFile::zeroed();
        if avx {
            // SAFETY: AVX is available (checked above); `known` and `found` are live,
            // 32-byte-aligned RegFiles the asm reads and writes at fixed offsets.
            unsafe { spin_avx(SPIN_ITERATIONS, &known, &mut found) };
        } else {
            // SAFETY: as above, with SSE2 only (always there on x86_64).
            unsafe { spin_sse(SPIN_ITERATIONS, &known, &mut found) };
        }
        if let Some(diff) = known.diff(&found) {
            return Err(format!("registers changed in the spin loop: {diff}"));
        }
        // SAFETY: `check` is a valid NUL-terminated path.
        if unsafe { libc::access(check.as_ptr(), libc::F_OK) } == 0 {
            return Ok(());
        }
    }
}

/// Loops in raw `nanosleep(100 ms)` and `access(check)` system calls until the check file
/// exists, holding the known registers across them. Err names the registers that changed, or
/// what a `nanosleep` returned if it was not 0: no handler runs during the wait, so the kernel
/// restarts an interrupted sleep, and a restore must do the same with the sleep it
/// interrupted; -EINTR or a kernel-internal -ERESTART* code here means it did not (the
/// libc wait modes see the same as a failed call, this one would otherwise just loop on).
pub fn nanosleep_asm_until(check: &CStr, long: bool) -> Result<(), String> {
    let avx = has_avx();
    let known = RegFile::known(avx);
    let mut found = RegFile::zeroed();
    // Long enough that a dump nearly always finds the sleep in progress (and the restore has
    // to restart it), even on a loaded machine where the woken task waits for a CPU: with
    // 10 ms sleeps one dump in five found it between two sleeps and a broken restart rule
    // went unnoticed.
    let ts = if long {
        libc::timespec {
            tv_sec: crate::protocol::LONG_SLEEP_SECS,
            tv_nsec: 0,
        }
    } else {
        libc::timespec {
            tv_sec: 0,
            tv_nsec: 100_000_000,
        }
    };
    let slept = if avx {
        // SAFETY: AVX is available; `known`, `found`, `ts` and `check` outlive the call.
        unsafe { nanosleep_avx(&known, &mut found, &ts, check) }
    } else {
        // SAFETY: as above, SSE2 only.
        unsafe { nanosleep_sse(&known, &mut found, &ts, check) }
    };
    let mut failures = Vec::new();
    if slept != 0 {
        failures.push(format!(
            "a raw nanosleep returned {slept} ({}), expected 0",
            syscall_error_name(slept)
        ));
    }
    if let Some(diff) = known.diff(&found) {
        failures.push(format!("registers changed across nanosleep: {diff}"));
    }
    if failures.is_empty() {
        Ok(())
    } else {
        Err(failures.join("; "))
    }
}

/// The name of a negative system call result, including the kernel-internal restart codes
/// that must never reach user space.
fn syscall_error_name(ret: i64) -> String {
    match -ret {
        512 => "ERESTARTSYS, a restart code leaked to user space".into(),
        513 => "ERESTARTNOINTR, a restart code leaked to user space".into(),
        514 => "ERESTARTNOHAND, a restart code leaked to user space".into(),
        516 => "ERESTART_RESTARTBLOCK, a restart code leaked to user space".into(),
        e if (1..4096).contains(&e) => std::io::Error::from_raw_os_error(e as i32).to_string(),
        _ => "not an error code".into(),
    }
}

/// Loads the held registers from `i`, runs `body`, stores them into `o`. The x87 stack is empty
/// on entry and exit as the ABI wants; everything touched is declared clobbered.
macro_rules! hold_registers {
    (avx, $body:literal, $($operands:tt)*) => {
        asm!(
            "vmovdqu ymm8, [{i} + 32]",
            "vmovdqu ymm9, [{i} + 64]",
            "vmovdqu ymm10, [{i} + 96]",
            "vmovdqu ymm11, [{i} + 128]",
            "vmovdqu ymm12, [{i} + 160]",
            "vmovdqu ymm13, [{i} + 192]",
            "vmovdqu ymm14, [{i} + 224]",
            "vmovdqu ymm15, [{i} + 256]",
            "fld qword ptr [{i} + 288]",
            "fld qword ptr [{i} + 296]",
            "mov r12, [{i}]",
            "mov r13, [{i} + 8]",
            "mov r14, [{i} + 16]",
            "mov r15, [{i} + 24]",
            $body,
            "mov [{o}], r12",
            "mov [{o} + 8], r13",
            "mov [{o} + 16], r14",
            "mov [{o} + 24], r15",
            "fstp qword ptr [{o} + 296]",
            "fstp qword ptr [{o} + 288]",
            "vmovdqu [{o} + 32], ymm8",
            "vmovdqu [{o} + 64], ymm9",
            "vmovdqu [{o} + 96], ymm10",
            "vmovdqu [{o} + 128], ymm11",
            "vmovdqu [{o} + 160], ymm12",
            "vmovdqu [{o} + 192], ymm13",
            "vmovdqu [{o} + 224], ymm14",
            "vmovdqu [{o} + 256], ymm15",
            "vzeroupper",
            $($operands)*
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
            out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
            out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
            out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
            options(nostack),
        )
    };
    (sse, $body:literal, $($operands:tt)*) => {
        asm!(
            "movdqu xmm8, [{i} + 32]",
            "movdqu xmm9, [{i} + 64]",
            "movdqu xmm10, [{i} + 96]",
            "movdqu xmm11, [{i} + 128]",
            "movdqu xmm12, [{i} + 160]",
            "movdqu xmm13, [{i} + 192]",
            "movdqu xmm14, [{i} + 224]",
            "movdqu xmm15, [{i} + 256]",
            "fld qword ptr [{i} + 288]",
            "fld qword ptr [{i} + 296]",
            "mov r12, [{i}]",
            "mov r13, [{i} + 8]",
            "mov r14, [{i} + 16]",
            "mov r15, [{i} + 24]",
            $body,
            "mov [{o}], r12",
            "mov [{o} + 8], r13",
            "mov [{o} + 16], r14",
            "mov [{o} + 24], r15",
            "fstp qword ptr [{o} + 296]",
            "fstp qword ptr [{o} + 288]",
            "movdqu [{o} + 32], xmm8",
            "movdqu [{o} + 64], xmm9",
            "movdqu [{o} + 96], xmm10",
            "movdqu [{o} + 128], xmm11",
            "movdqu [{o} + 160], xmm12",
            "movdqu [{o} + 192], xmm13",
            "movdqu [{o} + 224], xmm14",
            "movdqu [{o} + 256], xmm15",
            $($operands)*
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            out("st(0)") _, out("st(1)") _, out("st(2)") _, out("st(3)") _,
            out("st(4)") _, out("st(5)") _, out("st(6)") _, out("st(7)") _,
            options(nostack),
        )
    };
}

/// The spin body: a counted loop whose adds and xors cancel out, so the held values only
/// survive if nothing else touches them.
#[target_feature(enable = "avx")]
unsafe fn spin_avx(iterations: u64, known: &RegFile, found: &mut RegFile) {
    // SAFETY: the caller guarantees AVX; `i`/`o` point to live RegFiles laid out as the
    // offsets above assume (repr(C)); every register written is an output or clobber.
    unsafe {
        hold_registers!(
            avx,
            "2:\n add r12, r13\n sub r12, r13\n vpxor ymm8, ymm8, ymm9\n vpxor ymm8, ymm8, ymm9\n dec {n}\n jnz 2b",
            i = in(reg) known as *const RegFile,
            o = in(reg) found as *mut RegFile,
            n = inout(reg) iterations => _,
        );
    }
}

unsafe fn spin_sse(iterations: u64, known: &RegFile, found: &mut RegFile) {
    // SAFETY: as in spin_avx, with SSE2 instructions only.
    unsafe {
        hold_registers!(
            sse,
            "2:\n add r12, r13\n sub r12, r13\n pxor xmm8, xmm9\n pxor xmm8, xmm9\n dec {n}\n jnz 2b",
            i = in(reg) known as *const RegFile,
            o = in(reg) found as *mut RegFile,
            n = inout(reg) iterations => _,
        );
    }
}

/// `nanosleep(ts)` (35), then `access(path, F_OK)` (21), until access returns 0 or a
/// nanosleep returns anything but 0; returns 0 or that nanosleep's result.
#[target_feature(enable = "avx")]
unsafe fn nanosleep_avx(
    known: &RegFile,
    found: &mut RegFile,
    ts: &libc::timespec,
    path: &CStr,
) -> i64 {
    let ret: i64;
    // SAFETY: the caller guarantees AVX; the pointers are live; the syscall clobbers (rax,
    // rcx, r11 and the argument registers) are declared.
    unsafe {
        hold_registers!(
            avx,
            "2:\n mov eax, 35\n mov rdi, {ts}\n xor esi, esi\n syscall\n test rax, rax\n jnz 3f\n mov eax, 21\n mov rdi, {path}\n xor esi, esi\n syscall\n test rax, rax\n jnz 2b\n 3:",
            i = in(reg) known as *const RegFile,
            o = in(reg) found as *mut RegFile,
            ts = in(reg) ts as *const libc::timespec,
            path = in(reg) path.as_ptr(),
            out("rax") ret, out("rdi") _, out("rsi") _, out("rcx") _, out("r11") _,
        );
    }
    ret
}

unsafe fn nanosleep_sse(
    known: &RegFile,
    found: &mut RegFile,
    ts: &libc::timespec,
    path: &CStr,
) -> i64 {
    let ret: i64;
    // SAFETY: as in nanosleep_avx, with SSE2 instructions only.
    unsafe {
        hold_registers!(
            sse,
            "2:\n mov eax, 35\n mov rdi, {ts}\n xor esi, esi\n syscall\n test rax, rax\n jnz 3f\n mov eax, 21\n mov rdi, {path}\n xor esi, esi\n syscall\n test rax, rax\n jnz 2b\n 3:",
            i = in(reg) known as *const RegFile,
            o = in(reg) found as *mut RegFile,
            ts = in(reg) ts as *const libc::timespec,
            path = in(reg) path.as_ptr(),
            out("rax") ret, out("rdi") _, out("rsi") _, out("rcx") _, out("r11") _,
        );
    }
    ret
}

/// The MXCSR register.
pub fn mxcsr() -> u32 {
    let mut v: u32 = 0;
    // SAFETY: stmxcsr stores 4 bytes into `v`, a live u32.
    unsafe { asm!("stmxcsr [{}]", in(reg) &mut v as *mut u32, options(nostack)) };
    v
}

/// Loads MXCSR. Only the denormal bits (DAZ, FTZ) should be changed: Rust code assumes
/// round-to-nearest and masked exceptions.
pub fn set_mxcsr(v: u32) {
    // SAFETY: ldmxcsr reads 4 bytes from `v`; callers keep rounding and exception masks at
    // their defaults, which is all compiled code relies on.
    unsafe { asm!("ldmxcsr [{}]", in(reg) &v as *const u32, options(nostack, readonly)) };
}

/// The x87 control word.
pub fn x87_control_word() -> u16 {
    let mut v: u16 = 0;
    // SAFETY: fnstcw stores 2 bytes into `v`, a live u16.
    unsafe { asm!("fnstcw [{}]", in(reg) &mut v as *mut u16, options(nostack)) };
    v
}

/// Loads the x87 control word. x86_64 Rust code does no x87 arithmetic, so changing the
/// precision control affects nothing but what is checked.
pub fn set_x87_control_word(v: u16) {
    // SAFETY: fldcw reads 2 bytes from `v`; only the asm above uses the x87 unit.
    unsafe { asm!("fldcw [{}]", in(reg) &v as *const u16, options(nostack, readonly)) };
}

/// The fs base (the thread pointer), from `arch_prctl(ARCH_GET_FS)`.
pub fn fs_base() -> u64 {
    const ARCH_GET_FS: libc::c_int = 0x1003;
    let mut v: u64 = 0;
    // SAFETY: ARCH_GET_FS writes 8 bytes to the address given, a live u64.
    unsafe { libc::syscall(libc::SYS_arch_prctl, ARCH_GET_FS, &mut v as *mut u64) };
    v
}
