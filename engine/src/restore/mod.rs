//! `crlab restore`: recreate the dumped tree from its images, with its
//! original pids, and let it run.
//!
//! **Invariant:** a failed restore leaves nothing behind: every task created
//! is traced with `PTRACE_O_EXITKILL` until it is released, and killed on any
//! error.

mod error;
mod files;
mod lsm;
mod memory;
mod thread;

pub use error::RestoreError;
pub use lsm::{ContextOrder, SelinuxRefusal};

use crate::image::schema::{FileTable, Mm, ProcessEntry, PsTree, Task, ThreadCore};
use crate::image::{self, FileKind, ImageDirReader};
use crate::procfs::{self, MapEntry};
use crate::sys::{find_syscall_gadget, spawn_stopped_with_pid, Remote, Tracee};
use error::StepContext;
use nix::sys::ptrace::Options;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::path::PathBuf;
use tracing::{debug, info, instrument};

/// What `crlab restore` was asked to do.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    pub images_dir: PathBuf,
    /// Restore every process into this context instead of the dumped one.
    pub lsm_profile: Option<String>,
    /// When to write the context relative to creating threads (only
    /// `BeforeThreads` is right; the other is a negative control).
    pub context_order: ContextOrder,
}

/// A restored tree, running.
#[derive(Debug)]
pub struct Restored {
    pub root_pid: i32,
}

/// Everything the images say about one process.
struct ProcessImages {
    entry: ProcessEntry,
    task: Task,
    mm: Mm,
    cores: Vec<ThreadCore>,
}

/// Kills what has been created so far unless disarmed.
struct Cleanup {
    root: Option<i32>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if let Some(pid) = self.root.take() {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            // Reap it: it is our child.
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL));
        }
    }
}

/// Restores the tree in `opts.images_dir`. The root is a child of the caller.
pub fn restore(opts: &RestoreOptions) -> Result<Restored, RestoreError> {
    let reader = ImageDirReader::open(&opts.images_dir)?;
    let pstree: PsTree = reader.read_message(image::PSTREE, FileKind::PsTree)?;
    let table: FileTable = reader.read_message(image::FILES, FileKind::Files)?;
    let root_pid = reader.inventory().root_pid as i32;
    let mut procs = Vec::new();
    for entry in &pstree.processes {
        let pid = entry.pid;
        let task: Task = reader.read_message(&image::task_name(pid), FileKind::Task)?;
        let mm: Mm = reader.read_message(&image::mm_name(pid), FileKind::Mm)?;
        let mut cores = Vec::new();
        for &tid in &entry.threads {
            cores.push(reader.read_message::<ThreadCore>(&image::core_name(tid), FileKind::Core)?);
        }
        procs.push(ProcessImages {
            entry: entry.clone(),
            task,
            mm,
            cores,
        });
    }
    let root = procs
        .iter()
        .position(|p| p.entry.pid as i32 == root_pid)
        .ok_or_else(|| {
            RestoreError::Inconsistent(format!("pstree.img lacks the root process {root_pid}"))
        })?;
    if procs.len() > 1 {
        return Err(RestoreError::Inconsistent(
            "the images hold a process tree; restoring trees is not supported yet".into(),
        ));
    }
    for p in &procs {
        for tid in &p.entry.threads {
            if std::path::Path::new(&format!("/proc/{tid}")).exists() {
                return Err(RestoreError::PidTaken { pid: *tid as i32 });
            }
        }
    }
    let p = &procs[root];
    let pid = spawn_stopped_with_pid(root_pid).map_err(|e| match e.errno() {
        Some(nix::errno::Errno::EEXIST) => RestoreError::PidTaken { pid: root_pid },
        _ => RestoreError::Sys(e),
    })?;
    let mut cleanup = Cleanup { root: Some(pid) };
    let tracee = Tracee::from_traceme(pid);
    match tracee.wait("starting")? {
        WaitStatus::Stopped(_, Signal::SIGSTOP) => {}
        other => {
            return Err(crate::sys::SysError::UnexpectedStop {
                tid: pid,
                what: "starting",
                status: format!("{other:?}"),
            }
            .into())
        }
    }
    tracee.set_options(
        Options::PTRACE_O_TRACESYSGOOD | Options::PTRACE_O_TRACECLONE | Options::PTRACE_O_EXITKILL,
    )?;
    restore_process(opts, &reader, &table, p, tracee)?;
    cleanup.root = None;
    info!(pid, "restored");
    Ok(Restored { root_pid: pid })
}

#[instrument(skip_all, fields(pid = p.entry.pid))]
fn restore_process(
    opts: &RestoreOptions,
    reader: &ImageDirReader,
    table: &FileTable,
    p: &ProcessImages,
    tracee: Tracee,
) -> Result<(), RestoreError> {
    let pid = tracee.tid;
    // The task is a copy of us: our own syscall instruction is at the same address in it.
    let me = std::process::id() as i32;
    let own_maps = MapEntry::read(me).map_err(|e| RestoreError::Inconsistent(e.to_string()))?;
    let gadget = find_syscall_gadget(me, &own_maps)?;
    let mut remote = Remote::new(tracee, gadget, tracee.regs()?)?;
    // Block every signal while the engine works in the task; the image's mask is set last.
    tracee.set_sigmask(u64::MAX).step(pid, "the signal mask")?;
    remote
        .syscall(
            "close_range",
            libc::SYS_close_range,
            &[0, u32::MAX as u64, 0],
        )
        .step(pid, "the engine's descriptors")?;
    raise_nofile(pid);
    // The copy inherited our rseq registration; its area is about to be
    // unmapped, and the kernel would fault the task when it next updates it.
    if let Some(r) = tracee.rseq()? {
        remote
            .syscall(
                "rseq(unregister)",
                libc::SYS_rseq,
                &[
                    r.rseq_abi_pointer,
                    r.rseq_abi_size as u64,
                    1,
                    r.signature as u64,
                ],
            )
            .step(pid, "the engine's rseq registration")?;
    }

    let tramp = memory::map_trampoline(&mut remote, pid, &p.mm)?;
    let scratch = tramp.scratch;
    memory::clear_address_space(&mut remote, pid, &p.mm, &tramp)?;
    memory::map_vmas(&mut remote, pid, &p.mm, scratch)?;
    memory::fill_pages(&remote, pid, &p.mm, reader.pages(pid as u32)?)?;
    memory::set_mm_fields(&mut remote, pid, &p.mm, scratch)?;
    debug!("address space rebuilt");

    files::restore_fds(&mut remote, pid, scratch, &p.task.fds, table)?;
    thread::restore_process_state(&mut remote, pid, scratch, &p.task, &p.entry)?;

    // The seed's rule: the context while single-threaded, then the threads.
    let leader_core = p.cores.first().ok_or_else(|| {
        RestoreError::Inconsistent(format!("process {pid} has no threads in pstree.img"))
    })?;
    let target_ctx = opts
        .lsm_profile
        .clone()
        .unwrap_or_else(|| leader_core.selinux_context.clone());
    let engine_ctx = procfs::lsm_attr(pid, pid, "current");
    let set_context = |remote: &mut Remote| -> Result<(), RestoreError> {
        if crate::lsm::selinux_enabled() && !target_ctx.is_empty() && target_ctx != engine_ctx {
            lsm::set_process_context(remote, scratch, pid, &engine_ctx, &target_ctx)?;
        }
        Ok(())
    };
    if p.cores.len() > 1 {
        return Err(RestoreError::Inconsistent(format!(
            "process {pid} has {} threads; restoring multi-threaded processes is not supported yet",
            p.cores.len()
        )));
    }
    match opts.context_order {
        ContextOrder::BeforeThreads | ContextOrder::AfterThreads => set_context(&mut remote)?,
    }

    thread::restore_thread(&mut remote, pid, scratch, leader_core)?;
    thread::queue_signals(&mut remote, pid, scratch, &p.task.shared_pending, None)?;
    thread::set_rlimits(pid, &p.task)?;
    memory::unmap_trampoline(&mut remote, pid, &tramp)?;
    thread::finish_thread(&remote.tracee, pid, leader_core)?;
    tracee.detach()?;
    Ok(())
}

/// Lets the task hold descriptors above every target number while they are
/// sorted out; the image's own limit is set at the end.
fn raise_nofile(pid: i32) {
    let mut lim = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: prlimit64 reads and writes only the two structs passed.
    unsafe {
        if libc::prlimit64(pid, libc::RLIMIT_NOFILE, std::ptr::null(), &mut lim) == 0 {
            lim.rlim_cur = lim.rlim_max;
            libc::prlimit64(pid, libc::RLIMIT_NOFILE, &lim, std::ptr::null_mut());
        }
    }
}
