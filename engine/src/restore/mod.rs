//! `crlab restore`: recreate the dumped tree from its images, with its
//! original pids, and let it run.
//!
//! **Invariant:** a failed restore leaves nothing behind: every task created
//! is traced with `PTRACE_O_EXITKILL` until it is complete, and killed on any
//! error, an interrupt ([`crate::interrupt`]) included. Once every task is
//! complete, `PTRACE_O_EXITKILL` is dropped before the tasks are detached, so a
//! crlab killed while detaching leaves the whole tree running, not half of it.
//!
//! Before anything is created, the images are checked: who could have written them
//! ([`image::Trust`]), every path they name ([`image::check_path`]), and the pids they
//! need, waited for while zombies hold them (`pids`).

mod cgroup;
mod context;
mod creds;
mod error;
mod files;
mod inet;
mod keyring;
mod memory;
mod pids;
mod stop;
mod thread;
mod tree;
mod zombie;

pub use context::{ContextOrder, SelinuxRefusal};
pub use error::RestoreError;

use crate::image::layout::{self, Group, Member, Step};
use crate::image::schema::{
    file_entry, Fd, FileTable, Mm, ProcessEntry, ProcessState, Task, ThreadCore, VmaKind,
};
use crate::image::{self, FileKind, ImageDirReader, Trust};
use crate::procfs::{self, MapEntry};
use crate::selinux;
use crate::sys::{find_syscall_gadget, rlimit, set_rlimit, Remote, Scratch};
use error::{task_id, StepContext};
use nix::sys::ptrace::Options;
use nix::sys::signal::{kill, Signal};
use nix::sys::wait::{waitpid, WaitPidFlag};
use nix::unistd::Pid;
use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::Duration;
use tracing::{debug, info};

/// How long a restore waits, by default, for pids held by zombies of the dumped tree.
pub const DEFAULT_PID_WAIT: Duration = Duration::from_secs(10);

/// What `crlab restore` was asked to do.
#[derive(Debug, Clone)]
pub struct RestoreOptions {
    pub images_dir: PathBuf,
    /// Whose images are accepted (the default: the caller's or root's only).
    pub trust: Trust,
    /// How long to wait for pids the images need that zombies still hold.
    pub pid_wait: Duration,
    /// Restore every process into this context instead of the dumped one.
    pub lsm_profile: Option<String>,
    /// When to write the context relative to creating threads (only
    /// `BeforeThreads` is right; the other is a negative control).
    pub context_order: ContextOrder,
}

impl Default for RestoreOptions {
    fn default() -> Self {
        RestoreOptions {
            images_dir: PathBuf::new(),
            trust: Trust::default(),
            pid_wait: DEFAULT_PID_WAIT,
            lsm_profile: None,
            context_order: ContextOrder::default(),
        }
    }
}

/// [`RestoreError::Interrupted`] once a stop signal has been received.
fn check_interrupt() -> Result<(), RestoreError> {
    match crate::interrupt::requested() {
        Some(signal) => Err(RestoreError::Interrupted { signal }),
        None => Ok(()),
    }
}

/// A restored tree, running.
#[derive(Debug)]
pub struct Restored {
    pub root_pid: i32,
    /// What the restore did that its user should know, one sentence each (a cgroup made
    /// again).
    pub notes: Vec<String>,
}

/// Everything the images say about one process.
struct ProcessImages {
    entry: ProcessEntry,
    /// `entry.pid` and `entry.threads` as the kernel's ids.
    pid: i32,
    tids: Vec<i32>,
    task: Task,
    mm: Mm,
    cores: Vec<ThreadCore>,
}

/// A process being restored: its leader's and its other threads' remotes.
struct Live<'a> {
    img: &'a ProcessImages,
    leader: Remote,
    threads: Vec<Remote>,
    /// Its address space is built before it creates its children, so they inherit it
    /// (`memory::Inherit`): every shared mapping its descendants hold is one of its own.
    builds_early: bool,
    /// Its address space is built: mapped and filled.
    built: bool,
    /// What it keeps of its parent's address space.
    inherit: memory::Inherit,
}

impl ProcessImages {
    fn zombie(&self) -> bool {
        self.entry.state == ProcessState::Zombie as i32
    }
}

impl Live<'_> {
    fn pid(&self) -> i32 {
        self.img.pid
    }
}

/// Kills every task created so far unless disarmed.
struct Cleanup {
    pids: Vec<i32>,
    armed: bool,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        for &pid in &self.pids {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
        // We trace all of them (and are the root's parent): collect each exit,
        // threads before their leader (created after it, so later in the list):
        // the kernel reports a traced leader's exit only once its threads are reaped.
        for &pid in self.pids.iter().rev() {
            let _ = waitpid(Pid::from_raw(pid), Some(WaitPidFlag::__WALL));
        }
    }
}

/// Reads every image of the dump, the process tree checked by the reader.
fn read_images(reader: &ImageDirReader) -> Result<(Vec<ProcessImages>, FileTable), RestoreError> {
    let pstree = reader.process_tree()?;
    let table: FileTable = reader.read_message(image::FILES, FileKind::Files)?;
    let mut procs: Vec<ProcessImages> = Vec::with_capacity(pstree.processes.len());
    for entry in &pstree.processes {
        let pid = entry.pid;
        if entry.state == ProcessState::Zombie as i32 {
            // Nothing but its status: it has no memory, descriptors or threads.
            procs.push(ProcessImages {
                entry: entry.clone(),
                pid: task_id(pid)?,
                tids: vec![task_id(pid)?],
                task: Task::default(),
                mm: Mm::default(),
                cores: Vec::new(),
            });
            continue;
        }
        let task: Task = reader.read_message(&image::task_name(pid), FileKind::Task)?;
        let mm: Mm = reader.read_message(&image::mm_name(pid), FileKind::Mm)?;
        check_paths(reader, pid, &task, &mm)?;
        let mut cores = Vec::new();
        for &tid in &entry.threads {
            cores.push(reader.read_message::<ThreadCore>(&image::core_name(tid), FileKind::Core)?);
        }
        procs.push(ProcessImages {
            entry: entry.clone(),
            pid: task_id(pid)?,
            tids: entry
                .threads
                .iter()
                .map(|&tid| task_id(tid))
                .collect::<Result<_, _>>()?,
            task,
            mm,
            cores,
        });
    }
    for entry in &table.files {
        match &entry.kind {
            Some(file_entry::Kind::Path(p)) => {
                checked_path(reader, image::FILES, "path of open file", &p.path)?;
            }
            Some(file_entry::Kind::Fifo(f)) => {
                checked_path(reader, image::FILES, "path of a named pipe", &f.path)?;
            }
            Some(file_entry::Kind::Deleted(d)) => {
                checked_path(reader, image::FILES, "path of a deleted file", &d.path)?;
            }
            Some(file_entry::Kind::Inotify(n)) => {
                for w in &n.watches {
                    checked_path(reader, image::FILES, "path of an inotify watch", &w.path)?;
                }
            }
            Some(file_entry::Kind::UnixSocket(s)) => {
                if let Some(path) = image::unix_socket_path(&s.name) {
                    let path = path.to_string_lossy();
                    checked_path(reader, image::FILES, "path of a Unix socket", &path)?;
                }
            }
            _ => {}
        }
    }
    Ok((procs, table))
}

/// Every path of one process's images is one a dump records ([`image::check_path`]).
fn check_paths(
    reader: &ImageDirReader,
    pid: u32,
    task: &Task,
    mm: &Mm,
) -> Result<(), RestoreError> {
    let task_file = image::task_name(pid);
    checked_path(reader, &task_file, "working directory", &task.cwd)?;
    for c in &task.cgroups {
        checked_path(reader, &task_file, "cgroup", &c.path)?;
    }
    let mm_file = image::mm_name(pid);
    checked_path(reader, &mm_file, "executable", &mm.exe_path)?;
    for v in &mm.vmas {
        let kind = VmaKind::try_from(v.kind).unwrap_or(VmaKind::Unspecified);
        if matches!(kind, VmaKind::FilePrivate | VmaKind::FileShared) {
            checked_path(reader, &mm_file, "mapped file", &v.path)?;
        }
    }
    Ok(())
}

fn checked_path(
    reader: &ImageDirReader,
    file: &str,
    what: &'static str,
    value: &str,
) -> Result<(), RestoreError> {
    image::check_path(value).map_err(|reason| RestoreError::BadPath {
        file: reader.dir().join(file),
        what,
        value: value.to_owned(),
        reason,
    })
}

/// Restores the tree in `opts.images_dir`. The root is a child of the caller.
pub fn restore(opts: &RestoreOptions) -> Result<Restored, RestoreError> {
    let reader = ImageDirReader::open_with(&opts.images_dir, opts.trust)?;
    let (procs, table) = read_images(&reader)?;
    // Before anything exists: every process must be able to use what it will be given.
    let targets: Vec<(i32, String)> = procs
        .iter()
        .map(|p| (p.pid, target_context(opts, p)))
        .collect();
    let uses: Vec<(i32, &str, Vec<selinux::Descriptor>)> = procs
        .iter()
        .zip(&targets)
        .filter(|(p, _)| !p.zombie())
        .map(|(p, (pid, to))| {
            let fds = selinux::recreated_descriptors(&p.task.fds, &table);
            (*pid, to.as_str(), fds)
        })
        .collect();
    context::check_descriptors(&uses)?;
    context::check_sockets(&table)?;
    let keyrings: Vec<selinux::KeyringCreation> = procs
        .iter()
        .zip(&targets)
        .filter_map(|(p, (pid, to))| {
            let ring = p.task.session_keyring.as_ref();
            selinux::KeyringCreation::of(*pid, ring, relabel(p, to))
        })
        .collect();
    context::check_keyrings(&keyrings)?;
    let unix_sockets = files::Sockets::new(&table)?;
    let memberships: Vec<(i32, &[image::schema::Cgroup])> = procs
        .iter()
        .map(|p| (p.pid, p.task.cgroups.as_slice()))
        .collect();
    let mut cgroups = cgroup::Cgroups::plan(&memberships)?;
    let ids: Vec<i32> = procs.iter().flat_map(|p| p.tids.iter().copied()).collect();
    pids::wait_free(&ids, opts.pid_wait)?;
    check_interrupt()?;
    let all_mm: Vec<&Mm> = procs.iter().map(|p| &p.mm).collect();
    let shared = memory::shared_anon_groups(&all_mm)?;
    let shared_ranges: Vec<(u64, u64)> = shared.iter().map(|v| (v.start, v.end)).collect();
    let all_fds: Vec<&[Fd]> = procs.iter().map(|p| p.task.fds.as_slice()).collect();

    // The root, a copy of the engine, cleared down to a trampoline.
    let root_img = &procs[0];
    let root_pid = root_img.pid;
    let root_t = tree::spawn_root(root_pid)?;
    let mut cleanup = Cleanup {
        pids: vec![root_pid],
        armed: true,
    };
    // In its cgroups before anything is charged to it; its children start there too.
    cgroups.join(root_pid)?;
    let me = nix::unistd::getpid().as_raw();
    let own_maps = MapEntry::read(me).map_err(|e| RestoreError::Inconsistent(e.to_string()))?;
    let mut root = Remote::new(root_t, find_syscall_gadget(me, &own_maps)?, root_t.regs()?)?;
    shed_engine_state(&mut root, root_pid)?;
    let tramp = memory::map_trampoline(&mut root, root_pid, &all_mm)?;
    let scratch = tramp.scratch;
    memory::clear_address_space(&mut root, root_pid, &root_img.mm, &tramp, &[])?;
    // What the whole tree shares is made once, here, and inherited by fork.
    for v in &shared {
        memory::map_one(&mut root, root_pid, v, scratch)?;
    }
    let parked = files::open_all(
        &mut root,
        root_pid,
        scratch,
        &table,
        files::park_base(&all_fds),
    )?;

    // The tree, each process created by its parent, with its session and group, in the order
    // the layout's plan gives (checked by the dump against the same rule).
    let plan = layout_plan(&procs)?;
    let early = builds_early(&procs, &shared);
    let mut lives: Vec<Live> = vec![Live {
        img: root_img,
        leader: root,
        threads: Vec::new(),
        builds_early: early[0],
        built: false,
        inherit: memory::Inherit::default(),
    }];
    for step in &plan.steps {
        check_interrupt()?;
        match *step {
            Step::Create(i) => {
                let p = &procs[i];
                let j = index_of(&lives, p.entry.ppid)?;
                if lives[j].builds_early && !lives[j].built {
                    build_at(&mut lives, j, &reader, &tramp, &shared_ranges, &parked)?;
                }
                let parent = &mut lives[j];
                let inherit = if parent.built && !p.zombie() {
                    memory::Inherit::of(&p.mm, &parent.img.mm)
                } else {
                    memory::Inherit::default()
                };
                let t =
                    tree::clone_in(&mut parent.leader, scratch, p.pid, false, &mut cleanup.pids)?;
                cgroups.join(p.pid)?;
                let mut leader = Remote::new(t, tramp.gadget, t.regs()?)?;
                tramp.adopt(&mut leader);
                lives.push(Live {
                    img: p,
                    leader,
                    threads: Vec::new(),
                    builds_early: early[i],
                    built: false,
                    inherit,
                });
            }
            Step::Session(i) => {
                let live = live_of(&mut lives, procs[i].entry.pid)?;
                let pid = live.pid();
                failpoint!("restore.session", error::injected(pid, "the session"));
                live.leader
                    .syscall("setsid", libc::SYS_setsid, &[])
                    .step(pid, "the session")?;
            }
            Step::Group(i) => {
                let live = live_of(&mut lives, procs[i].entry.pid)?;
                let pid = live.pid();
                failpoint!("restore.session", error::injected(pid, "the process group"));
                live.leader
                    .syscall("setpgid", libc::SYS_setpgid, &[0, 0])
                    .step(pid, "the process group")?;
            }
        }
    }
    // The caller's group, which a root that does not lead its own stays in.
    let callers = u64::try_from(nix::unistd::getpgrp().as_raw()).unwrap_or(0);
    for &(i, group) in &plan.joins {
        let live = live_of(&mut lives, procs[i].entry.pid)?;
        let pgid = match group {
            Group::Led(g) => u64::try_from(g).unwrap_or(0),
            Group::Callers => callers,
        };
        let pid = live.pid();
        live.leader
            .syscall("setpgid", libc::SYS_setpgid, &[0, pgid])
            .step(pid, "the process group")?;
    }

    // Zombies end as they ended, now that their sessions and groups are made; the rest is
    // about living processes.
    let mut i = 0;
    while i < lives.len() {
        if !lives[i].img.zombie() {
            i += 1;
            continue;
        }
        let mut z = lives.remove(i);
        let parent = live_of(&mut lives, z.img.entry.ppid)?;
        zombie::end(&mut z, parent, scratch)?;
    }

    // The Unix sockets, each made by the process its peer credentials name, with them, and
    // handed to the processes that hold it.
    let mut at: Vec<files::At> = lives
        .iter_mut()
        .map(|l| {
            let img = l.img;
            files::At {
                pid: img.pid,
                remote: &mut l.leader,
                fds: &img.task.fds,
            }
        })
        .collect();
    files::make_unix_sockets(&unix_sockets, &mut at, scratch, &parked)?;
    drop(at);

    // Each process's own address space (unless it was built before its children were
    // created), descriptors and process-wide state.
    for i in 0..lives.len() {
        check_interrupt()?;
        if !lives[i].built {
            build_at(&mut lives, i, &reader, &tramp, &shared_ranges, &parked)?;
        }
        rebuild_process(&mut lives[i], &tramp, &parked, &table)?;
    }

    // Session keyrings first, each process still root and in the engine's context: joined
    // (the first process of a keyring makes it, under its label), then given their owners
    // and permissions, before the threads (which share them) and the contexts.
    let targets: Vec<String> = lives.iter().map(|l| target_context(opts, l.img)).collect();
    let mut keyrings = keyring::Made::new();
    for (live, target) in lives.iter_mut().zip(&targets) {
        let (pid, ring) = (live.pid(), live.img.task.session_keyring.as_ref());
        let relabel = relabel(live.img, target);
        keyring::join(&mut live.leader, scratch, pid, ring, relabel, &mut keyrings)?;
    }
    let mut owned = Vec::new();
    for live in &mut lives {
        let (pid, ring) = (live.pid(), live.img.task.session_keyring.as_ref());
        keyring::finish(&mut live.leader, pid, ring, &keyrings, &mut owned)?;
    }

    // Contexts, then threads: a multi-threaded process may only move to a bounded context.
    let engine_ctx = procfs::selinux_attr(root_pid, root_pid, "current");
    for (live, target) in lives.iter_mut().zip(&targets) {
        check_interrupt()?;
        let order = opts.context_order;
        context_and_threads(live, order, &engine_ctx, target, &tramp, &mut cleanup.pids)?;
    }

    // Every process has its session keyring as the image says, seen from its own context.
    for (live, target) in lives.iter_mut().zip(&targets) {
        let (pid, ring) = (live.pid(), live.img.task.session_keyring.as_ref());
        let relabel = relabel(live.img, target);
        keyring::verify(&mut live.leader, scratch, pid, ring, relabel)?;
    }

    check_interrupt()?;
    // Last words, then let everything run. Credentials first: a thread that is no longer
    // root can do nothing privileged, and each thread takes its own.
    for live in &mut lives {
        let pid = live.pid();
        if let Some(c) = &live.img.task.creds {
            let core = &live.img.cores[0];
            creds::set_credentials(&mut live.leader, scratch, pid, c, core)?;
            for (remote, core) in live.threads.iter_mut().zip(&live.img.cores[1..]) {
                creds::set_credentials(remote, scratch, pid, c, core)?;
            }
        }
        thread::after_credentials(&mut live.leader, pid, &live.img.cores[0])?;
        for (remote, core) in live.threads.iter_mut().zip(&live.img.cores[1..]) {
            thread::after_credentials(remote, pid, core)?;
        }
        creds::set_dumpable(&mut live.leader, pid, live.img.task.dumpable)?;
        thread::set_posix_timers(&mut live.leader, pid, scratch, &live.img.task)?;
        thread::set_itimers(&mut live.leader, pid, scratch, &live.img.task)?;
        thread::set_mdwe(&mut live.leader, pid, &live.img.task)?;
        memory::unmap_trampoline(&mut live.leader, pid, &tramp)?;
        thread::finish_thread(&live.leader.tracee, pid, &live.img.cores[0])?;
        for (remote, core) in live.threads.iter().zip(&live.img.cores[1..]) {
            thread::finish_thread(&remote.tracee, pid, core)?;
        }
    }
    // Every task is complete: from here a crlab that dies (SIGKILL) must leave them to the
    // kernel's detach, so they run, not to PTRACE_O_EXITKILL, which would kill the tasks not
    // yet detached and leave a tree half restored. A failure still kills them all (cleanup).
    for live in &lives {
        for r in live.threads.iter().chain([&live.leader]) {
            r.tracee.set_options(Options::PTRACE_O_TRACESYSGOOD)?;
            failpoint!(
                "restore.options",
                error::injected(live.pid(), "the ptrace options")
            );
        }
    }
    // A process dumped stopped is stopped again before any thread of it runs.
    for live in &lives {
        if live.img.entry.stop_signal != 0 {
            stop::queue(live.pid(), live.img.entry.stop_signal)?;
        }
    }
    for live in &lives {
        for r in live.threads.iter().chain([&live.leader]) {
            r.tracee.detach()?;
            failpoint!("restore.detach", error::injected(live.pid(), "the detach"));
        }
    }
    cleanup.armed = false;
    for live in &lives {
        if live.img.entry.stop_signal != 0 {
            stop::wait_stopped(live.pid(), &live.img.tids)?;
        }
    }
    info!(pid = root_pid, processes = lives.len(), "restored");
    Ok(Restored {
        root_pid,
        notes: cgroups.keep(),
    })
}

/// The context the restore gives process `p`: `--lsm-profile`, else its leader's as dumped.
fn target_context(opts: &RestoreOptions, p: &ProcessImages) -> String {
    opts.lsm_profile
        .clone()
        .unwrap_or_else(|| dumped_context(p).to_owned())
}

/// Process `p`'s context at the dump: its leader's.
fn dumped_context(p: &ProcessImages) -> &str {
    p.cores.first().map_or("", |c| c.selinux_context.as_str())
}

/// How the labels of `p`'s keyring come back when it is restored in `target`.
fn relabel<'a>(p: &'a ProcessImages, target: &'a str) -> selinux::Relabel<'a> {
    selinux::Relabel {
        dumped: dumped_context(p),
        target,
    }
}

/// What the root, a copy of the engine, must not keep of it: every signal is blocked while
/// the engine works in the tasks (the image's masks come last), the engine's descriptors are
/// closed, its rseq registration dropped (the area is about to be unmapped, and the kernel
/// would fault the task when it next updates it), and its descriptor limit raised.
fn shed_engine_state(root: &mut Remote, pid: i32) -> Result<(), RestoreError> {
    failpoint!("restore.shed", error::injected(pid, "the signal mask"));
    let tracee = root.tracee;
    tracee.set_sigmask(u64::MAX).step(pid, "the signal mask")?;
    root.syscall(
        "close_range",
        libc::SYS_close_range,
        &[0, u64::from(u32::MAX), 0],
    )
    .step(pid, "the engine's descriptors")?;
    if let Some(r) = tracee.rseq()? {
        root.syscall(
            "rseq(unregister)",
            libc::SYS_rseq,
            &[
                r.rseq_abi_pointer,
                u64::from(r.rseq_abi_size),
                1,
                u64::from(r.signature),
            ],
        )
        .step(pid, "the engine's rseq registration")?;
    }
    raise_nofile(pid);
    Ok(())
}

/// Builds the address space of `lives[i]` ([`build_memory`]), with its parent's remote (its
/// parent comes before it) for the pages it takes from the parent.
fn build_at(
    lives: &mut [Live<'_>],
    i: usize,
    reader: &ImageDirReader,
    tramp: &memory::Trampoline,
    shared: &[(u64, u64)],
    parked: &files::Parked,
) -> Result<(), RestoreError> {
    let (before, rest) = lives.split_at_mut(i);
    let Some(live) = rest.first_mut() else {
        return Err(RestoreError::Inconsistent(format!(
            "no process {i} to build"
        )));
    };
    let ppid = live.img.entry.ppid;
    let parent = before
        .iter()
        .find(|l| l.img.entry.pid == ppid)
        .map(|l| &l.leader);
    build_memory(live, parent, reader, tramp, shared, parked)
}

/// Builds one process's address space: clears what it holds, keeping the shared mappings of
/// its image (`shared`: every one the tree shares, made in the root) and what it inherited of
/// its parent's (the root, cleared before anything else, only drops the shared mappings made
/// for its children), maps the rest of its image and fills its pages.
fn build_memory(
    live: &mut Live<'_>,
    parent: Option<&Remote>,
    reader: &ImageDirReader,
    tramp: &memory::Trampoline,
    shared: &[(u64, u64)],
    parked: &files::Parked,
) -> Result<(), RestoreError> {
    let (pid, mm, scratch) = (live.pid(), &live.img.mm, tramp.scratch);
    let mut keep = own_shared(mm, shared);
    keep.extend_from_slice(&live.inherit.ranges);
    if live.img.entry.ppid == 0 {
        // Its children have it all: a root that builds early holds every shared mapping
        // its descendants do (`builds_early`).
        for &(start, end) in shared.iter().filter(|r| !keep.contains(r)) {
            live.leader
                .unmap(start, end - start)
                .step(pid, "a shared mapping made for the children")?;
        }
    } else {
        memory::clear_address_space(&mut live.leader, pid, mm, tramp, &keep)?;
    }
    memory::map_vmas(&mut live.leader, pid, mm, scratch, &keep, parked)?;
    memory::drop_stale(&mut live.leader, pid, mm, &live.inherit)?;
    // Pages the dump recorded as the parent's come from its memory where the fork did not
    // give them: the parent comes first in the tree, so its address space is built already.
    let pages = reader.pages(live.img.entry.pid)?;
    memory::fill_pages(&live.leader, pid, mm, pages, &live.inherit, parent)?;
    live.built = true;
    debug!(
        pid,
        inherited = live.inherit.ranges.len(),
        "address space built"
    );
    Ok(())
}

/// The shared mappings of the tree (`shared`) that `mm` holds.
fn own_shared(mm: &Mm, shared: &[(u64, u64)]) -> Vec<(u64, u64)> {
    shared
        .iter()
        .copied()
        .filter(|r| mm.vmas.iter().any(|v| (v.start, v.end) == *r))
        .collect()
}

/// Which processes of `procs` (in order, parents first) build their address space before they
/// create their children: those every shared mapping of whose descendants is one of their own,
/// so building it (which unmaps the others) takes none from a child that needs it, and whose
/// parent built early too, so the pages the dump recorded as the parent's are there to copy
/// where a mapping is not inherited. Zombies build none.
fn builds_early(procs: &[ProcessImages], shared: &[image::schema::Vma]) -> Vec<bool> {
    let index: HashMap<u32, usize> = procs
        .iter()
        .enumerate()
        .map(|(i, p)| (p.entry.pid, i))
        .collect();
    // Parents come first (the reader checked): a parent's index is below its child's.
    let parent: Vec<Option<usize>> = procs
        .iter()
        .enumerate()
        .map(|(i, p)| index.get(&p.entry.ppid).copied().filter(|&j| j < i))
        .collect();
    // Which of the shared mappings each process holds, and which its descendants hold.
    let held: Vec<Vec<bool>> = procs
        .iter()
        .map(|p| {
            let ranges: HashSet<(u64, u64)> = p.mm.vmas.iter().map(|v| (v.start, v.end)).collect();
            shared
                .iter()
                .map(|s| ranges.contains(&(s.start, s.end)))
                .collect()
        })
        .collect();
    let mut below = vec![vec![false; shared.len()]; procs.len()];
    for i in (0..procs.len()).rev() {
        if let Some(j) = parent[i] {
            let theirs: Vec<bool> = held[i]
                .iter()
                .zip(&below[i])
                .map(|(h, b)| *h || *b)
                .collect();
            for (mine, t) in below[j].iter_mut().zip(theirs) {
                *mine |= t;
            }
        }
    }
    let mut early: Vec<bool> = Vec::with_capacity(procs.len());
    for (i, p) in procs.iter().enumerate() {
        let parent_early = i == 0 || parent[i].is_some_and(|j| early[j]);
        let own = below[i].iter().zip(&held[i]).all(|(b, h)| !b || *h);
        early.push(!p.zombie() && parent_early && own);
    }
    early
}

/// The rest of one process, once its address space is built: advice and locks, mm fields,
/// descriptors and process-wide state.
fn rebuild_process(
    live: &mut Live<'_>,
    tramp: &memory::Trampoline,
    parked: &files::Parked,
    table: &FileTable,
) -> Result<(), RestoreError> {
    let (pid, mm, scratch) = (live.pid(), &live.img.mm, tramp.scratch);
    memory::advise(&mut live.leader, pid, mm)?;
    memory::set_mm_fields(&mut live.leader, pid, mm, scratch)?;
    let fds = &live.img.task.fds;
    files::install(&mut live.leader, pid, fds, parked)?;
    let image_pid = live.img.entry.pid;
    files::register_epolls(&mut live.leader, pid, image_pid, scratch, fds, table)?;
    thread::restore_process_state(&mut live.leader, pid, scratch, &live.img.task)?;
    thread::set_proc_files(pid, &live.img.task)?;
    debug!(pid, "process rebuilt");
    Ok(())
}

/// The process's context and its threads, in `order`, then every thread's own state, the
/// process's pending signals and its resource limits.
fn context_and_threads(
    live: &mut Live<'_>,
    order: ContextOrder,
    engine_ctx: &str,
    target: &str,
    tramp: &memory::Trampoline,
    created: &mut Vec<i32>,
) -> Result<(), RestoreError> {
    let (pid, scratch) = (live.pid(), tramp.scratch);
    match order {
        ContextOrder::BeforeThreads => {
            context::set_context(&mut live.leader, scratch, pid, engine_ctx, target)?;
            create_threads(live, scratch, tramp, created)?;
        }
        ContextOrder::AfterThreads => {
            create_threads(live, scratch, tramp, created)?;
            context::set_context(&mut live.leader, scratch, pid, engine_ctx, target)?;
        }
    }
    thread::restore_thread(&mut live.leader, pid, scratch, &live.img.cores[0])?;
    for (remote, core) in live.threads.iter_mut().zip(&live.img.cores[1..]) {
        thread::restore_thread(remote, pid, scratch, core)?;
    }
    let shared_pending = &live.img.task.shared_pending;
    thread::queue_signals(&mut live.leader, pid, scratch, shared_pending, None)?;
    thread::set_rlimits(pid, &live.img.task)?;
    Ok(())
}

/// Creates a process's threads with their original ids; each is added to
/// `created` at once, so a failure later still reaps it.
fn create_threads(
    live: &mut Live<'_>,
    scratch: Scratch,
    tramp: &memory::Trampoline,
    created: &mut Vec<i32>,
) -> Result<(), RestoreError> {
    for &tid in &live.img.tids[1..] {
        let t = tree::clone_in(&mut live.leader, scratch, tid, true, created)?;
        let mut r = Remote::new(t, tramp.gadget, t.regs()?)?;
        tramp.adopt(&mut r);
        live.threads.push(r);
    }
    Ok(())
}

/// The layout's plan for the images' tree ([`layout::plan`]).
fn layout_plan(procs: &[ProcessImages]) -> Result<layout::Plan, RestoreError> {
    let members = procs
        .iter()
        .map(|p| {
            Ok(Member {
                pid: p.pid,
                ppid: task_id(p.entry.ppid)?,
                pgid: task_id(p.entry.pgid)?,
                sid: task_id(p.entry.sid)?,
            })
        })
        .collect::<Result<Vec<_>, RestoreError>>()?;
    layout::plan(&members).map_err(|r| {
        RestoreError::Inconsistent(format!(
            "process {} (session {}, group {}): {}",
            r.pid, r.sid, r.pgid, r.why
        ))
    })
}

/// Where in `lives` the process whose image pid is `pid` is.
fn index_of(lives: &[Live<'_>], pid: u32) -> Result<usize, RestoreError> {
    lives
        .iter()
        .position(|l| l.img.entry.pid == pid)
        .ok_or_else(|| RestoreError::Inconsistent(format!("process {pid} is not created yet")))
}

/// The process being restored whose image pid is `pid`.
fn live_of<'l, 'a>(lives: &'l mut [Live<'a>], pid: u32) -> Result<&'l mut Live<'a>, RestoreError> {
    lives
        .iter_mut()
        .find(|l| l.img.entry.pid == pid)
        .ok_or_else(|| RestoreError::Inconsistent(format!("process {pid} is not created yet")))
}

/// Lets the task hold descriptors above every target number while they are
/// sorted out; the image's own limit is set at the end. Best effort: a task that keeps
/// its limit fails later, naming the descriptor it could not install.
fn raise_nofile(pid: i32) {
    if let Ok((_, max)) = rlimit(pid, libc::RLIMIT_NOFILE) {
        if let Err(e) = set_rlimit(pid, libc::RLIMIT_NOFILE, max, max) {
            tracing::debug!(pid, error = %e, "raising the descriptor limit");
        }
    }
}
