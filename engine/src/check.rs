//! `crlab check`: probes, by trying them, the kernel features and privileges dump and restore need.
//!
//! Every probe is harmless: it uses a throwaway child it forks (and always kills and reaps),
//! its own file descriptors and its own `/proc/self` files, or calls that the kernel refuses
//! before they change anything (`clone3` with arguments it rejects). Each goes through the
//! same system-call wrappers dump and restore use, so a probe that passes tried their path.
//!
//! [`restore`] is `crlab check --images-dir`: whether SELinux lets the calling process restore
//! a given dump, from the kernel's own access decisions.

use std::fs::{self, File};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::{getpid, Pid};

use crate::selinux;
use crate::sys::{self, Clone3Probe, SysError, Tracee};

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

/// The legacy FXSAVE region (512 bytes) and the XSAVE header (64): the least an XSAVE area
/// holds.
const XSAVE_HEADER_END: usize = 576;
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
    checks.push(unix_sockets());
    checks.push(tcp_repair());
    checks.push(pagemap());
    checks.push(selinux_state());
    checks
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
    let tracee = Tracee { tid: pid.as_raw() };
    let xstate = Check::required("ptrace xstate regset", xstate(tracee));
    let rseq = Check::optional("ptrace rseq config", rseq_config(tracee));
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

/// The OS's words for the errno of a failed call (as `io::Error` says it).
fn os_error(e: &SysError) -> String {
    match e.errno() {
        Some(errno) => io::Error::from(errno).to_string(),
        None => e.to_string(),
    }
}

/// Seizes and interrupts `pid` as the dump seizes every thread, then waits (with a deadline)
/// for the stop.
fn seize_and_interrupt(pid: Pid) -> Result<(), String> {
    Tracee::seize_and_interrupt(pid.as_raw()).map_err(|e| match &e {
        SysError::Call {
            op: "PTRACE_SEIZE", ..
        } => format!(
            "PTRACE_SEIZE of our own child failed: {} (seccomp, Yama ptrace_scope 3 or an LSM \
             forbids ptrace here)",
            os_error(&e)
        ),
        _ => format!("PTRACE_INTERRUPT failed: {}", os_error(&e)),
    })?;
    match wait_child(pid, "the PTRACE_INTERRUPT stop")? {
        WaitStatus::PtraceEvent(_, Signal::SIGTRAP, libc::PTRACE_EVENT_STOP) => Ok(()),
        other => Err(format!(
            "expected a PTRACE_EVENT_STOP after PTRACE_INTERRUPT, waitpid gave {other:?}"
        )),
    }
}

/// The XSAVE state as the dump reads it (its buffer, its request).
fn xstate(tracee: Tracee) -> Result<String, String> {
    let state = tracee
        .xstate()
        .map_err(|e| format!("PTRACE_GETREGSET NT_X86_XSTATE failed: {}", os_error(&e)))?;
    if state.len() < XSAVE_HEADER_END {
        return Err(format!(
            "PTRACE_GETREGSET NT_X86_XSTATE gave only {} bytes, less than an XSAVE header",
            state.len()
        ));
    }
    Ok(format!("{} bytes of XSAVE state", state.len()))
}

/// The rseq registration as the dump reads it.
fn rseq_config(tracee: Tracee) -> Result<String, String> {
    let conf = tracee.rseq_config().map_err(|e| {
        format!(
            "PTRACE_GET_RSEQ_CONFIGURATION failed: {} (Linux 5.13 or newer has it; without \
             it a task's rseq registration is not dumped)",
            os_error(&e)
        )
    })?;
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
    clone3_outcome(sys::clone3_probe(false), "clone3(NULL, 0)")
}

/// Interprets a clone3 probe that must fail: EINVAL means the kernel parsed and refused it.
fn clone3_outcome(probe: Clone3Probe, what: &str) -> Result<String, String> {
    match probe {
        Clone3Probe::Created(pid) => Err(format!("{what} unexpectedly created task {pid}")),
        Clone3Probe::Refused(Errno::EINVAL) => {
            Ok(format!("{what} refused with EINVAL: the syscall exists"))
        }
        Clone3Probe::Refused(Errno::ENOSYS) => Err(format!(
            "{what} gave ENOSYS: the kernel (older than 5.3) or a seccomp filter lacks clone3"
        )),
        Clone3Probe::Refused(errno) => {
            Err(format!("{what} gave {errno}: clone3 is not usable here"))
        }
    }
}

fn set_tid() -> Check {
    let release = nix::sys::utsname::uname()
        .map(|u| u.release().to_string_lossy().into_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    // The restore's clone_args with a NULL set_tid and set_tid_size 1: kernels with set_tid
    // (5.5+) refuse it with EINVAL; older ones refuse the non-zero fields they do not know
    // with E2BIG.
    let kernel = match sys::clone3_probe(true) {
        Clone3Probe::Refused(Errno::EINVAL) => Ok(()),
        Clone3Probe::Refused(Errno::E2BIG) => Err(format!(
            "kernel {release} does not know clone3's set_tid (needs Linux 5.5 or newer)"
        )),
        other => clone3_outcome(other, "clone3 with set_tid").map(|_| ()),
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
    let result = match sys::mm_map_size() {
        Ok(size) if size > 0 => Ok(format!("struct prctl_mm_map is {size} bytes")),
        Ok(_) => Err(
            "prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE) gave a size of 0 (the kernel \
                      lacks CONFIG_CHECKPOINT_RESTORE)"
                .to_owned(),
        ),
        Err(e) => Err(format!(
            "prctl(PR_SET_MM, PR_SET_MM_MAP_SIZE) failed: {} (the kernel lacks \
             CONFIG_CHECKPOINT_RESTORE)",
            os_error(&e)
        )),
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
        if same && !different {
            Ok("tells a dup of a file from another file".to_owned())
        } else {
            Err(format!(
                "kcmp says a dup is {} and another file is {} (expected the same file, then \
                 another)",
                if same {
                    "the same file"
                } else {
                    "another file"
                },
                if different {
                    "the same file"
                } else {
                    "another file"
                },
            ))
        }
    })();
    Check::required("kcmp KCMP_FILE", result)
}

/// What Unix sockets need: `sock_diag` to tell a socket's peer and state (dump), and
/// `pidfd_getfd` to fill and configure the sockets made in the restore's root. Only a tree
/// holding sockets needs them.
fn unix_sockets() -> Check {
    let result = (|| {
        use std::os::unix::fs::MetadataExt;
        let (a, b) = std::os::unix::net::UnixStream::pair()
            .map_err(|e| format!("socketpair failed: {e}"))?;
        let ino = |fd: i32| {
            std::fs::metadata(format!("/proc/self/fd/{fd}"))
                .map(|m| m.ino())
                .map_err(|e| format!("stat of a socket failed: {e}"))
        };
        let (ia, ib) = (ino(a.as_raw_fd())?, ino(b.as_raw_fd())?);
        let diag = sys::unix_diag(ia)
            .map_err(|e| {
                format!(
                    "sock_diag failed: {} (the kernel lacks CONFIG_UNIX_DIAG: modprobe unix_diag)",
                    os_error(&e)
                )
            })?
            .ok_or("sock_diag does not know a Unix socket of ours (CONFIG_UNIX_DIAG)")?;
        if u64::from(diag.peer) != ib {
            return Err(format!(
                "sock_diag gives peer inode {}, not {ib}",
                diag.peer
            ));
        }
        let copy = sys::fd_of(getpid().as_raw(), u64::try_from(a.as_raw_fd()).unwrap_or(0))
            .map_err(|e| format!("pidfd_getfd failed: {} (Linux 5.6 or later)", os_error(&e)))?;
        if ino(copy.as_raw_fd())? != ia {
            return Err("pidfd_getfd gave another file".to_owned());
        }
        Ok("sock_diag tells a socket's peer; pidfd_getfd copies a descriptor".to_owned())
    })();
    Check::optional("unix sockets (sock_diag, pidfd_getfd)", result)
}

/// Repair mode (`TCP_REPAIR`), which dumping and restoring an established TCP connection
/// needs (and `CAP_NET_ADMIN` for it): tried on a new TCP socket of the engine's own.
fn tcp_repair() -> Check {
    let result = match sys::tcp_repair_allowed() {
        Ok(true) => Ok("a new TCP socket enters repair mode".to_owned()),
        Ok(false) => Err(
            "TCP_REPAIR refused (EPERM): established TCP connections need CAP_NET_ADMIN".to_owned(),
        ),
        Err(e) => Err(format!("TCP_REPAIR failed: {}", os_error(&e))),
    };
    Check::optional("tcp connections (TCP_REPAIR)", result)
}

/// Whether two of our descriptors share one open file description, as the dump asks it.
fn kcmp(fd1: i32, fd2: i32) -> Result<bool, String> {
    let pid = getpid().as_raw();
    sys::same_file(pid, fd1, pid, fd2).map_err(|e| {
        format!(
            "kcmp(KCMP_FILE) failed: {} (the kernel lacks CONFIG_KCMP, or a seccomp filter \
             blocks it)",
            os_error(&e)
        )
    })
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
    let result = match ::selinux::kernel_support() {
        ::selinux::KernelSupport::Unsupported => Err(
            "disabled (not in the kernel, or selinuxfs is not mounted at /sys/fs/selinux)"
                .to_owned(),
        ),
        support => {
            let mode = match ::selinux::current_mode() {
                ::selinux::SELinuxMode::Enforcing => "enforcing",
                ::selinux::SELinuxMode::Permissive => "permissive",
                _ => "not running",
            };
            let mls = if matches!(support, ::selinux::KernelSupport::SELinuxMLS) {
                ", MLS"
            } else {
                ""
            };
            let context = match fs::read("/proc/self/attr/current") {
                Ok(raw) => selinux::context_from_attr(&raw),
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
    fn spawn() -> Result<PausedChild, SysError> {
        sys::fork_paused().map(|pid| PausedChild { pid })
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
                "unix sockets (sock_diag, pidfd_getfd)",
                "tcp connections (TCP_REPAIR)",
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
            let tracee = Tracee { tid: pid.as_raw() };
            assert!(xstate(tracee).is_ok(), "{:?}", xstate(tracee));
        }
        drop(child);
        assert_eq!(
            waitpid(pid, Some(WaitPidFlag::WNOHANG | WaitPidFlag::__WALL)),
            Err(Errno::ECHILD)
        );
    }
}
