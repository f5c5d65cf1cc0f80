//! A process tree of three generations sharing a pipe, a file description and shared memory,
//! checkpointed as one.
//!
//! The root (the workload's pid, a session leader) forks A and B; A forks A1, B forks B1. B
//! moves itself into a process group of its own (`setpgid(0, 0)`) before forking, so B1 is in
//! B's group; A and A1 stay in the root's. Shared between them:
//! - a pipe created by the root before it forks, of which only A1 keeps the write end and only
//!   B1 the read end: A1 writes a counter (one little-endian u64 per write, every millisecond)
//!   and B1 reads it, so values are in flight, buffered in the pipe or blocked on at any time;
//! - `shared-offset.bin`, opened by the root before it forks (one open file description for
//!   all five); B1 reads 50 bytes of it before the ready file, which moves the offset all
//!   others see;
//! - a `MAP_SHARED | MAP_ANONYMOUS` region the root maps and fills before it forks: a header
//!   of atomics (ready flags, a token, one slot per member written before the wait and one
//!   after), two pages of a pattern the root wrote and one page B wrote before the wait.
//!
//! With `zombie` as its argument, A also forks A2, which exits at once with status 7 and which
//! A does not reap before the trigger: the tree holds a zombie (announced as `zombie <pid>`),
//! which A reaps once triggered, checking its status. `zombie-signal`: A2 is killed by SIGTERM
//! instead; `zombie-core`: A2 dumps core (SIGABRT, in the state dir), which the engine
//! refuses.
//!
//! The root waits in its wait mode, the others in loops of `nanosleep` (A, A1), `poll` with a
//! timeout (B) or a blocking `read` on the pipe (B1). Once triggered, the root creates the go
//! file the others poll for, and each member checks:
//! - its pid, parent pid, process group, session and descriptor table (the root: the common
//!   checks);
//! - the shared region's content, including every member's before-slot;
//! - in turn (root, A, B, A1, B1, passing a token through the shared region): the shared
//!   file's offset is where the previous member left it; it reads 10 bytes, checks them and
//!   writes its after-slot; then that it sees every member's after-slot: writes made after
//!   the restore by one process are seen by all the others;
//! - A1 writes 200 more values once it sees the go file and closes its end; B1 reads until end
//!   of file and checks it got every value A1 wrote, in order, with no gap and no duplicate:
//!   the sequence went on, whole, across the checkpoint and after the trigger. The end of
//!   file also proves no other write end of the pipe is open anywhere.
//!
//! Each member writes its report in a slot of the shared region (and, for people, in
//! `report-<name>` in the state dir); parents reap their children (A also its zombie) and check
//! they exited 0. The root collects the four reports into the result. Announces `member-a`,
//! `member-b`, `member-a1` and `member-b1` with their pids.
//!
//! Mixed SELinux contexts: with `CRLAB_MEMBER_CONTEXTS` set to five contexts (root, a, b, a1,
//! b1, separated by spaces), each member joins a new session keyring made under its context
//! and writes its own `attr/current` once it has forked its children and before it reports
//! ready, as a container runtime's init does before it starts the payload; children are forked while their parent still runs in the context the tree
//! started in, since a process in one category set may not move to another. After the trigger
//! each member checks it is still in its context. Reports go through the shared region
//! because a member may not read files written in another category set.

use std::ffi::CString;
use std::io;
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crlab_workloads::protocol;
use crlab_workloads::runtime::Workload;
use crlab_workloads::sys::{self, pattern, pattern_mismatch};

const PAGE: usize = 4096;
/// The shared region: the header page, two pattern pages from the root, one page from B, one
/// page of report slots.
const REGION_PAGES: usize = 5;
const REPORT_PAGE: usize = 4;
/// Bytes of a member's report slot (a report is cut to fit).
const REPORT_SLOT: usize = PAGE / MEMBERS;
/// The members' contexts, for a tree with mixed SELinux contexts.
const CONTEXTS_ENV: &str = "CRLAB_MEMBER_CONTEXTS";
const REGION_SEED: u64 = 0x5ea1_ed00;
const B_PAGE_SEED: u64 = 0x5ea1_ed0b;
const MAGIC: u64 = 0x7ee0_5ea1_ed00_0001;
const BEFORE_TAG: u64 = 0xbef0_0000_0000_0000;
const AFTER_TAG: u64 = 0xaf7e_0000_0000_0000;

const SHARED_FILE: &str = "shared-offset.bin";
const FILE_LEN: usize = 4096;
const FILE_SEED: u64 = 0xf11e_0ff5;
/// Where the root leaves the shared offset; B1 reads up to [`OFFSET_BASE`].
const OFFSET_START: i64 = 50;
const OFFSET_BASE: i64 = 100;
/// Bytes each member reads in its turn.
const OFFSET_STEP: i64 = 10;

/// Values B1 must have received before it counts as set up.
const FLOWING_VALUES: u64 = 20;
/// Values A1 writes after it sees the go file.
const EXTRA_VALUES: u64 = 200;

/// The file the root creates once triggered; the others poll it.
const GO_FILE: &str = "go";

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const TURN_TIMEOUT: Duration = Duration::from_secs(20);
const EOF_TIMEOUT: Duration = Duration::from_secs(20);
const CHILD_TIMEOUT: Duration = Duration::from_secs(40);

/// The members of the tree, in turn order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Member {
    Root,
    A,
    B,
    A1,
    B1,
}

impl Member {
    const ALL: [Member; 5] = [Member::Root, Member::A, Member::B, Member::A1, Member::B1];

    fn idx(self) -> usize {
        self as usize
    }

    fn name(self) -> &'static str {
        match self {
            Member::Root => "root",
            Member::A => "a",
            Member::B => "b",
            Member::A1 => "a1",
            Member::B1 => "b1",
        }
    }
}

const MEMBERS: usize = Member::ALL.len();

/// The first page of the shared region.
#[repr(C)]
struct Header {
    magic: AtomicU64,
    /// Whose turn it is (a member index), [`MEMBERS`] once all had theirs.
    token: AtomicU32,
    /// Set by each member once set up.
    ready: [AtomicU32; MEMBERS],
    /// Each member's pid, as it saw it at setup.
    pids: [AtomicI32; MEMBERS],
    /// A2's pid in the zombie variant.
    zombie: AtomicI32,
    /// Written by each member before the wait: `BEFORE_TAG | index`.
    before: [AtomicU64; MEMBERS],
    /// Written by each member in its turn after the wait: `AFTER_TAG | index`.
    after: [AtomicU64; MEMBERS],
    /// How many values A1 wrote in all, published before it closes its end.
    written: AtomicU64,
    /// The length of each member's report in its slot of the report page; 0: none yet.
    report_len: [AtomicU32; MEMBERS],
}

const _: () = assert!(std::mem::size_of::<Header>() <= PAGE);

/// What every member of the tree shares, inherited across fork.
struct Tree {
    hdr: &'static Header,
    region: *mut u8,
    file_fd: i32,
    dir: PathBuf,
    go: CString,
    /// Each member's SELinux context, when the tree has mixed contexts.
    contexts: Option<Vec<String>>,
}

impl Tree {
    fn go(&self) -> bool {
        // SAFETY: `go` is a valid NUL-terminated path.
        unsafe { libc::access(self.go.as_ptr(), libc::F_OK) == 0 }
    }

    fn page(&self, n: usize) -> &[u8] {
        // SAFETY: the region is REGION_PAGES pages, mapped once and never unmapped; pages
        // past the header are only written before the ready file and read after the trigger.
        unsafe { std::slice::from_raw_parts(self.region.add(n * PAGE), PAGE) }
    }

    fn write_page(&self, n: usize, bytes: &[u8]) {
        let len = bytes.len().min(PAGE);
        // SAFETY: as in `page`; the writer is the only one touching this page at the time.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.region.add(n * PAGE), len) };
    }

    fn report_path(&self, m: Member) -> PathBuf {
        self.dir.join(format!("report-{}", m.name()))
    }

    /// Puts `m`'s report in its slot of the shared region.
    fn post_report(&self, m: Member, text: &str) {
        let bytes = &text.as_bytes()[..text.len().min(REPORT_SLOT)];
        // SAFETY: the slot lies inside the report page of the region (REPORT_SLOT * MEMBERS
        // <= PAGE); only `m` writes it, before it publishes the length.
        unsafe {
            std::ptr::copy_nonoverlapping(
                bytes.as_ptr(),
                self.region.add(REPORT_PAGE * PAGE + m.idx() * REPORT_SLOT),
                bytes.len(),
            )
        };
        self.hdr.report_len[m.idx()].store(bytes.len() as u32, Ordering::SeqCst);
    }

    /// `m`'s report, once it has posted one.
    fn posted_report(&self, m: Member) -> Option<String> {
        let len = self.hdr.report_len[m.idx()].load(Ordering::SeqCst) as usize;
        if len == 0 {
            return None;
        }
        let slot = &self.page(REPORT_PAGE)[m.idx() * REPORT_SLOT..][..len.min(REPORT_SLOT)];
        Some(String::from_utf8_lossy(slot).into_owned())
    }

    /// Moves the calling member into its context, if the tree has mixed contexts, with a
    /// session keyring of its own made under that context first, as a runtime's init does
    /// (runc: `SetKeyLabel`, `JoinSessionKeyring`): a keyring made before, under the context
    /// the tree started in, is one its new context may not search.
    fn enter_context(&self, m: Member) -> Result<(), String> {
        let Some(ctx) = self.contexts.as_ref().map(|c| &c[m.idx()]) else {
            return Ok(());
        };
        let step = |what: &str, r: io::Result<()>| r.map_err(|e| format!("{what}: {e}"));
        step(
            "labelling its keyring",
            sys::write_attr("keycreate", ctx.as_bytes()),
        )?;
        step(
            "joining a new session keyring",
            sys::keys::join_session_keyring(None).map(drop),
        )?;
        step(
            "clearing attr/keycreate",
            sys::write_attr("keycreate", b"\0"),
        )?;
        step(
            "entering its context",
            sys::write_attr("current", ctx.as_bytes()),
        )
    }

    /// Checks the calling member is (still) in its context.
    fn check_context(&self, m: Member, f: &mut Vec<String>) {
        let Some(ctx) = self.contexts.as_ref().map(|c| &c[m.idx()]) else {
            return;
        };
        match std::fs::read_to_string("/proc/thread-self/attr/current") {
            Ok(now) if now.trim_end_matches(['\0', '\n']) == ctx => {}
            Ok(now) => f.push(format!(
                "its context is {:?}, expected {ctx}",
                now.trim_end_matches(['\0', '\n'])
            )),
            Err(e) => f.push(format!("reading its attr/current: {e}")),
        }
    }

    /// Writes `m`'s report (`ok` or its failures) and returns its exit status.
    fn report(&self, m: Member, failures: &[String]) -> i32 {
        let (text, code) = if failures.is_empty() {
            (protocol::RESULT_OK.to_owned(), 0)
        } else {
            (failures.join("; "), protocol::EXIT_FAIL)
        };
        eprintln!("tree {}: report {text}", m.name());
        self.post_report(m, &text);
        if let Err(e) = sys::write_atomically(&self.report_path(m), text.as_bytes()) {
            eprintln!("tree {}: writing its report: {e}", m.name());
            return protocol::EXIT_SETUP;
        }
        code
    }

    /// Reports a setup failure of a child member and exits.
    fn setup_failed(&self, m: Member, what: &str) -> ! {
        let text = format!("setup: {what}");
        eprintln!("tree {}: {text}", m.name());
        self.post_report(m, &text);
        let _ = sys::write_atomically(&self.report_path(m), text.as_bytes());
        std::process::exit(protocol::EXIT_SETUP)
    }

    fn set_ready(&self, m: Member) {
        self.hdr.pids[m.idx()].store(sys::getpid(), Ordering::SeqCst);
        self.hdr.before[m.idx()].store(BEFORE_TAG | m.idx() as u64, Ordering::SeqCst);
        self.hdr.ready[m.idx()].store(1, Ordering::SeqCst);
    }
}

/// What a member records about itself before the wait and compares after.
struct Ident {
    pid: i32,
    ppid: i32,
    pgid: i32,
    sid: i32,
    fds: Vec<(i32, String)>,
}

fn ids() -> (i32, i32, i32, i32) {
    // SAFETY: getppid, getpgid(0) and getsid(0) ask about the caller and cannot fail.
    unsafe {
        (
            sys::getpid(),
            libc::getppid(),
            libc::getpgid(0),
            libc::getsid(0),
        )
    }
}

impl Ident {
    /// Records the member's identity, checking it has the parent, group and session it should.
    fn record(ppid: i32, pgid: i32, sid: i32) -> Result<Ident, String> {
        let (pid, now_ppid, now_pgid, now_sid) = ids();
        let found = (now_ppid, now_pgid, now_sid);
        if found != (ppid, pgid, sid) {
            return Err(format!(
                "(ppid, pgid, sid) is {found:?}, expected {:?}",
                (ppid, pgid, sid)
            ));
        }
        let fds = sys::fd_table().map_err(|e| format!("listing /proc/self/fd: {e}"))?;
        Ok(Ident {
            pid,
            ppid,
            pgid,
            sid,
            fds,
        })
    }

    fn check(&self, f: &mut Vec<String>) {
        let (pid, ppid, pgid, sid) = ids();
        for (what, expected, found) in [
            ("getpid()", self.pid, pid),
            ("getppid()", self.ppid, ppid),
            ("getpgid(0)", self.pgid, pgid),
            ("getsid(0)", self.sid, sid),
        ] {
            if expected != found {
                f.push(format!("{what} is {found}, expected {expected}"));
            }
        }
        match sys::fd_table() {
            Ok(fds) if fds == self.fds => {}
            Ok(fds) => f.push(format!(
                "descriptor table is {fds:?}, expected {:?}",
                self.fds
            )),
            Err(e) => f.push(format!("listing /proc/self/fd: {e}")),
        }
    }
}

/// Polls `cond` every millisecond until it holds or `timeout` passes.
fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while !cond() {
        if start.elapsed() >= timeout {
            return false;
        }
        let _ = sleep_ms(1);
    }
    true
}

/// `nanosleep` for `ms` milliseconds: Err if the kernel did not restart an interrupted one.
fn sleep_ms(ms: i64) -> io::Result<()> {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: ms * 1_000_000,
    };
    // SAFETY: `ts` is a valid timespec; no remainder is asked for.
    let ret = unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
    sys::check(ret.into()).map(drop)
}

/// Forks a member running `body`, which returns its exit status.
fn fork_member(body: impl FnOnce() -> i32) -> io::Result<i32> {
    // SAFETY: every process of the tree is single-threaded when it forks, so the child may
    // run any code; it never returns into its parent's code but exits.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => std::process::exit(body()),
        child => Ok(child),
    }
}

/// Waits up to `timeout` for child `pid` to end and reaps it: its status in words, Err if it
/// did not end.
fn reap_within(pid: i32, timeout: Duration) -> Result<String, String> {
    let mut status = 0;
    let mut ended = false;
    let mut error = None;
    wait_for(timeout, || {
        // SAFETY: waitpid for one child of ours writes its status into a live int.
        match unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) } {
            0 => false,
            -1 => {
                error = Some(io::Error::last_os_error());
                true
            }
            _ => {
                ended = true;
                true
            }
        }
    });
    if let Some(e) = error {
        return Err(format!("waitpid({pid}): {e}"));
    }
    if !ended {
        return Err(format!("did not end within {timeout:?}"));
    }
    Ok(if libc::WIFEXITED(status) {
        format!("exit status {}", libc::WEXITSTATUS(status))
    } else if libc::WCOREDUMP(status) {
        format!("killed by signal {} (core dumped)", libc::WTERMSIG(status))
    } else {
        format!("killed by signal {}", libc::WTERMSIG(status))
    })
}

/// Reaps child `m` and records a failure unless it exited 0.
fn reap_member(m: Member, pid: i32, f: &mut Vec<String>) {
    match reap_within(pid, CHILD_TIMEOUT) {
        Ok(s) if s == "exit status 0" => {}
        Ok(s) => f.push(format!("{} (pid {pid}) ended with {s}", m.name())),
        Err(e) => f.push(format!("{} (pid {pid}) {e}", m.name())),
    }
}

/// The checks every member makes once triggered, after its identity: the shared region's
/// content, its turn with the shared offset, and the other members' after-slots.
fn shared_checks(t: &Tree, m: Member, f: &mut Vec<String>) {
    let hdr = t.hdr;
    if hdr.magic.load(Ordering::SeqCst) != MAGIC {
        f.push(format!(
            "shared region header magic is {:#x}",
            hdr.magic.load(Ordering::SeqCst)
        ));
    }
    let root_pages: Vec<u8> = [t.page(1), t.page(2)].concat();
    if let Some(i) = pattern_mismatch(REGION_SEED, 0, &root_pages) {
        f.push(format!(
            "shared region byte {} differs from what the root wrote",
            PAGE + i
        ));
    }
    if let Some(i) = pattern_mismatch(B_PAGE_SEED, 0, t.page(3)) {
        f.push(format!(
            "shared region byte {} differs from what b wrote",
            3 * PAGE + i
        ));
    }
    for o in Member::ALL {
        let v = hdr.before[o.idx()].load(Ordering::SeqCst);
        if v != BEFORE_TAG | o.idx() as u64 {
            f.push(format!("{}'s before-slot holds {v:#x}", o.name()));
        }
    }

    // My turn: the offset where the previous member left it.
    let i = m.idx() as u32;
    if !wait_for(TURN_TIMEOUT, || hdr.token.load(Ordering::SeqCst) >= i) {
        f.push(format!(
            "its turn never came within {TURN_TIMEOUT:?}: the token stayed at {} (a write to \
             the shared region not seen by the other processes?)",
            hdr.token.load(Ordering::SeqCst)
        ));
        return;
    }
    let expected = OFFSET_BASE + i64::from(i) * OFFSET_STEP;
    match sys::lseek(t.file_fd, 0, libc::SEEK_CUR) {
        Ok(off) if off == expected => {}
        Ok(off) => f.push(format!(
            "shared file offset is {off} in its turn, expected {expected} (a shared open file \
             description moves for all)"
        )),
        Err(e) => f.push(format!("lseek on the shared file: {e}")),
    }
    let mut buf = [0u8; OFFSET_STEP as usize];
    match sys::read(t.file_fd, &mut buf) {
        Ok(n) if n == buf.len() => {
            if pattern_mismatch(FILE_SEED, expected as usize, &buf).is_some() {
                f.push(format!(
                    "bytes read from the shared file at {expected} are not the file's"
                ));
            }
        }
        Ok(n) => f.push(format!("read on the shared file returned {n}")),
        Err(e) => f.push(format!("read on the shared file: {e}")),
    }
    hdr.after[m.idx()].store(AFTER_TAG | m.idx() as u64, Ordering::SeqCst);
    hdr.token.store(i + 1, Ordering::SeqCst);

    // Everyone's after-slot, written after the restore by each process.
    let all = MEMBERS as u32;
    if !wait_for(TURN_TIMEOUT, || hdr.token.load(Ordering::SeqCst) >= all) {
        f.push(format!(
            "the last turn never came within {TURN_TIMEOUT:?}: the token stayed at {}",
            hdr.token.load(Ordering::SeqCst)
        ));
    }
    for o in Member::ALL {
        let v = hdr.after[o.idx()].load(Ordering::SeqCst);
        if v != AFTER_TAG | o.idx() as u64 {
            f.push(format!(
                "{}'s after-slot holds {v:#x}: its write after the trigger is not seen here",
                o.name()
            ));
        }
    }
}

fn main() {
    let mut w = Workload::from_args("tree");
    let zombie = w.args().iter().find_map(|a| match a.as_str() {
        "zombie" => Some(Zombie::Exit),
        "zombie-signal" => Some(Zombie::Signal),
        "zombie-core" => Some(Zombie::Core),
        _ => None,
    });
    let contexts = match std::env::var(CONTEXTS_ENV) {
        Ok(v) => {
            let c: Vec<String> = v.split_whitespace().map(str::to_owned).collect();
            if c.len() != MEMBERS {
                w.setup_failed(&format!(
                    "{CONTEXTS_ENV} holds {} contexts, expected {MEMBERS} (root a b a1 b1)",
                    c.len()
                ));
            }
            Some(c)
        }
        Err(_) => None,
    };

    // A session of its own, led by the root.
    let (root, _, _, sid) = ids();
    // SAFETY: setsid takes no arguments; it fails only if the root leads a process group.
    if sid != root && unsafe { libc::setsid() } == -1 {
        w.setup_failed(&format!("setsid: {}", io::Error::last_os_error()));
    }

    // The shared region, filled before forking.
    let len = REGION_PAGES * PAGE;
    // SAFETY: a new mapping at an address of the kernel's choosing touches no existing memory.
    let region = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if region == libc::MAP_FAILED {
        w.setup_failed(&format!(
            "mmap of the shared region: {}",
            io::Error::last_os_error()
        ));
    }
    // SAFETY: the region is page-aligned, zero-filled and never unmapped; a zeroed Header is
    // valid (atomics of 0).
    let hdr: &'static Header = unsafe { &*region.cast::<Header>() };
    hdr.magic.store(MAGIC, Ordering::SeqCst);

    // The shared file, at OFFSET_START.
    let file = w.path(SHARED_FILE);
    w.setup(
        "writing the shared file",
        std::fs::write(&file, pattern(FILE_SEED, 0, FILE_LEN)),
    );
    let c = sys::cstring(&file);
    // SAFETY: `c` is a valid NUL-terminated path.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_RDWR) };
    let file_fd = w.setup("opening the shared file", sys::check(fd.into())) as i32;
    w.setup(
        "lseek on the shared file",
        sys::lseek(file_fd, OFFSET_START, libc::SEEK_SET),
    );

    let t = Tree {
        hdr,
        region: region.cast(),
        file_fd,
        dir: w.state_dir().to_path_buf(),
        go: sys::cstring(&w.path(GO_FILE)),
        contexts,
    };
    t.write_page(1, &pattern(REGION_SEED, 0, PAGE));
    t.write_page(2, &pattern(REGION_SEED, PAGE, PAGE));

    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, a live [i32; 2].
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), 0) };
    w.setup("pipe2 for the a1-to-b1 pipe", sys::check(ret.into()));
    let (pipe_r, pipe_w) = (fds[0], fds[1]);

    let a = w.setup(
        "forking a",
        fork_member(|| {
            close(pipe_r);
            run_a(&t, root, pipe_w, zombie)
        }),
    );
    let b = w.setup(
        "forking b",
        fork_member(|| {
            close(pipe_w);
            run_b(&t, root, pipe_r)
        }),
    );
    close(pipe_r);
    close(pipe_w);
    if let Err(e) = t.enter_context(Member::Root) {
        w.setup_failed(&e);
    }

    // Everyone set up (a child that failed says why in its report).
    let children = [Member::A, Member::B, Member::A1, Member::B1];
    let all_ready = wait_for(READY_TIMEOUT, || {
        children.iter().any(|m| t.posted_report(*m).is_some())
            || children
                .iter()
                .all(|m| hdr.ready[m.idx()].load(Ordering::SeqCst) == 1)
    });
    for m in children {
        if let Some(text) = t.posted_report(m) {
            w.setup_failed(&format!("{}: {text}", m.name()));
        }
    }
    if !all_ready {
        let missing: Vec<&str> = children
            .iter()
            .filter(|m| hdr.ready[m.idx()].load(Ordering::SeqCst) == 0)
            .map(|m| m.name())
            .collect();
        w.setup_failed(&format!("not set up within {READY_TIMEOUT:?}: {missing:?}"));
    }
    let offset = w.setup(
        "lseek on the shared file",
        sys::lseek(file_fd, 0, libc::SEEK_CUR),
    );
    if offset != OFFSET_BASE {
        w.setup_failed(&format!(
            "the shared file's offset is {offset} after b1 read from it, expected {OFFSET_BASE}"
        ));
    }
    t.set_ready(Member::Root);
    for m in children {
        w.announce(
            &format!("member-{}", m.name()),
            hdr.pids[m.idx()].load(Ordering::SeqCst),
        );
    }
    if zombie.is_some() {
        w.announce("zombie", hdr.zombie.load(Ordering::SeqCst));
    }

    let mut checks = w.wait();
    checks.io("creating the go file", std::fs::write(w.path(GO_FILE), b""));
    w.common_checks(&mut checks);
    let mut f = Vec::new();
    t.check_context(Member::Root, &mut f);
    shared_checks(&t, Member::Root, &mut f);
    let end = OFFSET_BASE + MEMBERS as i64 * OFFSET_STEP;
    match sys::lseek(file_fd, 0, libc::SEEK_CUR) {
        Ok(off) if off == end => {}
        Ok(off) => f.push(format!(
            "shared file offset is {off} after every turn, expected {end}"
        )),
        Err(e) => f.push(format!("lseek on the shared file: {e}")),
    }
    reap_member(Member::A, a, &mut f);
    reap_member(Member::B, b, &mut f);
    for what in f {
        checks.fail(format!("root: {what}"));
    }
    for m in children {
        match t.posted_report(m) {
            Some(text) if text == protocol::RESULT_OK => {}
            Some(text) => checks.fail(format!("{}: {text}", m.name())),
            None => checks.fail(format!("{}: no report", m.name())),
        }
    }
    w.finish(checks)
}

fn close(fd: i32) {
    // SAFETY: closes a descriptor this process owns and no longer uses.
    unsafe { libc::close(fd) };
}

/// How many SIGCHLDs A's handler saw (zombie variants).
static SIGCHLDS: AtomicU32 = AtomicU32::new(0);

extern "C" fn on_sigchld(_: libc::c_int) {
    SIGCHLDS.fetch_add(1, Ordering::SeqCst);
}

/// Counts A's SIGCHLDs (with SA_RESTART: a second one would still end A's nanosleep early).
fn count_sigchld() {
    // SAFETY: an all-zero sigaction is valid; the handler only touches an atomic.
    unsafe {
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = on_sigchld as *const () as usize;
        act.sa_flags = libc::SA_RESTART;
        libc::sigaction(libc::SIGCHLD, &act, std::ptr::null_mut());
    }
}

/// How A2 ends, in the zombie variants.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Zombie {
    /// `_exit(7)`.
    Exit,
    /// Killed by SIGTERM.
    Signal,
    /// Killed by SIGABRT, dumping core.
    Core,
}

impl Zombie {
    /// What A's reap of A2 must find.
    fn status(self) -> &'static str {
        match self {
            Zombie::Exit => "exit status 7",
            Zombie::Signal => "killed by signal 15",
            Zombie::Core => "killed by signal 6 (core dumped)",
        }
    }

    /// A2's end (in the child: async-signal-safe calls only).
    fn end(self, dir: &CString) -> ! {
        let sig = match self {
            // SAFETY: _exit ends the child at once, running nothing of the parent's.
            Zombie::Exit => unsafe { libc::_exit(7) },
            Zombie::Signal => libc::SIGTERM,
            Zombie::Core => libc::SIGABRT,
        };
        // SAFETY: plain calls on this process's own state: its core limit and directory (the
        // core file lands in the state dir), the signal's default action, unblocked, raised.
        unsafe {
            if self == Zombie::Core {
                let unlimited = libc::rlimit {
                    rlim_cur: libc::RLIM_INFINITY,
                    rlim_max: libc::RLIM_INFINITY,
                };
                libc::setrlimit(libc::RLIMIT_CORE, &unlimited);
                libc::chdir(dir.as_ptr());
            }
            libc::signal(sig, libc::SIG_DFL);
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            libc::sigaddset(&mut set, sig);
            libc::sigprocmask(libc::SIG_UNBLOCK, &set, std::ptr::null_mut());
            libc::kill(libc::getpid(), sig);
            libc::_exit(99)
        }
    }
}

/// A: forks A1 (and A2 in the zombie variants), waits in nanosleep, checks, reaps.
fn run_a(t: &Tree, root: i32, pipe_w: i32, zombie: Option<Zombie>) -> i32 {
    let me = Member::A;
    let pid = sys::getpid();
    let a1 = fork_member(|| run_a1(t, pid, root, pipe_w))
        .unwrap_or_else(|e| t.setup_failed(me, &format!("forking a1: {e}")));
    close(pipe_w);
    let dir = sys::cstring(&t.dir);
    if zombie.is_some() {
        count_sigchld();
    }
    let a2 = zombie.map(|how| {
        // SAFETY: A is single-threaded; the child only makes async-signal-safe calls.
        let a2 = unsafe { libc::fork() };
        match a2 {
            -1 => t.setup_failed(me, &format!("forking a2: {}", io::Error::last_os_error())),
            0 => how.end(&dir),
            a2 => a2,
        }
    });
    if let Some(a2) = a2 {
        let is_zombie = || {
            std::fs::read_to_string(format!("/proc/{a2}/stat"))
                .ok()
                .and_then(|s| Some(s[s.rfind(')')? + 2..].starts_with('Z')))
                .unwrap_or(false)
        };
        if !wait_for(READY_TIMEOUT, is_zombie) {
            t.setup_failed(me, &format!("a2 (pid {a2}) did not become a zombie"));
        }
        t.hdr.zombie.store(a2, Ordering::SeqCst);
    }
    if let Err(e) = t.enter_context(me) {
        t.setup_failed(me, &e);
    }
    let ident = Ident::record(root, root, root).unwrap_or_else(|e| t.setup_failed(me, &e));
    t.set_ready(me);

    let mut f = Vec::new();
    while !t.go() {
        if let Err(e) = sleep_ms(10) {
            // No handler ran, so the kernel restarts an interrupted nanosleep.
            f.push(format!("nanosleep failed: {e}"));
            break;
        }
    }
    // Before A1 can end (it takes its turn after A's), whose SIGCHLD would count too.
    let sigchlds = SIGCHLDS.load(Ordering::SeqCst);
    ident.check(&mut f);
    t.check_context(me, &mut f);
    shared_checks(t, me, &mut f);
    if let (Some(a2), Some(how)) = (a2, zombie) {
        if sigchlds != 1 {
            f.push(format!(
                "its SIGCHLD handler ran {sigchlds} times before the trigger, expected once \
                 (a2's end)"
            ));
        }
        match reap_within(a2, CHILD_TIMEOUT) {
            Ok(s) if s == how.status() => {}
            Ok(s) => f.push(format!("its zombie a2 (pid {a2}) ended with {s}")),
            Err(e) => f.push(format!("its zombie a2 (pid {a2}) {e}")),
        }
    }
    reap_member(Member::A1, a1, &mut f);
    t.report(me, &f)
}

/// B: its own process group, forks B1, waits in poll, checks, reaps.
fn run_b(t: &Tree, root: i32, pipe_r: i32) -> i32 {
    let me = Member::B;
    let pid = sys::getpid();
    // SAFETY: setpgid(0, 0) moves the caller into a new group of its own.
    if unsafe { libc::setpgid(0, 0) } == -1 {
        t.setup_failed(me, &format!("setpgid: {}", io::Error::last_os_error()));
    }
    t.write_page(3, &pattern(B_PAGE_SEED, 0, PAGE));
    let b1 = fork_member(|| run_b1(t, pid, root, pipe_r))
        .unwrap_or_else(|e| t.setup_failed(me, &format!("forking b1: {e}")));
    close(pipe_r);
    if let Err(e) = t.enter_context(me) {
        t.setup_failed(me, &e);
    }
    let ident = Ident::record(root, pid, root).unwrap_or_else(|e| t.setup_failed(me, &e));
    t.set_ready(me);

    let mut f = Vec::new();
    while !t.go() {
        // SAFETY: poll with no descriptors only sleeps for the timeout.
        if unsafe { libc::poll(std::ptr::null_mut(), 0, 10) } == -1 {
            // No handler ran, so the kernel restarts an interrupted poll.
            f.push(format!("poll failed: {}", io::Error::last_os_error()));
            break;
        }
    }
    ident.check(&mut f);
    t.check_context(me, &mut f);
    shared_checks(t, me, &mut f);
    reap_member(Member::B1, b1, &mut f);
    t.report(me, &f)
}

/// A1: writes the counter into the pipe every millisecond until the go file, then
/// [`EXTRA_VALUES`] more, and closes its end.
fn run_a1(t: &Tree, a: i32, root: i32, pipe_w: i32) -> i32 {
    let me = Member::A1;
    if let Err(e) = t.enter_context(me) {
        t.setup_failed(me, &e);
    }
    let ident = Ident::record(a, root, root).unwrap_or_else(|e| t.setup_failed(me, &e));
    t.set_ready(me);

    let mut f = Vec::new();
    let mut next: u64 = 0;
    let mut write_next = |f: &mut Vec<String>| match sys::write(pipe_w, &next.to_le_bytes()) {
        Ok(8) => {
            next += 1;
            true
        }
        Ok(n) => {
            f.push(format!(
                "write of value {next} into the pipe wrote {n} bytes"
            ));
            false
        }
        Err(e) => {
            f.push(format!("write of value {next} into the pipe: {e}"));
            false
        }
    };
    loop {
        if !write_next(&mut f) || t.go() {
            break;
        }
        if let Err(e) = sleep_ms(1) {
            f.push(format!("nanosleep failed: {e}"));
            break;
        }
    }
    ident.check(&mut f);
    for _ in 0..EXTRA_VALUES {
        if !write_next(&mut f) {
            break;
        }
    }
    t.hdr.written.store(next, Ordering::SeqCst);
    close(pipe_w);
    t.check_context(me, &mut f);
    shared_checks(t, me, &mut f);
    t.report(me, &f)
}

/// B1: moves the shared offset, then reads the counter until end of file, checking order.
fn run_b1(t: &Tree, b: i32, root: i32, pipe_r: i32) -> i32 {
    let me = Member::B1;
    if let Err(e) = t.enter_context(me) {
        t.setup_failed(me, &e);
    }
    let skip = (OFFSET_BASE - OFFSET_START) as usize;
    let mut buf = vec![0u8; skip];
    match sys::read(t.file_fd, &mut buf) {
        Ok(n) if n == skip => {}
        Ok(n) => t.setup_failed(me, &format!("read of the shared file returned {n}")),
        Err(e) => t.setup_failed(me, &format!("read of the shared file: {e}")),
    }
    let ident = Ident::record(b, b, root).unwrap_or_else(|e| t.setup_failed(me, &e));

    let mut f = Vec::new();
    let mut expected: u64 = 0;
    let mut carry: Vec<u8> = Vec::new();
    let mut go_seen: Option<Instant> = None;
    let mut buf = [0u8; 256];
    loop {
        if let Some(since) = go_seen {
            // After the go file, A1 ends soon: wait for data or end of file with a deadline.
            let left = EOF_TIMEOUT.saturating_sub(since.elapsed());
            let mut pfd = libc::pollfd {
                fd: pipe_r,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: poll reads and writes one live pollfd.
            let ret = unsafe { libc::poll(&mut pfd, 1, left.as_millis() as i32) };
            if ret == 0 {
                f.push(format!(
                    "no end of file on the pipe within {EOF_TIMEOUT:?} of the trigger, after \
                     value {}: a write end is still open somewhere",
                    expected.wrapping_sub(1)
                ));
                break;
            }
        }
        let n = match sys::read(pipe_r, &mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) => {
                // No handler ran, so the kernel restarts a read interrupted by a stop.
                f.push(format!("read on the pipe: {e}"));
                break;
            }
        };
        carry.extend_from_slice(&buf[..n]);
        let whole = carry.len() / 8 * 8;
        for chunk in carry[..whole].chunks_exact(8) {
            let mut bytes = [0u8; 8];
            bytes.copy_from_slice(chunk);
            let v = u64::from_le_bytes(bytes);
            if v != expected {
                let what = if v < expected { "duplicate" } else { "gap" };
                f.push(format!(
                    "pipe sequence: value {v} came where {expected} was due ({what})"
                ));
            }
            expected = v + 1;
        }
        carry.drain(..whole);
        if go_seen.is_none() {
            if expected >= FLOWING_VALUES && t.hdr.ready[me.idx()].load(Ordering::SeqCst) == 0 {
                t.set_ready(me);
            }
            if t.go() {
                go_seen = Some(Instant::now());
                ident.check(&mut f);
            }
        }
    }
    if go_seen.is_none() {
        f.push(format!(
            "the pipe ended (after value {}) before the trigger",
            expected.wrapping_sub(1)
        ));
        ident.check(&mut f);
    }
    if !carry.is_empty() {
        f.push(format!(
            "the pipe ended inside a value ({} stray bytes)",
            carry.len()
        ));
    }
    let written = t.hdr.written.load(Ordering::SeqCst);
    if expected != written {
        f.push(format!(
            "b1 received values up to {} but a1 wrote {written} values",
            expected.wrapping_sub(1)
        ));
    }
    close(pipe_r);
    t.check_context(me, &mut f);
    shared_checks(t, me, &mut f);
    t.report(me, &f)
}
