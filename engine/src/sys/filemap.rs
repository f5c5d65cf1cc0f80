//! A file mapped into the engine's memory, read in place: a restore hands the pages image's
//! bytes to `process_vm_writev` straight from the file's pages, with no copy into a buffer.

use std::fs::File;
use std::io;
use std::ops::Range;
use std::os::fd::AsRawFd;
use std::ptr::NonNull;

use super::PAGE_SIZE;

/// The first `len` bytes of a file, mapped read-only; unmapped on drop.
///
/// The file must not shrink while it is mapped: the engine would fault (SIGBUS) on the bytes
/// past its new end. The engine maps only image files, which a restore reads only when their
/// owner is the caller or root and no one else may write them (`image::Trust`), and whose
/// size it has just checked.
#[derive(Debug)]
pub struct FileMap {
    ptr: NonNull<u8>,
    len: usize,
}

impl FileMap {
    /// Maps the first `len` bytes of `file` (open for reading, at least `len` bytes long).
    /// `len` must not be zero.
    pub fn new(file: &File, len: usize) -> io::Result<FileMap> {
        if len == 0 {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // SAFETY: a new mapping at an address the kernel picks (no MAP_FIXED) replaces no
        // memory of the engine; the descriptor is valid for the call; the result is checked
        // against MAP_FAILED before use.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ,
                libc::MAP_PRIVATE,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let ptr = NonNull::new(ptr.cast::<u8>()).ok_or(io::ErrorKind::InvalidData)?;
        Ok(FileMap { ptr, len })
    }

    /// The bytes of `range` (clamped to the mapping), their pages made present first in one
    /// call (`MADV_POPULATE_READ`) rather than one fault each as they are read; a kernel
    /// without it (before 5.14) leaves them to the faults.
    pub fn populated(&self, range: Range<usize>) -> &[u8] {
        let end = range.end.min(self.len);
        let start = range.start.min(end);
        let aligned = start & !(super::usize_of(PAGE_SIZE) - 1);
        if end > aligned {
            // SAFETY: the range lies inside the mapping (page-aligned start, clamped end);
            // populating only makes its pages present and changes no memory.
            let _ = unsafe {
                libc::madvise(
                    self.ptr.as_ptr().add(aligned).cast(),
                    end - aligned,
                    libc::MADV_POPULATE_READ,
                )
            };
        }
        // SAFETY: `ptr` is a live mapping of `len` readable bytes owned by `self` until it is
        // dropped, which the returned borrow outlives not; `start..end` lies inside it. The
        // mapping is private and read-only: nothing of the engine writes it, and the file
        // behind it is one only the engine's caller may write (the type's contract).
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr().add(start), end - start) }
    }
}

impl Drop for FileMap {
    fn drop(&mut self) {
        // SAFETY: exactly the mapping `new` made; no slice of it outlives `self` (they borrow
        // it).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
