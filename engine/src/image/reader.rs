//! `ImageDirReader`: opens a dump directory, checks it against its inventory, reads its files.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

use super::header::{self, HEADER_LEN, MAX_PREFIX_LEN};
use super::schema::{ImageFileEntry, Inventory, PsTree};
use super::{
    pages_name, parse_name, FileKind, ImageError, Refusal, FORMAT_VERSION, INVENTORY, PAGE_SIZE,
    PSTREE,
};
use crate::sys::FileMap;

/// Files are hashed through a buffer of this size.
const HASH_CHUNK: usize = 64 << 10;

/// Whose images a reader accepts.
///
/// A restore acts on what the images say with the caller's privileges (root's, usually): the
/// pids it takes, the files it opens, the memory and registers it gives a process. So images
/// that another user could have written are refused unless the caller says otherwise.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Trust {
    /// The images directory and every file read from it must be owned by the caller's
    /// effective uid or by root, and writable by neither group nor others; an image file must
    /// not be a symbolic link.
    #[default]
    OwnerOnly,
    /// Any readable images (`--allow-untrusted-images`): the caller vouches for their writer.
    Anyone,
}

/// A dump directory whose inventory has been read and whose files have been checked against
/// it (present, same size, and for message files the same checksum), and, unless told
/// otherwise ([`Trust`]), that only the caller or root could have written.
#[derive(Debug)]
pub struct ImageDirReader {
    dir: PathBuf,
    trust: Trust,
    inventory: Inventory,
    /// File name -> index in `inventory.files`.
    entries: HashMap<String, usize>,
}

impl ImageDirReader {
    /// Reads and validates inventory.img (missing => [`ImageError::Incomplete`]), then checks
    /// every listed file: exists, same size, and for message files the xxh3 too. Pages files:
    /// size only here (their hash is checked while streaming, see [`PagesReader`]), because
    /// they can be GiBs.
    pub fn open(dir: &Path) -> Result<Self, ImageError> {
        ImageDirReader::open_with(dir, Trust::default())
    }

    /// [`Self::open`], accepting images as `trust` says: the directory and every file opened,
    /// now and later, is checked on the opened descriptor.
    pub fn open_with(dir: &Path, trust: Trust) -> Result<Self, ImageError> {
        // O_DIRECTORY: anything else (a FIFO would block) fails here, as not a directory.
        let meta = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECTORY | libc::O_NONBLOCK)
            .open(dir)
            .and_then(|d| d.metadata())
            .map_err(|source| ImageError::Io {
                path: dir.to_owned(),
                op: "open the images directory",
                source,
            })?;
        check_trust(dir, &meta, trust)?;
        if !meta.is_dir() {
            return Err(ImageError::Io {
                path: dir.to_owned(),
                op: "open the images directory",
                source: io::ErrorKind::NotADirectory.into(),
            });
        }
        let inventory_path = dir.join(INVENTORY);
        let inventory: Inventory =
            match read_message_file(&inventory_path, FileKind::Inventory, None, trust) {
                Err(ImageError::Missing { path }) => return Err(ImageError::Incomplete { path }),
                other => other?,
            };
        if inventory.format_version != FORMAT_VERSION {
            return Err(ImageError::UnsupportedVersion {
                path: inventory_path,
                found: inventory.format_version,
                supported: FORMAT_VERSION,
            });
        }

        let mut entries = HashMap::with_capacity(inventory.files.len());
        for (index, entry) in inventory.files.iter().enumerate() {
            let bad_name = |reason| ImageError::BadFileName {
                path: inventory_path.clone(),
                name: entry.name.clone(),
                reason,
            };
            let parsed = parse_name(&entry.name).map_err(bad_name)?;
            if parsed.kind == FileKind::Inventory {
                return Err(bad_name("the inventory cannot list itself"));
            }
            if entries.insert(entry.name.clone(), index).is_some() {
                return Err(ImageError::DuplicateFile {
                    path: inventory_path,
                    name: entry.name.clone(),
                });
            }
        }

        let mut buf = vec![0u8; HASH_CHUNK];
        for entry in &inventory.files {
            let path = dir.join(&entry.name);
            let (file, _) = open_image(&path, Some(entry), trust)?;
            if parse_name(&entry.name).map(|p| p.kind) != Ok(FileKind::Pages) {
                let found = hash_file(&path, file, entry.size, &mut buf)?;
                if found != entry.xxh3 {
                    return Err(ImageError::Checksum {
                        path,
                        expected: entry.xxh3,
                        found,
                    });
                }
            }
        }
        tracing::debug!(
            dir = %dir.display(),
            files = inventory.files.len(),
            "dump opened and checked"
        );
        Ok(ImageDirReader {
            dir: dir.to_owned(),
            trust,
            inventory,
            entries,
        })
    }

    /// The images directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The inventory, as read and checked by [`Self::open`].
    pub fn inventory(&self) -> &Inventory {
        &self.inventory
    }

    /// Checks header (magic, version, kind), bounds the length, decodes, rejects trailing
    /// bytes. The file must be listed in the inventory and is checked against it again (size
    /// and checksum), so a file changed since [`Self::open`] is caught too.
    pub fn read_message<M: prost::Message + Default>(
        &self,
        name: &str,
        kind: FileKind,
    ) -> Result<M, ImageError> {
        if name == INVENTORY {
            return read_message_file(&self.dir.join(name), kind, None, self.trust);
        }
        let entry = self.entry(name)?;
        read_message_file(&self.dir.join(name), kind, Some(entry), self.trust)
    }

    /// Reads `pstree.img` and checks it is a tree the restore can rebuild, in the order it
    /// rebuilds it: at least one process, the inventory's root first, every parent listed
    /// before its children, and each process's first thread its leader.
    pub fn process_tree(&self) -> Result<PsTree, ImageError> {
        let pstree: PsTree = self.read_message(PSTREE, FileKind::PsTree)?;
        check_process_tree(&pstree, self.inventory.root_pid).map_err(|problem| {
            ImageError::ProcessTree {
                path: self.dir.join(PSTREE),
                problem,
            }
        })?;
        Ok(pstree)
    }

    /// Opens `pages-<pid>.img` for streaming; its checksum is verified by
    /// [`PagesReader::finish`].
    pub fn pages(&self, pid: u32) -> Result<PagesReader, ImageError> {
        let name = pages_name(pid);
        let entry = self.entry(&name)?;
        let path = self.dir.join(&name);
        let (mut file, size) = open_image(&path, Some(entry), self.trust)?;
        let mut head = [0u8; HEADER_LEN];
        let n = read_up_to(&path, &mut file, &mut head)?;
        header::check(&path, &head[..n], size, FileKind::Pages)?;
        let len = size.saturating_sub(HEADER_LEN as u64);
        if len % PAGE_SIZE != 0 {
            return Err(ImageError::PartialPage {
                path,
                len,
                page_size: PAGE_SIZE,
            });
        }
        let mut hasher = Box::new(Xxh3::new());
        hasher.update(&head);
        Ok(PagesReader {
            path,
            file,
            len,
            remaining: len,
            hasher,
            expected: entry.xxh3,
            map: None,
            map_tried: false,
            buf: Vec::new(),
        })
    }

    fn entry(&self, name: &str) -> Result<&ImageFileEntry, ImageError> {
        self.entries
            .get(name)
            .and_then(|&index| self.inventory.files.get(index))
            .ok_or_else(|| ImageError::NotListed {
                path: self.dir.join(name),
            })
    }
}

/// Streams the page data of one process, hashing it as it goes.
pub struct PagesReader {
    path: PathBuf,
    file: File,
    len: u64,
    remaining: u64,
    hasher: Box<Xxh3>,
    expected: u64,
    /// The whole file, mapped by the first [`PagesReader::next_chunk`] (`map_tried`), unless
    /// it could not be: then `buf` holds each chunk.
    map: Option<FileMap>,
    map_tried: bool,
    buf: Vec<u8>,
}

impl std::fmt::Debug for PagesReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagesReader")
            .field("path", &self.path)
            .field("len", &self.len)
            .field("remaining", &self.remaining)
            .finish_non_exhaustive()
    }
}

impl PagesReader {
    /// Bytes of page data (a multiple of [`PAGE_SIZE`]).
    pub fn len(&self) -> u64 {
        self.len
    }

    /// There is no page data at all.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills `buf` with the next page data; asking for more than is left is
    /// [`ImageError::Truncated`] (the pagemap and the pages file disagree).
    pub fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), ImageError> {
        let wanted = buf.len() as u64;
        let truncated = |path: &Path| ImageError::Truncated {
            path: path.to_owned(),
            what: "page data",
            needed: HEADER_LEN as u64 + (self.len - self.remaining) + wanted,
            available: HEADER_LEN as u64 + self.len,
        };
        if wanted > self.remaining {
            return Err(truncated(&self.path));
        }
        let at = HEADER_LEN as u64 + (self.len - self.remaining);
        if let Err(source) = self.file.read_exact_at(buf, at) {
            return Err(if source.kind() == io::ErrorKind::UnexpectedEof {
                truncated(&self.path)
            } else {
                ImageError::Io {
                    path: self.path.clone(),
                    op: "read",
                    source,
                }
            });
        }
        self.hasher.update(buf);
        self.remaining -= wanted;
        Ok(())
    }

    /// The next `len` bytes of page data, hashed, as [`Self::read_exact`] reads them (so the
    /// two may be mixed): in place, from a mapping of the file made on the first call, with
    /// no copy (the caller hands them on, to `process_vm_writev`, straight from the file's
    /// pages); or, when the file cannot be mapped, read into a buffer of the reader's.
    pub fn next_chunk(&mut self, len: usize) -> Result<&[u8], ImageError> {
        let wanted = len as u64;
        if wanted > self.remaining {
            return Err(ImageError::Truncated {
                path: self.path.clone(),
                what: "page data",
                needed: HEADER_LEN as u64 + (self.len - self.remaining) + wanted,
                available: HEADER_LEN as u64 + self.len,
            });
        }
        if !self.map_tried {
            self.map_tried = true;
            let size = crate::sys::usize_of(HEADER_LEN as u64 + self.len);
            match FileMap::new(&self.file, size) {
                Ok(map) => self.map = Some(map),
                Err(e) => {
                    tracing::debug!(path = %self.path.display(), error = %e, "pages file not mapped, read instead");
                }
            }
        }
        if self.map.is_none() {
            let mut buf = std::mem::take(&mut self.buf);
            if buf.len() < len {
                buf.resize(len, 0);
            }
            self.read_exact(&mut buf[..len])?;
            self.buf = buf;
            return Ok(&self.buf[..len]);
        }
        let Some(map) = &self.map else {
            return Err(ImageError::Io {
                path: self.path.clone(),
                op: "map",
                source: io::ErrorKind::Other.into(),
            });
        };
        let at = HEADER_LEN + crate::sys::usize_of(self.len - self.remaining);
        let bytes = map.populated(at..at + len);
        if bytes.len() != len {
            return Err(ImageError::Truncated {
                path: self.path.clone(),
                what: "page data",
                needed: (at + len) as u64,
                available: (at + bytes.len()) as u64,
            });
        }
        self.hasher.update(bytes);
        self.remaining -= wanted;
        Ok(bytes)
    }

    /// Checks that all page data was read and that its xxh3 matches the inventory.
    pub fn finish(self) -> Result<(), ImageError> {
        if self.remaining != 0 {
            return Err(ImageError::TrailingData {
                path: self.path,
                what: "the pages read (the pagemap lists fewer pages than the file holds)",
                bytes: self.remaining,
            });
        }
        let found = self.hasher.digest();
        if found != self.expected {
            return Err(ImageError::Checksum {
                path: self.path,
                expected: self.expected,
                found,
            });
        }
        Ok(())
    }
}

/// The rules [`ImageDirReader::process_tree`] checks, and that no pid or tid is listed twice;
/// `Err` says which one `pstree` breaks.
///
/// Linear in the number of processes: a hostile tree of millions of entries is checked in
/// the time it takes to read.
fn check_process_tree(pstree: &PsTree, root_pid: u32) -> Result<(), String> {
    let mut before = std::collections::HashSet::with_capacity(pstree.processes.len());
    // Every thread of the tree, leaders included: a task listed twice would have its files
    // read (and its pid taken) twice, so a small tree could make a reader hash one large
    // file once per listing.
    let mut tids = std::collections::HashSet::with_capacity(pstree.processes.len());
    for (i, entry) in pstree.processes.iter().enumerate() {
        let pid = entry.pid;
        let first = i == 0;
        let parent_before = before.contains(&entry.ppid);
        before.insert(pid);
        if first != (pid == root_pid) || (!first && !parent_before) {
            return Err(format!(
                "it lists process {pid} (parent {}) out of order: the root {root_pid} must \
                 come first and parents before children",
                entry.ppid
            ));
        }
        if entry.threads.first() != Some(&pid) {
            return Err(format!(
                "the first thread of process {pid} is not its leader"
            ));
        }
        for &tid in &entry.threads {
            if !tids.insert(tid) {
                return Err(format!(
                    "it lists thread {tid} twice (the second time in process {pid}): a pid or \
                     tid names one task"
                ));
            }
        }
    }
    if pstree.processes.is_empty() {
        return Err("it lists no process".into());
    }
    Ok(())
}

/// Reads one message file: header, bounded length prefix, exactly that many bytes, and (when
/// the inventory lists it) size and checksum.
fn read_message_file<M: prost::Message + Default>(
    path: &Path,
    kind: FileKind,
    entry: Option<&ImageFileEntry>,
    trust: Trust,
) -> Result<M, ImageError> {
    let (mut file, size) = open_image(path, entry, trust)?;
    let mut head = [0u8; HEADER_LEN + MAX_PREFIX_LEN];
    let n = read_up_to(path, &mut file, &mut head)?;
    let head = &head[..n];
    header::check(path, head, size, kind)?;
    let (len, prefix_len) = header::decode_len(path, &head[HEADER_LEN..], size)?;
    let start = HEADER_LEN + prefix_len;
    let available = size.saturating_sub(start as u64);
    if available < len {
        return Err(ImageError::Truncated {
            path: path.to_owned(),
            what: "message",
            needed: start as u64 + len,
            available: size,
        });
    }
    if available > len {
        return Err(ImageError::TrailingData {
            path: path.to_owned(),
            what: "the message",
            bytes: available - len,
        });
    }
    // `len` is at most MAX_MESSAGE_LEN and at most the file's size.
    let len = crate::sys::usize_of(len);
    let mut body = Vec::with_capacity(len);
    let already = &head[start..];
    body.extend_from_slice(&already[..already.len().min(len)]);
    let rest = (len - body.len()) as u64;
    file.take(rest)
        .read_to_end(&mut body)
        .map_err(|source| ImageError::Io {
            path: path.to_owned(),
            op: "read",
            source,
        })?;
    if body.len() != len {
        return Err(ImageError::Truncated {
            path: path.to_owned(),
            what: "message",
            needed: (start + len) as u64,
            available: (start + body.len()) as u64,
        });
    }
    if let Some(entry) = entry {
        let mut hasher = Xxh3::new();
        hasher.update(&head[..start]);
        hasher.update(&body);
        let found = hasher.digest();
        if found != entry.xxh3 {
            return Err(ImageError::Checksum {
                path: path.to_owned(),
                expected: entry.xxh3,
                found,
            });
        }
    }
    M::decode(body.as_slice()).map_err(|source| ImageError::Decode {
        path: path.to_owned(),
        source,
    })
}

/// Opens an image file for reading: it must exist (`Missing`), be a regular file (a FIFO
/// would block forever), pass the `trust` check, and have the size the inventory records, if
/// any. Returns the file and its size.
fn open_image(
    path: &Path,
    entry: Option<&ImageFileEntry>,
    trust: Trust,
) -> Result<(File, u64), ImageError> {
    let nofollow = if trust == Trust::OwnerOnly {
        libc::O_NOFOLLOW
    } else {
        0
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | nofollow)
        .open(path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::ELOOP) && nofollow != 0 {
                Refusal::Untrusted {
                    problem: "it is a symbolic link, which crlab never writes".into(),
                }
                .of(path, "read as an image")
            } else if source.kind() == io::ErrorKind::NotFound {
                ImageError::Missing {
                    path: path.to_owned(),
                }
            } else {
                ImageError::Io {
                    path: path.to_owned(),
                    op: "open",
                    source,
                }
            }
        })?;
    let meta = file.metadata().map_err(|source| ImageError::Io {
        path: path.to_owned(),
        op: "stat",
        source,
    })?;
    check_trust(path, &meta, trust)?;
    if !meta.is_file() {
        return Err(ImageError::NotRegularFile {
            path: path.to_owned(),
        });
    }
    let size = meta.len();
    if let Some(entry) = entry {
        if entry.size != size {
            return Err(ImageError::SizeMismatch {
                path: path.to_owned(),
                expected: entry.size,
                found: size,
            });
        }
    }
    Ok((file, size))
}

/// Whether `trust` accepts a file or directory with metadata `meta` (of the opened
/// descriptor, so it is the one read): with [`Trust::OwnerOnly`], owned by the caller's
/// effective uid or root, and writable by neither group nor others.
fn check_trust(path: &Path, meta: &std::fs::Metadata, trust: Trust) -> Result<(), ImageError> {
    if trust == Trust::Anyone {
        return Ok(());
    }
    let me = nix::unistd::geteuid().as_raw();
    let (uid, mode) = (meta.uid(), meta.mode() & 0o7777);
    let problem = if uid != 0 && uid != me {
        format!("it is owned by uid {uid}, neither this user (uid {me}) nor root")
    } else if mode & 0o022 != 0 {
        let who = match (mode & 0o020 != 0, mode & 0o002 != 0) {
            (true, true) => "group and others",
            (true, false) => "its group",
            _ => "others",
        };
        format!("its mode {mode:04o} lets {who} write it")
    } else {
        return Ok(());
    };
    Err(Refusal::Untrusted { problem }.of(path, "read as images"))
}

/// Reads until `buf` is full or the file ends; returns the bytes read.
fn read_up_to(path: &Path, file: &mut File, buf: &mut [u8]) -> Result<usize, ImageError> {
    let mut n = 0;
    while n < buf.len() {
        match file.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(source) => {
                return Err(ImageError::Io {
                    path: path.to_owned(),
                    op: "read",
                    source,
                })
            }
        }
    }
    Ok(n)
}

/// XXH3-64 of the whole file, which must still be `size` bytes long.
fn hash_file(path: &Path, mut file: File, size: u64, buf: &mut [u8]) -> Result<u64, ImageError> {
    let mut hasher = Xxh3::new();
    let mut total = 0u64;
    loop {
        let n = read_up_to(path, &mut file, buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    if total != size {
        return Err(ImageError::SizeMismatch {
            path: path.to_owned(),
            expected: size,
            found: total,
        });
    }
    Ok(hasher.digest())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::schema::ProcessEntry;

    fn tree(entries: &[(u32, u32, &[u32])]) -> PsTree {
        PsTree {
            processes: entries
                .iter()
                .map(|&(pid, ppid, threads)| ProcessEntry {
                    pid,
                    ppid,
                    threads: threads.to_vec(),
                    ..ProcessEntry::default()
                })
                .collect(),
        }
    }

    #[test]
    fn a_tree_in_restore_order_passes() {
        let t = tree(&[(10, 0, &[10, 11]), (12, 10, &[12]), (13, 12, &[13])]);
        assert_eq!(check_process_tree(&t, 10), Ok(()));
    }

    #[test]
    fn a_huge_tree_is_checked_in_linear_time() {
        // A chain of 200 000 processes, each the child of the one before: quadratic checking
        // (each parent looked for among all the entries before it) took minutes.
        let processes: Vec<(u32, u32, Vec<u32>)> = (1..=200_000u32)
            .map(|pid| (pid, pid - 1, vec![pid]))
            .collect();
        let entries: Vec<(u32, u32, &[u32])> = processes
            .iter()
            .map(|(pid, ppid, threads)| (*pid, *ppid, threads.as_slice()))
            .collect();
        let started = std::time::Instant::now();
        assert_eq!(check_process_tree(&tree(&entries), 1), Ok(()));
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "took {:?}",
            started.elapsed()
        );
    }

    #[test]
    fn every_broken_rule_is_named() {
        let err = |t: PsTree| check_process_tree(&t, 10).unwrap_err();
        assert_eq!(err(tree(&[])), "it lists no process");
        assert!(err(tree(&[(12, 10, &[12]), (10, 0, &[10])])).contains("out of order"));
        assert!(
            err(tree(&[(10, 0, &[10]), (13, 12, &[13]), (12, 10, &[12])]))
                .contains("lists process 13 (parent 12) out of order")
        );
        assert_eq!(
            err(tree(&[(10, 0, &[11, 10])])),
            "the first thread of process 10 is not its leader"
        );
        for (twice, tree_with) in [
            (
                12,
                tree(&[(10, 0, &[10]), (12, 10, &[12]), (12, 10, &[12])]),
            ),
            (11, tree(&[(10, 0, &[10, 11, 11])])),
            (11, tree(&[(10, 0, &[10, 11]), (12, 10, &[12, 11])])),
            (12, tree(&[(10, 0, &[10, 12]), (12, 10, &[12])])),
        ] {
            let e = err(tree_with);
            assert!(
                e.starts_with(&format!("it lists thread {twice} twice")),
                "{e}"
            );
        }
    }
}
