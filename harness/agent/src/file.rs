//! Files written and read for the host (`WriteFile`, `ReadFile`).

use std::{
    fs::{self, OpenOptions, Permissions},
    io::{self, Read, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
};

use crlab_protocol::frame::MAX_FRAME;

use crlab_protocol::{FileData, ReadFile, WriteAt, WriteFile};

/// Room left in a frame for the rest of the response around the file's bytes.
const HEADROOM: u64 = 64 << 10;

/// The largest file `ReadFile` returns.
pub const READ_LIMIT: u64 = MAX_FRAME as u64 - HEADROOM;

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("the path is empty")]
    NoPath,
    #[error("creating the directories above {path}")]
    Parents {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("writing at offset {offset} of {path}")]
    WriteAt {
        path: PathBuf,
        offset: u64,
        #[source]
        source: io::Error,
    },
    #[error("setting mode {mode:o} on {path}")]
    Mode {
        path: PathBuf,
        mode: u32,
        #[source]
        source: io::Error,
    },
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is larger than the {READ_LIMIT} bytes a response can carry; read it in pieces with a command (dd, split)")]
    TooLarge { path: PathBuf },
}

/// Creates (with its parent directories) or replaces `path`, or appends to it; a non-zero
/// `mode` is set whatever the umask. A running binary (ETXTBSY) is replaced by rename.
pub fn write(req: &WriteFile) -> Result<(), FileError> {
    let path = check_path(&req.path)?;
    if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        fs::create_dir_all(parent).map_err(|source| FileError::Parents {
            path: path.to_owned(),
            source,
        })?;
    }
    let write_err = |source| FileError::Write {
        path: path.to_owned(),
        source,
    };
    match write_at(path, req) {
        Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && !req.append => {
            let mut temp = path.as_os_str().to_owned();
            temp.push(".crlab-new");
            let temp = PathBuf::from(temp);
            write_at(&temp, req)
                .and_then(|()| fs::rename(&temp, path))
                .map_err(write_err)?;
        }
        other => other.map_err(write_err)?,
    }
    if req.mode != 0 {
        fs::set_permissions(path, Permissions::from_mode(req.mode)).map_err(|source| {
            FileError::Mode {
                path: path.to_owned(),
                mode: req.mode,
                source,
            }
        })?;
    }
    tracing::debug!(path = %path.display(), bytes = req.data.len(), append = req.append, "wrote");
    Ok(())
}

fn write_at(path: &Path, req: &WriteFile) -> io::Result<()> {
    let mut options = OpenOptions::new();
    options
        .create(true)
        .mode(if req.mode != 0 { req.mode } else { 0o644 });
    if req.append {
        options.append(true);
    } else {
        options.write(true).truncate(true);
    }
    let mut file = options.open(path)?;
    file.write_all(&req.data)?;
    file.sync_data()
}

/// Writes `data` at `offset` of the existing file `path`, keeping the rest of it.
pub fn write_into(req: &WriteAt) -> Result<(), FileError> {
    use std::os::unix::fs::FileExt;
    let path = check_path(&req.path)?;
    OpenOptions::new()
        .write(true)
        .open(path)
        .and_then(|f| f.write_all_at(&req.data, req.offset))
        .map_err(|source| FileError::WriteAt {
            path: path.to_owned(),
            offset: req.offset,
            source,
        })
}

/// The whole of `path`, if it fits a response.
pub fn read(req: &ReadFile) -> Result<FileData, FileError> {
    let path = check_path(&req.path)?;
    let read_err = |source| FileError::Read {
        path: path.to_owned(),
        source,
    };
    let file = fs::File::open(path).map_err(read_err)?;
    // Bounded by reading, not by the size stat gives (procfs and sysfs files say 0).
    let mut data = Vec::new();
    file.take(READ_LIMIT + 1)
        .read_to_end(&mut data)
        .map_err(read_err)?;
    if data.len() as u64 > READ_LIMIT {
        return Err(FileError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(FileData { data })
}

/// What [`write`] and [`read`] refuse before they act: an empty path. Pure.
pub fn check_path(path: &str) -> Result<&Path, FileError> {
    if path.is_empty() {
        Err(FileError::NoPath)
    } else {
        Ok(Path::new(path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_write_at_an_offset_keeps_the_rest_and_needs_the_file() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("data");
        fs::write(&path, b"abcdef").unwrap();
        let at = |p: &Path, offset| WriteAt {
            path: p.to_str().unwrap().to_owned(),
            offset,
            data: b"XY".to_vec(),
        };
        write_into(&at(&path, 2)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"abXYef");
        write_into(&at(&path, 5)).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"abXYeXY");
        let missing = tmp.path().join("missing");
        let e = write_into(&at(&missing, 0)).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("writing at offset 0 of {}", missing.display())
        );
        assert!(!missing.exists());
    }
}
