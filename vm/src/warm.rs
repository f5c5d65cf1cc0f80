//! Warm starts: the VM state saved once the guest agent was ready, resumed
//! with `-loadvm` instead of booting.
//!
//! The state lives as an internal snapshot in a qcow2 overlay of the base
//! image, kept in the cache under a key naming the image, QEMU's version and
//! the machine shape; each run boots a copy of it, so the saved state is
//! never written either.

use crate::image::LabImage;
use crate::qemu::VmConfig;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

/// The snapshot name inside the overlay.
pub const SNAPSHOT: &str = "crlab-ready";

#[derive(Debug, thiserror::Error)]
pub enum WarmError {
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("qemu-img create failed: {0}")]
    QemuImg(String),
}

/// The cache key of a saved state for this image and machine.
pub fn key(image: &LabImage, qemu_version: &str, config: &VmConfig) -> String {
    let mut h = Sha256::new();
    h.update(format!(
        "{}\n{}\n{:?}\n{}\n{}\n{}\n",
        image.key, qemu_version, config.accel, config.memory_mib, config.cpus, config.cmdline
    ));
    let hex = format!("{:x}", h.finalize());
    format!("{}-{}", image.key, &hex[..12])
}

pub fn path(cache: &Path, key: &str) -> PathBuf {
    cache.join("warm").join(format!("{key}.qcow2"))
}

/// A fresh overlay for one run: a copy of the saved state if there is one
/// (returns true), else an empty overlay on the base image (false).
pub fn prepare_disk(image: &LabImage, saved: &Path, disk: &Path) -> Result<bool, WarmError> {
    if saved.exists() {
        std::fs::copy(saved, disk).map_err(|source| WarmError::Io {
            what: "copying the saved VM state",
            path: saved.to_path_buf(),
            source,
        })?;
        return Ok(true);
    }
    let out = Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "qcow2", "-b"])
        .arg(&image.base)
        .arg(disk)
        .output()
        .map_err(|source| WarmError::Io {
            what: "running qemu-img for",
            path: disk.to_path_buf(),
            source,
        })?;
    if !out.status.success() {
        return Err(WarmError::QemuImg(
            String::from_utf8_lossy(&out.stderr).trim().to_string(),
        ));
    }
    Ok(false)
}

/// Keeps a copy of `disk` (which now holds the snapshot) as the saved state.
pub fn store(disk: &Path, saved: &Path) -> Result<(), WarmError> {
    let io = |what, source| WarmError::Io {
        what,
        path: saved.to_path_buf(),
        source,
    };
    if let Some(dir) = saved.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("creating the directory of", e))?;
    }
    let tmp = saved.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::copy(disk, &tmp).map_err(|e| io("saving", e))?;
    std::fs::rename(&tmp, saved).map_err(|e| io("saving", e))
}

/// `qemu-system-x86_64 --version`, first line.
pub fn qemu_version(program: &str) -> String {
    Command::new(program)
        .arg("--version")
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .next()
                .unwrap_or("")
                .to_string()
        })
        .unwrap_or_default()
}
