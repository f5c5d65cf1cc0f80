//! Why a dump failed.

use crate::image::ImageError;
use crate::procfs::ProcError;
use crate::selinux::SelinuxError;
use crate::sys::SysError;

#[derive(Debug, thiserror::Error)]
pub enum DumpError {
    #[error("process {pid} does not exist")]
    NoSuchProcess { pid: i32 },
    #[error("cannot dump pid {pid}: it is the engine itself or one of its ancestors")]
    SelfDump { pid: i32 },
    #[error("fd {fd} of process {pid} is {kind} ({target}), which crlab cannot dump yet; {hint}")]
    UnsupportedFd {
        pid: i32,
        fd: i32,
        kind: &'static str,
        target: String,
        hint: &'static str,
    },
    #[error(
        "{holder} of process {pid} is the deleted file {path}, which crlab cannot restore: {why}; \
         {hint}"
    )]
    DeletedFile {
        pid: i32,
        /// What holds it: `fd 5`, `mapping 0x7f00-0x7f10`.
        holder: String,
        path: String,
        why: &'static str,
        hint: &'static str,
    },
    #[error(
        "fd {fd} of process {pid} is the named pipe (FIFO) {path}, also open in process \
         {holder} outside the dump, with which it shares its buffer; dump that process with \
         the tree, or close the FIFO there"
    )]
    FifoOutside {
        pid: i32,
        fd: i32,
        path: String,
        holder: i32,
    },
    #[error("fd {fd} of process {pid} is {what} ({target}), which crlab cannot dump; {hint}")]
    Socket {
        pid: i32,
        fd: i32,
        what: String,
        target: String,
        hint: &'static str,
    },
    #[error("mapping {start:#x}-{end:#x} ({path}) of process {pid} is {kind}, which crlab cannot dump yet")]
    UnsupportedMapping {
        pid: i32,
        start: u64,
        end: u64,
        path: String,
        kind: &'static str,
    },
    #[error(
        "process {pid} is a zombie (it exited and its parent has not reaped it) that crlab cannot \
         restore as one: {why}; have its parent reap it (waitpid) before the dump"
    )]
    Zombie { pid: i32, why: String },
    #[error(
        "process {pid} is in a tracing stop (state t): another tracer (a debugger, strace) holds \
         it, and crlab cannot seize it too: detach that tracer before the dump"
    )]
    Traced { pid: i32 },
    #[error(
        "process {pid} holds {lock} on fd {fd} ({path}); crlab does not restore file locks or \
         leases: release it before the dump"
    )]
    FileLock {
        pid: i32,
        fd: i32,
        path: String,
        /// What kind of lock, in words ("a POSIX record lock", "an OFD lock", ...).
        lock: &'static str,
    },
    #[error(
        "fd {fd} of process {pid} is an inotify instance whose watch {wd} (inode {ino} on device \
         {dev}) {why}; crlab cannot restore it: {hint}"
    )]
    InotifyWatch {
        pid: i32,
        fd: i32,
        wd: i32,
        ino: u64,
        /// `major:minor`.
        dev: String,
        /// What is wrong with it, in words.
        why: &'static str,
        hint: &'static str,
    },
    #[error(
        "fd {fd} of process {pid} is an epoll instance whose registration of descriptor {tfd} \
         {why}; crlab cannot restore it: {hint}"
    )]
    EpollRegistration {
        pid: i32,
        fd: i32,
        tfd: i32,
        /// What is wrong with it, in words.
        why: &'static str,
        hint: &'static str,
    },
    #[error(
        "fd {fd} ({path}) of process {pid} {what}; crlab does not restore I/O signalling \
         (F_SETOWN, F_SETSIG, O_ASYNC): clear it before the dump"
    )]
    FileSignalling {
        pid: i32,
        fd: i32,
        path: String,
        /// What is set, in words ("sends SIGIO to process 12 (F_SETOWN)").
        what: String,
    },
    #[error(
        "process {pid} has POSIX timers (timer_create, /proc/{pid}/timers) that crlab cannot \
         recreate: {why}; delete them before the dump"
    )]
    PosixTimers { pid: i32, why: String },
    #[error(
        "process {pid} is in cgroup {path} of {hierarchy}, which crlab cannot record: {why}; \
         dump from the cgroup namespace the process is in"
    )]
    CgroupPath {
        pid: i32,
        hierarchy: String,
        path: String,
        why: &'static str,
    },
    #[error(
        "thread {tid} of process {pid} is in cgroup {thread} of {hierarchy}, its process in \
         {process}; crlab restores a process's threads in its own cgroups: move the thread \
         into the process's cgroup before the dump"
    )]
    ThreadCgroup {
        pid: i32,
        tid: i32,
        hierarchy: String,
        thread: String,
        process: String,
    },
    #[error(
        "processes {pid} and {other} share one {what}; crlab restores every process with its \
         own: dump a tree whose processes share none"
    )]
    SharedWithProcess {
        pid: i32,
        other: i32,
        /// What is shared ("descriptor table (CLONE_FILES)", ...).
        what: &'static str,
    },
    #[error(
        "process {pid} runs with its root directory at {root} (chroot); crlab does not restore \
         a changed root: dump processes whose root is the engine's"
    )]
    Chroot { pid: i32, root: String },
    #[error(
        "process {pid} is in another {ns} namespace ({theirs}) than crlab ({ours}); crlab \
         restores processes into its own namespaces: run crlab in the process's namespaces \
         (nsenter), or dump a process that shares crlab's"
    )]
    Namespace {
        pid: i32,
        ns: &'static str,
        theirs: String,
        ours: String,
    },
    #[error(
        "process {pid} has audit {what} {theirs} and crlab {ours}: a restored process takes \
         crlab's, which the kernel lets no one set back; run crlab in the process's audit login \
         session (for a service: from a service, e.g. with systemd-run)"
    )]
    AuditSession {
        pid: i32,
        /// "login uid" or "session id".
        what: &'static str,
        theirs: String,
        ours: String,
    },
    #[error(
        "the working directory of process {pid} ({path}) was deleted; crlab cannot restore a \
         deleted working directory: change to a directory that exists before the dump"
    )]
    DeletedCwd { pid: i32, path: String },
    #[error(
        "process {pid} is in session {sid} and process group {pgid}, which a restore cannot \
         recreate: {why}; dump a tree whose sessions and groups are led by its own members"
    )]
    SessionLayout {
        pid: i32,
        sid: i32,
        pgid: i32,
        why: String,
    },
    #[error(
        "shared memory object {shmem_id} is mapped at {first_start:#x} in process {first_pid} and \
         at {second_start:#x} in process {second_pid}; crlab restores shared memory at one \
         address only: map it at the same address in every process"
    )]
    SharedMemoryAddresses {
        shmem_id: u64,
        first_pid: i32,
        first_start: u64,
        second_pid: i32,
        second_start: u64,
    },
    #[error(
        "mapping {start:#x}-{end:#x} ({path}) of process {pid} is {what} (VmFlags {flag}); crlab \
         does not restore this: dump the process without it"
    )]
    MappingFlags {
        pid: i32,
        start: u64,
        end: u64,
        path: String,
        flag: String,
        what: &'static str,
    },
    #[error(
        "thread {tid} of process {pid} runs under seccomp (mode {mode}); crlab does not restore \
         seccomp filters: dump processes without them"
    )]
    Seccomp { pid: i32, tid: i32, mode: u32 },
    #[error(
        "thread {tid} of process {pid}, the root of the dump, has parent-death signal {signal} \
         (PR_SET_PDEATHSIG), tied to a parent that is not part of the dump; crlab cannot \
         restore it: dump its parent's tree, or clear it"
    )]
    RootParentDeathSignal { pid: i32, tid: i32, signal: i32 },
    #[error("process {pid} {what}; crlab does not restore it: {hint}")]
    Keyring {
        pid: i32,
        /// The keyring or key, as the process sees it.
        what: String,
        hint: &'static str,
    },
    #[error("thread {tid} of process {pid} {what}; crlab does not restore it: {hint}")]
    ThreadState {
        pid: i32,
        tid: i32,
        /// The state, in words ("runs under SCHED_DEADLINE").
        what: String,
        hint: &'static str,
    },
    #[error("transport socket to process {pid}: the process could not connect to the engine's socket; \
             with SELinux enforcing this is the `unix_stream_socket {{ connectto }}` check from the process's \
             context {context:?} to the socket's label {socket:?}{rule}")]
    TransportConnect {
        pid: i32,
        context: String,
        /// The listening socket's label, as the kernel holds it.
        socket: String,
        /// What policy would allow it, when the types differ.
        rule: String,
        #[source]
        source: SysError,
    },
    #[error(
        "{what} of process {pid} is {value}, which the image format cannot record; the kernel \
         reported something crlab does not expect, dump on a supported kernel"
    )]
    OutOfRange {
        pid: i32,
        what: &'static str,
        value: i64,
    },
    #[error("the dump was interrupted by signal {signal}; the processes were left as they were (every change undone, every thread detached) and no new dump was written")]
    Interrupted { signal: i32 },
    #[error("transport socket to process {pid}: {what}")]
    Transport { pid: i32, what: String },
    #[error("fd {fd} of process {pid}: finding {what}")]
    FileProbe {
        pid: i32,
        fd: i32,
        what: &'static str,
        #[source]
        source: SysError,
    },
    #[error(transparent)]
    Sys(#[from] SysError),
    #[error(transparent)]
    Proc(#[from] ProcError),
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Selinux(#[from] SelinuxError),
}

/// `value` (a pid, a descriptor number, a flag the kernel reported about process `pid`) as
/// the unsigned number the image records.
pub fn image_u32(
    pid: i32,
    what: &'static str,
    value: impl Into<i64> + Copy,
) -> Result<u32, DumpError> {
    let value: i64 = value.into();
    u32::try_from(value).map_err(|_| DumpError::OutOfRange { pid, what, value })
}
