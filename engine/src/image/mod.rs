//! Image files: the protobuf schema, the on-disk framing and the dump directory.
//!
//! A dump is a directory of image files; `engine/proto/README.md` documents the format.
//! [`ImageDirWriter`] writes one (inventory last), [`ImageDirReader`] opens one after checking
//! every file against the inventory (and [`ImageDirReader::process_tree`] the process tree),
//! [`show`] renders one as JSON for `crlab show`, and `regs` converts a thread's registers
//! between the kernel's layout and the image's.
//!
//! **Invariant:** no file contents make this module panic, and every length read from a file
//! is bounded (by [`MAX_MESSAGE_LEN`] and the file's size) before anything is allocated for it.

pub mod cow;
mod error;
mod header;
pub mod layout;
mod reader;
mod regs;
mod shmem;
mod show;
pub mod sockopt;
mod writer;

pub use error::{ImageError, Refusal};
pub use reader::{ImageDirReader, PagesReader, Trust};
pub use shmem::{shmem_mismatch, ShmemMismatch};
pub use show::{show, show_with};
pub use writer::{Existing, ImageDirWriter, PagesWriter};

/// The generated prost types of `proto/crlab_image.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod schema {
    include!(concat!(env!("OUT_DIR"), "/crlab.image.v1.rs"));
    include!(concat!(env!("OUT_DIR"), "/crlab.image.v1.serde.rs"));
}

/// The format version this crlab writes and the only one it reads. 2: a pagemap entry may
/// hold pages with no data in the pages image (`PagemapEntry.in_parent`), which a reader of 1
/// would take from the file; and the fields added since 1 (`Task.cgroups`, deleted files,
/// inotify instances, Unix sockets' peer credentials, `Vma.deleted_file`, established TCP
/// connections), which a reader of 1
/// would silently skip.
pub const FORMAT_VERSION: u32 = 2;

/// The largest message (after the length prefix) a file may hold; every length read from a
/// file is checked against it before anything is allocated.
pub const MAX_MESSAGE_LEN: u64 = 256 << 20;

/// Page data in `pages-<pid>.img` is a whole number of pages of this size.
pub const PAGE_SIZE: u64 = 4096;

/// The longest file name the inventory may list (the usual `NAME_MAX`).
pub const MAX_NAME_LEN: usize = 255;

/// The file name of the inventory.
pub const INVENTORY: &str = "inventory.img";
/// The file name of the process tree.
pub const PSTREE: &str = "pstree.img";
/// The file name of the open file table.
pub const FILES: &str = "files.img";

/// `task-<pid>.img`: process-wide state of one process.
pub fn task_name(pid: u32) -> String {
    format!("task-{pid}.img")
}

/// `mm-<pid>.img`: the address space of one process.
pub fn mm_name(pid: u32) -> String {
    format!("mm-{pid}.img")
}

/// `pages-<pid>.img`: the page contents of one process.
pub fn pages_name(pid: u32) -> String {
    format!("pages-{pid}.img")
}

/// `core-<tid>.img`: the state of one thread.
pub fn core_name(tid: u32) -> String {
    format!("core-{tid}.img")
}

/// What a file holds; the third field of every header.
#[repr(u32)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FileKind {
    /// `inventory.img`: [`schema::Inventory`].
    Inventory = 1,
    /// `pstree.img`: [`schema::PsTree`].
    PsTree = 2,
    /// `files.img`: [`schema::FileTable`].
    Files = 3,
    /// `task-<pid>.img`: [`schema::Task`].
    Task = 4,
    /// `mm-<pid>.img`: [`schema::Mm`].
    Mm = 5,
    /// `pages-<pid>.img`: raw page contents.
    Pages = 6,
    /// `core-<tid>.img`: [`schema::ThreadCore`].
    Core = 7,
}

impl FileKind {
    /// Every kind, in header-number order.
    pub const ALL: [FileKind; 7] = [
        FileKind::Inventory,
        FileKind::PsTree,
        FileKind::Files,
        FileKind::Task,
        FileKind::Mm,
        FileKind::Pages,
        FileKind::Core,
    ];

    /// The kind a header number stands for, if any.
    pub fn from_u32(value: u32) -> Option<FileKind> {
        FileKind::ALL.into_iter().find(|kind| *kind as u32 == value)
    }

    /// A short lowercase name, as error messages and the format doc use it.
    pub fn as_str(self) -> &'static str {
        match self {
            FileKind::Inventory => "inventory",
            FileKind::PsTree => "pstree",
            FileKind::Files => "files",
            FileKind::Task => "task",
            FileKind::Mm => "mm",
            FileKind::Pages => "pages",
            FileKind::Core => "core",
        }
    }
}

impl std::fmt::Display for FileKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a file name of a dump says: the kind of file and, for per-process and per-thread files,
/// the pid or tid in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParsedName {
    /// The kind the name stands for.
    pub kind: FileKind,
    /// The pid (task, mm, pages) or tid (core) the name carries.
    pub id: Option<u32>,
}

/// Parses a file name of a dump; `Err` says why it is not one.
///
/// Only the names this module generates are accepted: a plain name (no `/`, no `..`, no NUL,
/// at most [`MAX_NAME_LEN`] bytes) that is one of the fixed names or `<kind>-<id>.img` with
/// the id written in canonical decimal.
pub fn parse_name(name: &str) -> Result<ParsedName, &'static str> {
    if name.is_empty() {
        return Err("the name is empty");
    }
    if name.len() > MAX_NAME_LEN {
        return Err("the name is longer than 255 bytes");
    }
    if name.contains('/') || name.contains("..") || name.contains('\0') {
        return Err("a file name must be a plain name, without `/`, `..` or NUL");
    }
    let fixed = [
        (INVENTORY, FileKind::Inventory),
        (PSTREE, FileKind::PsTree),
        (FILES, FileKind::Files),
    ];
    if let Some((_, kind)) = fixed.iter().find(|(fixed, _)| *fixed == name) {
        return Ok(ParsedName {
            kind: *kind,
            id: None,
        });
    }
    let per_id = [
        ("task-", FileKind::Task),
        ("mm-", FileKind::Mm),
        ("pages-", FileKind::Pages),
        ("core-", FileKind::Core),
    ];
    for (prefix, kind) in per_id {
        let Some(digits) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.strip_suffix(".img"))
        else {
            continue;
        };
        let canonical = !digits.is_empty()
            && digits.bytes().all(|b| b.is_ascii_digit())
            && (digits == "0" || !digits.starts_with('0'));
        return match digits.parse::<u32>() {
            Ok(id) if canonical => Ok(ParsedName { kind, id: Some(id) }),
            _ => Err("the id in the name is not a decimal u32"),
        };
    }
    Err("not a crlab image file name")
}

/// The longest path an image may name (the kernel's `PATH_MAX`, NUL included).
pub const MAX_PATH_LEN: usize = 4096;

/// Checks that `path`, read from an image (a working directory, a descriptor's file, a mapped
/// file, the executable), is a path a dump records: what the kernel's `/proc` links give,
/// an absolute path in canonical form. `Err` says what is wrong.
///
/// A dump records canonical paths only, so anything else (relative, `.` or `..` components,
/// empty components, a NUL, over `PATH_MAX`) did not come from one, and is refused before the
/// restore acts on it. What a canonical path names at restore time is not checked here: see
/// `SECURITY.md`.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if !path.starts_with('/') {
        return Err("not an absolute path");
    }
    if path.len() >= MAX_PATH_LEN {
        return Err("longer than PATH_MAX");
    }
    if path.contains('\0') {
        return Err("it holds a NUL byte");
    }
    if path == "/" {
        return Ok(());
    }
    for part in path[1..].split('/') {
        match part {
            "" => return Err("an empty component (`//` or a trailing `/`)"),
            "." | ".." => return Err("a `.` or `..` component"),
            _ => {}
        }
    }
    Ok(())
}

/// A cgroup hierarchy of the image ([`schema::Cgroup`]) in words: `cgroup v2`, or
/// `the cgroup v1 hierarchy cpu,cpuacct` after its controllers.
pub fn cgroup_hierarchy(controllers: &str) -> String {
    if controllers.is_empty() {
        "cgroup v2".to_owned()
    } else {
        format!("the cgroup v1 hierarchy {controllers}")
    }
}

/// The path of a Unix socket name as the image holds it (`sun_path` as the kernel reports it,
/// with its terminating NUL for a path), or `None` for an abstract name or none.
pub fn unix_socket_path(name: &[u8]) -> Option<std::path::PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    if name.first() == Some(&0) || name.is_empty() {
        return None;
    }
    let end = name.iter().position(|&b| b == 0).unwrap_or(name.len());
    Some(std::path::PathBuf::from(std::ffi::OsStr::from_bytes(
        &name[..end],
    )))
}

/// Peer credentials as a refusal names them.
pub fn cred_text(c: &schema::PeerCred) -> String {
    let groups = if c.groups_known {
        format!(
            ", groups [{}]",
            c.groups
                .iter()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        )
    } else {
        String::new()
    };
    format!("pid {}, uid {}, gid {}{groups}", c.pid, c.uid, c.gid)
}

#[cfg(test)]
mod tests {
    #[test]
    fn unix_socket_paths_drop_the_terminating_nul() {
        use super::unix_socket_path;
        assert_eq!(
            unix_socket_path(b"/run/a.sock\0"),
            Some(std::path::PathBuf::from("/run/a.sock"))
        );
        assert_eq!(unix_socket_path(b"\0abstract"), None);
        assert_eq!(unix_socket_path(b""), None);
    }

    use super::*;

    #[test]
    fn only_canonical_absolute_paths_pass() {
        for ok in ["/", "/etc/passwd", "/tmp/a b/c", "/x/..y/.z"] {
            assert_eq!(check_path(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "",
            "etc/passwd",
            "/tmp/../etc",
            "/tmp/./x",
            "//etc",
            "/etc/",
            "/etc\0/x",
        ] {
            assert!(check_path(bad).is_err(), "{bad:?} was accepted");
        }
        assert!(check_path(&format!("/{}", "a".repeat(MAX_PATH_LEN))).is_err());
    }

    #[test]
    fn generated_names_parse_back() {
        for id in [0, 1, 4242, u32::MAX] {
            for (name, kind) in [
                (task_name(id), FileKind::Task),
                (mm_name(id), FileKind::Mm),
                (pages_name(id), FileKind::Pages),
                (core_name(id), FileKind::Core),
            ] {
                assert_eq!(parse_name(&name), Ok(ParsedName { kind, id: Some(id) }));
            }
        }
        for (name, kind) in [
            (INVENTORY, FileKind::Inventory),
            (PSTREE, FileKind::PsTree),
            (FILES, FileKind::Files),
        ] {
            assert_eq!(parse_name(name), Ok(ParsedName { kind, id: None }));
        }
    }

    #[test]
    fn hostile_names_are_rejected() {
        for name in [
            "",
            "..",
            "../inventory.img",
            "/etc/passwd",
            "task-1.img/..",
            "sub/pstree.img",
            "task-.img",
            "task-01.img",
            "task-+1.img",
            "task-4294967296.img",
            "task-1.img\0",
            "pstree.img.bak",
            "notes.txt",
        ] {
            assert!(parse_name(name).is_err(), "{name:?} was accepted");
        }
        assert!(parse_name(&"a".repeat(300)).is_err());
    }

    #[test]
    fn kinds_round_trip_through_their_numbers() {
        for kind in FileKind::ALL {
            assert_eq!(FileKind::from_u32(kind as u32), Some(kind));
        }
        assert_eq!(FileKind::from_u32(0), None);
        assert_eq!(FileKind::from_u32(8), None);
    }
}
