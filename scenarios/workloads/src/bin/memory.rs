//! The address space: heap, stack, statics, a sparse 256 MiB anonymous region, PROT_NONE
//! guard pages, private and shared file mappings, and the mm fields (brk, arg/env areas, exe,
//! auxv).
//!
//! Checks after the wait:
//! - heap: a 48 KiB malloc'd pattern (brk heap) and a 1 MiB one (malloc's own mmap);
//! - stack: a 16 KiB pattern in a local array of `main`, still inside `[stack]`;
//! - statics: a zero-initialised (.bss) and an initialised (.data) array, half rewritten;
//! - a 256 MiB `MAP_PRIVATE|MAP_ANONYMOUS` region with four touched pages: their content, zeros
//!   elsewhere, still one rw-p mapping;
//! - guard pages: a 5-page region whose pages 1 and 3 are PROT_NONE (page 1 written before
//!   being protected, page 3 never touched): still `---p` at the same range, and after
//!   mprotect to RW page 1 holds its old content, page 3 zeros;
//! - a private file mapping with one copy-on-write page: that page keeps its new content, the
//!   others still match the file, and the file is unchanged;
//! - a shared file mapping: what was written through it before the checkpoint, a write the
//!   driver makes to the file before the trigger (`external-write` in the ready file) shows in
//!   the mapping, and a write through the mapping after the wait lands in the file;
//! - mm fields: `/proc/self/stat` code/data/brk/stack/arg/env fields, the kernel's brk (same
//!   just before and just after the wait),
//!   `/proc/self/exe`, `/proc/self/auxv`, `getauxval(AT_PAGESZ)`, the `AT_RANDOM` bytes,
//!   `/proc/self/cmdline` and `/proc/self/environ`, argv and the environment as std reads them.

use std::ffi::OsString;
use std::hint::black_box;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use crlab_workloads::protocol;
use crlab_workloads::runtime::{Checks, Workload};
use crlab_workloads::sys::{self, pattern, pattern_mismatch};

const PAGE: usize = 4096;

/// Zero-initialised: lives in .bss.
static BSS: [AtomicU64; 8192] = [const { AtomicU64::new(0) }; 8192];
/// Initialised: lives in .data.
static DATA: [AtomicU64; 1024] = [const { AtomicU64::new(0xda7a_da7a_da7a_da7a) }; 1024];
const DATA_INITIAL: u64 = 0xda7a_da7a_da7a_da7a;

const BIG_LEN: usize = 256 << 20;
/// Page indices of the big region that get written.
const BIG_TOUCHED: [usize; 4] = [0, 1, (64 << 20) / PAGE, BIG_LEN / PAGE - 1];

const SEED_HEAP_SMALL: u64 = 0x4ea9_0001;
const SEED_HEAP_BIG: u64 = 0x4ea9_0002;
const SEED_BIG: u64 = 0xb16_0000;
const SEED_GUARD: u64 = 0x6a4d_0000;
const SEED_PRIVATE_FILE: u64 = 0xf11e_0001;
const SEED_COW: u64 = 0xc0_0001;
const SEED_SHARED_FILE: u64 = 0x54a4_0001;

const PRIVATE_FILE: &str = "private.bin";
const PRIVATE_PAGES: usize = 4;
const COW_PAGE: usize = 1;
const SHARED_FILE: &str = "shared.bin";
const SHARED_PAGES: usize = 2;
const BEFORE_MARK: &[u8] = b"written-through-the-mapping-before-the-wait";
const AFTER_MARK: &[u8] = b"written-through-the-mapping-after-the-wait";
const AFTER_OFFSET: usize = PAGE;
const EXTERNAL_OFFSET: u64 = 6000;
const EXTERNAL_TEXT: &str = "written-to-the-file-by-the-driver";

/// `/proc/self/stat` fields (1-based, proc(5)) that hold mm fields.
const STAT_MM_FIELDS: [(usize, &str); 10] = [
    (26, "startcode"),
    (27, "endcode"),
    (28, "startstack"),
    (45, "start_data"),
    (46, "end_data"),
    (47, "start_brk"),
    (48, "arg_start"),
    (49, "arg_end"),
    (50, "env_start"),
    (51, "env_end"),
];

/// What the mm fields looked like before the wait.
struct MmSnapshot {
    stat: Vec<(&'static str, String)>,
    exe: std::path::PathBuf,
    exe_ino: (u64, u64),
    auxv: Vec<u8>,
    page_size: u64,
    at_random: u64,
    random_bytes: [u8; 16],
    cmdline: Vec<u8>,
    environ: Vec<u8>,
    args: Vec<OsString>,
    mark: Option<String>,
}

impl MmSnapshot {
    fn take() -> std::io::Result<MmSnapshot> {
        use std::os::unix::fs::MetadataExt;
        let fields = sys::stat_fields()?;
        let stat = STAT_MM_FIELDS
            .iter()
            .map(|&(n, name)| (name, fields.get(n - 1).cloned().unwrap_or_default()))
            .collect();
        let exe_meta = std::fs::metadata("/proc/self/exe")?;
        // SAFETY: getauxval only reads the auxiliary vector libc saved at startup.
        let (page_size, at_random) = unsafe {
            (
                libc::getauxval(libc::AT_PAGESZ),
                libc::getauxval(libc::AT_RANDOM),
            )
        };
        let mut random_bytes = [0u8; 16];
        if at_random != 0 {
            // SAFETY: AT_RANDOM points at 16 random bytes the kernel put on the initial stack,
            // which stays mapped for the life of the process.
            random_bytes = unsafe { *(at_random as *const [u8; 16]) };
        }
        Ok(MmSnapshot {
            stat,
            exe: std::fs::read_link("/proc/self/exe")?,
            exe_ino: (exe_meta.dev(), exe_meta.ino()),
            auxv: std::fs::read("/proc/self/auxv")?,
            page_size,
            at_random,
            random_bytes,
            cmdline: std::fs::read("/proc/self/cmdline")?,
            environ: std::fs::read("/proc/self/environ")?,
            args: std::env::args_os().collect(),
            mark: std::env::var(protocol::MARK_ENV).ok(),
        })
    }

    fn compare(&self, checks: &mut Checks) {
        let Some(now) = checks.io("reading the mm fields", MmSnapshot::take()) else {
            return;
        };
        for (before, after) in self.stat.iter().zip(&now.stat) {
            checks.eq(
                &format!("/proc/self/stat {}", before.0),
                &before.1,
                &after.1,
            );
        }
        checks.eq("/proc/self/exe", &self.exe, &now.exe);
        checks.eq("/proc/self/exe device and inode", self.exe_ino, now.exe_ino);
        checks.eq("/proc/self/auxv", &self.auxv, &now.auxv);
        checks.eq("getauxval(AT_PAGESZ)", PAGE as u64, now.page_size);
        checks.eq("getauxval(AT_RANDOM)", self.at_random, now.at_random);
        checks.eq("AT_RANDOM bytes", self.random_bytes, now.random_bytes);
        checks.eq(
            "/proc/self/cmdline",
            String::from_utf8_lossy(&self.cmdline),
            String::from_utf8_lossy(&now.cmdline),
        );
        checks.eq(
            "/proc/self/environ",
            String::from_utf8_lossy(&self.environ),
            String::from_utf8_lossy(&now.environ),
        );
        checks.eq("argv", &self.args, &now.args);
        checks.eq("environment variable", &self.mark, &now.mark);
        let joined: Vec<u8> = self
            .args
            .iter()
            .flat_map(|a| {
                use std::os::unix::ffi::OsStrExt;
                a.as_bytes().iter().copied().chain([0])
            })
            .collect();
        checks.eq(
            "argv strings against /proc/self/cmdline",
            String::from_utf8_lossy(&joined),
            String::from_utf8_lossy(&now.cmdline),
        );
    }
}

/// A fresh anonymous or file mapping; exits through setup on failure.
fn map(w: &Workload, len: usize, prot: i32, flags: i32, fd: i32, what: &str) -> *mut u8 {
    // SAFETY: a new mapping at an address of the kernel's choosing touches no existing memory.
    let p = unsafe { libc::mmap(std::ptr::null_mut(), len, prot, flags, fd, 0) };
    if p == libc::MAP_FAILED {
        w.setup_failed(&format!("mmap {what}: {}", std::io::Error::last_os_error()));
    }
    p.cast()
}

fn protect(addr: *mut u8, len: usize, prot: i32) -> std::io::Result<()> {
    // SAFETY: callers pass page-aligned ranges inside mappings this program made and no
    // reference into them is live across the call.
    let ret = unsafe { libc::mprotect(addr.cast(), len, prot) };
    sys::check(ret.into()).map(drop)
}

/// `len` bytes at `addr` as a slice.
///
/// # Safety
/// `addr..addr+len` must be mapped and readable for as long as the slice is used.
unsafe fn bytes<'a>(addr: *const u8, len: usize) -> &'a [u8] {
    // SAFETY: the caller guarantees the range is mapped and readable.
    unsafe { std::slice::from_raw_parts(addr, len) }
}

/// Copies `src` to `addr`.
///
/// # Safety
/// `addr..addr+src.len()` must be mapped and writable.
unsafe fn put(addr: *mut u8, src: &[u8]) {
    // SAFETY: the caller guarantees the destination; `src` cannot overlap a fresh mapping.
    unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), addr, src.len()) };
}

fn check_pattern(checks: &mut Checks, what: &str, seed: u64, from: usize, got: &[u8]) {
    if let Some(i) = pattern_mismatch(seed, from, got) {
        checks.fail(format!("{what}: byte {i} differs from the pattern"));
    }
}

fn check_mapping(
    checks: &mut Checks,
    what: &str,
    addr: u64,
    perms: &str,
    range: Option<(u64, u64)>,
) {
    match checks.io("reading /proc/self/maps", sys::mapping_at(addr)) {
        Some(Some(m)) => {
            checks.eq(&format!("{what}: permissions"), perms, m.perms.as_str());
            if let Some(range) = range {
                checks.eq(&format!("{what}: range"), range, (m.start, m.end));
            }
        }
        Some(None) => checks.fail(format!("{what}: {addr:#x} is no longer mapped")),
        None => {}
    }
}

fn main() {
    let mut w = Workload::from_args("memory");
    let dir = w.state_dir().to_path_buf();

    // Heap.
    let heap_small = black_box(pattern(SEED_HEAP_SMALL, 0, 48 * 1024));
    let heap_big = black_box(pattern(SEED_HEAP_BIG, 0, 1 << 20));

    // Stack.
    let mut stack = [0u64; 2048];
    for (i, v) in stack.iter_mut().enumerate() {
        *v = 0x57ac_0000_0000_0000 | i as u64;
    }
    black_box(&mut stack);

    // Statics: even .bss words and the first half of .data rewritten.
    for (i, v) in BSS.iter().enumerate().step_by(2) {
        v.store(0xb55_0000_0000 | i as u64, Ordering::Relaxed);
    }
    for (i, v) in DATA.iter().enumerate().take(512) {
        v.store(0xda7a_0000_0000 | i as u64, Ordering::Relaxed);
    }

    // The big sparse region.
    let big = map(
        &w,
        BIG_LEN,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        "the 256 MiB region",
    );
    for p in BIG_TOUCHED {
        // SAFETY: page p lies inside the fresh 256 MiB RW mapping.
        unsafe { put(big.add(p * PAGE), &pattern(SEED_BIG + p as u64, 0, PAGE)) };
    }

    // Guard pages: 5 pages, 1 (written first) and 3 (never touched) PROT_NONE.
    let guard = map(
        &w,
        5 * PAGE,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
        -1,
        "the guard region",
    );
    for p in [0, 1, 2, 4] {
        // SAFETY: page p lies inside the fresh 5-page RW mapping.
        unsafe {
            put(
                guard.add(p * PAGE),
                &pattern(SEED_GUARD + p as u64, 0, PAGE),
            )
        };
    }
    for p in [1, 3] {
        // SAFETY: page p of the guard region; no reference into it is held.
        let r = protect(unsafe { guard.add(p * PAGE) }, PAGE, libc::PROT_NONE);
        w.setup("mprotect PROT_NONE", r);
    }

    // Private file mapping with one copy-on-write page.
    let private_path = dir.join(PRIVATE_FILE);
    let file_content = pattern(SEED_PRIVATE_FILE, 0, PRIVATE_PAGES * PAGE);
    w.setup(
        "writing private.bin",
        std::fs::write(&private_path, &file_content),
    );
    let private = {
        let f = w.setup("opening private.bin", std::fs::File::open(&private_path));
        use std::os::fd::AsRawFd;
        map(
            &w,
            PRIVATE_PAGES * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE,
            f.as_raw_fd(),
            "private.bin",
        )
    };
    // SAFETY: page COW_PAGE lies inside the RW private mapping.
    unsafe { put(private.add(COW_PAGE * PAGE), &pattern(SEED_COW, 0, PAGE)) };
    // Fault page 2 in from the file (read only), leave page 3 untouched.
    // SAFETY: page 2 lies inside the private mapping.
    black_box(
        unsafe { bytes(private.add(2 * PAGE), PAGE) }
            .iter()
            .map(|&b| b as u64)
            .sum::<u64>(),
    );

    // Shared file mapping.
    let shared_path = dir.join(SHARED_FILE);
    w.setup(
        "writing shared.bin",
        std::fs::write(
            &shared_path,
            pattern(SEED_SHARED_FILE, 0, SHARED_PAGES * PAGE),
        ),
    );
    let shared = {
        let f = w.setup(
            "opening shared.bin",
            std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .open(&shared_path),
        );
        use std::os::fd::AsRawFd;
        map(
            &w,
            SHARED_PAGES * PAGE,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            "shared.bin",
        )
    };
    // SAFETY: the mark fits in the first page of the RW shared mapping.
    unsafe { put(shared, BEFORE_MARK) };
    w.request_external_write(SHARED_FILE, EXTERNAL_OFFSET, EXTERNAL_TEXT);

    let mm = w.setup("reading the mm fields", MmSnapshot::take());
    let stack_addr = stack.as_ptr() as u64;

    let mut checks = w.wait();
    let (brk_before, brk_after) = w.brk_across_wait();
    checks.eq("kernel brk", brk_before, brk_after);
    w.common_checks(&mut checks);

    // Heap.
    check_pattern(
        &mut checks,
        "heap (48 KiB)",
        SEED_HEAP_SMALL,
        0,
        black_box(&heap_small),
    );
    check_pattern(
        &mut checks,
        "heap (1 MiB)",
        SEED_HEAP_BIG,
        0,
        black_box(&heap_big),
    );

    // Stack.
    let stack = black_box(&stack);
    if let Some(i) = (0..stack.len()).find(|&i| stack[i] != 0x57ac_0000_0000_0000 | i as u64) {
        checks.fail(format!("stack array: word {i} is {:#x}", stack[i]));
    }
    match checks.io("reading /proc/self/maps", sys::mapping_at(stack_addr)) {
        Some(Some(m)) => checks.eq("mapping of the stack array", "[stack]", m.path.as_str()),
        Some(None) => checks.fail("the stack array is no longer mapped"),
        None => {}
    }

    // Statics.
    for (i, v) in BSS.iter().enumerate() {
        let want = if i % 2 == 0 {
            0xb55_0000_0000 | i as u64
        } else {
            0
        };
        if v.load(Ordering::Relaxed) != want {
            checks.fail(format!(
                "bss word {i} is {:#x}, expected {want:#x}",
                v.load(Ordering::Relaxed)
            ));
            break;
        }
    }
    for (i, v) in DATA.iter().enumerate() {
        let want = if i < 512 {
            0xda7a_0000_0000 | i as u64
        } else {
            DATA_INITIAL
        };
        if v.load(Ordering::Relaxed) != want {
            checks.fail(format!(
                "data word {i} is {:#x}, expected {want:#x}",
                v.load(Ordering::Relaxed)
            ));
            break;
        }
    }

    check_big_region(&mut checks, big);
    check_guard_region(&mut checks, guard);
    check_private_mapping(&mut checks, private, &private_path, &file_content);
    check_shared_mapping(&mut checks, shared, &shared_path);
    mm.compare(&mut checks);

    w.finish(checks)
}

fn check_big_region(checks: &mut Checks, big: *mut u8) {
    let base = big as u64;
    match checks.io("reading /proc/self/maps", sys::mapping_at(base)) {
        Some(Some(m)) => {
            checks.eq("256 MiB region: permissions", "rw-p", m.perms.as_str());
            checks.that(
                m.start <= base && m.end >= base + BIG_LEN as u64,
                "256 MiB region: no longer one mapping",
            );
        }
        Some(None) => checks.fail("256 MiB region: no longer mapped"),
        None => {}
    }
    for p in 0..BIG_LEN / PAGE {
        // SAFETY: page p lies inside the 256 MiB RW mapping, checked mapped above (a missing
        // mapping would fault here, which also fails the test).
        let page = unsafe { bytes(big.add(p * PAGE), PAGE) };
        if BIG_TOUCHED.contains(&p) {
            check_pattern(
                checks,
                &format!("256 MiB region page {p}"),
                SEED_BIG + p as u64,
                0,
                page,
            );
        } else if page[..64].iter().any(|&b| b != 0) || page[PAGE - 64..].iter().any(|&b| b != 0) {
            checks.fail(format!("256 MiB region page {p}: not zero"));
            break;
        }
    }
}

fn check_guard_region(checks: &mut Checks, guard: *mut u8) {
    let base = guard as u64;
    let page = PAGE as u64;
    for p in [1u64, 3] {
        let addr = base + p * page;
        check_mapping(
            checks,
            &format!("guard page {p}"),
            addr,
            "---p",
            Some((addr, addr + page)),
        );
    }
    for p in [0u64, 2, 4] {
        check_mapping(
            checks,
            &format!("guard region page {p}"),
            base + p * page,
            "rw-p",
            None,
        );
    }
    // Make the guard pages readable to look at them.
    for p in [1, 3] {
        // SAFETY: page p of the guard region; no reference into it is live.
        let r = protect(unsafe { guard.add(p * PAGE) }, PAGE, libc::PROT_READ);
        if checks
            .io(&format!("mprotect guard page {p} to read"), r)
            .is_none()
        {
            return;
        }
    }
    for p in [0, 1, 2, 4] {
        // SAFETY: page p is mapped and readable now.
        let got = unsafe { bytes(guard.add(p * PAGE), PAGE) };
        check_pattern(
            checks,
            &format!("guard region page {p}"),
            SEED_GUARD + p as u64,
            0,
            got,
        );
    }
    // SAFETY: page 3 is mapped and readable now.
    let never_touched = unsafe { bytes(guard.add(3 * PAGE), PAGE) };
    checks.that(
        never_touched.iter().all(|&b| b == 0),
        "guard page 3 (never written): not zero",
    );
}

fn check_private_mapping(checks: &mut Checks, private: *mut u8, path: &Path, file_content: &[u8]) {
    let base = private as u64;
    if let Some(Some(m)) = checks.io("reading /proc/self/maps", sys::mapping_at(base)) {
        checks.eq("private mapping: permissions", "rw-p", m.perms.as_str());
        checks.eq(
            "private mapping: file",
            path.to_string_lossy().as_ref(),
            m.path.as_str(),
        );
    }
    for p in 0..PRIVATE_PAGES {
        // SAFETY: page p lies inside the RW private mapping.
        let got = unsafe { bytes(private.add(p * PAGE), PAGE) };
        if p == COW_PAGE {
            check_pattern(
                checks,
                "private mapping: copy-on-write page",
                SEED_COW,
                0,
                got,
            );
        } else {
            check_pattern(
                checks,
                &format!("private mapping page {p} (from the file)"),
                SEED_PRIVATE_FILE,
                p * PAGE,
                got,
            );
        }
    }
    if let Some(now) = checks.io("reading private.bin", std::fs::read(path)) {
        checks.that(
            now == file_content,
            "private.bin changed: the copy-on-write page reached the file",
        );
    }
}

fn check_shared_mapping(checks: &mut Checks, shared: *mut u8, path: &Path) {
    let base = shared as u64;
    if let Some(Some(m)) = checks.io("reading /proc/self/maps", sys::mapping_at(base)) {
        checks.eq("shared mapping: permissions", "rw-s", m.perms.as_str());
        checks.eq(
            "shared mapping: file",
            path.to_string_lossy().as_ref(),
            m.path.as_str(),
        );
    }
    // SAFETY: both pages lie inside the RW shared mapping.
    let view = unsafe { bytes(shared, SHARED_PAGES * PAGE) };
    checks.eq(
        "shared mapping: bytes written through it before the wait",
        String::from_utf8_lossy(BEFORE_MARK),
        String::from_utf8_lossy(&view[..BEFORE_MARK.len()]),
    );
    check_pattern(
        checks,
        "shared mapping: rest of page 0",
        SEED_SHARED_FILE,
        BEFORE_MARK.len(),
        &view[BEFORE_MARK.len()..PAGE],
    );
    let ext = EXTERNAL_OFFSET as usize;
    checks.eq(
        "shared mapping: bytes the driver wrote to the file",
        EXTERNAL_TEXT,
        String::from_utf8_lossy(&view[ext..ext + EXTERNAL_TEXT.len()]).as_ref(),
    );
    // A write through the mapping now must reach the file.
    // SAFETY: the mark fits in page 1 of the RW shared mapping, before EXTERNAL_OFFSET.
    unsafe { put(shared.add(AFTER_OFFSET), AFTER_MARK) };
    let Some(file) = checks.io("opening shared.bin", std::fs::File::open(path)) else {
        return;
    };
    let mut buf = vec![0u8; AFTER_MARK.len()];
    if checks
        .io(
            "reading shared.bin",
            file.read_exact_at(&mut buf, AFTER_OFFSET as u64),
        )
        .is_some()
    {
        checks.eq(
            "shared.bin: bytes written through the mapping after the wait",
            String::from_utf8_lossy(AFTER_MARK),
            String::from_utf8_lossy(&buf),
        );
    }
    let mut buf = vec![0u8; BEFORE_MARK.len()];
    if checks
        .io("reading shared.bin", file.read_exact_at(&mut buf, 0))
        .is_some()
    {
        checks.eq(
            "shared.bin: bytes written through the mapping before the wait",
            String::from_utf8_lossy(BEFORE_MARK),
            String::from_utf8_lossy(&buf),
        );
    }
}
