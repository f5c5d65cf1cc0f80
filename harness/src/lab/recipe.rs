//! The Debian lab image: what it is built from.

use crlab_vm::image::Recipe;

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
