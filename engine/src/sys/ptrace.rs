//! One traced thread: seizing, stopping, registers, FPU state, signal state.

use super::SysError;
use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;

/// General-purpose registers (`struct user_regs_struct`).
pub type Regs = libc::user_regs_struct;

/// Registers all zero, for tests.
#[cfg(test)]
pub fn zeroed_regs() -> Regs {
    // SAFETY: user_regs_struct is plain integers; all zeroes is a valid value.
    unsafe { std::mem::zeroed() }
}

const NT_X86_XSTATE: libc::c_int = 0x202;
const PTRACE_GETSIGMASK: libc::c_uint = 0x420a;
const PTRACE_SETSIGMASK: libc::c_uint = 0x420b;
const PTRACE_PEEKSIGINFO: libc::c_uint = 0x4209;
const PTRACE_PEEKSIGINFO_SHARED: u32 = 1;
const PTRACE_GET_RSEQ_CONFIGURATION: libc::c_uint = 0x420f;
/// The XSAVE area is at most this large on current CPUs (AMX included).
const XSTATE_MAX: usize = 16 * 1024;
/// How many queued signals one `PTRACE_PEEKSIGINFO` asks for.
const PEEK_BATCH: i32 = 32;
/// A queued signal's siginfo as the kernel copies it out.
pub const SIGINFO_SIZE: usize = 128;

#[repr(C)]
struct PeekSiginfoArgs {
    off: u64,
    flags: u32,
    nr: i32,
}

/// `struct ptrace_rseq_configuration`.
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct RseqConfig {
    pub rseq_abi_pointer: u64,
    pub rseq_abi_size: u32,
    pub signature: u32,
    pub flags: u32,
    pub pad: u32,
}

/// A thread this process traces. It does not detach on drop: the owner decides
/// (roll back and detach on a failed dump, kill on a failed restore).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tracee {
    pub tid: i32,
}

fn call_err(op: &'static str, tid: i32) -> impl FnOnce(Errno) -> SysError {
    move |source| SysError::Call { op, tid, source }
}

impl Tracee {
    fn pid(&self) -> Pid {
        Pid::from_raw(self.tid)
    }

    /// `PTRACE_SEIZE` with `PTRACE_O_TRACESYSGOOD`, then `PTRACE_INTERRUPT`;
    /// does not wait for the stop (see [`Tracee::wait_interrupt_stop`]).
    pub fn seize_and_interrupt(tid: i32) -> Result<Tracee, SysError> {
        let t = Tracee { tid };
        ptrace::seize(t.pid(), ptrace::Options::PTRACE_O_TRACESYSGOOD)
            .map_err(call_err("PTRACE_SEIZE", tid))?;
        ptrace::interrupt(t.pid()).map_err(call_err("PTRACE_INTERRUPT", tid))?;
        Ok(t)
    }

    /// A thread that attached itself with `PTRACE_TRACEME` (the restore path).
    pub fn from_traceme(tid: i32) -> Tracee {
        Tracee { tid }
    }

    /// Sets the ptrace options of an attached thread.
    pub fn set_options(&self, opts: ptrace::Options) -> Result<(), SysError> {
        ptrace::setoptions(self.pid(), opts).map_err(call_err("PTRACE_SETOPTIONS", self.tid))
    }

    /// Waits for any state change of this thread.
    pub fn wait(&self, what: &'static str) -> Result<WaitStatus, SysError> {
        loop {
            match waitpid(self.pid(), Some(WaitPidFlag::__WALL)) {
                Ok(WaitStatus::Exited(_, code)) => {
                    return Err(SysError::Exited {
                        tid: self.tid,
                        what,
                        status: format!("exit status {code}"),
                    })
                }
                Ok(WaitStatus::Signaled(_, sig, _)) => {
                    return Err(SysError::Exited {
                        tid: self.tid,
                        what,
                        status: format!("killed by {sig}"),
                    })
                }
                Ok(status) => return Ok(status),
                Err(Errno::EINTR) => continue,
                Err(e) => return Err(call_err("waitpid", self.tid)(e)),
            }
        }
    }

    /// Waits for any state change of this thread, its end included.
    pub fn wait_any(&self) -> Result<WaitStatus, SysError> {
        loop {
            match waitpid(self.pid(), Some(WaitPidFlag::__WALL)) {
                Err(Errno::EINTR) => continue,
                done => return done.map_err(call_err("waitpid", self.tid)),
            }
        }
    }

    /// Resumes the thread (`PTRACE_CONT`), delivering `sig` when it sits in a
    /// signal-delivery-stop.
    pub fn cont(&self, sig: Option<Signal>) -> Result<(), SysError> {
        ptrace::cont(self.pid(), sig).map_err(call_err("PTRACE_CONT", self.tid))
    }

    /// Waits until the thread sits in the stop `PTRACE_INTERRUPT` asked for.
    /// Signals that arrive first are delivered (the thread runs their handlers
    /// as it would have), so nothing the process was sent is lost.
    ///
    /// Returns the stop signal when the thread's process is in group stop (stopped by
    /// SIGSTOP or job control, before the seize or by a signal delivered here): the kernel
    /// then reports the `PTRACE_EVENT_STOP` with that signal instead of SIGTRAP.
    pub fn wait_interrupt_stop(&self) -> Result<Option<Signal>, SysError> {
        loop {
            match self.wait("stopping for the dump")? {
                WaitStatus::PtraceEvent(_, sig, libc::PTRACE_EVENT_STOP) => {
                    return Ok((sig != Signal::SIGTRAP).then_some(sig))
                }
                WaitStatus::Stopped(_, sig) => {
                    // Signal-delivery-stop: pass the signal on; the interrupt
                    // stays pending and is taken next.
                    ptrace::cont(self.pid(), Some(sig))
                        .map_err(call_err("PTRACE_CONT", self.tid))?;
                }
                WaitStatus::PtraceEvent(_, _, _) | WaitStatus::PtraceSyscall(_) => {
                    ptrace::cont(self.pid(), None).map_err(call_err("PTRACE_CONT", self.tid))?;
                }
                other => {
                    return Err(SysError::UnexpectedStop {
                        tid: self.tid,
                        what: "stopping for the dump",
                        status: format!("{other:?}"),
                    })
                }
            }
        }
    }

    pub fn regs(&self) -> Result<Regs, SysError> {
        ptrace::getregs(self.pid()).map_err(call_err("PTRACE_GETREGS", self.tid))
    }

    pub fn set_regs(&self, regs: &Regs) -> Result<(), SysError> {
        ptrace::setregs(self.pid(), *regs).map_err(call_err("PTRACE_SETREGS", self.tid))
    }

    /// The extended FPU/SIMD state (XSAVE layout, `NT_X86_XSTATE`).
    pub fn xstate(&self) -> Result<Vec<u8>, SysError> {
        let mut buf = vec![0u8; XSTATE_MAX];
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: iov describes `buf`, which outlives the call; the kernel
        // writes at most iov_len bytes and updates iov_len.
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_GETREGSET,
                self.tid,
                NT_X86_XSTATE as usize,
                &mut iov as *mut libc::iovec,
            )
        };
        if r < 0 {
            return Err(call_err("PTRACE_GETREGSET(NT_X86_XSTATE)", self.tid)(
                Errno::last(),
            ));
        }
        buf.truncate(iov.iov_len);
        Ok(buf)
    }

    pub fn set_xstate(&self, xstate: &[u8]) -> Result<(), SysError> {
        let mut copy = xstate.to_vec();
        let mut iov = libc::iovec {
            iov_base: copy.as_mut_ptr().cast(),
            iov_len: copy.len(),
        };
        // SAFETY: iov describes `copy`, which outlives the call; the kernel only reads it.
        let r = unsafe {
            libc::ptrace(
                libc::PTRACE_SETREGSET,
                self.tid,
                NT_X86_XSTATE as usize,
                &mut iov as *mut libc::iovec,
            )
        };
        if r < 0 {
            return Err(call_err("PTRACE_SETREGSET(NT_X86_XSTATE)", self.tid)(
                Errno::last(),
            ));
        }
        Ok(())
    }

    /// The blocked-signal mask.
    pub fn sigmask(&self) -> Result<u64, SysError> {
        let mut mask: u64 = 0;
        // SAFETY: the kernel writes 8 bytes (the size we pass) into `mask`.
        let r = unsafe {
            libc::ptrace(
                PTRACE_GETSIGMASK,
                self.tid,
                std::mem::size_of::<u64>(),
                &mut mask as *mut u64,
            )
        };
        if r < 0 {
            return Err(call_err("PTRACE_GETSIGMASK", self.tid)(Errno::last()));
        }
        Ok(mask)
    }

    pub fn set_sigmask(&self, mask: u64) -> Result<(), SysError> {
        // SAFETY: the kernel reads 8 bytes (the size we pass) from `mask`.
        let r = unsafe {
            libc::ptrace(
                PTRACE_SETSIGMASK,
                self.tid,
                std::mem::size_of::<u64>(),
                &mask as *const u64,
            )
        };
        if r < 0 {
            return Err(call_err("PTRACE_SETSIGMASK", self.tid)(Errno::last()));
        }
        Ok(())
    }

    /// Queued signals of this thread (`shared == false`) or of its whole
    /// process (`shared == true`), without dequeuing them.
    pub fn pending_signals(&self, shared: bool) -> Result<Vec<[u8; SIGINFO_SIZE]>, SysError> {
        let mut out = Vec::new();
        loop {
            let mut batch = [[0u8; SIGINFO_SIZE]; PEEK_BATCH as usize];
            let mut args = PeekSiginfoArgs {
                off: out.len() as u64,
                flags: if shared { PTRACE_PEEKSIGINFO_SHARED } else { 0 },
                nr: PEEK_BATCH,
            };
            // SAFETY: `args` is a valid peeksiginfo_args; `batch` has room for
            // `nr` siginfos of SIGINFO_SIZE bytes each.
            let r = unsafe {
                libc::ptrace(
                    PTRACE_PEEKSIGINFO,
                    self.tid,
                    &mut args as *mut PeekSiginfoArgs,
                    batch.as_mut_ptr(),
                )
            };
            if r < 0 {
                return Err(call_err("PTRACE_PEEKSIGINFO", self.tid)(Errno::last()));
            }
            // At most `nr`, never negative here.
            let n = usize::try_from(r).unwrap_or(0);
            out.extend_from_slice(&batch[..n.min(batch.len())]);
            if n < batch.len() || out.len() > 4096 {
                return Ok(out);
            }
        }
    }

    /// The thread's rseq registration as `PTRACE_GET_RSEQ_CONFIGURATION` reports it, errors
    /// included (the kernel lacks the request before Linux 5.13: `EIO`).
    pub fn rseq_config(&self) -> Result<RseqConfig, SysError> {
        let mut conf = RseqConfig::default();
        // SAFETY: the kernel writes at most size_of::<RseqConfig>() bytes into `conf`.
        let r = unsafe {
            libc::ptrace(
                PTRACE_GET_RSEQ_CONFIGURATION,
                self.tid,
                std::mem::size_of::<RseqConfig>(),
                &mut conf as *mut RseqConfig,
            )
        };
        if r < 0 {
            return Err(call_err("PTRACE_GET_RSEQ_CONFIGURATION", self.tid)(
                Errno::last(),
            ));
        }
        Ok(conf)
    }

    /// The registered restartable sequence, if any.
    pub fn rseq(&self) -> Result<Option<RseqConfig>, SysError> {
        match self.rseq_config() {
            Ok(conf) => Ok((conf.rseq_abi_pointer != 0).then_some(conf)),
            // Kernels before 5.13 lack the request: nothing to save then.
            Err(e) if matches!(e.errno(), Some(Errno::EIO | Errno::EINVAL)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The head and length of the thread's robust futex list (`get_robust_list`).
    pub fn robust_list(&self) -> Result<(u64, u64), SysError> {
        let mut head: u64 = 0;
        let mut len: u64 = 0;
        // SAFETY: the kernel writes one pointer into `head` and one size into `len`, both
        // 8 bytes on x86_64 and alive across the call.
        let r = unsafe {
            libc::syscall(
                libc::SYS_get_robust_list,
                self.tid,
                &mut head as *mut u64,
                &mut len as *mut u64,
            )
        };
        if r < 0 {
            return Err(call_err("get_robust_list", self.tid)(Errno::last()));
        }
        Ok((head, len))
    }

    /// Sends `sig` to this thread of process `pid` (`tgkill`).
    pub fn tgkill(&self, pid: i32, sig: Signal) -> Result<(), SysError> {
        // SAFETY: tgkill takes only integers and touches no memory of ours.
        let r = unsafe { libc::syscall(libc::SYS_tgkill, pid, self.tid, sig as libc::c_int) };
        if r < 0 {
            return Err(call_err("tgkill", self.tid)(Errno::last()));
        }
        Ok(())
    }

    /// Resumes until the next syscall entry or exit (`PTRACE_SYSCALL`).
    pub fn syscall_step(&self) -> Result<(), SysError> {
        ptrace::syscall(self.pid(), None).map_err(call_err("PTRACE_SYSCALL", self.tid))
    }

    /// Lets the thread go.
    pub fn detach(&self) -> Result<(), SysError> {
        ptrace::detach(self.pid(), None).map_err(call_err("PTRACE_DETACH", self.tid))
    }
}
