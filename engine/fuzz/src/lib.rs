//! What the image fuzz targets share: the inputs' formats (decoded by the targets, encoded by
//! the seed generator), a scratch images directory per fuzzing process, and one function
//! that reads a directory the way every reader of the engine does.
//!
//! The engine reads images from files, so the targets write files: the fuzzer's bytes become
//! a dump directory (on `/dev/shm` when there is one), and the engine's own readers open it.
//! Where the fuzzer cannot be expected to forge a checksum, the target computes the
//! inventory's sizes and hashes itself, so its bytes reach the decoders behind the checks.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use crlab::image::schema::{
    file_entry, FileTable, ImageFileEntry, Inventory, Mm, Task, ThreadCore, VmaKind,
};
use crlab::image::{self, FileKind, ImageDirReader, Trust, FORMAT_VERSION, PAGE_SIZE};
use prost::Message;

/// The pid (and tid) every per-process file of a one-file input is named after.
pub const ID: u32 = 1;

/// The kinds an input's selector byte picks from, in selector order.
pub const KINDS: [FileKind; 6] = [
    FileKind::PsTree,
    FileKind::Files,
    FileKind::Task,
    FileKind::Mm,
    FileKind::Core,
    FileKind::Pages,
];

/// The kind a selector byte stands for.
pub fn kind_of(selector: u8) -> FileKind {
    KINDS[usize::from(selector) % KINDS.len()]
}

/// The selector byte of `kind` (the inventory has none: it is its own target).
pub fn selector_of(kind: FileKind) -> Option<u8> {
    KINDS
        .iter()
        .position(|k| *k == kind)
        .and_then(|i| u8::try_from(i).ok())
}

/// The file name a kind and id give.
pub fn name_of(kind: FileKind, id: u32) -> String {
    match kind {
        FileKind::Inventory => image::INVENTORY.to_owned(),
        FileKind::PsTree => image::PSTREE.to_owned(),
        FileKind::Files => image::FILES.to_owned(),
        FileKind::Task => image::task_name(id),
        FileKind::Mm => image::mm_name(id),
        FileKind::Pages => image::pages_name(id),
        FileKind::Core => image::core_name(id),
    }
}

/// The 16-byte header the engine writes on a file of `kind` (`engine/proto/README.md`).
pub fn header(kind: FileKind) -> Vec<u8> {
    let mut out = b"CRLAB\0\0\0".to_vec();
    out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(kind as u32).to_le_bytes());
    out
}

/// A whole file of `kind` around `body`: the header, then for message kinds the varint length
/// prefix and the message, for pages the page data as it is.
pub fn framed(kind: FileKind, body: &[u8]) -> Vec<u8> {
    let mut out = header(kind);
    if kind != FileKind::Pages {
        prost::encode_length_delimiter(body.len(), &mut out)
            .expect("a Vec grows to hold a length prefix");
    }
    out.extend_from_slice(body);
    out
}

/// The body of a whole message file (what follows its header and length prefix), if it has
/// the shape of one; for pages, the page data.
pub fn body_of(kind: FileKind, file: &[u8]) -> Option<&[u8]> {
    let rest = file.get(16..)?;
    if kind == FileKind::Pages {
        return Some(rest);
    }
    let len = prost::decode_length_delimiter(rest).ok()?;
    rest.get(prost::length_delimiter_len(len)..)
}

/// One file of a multi-file input: what it is called and what it holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileRecord {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A whole directory as one input (the `show` target).
///
/// Byte 0: bit 0 set means the inventory is written as the input gives it (a record of kind
/// inventory), clear means it is computed from the files (true sizes and hashes). Bytes 1..5:
/// the root pid (u32 LE) of a computed inventory. Then records: kind selector (u8, 0..=5 as
/// [`KINDS`], 6 the inventory, anything else a file with a name crlab never writes), id
/// (u32 LE), length (u32 LE), that many bytes. A truncated record ends the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirInput {
    pub raw_inventory: bool,
    pub root_pid: u32,
    pub files: Vec<FileRecord>,
}

/// The selector of the inventory in a [`DirInput`] record.
pub const INVENTORY_SELECTOR: u8 = 6;

/// The most files a [`DirInput`] makes (a dump of a few processes; more adds nothing).
pub const MAX_FILES: usize = 64;

impl DirInput {
    /// Reads an input; any bytes give one.
    pub fn decode(data: &[u8]) -> DirInput {
        let flags = data.first().copied().unwrap_or(0);
        let root_pid = data
            .get(1..5)
            .and_then(|b| b.try_into().ok())
            .map_or(ID, u32::from_le_bytes);
        let mut files = Vec::new();
        let mut rest = data.get(5..).unwrap_or(&[]);
        while files.len() < MAX_FILES {
            let Some((head, tail)) = rest.split_first_chunk::<9>() else {
                break;
            };
            let id = u32::from_le_bytes([head[1], head[2], head[3], head[4]]);
            let len = u32::from_le_bytes([head[5], head[6], head[7], head[8]]);
            let len = usize::try_from(len).unwrap_or(usize::MAX).min(tail.len());
            let (bytes, after) = tail.split_at(len);
            let name = match head[0] {
                s if usize::from(s) < KINDS.len() => name_of(kind_of(s), id),
                INVENTORY_SELECTOR => image::INVENTORY.to_owned(),
                _ => format!("notes-{id}.txt"),
            };
            files.push(FileRecord {
                name,
                bytes: bytes.to_vec(),
            });
            rest = after;
        }
        DirInput {
            raw_inventory: flags & 1 != 0,
            root_pid,
            files,
        }
    }

    /// The bytes [`Self::decode`] reads back as `self` (names it cannot express are dropped).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![u8::from(self.raw_inventory)];
        out.extend_from_slice(&self.root_pid.to_le_bytes());
        for file in &self.files {
            let (selector, id) = match image::parse_name(&file.name) {
                Ok(p) if p.kind == FileKind::Inventory => (INVENTORY_SELECTOR, 0),
                Ok(p) => match selector_of(p.kind) {
                    Some(s) => (s, p.id.unwrap_or(0)),
                    None => continue,
                },
                Err(_) => continue,
            };
            let Ok(len) = u32::try_from(file.bytes.len()) else {
                continue;
            };
            out.push(selector);
            out.extend_from_slice(&id.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&file.bytes);
        }
        out
    }
}

/// The scratch images directory of this process, emptied for each input.
pub struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    /// `crlab-fuzz-<pid>` under `/dev/shm` (or the temporary directory), mode 0700; the
    /// directories of fuzzing processes that are gone are removed first.
    pub fn new() -> Scratch {
        let base = Path::new("/dev/shm");
        let base = if base.is_dir() {
            base.to_owned()
        } else {
            std::env::temp_dir()
        };
        if let Ok(entries) = fs::read_dir(&base) {
            for entry in entries.flatten() {
                let name = entry.file_name();
                let stale = name
                    .to_str()
                    .and_then(|n| n.strip_prefix("crlab-fuzz-"))
                    .and_then(|pid| pid.parse::<u32>().ok())
                    .is_some_and(|pid| !Path::new(&format!("/proc/{pid}")).exists());
                if stale {
                    let _ = fs::remove_dir_all(entry.path());
                }
            }
        }
        let dir = base.join(format!("crlab-fuzz-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .expect("the scratch directory can be created");
        Scratch { dir }
    }

    /// The directory, emptied.
    pub fn fresh(&self) -> &Path {
        if let Ok(entries) = fs::read_dir(&self.dir) {
            for entry in entries.flatten() {
                let _ = fs::remove_file(entry.path());
            }
        }
        &self.dir
    }
}

impl Default for Scratch {
    fn default() -> Self {
        Scratch::new()
    }
}

/// Writes `bytes` as `dir/name`, mode 0600 (as the engine does).
pub fn write_file(dir: &Path, name: &str, bytes: &[u8]) {
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(dir.join(name))
        .expect("the scratch directory takes files");
    file.write_all(bytes)
        .expect("the scratch directory takes bytes");
}

/// The inventory of the files given, with their true sizes and checksums.
pub fn inventory_of(root_pid: u32, files: &[FileRecord]) -> Vec<u8> {
    let inventory = Inventory {
        format_version: FORMAT_VERSION,
        engine_version: "fuzz".to_owned(),
        root_pid,
        page_size: u32::try_from(PAGE_SIZE).unwrap_or(4096),
        files: files
            .iter()
            .filter(|f| f.name != image::INVENTORY)
            .map(|f| ImageFileEntry {
                name: f.name.clone(),
                size: f.bytes.len() as u64,
                xxh3: xxhash_rust::xxh3::xxh3_64(&f.bytes),
            })
            .collect(),
        ..Inventory::default()
    };
    framed(FileKind::Inventory, &inventory.encode_to_vec())
}

/// Writes `files` into the emptied scratch directory, with the inventory the input gives or
/// one computed from them; returns the directory.
pub fn lay_out<'a>(
    scratch: &'a Scratch,
    files: &[FileRecord],
    raw_inventory: bool,
    root_pid: u32,
) -> &'a Path {
    let dir = scratch.fresh();
    // A name given twice is one file: the last one given wins, as it would on disk.
    let mut unique: Vec<FileRecord> = Vec::with_capacity(files.len());
    for file in files {
        unique.retain(|f| f.name != file.name);
        unique.push(file.clone());
    }
    for file in &unique {
        if file.name != image::INVENTORY || raw_inventory {
            write_file(dir, &file.name, &file.bytes);
        }
    }
    if !raw_inventory {
        write_file(dir, image::INVENTORY, &inventory_of(root_pid, &unique));
    }
    dir
}

/// Reads the directory with every reader of the engine: `crlab show`, `crlab check
/// --images-dir`'s reading, and what the restore reads of each file (the process tree, each
/// message decoded, each path checked, each pages file streamed to its end and its checksum
/// verified). Errors are expected; a panic, a hang or an unbounded allocation is the finding.
pub fn read_everything(dir: &Path) {
    let _ = image::show(dir);
    let _ = crlab::check::restore::read_dump(dir, Trust::default());
    let Ok(reader) = ImageDirReader::open(dir) else {
        return;
    };
    let _ = reader.process_tree();
    for entry in &reader.inventory().files {
        let Ok(parsed) = image::parse_name(&entry.name) else {
            continue;
        };
        let name = entry.name.as_str();
        match parsed.kind {
            FileKind::Inventory => {}
            FileKind::PsTree => {
                let _ = reader.read_message::<crlab::image::schema::PsTree>(name, parsed.kind);
            }
            FileKind::Files => {
                if let Ok(table) = reader.read_message::<FileTable>(name, parsed.kind) {
                    for file in &table.files {
                        if let Some(file_entry::Kind::Path(p)) = &file.kind {
                            let _ = image::check_path(&p.path);
                        }
                    }
                }
            }
            FileKind::Task => {
                if let Ok(task) = reader.read_message::<Task>(name, parsed.kind) {
                    let _ = image::check_path(&task.cwd);
                }
            }
            FileKind::Mm => {
                if let Ok(mm) = reader.read_message::<Mm>(name, parsed.kind) {
                    let _ = image::check_path(&mm.exe_path);
                    for v in &mm.vmas {
                        let kind = VmaKind::try_from(v.kind).unwrap_or(VmaKind::Unspecified);
                        if matches!(kind, VmaKind::FilePrivate | VmaKind::FileShared) {
                            let _ = image::check_path(&v.path);
                        }
                    }
                }
            }
            FileKind::Core => {
                let _ = reader.read_message::<ThreadCore>(name, parsed.kind);
            }
            FileKind::Pages => {
                if let Some(pid) = parsed.id {
                    stream_pages(&reader, pid);
                }
            }
        }
    }
}

/// Reads a pages file to its end, a page at a time, then checks its checksum.
fn stream_pages(reader: &ImageDirReader, pid: u32) {
    let Ok(mut pages) = reader.pages(pid) else {
        return;
    };
    let mut page = [0u8; PAGE_SIZE as usize];
    let mut left = pages.len();
    while left > 0 {
        if pages.read_exact(&mut page).is_err() {
            return;
        }
        left = left.saturating_sub(PAGE_SIZE);
    }
    // One read past the end must be refused, not wrap around.
    let _ = pages.read_exact(&mut page[..1]);
    let _ = pages.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dir_inputs_round_trip() {
        let input = DirInput {
            raw_inventory: false,
            root_pid: 42,
            files: vec![
                FileRecord {
                    name: "pstree.img".into(),
                    bytes: vec![1, 2, 3],
                },
                FileRecord {
                    name: "core-43.img".into(),
                    bytes: vec![],
                },
            ],
        };
        assert_eq!(DirInput::decode(&input.encode()), input);
    }

    #[test]
    fn framed_bodies_come_back() {
        for kind in KINDS {
            let file = framed(kind, b"abc");
            assert_eq!(body_of(kind, &file), Some(&b"abc"[..]));
            assert_eq!(selector_of(kind).map(kind_of), Some(kind));
        }
    }
}
