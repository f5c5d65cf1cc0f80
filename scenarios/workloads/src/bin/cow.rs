//! Copy-on-write sharing between a parent and its child after fork.
//!
//! The parent maps a private anonymous region of [`PAGES`] pages, fills it with a pattern and
//! forks a child (announced as `child <pid>`). After the fork the child writes page
//! [`CHILD_WRITES`] (a pattern of its own) and drops page [`CHILD_DROPS`] (`MADV_DONTNEED`: it
//! reads zeros there), and the parent writes page [`PARENT_WRITES`]. The two still share,
//! copy-on-write, every other page of the region. The child then blocks in a `read` of a pipe
//! from the parent; the parent waits in its wait mode.
//!
//! Once triggered, the parent checks its region: the content, and in `/proc/self/pagemap` that
//! every page it shares with the child is present and not exclusive to it
//! (`PM_MMAP_EXCLUSIVE` clear: another process maps the same page) while the three pages
//! written or dropped are its own. It wakes the child, which checks the same of its region (its
//! page, zeros where it dropped one, the first pattern where the parent wrote), writes page
//! [`CHILD_WRITES_AFTER`], puts its report in `report-child` and exits. The parent reaps it,
//! checks its exit status and report, and that its own page [`CHILD_WRITES_AFTER`] still holds
//! the pattern: the sharing is copy-on-write still, not a shared mapping.
//!
//! With `shared-below` as its argument, the child also maps a page `MAP_SHARED`, writes a
//! pattern to it and forks a grandchild, which blocks in a `read` of a pipe from the child and,
//! at its end of file, checks that page and exits; the child ends it and reaps it after its own
//! checks. A descendant then holds a shared mapping its parent does not, which a restore makes
//! in the parent before the fork and must not keep there: the child's pages come back from
//! the parent as copies, not shared, and only their content is checked.

use std::io;
use std::os::unix::fs::FileExt;

use crlab_workloads::runtime::{Checks, Workload};
use crlab_workloads::sys::{self, pattern, pattern_mismatch};

const PAGE: usize = 4096;
/// Pages of the region: few enough that no transparent huge page backs it.
const PAGES: usize = 64;
const CHILD_WRITES: usize = 5;
const CHILD_DROPS: usize = 7;
const PARENT_WRITES: usize = 9;
const CHILD_WRITES_AFTER: usize = 11;

const SEED: u64 = 0xc0_5ea1;
const CHILD_SEED: u64 = 0xc0_c41d;
const PARENT_SEED: u64 = 0xc0_9a4e;

const REPORT: &str = "report-child";
const SHARED_BELOW_ARG: &str = "shared-below";
const SHARED_SEED: u64 = 0xc0_54a4;

/// `/proc/PID/pagemap` bits (Documentation/admin-guide/mm/pagemap.rst).
const PM_PRESENT: u64 = 1 << 63;
const PM_MMAP_EXCLUSIVE: u64 = 1 << 56;

/// The region, mapped once and never unmapped; each process touches only its own copy.
struct Region(*mut u8);

impl Region {
    fn map() -> io::Result<Region> {
        // SAFETY: a new private anonymous mapping; nothing else is at the address it returns.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                PAGES * PAGE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Region(addr.cast()))
    }

    fn page(&self, n: usize) -> &[u8] {
        // SAFETY: n < PAGES, inside the mapping, which lives as long as the process.
        unsafe { std::slice::from_raw_parts(self.0.add(n * PAGE), PAGE) }
    }

    fn write(&self, n: usize, bytes: &[u8]) {
        // SAFETY: as in `page`; the process is single-threaded.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), self.0.add(n * PAGE), PAGE) };
    }

    fn drop_page(&self, n: usize) -> io::Result<()> {
        // SAFETY: one page of the private mapping; its content becomes zeros.
        let ret = unsafe { libc::madvise(self.0.add(n * PAGE).cast(), PAGE, libc::MADV_DONTNEED) };
        sys::check(ret.into()).map(drop)
    }

    /// Each page's pagemap entry.
    fn pagemap(&self) -> io::Result<Vec<u64>> {
        let file = std::fs::File::open("/proc/self/pagemap")?;
        let mut raw = vec![0u8; PAGES * 8];
        file.read_exact_at(&mut raw, (self.0 as u64 / PAGE as u64) * 8)?;
        Ok(raw
            .chunks_exact(8)
            .map(|c| u64::from_ne_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]))
            .collect())
    }
}

/// What page `n` should hold in the parent (`child == false`) or the child.
fn expected(n: usize, child: bool) -> Vec<u8> {
    match n {
        CHILD_WRITES if child => pattern(CHILD_SEED, 0, PAGE),
        CHILD_DROPS if child => vec![0; PAGE],
        PARENT_WRITES if !child => pattern(PARENT_SEED, 0, PAGE),
        _ => pattern(SEED, n * PAGE, PAGE),
    }
}

/// The pages one process holds alone: those either wrote or dropped after the fork.
fn own_page(n: usize) -> bool {
    matches!(n, CHILD_WRITES | CHILD_DROPS | PARENT_WRITES)
}

/// Checks the region's content and, with `sharing`, which of its pages are shared.
fn check_region(checks: &mut Checks, region: &Region, child: bool, sharing: bool) {
    let who = if child { "child" } else { "parent" };
    for n in 0..PAGES {
        let want = expected(n, child);
        if region.page(n) != want.as_slice() {
            let at = want.iter().zip(region.page(n)).position(|(a, b)| a != b);
            checks.fail(format!("{who}: page {n} differs (first at byte {at:?})"));
        }
    }
    if !sharing {
        return;
    }
    let Some(entries) = checks.io(
        &format!("{who}: reading /proc/self/pagemap"),
        region.pagemap(),
    ) else {
        return;
    };
    let mut private = Vec::new();
    let mut shared = Vec::new();
    for (n, e) in entries.iter().enumerate() {
        if child && n == CHILD_DROPS {
            continue;
        }
        let present = e & PM_PRESENT != 0;
        let exclusive = e & PM_MMAP_EXCLUSIVE != 0;
        if !present {
            checks.fail(format!("{who}: page {n} is not present"));
        } else if own_page(n) && !exclusive {
            shared.push(n);
        } else if !own_page(n) && exclusive {
            private.push(n);
        }
    }
    if !private.is_empty() {
        checks.fail(format!(
            "{who}: {} of the {} pages shared with the other process copy-on-write are its \
             own now (first: page {}): the sharing was lost",
            private.len(),
            PAGES - 3,
            private[0]
        ));
    }
    if !shared.is_empty() {
        checks.fail(format!(
            "{who}: pages {shared:?}, written or dropped after the fork, are shared"
        ));
    }
}

fn pipe() -> io::Result<(i32, i32)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, a live [i32; 2].
    let ret = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    sys::check(ret.into())?;
    Ok((fds[0], fds[1]))
}

fn close(fd: i32) {
    // SAFETY: closes a descriptor this process owns and uses no more.
    unsafe { libc::close(fd) };
}

/// The grandchild of `shared-below`: waits for the end of file on `hold`, checks the shared
/// page, exits 0 if it holds the pattern.
fn grandchild(page: &Region, hold: i32) -> i32 {
    let mut byte = [0u8; 1];
    while let Ok(1) = sys::read(hold, &mut byte) {}
    match pattern_mismatch(SHARED_SEED, 0, page.page(0)) {
        None => 0,
        Some(at) => {
            eprintln!("cow grandchild: the shared page differs at byte {at}");
            1
        }
    }
}

/// A shared page with the pattern and a grandchild holding it (`shared-below`): the
/// grandchild's pid and the write end of the pipe it waits on.
fn shared_below() -> io::Result<(i32, i32)> {
    // SAFETY: a new shared anonymous mapping of one page.
    let addr = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if addr == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    let page = Region(addr.cast());
    page.write(0, &pattern(SHARED_SEED, 0, PAGE));
    let (hold_r, hold_w) = pipe()?;
    // SAFETY: the process is single-threaded, so the child may run any code; it exits.
    match unsafe { libc::fork() } {
        -1 => Err(io::Error::last_os_error()),
        0 => {
            close(hold_w);
            std::process::exit(grandchild(&page, hold_r))
        }
        pid => {
            close(hold_r);
            Ok((pid, hold_w))
        }
    }
}

/// The child: changes its pages, says it is set up, waits for the parent's word, checks.
fn child(w: &Workload, region: &Region, go: i32, ready: i32, below: bool) -> i32 {
    region.write(CHILD_WRITES, &pattern(CHILD_SEED, 0, PAGE));
    if let Err(e) = region.drop_page(CHILD_DROPS) {
        eprintln!("cow child: madvise: {e}");
        return 2;
    }
    let grandchild = if below {
        match shared_below() {
            Ok(g) => Some(g),
            Err(e) => {
                eprintln!("cow child: the shared page and its grandchild: {e}");
                return 2;
            }
        }
    } else {
        None
    };
    if sys::write(ready, b"r").is_err() {
        return 2;
    }
    close(ready);
    let mut byte = [0u8; 1];
    // End of file: the parent is gone without a word; nothing to check.
    match sys::read(go, &mut byte) {
        Ok(1) => {}
        _ => return 3,
    }
    let mut checks = Checks::new();
    check_region(&mut checks, region, true, !below);
    region.write(CHILD_WRITES_AFTER, &pattern(CHILD_SEED, PAGE, PAGE));
    if let Some((pid, hold)) = grandchild {
        close(hold);
        let mut status = 0;
        // SAFETY: waitpid for our one child writes its status into a live int.
        let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
        if reaped != pid || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
            checks.fail(format!("the grandchild ended with status {status:#x}"));
        }
    }
    let passed = checks.passed();
    let text = if passed {
        "ok".to_owned()
    } else {
        checks.into_failures().join("; ")
    };
    let _ = sys::write_atomically(&w.path(REPORT), text.as_bytes());
    if passed {
        0
    } else {
        1
    }
}

fn main() {
    let mut w = Workload::from_args("cow");
    let below = w.args().iter().any(|a| a == SHARED_BELOW_ARG);
    let region = w.setup("mapping the region", Region::map());
    for n in 0..PAGES {
        region.write(n, &pattern(SEED, n * PAGE, PAGE));
    }
    let (go_r, go_w) = w.setup("a pipe to wake the child", pipe());
    let (ready_r, ready_w) = w.setup("a pipe for the child's word", pipe());
    // SAFETY: the process is single-threaded, so the child may run any code; it never returns
    // into main's code but exits.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => w.setup_failed(&format!("fork: {}", io::Error::last_os_error())),
        0 => {
            close(go_w);
            close(ready_r);
            std::process::exit(child(&w, &region, go_r, ready_w, below))
        }
        _ => {}
    }
    close(go_r);
    close(ready_w);
    let mut byte = [0u8; 1];
    if w.setup("the child's word", sys::read(ready_r, &mut byte)) != 1 {
        w.setup_failed("the child ended before it was set up");
    }
    close(ready_r);
    region.write(PARENT_WRITES, &pattern(PARENT_SEED, 0, PAGE));
    w.announce("child", pid);

    let mut checks = w.wait();
    w.common_checks(&mut checks);
    check_region(&mut checks, &region, false, !below);
    if let Err(e) = sys::write(go_w, b"g") {
        checks.fail(format!("waking the child: {e}"));
    }
    close(go_w);
    let mut status = 0;
    // SAFETY: waitpid for our one child writes its status into a live int.
    let reaped = unsafe { libc::waitpid(pid, &mut status, 0) };
    if reaped != pid {
        checks.fail(format!("waitpid({pid}): {}", io::Error::last_os_error()));
    } else if !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        checks.fail(format!("the child ended with status {status:#x}"));
    }
    match std::fs::read_to_string(w.path(REPORT)) {
        Ok(r) if r == "ok" => {}
        Ok(r) => checks.fail(format!("the child's report: {r}")),
        Err(e) => checks.fail(format!("reading {REPORT}: {e}")),
    }
    if let Some(at) = pattern_mismatch(
        SEED,
        CHILD_WRITES_AFTER * PAGE,
        region.page(CHILD_WRITES_AFTER),
    ) {
        checks.fail(format!(
            "parent: page {CHILD_WRITES_AFTER} changed at byte {at} when the child wrote its own"
        ));
    }
    w.finish(checks)
}
