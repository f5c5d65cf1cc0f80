//! Building Fedora's selinux-policy (targeted, MCS, modular: `make base.pp modules`) and
//! container-selinux (its `container.te/.if/.fc`, unmodified, as a module of that tree) on
//! the host, in a scratch copy of the sources, before any image step: a policy that does not
//! build stops the run with the compiler's `file:line` message.

use super::source::run;
use super::{PolicyError, ResolvedPolicy, ScratchDir, Tree};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The policy name (`SELINUXTYPE`) of Fedora's policy in the image.
pub const FEDORA_POLICY_NAME: &str = "targeted";

/// The variables of Fedora's own build of `selinux-policy-targeted`: MCS, Red Hat paths, no
/// UBAC, polyinstantiation on, unknown permissions allowed.
const MAKE_VARS: &[&str] = &[
    "NAME=targeted",
    "TYPE=mcs",
    "DISTRO=redhat",
    "UBAC=n",
    "DIRECT_INITRC=n",
    "MONOLITHIC=n",
    "POLY=y",
    "MLS_CATS=1024",
    "MCS_CATS=1024",
    "UNK_PERMS=allow",
];

/// The host tools the build runs, and the Debian package of each (the same names on Fedora
/// but for checkpolicy's and semodule-utils', which are `checkpolicy` and
/// `policycoreutils`).
const TOOLS: &[(&str, &str)] = &[
    ("make", "make"),
    ("m4", "m4"),
    ("python3", "python3"),
    // set_bools_tuns.awk needs gawk; without it the build silently drops booleans.conf.
    ("gawk", "gawk"),
    ("checkmodule", "checkpolicy"),
    ("semodule_package", "semodule-utils"),
    ("tar", "tar"),
];

/// A built policy: the `.pp` files and the configuration files, in a scratch directory that
/// is removed when this is dropped.
#[derive(Debug)]
pub struct BuiltPolicy {
    _scratch: ScratchDir,
    /// `base.pp`, installed at priority 100.
    pub base: PathBuf,
    /// Every other module of the base policy, installed at priority 100.
    pub modules: Vec<PathBuf>,
    /// `container.pp`, installed at a higher priority (200), when container-selinux is under
    /// test.
    pub container: Option<PathBuf>,
    /// What goes in `/etc/selinux/targeted` besides the store's output: the application
    /// contexts (`install-appconfig`) and `contexts/files/file_contexts.subs_dist`.
    pub config: PathBuf,
}

/// Refuses a Fedora source that is not Fedora's selinux-policy tree.
pub fn check_fedora_tree(tree: &Tree, spec: &str) -> Result<(), PolicyError> {
    for file in [
        "Makefile",
        "Rules.modular",
        "dist/targeted/modules.conf",
        "policy/modules",
    ] {
        if !tree.root().join(file).exists() {
            return Err(PolicyError::NotATree {
                spec: spec.to_string(),
                what: "Fedora's selinux-policy source tree",
                missing: file,
            });
        }
    }
    Ok(())
}

/// Refuses a container-selinux source without its three policy files.
pub fn check_container_tree(tree: &Tree, spec: &str) -> Result<(), PolicyError> {
    for file in ["container.te", "container.if", "container.fc"] {
        if !tree.root().join(file).is_file() {
            return Err(PolicyError::NotATree {
                spec: spec.to_string(),
                what: "a container-selinux source tree",
                missing: file,
            });
        }
    }
    Ok(())
}

/// Which host tool is missing, with its package.
pub fn missing_tool() -> Option<PolicyError> {
    TOOLS
        .iter()
        .find(|(tool, _)| !in_path(tool))
        .map(|&(tool, package)| PolicyError::MissingTool { tool, package })
}

fn in_path(tool: &str) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::env::var_os("PATH").is_some_and(|p| {
        std::env::split_paths(&p).any(|d| {
            d.join(tool)
                .metadata()
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        })
    })
}

/// Builds Fedora's policy (with container-selinux in it, when selected) from `policy`'s
/// trees. container-selinux is compiled first, alone: its errors come within seconds.
pub fn fedora(
    policy: &ResolvedPolicy,
    progress: &mut dyn FnMut(&str),
) -> Result<BuiltPolicy, PolicyError> {
    let Some(distro) = &policy.distro else {
        return Err(PolicyError::Unsupported(
            "building a policy on the host needs --distro-policy fedora=PATH",
        ));
    };
    if let Some(e) = missing_tool() {
        return Err(e);
    }
    let scratch = ScratchDir::new("policy-build")?;
    let src = scratch.path().join("src");
    let start = Instant::now();
    progress("policy: copying Fedora's selinux-policy into a build directory");
    run(
        "copying the policy source",
        Command::new("cp").arg("-a").arg(distro.root()).arg(&src),
    )?;
    configure_targeted(&src)?;

    let container_source = match policy.selection.container() {
        super::ContainerPolicy::ContainerSelinux(s) => s.to_string(),
        super::ContainerPolicy::Lab => String::new(),
    };
    if let Some(container) = &policy.container {
        let contrib = src.join("policy/modules/contrib");
        for ext in ["te", "if", "fc"] {
            let from = container.root().join(format!("container.{ext}"));
            let to = contrib.join(format!("container.{ext}"));
            std::fs::copy(&from, &to).map_err(|source| PolicyError::Io {
                what: "copying",
                path: from.clone(),
                source,
            })?;
        }
        set_module(&src.join("policy/modules.conf"), "container", "module")?;
        progress("policy: compiling container-selinux (container.te, .if, .fc)");
        make(&src, &["container.pp"]).map_err(|errors| PolicyError::Build {
            what: format!("container-selinux from {container_source}"),
            errors: errors.replace("policy/modules/contrib/container.", "container."),
        })?;
    }

    progress("policy: building Fedora's policy (make base.pp modules: about a minute on 2 cores)");
    make(&src, &["base.pp", "modules"]).map_err(|errors| PolicyError::Build {
        what: format!("Fedora's selinux-policy from {}", policy.selection.distro()),
        errors,
    })?;
    let staging = scratch.path().join("staging");
    make(
        &src,
        &[
            &format!("DESTDIR={}", staging.display()),
            "install-appconfig",
        ],
    )
    .map_err(|errors| PolicyError::Build {
        what: "Fedora's policy configuration files (make install-appconfig)".into(),
        errors,
    })?;
    let config = staging.join("etc/selinux").join(FEDORA_POLICY_NAME);
    let subs = src.join("config/file_contexts.subs_dist");
    if subs.is_file() {
        let dest = config.join("contexts/files/file_contexts.subs_dist");
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(|source| PolicyError::Io {
                what: "creating",
                path: parent.to_path_buf(),
                source,
            })?;
        }
        std::fs::copy(&subs, &dest).map_err(|source| PolicyError::Io {
            what: "copying",
            path: subs.clone(),
            source,
        })?;
    }

    let mut modules = Vec::new();
    let mut container = None;
    let read = std::fs::read_dir(&src).map_err(|source| PolicyError::Io {
        what: "reading",
        path: src.clone(),
        source,
    })?;
    for e in read.flatten() {
        let p = e.path();
        match p.file_name().and_then(|n| n.to_str()) {
            Some("base.pp") => {}
            Some("container.pp") if policy.container.is_some() => container = Some(p),
            Some(n) if n.ends_with(".pp") => modules.push(p),
            _ => {}
        }
    }
    modules.sort();
    let base = src.join("base.pp");
    if !base.is_file() || modules.is_empty() {
        return Err(PolicyError::Build {
            what: "Fedora's selinux-policy".into(),
            errors: "make finished without base.pp and the module packages".into(),
        });
    }
    progress(&format!(
        "policy: built base.pp and {} modules{} in {:.0} s",
        modules.len(),
        if container.is_some() {
            " (container.pp among them)"
        } else {
            ""
        },
        start.elapsed().as_secs_f64()
    ));
    if let Some(c) = &container {
        modules.retain(|m| m != c);
    }
    Ok(BuiltPolicy {
        _scratch: scratch,
        base,
        modules,
        container,
        config,
    })
}

/// Fedora's configuration of the targeted policy: its module list, booleans and users, as
/// its rpm build copies them into `policy/`.
fn configure_targeted(src: &Path) -> Result<(), PolicyError> {
    let dist = src.join("dist").join(FEDORA_POLICY_NAME);
    for (from, to) in [
        ("modules.conf", "modules.conf"),
        ("booleans.conf", "booleans.conf"),
        ("users", "users"),
    ] {
        let from = dist.join(from);
        if !from.is_file() {
            continue;
        }
        let to = src.join("policy").join(to);
        let _ = std::fs::remove_file(&to);
        std::fs::copy(&from, &to).map_err(|source| PolicyError::Io {
            what: "copying",
            path: from.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Sets `module = how` in a modules.conf (replacing its line, or adding one).
fn set_module(conf: &Path, module: &str, how: &str) -> Result<(), PolicyError> {
    let text = std::fs::read_to_string(conf).map_err(|source| PolicyError::Io {
        what: "reading",
        path: conf.to_path_buf(),
        source,
    })?;
    std::fs::write(conf, with_module(&text, module, how)).map_err(|source| PolicyError::Io {
        what: "writing",
        path: conf.to_path_buf(),
        source,
    })
}

fn with_module(text: &str, module: &str, how: &str) -> String {
    let is_line = |l: &str| {
        l.split_once('=')
            .is_some_and(|(name, _)| name.trim() == module && !l.trim_start().starts_with('#'))
    };
    let line = format!("{module} = {how}");
    let mut out: Vec<String> = text
        .lines()
        .map(|l| {
            if is_line(l) {
                line.clone()
            } else {
                l.to_string()
            }
        })
        .collect();
    if !text.lines().any(is_line) {
        out.push(String::new());
        out.push(line);
    }
    out.join("\n") + "\n"
}

/// Runs make in the tree with Fedora's variables; on failure, the compiler's errors.
fn make(src: &Path, targets: &[&str]) -> Result<(), String> {
    let out = Command::new("make")
        .arg("-C")
        .arg(src)
        .arg("-j2")
        .args(MAKE_VARS)
        .args(targets)
        .output()
        .map_err(|e| format!("cannot run make: {e}"))?;
    if out.status.success() {
        return Ok(());
    }
    Err(compiler_errors(&String::from_utf8_lossy(&out.stderr)))
}

/// The lines of a failed build that say what is wrong: checkmodule's
/// `FILE:LINE:ERROR ...` with the two source lines it quotes, other errors, and make's
/// summary; the end of the output when none matches.
fn compiler_errors(stderr: &str) -> String {
    let lines: Vec<&str> = stderr.lines().collect();
    let mut keep = vec![false; lines.len()];
    for (i, l) in lines.iter().enumerate() {
        if l.contains(":ERROR ") {
            for k in keep.iter_mut().skip(i).take(3) {
                *k = true;
            }
        } else if l.to_ascii_lowercase().contains("error") {
            keep[i] = true;
        }
    }
    let picked: Vec<&str> = lines
        .iter()
        .zip(&keep)
        .filter(|(_, k)| **k)
        .map(|(l, _)| *l)
        .take(40)
        .collect();
    if picked.is_empty() {
        lines[lines.len().saturating_sub(20)..].join("\n")
    } else {
        picked.join("\n")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checkmodule_errors_keep_file_line_and_the_quoted_source() {
        let stderr = "m4:policy/x.te:1: warning\n\
            policy/modules/contrib/container.te:40:ERROR 'syntax error' at token 'this' on line 2499:\n\
            ## </desc>\n\
            this is not policy;\n\
            /usr/bin/checkmodule:  error(s) encountered while parsing configuration\n\
            make: *** [Rules.modular:77: tmp/container.mod] Error 1\n";
        let e = compiler_errors(stderr);
        assert!(
            e.starts_with("policy/modules/contrib/container.te:40:ERROR 'syntax error'"),
            "{e}"
        );
        assert!(e.contains("this is not policy;"), "{e}");
        assert!(e.contains("Error 1"), "{e}");
        assert!(!e.contains("warning"), "{e}");
        assert_eq!(compiler_errors("a\nb\n"), "a\nb");
    }

    #[test]
    fn modules_conf_gets_the_module_once() {
        let text = "# Module: container\n# container = off\nvirt = module\n";
        let out = with_module(text, "container", "module");
        assert_eq!(out.matches("container = module").count(), 1);
        assert!(out.contains("# container = off"), "comments stay");
        let again = with_module("virt = module\ncontainer = off\n", "container", "module");
        assert_eq!(again, "virt = module\ncontainer = module\n");
    }
}
