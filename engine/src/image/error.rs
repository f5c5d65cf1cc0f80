//! `ImageError`: everything that can go wrong reading or writing a dump, each naming the file.

use std::path::PathBuf;

use super::FileKind;

/// An error of the image layer. Every variant names the file it is about.
#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    /// A system call on an image file or the images directory failed.
    #[error("{}: failed to {op}", .path.display())]
    Io {
        path: PathBuf,
        /// What was being done, as a verb phrase ("read", "create", "fsync", ...).
        op: &'static str,
        #[source]
        source: std::io::Error,
    },

    /// `pstree.img` does not describe a tree the restore can rebuild: the root first, every
    /// parent before its children, each process's leader first among its threads.
    #[error(
        "{}: not a process tree the restore can rebuild: {problem}",
        .path.display()
    )]
    ProcessTree { path: PathBuf, problem: String },

    /// The directory has no inventory: the dump never finished, or it is not a dump at all.
    #[error(
        "{} is missing, so {} is not a complete crlab dump: the dump was interrupted before \
         it finished, or the directory is not a crlab images directory",
        .path.display(),
        .path.parent().unwrap_or(.path).display()
    )]
    Incomplete {
        /// The path of the missing `inventory.img`.
        path: PathBuf,
    },

    /// The file does not start with the crlab magic.
    #[error(
        "{}: not a crlab image file (it starts with \"{}\", not \"CRLAB\\0\\0\\0\")",
        .path.display(),
        .found.escape_ascii()
    )]
    BadMagic {
        path: PathBuf,
        /// The first bytes of the file (at most 8).
        found: Vec<u8>,
    },

    /// The header carries a format version this crlab cannot read.
    #[error("{}: {}", .path.display(), version_problem(*.found, *.supported))]
    UnsupportedVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
    },

    /// The header says the file holds another kind of data than the one asked for.
    #[error(
        "{}: holds {} data, expected {}",
        .path.display(),
        kind_label(*.found),
        .expected
    )]
    WrongKind {
        path: PathBuf,
        expected: FileKind,
        /// The kind number found in the header (or asked for by the writer's caller).
        found: u32,
    },

    /// The file ends before what it must contain.
    #[error(
        "{}: truncated in the {what}: needs {needed} bytes, the file has {available}",
        .path.display()
    )]
    Truncated {
        path: PathBuf,
        /// The part of the file the end falls in ("header", "length prefix", "message", ...).
        what: &'static str,
        needed: u64,
        available: u64,
    },

    /// A length prefix claims more than [`super::MAX_MESSAGE_LEN`].
    #[error(
        "{}: message length {len} exceeds the limit of {limit} bytes (the file is damaged or \
         not a crlab image)",
        .path.display()
    )]
    TooLarge { path: PathBuf, len: u64, limit: u64 },

    /// Bytes follow what the file is supposed to end with.
    #[error("{}: {bytes} unexpected bytes after {what}", .path.display())]
    TrailingData {
        path: PathBuf,
        /// What the extra bytes follow ("the message", "the page data read", ...).
        what: &'static str,
        bytes: u64,
    },

    /// The message does not decode as the expected protobuf type.
    #[error("{}: the message does not decode", .path.display())]
    Decode {
        path: PathBuf,
        #[source]
        source: prost::DecodeError,
    },

    /// A message could not be encoded.
    #[error("{}: failed to encode the message", .path.display())]
    Encode {
        path: PathBuf,
        #[source]
        source: prost::EncodeError,
    },

    /// The file's contents do not match the checksum the inventory recorded.
    #[error(
        "{}: checksum mismatch (the inventory records xxh3 {expected:016x}, the file has \
         {found:016x}): the image is damaged",
        .path.display()
    )]
    Checksum {
        path: PathBuf,
        expected: u64,
        found: u64,
    },

    /// The file's size differs from the size the inventory recorded.
    #[error(
        "{}: size mismatch (the inventory records {expected} bytes, the file has {found}): the \
         image is truncated or was modified",
        .path.display()
    )]
    SizeMismatch {
        path: PathBuf,
        expected: u64,
        found: u64,
    },

    /// The inventory lists the file but it does not exist.
    #[error("{}: listed in the inventory but missing", .path.display())]
    Missing { path: PathBuf },

    /// A file was asked for that the inventory does not list.
    #[error("{}: not listed in the inventory of this dump", .path.display())]
    NotListed { path: PathBuf },

    /// A file name (in the inventory, or given to the writer) is not one a dump may hold.
    #[error("{}: bad image file name {name:?}: {reason}", .path.display())]
    BadFileName {
        /// The inventory that lists the name, or the directory the writer writes into.
        path: PathBuf,
        name: String,
        reason: &'static str,
    },

    /// A file name appears twice (in the inventory, or given twice to the writer).
    #[error("{}: file {name:?} is listed twice", .path.display())]
    DuplicateFile { path: PathBuf, name: String },

    /// An image path is a directory, FIFO, device or socket.
    #[error("{}: not a regular file", .path.display())]
    NotRegularFile { path: PathBuf },

    /// Page data that is not a whole number of pages.
    #[error(
        "{}: {len} bytes of page data is not a whole number of {page_size}-byte pages",
        .path.display()
    )]
    PartialPage {
        path: PathBuf,
        len: u64,
        page_size: u64,
    },

    /// A decoded message could not be turned into JSON (`crlab show`).
    #[error("{}: failed to render the message as JSON", .path.display())]
    Json {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

impl ImageError {
    /// The file (or directory) the error is about.
    pub fn path(&self) -> &std::path::Path {
        match self {
            ImageError::Io { path, .. }
            | ImageError::Incomplete { path }
            | ImageError::BadMagic { path, .. }
            | ImageError::UnsupportedVersion { path, .. }
            | ImageError::WrongKind { path, .. }
            | ImageError::Truncated { path, .. }
            | ImageError::TooLarge { path, .. }
            | ImageError::TrailingData { path, .. }
            | ImageError::Decode { path, .. }
            | ImageError::Encode { path, .. }
            | ImageError::Checksum { path, .. }
            | ImageError::SizeMismatch { path, .. }
            | ImageError::Missing { path }
            | ImageError::NotListed { path }
            | ImageError::BadFileName { path, .. }
            | ImageError::DuplicateFile { path, .. }
            | ImageError::NotRegularFile { path }
            | ImageError::PartialPage { path, .. }
            | ImageError::Json { path, .. }
            | ImageError::ProcessTree { path, .. } => path,
        }
    }
}

/// Why an images directory or file is refused before it is written or read: the source of an
/// [`ImageError::Io`] (whose `path` names it), of kind `DirectoryNotEmpty` or
/// `PermissionDenied`.
#[derive(Debug, thiserror::Error)]
pub enum Refusal {
    /// A new dump was asked for in a directory that already holds files.
    #[error(
        "it is not empty, and a new dump would mix with what it holds; dump into a new or empty \
         directory, or pass --replace to replace its contents whole"
    )]
    NotEmpty,
    /// A directory or file that another user than the caller (or root) could have written.
    #[error(
        "{problem}, so another user could have written the images, and a restore acts on what \
         they say with the caller's privileges; make it the caller's (or root's) and not \
         writable by group or others (chown, chmod go-w), or pass --allow-untrusted-images if \
         you trust whoever could write it"
    )]
    Untrusted { problem: String },
}

impl Refusal {
    /// The refusal of `path`, for `op` ("dump into", "read as images").
    pub(crate) fn of(self, path: &std::path::Path, op: &'static str) -> ImageError {
        let kind = match self {
            Refusal::NotEmpty => std::io::ErrorKind::DirectoryNotEmpty,
            Refusal::Untrusted { .. } => std::io::ErrorKind::PermissionDenied,
        };
        ImageError::Io {
            path: path.to_owned(),
            op,
            source: std::io::Error::new(kind, self),
        }
    }
}

fn version_problem(found: u32, supported: u32) -> String {
    if found > supported {
        format!(
            "format version {found} was written by a newer crlab; this crlab reads version \
             {supported} only (use a newer crlab)"
        )
    } else {
        format!("unsupported format version {found}; this crlab reads version {supported} only")
    }
}

fn kind_label(found: u32) -> String {
    match FileKind::from_u32(found) {
        Some(kind) => kind.to_string(),
        None => format!("unknown kind {found}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_version_says_so() {
        let err = ImageError::UnsupportedVersion {
            path: "/d/pstree.img".into(),
            found: 2,
            supported: 1,
        };
        let text = err.to_string();
        assert!(text.starts_with("/d/pstree.img: "), "{text}");
        assert!(text.contains("written by a newer crlab"), "{text}");

        let old = ImageError::UnsupportedVersion {
            path: "/d/pstree.img".into(),
            found: 0,
            supported: 1,
        };
        assert!(!old.to_string().contains("newer"), "{old}");
    }

    #[test]
    fn bad_magic_shows_the_bytes_escaped() {
        let err = ImageError::BadMagic {
            path: "/d/x.img".into(),
            found: b"\x7fELF\x02\x01\x01\x00".to_vec(),
        };
        assert_eq!(
            err.to_string(),
            "/d/x.img: not a crlab image file (it starts with \"\\x7fELF\\x02\\x01\\x01\\x00\", \
             not \"CRLAB\\0\\0\\0\")"
        );
    }

    #[test]
    fn incomplete_names_the_directory_and_the_hint() {
        let err = ImageError::Incomplete {
            path: "/dumps/a/inventory.img".into(),
        };
        let text = err.to_string();
        assert!(text.contains("/dumps/a/inventory.img is missing"), "{text}");
        assert!(
            text.contains("/dumps/a is not a complete crlab dump"),
            "{text}"
        );
        assert!(text.contains("interrupted"), "{text}");
    }

    #[test]
    fn wrong_kind_names_both_kinds() {
        let err = ImageError::WrongKind {
            path: "/d/mm-1.img".into(),
            expected: FileKind::Mm,
            found: 99,
        };
        assert_eq!(
            err.to_string(),
            "/d/mm-1.img: holds unknown kind 99 data, expected mm"
        );
    }
}
