//! `crlab dump`: seize a process tree, read its state, write the images, then
//! kill it or let it go on.
//!
//! **Invariant:** a failed dump never harms the process it was dumping: every
//! change made to a task (scratch mapping, transport socket, registers) is
//! undone and every thread is detached, whatever step failed, an interrupt
//! (SIGINT, SIGTERM, SIGHUP: [`crate::interrupt`]) included. A thread's registers
//! are the engine's for one remote system call at a time.
//!
//! **Invariant:** a dump never mixes with an older one: it is written into a new or
//! empty directory, or, told to replace one, into a fresh sibling swapped in whole
//! once complete ([`ImageDirWriter::new_dump`]); a failed dump leaves the old one intact.

mod audit;
mod cgroup;
mod error;
mod files;
mod keyring;
mod memory;
mod process;
mod seize;
mod sockets;
mod stop;
mod thread;
mod transport;

use error::image_u32;
pub use error::DumpError;

pub use transport::SocketLabel;

use crate::image::layout::Member;
use crate::image::schema::{
    Credentials, Inventory, Mm, MmFields, ProcessEntry, ProcessState, PsTree, Rlimit, SigInfo, Task,
};
use crate::image::{self, Existing, FileKind, ImageDirWriter};
use crate::procfs::{self, MapEntry, Stat, Status};
use crate::sys::{find_syscall_gadget, rlimit, PAGE_SIZE_U32, RLIMITS};
use files::FileTableBuilder;
use seize::SeizedTree;
use std::collections::HashMap;
use std::path::PathBuf;
use tracing::{debug, info, instrument};

/// What `crlab dump` was asked to do.
#[derive(Debug, Clone)]
pub struct DumpOptions {
    pub root: i32,
    pub images_dir: PathBuf,
    pub leave_running: bool,
    /// How the transport socket is labelled (the default is the only right one).
    pub socket_label: SocketLabel,
    /// What to do with an images directory that already holds files.
    pub existing: Existing,
}

/// What a dump wrote.
#[derive(Debug, Clone)]
pub struct DumpSummary {
    pub processes: usize,
    pub threads: usize,
    pub page_bytes: u64,
}

/// Dumps the tree rooted at `opts.root`.
pub fn dump(opts: &DumpOptions) -> Result<DumpSummary, DumpError> {
    let (pids, zombies, children) = collect_tree(opts.root)?;
    // Refused before any task is touched; dropped uncommitted, it removes what it wrote.
    let mut images = ImageDirWriter::new_dump(&opts.images_dir, opts.existing)?;
    check_interrupt()?;
    let mut tree = SeizedTree::seize(&pids)?;
    // Held still, so what /proc shows is what would be dumped; refused before any change.
    let written = audit::tree(&pids, &zombies).and_then(|flags| {
        let flags = pids.iter().copied().zip(flags).collect();
        dump_seized(opts, &mut tree, &zombies, flags, children, &mut images)
    });
    let committed = written.and_then(|(summary, inventory, connections)| {
        if opts.leave_running {
            // The tasks are let go first: a dump whose changes to them could not all be
            // undone fails, and is not left complete behind it.
            tree.release()?;
        } else {
            // Last before the commit and the kill: the tree's established connections in
            // repair mode, so that its death sends the peers neither FIN nor reset.
            connections.freeze()?;
        }
        if let Err(e) = images.commit(inventory) {
            connections.thaw();
            return Err(e.into());
        }
        Ok((summary, connections))
    });
    match committed {
        Ok((summary, connections)) => {
            if !opts.leave_running {
                tree.kill();
            }
            // The engine's copies, closed once the tree is gone.
            drop(connections);
            info!(
                processes = summary.processes,
                threads = summary.threads,
                page_bytes = summary.page_bytes,
                "dump written"
            );
            Ok(summary)
        }
        Err(e) => {
            // Undo what was done (nothing left to undo once released); the original error is
            // the one to report.
            if let Err(undo) = tree.release() {
                tracing::error!(error = %undo, "undoing the failed dump");
            }
            Err(e)
        }
    }
}

/// [`DumpError::Interrupted`] once a stop signal has been received.
pub(crate) fn check_interrupt() -> Result<(), DumpError> {
    match crate::interrupt::requested() {
        Some(signal) => Err(DumpError::Interrupted { signal }),
        None => Ok(()),
    }
}

/// The root and all its living descendants, parents before children, the zombies among its
/// descendants (each refused unless the restore can make it again: `audit::zombie`), and how
/// many living children each process has.
#[allow(clippy::type_complexity)]
fn collect_tree(root: i32) -> Result<(Vec<i32>, Vec<Member>, HashMap<i32, usize>), DumpError> {
    if !std::path::Path::new(&format!("/proc/{root}")).exists() || root <= 0 {
        return Err(DumpError::NoSuchProcess { pid: root });
    }
    let mut me = nix::unistd::getpid().as_raw();
    while me > 1 {
        if me == root {
            return Err(DumpError::SelfDump { pid: root });
        }
        me = Stat::read(me).map(|s| s.ppid).unwrap_or(0);
    }
    let mut out = vec![root];
    let mut zombies = Vec::new();
    let mut children: HashMap<i32, usize> = HashMap::new();
    let mut i = 0;
    while i < out.len() {
        // A zombie cannot be seized, nor a process another tracer holds: both are looked at
        // before anything is touched.
        let pid = out[i];
        let stat = Stat::read(pid)?;
        if stat.state == 'Z' {
            audit::zombie(pid, pid == root, &stat)?;
            zombies.push(Member {
                pid,
                ppid: stat.ppid,
                pgid: stat.pgid,
                sid: stat.sid,
            });
            out.remove(i);
            continue;
        }
        audit::not_traced(pid, &stat)?;
        if pid != root {
            *children.entry(stat.ppid).or_default() += 1;
        }
        let kids = procfs::children(pid)?;
        out.extend(kids);
        i += 1;
    }
    Ok((out, zombies, children))
}

/// What was looked at for the whole tree before any process is touched.
struct Survey {
    /// Every socket of the tree (`sockets::survey`).
    sockets: sockets::TreeSockets,
    /// Each process's `VmFlags`, as the audit read them: `/proc/PID/smaps` walks every page
    /// table of the process, so it is read once; the tree is held still since.
    vm_flags: HashMap<i32, Vec<procfs::VmFlags>>,
    /// How many living children each process has (`collect_tree`).
    children: HashMap<i32, usize>,
    /// The session keyrings read so far, by serial: one the processes share is read once.
    keyrings: HashMap<i32, crate::image::schema::SessionKeyring>,
}

/// Reads the seized tree and writes every image but the inventory, which the caller commits.
fn dump_seized(
    opts: &DumpOptions,
    tree: &mut SeizedTree,
    zombies: &[Member],
    flags: HashMap<i32, Vec<procfs::VmFlags>>,
    children: HashMap<i32, usize>,
    images: &mut ImageDirWriter,
) -> Result<(DumpSummary, Inventory, sockets::Connections), DumpError> {
    let mut files = FileTableBuilder::default();
    let mut pstree = PsTree::default();
    let mut page_bytes = 0;
    let mut threads = 0;
    let root = opts.root;
    // Sockets join processes: every one is looked at, for the whole tree, before any process
    // is touched.
    let pids: Vec<i32> = tree.processes.iter().map(|p| p.pid).collect();
    let mut children_left = children.clone();
    let mut survey = Survey {
        sockets: sockets::survey(&pids)?,
        vm_flags: flags,
        children,
        keyrings: HashMap::new(),
    };
    files::fifos_outside(&pids)?;
    // What each process dumped so far shares with its children (parents come first), kept
    // only while a child of it is still to be dumped.
    let mut frames: HashMap<i32, memory::SharedFrames> = HashMap::new();
    for proc_idx in 0..tree.processes.len() {
        check_interrupt()?;
        let pid = tree.processes[proc_idx].pid;
        failpoint!("dump.proc.stat", |source| procfs::ProcError::Io {
            path: format!("/proc/{pid}/stat"),
            source,
        });
        let stat = Stat::read(pid)?;
        if stat.state == 'Z' {
            return Err(DumpError::Zombie {
                pid,
                why: "it exited while the dump held it".into(),
            });
        }
        let parent = frames.get(&stat.ppid).filter(|_| pid != root);
        let (mut task, mm, mut cores, bytes, own) = dump_process(
            opts,
            tree,
            proc_idx,
            &stat,
            &mut files,
            &mut survey,
            images,
            parent,
        )?;
        if let Some(own) = own {
            frames.insert(pid, own);
        }
        if pid != root {
            if let Some(n) = children_left.get_mut(&stat.ppid) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    frames.remove(&stat.ppid);
                }
            }
        }
        let stop_signal = stop::signal(&tree.processes[proc_idx], &mut task, &mut cores)?;
        page_bytes += bytes;
        threads += cores.len();
        let image_pid = image_u32(pid, "the pid", pid)?;
        pstree.processes.push(ProcessEntry {
            pid: image_pid,
            ppid: if pid == root {
                0
            } else {
                image_u32(pid, "the parent pid", stat.ppid)?
            },
            pgid: image_u32(pid, "the process group", stat.pgid)?,
            sid: image_u32(pid, "the session", stat.sid)?,
            threads: cores.iter().map(|c| c.tid).collect(),
            state: ProcessState::Alive as i32,
            exit_status: 0,
            stop_signal,
        });
        images.write_message(&image::task_name(image_pid), FileKind::Task, &task)?;
        images.write_message(&image::mm_name(image_pid), FileKind::Mm, &mm)?;
        for core in &cores {
            images.write_message(&image::core_name(core.tid), FileKind::Core, core)?;
        }
    }
    // Zombies last (they have no children): their status, read again now that the tree is
    // held (a zombie stays one until its parent, held, reaps it).
    for z in zombies {
        let pid = z.pid;
        let stat = Stat::read(pid)?;
        if stat.state != 'Z' || stat.ppid != z.ppid {
            return Err(DumpError::Zombie {
                pid,
                why: format!("it was reaped before the dump held its parent {}", z.ppid),
            });
        }
        audit::zombie(pid, false, &stat)?;
        let image_pid = image_u32(pid, "the pid", pid)?;
        pstree.processes.push(ProcessEntry {
            pid: image_pid,
            ppid: image_u32(pid, "the parent pid", stat.ppid)?,
            pgid: image_u32(pid, "the process group", stat.pgid)?,
            sid: image_u32(pid, "the session", stat.sid)?,
            threads: vec![image_pid],
            state: ProcessState::Zombie as i32,
            exit_status: stat.exit_code,
            stop_signal: 0,
        });
    }
    images.write_message(image::PSTREE, FileKind::PsTree, &pstree)?;
    images.write_message(image::FILES, FileKind::Files, &files.finish())?;
    let inventory = Inventory {
        format_version: image::FORMAT_VERSION,
        engine_version: env!("CARGO_PKG_VERSION").to_string(),
        root_pid: image_u32(root, "the pid", root)?,
        kernel_release: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        selinux_enabled: crate::selinux::enabled(),
        created_unix_ms: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
            .unwrap_or(0),
        page_size: PAGE_SIZE_U32,
        files: Vec::new(),
    };
    check_interrupt()?;
    let summary = DumpSummary {
        processes: pstree.processes.len(),
        threads,
        page_bytes,
    };
    Ok((summary, inventory, survey.sockets.take_connections()))
}

/// One process's images, and what its children may find of its pages (`parent`: its
/// parent's), kept only for a process with children.
type Dumped = (
    Task,
    Mm,
    Vec<crate::image::schema::ThreadCore>,
    u64,
    Option<memory::SharedFrames>,
);

#[allow(clippy::too_many_arguments)]
#[instrument(skip_all, fields(pid = tree.processes[idx].pid))]
fn dump_process(
    opts: &DumpOptions,
    tree: &mut SeizedTree,
    idx: usize,
    stat: &Stat,
    files: &mut FileTableBuilder,
    survey: &mut Survey,
    images: &mut ImageDirWriter,
    parent: Option<&memory::SharedFrames>,
) -> Result<Dumped, DumpError> {
    let pid = tree.processes[idx].pid;
    let flags = survey.vm_flags.remove(&pid);
    let sockets = &survey.sockets;
    // Everything that can refuse the dump is looked at before the process is touched.
    failpoint!("dump.proc.fds", |source| procfs::ProcError::Io {
        path: format!("/proc/{pid}/fd"),
        source,
    });
    let fd_list = procfs::fds(pid)?;
    let descs = fd_list
        .iter()
        .map(|&fd| files::classify(pid, fd, sockets))
        .collect::<Result<Vec<_>, _>>()?;
    failpoint!("dump.proc.maps", |source| procfs::ProcError::Io {
        path: format!("/proc/{pid}/maps"),
        source,
    });
    let maps = MapEntry::read(pid)?;
    // The audit's reading of smaps, the tree held still since (read again if it has none).
    let flags = match flags {
        Some(flags) => flags,
        None => procfs::VmFlags::read(pid)?,
    };
    let mut vmas = memory::vmas(pid, &maps, &flags)?;
    failpoint!("dump.proc.status", |source| procfs::ProcError::Io {
        path: format!("/proc/{pid}/status"),
        source,
    });
    let status = Status::read(pid)?;
    let tids: Vec<i32> = tree.processes[idx].tracees.iter().map(|t| t.tid).collect();
    let cgroups = cgroup::read(pid, &tids)?;
    failpoint!("dump.proc.mem", |source| crate::sys::SysError::Io {
        what: format!("reading /proc/{pid}/mem"),
        source,
    });
    let gadget = find_syscall_gadget(pid, &maps)?;
    let context = procfs::selinux_attr(pid, pid, "current");

    let proc = &mut tree.processes[idx];
    proc.make_remotes(gadget)?;
    let scratch = proc.map_scratch()?;
    let session_keyring = keyring::read(pid, &mut proc.remotes, scratch, &mut survey.keyrings)?;
    let leader = &mut proc.remotes[0];

    // Process-wide state only the process can tell.
    let brk = leader.syscall("brk", libc::SYS_brk, &[0])?;
    let dumpable = leader.syscall(
        "prctl(PR_GET_DUMPABLE)",
        libc::SYS_prctl,
        &[libc::PR_GET_DUMPABLE as u64],
    )?;
    let sigactions = thread::sigactions(leader, scratch)?;
    let state = process::read(pid, leader, scratch)?;

    // Descriptors, through the transport socket.
    let opened = &mut proc.opened_fds;
    let mut transport =
        transport::Transport::open(leader, scratch, pid, &context, opts.socket_label, opened)?;
    let drained = transport.drain(leader, scratch, &fd_list);
    transport.close(leader, opened)?;
    let fds = files.add_process(pid, &descs, drained?, sockets)?;
    files.add_mappings(pid, &mut vmas)?;

    // Per-thread state.
    let mut cores = Vec::new();
    for remote in proc.remotes.iter_mut() {
        let tid = remote.tid();
        let restart = proc
            .restarts
            .iter()
            .find(|(t, _)| *t == tid)
            .map(|(_, f)| f);
        cores.push(thread::dump_thread(pid, remote, scratch, restart)?);
    }
    if pid == opts.root {
        if let Some(core) = cores.iter().find(|c| c.pdeathsig != 0) {
            return Err(DumpError::RootParentDeathSignal {
                pid,
                tid: i32::try_from(core.tid).unwrap_or(-1),
                signal: i32::try_from(core.pdeathsig).unwrap_or(-1),
            });
        }
    }
    let shared_pending = proc.remotes[0]
        .tracee
        .pending_signals(true)?
        .into_iter()
        .map(|raw| SigInfo {
            // si_signo, the first int of the siginfo: a signal number, never negative.
            signo: u32::from_ne_bytes([raw[0], raw[1], raw[2], raw[3]]),
            raw: raw.to_vec(),
        })
        .collect();

    // Memory, last: nothing above may change it.
    let image_pid = image_u32(pid, "the pid", pid)?;
    let mut pages = images.pages_writer(image_pid)?;
    let record = survey.children.get(&pid).is_some_and(|n| *n > 0);
    let (pagemap, shared) =
        memory::dump_pages(pid, &proc.remotes[0], &vmas, &mut pages, parent, record)?;
    let page_bytes = pages.finish()?;
    debug!(page_bytes, vmas = vmas.len(), "memory dumped");

    let mut rlimits = Vec::new();
    for resource in 0..RLIMITS {
        // A resource this kernel does not know is left out.
        if let Ok((cur, max)) = rlimit(pid, resource) {
            rlimits.push(Rlimit { resource, cur, max });
        }
    }
    let personality = procfs::read_string(format!("/proc/{pid}/personality"))
        .ok()
        .and_then(|s| u32::from_str_radix(s.trim(), 16).ok())
        .unwrap_or(0);
    failpoint!("dump.proc.cwd", |source| procfs::ProcError::Io {
        path: format!("/proc/{pid}/cwd"),
        source,
    });
    let cwd = procfs::read_link(format!("/proc/{pid}/cwd"))?;
    failpoint!("dump.proc.auxv", |source| procfs::ProcError::Io {
        path: format!("/proc/{pid}/auxv"),
        source,
    });
    let auxv = procfs::auxv(pid)?;
    failpoint!("dump.proc.exe", |source| procfs::ProcError::Io {
        path: format!("/proc/{pid}/exe"),
        source,
    });
    let exe_path = procfs::read_link(format!("/proc/{pid}/exe"))?;
    let task = Task {
        pid: image_pid,
        creds: Some(Credentials {
            uid: status.uids[0],
            euid: status.uids[1],
            suid: status.uids[2],
            fsuid: status.uids[3],
            gid: status.gids[0],
            egid: status.gids[1],
            sgid: status.gids[2],
            fsgid: status.gids[3],
            groups: status.groups.clone(),
        }),
        cwd,
        umask: status.umask,
        rlimits,
        sigactions,
        fds,
        shared_pending,
        personality,
        dumpable: Some(image_u32(
            pid,
            "the dumpable flag",
            i64::try_from(dumpable).unwrap_or(i64::MAX),
        )?),
        oom_score_adj: Some(state.oom_score_adj),
        coredump_filter: Some(state.coredump_filter),
        mdwe: state.mdwe,
        posix_timers: state.posix_timers,
        child_subreaper: state.child_subreaper,
        thp_disable: state.thp_disable,
        itimers: state.itimers,
        membarrier: state.membarrier,
        cgroups,
        session_keyring,
    };
    let mm = Mm {
        vmas,
        fields: Some(MmFields {
            start_code: stat.start_code,
            end_code: stat.end_code,
            start_data: stat.start_data,
            end_data: stat.end_data,
            start_brk: stat.start_brk,
            brk,
            start_stack: stat.start_stack,
            arg_start: stat.arg_start,
            arg_end: stat.arg_end,
            env_start: stat.env_start,
            env_end: stat.env_end,
        }),
        auxv,
        exe_path,
        pagemap,
    };
    Ok((task, mm, cores, page_bytes, shared))
}
