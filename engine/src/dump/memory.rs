//! The address space of a dumped process: its mappings and the pages that hold data.

use super::DumpError;
use crate::image::cow;
use crate::image::schema::{PagemapEntry, Vma, VmaKind};
use crate::image::PagesWriter;
use crate::procfs::{DataRun, MapEntry, PagemapReader, VmFlags};
use crate::sys::{usize_of, Remote, PAGE_SIZE};
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;
use std::collections::HashMap;
use std::io::IoSliceMut;

/// Pages are copied through a buffer of this size.
const COPY_CHUNK: usize = 1 << 20;
/// Addresses at or above this are the kernel's (vsyscall).
const USER_END: u64 = 0x7fff_ffff_f000;

/// What kind of mapping a maps line is, or why it cannot be dumped.
pub fn classify(pid: i32, m: &MapEntry) -> Result<Option<VmaKind>, DumpError> {
    let unsupported = |kind: &'static str| DumpError::UnsupportedMapping {
        pid,
        start: m.start,
        end: m.end,
        path: m.path.clone(),
        kind,
    };
    let kind = match m.path.as_str() {
        "[vsyscall]" => return Ok(None),
        "[vdso]" => VmaKind::Vdso,
        "[vvar]" => VmaKind::Vvar,
        "[vvar_vclock]" => VmaKind::VvarVclock,
        _ if m.start >= USER_END => return Ok(None),
        "/dev/zero (deleted)" | "/dev/zero" if m.shared() => VmaKind::AnonShared,
        p if p.starts_with("/SYSV") => return Err(unsupported("System V shared memory")),
        p if p.starts_with("/memfd:") => return Err(unsupported("a memfd mapping")),
        p if p.starts_with("/[aio]") => return Err(unsupported("an AIO ring (io_setup)")),
        p if p.starts_with("/anon_hugepage") => {
            return Err(unsupported("a shared anonymous hugetlb mapping"))
        }
        p if p.starts_with("/secretmem") => return Err(unsupported("a memfd_secret mapping")),
        p if p.ends_with(" (deleted)") => {
            // Kept with its " (deleted)"; the file table records the file
            // (`FileTableBuilder::add_mappings`).
            let link = format!("/proc/{pid}/map_files/{:x}-{:x}", m.start, m.end);
            if !std::fs::metadata(&link).is_ok_and(|md| md.is_file()) {
                return Err(unsupported(
                    "a mapping of a deleted file that is not a regular file",
                ));
            }
            let exe = crate::procfs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
            if exe == p {
                return Err(unsupported("a mapping of its deleted executable"));
            }
            let holder = format!("mapping {:#x}-{:#x}", m.start, m.end);
            super::files::deleted_file(pid, &holder, &link, p)?;
            if m.shared() {
                VmaKind::FileShared
            } else {
                VmaKind::FilePrivate
            }
        }
        p if p.starts_with('/') => {
            if m.shared() {
                VmaKind::FileShared
            } else {
                VmaKind::FilePrivate
            }
        }
        p if p.starts_with("[anon_shmem:") => VmaKind::AnonShared,
        "" | "[heap]" | "[stack]" => {
            if m.shared() {
                VmaKind::AnonShared
            } else {
                VmaKind::AnonPrivate
            }
        }
        p if p.starts_with("[anon:") || p.starts_with("[stack:") => VmaKind::AnonPrivate,
        _ => return Err(unsupported("a special mapping")),
    };
    Ok(Some(kind))
}

/// `VmFlags` codes of `/proc/PID/smaps` that `madvise` sets, with the advice that sets them.
const ADVICE: &[(&str, i32)] = &[
    ("hg", libc::MADV_HUGEPAGE),
    ("nh", libc::MADV_NOHUGEPAGE),
    ("dc", libc::MADV_DONTFORK),
    ("wf", libc::MADV_WIPEONFORK),
    ("dd", libc::MADV_DONTDUMP),
    ("mg", libc::MADV_MERGEABLE),
    ("sr", libc::MADV_SEQUENTIAL),
    ("rr", libc::MADV_RANDOM),
];

/// The advice, lock and may-write bit of one mapping's `VmFlags`.
fn advice_and_lock(flags: &[String]) -> (Vec<u32>, u32, bool) {
    let has = |code: &str| flags.iter().any(|f| f == code);
    let advice = ADVICE
        .iter()
        .filter(|(code, _)| has(code))
        // MADV_* values are small and positive.
        .map(|&(_, advice)| u32::try_from(advice).unwrap_or(0))
        .collect();
    let lock = if has("lf") {
        2
    } else if has("lo") {
        1
    } else {
        0
    };
    (advice, lock, has("mw"))
}

/// The mappings of a process as image entries, with the advice and locks of `flags`
/// (`/proc/PID/smaps`).
pub fn vmas(pid: i32, maps: &[MapEntry], flags: &[VmFlags]) -> Result<Vec<Vma>, DumpError> {
    let mut out = Vec::with_capacity(maps.len());
    for m in maps {
        let Some(kind) = classify(pid, m)? else {
            continue;
        };
        let file = matches!(kind, VmaKind::FilePrivate | VmaKind::FileShared);
        let special = matches!(
            kind,
            VmaKind::Vdso | VmaKind::Vvar | VmaKind::VvarVclock | VmaKind::Vsyscall
        );
        let (advice, lock, may_write) = match flags.iter().find(|f| f.start == m.start) {
            // The kernel's own mappings carry flags by nature; it recreates them with them.
            Some(f) if !special => advice_and_lock(&f.flags),
            _ => (Vec::new(), 0, false),
        };
        out.push(Vma {
            start: m.start,
            end: m.end,
            prot: m.prot(),
            kind: kind as i32,
            path: m.path.clone(),
            pgoff: if file { m.offset } else { 0 },
            growsdown: m.path == "[stack]",
            shmem_id: if kind == VmaKind::AnonShared {
                m.inode
            } else {
                0
            },
            advice,
            lock,
            may_write,
            deleted_file: 0,
        });
    }
    Ok(out)
}

/// What a dumped process's children may find of it: its mappings, and the frame number of
/// each of its pages that may be shared. A child's page with the same frame at the same
/// address, in a mapping alike by [`cow::same_private`], is recorded as its parent's.
#[derive(Debug, Default)]
pub struct SharedFrames {
    vmas: Vec<Vma>,
    frames: HashMap<u64, u64>,
}

/// Writes the pages of `vmas` that hold data of their own to `pages` and returns their
/// pagemap, and (when `record`: it has children) what its children may find of it. A page
/// shared with the parent
/// (`parent`) is recorded as the parent's, with no data. Pages that may be shared are read
/// through the memory file: `process_vm_readv` pins what it reads, and the kernel first gives
/// the process its own copy of a shared anonymous page, ending the sharing (which matters to a
/// process that goes on running).
pub fn dump_pages(
    pid: i32,
    remote: &Remote,
    vmas: &[Vma],
    pages: &mut PagesWriter<'_>,
    parent: Option<&SharedFrames>,
    record: bool,
) -> Result<(Vec<PagemapEntry>, Option<SharedFrames>), DumpError> {
    failpoint!("dump.proc.pagemap", |source| crate::procfs::ProcError::Io {
        path: format!("/proc/{pid}/pagemap"),
        source,
    });
    let pagemap = PagemapReader::open(pid)?;
    let mut entries: Vec<PagemapEntry> = Vec::new();
    let mut own = record.then(|| SharedFrames {
        vmas: vmas.to_vec(),
        frames: HashMap::new(),
    });
    let mut buf = vec![0u8; COPY_CHUNK];
    for vma in vmas {
        let kind = VmaKind::try_from(vma.kind).unwrap_or(VmaKind::Unspecified);
        let anon_only = match kind {
            VmaKind::AnonPrivate | VmaKind::AnonShared => false,
            VmaKind::FilePrivate => true,
            _ => continue,
        };
        let runs = pagemap.data_runs(vma.start, vma.end, anon_only)?;
        let readable = vma.prot & libc::PROT_READ as u32 != 0;
        let alike = parent.filter(|p| p.vmas.iter().any(|v| cow::same_private(vma, v)));
        // Copy the runs through the buffer, many runs per process_vm_readv; pages that may
        // be shared copy-on-write through the memory file, which does not unshare them.
        let mut batch: Vec<(usize, RemoteIoVec)> = Vec::new();
        let mut filled = 0usize;
        // An entry lies in one mapping: runs join only those of this one.
        let first = entries.len();
        for r in &runs {
            for (addr, n, in_parent) in pieces(r, alike, own.as_mut().map(|o| &mut o.frames)) {
                match entries[first..].last_mut() {
                    Some(e)
                        if e.vaddr + e.nr_pages * PAGE_SIZE == addr && e.in_parent == in_parent =>
                    {
                        e.nr_pages += n
                    }
                    _ => entries.push(PagemapEntry {
                        vaddr: addr,
                        nr_pages: n,
                        in_parent,
                    }),
                }
                if in_parent {
                    continue;
                }
                let mut off = 0u64;
                let len = n * PAGE_SIZE;
                while off < len {
                    let take = usize_of(len - off).min(COPY_CHUNK - filled);
                    if readable && !r.maybe_shared {
                        let at = RemoteIoVec {
                            base: usize_of(addr + off),
                            len: take,
                        };
                        batch.push((filled, at));
                    } else {
                        remote.read_pages(addr + off, &mut buf[filled..filled + take])?;
                    }
                    filled += take;
                    off += take as u64;
                    if filled == COPY_CHUNK || batch.len() >= 512 {
                        super::check_interrupt()?;
                        flush(pid, remote, &mut batch, &mut buf[..filled])?;
                        pages.write_all(&buf[..filled])?;
                        filled = 0;
                    }
                }
            }
        }
        if filled > 0 {
            flush(pid, remote, &mut batch, &mut buf[..filled])?;
            pages.write_all(&buf[..filled])?;
        }
    }
    Ok((entries, own))
}

/// Run `r` cut where its pages turn from the parent's to the process's own or back:
/// `(address, pages, the parent's)`. A page is the parent's when the parent (`alike`: its
/// mapping there is alike) has the same frame at the same address. Records the frame of every
/// page that may be shared in `frames` (if any), for the children.
fn pieces(
    r: &DataRun,
    alike: Option<&SharedFrames>,
    mut frames: Option<&mut HashMap<u64, u64>>,
) -> Vec<(u64, u64, bool)> {
    if !r.maybe_shared {
        return vec![(r.addr, r.pages, false)];
    }
    let mut out: Vec<(u64, u64, bool)> = Vec::new();
    for (i, &pfn) in r.pfns.iter().enumerate() {
        let addr = r.addr + i as u64 * PAGE_SIZE;
        if let (Some(frames), true) = (frames.as_deref_mut(), pfn != 0) {
            frames.insert(addr, pfn);
        }
        let theirs = pfn != 0 && alike.is_some_and(|p| p.frames.get(&addr) == Some(&pfn));
        match out.last_mut() {
            Some((_, n, t)) if *t == theirs => *n += 1,
            _ => out.push((addr, 1, theirs)),
        }
    }
    out
}

/// Reads the batched remote ranges into `buf`, each at its offset.
fn flush(
    pid: i32,
    remote: &Remote,
    batch: &mut Vec<(usize, RemoteIoVec)>,
    buf: &mut [u8],
) -> Result<(), DumpError> {
    if batch.is_empty() {
        return Ok(());
    }
    failpoint!("dump.pages", |source| crate::sys::SysError::Io {
        what: format!("process_vm_readv of task {pid}"),
        source,
    });
    let want: usize = batch.iter().map(|(_, r)| r.len).sum();
    let remote_iov: Vec<RemoteIoVec> = batch.iter().map(|&(_, r)| r).collect();
    let got = {
        // The batch's offsets rise and its ranges do not overlap in `buf`.
        let mut local: Vec<IoSliceMut> = Vec::with_capacity(batch.len());
        let mut rest: &mut [u8] = &mut *buf;
        let mut at = 0;
        for &(off, r) in batch.iter() {
            let tail = std::mem::take(&mut rest);
            let (_, tail) = tail.split_at_mut(off - at);
            let (seg, tail) = tail.split_at_mut(r.len);
            local.push(IoSliceMut::new(seg));
            rest = tail;
            at = off + r.len;
        }
        process_vm_readv(Pid::from_raw(pid), &mut local, &remote_iov).map_err(|source| {
            crate::sys::SysError::Call {
                op: "process_vm_readv",
                tid: pid,
                source,
            }
        })?
    };
    if got != want {
        // Partial read (a page vanished under us): fall back range by range.
        for &(off, r) in batch.iter() {
            remote.read_pages(r.base as u64, &mut buf[off..off + r.len])?;
        }
    }
    batch.clear();
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advice_and_locks_from_vmflags() {
        let f = |s: &str| s.split(' ').map(str::to_string).collect::<Vec<_>>();
        assert_eq!(advice_and_lock(&f("rd wr mr mw me ac")), (vec![], 0, true));
        let (advice, lock, mw) = advice_and_lock(&f("rd mr me nh dc lo"));
        assert_eq!(
            advice,
            [libc::MADV_NOHUGEPAGE as u32, libc::MADV_DONTFORK as u32]
        );
        assert_eq!((lock, mw), (1, false));
        assert_eq!(advice_and_lock(&f("rd lo lf")).1, 2);
    }
}
