//! A scratch directory on a tmpfs (images of the benchmark), removed (and unmounted) on drop.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

const SHM: &str = "/dev/shm";

pub struct Scratch {
    path: PathBuf,
    /// Set when we mounted a tmpfs on `path` ourselves.
    mounted: Option<Shell>,
}

impl Scratch {
    /// A fresh directory named `prefix-XXXX` with room for `bytes`: in `/dev/shm` when that is a
    /// tmpfs with enough free space, else on a tmpfs mounted for it in the temporary directory.
    pub fn new(sh: &Shell, prefix: &str, bytes: u64) -> Result<Self> {
        if let Some(free) = tmpfs_free_bytes(Path::new(SHM)) {
            if free >= bytes {
                let path = fresh_dir(Path::new(SHM), prefix)?;
                return Ok(Self {
                    path,
                    mounted: None,
                });
            }
        }
        let path = fresh_dir(&std::env::temp_dir(), prefix)?;
        let size = format!("size={}k,mode=0700", bytes.div_ceil(1024));
        eprintln!(
            "notice: {SHM} is not a tmpfs with {bytes} bytes free: mounting a tmpfs on {}",
            path.display()
        );
        if let Err(err) = cmd!(sh, "mount -t tmpfs -o {size} crlab-bench {path}").run() {
            let _ = std::fs::remove_dir(&path);
            return Err(err).context("mounting a tmpfs for the benchmark's images (needs root)");
        }
        Ok(Self {
            path,
            mounted: Some(sh.clone()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let path = &self.path;
        if let Some(sh) = &self.mounted {
            if let Err(err) = cmd!(sh, "umount {path}").run() {
                eprintln!("warning: could not unmount {}: {err}", path.display());
                return;
            }
        }
        if let Err(err) = std::fs::remove_dir_all(path) {
            eprintln!("warning: could not remove {}: {err}", path.display());
        }
    }
}

/// Free bytes of the filesystem at `path` if it is a tmpfs.
fn tmpfs_free_bytes(path: &Path) -> Option<u64> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statfs is plain old data; all-zero is a valid value.
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string and `stat` a valid place to write to.
    if unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } != 0 {
        return None;
    }
    if stat.f_type != libc::TMPFS_MAGIC {
        return None;
    }
    let blocks = stat.f_bavail;
    let size = u64::try_from(stat.f_bsize).ok()?;
    Some(blocks.saturating_mul(size))
}

/// Creates `parent/prefix-XXXX` (mode 0700) under a name nobody holds yet.
fn fresh_dir(parent: &Path, prefix: &str) -> Result<PathBuf> {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or_default();
    for attempt in 0..100u32 {
        let suffix = (seed ^ std::process::id().rotate_left(16))
            .wrapping_add(attempt.wrapping_mul(0x9E37_79B9));
        let path = parent.join(format!("{prefix}-{:08x}", suffix));
        match std::fs::DirBuilder::new().mode(0o700).create(&path) {
            Ok(()) => return Ok(path),
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(err) => return Err(err).with_context(|| format!("creating {}", path.display())),
        }
    }
    anyhow::bail!(
        "could not find a free name for {prefix}-XXXX in {}",
        parent.display()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scratch_directory_is_fresh_and_removed() -> Result<()> {
        let sh = Shell::new()?;
        let (a, b) = (
            Scratch::new(&sh, "xtask-test", 4096)?,
            Scratch::new(&sh, "xtask-test", 4096)?,
        );
        assert_ne!(a.path(), b.path());
        std::fs::write(a.path().join("file"), b"x")?;
        let path = a.path().to_path_buf();
        drop(a);
        assert!(!path.exists());
        Ok(())
    }

    #[test]
    fn scratch_mounts_its_own_tmpfs_when_shm_is_too_small_needs_root() -> Result<()> {
        if !crate::is_root() {
            eprintln!("skipped: mounting a tmpfs needs root");
            return Ok(());
        }
        let sh = Shell::new()?;
        let scratch = Scratch::new(&sh, "xtask-test", 1 << 50)?;
        let path = scratch.path().to_path_buf();
        assert!(scratch.mounted.is_some());
        assert!(tmpfs_free_bytes(&path).is_some_and(|free| free > 1 << 40));
        drop(scratch);
        assert!(!path.exists());
        Ok(())
    }
}
