//! `crlab check`: probes, by trying them, the kernel features and privileges dump and restore need.
//!
//! Every probe is harmless: it uses a throwaway child it forks (and always kills and reaps),
//! its own file descriptors and its own `/proc/self` files, or calls that the kernel refuses
//! before they change anything (`clone3` with arguments it rejects).
//!
//! [`restore`] is `crlab check --images-dir`: whether SELinux lets the calling process restore
//! a given dump, from the kernel's own access decisions.

use std::ffi::c_void;
use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::ptrace;
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{fork, getpid, ForkResult, Pid};

pub mod restore;

/// One probe's outcome.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Check {
    /// What was probed, as the table shows it.
    pub name: &'static str,
    /// Dump or restore cannot work without it.
    pub required: bool,
    /// The feature works here.
    pub ok: bool,
    /// What the probe saw, and when it failed, what to do about it.
    pub detail: String,
}

impl Check {
    fn required(name: &'static str, result: Result<String, String>) -> Check {
        Check::new(name, true, result)
    }

    fn optional(name: &'static str, result: Result<String, String>) -> Check {
        Check::new(name, false, result)
    }

    fn new(name: &'static str, required: bool, result: Result<String, String>) -> Check {
        let ok = result.is_ok();
        let detail = result.unwrap_or_else(|e| e);
        Check {
            name,
            required,
            ok,
            detail,
        }
    }
}

/// How long the probes wait for the throwaway child to stop or to be reaped.
const CHILD_DEADLINE: Duration = Duration::from_secs(5);

/// `PTRACE_EVENT_STOP`: the event a seized tracee reports for `PTRACE_INTERRUPT`.
const PTRACE_EVENT_STOP: i32 = 128;
/// The XSAVE register set of `PTRACE_GETREGSET` (from `<elf.h>`).
const NT_X86_XSTATE: usize = 0x202;
/// `PTRACE_GET_RSEQ_CONFIGURATION` (Linux 5.13).
const PTRACE_GET_RSEQ_CONFIGURATION: u32 = 0x420f;
/// `KCMP_FILE` from `<linux/kcmp.h>`.
const KCMP_FILE: i64 = 0;
/// Capability numbers from `<linux/capability.h>`.
const CAP_SYS_ADMIN: u32 = 21;
const CAP_CHECKPOINT_RESTORE: u32 = 40;

/// Runs every probe, in the order the table shows them.
pub fn run_checks() -> Vec<Check> {
    let mut checks = vec![arch()];
    checks.extend(ptrace_checks());
    checks.push(Check::required("clone3", clone3()));
    checks.push(set_tid());
    checks.push(prctl_mm_map());
    checks.push(map_files());
    checks.push(kcmp_file());
    checks.push(pagemap());
    checks.push(selinux_state());
    checks
}

/// Every required check passed.
pub fn all_required_ok(checks: &[Check]) -> bool {
    checks.iter().all(|c| c.ok || !c.required)
}

/// A plain aligned table of the checks, then one summary line.
pub fn render(checks: &[Check]) -> String {
    let width = checks
        .iter()
        .map(|c| c.name.len())
        .chain(["CHECK".len()])
        .max()
        .unwrap_or_default();
    let mut out = String::new();
    let mut line = |name: &str, needed: &str, result: &str, detail: &str| {
        let row = format!("{name:<width$}  {needed:<8}  {result:<6}  {detail}");
        out.push_str(row.trim_end());
        out.push('\n');
    };
    line("CHECK", "NEEDED", "RESULT", "DETAIL");
    for check in checks {
        let needed = if check.required {
            "required"
        } else {
            "optional"
        };
        let result = match (check.ok, check.required) {
            (true, _) => "ok",
            (false, true) => "FAIL",
            (false, false) => "no",
        };
        line(check.name, needed, result, &check.detail);
    }
    let failed = checks.iter().filter(|c| c.required && !c.ok).count();
    if failed == 0 {
        out.push_str("all required checks passed\n");
    } else {
        out.push_str(&format!(
            "{failed} required check{} failed: crlab cannot dump or restore here\n",
            if failed == 1 { "" } else { "s" }
        ));
    }
    out
}

fn arch() -> Check {
    let result = match nix::sys::utsname::uname() {
        Ok(uts) => {
            let machine = uts.machine().to_string_lossy().into_owned();
            if machine == "x86_64" {
                Ok(machine)
            } else {
                Err(format!("machine is {machine}; crlab supports x86_64 only"))
            }
        }
        Err(e) => Err(format!("uname failed: {e}")),
    };
    Check::required("x86_64", result)
}

/// Seize + interrupt on a throwaway child, then the register sets the dump reads from it.
fn ptrace_checks() -> [Check; 3] {
    let child = match PausedChild::spawn() {
        Ok(child) => child,
        Err(e) => return ptrace_unavailable(format!("fork of a probe child failed: {e}")),
    };
    let pid = child.pid;
    if let Err(e) = seize_and_interrupt(pid) {
        return ptrace_unavailable(e);
    }
    let seize = Check::required(
        "ptrace seize+interrupt",
        Ok(format!(
            "child {pid} seized and stopped in PTRACE_EVENT_STOP"
        )),
    );
    let xstate = Check::required("ptrace xstate regset", xstate(pid));
    let rseq = Check::optional("ptrace rseq config", rseq_config(pid));
    drop(child);
    [seize, xstate, rseq]
}

fn ptrace_unavailable(why: String) -> [Check; 3] {
    let skipped = || Err("not probed: ptrace seize failed".to_owned());
    [
        Check::required("ptrace seize+interrupt", Err(why)),
        Check::required("ptrace xstate regset", skipped()),
        Check::optional("ptrace rseq config", skipped()),
    ]
}

fn seize_and_interrupt(pid: Pid) -> Result<(), String> {
    ptrace::seize(pid, ptrace::Options::PTRACE_O_EXITKILL).map_err(|e| {
        format!(
            "PTRACE_SEIZE of our own child failed: {e} (seccomp, Yama ptrace_scope 3 or an LSM \
             forbids ptrace here)"
        )
    })?;
    ptrace::interrupt(pid).map_err(|e| format!("PTRACE_INTERRUPT failed: {e}"))?;
    match wait_child(pid, "the PTRACE_INTERRUPT stop")? {
        WaitStatus::PtraceEvent(_, Signal::SIGTRAP, PTRACE_EVENT_STOP) => Ok(()),
        other => Err(format!(
            "expected a PTRACE_EVENT_STOP after PTRACE_INTERRUPT, waitpid gave {other:?}"
        )),
    }
}

fn xstate(pid: Pid) -> Result<String, String> {
    // The XSAVE area is under 12 KiB on current CPUs (AMX included); the kernel shortens
    // iov_len to what it wrote.
    let mut buf = vec![0u8; 64 << 10];
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    // SAFETY: `pid` is our tracee, stopped in PTRACE_EVENT_STOP; `iov` describes `buf`, which
    // outlives the call and is the only memory the kernel writes (at most `iov_len` bytes).
    let rc = unsafe {
        libc::ptrace(
            libc::PTRACE_GETREGSET,
            pid.as_raw(),
            NT_X86_XSTATE as *mut c_void,
            &mut iov as *mut libc::iovec,
        )
    };
    if rc == -1 {
        return Err(format!(
            "PTRACE_GETREGSET NT_X86_XSTATE failed: {}",
            io::Error::last_os_error()
        ));
    }
    // The legacy FXSAVE region (512 bytes) and the XSAVE header (64) come first.
    if iov.iov_len < 576 {
        return Err(format!(
            "PTRACE_GETREGSET NT_X86_XSTATE gave only {} bytes, less than an XSAVE header",
            iov.iov_len
        ));
    }
    Ok(format!("{} bytes of XSAVE state", iov.iov_len))
}

/// `struct ptrace_rseq_configuration` from `<linux/ptrace.h>`.
#[repr(C)]
#[derive(Default)]
struct RseqConfiguration {
    rseq_abi_pointer: u64,
    rseq_abi_size: u32,
    signature: u32,
    flags: u32,
    pad: u32,
}

fn rseq_config(pid: Pid) -> Result<String, String> {
    let mut conf = RseqConfiguration::default();
    let size = std::mem::size_of::<RseqConfiguration>();
    // SAFETY: `pid` is our stopped tracee; the kernel writes at most `size` bytes into
    // `conf`, which is exactly that large and lives across the call.
    let rc = unsafe {
        libc::ptrace(
            PTRACE_GET_RSEQ_CONFIGURATION,
            pid.as_raw(),
            size as *mut c_void,
            &mut conf as *mut RseqConfiguration,
        )
    };
    if rc == -1 {
        let err = io::Error::last_os_error();
        return Err(format!(
            "PTRACE_GET_RSEQ_CONFIGURATION failed: {err} (Linux 5.13 or newer has it; without \
             it a task's rseq registration is not dumped)"
        ));
    }
    if conf.rseq_abi_pointer == 0 {
        Ok("supported; the probe child has no rseq area".to_owned())
    } else {
        Ok(format!(
            "supported; the probe child's rseq area is {} bytes (signature {:#x}, flags {:#x})",
            conf.rseq_abi_size, conf.signature, conf.flags
        ))
    }
}

fn clone3() -> Result<String, String> {
    // SAFETY: clone3 with a NULL argument pointer and size 0 is refused with EINVAL (size
    // below CLONE_ARGS_SIZE_VER0) before the kernel reads memory or creates a task.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::null_mut::<c_void>(),
            0 as libc::size_t,
        )
    };
    clone3_outcome(rc, "clone3(NULL, 0)")
}

/// Interprets a clone3 probe that must fail: EINVAL means the kernel parsed and refused it.
fn clone3_outcome(rc: libc::c_long, what: &str) -> Result<String, String> {
    if rc == 0 {
        // Impossible with the arguments the probes pass; should it happen, this is the new
        // task, which must not return into the caller.
        // SAFETY: _exit ends only this (child) task, touching no shared state.
        unsafe { libc::_exit(127) };
    }
    if rc > 0 {
        return Err(format!("{what} unexpectedly created task {rc}"));
    }
    match Errno::last() {
        Errno::EINVAL => Ok(format!("{what} refused with EINVAL: the syscall exists")),
        Errno::ENOSYS => Err(format!(
            "{what} gave ENOSYS: the kernel (older than 5.3) or a seccomp filter lacks clone3"
        )),
        errno => Err(format!("{what} gave {errno}: clone3 is not usable here")),
    }
}

/// `struct clone_args` up to `set_tid_size` (CLONE_ARGS_SIZE_VER1, 80 bytes).
#[repr(C, align(8))]
#[derive(Default)]
struct CloneArgsV1 {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
}

fn set_tid() -> Check {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    // A NULL set_tid with set_tid_size 1: kernels with set_tid (5.5+) refuse it with EINVAL;
    // older ones refuse the non-zero fields they do not know with E2BIG.
    let args = CloneArgsV1 {
        set_tid_size: 1,
        ..CloneArgsV1::default()
    };
    // SAFETY: `args` is a valid, initialized 80-byte clone_args that lives across the call;
    // the kernel only reads it and refuses it (see above) before creating any task.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgsV1,
            std::mem::size_of::<CloneArgsV1>() as libc::size_t,
        )
    };
    let kernel = match (rc, Errno::last()) {
        (-1, Errno::EINVAL) => Ok(()),
        (-1, Errno::E2BIG) => Err(format!(
            "kernel {release} does not know clone3's set_tid (needs Linux 5.5 or newer)"
        )),
        _ => clone3_outcome(rc, "clone3 with set_tid").map(|_| ()),
    };
    let caps = fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|status| effective_caps(&status));
    let result = kernel.and_then(|()| match caps {
        Some(caps) if has_cap(caps, CAP_SYS_ADMIN) => Ok(format!(
            "kernel {release} accepts set_tid; CAP_SYS_ADMIN is effective"
        )),
        Some(caps) if has_cap(caps, CAP_CHECKPOINT_RESTORE) => Ok(format!(
            "kernel {release} accepts set_tid; CAP_CHECKPOINT_RESTORE is effective"
        )),
        Some(_) => Err(format!(
            "kernel {release} accepts set_tid, but neither CAP_SYS_ADMIN nor \
             CAP_CHECKPOINT_RESTORE is effective: run crlab as root or grant it \
             CAP_CHECKPOINT_RESTORE"
        )),
        None => Err("cannot read CapEff from /proc/self/status".to_owned()),
    });
    Check::required("clone3 set_tid", result)
}

/// The `CapEff:` mask of a `/proc/PID/status` text.
fn effective_caps(status: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
}

fn has_cap(mask: u64, cap: u32) -> bool {
    cap < 64 && mask & (1u64 << cap) != 0
}

fn prctl_mm_map() -> Check {
    let mut size: libc::c_uint = 0;
    // SAFETY: PR_SET_MM_MAP_SIZE only stores an unsigned int at the address passed, which is
    // `size`; it changes nothing. Variadic arguments are passed as unsigned longs, as the
    // kernel reads them.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_MM,
            libc::PR_SET_MM_MAP_SIZE as libc::c_ulong,
            &mut size as *mut libc::c_uint as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    };
    let result = if rc == 0 && size > 0 {
        Ok(format!("struct prctl_mm_map is {size} bytes"))
    } else {
        Err(format!(
            "prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE) failed: {} (the kernel lacks \
             CONFIG_CHECKPOINT_RESTORE)",
            io::Error::last_os_error()
        ))
    };
    Check::required("prctl PR_SET_MM_MAP", result)
}

fn map_files() -> Check {
    let dir = "/proc/self/map_files";
    let result = (|| {
        let first = fs::read_dir(dir)
            .map_err(|e| format!("cannot list {dir}: {e}"))?
            .find_map(Result::ok)
            .ok_or_else(|| format!("{dir} is empty"))?;
        let path = first.path();
        let target = fs::read_link(&path)
            .map_err(|e| format!("cannot read the link {}: {e}", path.display()))?;
        let open = match File::open(&path) {
            Ok(_) => "opening entries works".to_owned(),
            Err(e) => format!(
                "opening entries fails ({e}; needs CAP_SYS_ADMIN or CAP_CHECKPOINT_RESTORE)"
            ),
        };
        Ok(format!(
            "listed and read ({} -> {}); {open}",
            first.file_name().to_string_lossy(),
            target.display()
        ))
    })();
    Check::required("/proc/self/map_files", result)
}

fn kcmp_file() -> Check {
    let result = (|| {
        let (read, write) = nix::unistd::pipe().map_err(|e| format!("pipe failed: {e}"))?;
        let dup = read
            .try_clone()
            .map_err(|e| format!("dup of a pipe end failed: {e}"))?;
        let same = kcmp(read.as_raw_fd(), dup.as_raw_fd())?;
        let different = kcmp(read.as_raw_fd(), write.as_raw_fd())?;
        if same == 0 && different != 0 {
            Ok("tells a dup of a file from another file".to_owned())
        } else {
            Err(format!(
                "kcmp gave {same} for a dup and {different} for another file (expected 0 and \
                 non-zero)"
            ))
        }
    })();
    Check::required("kcmp KCMP_FILE", result)
}

fn kcmp(fd1: i32, fd2: i32) -> Result<libc::c_long, String> {
    let pid = libc::c_long::from(getpid().as_raw());
    // SAFETY: kcmp only compares the kernel objects behind two of our own descriptors; it
    // reads and writes no user memory.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_kcmp,
            pid,
            pid,
            KCMP_FILE,
            libc::c_long::from(fd1),
            libc::c_long::from(fd2),
        )
    };
    if rc < 0 {
        return Err(format!(
            "kcmp(KCMP_FILE) failed: {} (the kernel lacks CONFIG_KCMP, or a seccomp filter \
             blocks it)",
            io::Error::last_os_error()
        ));
    }
    Ok(rc)
}

fn pagemap() -> Check {
    let path = "/proc/self/pagemap";
    let result = (|| {
        let page_size = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .and_then(|size| u64::try_from(size).ok())
            .unwrap_or(4096);
        // A page of our stack: in use right now, so present.
        let marker = 0u8;
        let addr = std::hint::black_box(std::ptr::addr_of!(marker)) as u64;
        let file = File::open(path).map_err(|e| format!("cannot open {path}: {e}"))?;
        let mut entry = [0u8; 8];
        file.read_exact_at(&mut entry, addr / page_size * 8)
            .map_err(|e| format!("cannot read {path}: {e}"))?;
        let entry = u64::from_le_bytes(entry);
        let present = entry >> 63 & 1 == 1;
        let pfn = entry & ((1 << 55) - 1);
        match (present, pfn) {
            (false, _) => Err(format!(
                "{path} says a page of our own stack is not present (entry {entry:#x})"
            )),
            (true, 0) => {
                Ok("present bits readable; page frame numbers hidden (unprivileged)".into())
            }
            (true, _) => Ok("present bits and page frame numbers readable".into()),
        }
    })();
    Check::required("/proc/self/pagemap", result)
}

fn selinux_state() -> Check {
    let result = match selinux::kernel_support() {
        selinux::KernelSupport::Unsupported => Err(
            "disabled (not in the kernel, or selinuxfs is not mounted at /sys/fs/selinux)"
                .to_owned(),
        ),
        support => {
            let mode = match selinux::current_mode() {
                selinux::SELinuxMode::Enforcing => "enforcing",
                selinux::SELinuxMode::Permissive => "permissive",
                _ => "not running",
            };
            let mls = if matches!(support, selinux::KernelSupport::SELinuxMLS) {
                ", MLS"
            } else {
                ""
            };
            let context = match fs::read("/proc/self/attr/current") {
                Ok(raw) => String::from_utf8_lossy(&raw)
                    .trim_end_matches(['\0', '\n'])
                    .to_owned(),
                Err(e) => format!("unreadable ({e})"),
            };
            Ok(format!("{mode}{mls}; our context is {context}"))
        }
    };
    Check::optional("selinux", result)
}

/// A forked child that only waits for signals; killed and reaped on drop.
struct PausedChild {
    pid: Pid,
}

impl PausedChild {
    fn spawn() -> nix::Result<PausedChild> {
        // SAFETY: after fork the child runs only async-signal-safe system calls (prctl, pause,
        // _exit), so it needs no lock another thread of ours might have held.
        match unsafe { fork() }? {
            ForkResult::Parent { child } => Ok(PausedChild { pid: child }),
            ForkResult::Child => {
                // SAFETY: raw system calls on this task only: die with the parent, then sleep
                // until a signal kills us. Variadic prctl arguments are unsigned longs.
                unsafe {
                    libc::prctl(
                        libc::PR_SET_PDEATHSIG,
                        libc::SIGKILL as libc::c_ulong,
                        0 as libc::c_ulong,
                        0 as libc::c_ulong,
                        0 as libc::c_ulong,
                    );
                    loop {
                        libc::pause();
                    }
                }
            }
        }
    }
}

impl Drop for PausedChild {
    fn drop(&mut self) {
        if let Err(e) = signal::kill(self.pid, Signal::SIGKILL) {
            tracing::warn!(pid = self.pid.as_raw(), error = %e, "cannot kill the probe child");
        }
        loop {
            match wait_child(self.pid, "the probe child to exit after SIGKILL") {
                Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => break,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(pid = self.pid.as_raw(), "{e}");
                    break;
                }
            }
        }
    }
}

/// waitpid for `pid`, polling until [`CHILD_DEADLINE`].
fn wait_child(pid: Pid, what: &str) -> Result<WaitStatus, String> {
    let deadline = Instant::now() + CHILD_DEADLINE;
    loop {
        match waitpid(pid, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)) {
            Ok(WaitStatus::StillAlive) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            Ok(WaitStatus::StillAlive) => {
                return Err(format!(
                    "gave up waiting for {what} (pid {pid}) after {CHILD_DEADLINE:?}"
                ))
            }
            Ok(status) => return Ok(status),
            Err(Errno::EINTR) => {}
            Err(e) => return Err(format!("waitpid for {what} (pid {pid}) failed: {e}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn effective_caps_are_parsed_from_status() {
        let status = "Name:\tcat\nCapInh:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let caps = effective_caps(status).expect("CapEff parsed");
        assert!(has_cap(caps, CAP_SYS_ADMIN));
        assert!(has_cap(caps, CAP_CHECKPOINT_RESTORE));
        let caps = effective_caps("CapEff:\t0000010000000000\n").expect("CapEff parsed");
        assert!(!has_cap(caps, CAP_SYS_ADMIN));
        assert!(has_cap(caps, CAP_CHECKPOINT_RESTORE));
        assert_eq!(effective_caps("CapPrm:\t1\n"), None);
        assert_eq!(effective_caps("CapEff:\tzz\n"), None);
        assert!(!has_cap(u64::MAX, 64));
    }

    #[test]
    fn render_aligns_columns_and_sums_up() {
        let checks = [
            Check::required("x86_64", Ok("x86_64".into())),
            Check::required("kcmp KCMP_FILE", Err("kcmp failed: ENOSYS".into())),
            Check::optional("selinux", Err("disabled".into())),
        ];
        assert_eq!(
            render(&checks),
            "CHECK           NEEDED    RESULT  DETAIL\n\
             x86_64          required  ok      x86_64\n\
             kcmp KCMP_FILE  required  FAIL    kcmp failed: ENOSYS\n\
             selinux         optional  no      disabled\n\
             1 required check failed: crlab cannot dump or restore here\n"
        );
        assert!(!all_required_ok(&checks));
        assert!(all_required_ok(&checks[..1]));
        assert!(render(&checks[..1]).ends_with("all required checks passed\n"));
    }

    #[test]
    fn run_checks_reports_every_probe_once() {
        let checks = run_checks();
        let names: Vec<_> = checks.iter().map(|c| c.name).collect();
        assert_eq!(
            names,
            [
                "x86_64",
                "ptrace seize+interrupt",
                "ptrace xstate regset",
                "ptrace rseq config",
                "clone3",
                "clone3 set_tid",
                "prctl PR_SET_MM_MAP",
                "/proc/self/map_files",
                "kcmp KCMP_FILE",
                "/proc/self/pagemap",
                "selinux",
            ]
        );
        let arch = &checks[0];
        assert!(arch.ok, "{arch:?}");
        assert!(checks.iter().all(|c| !c.detail.is_empty()), "{checks:#?}");
        // The clone3 probes must never have created a task.
        assert!(checks.iter().all(|c| !c.detail.contains("unexpectedly")));
    }

    #[test]
    fn the_probe_child_is_killed_and_reaped() {
        let child = PausedChild::spawn().expect("fork");
        let pid = child.pid;
        drop(child);
        // Reaped: no longer our child, and gone from /proc.
        assert_eq!(
            waitpid(pid, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)),
            Err(Errno::ECHILD)
        );
        assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists());
    }

    #[test]
    fn a_seized_probe_child_is_reaped_too() {
        let child = PausedChild::spawn().expect("fork");
        let pid = child.pid;
        if seize_and_interrupt(pid).is_ok() {
            assert!(xstate(pid).is_ok(), "{:?}", xstate(pid));
        }
        drop(child);
        assert_eq!(
            waitpid(pid, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)),
            Err(Errno::ECHILD)
        );
    }
}
