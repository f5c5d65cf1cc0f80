//! `/proc/PID/pagemap`: which pages of a range are present, swapped or file-backed.

use super::ProcError;
use std::fs::File;
use std::os::unix::fs::FileExt;

const PM_PRESENT: u64 = 1 << 63;
const PM_SWAP: u64 = 1 << 62;
const PM_FILE: u64 = 1 << 61;

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

    /// Runs `(vaddr, nr_pages)` of the pages of `[start, end)` that hold data
    /// of their own: present or swapped, and for `anon_only` not the file's
    /// own page cache (a private file mapping's unmodified pages).
    pub fn data_runs(
        &self,
        start: u64,
        end: u64,
        anon_only: bool,
    ) -> Result<Vec<(u64, u64)>, ProcError> {
        let mut runs: Vec<(u64, u64)> = Vec::new();
        let pages = (end - start) / 4096;
        let mut buf = vec![0u8; 8 * 65536];
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
                    match runs.last_mut() {
                        Some((a, len)) if *a + *len * 4096 == addr => *len += 1,
                        _ => runs.push((addr, 1)),
                    }
                }
            }
            done += n;
        }
        Ok(runs)
    }
}
