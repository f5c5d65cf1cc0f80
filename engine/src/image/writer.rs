//! `ImageDirWriter`: writes a dump directory, message files and pages, inventory last.
//!
//! A dump never mixes with an older one: [`ImageDirWriter::new_dump`] writes into a new
//! directory or an empty one, refuses a directory that holds files unless told to replace it,
//! and then writes into a fresh sibling directory that [`ImageDirWriter::commit`] swaps in with
//! one `rename`, so a dump that fails or is interrupted leaves the old one as it was.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use super::schema::{ImageFileEntry, Inventory};
use super::{
    header, pages_name, parse_name, FileKind, ImageError, Refusal, FORMAT_VERSION, INVENTORY,
    MAX_MESSAGE_LEN, PAGE_SIZE,
};

/// The inventory is written here, then renamed over `inventory.img`.
const INVENTORY_TMP: &str = ".inventory.img.tmp";

/// Image files hold process memory and credentials: readable by the owner only. The modes
/// are given at creation (the umask can only narrow them): the engine never changes a mode
/// afterwards, which under SELinux would need `setattr` on top of `create`.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// What a dump does with an images directory that already holds files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Existing {
    /// Refuse it: the new dump would mix with whatever is there.
    #[default]
    Refuse,
    /// Replace it whole, atomically, once the new dump is complete.
    Replace,
}

/// Where the writer writes, and what `commit` does at the end.
#[derive(Debug)]
enum Target {
    /// Into the directory itself. `cleanup`: an uncommitted writer removes the files it made
    /// (the directory was empty and is left so).
    InPlace { cleanup: bool },
    /// Into a fresh sibling directory (the writer's `dir`), renamed to `target` on commit;
    /// `swap`: `target` holds an older dump, exchanged with the new one, then removed.
    Staged { target: PathBuf, swap: bool },
}

/// Writes the files of one dump into a directory. The dump is complete only once
/// [`ImageDirWriter::commit`] has returned: it writes `inventory.img`, which readers require.
#[derive(Debug)]
pub struct ImageDirWriter {
    dir: PathBuf,
    files: Vec<ImageFileEntry>,
    names: HashSet<String>,
    target: Target,
    /// Every file this writer created, finished or not, for the cleanup of an uncommitted one.
    created: Vec<PathBuf>,
    committed: bool,
}

impl ImageDirWriter {
    /// Creates the directory if missing. Removes a stale inventory.img first (and fsyncs the
    /// dir), so a dump interrupted midway never leaves a directory that restore would take
    /// for complete.
    pub fn create(dir: &Path) -> Result<Self, ImageError> {
        if !dir.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(dir)
                .map_err(|source| ImageError::Io {
                    path: dir.to_owned(),
                    op: "create the images directory",
                    source,
                })?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
        }
        let inventory = dir.join(INVENTORY);
        match fs::remove_file(&inventory) {
            Ok(()) => {
                tracing::debug!(path = %inventory.display(), "removed a stale inventory");
                sync_dir(dir)?;
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(source) => {
                return Err(ImageError::Io {
                    path: inventory,
                    op: "remove the stale inventory",
                    source,
                })
            }
        }
        Ok(ImageDirWriter {
            dir: dir.to_owned(),
            files: Vec::new(),
            names: HashSet::new(),
            target: Target::InPlace { cleanup: false },
            created: Vec::new(),
            committed: false,
        })
    }

    /// A writer for a new dump at `dir`, which never mixes with an older one:
    ///
    /// - `dir` missing: the dump is written into a fresh sibling directory (mode 0700) that
    ///   `commit` renames to `dir` (missing parents are created, 0700);
    /// - `dir` an empty directory (made by the caller, as the lab does): the dump is written
    ///   into it, and a writer dropped before `commit` removes the files it wrote;
    /// - `dir` holding anything: [`Refusal::NotEmpty`], unless `existing` is
    ///   [`Existing::Replace`]: then the dump is written into a fresh sibling directory that
    ///   `commit` exchanges with `dir` in one `renameat2(RENAME_EXCHANGE)`, and the old dump
    ///   is removed only after that; until then, and on any failure, the old dump is intact.
    ///
    /// A staging directory is named `.<name>.crlab-dump-<pid>-<nonce>` beside `dir`; a writer
    /// dropped before `commit` removes it.
    pub fn new_dump(dir: &Path, existing: Existing) -> Result<Self, ImageError> {
        let io = |op, source| ImageError::Io {
            path: dir.to_owned(),
            op,
            source,
        };
        let swap = match fs::metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => false,
            Err(source) => return Err(io("inspect the images directory", source)),
            Ok(meta) if !meta.is_dir() => {
                return Err(io(
                    "use as the images directory",
                    io::ErrorKind::NotADirectory.into(),
                ))
            }
            Ok(_) => {
                let mut entries =
                    fs::read_dir(dir).map_err(|source| io("list the images directory", source))?;
                if entries.next().is_none() {
                    let mut w = ImageDirWriter::create(dir)?;
                    w.target = Target::InPlace { cleanup: true };
                    return Ok(w);
                }
                if existing == Existing::Refuse {
                    return Err(Refusal::NotEmpty.of(dir, "dump into the images directory"));
                }
                true
            }
        };
        // Beside the real directory (a symlink to it is followed), so the rename stays on one
        // filesystem and replaces the directory, not a link to it.
        let target = if swap {
            fs::canonicalize(dir).map_err(|source| io("resolve the images directory", source))?
        } else {
            dir.to_owned()
        };
        let name = target
            .file_name()
            .ok_or_else(|| {
                io(
                    "name the images directory",
                    io::ErrorKind::InvalidInput.into(),
                )
            })?
            .to_string_lossy()
            .into_owned();
        let parent = match target.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
            _ => PathBuf::from("."),
        };
        if !parent.is_dir() {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(&parent)
                .map_err(|source| ImageError::Io {
                    path: parent.clone(),
                    op: "create the parent of the images directory",
                    source,
                })?;
        }
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let staging = parent.join(format!(
            ".{name}.crlab-dump-{}-{nonce:x}",
            std::process::id()
        ));
        fs::DirBuilder::new()
            .mode(DIR_MODE)
            .create(&staging)
            .map_err(|source| ImageError::Io {
                path: staging.clone(),
                op: "create the staging directory of the dump",
                source,
            })?;
        tracing::debug!(staging = %staging.display(), target = %target.display(), swap, "dump staged");
        Ok(ImageDirWriter {
            dir: staging,
            files: Vec::new(),
            names: HashSet::new(),
            target: Target::Staged { target, swap },
            created: Vec::new(),
            committed: false,
        })
    }

    /// The images directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Header + length-delimited message; records name, size and xxh3-64 for the inventory.
    ///
    /// `name` must be the name of a `kind` file (`task_name(pid)` for [`FileKind::Task`], ...);
    /// inventory and pages files have their own paths ([`Self::commit`], [`Self::pages_writer`]).
    pub fn write_message<M: prost::Message>(
        &mut self,
        name: &str,
        kind: FileKind,
        msg: &M,
    ) -> Result<(), ImageError> {
        self.check_new_name(name, kind)?;
        if matches!(kind, FileKind::Inventory | FileKind::Pages) {
            return Err(ImageError::BadFileName {
                path: self.dir.clone(),
                name: name.to_owned(),
                reason: "inventory and pages files are not written with write_message",
            });
        }
        let path = self.dir.join(name);
        let bytes = frame_message(&path, kind, msg)?;
        let mut file = self.create_file(&path)?;
        #[cfg(feature = "failpoints")]
        inject_write(&path, kind)?;
        file.write_all(&bytes).map_err(|source| ImageError::Io {
            path: path.clone(),
            op: "write",
            source,
        })?;
        self.record(name, bytes.len() as u64, xxh3_64(&bytes));
        Ok(())
    }

    /// Raw pages of one process; hashed as written (streaming xxh3, header included).
    pub fn pages_writer(&mut self, pid: u32) -> Result<PagesWriter<'_>, ImageError> {
        let name = pages_name(pid);
        self.check_new_name(&name, FileKind::Pages)?;
        let path = self.dir.join(&name);
        let mut file = self.create_file(&path)?;
        failpoint!("dump.image.pages", |source| ImageError::Io {
            path: path.clone(),
            op: "write",
            source,
        });
        let head = header::encode(FileKind::Pages);
        file.write_all(&head).map_err(|source| ImageError::Io {
            path: path.clone(),
            op: "write",
            source,
        })?;
        let mut hasher = Box::new(Xxh3::new());
        hasher.update(&head);
        Ok(PagesWriter {
            writer: self,
            name,
            path,
            file,
            hasher,
            data_len: 0,
        })
    }

    /// Fills inventory.format_version and inventory.files, fsyncs every file, writes
    /// inventory.img via a temp file + fsync + rename + dir fsync. Until this returns, the
    /// dump is not complete.
    pub fn commit(mut self, mut inventory: Inventory) -> Result<(), ImageError> {
        failpoint!("dump.commit.fsync", |source| ImageError::Io {
            path: self.dir.clone(),
            op: "fsync",
            source,
        });
        for entry in &self.files {
            let path = self.dir.join(&entry.name);
            let file = File::open(&path).map_err(|source| ImageError::Io {
                path: path.clone(),
                op: "reopen for fsync",
                source,
            })?;
            file.sync_all().map_err(|source| ImageError::Io {
                path,
                op: "fsync",
                source,
            })?;
        }
        inventory.format_version = FORMAT_VERSION;
        inventory.files = std::mem::take(&mut self.files);

        let tmp = self.dir.join(INVENTORY_TMP);
        let bytes = frame_message(&tmp, FileKind::Inventory, &inventory)?;
        let mut file = self.create_file(&tmp)?;
        failpoint!("dump.commit.inventory", |source| ImageError::Io {
            path: tmp.clone(),
            op: "write",
            source,
        });
        file.write_all(&bytes).map_err(|source| ImageError::Io {
            path: tmp.clone(),
            op: "write",
            source,
        })?;
        file.sync_all().map_err(|source| ImageError::Io {
            path: tmp.clone(),
            op: "fsync",
            source,
        })?;
        drop(file);
        let inventory_path = self.dir.join(INVENTORY);
        failpoint!("dump.commit.rename", |source| ImageError::Io {
            path: tmp.clone(),
            op: "rename to inventory.img",
            source,
        });
        fs::rename(&tmp, &inventory_path).map_err(|source| ImageError::Io {
            path: tmp,
            op: "rename to inventory.img",
            source,
        })?;
        sync_dir(&self.dir)?;
        if let Target::Staged { target, swap } = &self.target {
            swap_in(&self.dir, target, *swap)?;
        }
        self.committed = true;
        tracing::debug!(
            dir = %self.dir.display(),
            files = inventory.files.len(),
            "dump committed"
        );
        Ok(())
    }

    /// Creates (or truncates) a file of the dump, mode 0600, remembered for the cleanup.
    fn create_file(&mut self, path: &Path) -> Result<File, ImageError> {
        let file = create_new(path)?;
        self.created.push(path.to_owned());
        Ok(file)
    }

    fn check_new_name(&self, name: &str, kind: FileKind) -> Result<(), ImageError> {
        let parsed = parse_name(name).map_err(|reason| ImageError::BadFileName {
            path: self.dir.clone(),
            name: name.to_owned(),
            reason,
        })?;
        if parsed.kind != kind {
            return Err(ImageError::WrongKind {
                path: self.dir.join(name),
                expected: parsed.kind,
                found: kind as u32,
            });
        }
        if self.names.contains(name) {
            return Err(ImageError::DuplicateFile {
                path: self.dir.join(name),
                name: name.to_owned(),
            });
        }
        Ok(())
    }

    fn record(&mut self, name: &str, size: u64, xxh3: u64) {
        self.names.insert(name.to_owned());
        self.files.push(ImageFileEntry {
            name: name.to_owned(),
            size,
            xxh3,
        });
    }
}

/// Writes the page contents of one process to `pages-<pid>.img`. Dropping it without
/// [`PagesWriter::finish`] leaves the file out of the inventory.
pub struct PagesWriter<'a> {
    writer: &'a mut ImageDirWriter,
    name: String,
    path: PathBuf,
    file: File,
    hasher: Box<Xxh3>,
    data_len: u64,
}

impl std::fmt::Debug for PagesWriter<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PagesWriter")
            .field("path", &self.path)
            .field("data_len", &self.data_len)
            .finish_non_exhaustive()
    }
}

impl PagesWriter<'_> {
    /// Appends page data. Meant for large buffers (MiBs): each call is one `write` loop on the
    /// file, with no buffering in between.
    pub fn write_all(&mut self, buf: &[u8]) -> Result<(), ImageError> {
        failpoint!("dump.image.pages.write", |source| ImageError::Io {
            path: self.path.clone(),
            op: "write",
            source,
        });
        self.file.write_all(buf).map_err(|source| ImageError::Io {
            path: self.path.clone(),
            op: "write",
            source,
        })?;
        self.hasher.update(buf);
        self.data_len += buf.len() as u64;
        Ok(())
    }

    /// Records the file for the inventory; returns the bytes of page data written, which must
    /// be a whole number of pages.
    pub fn finish(self) -> Result<u64, ImageError> {
        if self.data_len % PAGE_SIZE != 0 {
            return Err(ImageError::PartialPage {
                path: self.path,
                len: self.data_len,
                page_size: PAGE_SIZE,
            });
        }
        let size = header::HEADER_LEN as u64 + self.data_len;
        self.writer.record(&self.name, size, self.hasher.digest());
        Ok(self.data_len)
    }
}

/// Failpoint `dump.image.<kind>` of a message file (test builds only, see `crate::failpoint`).
#[cfg(feature = "failpoints")]
fn inject_write(path: &Path, kind: FileKind) -> Result<(), ImageError> {
    let err = |source| ImageError::Io {
        path: path.to_owned(),
        op: "write",
        source,
    };
    match kind {
        FileKind::Task => {
            failpoint!("dump.image.task", err);
        }
        FileKind::Mm => {
            failpoint!("dump.image.mm", err);
        }
        FileKind::Core => {
            failpoint!("dump.image.core", err);
        }
        FileKind::PsTree => {
            failpoint!("dump.image.pstree", err);
        }
        FileKind::Files => {
            failpoint!("dump.image.files", err);
        }
        FileKind::Inventory | FileKind::Pages => {}
    }
    Ok(())
}

/// Header + varint length + message, refusing messages larger than the readers accept.
fn frame_message<M: prost::Message>(
    path: &Path,
    kind: FileKind,
    msg: &M,
) -> Result<Vec<u8>, ImageError> {
    let len = msg.encoded_len();
    if len as u64 > MAX_MESSAGE_LEN {
        return Err(ImageError::TooLarge {
            path: path.to_owned(),
            len: len as u64,
            limit: MAX_MESSAGE_LEN,
        });
    }
    let mut bytes = Vec::with_capacity(header::HEADER_LEN + header::MAX_PREFIX_LEN + len);
    bytes.extend_from_slice(&header::encode(kind));
    msg.encode_length_delimited(&mut bytes)
        .map_err(|source| ImageError::Encode {
            path: path.to_owned(),
            source,
        })?;
    Ok(bytes)
}

/// Creates a file of the dump with mode 0600 (less if the umask says so: never more), or
/// truncates an existing one (only [`ImageDirWriter::create`] writes over an older dump).
fn create_new(path: &Path) -> Result<File, ImageError> {
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(FILE_MODE)
        .open(path)
        .map_err(|source| ImageError::Io {
            path: path.to_owned(),
            op: "create",
            source,
        })
}

/// Puts the complete dump in `staging` at `target`: a plain rename when `target` is missing
/// (or an empty directory), else an exchange of the two directories in one
/// `renameat2(RENAME_EXCHANGE)`, after which the old dump, now at `staging`, is removed. A
/// filesystem without the exchange gets two renames (old aside, new in): the one moment
/// without a dump at `target` is between them, and the old dump is still whole aside.
fn swap_in(staging: &Path, target: &Path, swap: bool) -> Result<(), ImageError> {
    let rename_err = |source| ImageError::Io {
        path: target.to_owned(),
        op: "rename the new dump into place",
        source,
    };
    failpoint!("dump.commit.swap", rename_err);
    if !swap {
        fs::rename(staging, target).map_err(rename_err)?;
    } else {
        use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
        match renameat2(
            AT_FDCWD,
            staging,
            AT_FDCWD,
            target,
            RenameFlags::RENAME_EXCHANGE,
        ) {
            Ok(()) => {}
            Err(nix::errno::Errno::EINVAL | nix::errno::Errno::ENOSYS) => {
                let aside = staging.with_extension("old");
                fs::rename(target, &aside).map_err(rename_err)?;
                if let Err(source) = fs::rename(staging, target) {
                    // Put the old dump back: a failed replacement keeps it.
                    let _ = fs::rename(&aside, target);
                    return Err(rename_err(source));
                }
                fs::rename(&aside, staging).map_err(rename_err)?;
            }
            Err(e) => return Err(rename_err(e.into())),
        }
        // `staging` now holds the old dump.
        fs::remove_dir_all(staging).map_err(|source| ImageError::Io {
            path: staging.to_owned(),
            op: "remove the replaced dump (the new one is in place)",
            source,
        })?;
    }
    if let Some(parent) = target.parent().filter(|p| !p.as_os_str().is_empty()) {
        sync_dir(parent)?;
    }
    Ok(())
}

impl Drop for ImageDirWriter {
    /// An uncommitted dump leaves nothing that could be taken for one: its staging directory
    /// is removed, or, written into a directory that was empty, the files it made.
    fn drop(&mut self) {
        if self.committed {
            return;
        }
        match &self.target {
            Target::Staged { .. } => {
                if let Err(e) = fs::remove_dir_all(&self.dir) {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "removing the staging directory of a failed dump");
                }
            }
            Target::InPlace { cleanup: true } => {
                for path in &self.created {
                    if let Err(e) = fs::remove_file(path) {
                        if e.kind() != io::ErrorKind::NotFound {
                            tracing::warn!(path = %path.display(), error = %e, "removing a file of a failed dump");
                        }
                    }
                }
            }
            Target::InPlace { cleanup: false } => {}
        }
    }
}

fn sync_dir(dir: &Path) -> Result<(), ImageError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|source| ImageError::Io {
            path: dir.to_owned(),
            op: "fsync the directory",
            source,
        })
}
