//! The Debian lab image: what it is built from.

use crlab_vm::image::Recipe;
use std::path::{Path, PathBuf};

/// Where the baked-in agent lives in the guest (labelled `unconfined_exec_t`
/// by the lab policy's file context, so systemd starts it in `unconfined_t`).
pub const AGENT_PATH: &str = "/usr/libexec/crlab-agent";

/// Packages of the lab image (Debian 12, from Debian's mirror).
pub const PACKAGES: &[&str] = &[
    "systemd",
    "systemd-sysv",
    "udev",
    "kmod",
    "procps",
    "auditd",
    "policycoreutils",
    "selinux-utils",
    "selinux-policy-default",
    "semodule-utils",
    "linux-image-cloud-amd64",
    "criu",
    "e2fsprogs",
];

/// Units that only slow a test VM down.
const MASKED: &[&str] = &[
    "serial-getty@ttyS0.service",
    "getty@tty1.service",
    "apt-daily.timer",
    "apt-daily-upgrade.timer",
    "e2scrub_all.timer",
    "e2scrub_reap.service",
    "fstrim.timer",
    "systemd-timesyncd.service",
    "man-db.timer",
];

/// The recipe; `agent` is the agent binary baked in at build time (not part
/// of the cache key: a newer agent is sent over the channel at run time).
pub fn debian(agent: Vec<u8>, unit: &str, policy_modules: Vec<(String, Vec<u8>)>) -> Recipe {
    let mut links: Vec<(String, String)> = MASKED
        .iter()
        .map(|u| (format!("/etc/systemd/system/{u}"), "/dev/null".to_string()))
        .collect();
    links.push((
        "/etc/systemd/system/sysinit.target.wants/crlab-agent.service".into(),
        "/etc/systemd/system/crlab-agent.service".into(),
    ));
    Recipe {
        name: "debian-12".into(),
        suite: "bookworm".into(),
        mirror: "http://deb.debian.org/debian".into(),
        packages: PACKAGES.iter().map(|p| p.to_string()).collect(),
        files: vec![
            (
                "/etc/systemd/system/crlab-agent.service".into(),
                unit.as_bytes().to_vec(),
                0o644,
            ),
            ("/etc/hostname".into(), b"crlab-lab\n".to_vec(), 0o644),
        ],
        unkeyed_files: vec![(AGENT_PATH.into(), agent, 0o755)],
        links,
        policy_modules,
    }
}

/// The lab's SELinux policy modules: every `*.cil` of `dir`, sorted by name.
pub fn policy_modules(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| format!("reading the policy directory {}: {e}", dir.display()))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "cil"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let data = std::fs::read(&p).map_err(|e| format!("reading {}: {e}", p.display()))?;
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((name, data));
    }
    Ok(out)
}
