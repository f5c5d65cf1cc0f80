//! The lab image: a Debian guest with SELinux enforcing, built once from
//! Debian's packages with mmdebstrap, labelled offline with `setfiles`, turned
//! into an ext4 disk without loop mounts (`mke2fs -d`), and cached under a key
//! that hashes the whole recipe. Its policy is Debian's refpolicy, or Fedora's
//! policy (and container-selinux) built on the host first (`crate::policy`).
//!
//! **Invariant:** the cached base disk is never written: every run boots an
//! overlay of it.

use crate::cache::{self, CacheError};
use crate::policy::{self, build::BuiltPolicy, PolicyError, ResolvedPolicy};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Bump when the build steps change in a way the recipe does not show.
const BUILDER_VERSION: u32 = 1;
/// Bump when the steps that install a policy built on the host change.
const POLICY_BUILDER_VERSION: u32 = 1;
const DISK_SIZE: &str = "3G";

/// What goes into a lab image.
#[derive(Debug, Clone)]
pub struct Recipe {
    pub name: String,
    pub suite: String,
    pub mirror: String,
    pub packages: Vec<String>,
    /// Files placed in the image: (absolute path, contents, mode).
    pub files: Vec<(String, Vec<u8>, u32)>,
    /// Files placed in the image but left out of its key: the guest agent,
    /// which is replaced over the channel when the host has a newer one.
    pub unkeyed_files: Vec<(String, Vec<u8>, u32)>,
    /// Symlinks placed in the image: (link, target) — enabling and masking units.
    pub links: Vec<(String, String)>,
    /// SELinux policy modules installed with `semodule -i` (name.cil, contents).
    pub policy_modules: Vec<(String, Vec<u8>)>,
    /// The policies built on the host and installed as the image's policy (Fedora's, and
    /// container-selinux), with `policy_modules` on top; `None`: the policy comes from
    /// `packages` (Debian's refpolicy).
    pub policy: Option<Arc<ResolvedPolicy>>,
    /// Modules (name.cil, contents) each compiled at build time, alone, on top of the
    /// image's policy into a binary policy at [`POLICY_VARIANTS_DIR`]`/NAME` (NAME without
    /// `.cil`), next to the image's own policy as `base`: the lab switches policies with one
    /// load of a precompiled file instead of a `semodule` rebuild in the guest.
    pub policy_variants: Vec<(String, Vec<u8>)>,
}

/// Where an image keeps its precompiled binary policies (`Recipe::policy_variants`).
pub const POLICY_VARIANTS_DIR: &str = "/usr/lib/crlab/policy-variants";
/// The name of the image's own policy among its precompiled variants.
pub const BASE_VARIANT: &str = "base";

impl Recipe {
    /// A hash of everything that shapes the image.
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        h.update(format!(
            "builder {BUILDER_VERSION}\n{}\n{}\n{}\n",
            self.name, self.suite, self.mirror
        ));
        for p in &self.packages {
            h.update(format!("pkg {p}\n"));
        }
        for (path, data, mode) in &self.files {
            h.update(format!("file {path} {mode:o} {}\n", data.len()));
            h.update(data);
        }
        for (l, t) in &self.links {
            h.update(format!("link {l} {t}\n"));
        }
        for (n, data) in &self.policy_modules {
            h.update(format!("module {n} {}\n", data.len()));
            h.update(data);
        }
        for (n, data) in &self.policy_variants {
            h.update(format!("variant {n} {}\n", data.len()));
            h.update(data);
        }
        // Nothing more for Debian's own policy: the default image keeps its key.
        if let Some(p) = self.policy.as_ref().filter(|p| p.distro.is_some()) {
            h.update(format!("policy-builder {POLICY_BUILDER_VERSION}\n"));
            h.update(p.key_lines());
        }
        let hex = format!("{:x}", h.finalize());
        format!("{}-{}", self.name, &hex[..16])
    }
}

/// A built, verified image in the cache.
#[derive(Debug, Clone)]
pub struct LabImage {
    pub key: String,
    pub dir: PathBuf,
    pub base: PathBuf,
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    key: String,
    built_unix: u64,
    build_seconds: f64,
    files: Vec<ManifestFile>,
}

#[derive(Debug, Serialize, Deserialize)]
struct ManifestFile {
    name: String,
    size: u64,
    sha256: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error("{step} failed: {detail}")]
    Step { step: String, detail: String },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("building the lab image needs root (mmdebstrap, chroot, setfiles); run as root")]
    NotRoot,
    #[error(transparent)]
    Policy(#[from] PolicyError),
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> ImageError + 'a {
    move |source| ImageError::Io {
        what,
        path: path.to_path_buf(),
        source,
    }
}

const FILES: [&str; 3] = ["base.qcow2", "vmlinuz", "initrd.img"];

fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(format!("{:x}", h.finalize()))
}

/// Checks a cache entry against its manifest; `Err` says what is wrong.
fn verify(dir: &Path, key: &str) -> Result<(), String> {
    let text = std::fs::read_to_string(dir.join("manifest.json"))
        .map_err(|e| format!("no manifest ({e})"))?;
    let m: Manifest =
        serde_json::from_str(&text).map_err(|e| format!("unreadable manifest ({e})"))?;
    if m.key != key {
        return Err(format!("manifest is for {}", m.key));
    }
    for name in FILES {
        let f = m
            .files
            .iter()
            .find(|f| f.name == name)
            .ok_or(format!("{name} missing from the manifest"))?;
        let path = dir.join(name);
        let size = std::fs::metadata(&path)
            .map(|md| md.len())
            .map_err(|e| format!("{name}: {e}"))?;
        if size != f.size {
            return Err(format!(
                "{name} is {size} bytes, the manifest says {}",
                f.size
            ));
        }
        let sum = sha256_file(&path).map_err(|e| format!("{name}: {e}"))?;
        if sum != f.sha256 {
            return Err(format!("{name} does not match its checksum"));
        }
    }
    Ok(())
}

/// Returns the cached image for `recipe`, building it first if it is
/// missing or fails verification. `progress` hears about long steps.
pub fn ensure(recipe: &Recipe, progress: &mut dyn FnMut(&str)) -> Result<LabImage, ImageError> {
    let root = cache::cache_dir()?.join("images");
    let key = recipe.key();
    let dir = root.join(&key);
    let _lock = cache::lock(&root.join(format!("{key}.lock")), Duration::from_secs(1800))?;
    let image = LabImage {
        key: key.clone(),
        base: dir.join("base.qcow2"),
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        dir: dir.clone(),
    };
    if dir.exists() {
        match verify(&dir, &key) {
            Ok(()) => return Ok(image),
            Err(why) => {
                progress(&format!(
                    "cached image {key} is damaged ({why}); rebuilding it"
                ));
                std::fs::remove_dir_all(&dir).map_err(io("removing", &dir))?;
            }
        }
    }
    build(recipe, &root, &key, progress)?;
    // Images of policies under test are kept a little longer: comparing two policies
    // alternates between two images.
    let keep_others = if recipe.policy.is_some() { 2 } else { 0 };
    prune(&root, &recipe.name, &key, keep_others, progress);
    Ok(image)
}

/// Removes older images of the same recipe name (and their saved states), but the newest
/// `keep_others`: a recipe change would otherwise grow the cache by an image each time. An
/// entry is `NAME-` and the key's 16 hex digits, so `debian-12` never prunes
/// `debian-12-fedora-...`.
fn prune(root: &Path, name: &str, keep: &str, keep_others: usize, progress: &mut dyn FnMut(&str)) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    let mut old: Vec<(std::time::SystemTime, std::fs::DirEntry)> = rd
        .flatten()
        .filter(|e| {
            let n = e.file_name().to_string_lossy().into_owned();
            n != keep && e.path().is_dir() && is_entry_of(&n, name)
        })
        .map(|e| {
            let built = std::fs::metadata(e.path().join("manifest.json"))
                .and_then(|m| m.modified())
                .unwrap_or(std::time::UNIX_EPOCH);
            (built, e)
        })
        .collect();
    old.sort_by_key(|(built, _)| std::cmp::Reverse(*built));
    for (_, e) in old.into_iter().skip(keep_others) {
        let n = e.file_name().to_string_lossy().into_owned();
        // Only an entry nobody holds: its lock must be free.
        let Ok(_lock) = cache::lock(&root.join(format!("{n}.lock")), Duration::from_millis(10))
        else {
            continue;
        };
        if std::fs::remove_dir_all(e.path()).is_ok() {
            let _ = std::fs::remove_file(root.join(format!("{n}.lock")));
            if let Some(warm) = root.parent().map(|c| c.join("warm")) {
                if let Ok(ws) = std::fs::read_dir(&warm) {
                    for w in ws.flatten() {
                        if w.file_name()
                            .to_string_lossy()
                            .starts_with(&format!("{n}-"))
                        {
                            let _ = std::fs::remove_file(w.path());
                        }
                    }
                }
            }
            progress(&format!("removed the outdated lab image {n}"));
        }
    }
}

/// Whether a cache entry's name is `NAME-` and 16 hex digits (not a lock, a build
/// directory, or another recipe's image whose name starts with NAME).
fn is_entry_of(entry: &str, name: &str) -> bool {
    entry
        .strip_prefix(name)
        .and_then(|r| r.strip_prefix('-'))
        .is_some_and(|rest| rest.len() == 16 && rest.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// Cached images: (key, bytes).
pub fn list() -> Result<Vec<(String, u64)>, ImageError> {
    let root = cache::cache_dir()?.join("images");
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(&root) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                let size = FILES
                    .iter()
                    .filter_map(|f| std::fs::metadata(e.path().join(f)).ok())
                    .map(|m| m.len())
                    .sum();
                out.push((e.file_name().to_string_lossy().into_owned(), size));
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Removes every cached image and saved VM state.
pub fn clean() -> Result<(), ImageError> {
    let root = cache::cache_dir()?;
    for sub in ["images", "warm"] {
        let d = root.join(sub);
        if d.exists() {
            std::fs::remove_dir_all(&d).map_err(io("removing", &d))?;
        }
    }
    Ok(())
}

fn run(step: &str, cmd: &mut Command) -> Result<String, ImageError> {
    let out = cmd.output().map_err(|e| ImageError::Step {
        step: step.into(),
        detail: format!("cannot run {:?}: {e}", cmd.get_program()),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        return Err(ImageError::Step {
            step: step.into(),
            detail: format!(
                "{} ({})",
                lines[lines.len().saturating_sub(15)..].join("\n"),
                out.status
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// /proc mounted inside the build root for as long as this lives.
struct ProcMount(PathBuf);

impl ProcMount {
    fn new(root: &Path) -> Result<ProcMount, ImageError> {
        let target = root.join("proc");
        run(
            "mounting /proc in the build root",
            Command::new("mount")
                .args(["-t", "proc", "proc"])
                .arg(&target),
        )?;
        Ok(ProcMount(target))
    }
}

impl Drop for ProcMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// Removes the build directories that killed builds left in `root` (`KEY.build-PID` whose PID
/// is gone). mmdebstrap may have left filesystems mounted in them (proc, sys, dev/pts,
/// dev/shm): those are unmounted first, deepest first, and a directory that still has a mount
/// under it is left alone (removing files through a mount could reach the host's).
fn sweep_stale_builds(root: &Path, progress: &mut dyn FnMut(&str)) {
    let Ok(rd) = std::fs::read_dir(root) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .rsplit_once(".build-")
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if Path::new(&format!("/proc/{pid}")).exists() {
            continue;
        }
        let dir = e.path();
        let mounts = |dir: &Path| {
            std::fs::read_to_string("/proc/self/mountinfo")
                .map(|text| mounts_under(&text, dir))
                .unwrap_or_default()
        };
        for m in mounts(&dir) {
            let _ = Command::new("umount").arg("-l").arg(&m).status();
        }
        let left = mounts(&dir);
        if !left.is_empty() {
            let left: Vec<String> = left.iter().map(|m| m.display().to_string()).collect();
            progress(&format!(
                "warning: {} was left by a killed build and still has mounts under it ({}); \
                 unmount them and remove it by hand",
                dir.display(),
                left.join(", ")
            ));
            continue;
        }
        if std::fs::remove_dir_all(&dir).is_ok() {
            progress(&format!(
                "removed {}, left by a killed image build",
                dir.display()
            ));
        }
    }
}

/// The mount points in `mountinfo` (the text of `/proc/self/mountinfo`) at or under `dir`,
/// deepest first.
fn mounts_under(mountinfo: &str, dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = mountinfo
        .lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(unescape_mountinfo)
        .map(PathBuf::from)
        .filter(|m| m.starts_with(dir))
        .collect();
    out.sort_by_key(|m| std::cmp::Reverse(m.components().count()));
    out.dedup();
    out
}

/// A mountinfo path with its octal escapes (`\040` for a space, ...) decoded.
fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            std::str::from_utf8(d)
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The build directory, removed unless the build finished.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn build(
    recipe: &Recipe,
    root: &Path,
    key: &str,
    progress: &mut dyn FnMut(&str),
) -> Result<(), ImageError> {
    if !nix::unistd::geteuid().is_root() {
        return Err(ImageError::NotRoot);
    }
    let start = Instant::now();
    // A policy built on the host comes first: one that does not build stops here, with the
    // compiler's message, before anything is downloaded or booted.
    let built = match recipe.policy.as_ref().filter(|p| p.distro.is_some()) {
        Some(p) => Some(policy::build::fedora(p, progress)?),
        None => None,
    };
    let policy_built = start.elapsed();
    sweep_stale_builds(root, progress);
    let tmp = root.join(format!("{key}.build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).map_err(io("creating", &tmp))?;
    let scratch = Scratch(tmp.clone());
    let rootfs = tmp.join("rootfs");

    progress(&format!(
        "building lab image {key}: mmdebstrap {} ({} packages, from Debian's mirror; about 2-3 minutes)",
        recipe.suite,
        recipe.packages.len()
    ));
    let phase = Instant::now();
    run(
        "mmdebstrap",
        Command::new("mmdebstrap")
            .args([
                "--variant=apt",
                "--mode=root",
                "--format=directory",
                "--components=main",
            ])
            .arg(format!("--include={}", recipe.packages.join(",")))
            .arg(&recipe.suite)
            .arg(&rootfs)
            .arg(&recipe.mirror),
    )?;
    let rootfs_time = phase.elapsed();

    progress("lab image: configuring (files, units, SELinux enforcing)");
    for (path, data, mode) in recipe.files.iter().chain(&recipe.unkeyed_files) {
        let dest = rootfs.join(path.trim_start_matches('/'));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
        std::fs::write(&dest, data).map_err(io("writing", &dest))?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(*mode))
            .map_err(io("chmod", &dest))?;
    }
    for (link, target) in &recipe.links {
        let dest = rootfs.join(link.trim_start_matches('/'));
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io("creating", parent))?;
        }
        let _ = std::fs::remove_file(&dest);
        std::os::unix::fs::symlink(target, &dest).map_err(io("linking", &dest))?;
    }
    let policy_name = match &built {
        Some(_) => policy::build::FEDORA_POLICY_NAME,
        None => "default",
    };
    let config = rootfs.join("etc/selinux/config");
    if built.is_some() {
        std::fs::create_dir_all(rootfs.join("etc/selinux"))
            .map_err(io("creating", &rootfs.join("etc/selinux")))?;
        std::fs::write(&config, selinux_config(policy_name)).map_err(io("writing", &config))?;
    } else {
        let text = std::fs::read_to_string(&config).map_err(io("reading", &config))?;
        let text: String = text
            .lines()
            .map(|l| {
                if l.starts_with("SELINUX=") {
                    "SELINUX=enforcing"
                } else {
                    l
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        std::fs::write(&config, text + "\n").map_err(io("writing", &config))?;
    }

    let phase = Instant::now();
    {
        let _proc = ProcMount::new(&rootfs)?;
        match &built {
            Some(b) => install_built(&rootfs, b, &recipe.policy_modules, progress)?,
            None => {
                for (name, data) in &recipe.policy_modules {
                    progress(&format!("lab image: installing policy module {name}"));
                    let dest = rootfs.join("tmp").join(name);
                    std::fs::write(&dest, data).map_err(io("writing", &dest))?;
                    run(
                        &format!("semodule -i {name}"),
                        Command::new("chroot")
                            .arg(&rootfs)
                            .args(["semodule", "-i"])
                            .arg(format!("/tmp/{name}")),
                    )?;
                    let _ = std::fs::remove_file(&dest);
                }
            }
        }
        let store_time = phase.elapsed();
        let phase = Instant::now();
        compile_variants(&rootfs, policy_name, &recipe.policy_variants, progress)?;
        let variants_time = phase.elapsed();
        progress("lab image: labelling files offline (setfiles)");
        let phase = Instant::now();
        run(
            "setfiles",
            Command::new("chroot").arg(&rootfs).args([
                "setfiles",
                "-F",
                "-e",
                "/proc",
                "-e",
                "/sys",
                "-e",
                "/dev",
                &format!("/etc/selinux/{policy_name}/contexts/files/file_contexts"),
                "/",
            ]),
        )?;
        progress(&format!(
            "lab image: phases: policy build {:.0} s, rootfs {:.0} s, policy store {:.0} s, policy variants {:.0} s, setfiles {:.0} s",
            policy_built.as_secs_f64(),
            rootfs_time.as_secs_f64(),
            store_time.as_secs_f64(),
            variants_time.as_secs_f64(),
            phase.elapsed().as_secs_f64()
        ));
    }
    drop(built);

    progress("lab image: kernel, initrd and the ext4 disk (mke2fs -d, no loop mounts)");
    let boot = rootfs.join("boot");
    let mut kernel = None;
    let mut initrd = None;
    for e in std::fs::read_dir(&boot)
        .map_err(io("reading", &boot))?
        .flatten()
    {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with("vmlinuz-") {
            kernel = Some(e.path());
        } else if n.starts_with("initrd.img-") {
            initrd = Some(e.path());
        }
    }
    let (Some(kernel), Some(initrd)) = (kernel, initrd) else {
        return Err(ImageError::Step {
            step: "finding the kernel".into(),
            detail: format!("no vmlinuz-*/initrd.img-* in {}", boot.display()),
        });
    };
    std::fs::copy(&kernel, tmp.join("vmlinuz")).map_err(io("copying", &kernel))?;
    std::fs::copy(&initrd, tmp.join("initrd.img")).map_err(io("copying", &initrd))?;
    let raw = tmp.join("disk.raw");
    run(
        "mke2fs",
        Command::new("mke2fs")
            .args([
                "-q",
                "-t",
                "ext4",
                "-L",
                "crlab-root",
                "-E",
                "root_owner=0:0",
                "-d",
            ])
            .arg(&rootfs)
            .arg(&raw)
            .arg(DISK_SIZE),
    )?;
    run(
        "qemu-img convert",
        Command::new("qemu-img")
            .args(["convert", "-O", "qcow2"])
            .arg(&raw)
            .arg(tmp.join("base.qcow2")),
    )?;
    std::fs::remove_file(&raw).map_err(io("removing", &raw))?;
    std::fs::remove_dir_all(&rootfs).map_err(io("removing", &rootfs))?;

    let mut files = Vec::new();
    for name in FILES {
        let p = tmp.join(name);
        files.push(ManifestFile {
            name: name.into(),
            size: std::fs::metadata(&p).map_err(io("reading", &p))?.len(),
            sha256: sha256_file(&p).map_err(io("hashing", &p))?,
        });
    }
    let manifest = Manifest {
        key: key.into(),
        built_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
        build_seconds: start.elapsed().as_secs_f64(),
        files,
    };
    let mpath = tmp.join("manifest.json");
    let json = serde_json::to_string_pretty(&manifest).map_err(|e| ImageError::Step {
        step: "writing the manifest".into(),
        detail: e.to_string(),
    })?;
    std::fs::write(&mpath, json).map_err(io("writing", &mpath))?;
    let dest = root.join(key);
    std::fs::rename(&tmp, &dest).map_err(io("installing", &dest))?;
    std::mem::forget(scratch);
    progress(&format!(
        "lab image {key} built in {:.0} s",
        start.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// `/etc/selinux/config` of an image whose policy was built on the host: enforcing, with
/// that policy (Debian's file, made for its own policy, says permissive and `default`).
fn selinux_config(name: &str) -> String {
    format!(
        "# Written by the crlab lab image build: the policy is built from source on the host\n\
         # and installed here with semodule (see crlab's vm/src/policy).\n\
         SELINUX=enforcing\nSELINUXTYPE={name}\n"
    )
}

/// Installs a policy built on the host: its configuration files, then one policy store
/// transaction (`semodule -s NAME -n`, in the image's own semodule) with the base policy's
/// modules at priority 100, container-selinux at 200 and the lab's modules at 400, the
/// priority of a local `semodule -i`.
fn install_built(
    rootfs: &Path,
    built: &BuiltPolicy,
    lab_modules: &[(String, Vec<u8>)],
    progress: &mut dyn FnMut(&str),
) -> Result<(), ImageError> {
    let name = policy::build::FEDORA_POLICY_NAME;
    let etc = rootfs.join("etc/selinux").join(name);
    std::fs::create_dir_all(&etc).map_err(io("creating", &etc))?;
    run(
        "copying the policy's configuration files",
        Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", built.config.display()))
            .arg(&etc),
    )?;
    let stage = rootfs.join("tmp/crlab-policy");
    std::fs::create_dir_all(&stage).map_err(io("creating", &stage))?;
    let mut args: Vec<String> = vec!["semodule".into(), "-s".into(), name.into(), "-n".into()];
    let put = |path: &Path, data: Option<&[u8]>, n: &str| -> Result<String, ImageError> {
        let dest = stage.join(n);
        match data {
            Some(d) => std::fs::write(&dest, d).map_err(io("writing", &dest))?,
            None => {
                std::fs::copy(path, &dest).map_err(io("copying", path))?;
            }
        }
        Ok(format!("/tmp/crlab-policy/{n}"))
    };
    let file_name = |p: &Path| {
        p.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    args.extend(["-X".into(), "100".into(), "-i".into()]);
    args.push(put(&built.base, None, "base.pp")?);
    for m in &built.modules {
        args.push(put(m, None, &file_name(m))?);
    }
    if let Some(c) = &built.container {
        args.extend(["-X".into(), "200".into(), "-i".into()]);
        args.push(put(c, None, &file_name(c))?);
    }
    if !lab_modules.is_empty() {
        args.extend(["-X".into(), "400".into(), "-i".into()]);
        for (n, data) in lab_modules {
            args.push(put(Path::new(n), Some(data), n)?);
        }
    }
    progress(&format!(
        "lab image: installing the {name} policy store ({} modules{}{}; about half a minute)",
        built.modules.len() + 1,
        if built.container.is_some() {
            ", container-selinux at priority 200"
        } else {
            ""
        },
        if lab_modules.is_empty() {
            String::new()
        } else {
            format!(
                ", {} at priority 400",
                lab_modules
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        }
    ));
    run(
        "semodule (installing the policy store)",
        Command::new("chroot").arg(rootfs).args(&args),
    )?;
    std::fs::remove_dir_all(&stage).map_err(io("removing", &stage))?;
    Ok(())
}

/// Compiles each of `variants` alone on top of the installed store `name` (one `semodule
/// -n` transaction each, run in the image; the store and the policy's files are put back
/// after each), and keeps the binary policies in [`POLICY_VARIANTS_DIR`] with the image's
/// own as [`BASE_VARIANT`].
fn compile_variants(
    rootfs: &Path,
    name: &str,
    variants: &[(String, Vec<u8>)],
    progress: &mut dyn FnMut(&str),
) -> Result<(), ImageError> {
    let out = rootfs.join(POLICY_VARIANTS_DIR.trim_start_matches('/'));
    std::fs::create_dir_all(&out).map_err(io("creating", &out))?;
    let policy_dir = rootfs.join("etc/selinux").join(name);
    let store = rootfs.join("var/lib/selinux").join(name);
    let binary = |policy_dir: &Path| -> Result<PathBuf, ImageError> {
        let dir = policy_dir.join("policy");
        // `policy.N`, the highest N: the version the store writes.
        let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir(&dir)
            .map_err(io("reading", &dir))?
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                let v = n.strip_prefix("policy.")?.parse().ok()?;
                Some((v, e.path()))
            })
            .collect();
        found.sort();
        found.pop().map(|(_, p)| p).ok_or_else(|| ImageError::Step {
            step: "finding the binary policy".into(),
            detail: format!("no policy.N in {}", dir.display()),
        })
    };
    let base = binary(&policy_dir)?;
    let dest = out.join(BASE_VARIANT);
    std::fs::copy(&base, &dest).map_err(io("copying", &base))?;
    for (module, data) in variants {
        let variant = module.trim_end_matches(".cil");
        if variant == BASE_VARIANT || variant.is_empty() || variant.contains('/') {
            return Err(ImageError::Step {
                step: "precompiling the policy variants".into(),
                detail: format!("a policy module may not be named {module}: rename it"),
            });
        }
        progress(&format!(
            "lab image: precompiling the policy with {module} (a binary policy the lab loads in place of a semodule rebuild)"
        ));
        let saved_store = rootfs.join("var/lib/selinux/.crlab-saved");
        let saved_policy = rootfs.join("etc/selinux/.crlab-saved");
        for (from, to) in [(&store, &saved_store), (&policy_dir, &saved_policy)] {
            let _ = std::fs::remove_dir_all(to);
            run(
                "saving the policy store",
                Command::new("cp").arg("-a").arg(from).arg(to),
            )?;
        }
        let staged = rootfs.join("tmp").join(module);
        std::fs::write(&staged, data).map_err(io("writing", &staged))?;
        let built = run(
            &format!("semodule -n -i {module} (precompiling a policy variant)"),
            Command::new("chroot")
                .arg(rootfs)
                .args(["semodule", "-s", name, "-n", "-i"])
                .arg(format!("/tmp/{module}")),
        )
        .and_then(|_| binary(&policy_dir))
        .and_then(|p| {
            std::fs::copy(&p, out.join(variant))
                .map(|_| ())
                .map_err(io("copying", &p))
        });
        let _ = std::fs::remove_file(&staged);
        // The store and the policy's files as they were, whether or not the module built.
        for (live, saved) in [(&store, &saved_store), (&policy_dir, &saved_policy)] {
            std::fs::remove_dir_all(live).map_err(io("removing", live))?;
            std::fs::rename(saved, live).map_err(io("restoring", live))?;
        }
        built?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recipe() -> Recipe {
        Recipe {
            name: "debian".into(),
            suite: "bookworm".into(),
            mirror: "http://deb.debian.org/debian".into(),
            packages: vec!["systemd".into()],
            files: vec![("/etc/x".into(), b"x".to_vec(), 0o644)],
            unkeyed_files: vec![("/usr/libexec/agent".into(), b"v1".to_vec(), 0o755)],
            links: vec![],
            policy_modules: vec![("lab.cil".into(), b"(type t)".to_vec())],
            policy: None,
            policy_variants: vec![],
        }
    }

    #[test]
    fn the_default_recipe_keeps_the_key_it_had_before_policies_were_selectable() {
        // Computed from this recipe by the code before `policy` existed: Debian's refpolicy
        // must not rebuild because Fedora's became possible.
        assert_eq!(recipe().key(), "debian-02bc987b2ef53675");
        let mut r = recipe();
        r.policy = Some(Arc::new(
            policy::PolicySelection::default()
                .resolve(&mut |_| {})
                .unwrap(),
        ));
        assert_eq!(r.key(), "debian-02bc987b2ef53675");
    }

    /// A minimal Fedora tree and container-selinux tree (enough to resolve, not to build).
    fn policy_trees(dir: &Path) -> (PathBuf, PathBuf) {
        let fedora = dir.join("selinux-policy");
        for f in [
            "Makefile",
            "Rules.modular",
            "dist/targeted/modules.conf",
            "policy/modules/x",
        ] {
            let p = fedora.join(f);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, f).unwrap();
        }
        let cs = dir.join("container-selinux");
        std::fs::create_dir_all(&cs).unwrap();
        for f in ["container.te", "container.if", "container.fc"] {
            std::fs::write(cs.join(f), f).unwrap();
        }
        (fedora, cs)
    }

    fn with_policy(fedora: &Path, cs: &Path) -> Recipe {
        let sel = policy::PolicySelection::parse(
            Some(&format!("fedora={}", fedora.display())),
            Some(&format!("container-selinux={}", cs.display())),
        )
        .unwrap();
        let mut r = recipe();
        r.policy = Some(Arc::new(sel.resolve(&mut |_| {}).unwrap()));
        r
    }

    #[test]
    fn the_key_changes_with_every_policy_input_and_not_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let (fedora, cs) = policy_trees(dir.path());
        let base = with_policy(&fedora, &cs).key();
        assert_ne!(base, recipe().key());
        for f in [
            fedora.join("policy/modules/x"),
            fedora.join("dist/targeted/modules.conf"),
            cs.join("container.te"),
            cs.join("container.if"),
            cs.join("container.fc"),
        ] {
            let before = std::fs::read(&f).unwrap();
            std::fs::write(&f, b"changed").unwrap();
            assert_ne!(with_policy(&fedora, &cs).key(), base, "{}", f.display());
            std::fs::write(&f, before).unwrap();
        }
        std::fs::write(cs.join("README.md"), "new file").unwrap();
        assert_ne!(with_policy(&fedora, &cs).key(), base, "a new file");
        std::fs::remove_file(cs.join("README.md")).unwrap();
        assert_eq!(with_policy(&fedora, &cs).key(), base);
        // The same trees elsewhere: the same image.
        let moved = tempfile::tempdir().unwrap();
        let (f2, c2) = policy_trees(moved.path());
        assert_eq!(with_policy(&f2, &c2).key(), base);
    }

    #[test]
    fn pruning_sees_only_entries_of_its_own_recipe() {
        assert!(is_entry_of("debian-12-02bc987b2ef53675", "debian-12"));
        assert!(!is_entry_of(
            "debian-12-fedora-02bc987b2ef53675",
            "debian-12"
        ));
        assert!(is_entry_of(
            "debian-12-fedora-02bc987b2ef53675",
            "debian-12-fedora"
        ));
        assert!(!is_entry_of("debian-12-02bc987b2ef53675.lock", "debian-12"));
        assert!(!is_entry_of(
            "debian-12-02bc987b2ef53675.build-12",
            "debian-12"
        ));
    }

    #[test]
    fn the_key_changes_with_every_ingredient() {
        let base = recipe().key();
        assert!(base.starts_with("debian-"));
        let mut r = recipe();
        r.packages.push("criu".into());
        assert_ne!(r.key(), base);
        let mut r = recipe();
        r.policy_modules[0].1 = b"(type u)".to_vec();
        assert_ne!(r.key(), base);
        let mut r = recipe();
        r.files[0].2 = 0o600;
        assert_ne!(r.key(), base);
        let mut r = recipe();
        r.unkeyed_files[0].1 = b"v2".to_vec();
        assert_eq!(r.key(), base, "the agent is not part of the key");
        assert_eq!(recipe().key(), base);
    }

    #[test]
    fn verification_catches_missing_and_damaged_files() {
        let dir = tempfile::tempdir().unwrap();
        assert!(verify(dir.path(), "k").unwrap_err().contains("no manifest"));
        let mut files = Vec::new();
        for name in FILES {
            std::fs::write(dir.path().join(name), name).unwrap();
            files.push(ManifestFile {
                name: name.into(),
                size: name.len() as u64,
                sha256: sha256_file(&dir.path().join(name)).unwrap(),
            });
        }
        let m = Manifest {
            key: "k".into(),
            built_unix: 0,
            build_seconds: 0.0,
            files,
        };
        std::fs::write(
            dir.path().join("manifest.json"),
            serde_json::to_string(&m).unwrap(),
        )
        .unwrap();
        verify(dir.path(), "k").unwrap();
        assert!(verify(dir.path(), "other").is_err());
        std::fs::write(dir.path().join("vmlinuz"), "vmlinuX").unwrap();
        assert!(verify(dir.path(), "k").unwrap_err().contains("checksum"));
        std::fs::remove_file(dir.path().join("initrd.img")).unwrap();
        assert!(verify(dir.path(), "k").is_err());
    }

    #[test]
    fn mounts_left_in_a_build_directory_are_found_deepest_first() {
        let info = "\
22 1 8:1 / / rw - ext4 /dev/sda1 rw
90 22 0:5 / /root/.cache/crlab/images/k.build-7/rootfs/proc rw - proc proc rw
91 22 0:6 / /root/.cache/crlab/images/k.build-7/rootfs/dev/pts rw - devpts devpts rw
92 22 0:7 / /root/.cache/crlab/images/k.build-70/rootfs/sys rw - sysfs sysfs rw
93 22 0:8 / /root/.cache/crlab/images/k.build-7/root\\040fs/dev rw - tmpfs tmpfs rw
";
        let dir = Path::new("/root/.cache/crlab/images/k.build-7");
        let found = mounts_under(info, dir);
        assert_eq!(
            found,
            [
                PathBuf::from("/root/.cache/crlab/images/k.build-7/rootfs/dev/pts"),
                PathBuf::from("/root/.cache/crlab/images/k.build-7/rootfs/proc"),
                PathBuf::from("/root/.cache/crlab/images/k.build-7/root fs/dev"),
            ],
            "another build's directory (k.build-70) is not this one's"
        );
        assert!(mounts_under(info, Path::new("/elsewhere")).is_empty());
    }

    #[test]
    fn a_dead_builds_directory_is_swept_and_a_live_ones_kept() {
        let root = tempfile::tempdir().unwrap();
        // A pid that cannot exist (above the kernel's maximum), and this process's own.
        let dead = root.path().join("k.build-4294967295");
        let live = root.path().join(format!("k.build-{}", std::process::id()));
        let image = root.path().join("k");
        for d in [&dead, &live, &image] {
            std::fs::create_dir_all(d.join("rootfs/etc")).unwrap();
        }
        let mut said = Vec::new();
        sweep_stale_builds(root.path(), &mut |m| said.push(m.to_string()));
        assert!(!dead.exists(), "{said:?}");
        assert!(live.exists() && image.exists());
        assert!(said[0].contains("left by a killed image build"), "{said:?}");
    }

    /// Real mounts, as a killed mmdebstrap leaves them (needs root, as the lab does).
    #[test]
    fn mounts_a_killed_build_left_are_unmounted_before_its_directory_goes_needs_root() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "this test mounts filesystems: run cargo test as root (the lab needs root too)"
        );
        let root = tempfile::tempdir().unwrap();
        let dead = root.path().join("k.build-4294967295");
        let (proc_, shm) = (dead.join("rootfs/proc"), dead.join("rootfs/dev/shm"));
        for d in [&proc_, &shm] {
            std::fs::create_dir_all(d).unwrap();
        }
        let mount = |fs: &str, at: &Path| {
            let st = Command::new("mount")
                .args(["-t", fs, fs])
                .arg(at)
                .status()
                .unwrap();
            assert!(st.success(), "mount -t {fs} {}", at.display());
        };
        mount("proc", &proc_);
        mount("tmpfs", &shm);
        std::fs::write(shm.join("left"), "x").unwrap();
        let info = |dir: &Path| {
            mounts_under(
                &std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
                dir,
            )
        };
        assert_eq!(info(&dead).len(), 2);
        sweep_stale_builds(root.path(), &mut |_| {});
        assert!(info(&dead).is_empty(), "still mounted: {:?}", info(&dead));
        assert!(!dead.exists());
    }
}
