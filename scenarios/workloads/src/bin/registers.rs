//! CPU state: general registers, vector registers, the x87 stack and control word, MXCSR,
//! and the fs base with a thread-local variable behind it.
//!
//! In the `spin` and `nanosleep-asm` wait modes the wait itself holds known values in r12-r15,
//! ymm8-ymm15 (xmm8-xmm15 without AVX) and two x87 stack slots, and checks them whenever it
//! leaves its `asm!` loop. In every mode it checks after the wait:
//! - MXCSR (DAZ and FTZ set) and the x87 control word (double precision), set at startup;
//! - a thread-local variable, and the fs base `arch_prctl(ARCH_GET_FS)` reports.

use std::cell::Cell;
use std::hint::black_box;

use crlab_workloads::regs;
use crlab_workloads::runtime::Workload;

/// Default 0x1f80 plus DAZ (0x40) and FTZ (0x8000): rounding and exception masks untouched.
const MXCSR: u32 = 0x1f80 | 0x40 | 0x8000;
/// Default 0x037f with precision control lowered from extended (11) to double (10).
const X87_CW: u16 = 0x027f;
const TLS_VALUE: u64 = 0x7150_7150_0000_0000;

thread_local! {
    static TLS_MARK: Cell<u64> = const { Cell::new(0) };
}

fn main() {
    let mut w = Workload::from_args("registers");
    regs::set_mxcsr(MXCSR);
    regs::set_x87_control_word(X87_CW);
    let tls_value = TLS_VALUE | std::process::id() as u64;
    TLS_MARK.with(|t| t.set(tls_value));
    let fs_base = regs::fs_base();
    let avx = regs::has_avx();
    w.announce("avx", avx);
    if regs::mxcsr() != MXCSR || regs::x87_control_word() != X87_CW {
        w.setup_failed("MXCSR or the x87 control word did not take the new value");
    }

    let mut checks = w.wait();
    checks.eq("MXCSR", MXCSR, regs::mxcsr());
    checks.eq("x87 control word", X87_CW, regs::x87_control_word());
    checks.eq("fs base", fs_base, regs::fs_base());
    checks.eq(
        "thread-local variable",
        tls_value,
        black_box(TLS_MARK.with(|t| t.get())),
    );
    w.finish(checks)
}
