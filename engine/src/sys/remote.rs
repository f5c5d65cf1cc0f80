//! Remote system calls: running a system call inside a stopped, traced thread.
//!
//! The thread's registers are pointed at a `syscall` instruction (a "gadget")
//! with the call's number and arguments, it is resumed until the syscall-exit
//! stop, the result is read from `rax`, and the next call starts from the same
//! saved registers. No code is injected: the gadget is an instruction that is
//! already mapped executable in the task (or, on restore, a two-byte trampoline
//! the engine maps itself).
//!
//! In a live task (a dump), the thread's own registers are put back after every call
//! ([`Remote::new_live`]), so they are the engine's for the length of one system call only: if
//! the engine dies (SIGKILL) between two calls, the kernel detaches the thread and it goes on
//! from where it was stopped, its interrupted system call restarted.

use super::{signed, unsigned, usize_of, Regs, SysError, Tracee};
use nix::errno::Errno;
use nix::sys::signal::Signal;
use nix::sys::wait::WaitStatus;
use std::fs::File;
use std::os::unix::fs::FileExt;

/// A writable area mapped in the task, used to pass structures to and from
/// remote system calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Scratch {
    pub addr: u64,
    pub len: u64,
}

/// Runs system calls inside one stopped thread.
#[derive(Debug)]
pub struct Remote {
    pub tracee: Tracee,
    gadget: u64,
    base: Regs,
    stack: Option<u64>,
    mem: File,
    /// Set once a remote syscall has run: the thread then sits in a
    /// syscall-exit stop and its original registers must be put back.
    pub touched: bool,
    /// Signals that arrived while remote syscalls ran and were held back.
    pub deferred_signals: Vec<Signal>,
    /// Threads and processes created by remote clone calls.
    pub new_children: Vec<i32>,
    /// A live task's thread: its own registers are put back after every call.
    live: bool,
}

impl Remote {
    /// `base` is the register set every call starts from (normally the
    /// thread's registers at the time it stopped).
    pub fn new(tracee: Tracee, gadget: u64, base: Regs) -> Result<Remote, SysError> {
        let path = format!("/proc/{}/mem", tracee.tid);
        let mem = File::options()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(|source| SysError::Io {
                what: format!("opening {path}"),
                source,
            })?;
        Ok(Remote {
            tracee,
            gadget,
            base,
            stack: None,
            mem,
            touched: false,
            deferred_signals: Vec::new(),
            new_children: Vec::new(),
            live: false,
        })
    }

    /// As [`Remote::new`], for a thread of a live task (a dump): after every call, the
    /// thread's registers are put back as [`Remote::restore_base`] puts them (`live`), so the
    /// engine's registers are in the thread for one system call at a time.
    pub fn new_live(tracee: Tracee, gadget: u64, base: Regs) -> Result<Remote, SysError> {
        let mut r = Remote::new(tracee, gadget, base)?;
        r.live = true;
        Ok(r)
    }

    pub fn tid(&self) -> i32 {
        self.tracee.tid
    }

    pub fn base_regs(&self) -> &Regs {
        &self.base
    }

    pub fn set_gadget(&mut self, gadget: u64) {
        self.gadget = gadget;
    }

    /// Runs remote calls with `rsp` set to `sp` (away from a stack that is
    /// about to be unmapped or that is an alternate signal stack).
    pub fn set_stack(&mut self, sp: u64) {
        self.stack = Some(sp);
    }

    /// Runs system call `nr`; returns its result or the errno it failed with.
    pub fn syscall(&mut self, name: &'static str, nr: i64, args: &[u64]) -> Result<u64, SysError> {
        let raw = self.syscall_raw(name, nr, args)?;
        if (-4095..0).contains(&raw) {
            // -4095..-1: a negated errno, which fits an i32.
            let errno = i32::try_from(-raw).unwrap_or(libc::EINVAL);
            return Err(SysError::Remote {
                name,
                tid: self.tid(),
                errno: Errno::from_raw(errno),
            });
        }
        Ok(unsigned(raw))
    }

    /// Ends the task with its last system call `nr` (`exit_group`, or `tgkill` of itself with a
    /// fatal signal, whose delivery is let through) and waits for its end as its tracer, which
    /// then hands it to its parent as a zombie. Returns the status the tracer saw.
    pub fn end(
        &mut self,
        name: &'static str,
        nr: i64,
        args: &[u64],
    ) -> Result<WaitStatus, SysError> {
        let mut regs = self.base;
        regs.rax = unsigned(nr);
        regs.orig_rax = u64::MAX;
        regs.rip = self.gadget;
        let mut a = [0u64; 6];
        a[..args.len().min(6)].copy_from_slice(&args[..args.len().min(6)]);
        (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9) =
            (a[0], a[1], a[2], a[3], a[4], a[5]);
        if let Some(sp) = self.stack {
            regs.rsp = sp;
        }
        self.tracee.set_regs(&regs)?;
        self.touched = true;
        self.tracee.cont(None)?;
        loop {
            match self.tracee.wait_any()? {
                done @ (WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => return Ok(done),
                WaitStatus::Stopped(_, sig) => self.tracee.cont(Some(sig))?,
                WaitStatus::PtraceEvent(..) | WaitStatus::PtraceSyscall(_) => {
                    self.tracee.cont(None)?
                }
                other => {
                    return Err(SysError::UnexpectedStop {
                        tid: self.tid(),
                        what: name,
                        status: format!("{other:?}"),
                    })
                }
            }
        }
    }

    /// Runs system call `nr`; returns `rax` as the kernel left it.
    pub fn syscall_raw(
        &mut self,
        name: &'static str,
        nr: i64,
        args: &[u64],
    ) -> Result<i64, SysError> {
        #[cfg(feature = "failpoints")]
        if self.live {
            if let Some(source) = injected_remote(name) {
                return Err(SysError::Io {
                    what: format!("remote {name}() in task {}", self.tid()),
                    source,
                });
            }
        }
        let mut regs = self.base;
        regs.rax = unsigned(nr);
        // No syscall is being restarted: keep the kernel's restart logic out.
        regs.orig_rax = u64::MAX;
        regs.rip = self.gadget;
        let mut a = [0u64; 6];
        a[..args.len().min(6)].copy_from_slice(&args[..args.len().min(6)]);
        regs.rdi = a[0];
        regs.rsi = a[1];
        regs.rdx = a[2];
        regs.r10 = a[3];
        regs.r8 = a[4];
        regs.r9 = a[5];
        if let Some(sp) = self.stack {
            regs.rsp = sp;
        }
        self.tracee.set_regs(&regs)?;
        self.touched = true;
        self.tracee.syscall_step()?;
        let mut entered = false;
        loop {
            match self.tracee.wait(name)? {
                WaitStatus::PtraceSyscall(_) => {
                    if entered {
                        break;
                    }
                    entered = true;
                    self.tracee.syscall_step()?;
                }
                WaitStatus::PtraceEvent(_, _, ev)
                    if ev == libc::PTRACE_EVENT_CLONE
                        || ev == libc::PTRACE_EVENT_FORK
                        || ev == libc::PTRACE_EVENT_VFORK =>
                {
                    let child = nix::sys::ptrace::getevent(nix::unistd::Pid::from_raw(self.tid()))
                        .map_err(|source| SysError::Call {
                            op: "PTRACE_GETEVENTMSG",
                            tid: self.tid(),
                            source,
                        })?;
                    // The event message of a clone event is the new task's id: a pid_t.
                    let child = i32::try_from(child).map_err(|_| SysError::UnexpectedStop {
                        tid: self.tid(),
                        what: name,
                        status: format!("a clone event for task id {child}"),
                    })?;
                    self.new_children.push(child);
                    self.tracee.syscall_step()?;
                }
                WaitStatus::PtraceEvent(_, _, libc::PTRACE_EVENT_STOP) => {
                    // A trap the seize of a process in group stop left pending (the seize's
                    // own and the interrupt's: the kernel reports both), taken on the way
                    // back to user mode: the call is yet to run.
                    self.tracee.syscall_step()?;
                }
                WaitStatus::Stopped(_, sig)
                    if matches!(
                        sig,
                        Signal::SIGSEGV
                            | Signal::SIGBUS
                            | Signal::SIGILL
                            | Signal::SIGFPE
                            | Signal::SIGTRAP
                    ) =>
                {
                    let rip = self.tracee.regs().map(|r| r.rip).unwrap_or(0);
                    return Err(SysError::UnexpectedStop {
                        tid: self.tid(),
                        what: name,
                        status: format!("fault {sig} at rip {rip:#x} (gadget {:#x})", self.gadget),
                    });
                }
                WaitStatus::Stopped(_, sig) => {
                    // A signal arrived: hold it back, hand it over at the end.
                    self.deferred_signals.push(sig);
                    self.tracee.syscall_step()?;
                }
                other => {
                    return Err(SysError::UnexpectedStop {
                        tid: self.tid(),
                        what: name,
                        status: format!("{other:?}"),
                    })
                }
            }
        }
        let regs = self.tracee.regs()?;
        if self.live {
            self.restore_base(true)?;
        }
        tracing::trace!(
            tid = self.tid(),
            name,
            ?args,
            result = signed(regs.rax),
            "remote syscall"
        );
        Ok(signed(regs.rax))
    }

    /// Reads task memory (through /proc/PID/mem, so protections do not matter).
    pub fn read_mem(&self, addr: u64, buf: &mut [u8]) -> Result<(), SysError> {
        #[cfg(feature = "failpoints")]
        if self.live {
            if let Some(source) = crate::failpoint::injected("dump.remote.read_mem") {
                return Err(SysError::Io {
                    what: format!("reading memory of task {}", self.tid()),
                    source,
                });
            }
        }
        self.read_pages(addr, buf)
    }

    /// Reads a task's pages (through /proc/PID/mem, which neither cares for protections nor
    /// pins what it reads, so a page the task shares copy-on-write stays shared). Not a
    /// failpoint of its own: how many such reads a dump makes follows which pages the process
    /// still shares, which changes as it runs; the page copy's failpoint is `dump.pages`.
    pub fn read_pages(&self, addr: u64, buf: &mut [u8]) -> Result<(), SysError> {
        self.mem
            .read_exact_at(buf, addr)
            .map_err(|source| SysError::Io {
                what: format!(
                    "reading {} bytes at {addr:#x} of task {}",
                    buf.len(),
                    self.tid()
                ),
                source,
            })
    }

    /// Writes task memory (through /proc/PID/mem, so protections do not matter).
    pub fn write_mem(&self, addr: u64, buf: &[u8]) -> Result<(), SysError> {
        #[cfg(feature = "failpoints")]
        if self.live {
            if let Some(source) = crate::failpoint::injected("dump.remote.write_mem") {
                return Err(SysError::Io {
                    what: format!("writing memory of task {}", self.tid()),
                    source,
                });
            }
        }
        self.mem
            .write_all_at(buf, addr)
            .map_err(|source| SysError::Io {
                what: format!(
                    "writing {} bytes at {addr:#x} of task {}",
                    buf.len(),
                    self.tid()
                ),
                source,
            })
    }

    pub fn read_u64(&self, addr: u64) -> Result<u64, SysError> {
        let mut b = [0u8; 8];
        self.read_mem(addr, &mut b)?;
        Ok(u64::from_ne_bytes(b))
    }

    /// Writes `s` NUL-terminated at the start of `scratch`; returns its address in the task.
    /// The string lives until the next use of the scratch area's start.
    pub fn put_cstr(&self, scratch: Scratch, s: &str) -> Result<u64, SysError> {
        let mut b = Vec::with_capacity(s.len() + 1);
        b.extend_from_slice(s.as_bytes());
        b.push(0);
        if u64::try_from(b.len()).map_or(true, |len| len > scratch.len) {
            return Err(SysError::Remote {
                name: "put_cstr",
                tid: self.tid(),
                errno: Errno::ENAMETOOLONG,
            });
        }
        self.write_mem(scratch.addr, &b)?;
        Ok(scratch.addr)
    }

    /// `open(path, flags)` inside the task, named `name` in errors and logs; returns the
    /// task's new descriptor. The path is passed at the start of `scratch` (see
    /// [`Remote::put_cstr`]), which the call owns until it returns.
    pub fn open(
        &mut self,
        name: &'static str,
        scratch: Scratch,
        path: &str,
        flags: i32,
    ) -> Result<u64, SysError> {
        let at = self.put_cstr(scratch, path)?;
        self.syscall(name, libc::SYS_open, &[at, super::int_arg(flags), 0])
    }

    /// Maps an anonymous read-write area of `len` bytes in the task.
    pub fn map_scratch(&mut self, len: u64) -> Result<Scratch, SysError> {
        let addr = self.syscall(
            "mmap",
            libc::SYS_mmap,
            &[
                0,
                len,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64,
                u64::MAX,
                0,
            ],
        )?;
        Ok(Scratch { addr, len })
    }

    pub fn unmap(&mut self, addr: u64, len: u64) -> Result<(), SysError> {
        self.syscall("munmap", libc::SYS_munmap, &[addr, len])
            .map(drop)
    }

    /// Puts the thread's original registers back: as the kernel would have
    /// left them had it not been stopped, with an interrupted system call set
    /// up to restart (see [`resume_regs`]).
    pub fn restore_base(&mut self, live: bool) -> Result<(), SysError> {
        let regs = if self.touched {
            resume_regs(&self.base, live)
        } else {
            self.base
        };
        self.tracee.set_regs(&regs)
    }
}

/// The failure of failpoint `dump.remote.<call>` for remote call `name` of a dump, if armed:
/// `prctl(PR_GET_DUMPABLE)` is `dump.remote.prctl.pr_get_dumpable`. A call whose failpoint is
/// not in [`crate::failpoint::ALL`] always fails, so the list keeps up with the code.
#[cfg(feature = "failpoints")]
fn injected_remote(name: &str) -> Option<std::io::Error> {
    let call: String = name
        .to_ascii_lowercase()
        .chars()
        .filter_map(|c| match c {
            '(' => Some('.'),
            ')' => None,
            c if c.is_ascii_alphanumeric() || c == '_' => Some(c),
            _ => Some('_'),
        })
        .collect();
    crate::failpoint::injected(&format!("dump.remote.{call}"))
}

const ERESTARTSYS: i64 = -512;
const ERESTARTNOINTR: i64 = -513;
const ERESTARTNOHAND: i64 = -514;
const ERESTART_RESTARTBLOCK: i64 = -516;

/// The registers a thread stopped inside a system call must resume with,
/// when the kernel's own restart logic will not run (the thread resumes from
/// a syscall-exit stop, or is a freshly restored task).
///
/// These are the kernel's rules for a stop that delivers no signal: every
/// `-ERESTART*` code re-executes the call. `-ERESTART_RESTARTBLOCK` uses
/// `restart_syscall()` in a live task (`live`), whose restart block is still
/// valid; a restored task has no restart block, so there the original call is
/// executed again with its original arguments (a relative timeout starts over).
pub fn resume_regs(regs: &Regs, live: bool) -> Regs {
    let mut r = *regs;
    if signed(r.orig_rax) < 0 {
        return r;
    }
    match signed(r.rax) {
        ERESTARTSYS | ERESTARTNOINTR | ERESTARTNOHAND => {
            r.rax = r.orig_rax;
            r.rip -= 2;
        }
        ERESTART_RESTARTBLOCK => {
            r.rax = if live {
                libc::SYS_restart_syscall as u64
            } else {
                r.orig_rax
            };
            r.rip -= 2;
        }
        _ => {}
    }
    r.orig_rax = u64::MAX;
    r
}

/// Finds the address of a `syscall` instruction (`0f 05`) in an executable
/// mapping of the task.
pub fn find_syscall_gadget(pid: i32, maps: &[crate::procfs::MapEntry]) -> Result<u64, SysError> {
    let path = format!("/proc/{pid}/mem");
    let mem = File::open(&path).map_err(|source| SysError::Io {
        what: format!("opening {path}"),
        source,
    })?;
    let mut buf = vec![0u8; 256 * 1024];
    for m in maps
        .iter()
        .filter(|m| m.prot_exec() && m.start < 0x7fff_ffff_f000)
    {
        let mut addr = m.start;
        while addr + 1 < m.end {
            let len = usize_of(m.end - addr).min(buf.len());
            if mem.read_exact_at(&mut buf[..len], addr).is_err() {
                break;
            }
            if let Some(i) = buf[..len].windows(2).position(|w| w == [0x0f, 0x05]) {
                return Ok(addr + i as u64);
            }
            // Keep one byte of overlap so an instruction across chunks is seen.
            addr += len as u64 - 1;
        }
    }
    Err(SysError::NoGadget { tid: pid })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn regs(rax: i64, orig: i64) -> Regs {
        // SAFETY: user_regs_struct is plain integers; all-zero is valid.
        let mut r: Regs = unsafe { std::mem::zeroed() };
        r.rax = unsigned(rax);
        r.orig_rax = unsigned(orig);
        r.rip = 0x1002;
        r
    }

    #[test]
    fn restart_codes_reexecute_the_call() {
        for code in [ERESTARTSYS, ERESTARTNOINTR, ERESTARTNOHAND] {
            let r = resume_regs(&regs(code, 7), false);
            assert_eq!((r.rax, r.rip, r.orig_rax), (7, 0x1000, u64::MAX));
        }
    }

    #[test]
    fn restart_block_uses_restart_syscall_only_when_live() {
        let live = resume_regs(&regs(ERESTART_RESTARTBLOCK, 35), true);
        assert_eq!(live.rax, libc::SYS_restart_syscall as u64);
        let restored = resume_regs(&regs(ERESTART_RESTARTBLOCK, 35), false);
        assert_eq!(restored.rax, 35);
        assert_eq!(restored.rip, 0x1000);
    }

    #[test]
    fn other_results_and_non_syscalls_are_kept() {
        let r = resume_regs(&regs(-4, 0), false);
        assert_eq!((signed(r.rax), r.rip), (-4, 0x1002));
        let r = resume_regs(&regs(ERESTARTSYS, -1), false);
        assert_eq!((signed(r.rax), r.rip), (ERESTARTSYS, 0x1002));
    }
}
