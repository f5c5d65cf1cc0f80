//! Values of a task's own held in callee-saved general registers (r12-r15) and vector registers
//! (xmm8-xmm15) across one raw system call or a user-space spin, then read back.
//!
//! [`crate::regs`] holds one fixed set of values (with ymm upper halves and the x87 stack); this
//! holds a set derived from a seed, so tasks that wait side by side each hold different values
//! and a restore that gives one task another's registers shows up.

use std::arch::asm;
use std::sync::atomic::AtomicU32;

/// The values held, and the values found at the end.
#[repr(C, align(16))]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Held {
    /// r12, r13, r14, r15 (offset 0).
    pub gp: [u64; 4],
    /// xmm8 to xmm15 as two u64 each (offset 32).
    pub xmm: [[u64; 2]; 8],
}

const _: () = {
    assert!(std::mem::offset_of!(Held, gp) == 0);
    assert!(std::mem::offset_of!(Held, xmm) == 32);
    assert!(std::mem::size_of::<Held>() == 160);
};

impl Held {
    /// Values derived from `seed`: different seeds give different values in every register.
    pub fn from_seed(seed: u64) -> Held {
        let mix = |n: u64| {
            let mut x = seed.wrapping_add(n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
            x ^= x >> 30;
            x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x ^= x >> 27;
            // The seed stays readable in the high half, so a diff shows whose values they are.
            (seed << 48) | (x & 0x0000_ffff_ffff_ffff)
        };
        let mut xmm = [[0u64; 2]; 8];
        for (r, lanes) in xmm.iter_mut().enumerate() {
            for (l, lane) in lanes.iter_mut().enumerate() {
                *lane = mix(16 + 2 * r as u64 + l as u64);
            }
        }
        Held {
            gp: [mix(0), mix(1), mix(2), mix(3)],
            xmm,
        }
    }

    fn zeroed() -> Held {
        Held {
            gp: [0; 4],
            xmm: [[0; 2]; 8],
        }
    }

    /// What differs between the expected (`self`) and the found values, `None` if nothing.
    pub fn diff(&self, found: &Held) -> Option<String> {
        let mut out = Vec::new();
        for (i, (e, f)) in self.gp.iter().zip(found.gp).enumerate() {
            if *e != f {
                out.push(format!("r{} is {f:#x}, expected {e:#x}", 12 + i));
            }
        }
        for (i, (e, f)) in self.xmm.iter().zip(found.xmm).enumerate() {
            if *e != f {
                out.push(format!("xmm{} is {f:x?}, expected {e:x?}", 8 + i));
            }
        }
        (!out.is_empty()).then(|| out.join(", "))
    }
}

/// Loads the held registers from `i`, runs `body`, stores them into `o`; everything touched is
/// declared clobbered.
macro_rules! hold {
    ($body:literal, $($operands:tt)*) => {
        asm!(
            "movdqu xmm8, [{i} + 32]",
            "movdqu xmm9, [{i} + 48]",
            "movdqu xmm10, [{i} + 64]",
            "movdqu xmm11, [{i} + 80]",
            "movdqu xmm12, [{i} + 96]",
            "movdqu xmm13, [{i} + 112]",
            "movdqu xmm14, [{i} + 128]",
            "movdqu xmm15, [{i} + 144]",
            "mov r12, [{i}]",
            "mov r13, [{i} + 8]",
            "mov r14, [{i} + 16]",
            "mov r15, [{i} + 24]",
            $body,
            "mov [{o}], r12",
            "mov [{o} + 8], r13",
            "mov [{o} + 16], r14",
            "mov [{o} + 24], r15",
            "movdqu [{o} + 32], xmm8",
            "movdqu [{o} + 48], xmm9",
            "movdqu [{o} + 64], xmm10",
            "movdqu [{o} + 80], xmm11",
            "movdqu [{o} + 96], xmm12",
            "movdqu [{o} + 112], xmm13",
            "movdqu [{o} + 128], xmm14",
            "movdqu [{o} + 144], xmm15",
            $($operands)*
            out("r12") _, out("r13") _, out("r14") _, out("r15") _,
            out("xmm8") _, out("xmm9") _, out("xmm10") _, out("xmm11") _,
            out("xmm12") _, out("xmm13") _, out("xmm14") _, out("xmm15") _,
            options(nostack),
        )
    };
}

/// Makes system call `nr` with `args` (rdi, rsi, rdx, r10) while holding `known`; returns the
/// raw result (a negative errno on failure) and the values found in the registers afterwards.
///
/// # Safety
/// The system call must be one whose arguments are valid for it (pointers to live memory of
/// the right size) and which leaves the calling thread's memory and stack as Rust expects
/// (no `clone`, `exit`, `munmap` of live memory, ...).
pub unsafe fn syscall_holding(known: &Held, nr: i64, args: [u64; 4]) -> (i64, Held) {
    let mut found = Held::zeroed();
    let ret: i64;
    // SAFETY: `i` and `o` point to live, 16-byte-aligned Helds read and written at the offsets
    // asserted above; the kernel's clobbers (rax, rcx, r11) and the argument registers are
    // declared; the caller guarantees the system call itself is sound.
    unsafe {
        hold!(
            "syscall",
            i = in(reg) known as *const Held,
            o = in(reg) &mut found as *mut Held,
            inlateout("rax") nr => ret,
            in("rdi") args[0], in("rsi") args[1], in("rdx") args[2], in("r10") args[3],
            lateout("rcx") _, lateout("r11") _,
        );
    }
    (ret, found)
}

/// Spins in user space while `flag` is 0, holding `known`; returns the values found in the
/// registers once it is not.
pub fn spin_holding(known: &Held, flag: &AtomicU32) -> Held {
    let mut found = Held::zeroed();
    // SAFETY: `i` and `o` point to live Helds as in `syscall_holding`; `flag` points to a live
    // AtomicU32, which the loop only reads with a plain aligned 4-byte load (atomic on x86_64);
    // eax is declared clobbered.
    unsafe {
        hold!(
            "2:\n add r12, r13\n sub r12, r13\n pxor xmm8, xmm9\n pxor xmm8, xmm9\n pause\n mov eax, dword ptr [{flag}]\n test eax, eax\n jz 2b",
            i = in(reg) known as *const Held,
            o = in(reg) &mut found as *mut Held,
            flag = in(reg) flag.as_ptr(),
            out("eax") _,
        );
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::Ordering;

    #[test]
    fn values_survive_a_system_call() {
        let known = Held::from_seed(7);
        // SAFETY: getpid takes no arguments.
        let (ret, found) = unsafe { syscall_holding(&known, libc::SYS_getpid, [0; 4]) };
        assert_eq!(ret, i64::from(std::process::id()));
        assert_eq!(known.diff(&found), None);
    }

    #[test]
    fn values_survive_a_spin() {
        let known = Held::from_seed(3);
        let flag = AtomicU32::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                std::thread::sleep(std::time::Duration::from_millis(20));
                flag.store(1, Ordering::SeqCst);
            });
            assert_eq!(known.diff(&spin_holding(&known, &flag)), None);
        });
    }

    #[test]
    fn seeds_give_different_values_everywhere() {
        let (a, b) = (Held::from_seed(1), Held::from_seed(2));
        assert!(a.gp.iter().zip(b.gp).all(|(x, y)| *x != y));
        assert!(a
            .xmm
            .iter()
            .zip(b.xmm)
            .all(|(x, y)| x[0] != y[0] && x[1] != y[1]));
        let diff = a.diff(&b).unwrap_or_default();
        assert!(diff.contains("r12") && diff.contains("xmm15"), "{diff}");
    }
}
