//! The policies under test: which base ("distro") policy and which container policy a lab
//! image carries, their sources resolved and hashed (`source`), and built on the host before
//! any image step (`build`).
//!
//! Two bases: Debian's refpolicy (`selinux-policy-default`, installed from Debian's mirror,
//! the default) and Fedora's selinux-policy built from a source tree. Two container policies:
//! the lab's stand-in module (the default, on refpolicy only) and container-selinux built from
//! a source tree (on Fedora's base only).

pub mod build;
pub mod source;

use serde::{Deserialize, Serialize};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

pub use source::{PolicySource, Tree};

/// The environment variable that selects the base policy (`refpolicy`, `fedora=PATH`).
pub const DISTRO_ENV: &str = "CRLAB_DISTRO_POLICY";
/// The environment variable that selects the container policy (`lab`,
/// `container-selinux=PATH`).
pub const CONTAINER_ENV: &str = "CRLAB_CONTAINER_POLICY";

#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    #[error(
        "unknown distro policy {0:?}: use `refpolicy` or `fedora=PATH` (PATH: a source tree, \
         a tarball, or a git checkout as PATH@REV)"
    )]
    UnknownDistro(String),
    #[error(
        "unknown container policy {0:?}: use `lab` or `container-selinux=PATH` (PATH: a \
         source tree, a tarball, or a git checkout as PATH@REV)"
    )]
    UnknownContainer(String),
    #[error("{0}")]
    Unsupported(&'static str),
    #[error("the policy source {spec} does not exist: give a source directory, a tarball or a git checkout as PATH@REV")]
    Missing { spec: String },
    #[error("{what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{what} failed: {detail}")]
    Command { what: String, detail: String },
    #[error("{tool} is missing on the host; it builds the policy: install the {package} package (`cargo xtask prereqs` installs the lab's host packages)")]
    MissingTool {
        tool: &'static str,
        package: &'static str,
    },
    #[error("{spec} is not {what}: {missing} is missing")]
    NotATree {
        spec: String,
        what: &'static str,
        missing: &'static str,
    },
    #[error("building {what} failed:\n{errors}")]
    Build { what: String, errors: String },
}

/// The base policy of the image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum DistroPolicy {
    /// Debian's `selinux-policy-default` (refpolicy), from Debian's mirror.
    #[default]
    Refpolicy,
    /// Fedora's selinux-policy built from source (targeted, MCS, modular).
    Fedora(PolicySource),
}

/// The container policy of the image.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum ContainerPolicy {
    /// The lab's stand-in module (`scenarios/policy/crlab-lab.cil`), for refpolicy.
    #[default]
    Lab,
    /// container-selinux built from source (`container.te/.if/.fc`).
    ContainerSelinux(PolicySource),
}

impl FromStr for DistroPolicy {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        match s.split_once('=') {
            None if s == "refpolicy" => Ok(DistroPolicy::Refpolicy),
            Some(("fedora", path)) if !path.is_empty() => Ok(DistroPolicy::Fedora(path.parse()?)),
            _ => Err(PolicyError::UnknownDistro(s.to_string())),
        }
    }
}

impl FromStr for ContainerPolicy {
    type Err = PolicyError;
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        match s.split_once('=') {
            None if s == "lab" => Ok(ContainerPolicy::Lab),
            Some(("container-selinux", path)) if !path.is_empty() => {
                Ok(ContainerPolicy::ContainerSelinux(path.parse()?))
            }
            _ => Err(PolicyError::UnknownContainer(s.to_string())),
        }
    }
}

impl fmt::Display for DistroPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DistroPolicy::Refpolicy => f.write_str("refpolicy"),
            DistroPolicy::Fedora(s) => write!(f, "fedora={s}"),
        }
    }
}

impl fmt::Display for ContainerPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ContainerPolicy::Lab => f.write_str("lab"),
            ContainerPolicy::ContainerSelinux(s) => write!(f, "container-selinux={s}"),
        }
    }
}

/// A base and a container policy that can go together.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct PolicySelection {
    distro: DistroPolicy,
    container: ContainerPolicy,
}

const LAB_ON_FEDORA: &str = "--container-policy lab cannot go on --distro-policy fedora: the \
    lab's stand-in (scenarios/policy/crlab-lab.cil) declares container_t, container_runtime_t \
    and the other container-selinux names for refpolicy, and Fedora's policy already declares \
    them (virt.te), so the module would not load; on Fedora's base use \
    --container-policy container-selinux=PATH";

const CONTAINER_SELINUX_ON_REFPOLICY: &str = "--container-policy container-selinux needs \
    Fedora's policy as its base: on Debian's refpolicy it calls about a hundred interfaces and \
    types that only Fedora's policy has (see policy-facts); use --distro-policy fedora=PATH \
    with it";

impl PolicySelection {
    /// The pair, refused when the container policy cannot go on that base.
    pub fn new(
        distro: DistroPolicy,
        container: ContainerPolicy,
    ) -> Result<PolicySelection, PolicyError> {
        match (&distro, &container) {
            (DistroPolicy::Fedora(_), ContainerPolicy::Lab) => {
                Err(PolicyError::Unsupported(LAB_ON_FEDORA))
            }
            (DistroPolicy::Refpolicy, ContainerPolicy::ContainerSelinux(_)) => {
                Err(PolicyError::Unsupported(CONTAINER_SELINUX_ON_REFPOLICY))
            }
            _ => Ok(PolicySelection { distro, container }),
        }
    }

    /// Parses the two specs (`None` or empty: the default, refpolicy and lab).
    pub fn parse(
        distro: Option<&str>,
        container: Option<&str>,
    ) -> Result<PolicySelection, PolicyError> {
        let distro = match distro.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => s.parse()?,
            None => DistroPolicy::default(),
        };
        let container = match container.map(str::trim).filter(|s| !s.is_empty()) {
            Some(s) => s.parse()?,
            None => ContainerPolicy::default(),
        };
        PolicySelection::new(distro, container)
    }

    /// The selection named by `CRLAB_DISTRO_POLICY` and `CRLAB_CONTAINER_POLICY` (unset or
    /// empty: the defaults), as `cargo xtask vm-test` passes it to the scenarios test.
    pub fn from_env() -> Result<PolicySelection, PolicyError> {
        let distro = std::env::var(DISTRO_ENV).ok();
        let container = std::env::var(CONTAINER_ENV).ok();
        PolicySelection::parse(distro.as_deref(), container.as_deref())
    }

    pub fn distro(&self) -> &DistroPolicy {
        &self.distro
    }

    pub fn container(&self) -> &ContainerPolicy {
        &self.container
    }

    /// Whether this is the default lab (refpolicy and the stand-in), whose image needs no
    /// policy built on the host.
    pub fn is_default(&self) -> bool {
        self.distro == DistroPolicy::Refpolicy && self.container == ContainerPolicy::Lab
    }

    /// Resolves every source into a tree on disk (tarballs and git revisions are extracted
    /// into scratch directories that live as long as the result) and hashes it.
    pub fn resolve(&self, progress: &mut dyn FnMut(&str)) -> Result<ResolvedPolicy, PolicyError> {
        let mut tree = |what: &str, s: &PolicySource| {
            progress(&format!("policy: reading {what} from {s}"));
            s.resolve()
        };
        let distro = match &self.distro {
            DistroPolicy::Refpolicy => None,
            DistroPolicy::Fedora(s) => Some(tree("Fedora's selinux-policy", s)?),
        };
        let container = match &self.container {
            ContainerPolicy::Lab => None,
            ContainerPolicy::ContainerSelinux(s) => Some(tree("container-selinux", s)?),
        };
        if let (Some(t), DistroPolicy::Fedora(s)) = (&distro, &self.distro) {
            build::check_fedora_tree(t, &s.to_string())?;
        }
        if let (Some(t), ContainerPolicy::ContainerSelinux(s)) = (&container, &self.container) {
            build::check_container_tree(t, &s.to_string())?;
        }
        Ok(ResolvedPolicy {
            selection: self.clone(),
            distro,
            container,
        })
    }
}

/// A selection whose sources are on disk and hashed.
#[derive(Debug)]
pub struct ResolvedPolicy {
    pub selection: PolicySelection,
    /// Fedora's selinux-policy tree, when that is the base.
    pub distro: Option<Tree>,
    /// container-selinux's tree, when that is the container policy.
    pub container: Option<Tree>,
}

impl ResolvedPolicy {
    /// The lines the image's cache key hashes: each source's tree hash (not its path), and
    /// the revision for a git source. Empty for the default selection, so the default
    /// image keeps its key.
    pub fn key_lines(&self) -> String {
        let mut out = String::new();
        if let Some(t) = &self.distro {
            out += &format!("distro-policy fedora tree-sha256 {}\n", t.sha256);
        }
        if let Some(t) = &self.container {
            out += &format!(
                "container-policy container-selinux tree-sha256 {}\n",
                t.sha256
            );
        }
        out
    }

    /// What is under test, for reports. The lab stand-in's hash is the harness's to fill in
    /// (it knows the module files).
    pub fn info(&self) -> PolicyInfo {
        let distro = match (&self.selection.distro, &self.distro) {
            (DistroPolicy::Fedora(s), Some(t)) => PolicyPart {
                kind: "fedora".into(),
                source: s.to_string(),
                revision: t.revision.clone(),
                sha256: Some(t.sha256.clone()),
                version: None,
            },
            _ => PolicyPart {
                kind: "refpolicy".into(),
                source: "Debian bookworm selinux-policy-default (Debian's mirror)".into(),
                revision: None,
                sha256: None,
                version: None,
            },
        };
        let container = match (&self.selection.container, &self.container) {
            (ContainerPolicy::ContainerSelinux(s), Some(t)) => PolicyPart {
                kind: "container-selinux".into(),
                source: s.to_string(),
                revision: t.revision.clone(),
                sha256: Some(t.sha256.clone()),
                version: std::fs::read_to_string(t.root().join("container.te"))
                    .ok()
                    .and_then(|te| policy_module_version(&te))
                    .map(|(_, v)| v),
            },
            _ => PolicyPart {
                kind: "lab".into(),
                source: "the lab's stand-in module".into(),
                revision: None,
                sha256: None,
                version: None,
            },
        };
        PolicyInfo {
            distro,
            container,
            lab_modules: Vec::new(),
        }
    }
}

/// What a lab image's policies are, for the report's header, `report.json` and `junit.xml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInfo {
    pub distro: PolicyPart,
    pub container: PolicyPart,
    /// The lab's own modules installed on that base (name and sha256 of each), filled in by
    /// the harness, which knows them.
    #[serde(default)]
    pub lab_modules: Vec<ModuleHash>,
}

/// A module file and the sha256 of its contents.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ModuleHash {
    pub name: String,
    pub sha256: String,
}

/// One policy of the pair.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyPart {
    /// `refpolicy`, `fedora`, `lab` or `container-selinux`.
    pub kind: String,
    /// Where it came from: the PATH or PATH@REV as given, or a description.
    pub source: String,
    /// The full commit of a `PATH@REV` source.
    pub revision: Option<String>,
    /// The hash of the source tree's files (paths, modes, contents); for the lab's stand-in,
    /// of its module files.
    pub sha256: Option<String>,
    /// The version the source declares (container-selinux: `policy_module(container, V)`).
    pub version: Option<String>,
}

impl PolicyPart {
    /// `kind VERSION (source, rev R | sha256 S)`, short, for a table's header.
    pub fn summary(&self) -> String {
        let mut s = self.kind.clone();
        if let Some(v) = &self.version {
            s += &format!(" {v}");
        }
        s += &format!(" ({}", self.source);
        if let Some(r) = &self.revision {
            s += &format!(", rev {}", &r[..r.len().min(12)]);
        } else if let Some(h) = &self.sha256 {
            s += &format!(", sha256 {}", &h[..h.len().min(12)]);
        }
        s + ")"
    }
}

impl PolicyInfo {
    /// One line: `base: ...; container: ...`.
    pub fn summary(&self) -> String {
        format!(
            "base policy: {}; container policy: {}",
            self.distro.summary(),
            self.container.summary()
        )
    }
}

/// The module name and version of a `.te` file's `policy_module(NAME, VERSION)` line.
pub fn policy_module_version(te: &str) -> Option<(String, String)> {
    te.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let args = l.strip_prefix("policy_module(")?;
            let args = &args[..args.find(')')?];
            let (name, version) = args.split_once(',')?;
            let clean = |s: &str| s.trim().trim_matches(|c| c == '`' || c == '\'').to_string();
            let (name, version) = (clean(name), clean(version));
            (!name.is_empty() && !version.is_empty()).then_some((name, version))
        })
}

/// A directory removed, with everything in it, when this is dropped.
#[derive(Debug)]
pub(crate) struct ScratchDir(PathBuf);

impl ScratchDir {
    /// A new empty directory under the system's temporary directory. Those that a killed
    /// run left behind (their process is gone) are removed first.
    pub(crate) fn new(what: &str) -> Result<ScratchDir, PolicyError> {
        use std::sync::atomic::{AtomicU32, Ordering};
        static NEXT: AtomicU32 = AtomicU32::new(0);
        sweep_orphans(&std::env::temp_dir());
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let path = std::env::temp_dir().join(format!(
            "crlab-{what}-{}-{}-{nanos}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::SeqCst)
        ));
        std::fs::create_dir_all(&path).map_err(|source| PolicyError::Io {
            what: "creating",
            path: path.clone(),
            source,
        })?;
        Ok(ScratchDir(path))
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

/// Removes `crlab-WHAT-PID-N-NANOS` directories of `dir` whose process no longer runs (a run
/// stopped by a signal drops nothing).
fn sweep_orphans(dir: &Path) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = orphan_pid(&name) else {
            continue;
        };
        let gone = matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        );
        if gone {
            let _ = std::fs::remove_dir_all(e.path());
        }
    }
}

/// The PID in a scratch directory's name `crlab-policy-KIND-PID-N-NANOS`.
fn orphan_pid(name: &str) -> Option<i32> {
    let rest = name.strip_prefix("crlab-policy-")?;
    let fields: Vec<&str> = rest.rsplitn(4, '-').collect();
    match fields.as_slice() {
        [nanos, n, pid, _kind] if nanos.parse::<u32>().is_ok() && n.parse::<u32>().is_ok() => {
            pid.parse().ok().filter(|p| *p > 0)
        }
        _ => None,
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_into_their_kinds() {
        assert_eq!(
            "refpolicy".parse::<DistroPolicy>().unwrap(),
            DistroPolicy::Refpolicy
        );
        let DistroPolicy::Fedora(s) = "fedora=/src/selinux-policy.tar.gz".parse().unwrap() else {
            panic!("not fedora");
        };
        assert_eq!(s.path, PathBuf::from("/src/selinux-policy.tar.gz"));
        assert_eq!(s.rev, None);
        assert_eq!(
            "lab".parse::<ContainerPolicy>().unwrap(),
            ContainerPolicy::Lab
        );
        let ContainerPolicy::ContainerSelinux(s) =
            "container-selinux=/nonexistent/container-selinux@v2.250.0"
                .parse()
                .unwrap()
        else {
            panic!("not container-selinux");
        };
        assert_eq!(s.path, PathBuf::from("/nonexistent/container-selinux"));
        assert_eq!(s.rev.as_deref(), Some("v2.250.0"));
        assert_eq!(
            s.to_string(),
            "/nonexistent/container-selinux@v2.250.0",
            "displays as given"
        );
        for bad in [
            "",
            "fedora",
            "fedora=",
            "debian",
            "refpolicy=x",
            "Fedora=/x",
        ] {
            let e = bad.parse::<DistroPolicy>().unwrap_err();
            assert!(e.to_string().contains("fedora=PATH"), "{bad}: {e}");
        }
        for bad in ["", "container-selinux", "container-selinux=", "lab=x"] {
            let e = bad.parse::<ContainerPolicy>().unwrap_err();
            assert!(
                e.to_string().contains("container-selinux=PATH"),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn a_path_that_exists_keeps_its_at_sign() {
        let dir = tempfile::tempdir().unwrap();
        let odd = dir.path().join("policy@2024");
        std::fs::create_dir(&odd).unwrap();
        let s: PolicySource = odd.to_str().unwrap().parse().unwrap();
        assert_eq!(s.path, odd);
        assert_eq!(s.rev, None);
    }

    #[test]
    fn selections_refuse_what_cannot_work() {
        assert!(PolicySelection::parse(None, None).unwrap().is_default());
        assert!(PolicySelection::parse(Some(""), Some(" "))
            .unwrap()
            .is_default());
        let e = PolicySelection::parse(Some("fedora=/x"), None).unwrap_err();
        assert!(e.to_string().contains("container-selinux=PATH"), "{e}");
        let e = PolicySelection::parse(None, Some("container-selinux=/x")).unwrap_err();
        assert!(e.to_string().contains("--distro-policy fedora=PATH"), "{e}");
        let s = PolicySelection::parse(Some("fedora=/a"), Some("container-selinux=/b")).unwrap();
        assert!(!s.is_default());
        assert_eq!(s.distro().to_string(), "fedora=/a");
        assert_eq!(s.container().to_string(), "container-selinux=/b");
    }

    #[test]
    fn policy_module_gives_name_and_version() {
        let te = "## <summary>x</summary>\n# policy_module(old, 1.0)\n\npolicy_module(container, 2.250.0)\n\ngen_require(`')\n";
        assert_eq!(
            policy_module_version(te),
            Some(("container".into(), "2.250.0".into()))
        );
        assert_eq!(
            policy_module_version("policy_module(`foo',`1.2.3')"),
            Some(("foo".into(), "1.2.3".into()))
        );
        assert_eq!(policy_module_version("policy_module(foo)"), None);
        assert_eq!(policy_module_version("type foo_t;"), None);
    }

    #[test]
    fn summaries_name_kind_version_and_source() {
        let info = PolicyInfo {
            distro: PolicyPart {
                kind: "fedora".into(),
                source: "/f.tar.gz".into(),
                revision: None,
                sha256: Some("9220ddb54fcc0a346a34".into()),
                version: None,
            },
            container: PolicyPart {
                kind: "container-selinux".into(),
                source: "/cs@main".into(),
                revision: Some("66ae652fde7280fa6e18313d3127d1f717f56768".into()),
                sha256: Some("f8e5".into()),
                version: Some("2.250.0".into()),
            },
            lab_modules: vec![],
        };
        assert_eq!(
            info.summary(),
            "base policy: fedora (/f.tar.gz, sha256 9220ddb54fcc); container policy: \
             container-selinux 2.250.0 (/cs@main, rev 66ae652fde72)"
        );
        let json = serde_json::to_value(&info).unwrap();
        assert_eq!(json["container"]["version"], "2.250.0");
    }

    #[test]
    fn orphans_are_named_by_their_pid() {
        assert_eq!(orphan_pid("crlab-policy-src-8285-0-119279220"), Some(8285));
        assert_eq!(
            orphan_pid("crlab-policy-build-10128-2-234201285"),
            Some(10128)
        );
        assert_eq!(orphan_pid("crlab-policy-target"), None);
        assert_eq!(orphan_pid("crlab-lab-build.log"), None);
        assert_eq!(orphan_pid("crlab-policy-src-x-0-1"), None);
    }

    #[test]
    fn scratch_dirs_go_away() {
        let s = ScratchDir::new("test").unwrap();
        let p = s.path().to_path_buf();
        std::fs::write(p.join("f"), "x").unwrap();
        drop(s);
        assert!(!p.exists());
    }
}
