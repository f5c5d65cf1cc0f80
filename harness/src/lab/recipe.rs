//! The Debian lab image: what it is built from, for each pair of policies under test.

use crlab_vm::image::Recipe;
use crlab_vm::policy::{
    DistroPolicy, ModuleHash, PolicyError, PolicyInfo, PolicySelection, ResolvedPolicy,
};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::sync::Arc;

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

/// Debian's refpolicy package: left out when the image's policy is built on the host, so
/// it cannot be the active policy there.
const REFPOLICY_PACKAGE: &str = "selinux-policy-default";

/// Where the lab's own modules for Fedora's policy are, under the policy directory (the
/// top-level `*.cil` are for refpolicy).
pub const FEDORA_MODULES_DIR: &str = "fedora";

/// Where the scenarios' own modules are, under the policy directory.
pub const SCENARIO_MODULES_DIR: &str = "modules";

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

#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("reading the lab's policy modules in {path}")]
    Modules {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The policies of a lab image: the selection resolved (sources on disk and hashed; an
/// extracted source is removed when the last clone is dropped) and the lab's own modules for
/// that base.
#[derive(Debug, Clone)]
pub struct LabPolicy {
    resolved: Arc<ResolvedPolicy>,
    /// The lab's modules for this base: `scenarios/policy/*.cil` on refpolicy (the stand-in
    /// for container-selinux), `scenarios/policy/fedora/*.cil` on Fedora's policy.
    modules: Vec<(String, Vec<u8>)>,
    /// The scenarios' modules (`scenarios/policy/modules/*.cil`), each precompiled into a
    /// binary policy when the image is built (`Recipe::policy_variants`).
    variants: Vec<(String, Vec<u8>)>,
}

impl LabPolicy {
    /// Resolves `selection`; `policy_dir` is `scenarios/policy`. Progress lines go to
    /// `progress` (extracting a tarball or a git revision takes a few seconds).
    pub fn resolve(
        selection: &PolicySelection,
        policy_dir: &Path,
        progress: &mut dyn FnMut(&str),
    ) -> Result<LabPolicy, RecipeError> {
        let resolved = selection.resolve(progress)?;
        let dir = match selection.distro() {
            DistroPolicy::Refpolicy => policy_dir.to_path_buf(),
            DistroPolicy::Fedora(_) => policy_dir.join(FEDORA_MODULES_DIR),
        };
        Ok(LabPolicy {
            resolved: Arc::new(resolved),
            modules: read_modules(&dir)?,
            variants: read_modules(&policy_dir.join(SCENARIO_MODULES_DIR))?,
        })
    }

    /// The selection named by `CRLAB_DISTRO_POLICY` and `CRLAB_CONTAINER_POLICY` (unset:
    /// refpolicy and the lab's stand-in), resolved.
    pub fn from_env(
        policy_dir: &Path,
        progress: &mut dyn FnMut(&str),
    ) -> Result<LabPolicy, RecipeError> {
        LabPolicy::resolve(&PolicySelection::from_env()?, policy_dir, progress)
    }

    /// The names (`NAME.cil`) of the modules precompiled, each alone, into the image.
    pub fn variant_names(&self) -> Vec<String> {
        self.variants.iter().map(|(n, _)| n.clone()).collect()
    }

    pub fn selection(&self) -> &PolicySelection {
        &self.resolved.selection
    }

    /// What the image's policies are, for reports: base and container policy (source,
    /// revision or tree hash, version) and the lab's modules on that base.
    pub fn info(&self) -> PolicyInfo {
        let mut info = self.resolved.info();
        if info.container.kind == "lab" {
            info.container.source = "scenarios/policy/*.cil (the lab's stand-in)".into();
            let mut h = Sha256::new();
            for (name, data) in &self.modules {
                h.update(format!("module {name} {}\n", data.len()));
                h.update(data);
            }
            info.container.sha256 = Some(format!("{:x}", h.finalize()));
        }
        info.lab_modules = self
            .modules
            .iter()
            .map(|(name, data)| ModuleHash {
                name: name.clone(),
                sha256: format!("{:x}", Sha256::digest(data)),
            })
            .collect();
        info
    }
}

/// The recipe for `policy`. On refpolicy it is [`debian`] with `policy_modules` (the
/// default image, whose key does not change); on Fedora's policy the image leaves Debian's
/// refpolicy out, carries the policy built on the host, and the lab's Fedora modules in
/// place of `policy_modules`.
pub fn for_policy(
    agent: Vec<u8>,
    unit: &str,
    policy_modules: Vec<(String, Vec<u8>)>,
    policy: &LabPolicy,
) -> Recipe {
    let mut r = match policy.selection().distro() {
        DistroPolicy::Refpolicy => debian(agent, unit, policy_modules),
        DistroPolicy::Fedora(_) => {
            let mut r = debian(agent, unit, policy.modules.clone());
            r.name = "debian-12-fedora".into();
            r.packages.retain(|p| p != REFPOLICY_PACKAGE);
            r.policy = Some(policy.resolved.clone());
            r
        }
    };
    r.policy_variants = policy.variants.clone();
    r
}

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
        policy: None,
        policy_variants: Vec::new(),
    }
}

/// The lab's SELinux policy modules: every `*.cil` of `dir`, sorted by name.
pub fn policy_modules(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, String> {
    read_modules(dir).map_err(|e| match e {
        RecipeError::Modules { path, source } => format!("reading {}: {source}", path.display()),
        other => other.to_string(),
    })
}

fn read_modules(dir: &Path) -> Result<Vec<(String, Vec<u8>)>, RecipeError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| RecipeError::Modules { path, source }
    };
    let mut paths: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(err(dir))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|x| x == "cil"))
        .collect();
    paths.sort();
    let mut out = Vec::new();
    for p in paths {
        let data = std::fs::read(&p).map_err(err(&p))?;
        let name = p
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        out.push((name, data));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy_dir() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../scenarios/policy")
    }

    #[test]
    fn the_default_recipe_is_the_debian_one() {
        let dir = policy_dir();
        let policy = LabPolicy::resolve(&PolicySelection::default(), &dir, &mut |_| {}).unwrap();
        let modules = policy_modules(&dir).unwrap();
        let r = for_policy(b"agent".to_vec(), "unit", modules.clone(), &policy);
        let mut plain = debian(b"agent".to_vec(), "unit", modules);
        assert_ne!(
            r.key(),
            plain.key(),
            "the scenarios' modules are precompiled"
        );
        plain.policy_variants = policy.variants.clone();
        assert_eq!(r.key(), plain.key());
        let variants: Vec<&str> = r.policy_variants.iter().map(|(n, _)| n.as_str()).collect();
        assert!(variants.contains(&"restore-unconfined-service.cil"));
        assert!(r.packages.iter().any(|p| p == REFPOLICY_PACKAGE));
        let info = policy.info();
        assert_eq!(info.distro.kind, "refpolicy");
        assert_eq!(info.container.kind, "lab");
        assert!(info.container.sha256.is_some());
        assert!(info.lab_modules.iter().any(|m| m.name == "crlab-lab.cil"));
    }

    #[test]
    fn a_fedora_recipe_leaves_refpolicy_out_and_carries_the_fedora_modules() {
        let tmp = tempfile::tempdir().unwrap();
        let fedora = tmp.path().join("selinux-policy");
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
        let cs = tmp.path().join("container-selinux");
        std::fs::create_dir_all(&cs).unwrap();
        std::fs::write(
            cs.join("container.te"),
            "policy_module(container, 2.250.0)\n",
        )
        .unwrap();
        std::fs::write(cs.join("container.if"), "").unwrap();
        std::fs::write(cs.join("container.fc"), "").unwrap();
        let sel = PolicySelection::parse(
            Some(&format!("fedora={}", fedora.display())),
            Some(&format!("container-selinux={}", cs.display())),
        )
        .unwrap();
        let policy = LabPolicy::resolve(&sel, &policy_dir(), &mut |_| {}).unwrap();
        let r = for_policy(b"a".to_vec(), "u", vec![("x.cil".into(), vec![])], &policy);
        assert_eq!(r.name, "debian-12-fedora");
        assert!(!r.packages.iter().any(|p| p == REFPOLICY_PACKAGE));
        assert!(r.policy.is_some());
        let names: Vec<&str> = r.policy_modules.iter().map(|(n, _)| n.as_str()).collect();
        assert!(
            !names.contains(&"x.cil") && !names.contains(&"crlab-lab.cil"),
            "{names:?}"
        );
        assert!(!names.is_empty(), "the lab's Fedora modules");
        let info = policy.info();
        assert_eq!(info.container.version.as_deref(), Some("2.250.0"));
        assert_eq!(info.distro.kind, "fedora");
    }
}
