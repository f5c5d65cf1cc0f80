//! `ImageDirWriter`: writes a dump directory, message files and pages, inventory last.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::{xxh3_64, Xxh3};

use super::schema::{ImageFileEntry, Inventory};
use super::{
    header, pages_name, parse_name, FileKind, ImageError, FORMAT_VERSION, INVENTORY,
    MAX_MESSAGE_LEN, PAGE_SIZE,
};

/// The inventory is written here, then renamed over `inventory.img`.
const INVENTORY_TMP: &str = ".inventory.img.tmp";

/// Image files hold process memory and credentials: readable by the owner only.
const FILE_MODE: u32 = 0o600;
const DIR_MODE: u32 = 0o700;

/// Writes the files of one dump into a directory. The dump is complete only once
/// [`ImageDirWriter::commit`] has returned: it writes `inventory.img`, which readers require.
#[derive(Debug)]
pub struct ImageDirWriter {
    dir: PathBuf,
    files: Vec<ImageFileEntry>,
    names: HashSet<String>,
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
        write_new(&path, &bytes)?;
        self.record(name, bytes.len() as u64, xxh3_64(&bytes));
        Ok(())
    }

    /// Raw pages of one process; hashed as written (streaming xxh3, header included).
    pub fn pages_writer(&mut self, pid: u32) -> Result<PagesWriter<'_>, ImageError> {
        let name = pages_name(pid);
        self.check_new_name(&name, FileKind::Pages)?;
        let path = self.dir.join(&name);
        let mut file = create_new(&path)?;
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
    pub fn commit(self, mut inventory: Inventory) -> Result<(), ImageError> {
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
        inventory.files = self.files;

        let tmp = self.dir.join(INVENTORY_TMP);
        let bytes = frame_message(&tmp, FileKind::Inventory, &inventory)?;
        let mut file = create_new(&tmp)?;
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
        fs::rename(&tmp, &inventory_path).map_err(|source| ImageError::Io {
            path: tmp,
            op: "rename to inventory.img",
            source,
        })?;
        sync_dir(&self.dir)?;
        tracing::debug!(
            dir = %self.dir.display(),
            files = inventory.files.len(),
            "dump committed"
        );
        Ok(())
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

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    create_new(path)?
        .write_all(bytes)
        .map_err(|source| ImageError::Io {
            path: path.to_owned(),
            op: "write",
            source,
        })
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
