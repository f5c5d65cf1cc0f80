//! The per-user cache of lab images and saved VM states, and its lock.

use nix::fcntl::{Flock, FlockArg};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot find a cache directory: set CRLAB_CACHE_DIR or HOME")]
    NoHome,
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("another crlab run has held the cache lock {path} for {waited:?}; wait for it to finish or remove the stale lock holder")]
    Busy { path: PathBuf, waited: Duration },
}

/// The cache directory: `$CRLAB_CACHE_DIR`, else `$XDG_CACHE_HOME/crlab`, else `~/.cache/crlab`.
pub fn cache_dir() -> Result<PathBuf, CacheError> {
    if let Some(d) = std::env::var_os("CRLAB_CACHE_DIR") {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME") {
        return Ok(PathBuf::from(d).join("crlab"));
    }
    std::env::var_os("HOME")
        .map(|h| PathBuf::from(h).join(".cache").join("crlab"))
        .ok_or(CacheError::NoHome)
}

/// An exclusive lock on one cache entry, released on drop.
#[derive(Debug)]
pub struct CacheLock {
    _lock: Flock<File>,
    pub path: PathBuf,
}

/// Takes the lock at `path` (created if missing), waiting at most `wait`.
pub fn lock(path: &Path, wait: Duration) -> Result<CacheLock, CacheError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| CacheError::Io {
            what: "creating",
            path: parent.to_path_buf(),
            source,
        })?;
    }
    let start = Instant::now();
    let mut file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)
        .map_err(|source| CacheError::Io {
            what: "opening the lock",
            path: path.to_path_buf(),
            source,
        })?;
    loop {
        match Flock::lock(file, FlockArg::LockExclusiveNonblock) {
            Ok(lock) => {
                return Ok(CacheLock {
                    _lock: lock,
                    path: path.to_path_buf(),
                })
            }
            Err((f, _)) => {
                if start.elapsed() >= wait {
                    return Err(CacheError::Busy {
                        path: path.to_path_buf(),
                        waited: start.elapsed(),
                    });
                }
                file = f;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_holder_waits_then_gives_up_with_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("images").join("x.lock");
        let first = lock(&path, Duration::from_secs(1)).unwrap();
        let err = lock(&path, Duration::from_millis(300)).unwrap_err();
        assert!(err.to_string().contains("another crlab run"), "{err}");
        drop(first);
        lock(&path, Duration::from_millis(300)).unwrap();
    }
}
