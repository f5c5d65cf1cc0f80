//! Rebuilding an address space inside the restored task, by its own system calls.
//!
//! The task starts as a copy of the engine. A small trampoline (one page with a
//! `syscall` instruction, then scratch pages) is mapped in a hole of the target
//! layout; the kernel's special mappings (vDSO, vvar) are moved to where the
//! image had them; everything else is unmapped; the image's mappings are
//! created at their addresses and filled with the dumped pages.

use super::error::StepContext;
use super::RestoreError;
use crate::image::schema::{Mm, Vma, VmaKind};
use crate::image::{cow, PagesReader};
use crate::procfs::MapEntry;
use crate::sys::{int_arg, usize_of, Remote, Scratch, PAGE_SIZE};
use nix::sys::uio::{process_vm_writev, RemoteIoVec};
use nix::unistd::Pid;
use std::io::IoSlice;
use tracing::debug;

/// Trampoline: one code page, then this many scratch pages.
const SCRATCH_PAGES: u64 = 4;
const TRAMPOLINE_LEN: u64 = (1 + SCRATCH_PAGES) * PAGE_SIZE;
const USER_END: u64 = 0x7fff_ffff_f000;
const LOWEST: u64 = 0x10000;
const COPY_CHUNK: usize = 1 << 20;

/// The trampoline area mapped in the task.
#[derive(Debug, Clone, Copy)]
pub struct Trampoline {
    pub addr: u64,
    /// The `syscall` instruction inside the code page.
    pub gadget: u64,
    pub scratch: Scratch,
}

impl Trampoline {
    /// Points a task's remote calls at this trampoline (for tasks forked or
    /// cloned after it was mapped: they have it at the same address).
    pub fn adopt(&self, remote: &mut Remote) {
        remote.set_gadget(self.gadget);
        remote.set_stack(self.addr + TRAMPOLINE_LEN - 256);
    }
}

fn overlaps(a: (u64, u64), b: (u64, u64)) -> bool {
    a.0 < b.1 && b.0 < a.1
}

/// The lowest address with `len` free bytes, clear of every range in `busy`.
fn find_hole(len: u64, busy: &[(u64, u64)]) -> Option<u64> {
    let mut ranges: Vec<(u64, u64)> = busy.to_vec();
    ranges.sort_unstable();
    // Search from the middle of the address space down, away from the usual
    // binary (low) and stack/mmap (high) areas.
    let mut candidate = 0x2000_0000_0000u64;
    loop {
        let span = (candidate, candidate + len + PAGE_SIZE);
        match ranges.iter().find(|r| overlaps(**r, span)) {
            None => return Some(candidate),
            Some(r) => {
                candidate = r.0.checked_sub(len + PAGE_SIZE)? & !(PAGE_SIZE - 1);
                if candidate < LOWEST {
                    return None;
                }
            }
        }
    }
}

/// Maps the trampoline in a hole of both the current and the target layout.
/// `all` holds the images of every process of the tree: they all inherit it.
pub fn map_trampoline(
    remote: &mut Remote,
    pid: i32,
    all: &[&Mm],
) -> Result<Trampoline, RestoreError> {
    failpoint!(
        "restore.map.trampoline",
        super::error::injected(pid, "the trampoline")
    );
    let current = MapEntry::read(pid).map_err(|e| RestoreError::Inconsistent(e.to_string()))?;
    let busy: Vec<(u64, u64)> = current
        .iter()
        .map(|m| (m.start, m.end))
        .chain(
            all.iter()
                .flat_map(|mm| mm.vmas.iter())
                .map(|v| (v.start, v.end)),
        )
        .collect();
    let addr = find_hole(TRAMPOLINE_LEN, &busy)
        .ok_or_else(|| RestoreError::Inconsistent("no free hole for the trampoline".into()))?;
    // Scratch first (anonymous, read-write), then the code page: a page of the
    // engine's own executable that holds a `syscall` instruction, mapped from
    // the file. No anonymous executable memory is created, so the engine's
    // domain needs no `execmem`.
    let fixed = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED_NOREPLACE) as u64;
    remote
        .syscall(
            "mmap",
            libc::SYS_mmap,
            &[
                addr + PAGE_SIZE,
                SCRATCH_PAGES * PAGE_SIZE,
                (libc::PROT_READ | libc::PROT_WRITE) as u64,
                fixed,
                u64::MAX,
                0,
            ],
        )
        .step(pid, "the trampoline")?;
    let scratch = Scratch {
        addr: addr + PAGE_SIZE,
        len: SCRATCH_PAGES * PAGE_SIZE - 512,
    };
    let (exe, file_off) = own_syscall_instruction()?;
    let fd = remote
        .open("open", scratch, &exe, libc::O_RDONLY | libc::O_CLOEXEC)
        .map_err(|source| RestoreError::File {
            pid,
            what: "opening the library the trampoline is mapped from".into(),
            path: exe.clone(),
            source,
        })?;
    let page_off = file_off & !(PAGE_SIZE - 1);
    let mapped = remote.syscall(
        "mmap",
        libc::SYS_mmap,
        &[
            addr,
            PAGE_SIZE,
            (libc::PROT_READ | libc::PROT_EXEC) as u64,
            (libc::MAP_PRIVATE | libc::MAP_FIXED_NOREPLACE) as u64,
            fd,
            page_off,
        ],
    );
    remote
        .syscall("close", libc::SYS_close, &[fd])
        .step(pid, "the trampoline")?;
    mapped.step(pid, "the trampoline")?;
    let t = Trampoline {
        addr,
        gadget: addr + (file_off - page_off),
        scratch,
    };
    t.adopt(remote);
    Ok(t)
}

/// A file the engine has mapped executable (not its own binary: the restored
/// task's old exe must not stay mapped for `PR_SET_MM_MAP`, so libc in
/// practice) and the file offset of a `syscall` instruction in it whose two
/// bytes lie in one page.
fn own_syscall_instruction() -> Result<(String, u64), RestoreError> {
    let me = nix::unistd::getpid().as_raw();
    let exe = std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .map_err(|e| RestoreError::Inconsistent(format!("reading /proc/self/exe: {e}")))?;
    let maps = MapEntry::read(me).map_err(|e| RestoreError::Inconsistent(e.to_string()))?;
    let mem = std::fs::File::open("/proc/self/mem")
        .map_err(|e| RestoreError::Inconsistent(format!("opening /proc/self/mem: {e}")))?;
    let mut page = vec![0u8; usize_of(PAGE_SIZE)];
    for m in maps.iter().filter(|m| {
        m.prot_exec() && m.path.starts_with('/') && m.path != exe && !m.path.ends_with(" (deleted)")
    }) {
        let mut at = m.start;
        while at < m.end {
            use std::os::unix::fs::FileExt;
            if mem.read_exact_at(&mut page, at).is_err() {
                break;
            }
            if let Some(i) = page.windows(2).position(|w| w == [0x0f, 0x05]) {
                return Ok((m.path.clone(), m.offset + (at - m.start) + i as u64));
            }
            at += PAGE_SIZE;
        }
    }
    Err(RestoreError::Inconsistent(
        "the engine has no shared library mapped with a syscall instruction to build its trampoline from \
         (is crlab linked statically?)"
            .into(),
    ))
}

pub fn unmap_trampoline(remote: &mut Remote, pid: i32, t: &Trampoline) -> Result<(), RestoreError> {
    failpoint!(
        "restore.map.unmap_trampoline",
        super::error::injected(pid, "the trampoline")
    );
    remote
        .unmap(t.addr, TRAMPOLINE_LEN)
        .step(pid, "the trampoline")
}

fn special_name(kind: VmaKind) -> Option<&'static str> {
    match kind {
        VmaKind::Vdso => Some("[vdso]"),
        VmaKind::Vvar => Some("[vvar]"),
        VmaKind::VvarVclock => Some("[vvar_vclock]"),
        _ => None,
    }
}

fn kind(v: &Vma) -> VmaKind {
    VmaKind::try_from(v.kind).unwrap_or(VmaKind::Unspecified)
}

/// Moves the kernel's special mappings to the image's addresses and unmaps
/// everything else the task inherited from the engine.
pub fn clear_address_space(
    remote: &mut Remote,
    pid: i32,
    mm: &Mm,
    t: &Trampoline,
    inherited: &[(u64, u64)],
) -> Result<(), RestoreError> {
    failpoint!(
        "restore.map.clear",
        super::error::injected(pid, "the engine's mappings")
    );
    let current = MapEntry::read(pid).map_err(|e| RestoreError::Inconsistent(e.to_string()))?;
    let mut moves = Vec::new();
    for v in &mm.vmas {
        let Some(name) = special_name(kind(v)) else {
            continue;
        };
        let here = current
            .iter()
            .find(|m| m.path == name)
            .ok_or_else(|| RestoreError::NoVdso { name: name.into() })?;
        if here.len() != v.end - v.start {
            return Err(RestoreError::VdsoSize {
                name: name.into(),
                image: v.end - v.start,
                here: here.len(),
            });
        }
        moves.push((here.start, v.start, here.len()));
    }
    // Two steps, so no move lands on a special mapping that has yet to move.
    let mut busy: Vec<(u64, u64)> = current
        .iter()
        .map(|m| (m.start, m.end))
        .chain(mm.vmas.iter().map(|v| (v.start, v.end)))
        .collect();
    busy.push((t.addr, t.addr + TRAMPOLINE_LEN));
    let mut parked = Vec::new();
    for &(from, to, len) in &moves {
        if from == to {
            parked.push((from, to, len));
            continue;
        }
        let tmp = find_hole(len, &busy)
            .ok_or_else(|| RestoreError::Inconsistent("no hole to move the vDSO".into()))?;
        busy.push((tmp, tmp + len));
        mremap(remote, pid, from, tmp, len)?;
        parked.push((tmp, to, len));
    }
    for &(from, to, len) in &parked {
        if from != to {
            mremap(remote, pid, from, to, len)?;
        }
    }
    let keep: Vec<(u64, u64)> = parked
        .iter()
        .map(|&(_, to, len)| (to, to + len))
        .chain(std::iter::once((t.addr, t.addr + TRAMPOLINE_LEN)))
        .chain(inherited.iter().copied())
        .collect();
    let current = MapEntry::read(pid).map_err(|e| RestoreError::Inconsistent(e.to_string()))?;
    let ranges: Vec<(u64, u64)> = current
        .iter()
        .filter(|m| m.start < USER_END)
        .map(|m| (m.start, m.end))
        .collect();
    for (start, end) in unmap_runs(&ranges, &keep) {
        remote
            .unmap(start, end - start)
            .step(pid, "the engine's mappings")?;
    }
    Ok(())
}

/// The address ranges that unmap every part of the mappings of `current` (sorted, as
/// `/proc/PID/maps` lists them) that lies outside every range of `keep`, and nothing else: a
/// mapping the kernel merged with a kept neighbour loses its part outside the kept range. One
/// range for each run of such parts with no kept range between them, since `munmap` skips the
/// holes: fewer remote calls than one per mapping.
fn unmap_runs(current: &[(u64, u64)], keep: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut keep = keep.to_vec();
    keep.sort_unstable();
    let mut runs: Vec<(u64, u64)> = Vec::new();
    let add = |piece: (u64, u64), runs: &mut Vec<(u64, u64)>| match runs.last_mut() {
        Some(run) if !keep.iter().any(|k| overlaps(*k, (run.1, piece.0))) => run.1 = piece.1,
        _ => runs.push(piece),
    };
    for &m in current {
        let mut at = m.0;
        for k in keep.iter().filter(|k| overlaps(**k, m)) {
            if k.0 > at {
                add((at, k.0), &mut runs);
            }
            at = at.max(k.1);
        }
        if at < m.1 {
            add((at, m.1), &mut runs);
        }
    }
    runs
}

fn mremap(remote: &mut Remote, pid: i32, from: u64, to: u64, len: u64) -> Result<(), RestoreError> {
    remote
        .syscall(
            "mremap",
            libc::SYS_mremap,
            &[
                from,
                len,
                len,
                (libc::MREMAP_MAYMOVE | libc::MREMAP_FIXED) as u64,
                to,
            ],
        )
        .step(pid, "the vDSO")
        .map(drop)
}

/// Creates every non-special mapping of the image at its address, except
/// those `inherited` from an ancestor.
pub fn map_vmas(
    remote: &mut Remote,
    pid: i32,
    mm: &Mm,
    scratch: Scratch,
    inherited: &[(u64, u64)],
    parked: &super::files::Parked,
) -> Result<(), RestoreError> {
    let mut open: Option<OpenFile> = None;
    for v in &mm.vmas {
        let k = kind(v);
        if special_name(k).is_some()
            || k == VmaKind::Vsyscall
            || inherited.contains(&(v.start, v.end))
        {
            continue;
        }
        map_cached(remote, pid, v, scratch, &mut open, Some(parked))?;
    }
    if let Some(file) = open {
        file.close(remote, pid)?;
    }
    Ok(())
}

/// The file a run of mappings of the same file shares: opened once, closed when the next
/// mapping is of another file or in another mode.
struct OpenFile {
    path: String,
    mode: i32,
    fd: u64,
}

impl OpenFile {
    fn close(self, remote: &mut Remote, pid: i32) -> Result<(), RestoreError> {
        remote
            .syscall("close", libc::SYS_close, &[self.fd])
            .step(pid, "a file mapping")
            .map(drop)
    }
}

/// Shared anonymous mappings that appear in more than one process: created
/// once, before the tree is forked, so every process shares the same memory.
pub fn shared_anon_groups(all: &[&Mm]) -> Result<Vec<Vma>, RestoreError> {
    let vmas: Vec<&[Vma]> = all.iter().map(|mm| mm.vmas.as_slice()).collect();
    if let Some(m) = crate::image::shmem_mismatch(&vmas) {
        return Err(RestoreError::Inconsistent(format!(
            "shared memory object {} is mapped at {:#x} in one process and {:#x} in another; \
             restoring it at different addresses is not supported (a dump refuses this)",
            m.shmem_id, m.first.1.start, m.second.1.start
        )));
    }
    let mut seen: Vec<(Vma, usize)> = Vec::new();
    for v in vmas
        .iter()
        .flat_map(|v| v.iter())
        .filter(|v| kind(v) == VmaKind::AnonShared)
    {
        match seen.iter_mut().find(|(s, _)| s.shmem_id == v.shmem_id) {
            Some((_, n)) => *n += 1,
            None => seen.push((v.clone(), 1)),
        }
    }
    Ok(seen
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(v, _)| v)
        .collect())
}

/// Maps one image mapping at its address.
pub fn map_one(
    remote: &mut Remote,
    pid: i32,
    v: &Vma,
    scratch: Scratch,
) -> Result<(), RestoreError> {
    let mut open = None;
    map_cached(remote, pid, v, scratch, &mut open, None)?;
    match open {
        Some(file) => file.close(remote, pid),
        None => Ok(()),
    }
}

/// Maps one image mapping at its address; a file mapping reuses `open` when it is the same
/// file in the same mode, and leaves its file there for the next one. A mapping of a deleted
/// file maps the description of it the root made and every process holds, parked
/// (`parked`), until its descriptors are installed.
fn map_cached(
    remote: &mut Remote,
    pid: i32,
    v: &Vma,
    scratch: Scratch,
    open: &mut Option<OpenFile>,
    parked: Option<&super::files::Parked>,
) -> Result<(), RestoreError> {
    failpoint!("restore.map.vmas", super::error::injected(pid, "a mapping"));
    let k = kind(v);
    let len = v.end - v.start;
    let mut flags = libc::MAP_FIXED;
    if v.growsdown {
        flags |= libc::MAP_GROWSDOWN;
    }
    let (fd, offset) = match k {
        VmaKind::AnonPrivate => {
            flags |= libc::MAP_PRIVATE | libc::MAP_ANONYMOUS;
            (u64::MAX, 0)
        }
        VmaKind::AnonShared => {
            flags |= libc::MAP_SHARED | libc::MAP_ANONYMOUS;
            (u64::MAX, 0)
        }
        VmaKind::FilePrivate | VmaKind::FileShared if v.deleted_file != 0 => {
            flags |= if k == VmaKind::FileShared {
                libc::MAP_SHARED
            } else {
                libc::MAP_PRIVATE
            };
            let fd = parked
                .and_then(|p| p.fds.get(&v.deleted_file))
                .ok_or_else(|| {
                    RestoreError::Inconsistent(format!(
                        "mapping {:#x}-{:#x} of the deleted file {} names file {}, which \
                         files.img lacks",
                        v.start, v.end, v.path, v.deleted_file
                    ))
                })?;
            (*fd, v.pgoff)
        }
        VmaKind::FilePrivate | VmaKind::FileShared => {
            let shared = k == VmaKind::FileShared;
            flags |= if shared {
                libc::MAP_SHARED
            } else {
                libc::MAP_PRIVATE
            };
            // Only a shared mapping that is or may be made writable needs the file open
            // for writing; a private one must not hold it so (that would make the binary
            // "busy").
            let mode = if shared && (v.prot & libc::PROT_WRITE as u32 != 0 || v.may_write) {
                libc::O_RDWR
            } else {
                libc::O_RDONLY
            };
            let reuse = open
                .as_ref()
                .is_some_and(|f| f.path == v.path && f.mode == mode);
            if !reuse {
                if let Some(file) = open.take() {
                    file.close(remote, pid)?;
                }
                let fd = remote
                    .open("open", scratch, &v.path, mode | libc::O_CLOEXEC)
                    .map_err(|source| RestoreError::File {
                        pid,
                        what: format!("opening the file mapped at {:#x}", v.start),
                        path: v.path.clone(),
                        source,
                    })?;
                *open = Some(OpenFile {
                    path: v.path.clone(),
                    mode,
                    fd,
                });
            }
            (open.as_ref().map_or(u64::MAX, |f| f.fd), v.pgoff)
        }
        _ => {
            return Err(RestoreError::Inconsistent(format!(
                "mapping {:#x}-{:#x} has an unknown kind {}",
                v.start, v.end, v.kind
            )))
        }
    };
    let got = remote
        .syscall(
            "mmap",
            libc::SYS_mmap,
            &[v.start, len, u64::from(v.prot), int_arg(flags), fd, offset],
        )
        .map_err(|source| RestoreError::File {
            pid,
            what: format!("mapping {:#x}-{:#x}", v.start, v.end),
            path: v.path.clone(),
            source,
        })?;
    if got != v.start {
        return Err(RestoreError::Inconsistent(format!(
            "mapping {:#x}-{:#x} landed at {got:#x}",
            v.start, v.end
        )));
    }
    Ok(())
}

/// What a process keeps of the address space of the parent that created it, when the
/// parent's was built before the fork: each of its private mappings that is the parent's own
/// (same range, kind, protection, and file and offset), so that every page the two shared
/// copy-on-write before the dump is shared again, not copied. The fill compares what the child
/// inherited there with its image and writes only the pages that differ; the pages the parent
/// holds where the child's image has none are dropped ([`drop_stale`]).
#[derive(Debug, Default, Clone)]
pub struct Inherit {
    /// The mappings kept, sorted.
    pub ranges: Vec<(u64, u64)>,
    /// The runs of pages the parent's image fills, sorted.
    parent_pages: Vec<(u64, u64)>,
}

impl Inherit {
    /// What a child with image `child` keeps of a parent built from image `parent`.
    pub fn of(child: &Mm, parent: &Mm) -> Inherit {
        let mut ranges: Vec<(u64, u64)> = child
            .vmas
            .iter()
            .filter(|c| parent.vmas.iter().any(|p| cow::same_private(c, p)))
            .map(|v| (v.start, v.end))
            .collect();
        ranges.sort_unstable();
        Inherit {
            ranges,
            parent_pages: page_runs(parent),
        }
    }

    fn holds(&self, v: &Vma) -> bool {
        self.ranges.binary_search(&(v.start, v.end)).is_ok()
    }
}

/// An image's pagemap as sorted address ranges.
fn page_runs(mm: &Mm) -> Vec<(u64, u64)> {
    let mut runs: Vec<(u64, u64)> = mm
        .pagemap
        .iter()
        .map(|e| {
            let end = e.vaddr.saturating_add(e.nr_pages.saturating_mul(PAGE_SIZE));
            (e.vaddr, end)
        })
        .collect();
    runs.sort_unstable();
    runs
}

/// The parts of `ranges` where the parent has pages (`parent`) and the child has none
/// (`child`); every list sorted, each range half-open.
fn stale_runs(
    ranges: &[(u64, u64)],
    parent: &[(u64, u64)],
    child: &[(u64, u64)],
) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &r in ranges {
        let first = parent.partition_point(|p| p.1 <= r.0);
        for p in parent[first..].iter().take_while(|p| p.0 < r.1) {
            let (start, end) = (p.0.max(r.0), p.1.min(r.1));
            let mut at = start;
            let from = child.partition_point(|c| c.1 <= start);
            for c in child[from..].iter().take_while(|c| c.0 < end) {
                if c.0 > at {
                    out.push((at, c.0));
                }
                at = at.max(c.1);
            }
            if at < end {
                out.push((at, end));
            }
        }
    }
    out
}

/// Drops from an inherited mapping the pages the parent holds where the child's image has
/// none, so the child sees there what it saw before the dump: zeros, or its file's pages.
pub fn drop_stale(
    remote: &mut Remote,
    pid: i32,
    mm: &Mm,
    inherit: &Inherit,
) -> Result<(), RestoreError> {
    for (start, end) in stale_runs(&inherit.ranges, &inherit.parent_pages, &page_runs(mm)) {
        remote
            .syscall(
                "madvise",
                libc::SYS_madvise,
                &[start, end - start, libc::MADV_DONTNEED as u64],
            )
            .map_err(|source| RestoreError::File {
                pid,
                what: format!("dropping the parent's pages at {start:#x}-{end:#x}"),
                path: String::new(),
                source,
            })?;
    }
    Ok(())
}

/// Gives every mapping of the image its `madvise` advice and memory lock again, once its
/// pages are filled (the kernel's special mappings have theirs by nature).
pub fn advise(remote: &mut Remote, pid: i32, mm: &Mm) -> Result<(), RestoreError> {
    for v in &mm.vmas {
        if special_name(kind(v)).is_some() || kind(v) == VmaKind::Vsyscall {
            continue;
        }
        let len = v.end - v.start;
        for &advice in &v.advice {
            remote
                .syscall(
                    "madvise",
                    libc::SYS_madvise,
                    &[v.start, len, u64::from(advice)],
                )
                .map_err(|source| RestoreError::File {
                    pid,
                    what: format!("advising mapping {:#x}-{:#x} ({advice})", v.start, v.end),
                    path: v.path.clone(),
                    source,
                })?;
        }
        let locked = match v.lock {
            0 => continue,
            // MLOCK_ONFAULT.
            2 => remote.syscall("mlock2", libc::SYS_mlock2, &[v.start, len, 1]),
            _ => remote.syscall("mlock", libc::SYS_mlock, &[v.start, len]),
        };
        locked.map_err(|source| RestoreError::File {
            pid,
            what: format!("locking mapping {:#x}-{:#x} in memory", v.start, v.end),
            path: v.path.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Fills the pages listed in the image's pagemap, in order, from `pages`: each chunk is
/// hashed, then handed to `process_vm_writev` while it is still in the cache, straight from a
/// mapping of the pages file ([`PagesReader::next_chunk`]). In a mapping inherited from the
/// parent ([`Inherit`]), only the pages that differ from what the child holds there are
/// written; the others stay shared with the parent. The file's checksum is checked once all of
/// it has been read.
pub fn fill_pages(
    remote: &Remote,
    pid: i32,
    mm: &Mm,
    mut pages: PagesReader,
    inherit: &Inherit,
    parent: Option<&Remote>,
) -> Result<(), RestoreError> {
    let mut vmas: Vec<&Vma> = mm.vmas.iter().collect();
    vmas.sort_by_key(|v| v.start);
    let total: u64 = mm
        .pagemap
        .iter()
        .filter(|e| !e.in_parent)
        .map(|e| e.nr_pages.saturating_mul(PAGE_SIZE))
        .sum();
    if total != pages.len() {
        return Err(RestoreError::Inconsistent(format!(
            "the pagemap lists {total} bytes of pages but pages-{pid}.img holds {}",
            pages.len()
        )));
    }
    let mut now: Vec<u8> = Vec::new();
    let (mut kept, mut written) = (0u64, 0u64);
    for e in &mm.pagemap {
        let len = e.nr_pages * PAGE_SIZE;
        let end = e.vaddr.checked_add(len).ok_or_else(|| {
            RestoreError::Inconsistent(format!("pagemap entry at {:#x} overflows", e.vaddr))
        })?;
        let idx = vmas.partition_point(|v| v.end <= e.vaddr);
        let vma = vmas
            .get(idx)
            .filter(|v| v.start <= e.vaddr && end <= v.end)
            .ok_or_else(|| {
                RestoreError::Inconsistent(format!(
                    "pages at {:#x}-{end:#x} lie outside every mapping",
                    e.vaddr
                ))
            })?;
        let writable = vma.prot & libc::PROT_WRITE as u32 != 0;
        let inherited = inherit.holds(vma);
        if e.in_parent {
            if inherited {
                // The parent's pages, inherited by the fork and untouched since.
                kept += e.nr_pages;
            } else {
                copy_from_parent(remote, pid, e.vaddr, len, writable, parent, &mut now)?;
                written += e.nr_pages;
            }
            continue;
        }
        let mut off = 0u64;
        while off < len {
            super::check_interrupt()?;
            let take = usize_of(len - off).min(COPY_CHUNK);
            failpoint!("restore.fill", super::error::injected(pid, "memory pages"));
            let buf = pages.next_chunk(take)?;
            let addr = e.vaddr + off;
            if inherited {
                // Through the memory file: `process_vm_readv` pins the pages it reads, and
                // the kernel gives a task its own copy of a shared page before it pins one
                // (the unsharing of GUP), which would end the very sharing kept here.
                now.resize(take, 0);
                remote
                    .read_pages(addr, &mut now[..take])
                    .step(pid, "memory pages")?;
                let page = usize_of(PAGE_SIZE);
                let mut at = 0;
                while at < take {
                    let same = |i: usize| buf[i..i + page] == now[i..i + page];
                    if same(at) {
                        kept += 1;
                        at += page;
                        continue;
                    }
                    let mut to = at + page;
                    while to < take && !same(to) {
                        to += page;
                    }
                    write_span(remote, pid, addr + at as u64, &buf[at..to], writable)?;
                    written += ((to - at) / page) as u64;
                    at = to;
                }
            } else {
                write_span(remote, pid, addr, &buf[..take], writable)?;
                written += (take / usize_of(PAGE_SIZE)) as u64;
            }
            off += take as u64;
        }
    }
    pages.finish()?;
    debug!(pid, written, kept, "pages filled");
    Ok(())
}

/// Copies `len` bytes at `addr` from the parent's memory (`parent`, built already) into the
/// task: pages the dump recorded as the parent's, in a mapping the task did not inherit.
fn copy_from_parent(
    remote: &Remote,
    pid: i32,
    addr: u64,
    len: u64,
    writable: bool,
    parent: Option<&Remote>,
    buf: &mut Vec<u8>,
) -> Result<(), RestoreError> {
    let parent = parent.ok_or_else(|| {
        RestoreError::Inconsistent(format!(
            "the pagemap of process {pid} has pages at {addr:#x} that are its parent's, and it \
             has no parent in the dump"
        ))
    })?;
    let mut off = 0u64;
    while off < len {
        let take = usize_of(len - off).min(COPY_CHUNK);
        buf.resize(take, 0);
        parent
            .read_pages(addr + off, &mut buf[..take])
            .step(pid, "its parent's pages")?;
        write_span(remote, pid, addr + off, &buf[..take], writable)?;
        off += take as u64;
    }
    Ok(())
}

/// Writes `bytes` at `addr` of the task: with `process_vm_writev` where it may write, else
/// (and for what that left) through its memory file.
fn write_span(
    remote: &Remote,
    pid: i32,
    addr: u64,
    bytes: &[u8],
    writable: bool,
) -> Result<(), RestoreError> {
    let mut n = 0;
    if writable {
        let local = [IoSlice::new(bytes)];
        let remote_iov = [RemoteIoVec {
            base: usize_of(addr),
            len: bytes.len(),
        }];
        n = process_vm_writev(Pid::from_raw(pid), &local, &remote_iov).map_err(|source| {
            RestoreError::Step {
                pid,
                what: "memory pages",
                source: crate::sys::SysError::Call {
                    op: "process_vm_writev",
                    tid: pid,
                    source,
                },
            }
        })?;
    }
    if n < bytes.len() {
        remote
            .write_mem(addr + n as u64, &bytes[n..])
            .step(pid, "memory pages")?;
    }
    Ok(())
}

/// `struct prctl_mm_map` and `PR_SET_MM_MAP`, with the exe file.
pub fn set_mm_fields(
    remote: &mut Remote,
    pid: i32,
    mm: &Mm,
    scratch: Scratch,
) -> Result<(), RestoreError> {
    failpoint!(
        "restore.map.mm_fields",
        super::error::injected(pid, "the mm fields")
    );
    let f = mm
        .fields
        .ok_or_else(|| RestoreError::Inconsistent(format!("mm-{pid}.img has no mm fields")))?;
    let exe_fd = remote
        .open(
            "open",
            scratch,
            &mm.exe_path,
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
        .map_err(|source| RestoreError::File {
            pid,
            what: "opening the executable".into(),
            path: mm.exe_path.clone(),
            source,
        })?;
    // The auxv up to and including its AT_NULL pair.
    let mut auxv: Vec<u64> = Vec::new();
    for pair in mm.auxv.chunks_exact(2) {
        auxv.extend_from_slice(pair);
        if pair[0] == 0 {
            break;
        }
    }
    let auxv_bytes: Vec<u8> = auxv.iter().flat_map(|w| w.to_ne_bytes()).collect();
    if auxv_bytes.len() > 1024 {
        return Err(RestoreError::Inconsistent(format!(
            "mm-{pid}.img has an auxv of {} bytes",
            auxv_bytes.len()
        )));
    }
    let auxv_addr = scratch.addr + 2048;
    remote
        .write_mem(auxv_addr, &auxv_bytes)
        .step(pid, "the auxv")?;
    let mut map = Vec::with_capacity(104);
    for w in [
        f.start_code,
        f.end_code,
        f.start_data,
        f.end_data,
        f.start_brk,
        f.brk,
        f.start_stack,
        f.arg_start,
        f.arg_end,
        f.env_start,
        f.env_end,
        auxv_addr,
    ] {
        map.extend_from_slice(&w.to_ne_bytes());
    }
    // At most 1024 bytes (checked above), and a descriptor number: both fit a u32.
    let auxv_size = u32::try_from(auxv_bytes.len()).unwrap_or(u32::MAX);
    let exe_fd_u32 = u32::try_from(exe_fd).unwrap_or(u32::MAX);
    map.extend_from_slice(&auxv_size.to_ne_bytes());
    map.extend_from_slice(&exe_fd_u32.to_ne_bytes());
    remote
        .write_mem(scratch.addr + 3072, &map)
        .step(pid, "the mm fields")?;
    const PR_SET_MM: u64 = 35;
    const PR_SET_MM_MAP: u64 = 14;
    let r = remote.syscall(
        "prctl(PR_SET_MM_MAP)",
        libc::SYS_prctl,
        &[
            PR_SET_MM,
            PR_SET_MM_MAP,
            scratch.addr + 3072,
            map.len() as u64,
            0,
        ],
    );
    remote
        .syscall("close", libc::SYS_close, &[exe_fd])
        .step(pid, "the exe link")?;
    r.step(pid, "the mm fields (PR_SET_MM_MAP)")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmap_runs_join_neighbours_and_spare_what_is_kept() {
        let current = [
            (0x1000, 0x2000),
            (0x3000, 0x5000),
            (0x5000, 0x6000),
            (0x8000, 0x9000),
        ];
        // Nothing kept: one run over everything, holes included.
        assert_eq!(unmap_runs(&current, &[]), [(0x1000, 0x9000)]);
        // A kept range splits the runs, and only its own pages of a mapping stay.
        assert_eq!(
            unmap_runs(&current, &[(0x5800, 0x5900)]),
            [(0x1000, 0x5800), (0x5900, 0x9000)]
        );
        assert_eq!(
            unmap_runs(&current, &[(0x3000, 0x6000)]),
            [(0x1000, 0x2000), (0x8000, 0x9000)]
        );
        assert_eq!(unmap_runs(&current, &[(0x1000, 0x9000)]), []);
        assert_eq!(unmap_runs(&[], &[(0x1000, 0x2000)]), []);
    }

    #[test]
    fn stale_pages_are_the_parents_where_the_child_has_none() {
        let ranges = [(0x10000, 0x20000), (0x30000, 0x40000)];
        let parent = [(0x8000, 0x12000), (0x14000, 0x18000), (0x30000, 0x31000)];
        let child = [(0x11000, 0x15000), (0x16000, 0x17000)];
        // Clipped to the inherited ranges, less the child's own pages.
        assert_eq!(
            stale_runs(&ranges, &parent, &child),
            [
                (0x10000, 0x11000),
                (0x15000, 0x16000),
                (0x17000, 0x18000),
                (0x30000, 0x31000)
            ]
        );
        assert_eq!(stale_runs(&ranges, &[], &child), []);
        assert_eq!(stale_runs(&[], &parent, &child), []);
    }

    #[test]
    fn a_child_inherits_only_its_parents_own_private_mappings() {
        use crate::image::cow::tests::vma;
        let rw = (libc::PROT_READ | libc::PROT_WRITE) as u32;
        let parent = Mm {
            vmas: vec![
                vma(0x1000, VmaKind::AnonPrivate, rw, ""),
                vma(0x2000, VmaKind::AnonPrivate, rw, ""),
                vma(0x3000, VmaKind::FilePrivate, rw, "/lib/a.so"),
                vma(0x4000, VmaKind::AnonShared, rw, ""),
                vma(0x5000, VmaKind::FilePrivate, rw, "/lib/a.so"),
            ],
            ..Mm::default()
        };
        let child = Mm {
            vmas: vec![
                vma(0x1000, VmaKind::AnonPrivate, rw, ""),
                // Other protection, file, kind or range: made afresh.
                vma(0x2000, VmaKind::AnonPrivate, libc::PROT_READ as u32, ""),
                vma(0x3000, VmaKind::FilePrivate, rw, "/lib/a.so"),
                vma(0x4000, VmaKind::AnonShared, rw, ""),
                vma(0x5000, VmaKind::FilePrivate, rw, "/lib/b.so"),
                vma(0x6000, VmaKind::AnonPrivate, rw, ""),
            ],
            ..Mm::default()
        };
        assert_eq!(
            Inherit::of(&child, &parent).ranges,
            [(0x1000, 0x2000), (0x3000, 0x4000)]
        );
    }

    #[test]
    fn hole_avoids_busy_ranges() {
        let busy = [(0x2000_0000_0000 - 0x1000, 0x2000_0001_0000)];
        let h = find_hole(0x5000, &busy).unwrap();
        assert!(!overlaps((h, h + 0x5000), busy[0]));
        assert_eq!(find_hole(0x1000, &[]), Some(0x2000_0000_0000));
    }
}
