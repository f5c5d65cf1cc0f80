//! `/proc/PID/pagemap`: which pages of a range are present, swapped or file-backed.

use super::ProcError;
use std::fs::File;
use std::os::unix::fs::FileExt;

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAP: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;
const PM_MMAP_EXCLUSIVE: u64 = 1 << 56;
/// The page frame number: bits 0-54, zero unless the reader has `CAP_SYS_ADMIN`.
const PM_PFN: u64 = (1 << 55) - 1;

/// A run of pages with data of their own ([`PagemapReader::data_runs`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataRun {
    pub addr: u64,
    pub pages: u64,
    /// Anonymous pages that may be shared with another process (copy-on-write after a
    /// fork: mapped elsewhere too, or swapped). Reading one through `process_vm_readv`
    /// pins it, and the kernel first gives the process its own copy, ending the sharing;
    /// a reader that must not change the process reads these through its memory file.
    pub maybe_shared: bool,
    /// For a run of pages that may be shared, each page's frame number (0 where the page is
    /// not present or the reader may not see frame numbers); empty for other runs.
    pub pfns: Vec<u64>,
}

/// Reads pagemap entries of one process.
pub struct PagemapReader {
    file: File,
    path: String,
}

impl PagemapReader {
    pub fn open(pid: i32) -> Result<PagemapReader, ProcError> {
        let path = format!("/proc/{pid}/pagemap");
        let file = File::open(&path).map_err(|source| ProcError::Io {
            path: path.clone(),
            source,
        })?;
        Ok(PagemapReader { file, path })
    }

    /// Runs of the pages of `[start, end)` that hold data of their own: present or
    /// swapped, and for `anon_only` not the file's own page cache (a private file mapping's
    /// unmodified pages). A run holds pages that are all [`DataRun::maybe_shared`] or all not.
    pub fn data_runs(
        &self,
        start: u64,
        end: u64,
        anon_only: bool,
    ) -> Result<Vec<DataRun>, ProcError> {
        let mut runs: Vec<DataRun> = Vec::new();
        let pages = (end - start) / 4096;
        // Sized to the range: a small mapping must not cost a 512 KiB buffer.
        let mut buf = vec![0u8; crate::sys::usize_of(8 * pages.min(65536))];
        let mut done = 0u64;
        while done < pages {
            let n = (pages - done).min(65536);
            let bytes = &mut buf[..crate::sys::usize_of(n * 8)];
            self.file
                .read_exact_at(bytes, (start / 4096 + done) * 8)
                .map_err(|source| ProcError::Io {
                    path: self.path.clone(),
                    source,
                })?;
            for (i, c) in bytes.chunks_exact(8).enumerate() {
                let mut w = [0u8; 8];
                w.copy_from_slice(c);
                let e = u64::from_ne_bytes(w);
                let has_data = if anon_only {
                    (e & PM_PRESENT != 0 && e & PM_FILE == 0) || e & PM_SWAP != 0
                } else {
                    e & (PM_PRESENT | PM_SWAP) != 0
                };
                if has_data {
                    let addr = start + (done + i as u64) * 4096;
                    let maybe_shared =
                        e & PM_FILE == 0 && (e & PM_PRESENT == 0 || e & PM_MMAP_EXCLUSIVE == 0);
                    let pfn = if e & PM_PRESENT != 0 { e & PM_PFN } else { 0 };
                    match runs.last_mut() {
                        Some(r)
                            if r.addr + r.pages * 4096 == addr
                                && r.maybe_shared == maybe_shared =>
                        {
                            r.pages += 1;
                            if maybe_shared {
                                r.pfns.push(pfn);
                            }
                        }
                        _ => runs.push(DataRun {
                            addr,
                            pages: 1,
                            maybe_shared,
                            pfns: if maybe_shared { vec![pfn] } else { Vec::new() },
                        }),
                    }
                }
            }
            done += n;
        }
        Ok(runs)
    }
}
