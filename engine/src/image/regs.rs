//! The general-purpose registers of a thread, between the kernel's `struct user_regs_struct`
//! ([`Regs`]) and the image's [`GpRegs`]: field by field, both ways.

use super::schema::GpRegs;
use crate::sys::Regs;

impl From<&Regs> for GpRegs {
    fn from(r: &Regs) -> GpRegs {
        GpRegs {
            r15: r.r15,
            r14: r.r14,
            r13: r.r13,
            r12: r.r12,
            rbp: r.rbp,
            rbx: r.rbx,
            r11: r.r11,
            r10: r.r10,
            r9: r.r9,
            r8: r.r8,
            rax: r.rax,
            rcx: r.rcx,
            rdx: r.rdx,
            rsi: r.rsi,
            rdi: r.rdi,
            orig_rax: r.orig_rax,
            rip: r.rip,
            cs: r.cs,
            eflags: r.eflags,
            rsp: r.rsp,
            ss: r.ss,
            fs_base: r.fs_base,
            gs_base: r.gs_base,
            ds: r.ds,
            es: r.es,
            fs: r.fs,
            gs: r.gs,
        }
    }
}

impl From<&GpRegs> for Regs {
    fn from(g: &GpRegs) -> Regs {
        Regs {
            r15: g.r15,
            r14: g.r14,
            r13: g.r13,
            r12: g.r12,
            rbp: g.rbp,
            rbx: g.rbx,
            r11: g.r11,
            r10: g.r10,
            r9: g.r9,
            r8: g.r8,
            rax: g.rax,
            rcx: g.rcx,
            rdx: g.rdx,
            rsi: g.rsi,
            rdi: g.rdi,
            orig_rax: g.orig_rax,
            rip: g.rip,
            cs: g.cs,
            eflags: g.eflags,
            rsp: g.rsp,
            ss: g.ss,
            fs_base: g.fs_base,
            gs_base: g.gs_base,
            ds: g.ds,
            es: g.es,
            fs: g.fs,
            gs: g.gs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registers_survive_the_round_trip() {
        let g = GpRegs {
            r15: 1,
            rax: 2,
            orig_rax: u64::MAX,
            rip: 0x7f00_0000_1000,
            rsp: 0x7ffd_0000_0000,
            fs_base: 0x7f00_dead_0000,
            gs: 3,
            ..GpRegs::default()
        };
        let r = Regs::from(&g);
        assert_eq!((r.r15, r.rax, r.rip, r.gs), (1, 2, 0x7f00_0000_1000, 3));
        assert_eq!(GpRegs::from(&r), g);
    }
}
