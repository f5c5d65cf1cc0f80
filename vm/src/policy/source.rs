//! Policy sources: a source directory, a tarball, or a git checkout at a revision
//! (`PATH@REV`, read with `git archive`, the checkout untouched), resolved into a tree on
//! disk and hashed by content.

use super::{PolicyError, ScratchDir};
use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::str::FromStr;

/// Where a policy's source is: `path` (a directory or a tarball), or the tree of the git
/// repository at `path` at revision `rev`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicySource {
    pub path: PathBuf,
    pub rev: Option<String>,
}

impl FromStr for PolicySource {
    type Err = PolicyError;

    /// `PATH` or `PATH@REV`; a PATH that exists as given keeps any `@` in it.
    fn from_str(s: &str) -> Result<Self, PolicyError> {
        if s.is_empty() {
            return Err(PolicyError::Missing {
                spec: String::new(),
            });
        }
        if !Path::new(s).exists() {
            if let Some((path, rev)) = s.rsplit_once('@') {
                if !path.is_empty() && !rev.is_empty() {
                    return Ok(PolicySource {
                        path: path.into(),
                        rev: Some(rev.into()),
                    });
                }
            }
        }
        Ok(PolicySource {
            path: s.into(),
            rev: None,
        })
    }
}

impl fmt::Display for PolicySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.rev {
            Some(rev) => write!(f, "{}@{rev}", self.path.display()),
            None => write!(f, "{}", self.path.display()),
        }
    }
}

/// A source tree on disk; an extracted one is removed when this is dropped.
#[derive(Debug)]
pub struct Tree {
    root: PathBuf,
    _scratch: Option<ScratchDir>,
    /// The hash of the tree's files: relative paths, executable bits, contents, link
    /// targets (`.git` left out).
    pub sha256: String,
    /// The full commit, for a git source.
    pub revision: Option<String>,
}

impl Tree {
    /// The top of the source tree (a tarball's single top-level folder, if it has one).
    pub fn root(&self) -> &Path {
        &self.root
    }
}

impl PolicySource {
    /// The tree this source names, on disk and hashed.
    pub fn resolve(&self) -> Result<Tree, PolicyError> {
        let missing = || PolicyError::Missing {
            spec: self.to_string(),
        };
        let meta = std::fs::metadata(&self.path).map_err(|_| missing())?;
        let (root, scratch, revision) = match &self.rev {
            Some(rev) => {
                let (scratch, commit) = git_archive(&self.path, rev)?;
                let root = single_top(scratch.path())?;
                (root, Some(scratch), Some(commit))
            }
            None if meta.is_dir() => (self.path.clone(), None, None),
            None => {
                let scratch = ScratchDir::new("policy-src")?;
                run(
                    &format!("extracting {}", self.path.display()),
                    Command::new("tar")
                        .arg("-xf")
                        .arg(&self.path)
                        .arg("-C")
                        .arg(scratch.path()),
                )?;
                let root = single_top(scratch.path())?;
                (root, Some(scratch), None)
            }
        };
        let sha256 = hash_tree(&root)?;
        Ok(Tree {
            root,
            _scratch: scratch,
            sha256,
            revision,
        })
    }
}

/// The tree of the repository holding `path` at `rev`, restricted to `path`'s folder, in a
/// scratch directory; and the full commit. Only reads the repository.
fn git_archive(path: &Path, rev: &str) -> Result<(ScratchDir, String), PolicyError> {
    if !path.is_dir() {
        return Err(PolicyError::Command {
            what: format!("reading {}@{rev}", path.display()),
            detail: format!(
                "{} is not a directory: PATH@REV needs a git checkout",
                path.display()
            ),
        });
    }
    let git = |args: &[&str]| {
        let mut c = Command::new("git");
        c.arg("-C").arg(path).args(args);
        c
    };
    let commit = run(
        &format!("finding revision {rev} in {}", path.display()),
        &mut git(&[
            "rev-parse",
            "--verify",
            "--end-of-options",
            &format!("{rev}^{{commit}}"),
        ]),
    )?
    .trim()
    .to_string();
    let prefix = run(
        &format!("finding {} in its repository", path.display()),
        &mut git(&["rev-parse", "--show-prefix"]),
    )?
    .trim()
    .to_string();
    // From the top: run in a subfolder, git archive would narrow the tree once more.
    let top = run(
        &format!("finding the top of {}'s repository", path.display()),
        &mut git(&["rev-parse", "--show-toplevel"]),
    )?
    .trim()
    .to_string();
    let scratch = ScratchDir::new("policy-git")?;
    let tar = scratch.path().join("source.tar");
    let tree = scratch.path().join("tree");
    std::fs::create_dir(&tree).map_err(|source| PolicyError::Io {
        what: "creating",
        path: tree.clone(),
        source,
    })?;
    run(
        &format!("git archive of {}@{rev}", path.display()),
        Command::new("git")
            .arg("-C")
            .arg(&top)
            .args(["archive", "--format=tar", "-o"])
            .arg(&tar)
            .arg(format!("{commit}:{prefix}")),
    )?;
    run(
        &format!("extracting {}@{rev}", path.display()),
        Command::new("tar")
            .arg("-xf")
            .arg(&tar)
            .arg("-C")
            .arg(&tree),
    )?;
    std::fs::remove_file(&tar).map_err(|source| PolicyError::Io {
        what: "removing",
        path: tar.clone(),
        source,
    })?;
    Ok((scratch, commit))
}

/// `dir` itself, or its only entry when that is a folder (a tarball's top-level folder).
fn single_top(dir: &Path) -> Result<PathBuf, PolicyError> {
    let entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|source| PolicyError::Io {
            what: "reading",
            path: dir.to_path_buf(),
            source,
        })?
        .flatten()
        .map(|e| e.path())
        .collect();
    match entries.as_slice() {
        [only] if only.is_dir() && !only.is_symlink() => Ok(only.clone()),
        _ => Ok(dir.to_path_buf()),
    }
}

/// The hash of every file under `root` (sorted by path, `.git` left out): what the image's
/// key depends on, so the same tree gives the same key wherever it lies.
pub fn hash_tree(root: &Path) -> Result<String, PolicyError> {
    let mut h = Sha256::new();
    hash_dir(root, Path::new(""), &mut h)?;
    Ok(format!("{:x}", h.finalize()))
}

fn hash_dir(root: &Path, rel: &Path, h: &mut Sha256) -> Result<(), PolicyError> {
    use std::os::unix::fs::PermissionsExt;
    let dir = root.join(rel);
    let io = |what: &'static str, path: &Path| {
        let path = path.to_path_buf();
        move |source| PolicyError::Io { what, path, source }
    };
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .map_err(io("reading", &dir))?
        .map(|e| e.map(|e| e.file_name()))
        .collect::<Result<_, _>>()
        .map_err(io("reading", &dir))?;
    names.sort();
    for name in names {
        if rel.as_os_str().is_empty() && name == ".git" {
            continue;
        }
        let rel = rel.join(&name);
        let path = root.join(&rel);
        let meta = std::fs::symlink_metadata(&path).map_err(io("reading", &path))?;
        let shown = rel.to_string_lossy();
        if meta.is_symlink() {
            let target = std::fs::read_link(&path).map_err(io("reading", &path))?;
            h.update(format!("link {shown} {}\n", target.to_string_lossy()));
        } else if meta.is_dir() {
            hash_dir(root, &rel, h)?;
        } else if meta.is_file() {
            let data = std::fs::read(&path).map_err(io("reading", &path))?;
            let exec = meta.permissions().mode() & 0o111 != 0;
            h.update(format!("file {shown} {exec} {}\n", data.len()));
            h.update(&data);
        }
    }
    Ok(())
}

/// Runs `cmd`; its stdout, or an error with the end of its stderr.
pub(crate) fn run(what: &str, cmd: &mut Command) -> Result<String, PolicyError> {
    let out = cmd.output().map_err(|e| PolicyError::Command {
        what: what.to_string(),
        detail: format!("cannot run {:?}: {e}", cmd.get_program()),
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let lines: Vec<&str> = err.lines().collect();
        return Err(PolicyError::Command {
            what: what.to_string(),
            detail: format!(
                "{} ({})",
                lines[lines.len().saturating_sub(15)..].join("\n"),
                out.status
            ),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn git(dir: &Path, args: &[&str]) -> String {
        let out = Command::new("git")
            .arg("-C")
            .arg(dir)
            .args(["-c", "user.name=t", "-c", "user.email=t@example.invalid"])
            .args(args)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    }

    #[test]
    fn path_at_rev_gives_that_revision_and_leaves_the_checkout_alone() {
        let dir = tempfile::tempdir().unwrap();
        let repo = dir.path().join("container-selinux");
        std::fs::create_dir(&repo).unwrap();
        git(&repo, &["init", "-q"]);
        std::fs::write(
            repo.join("container.te"),
            "policy_module(container, 1.0.0)\n",
        )
        .unwrap();
        git(&repo, &["add", "."]);
        git(&repo, &["commit", "-q", "-m", "one"]);
        let first = git(&repo, &["rev-parse", "HEAD"]);
        git(&repo, &["tag", "v1"]);
        std::fs::write(
            repo.join("container.te"),
            "policy_module(container, 2.0.0)\n",
        )
        .unwrap();
        git(&repo, &["commit", "-q", "-am", "two"]);
        // An uncommitted change that PATH@REV must not see, nor lose.
        std::fs::write(repo.join("container.te"), "dirty\n").unwrap();

        let spec = format!("{}@v1", repo.display());
        let tree = spec.parse::<PolicySource>().unwrap().resolve().unwrap();
        assert_eq!(tree.revision.as_deref(), Some(first.as_str()));
        assert_eq!(
            std::fs::read_to_string(tree.root().join("container.te")).unwrap(),
            "policy_module(container, 1.0.0)\n"
        );
        let head = format!("{}@HEAD", repo.display())
            .parse::<PolicySource>()
            .unwrap()
            .resolve()
            .unwrap();
        assert_ne!(head.sha256, tree.sha256);
        assert_ne!(head.revision, tree.revision);
        assert_eq!(
            std::fs::read_to_string(repo.join("container.te")).unwrap(),
            "dirty\n"
        );
        assert_eq!(git(&repo, &["status", "--porcelain"]), "M container.te");

        let scratch = tree.root().to_path_buf();
        drop(tree);
        assert!(!scratch.exists(), "the extracted tree is removed");

        let e = format!("{}@no-such-rev", repo.display())
            .parse::<PolicySource>()
            .unwrap()
            .resolve()
            .unwrap_err();
        assert!(e.to_string().contains("no-such-rev"), "{e}");
    }

    #[test]
    fn a_subfolder_at_rev_gives_that_subfolder() {
        let dir = tempfile::tempdir().unwrap();
        git(dir.path(), &["init", "-q"]);
        std::fs::create_dir(dir.path().join("policy")).unwrap();
        std::fs::write(dir.path().join("policy/container.te"), "x").unwrap();
        std::fs::write(dir.path().join("README"), "y").unwrap();
        git(dir.path(), &["add", "."]);
        git(dir.path(), &["commit", "-q", "-m", "one"]);
        let tree = format!("{}@HEAD", dir.path().join("policy").display())
            .parse::<PolicySource>()
            .unwrap()
            .resolve()
            .unwrap();
        assert!(tree.root().join("container.te").is_file());
        assert!(!tree.root().join("README").exists());
    }

    #[test]
    fn a_tarball_and_its_directory_hash_alike() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("cs-1");
        std::fs::create_dir_all(src.join("sub")).unwrap();
        std::fs::write(src.join("container.te"), "te").unwrap();
        std::fs::write(src.join("sub/x"), "x").unwrap();
        let tarball = dir.path().join("cs.tar.gz");
        let ok = Command::new("tar")
            .arg("-czf")
            .arg(&tarball)
            .arg("-C")
            .arg(dir.path())
            .arg("cs-1")
            .status()
            .unwrap();
        assert!(ok.success());
        let from_dir = PolicySource {
            path: src.clone(),
            rev: None,
        }
        .resolve()
        .unwrap();
        let from_tar = PolicySource {
            path: tarball,
            rev: None,
        }
        .resolve()
        .unwrap();
        assert_eq!(from_dir.root(), src);
        assert!(from_tar.root().join("container.te").is_file());
        assert_eq!(from_dir.sha256, from_tar.sha256);
    }

    #[test]
    fn the_hash_changes_with_every_file_and_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a"), "1").unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/b"), "2").unwrap();
        let base = hash_tree(dir.path()).unwrap();
        std::fs::write(dir.path().join("d/b"), "3").unwrap();
        let changed = hash_tree(dir.path()).unwrap();
        assert_ne!(changed, base);
        std::fs::set_permissions(dir.path().join("a"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        assert_ne!(hash_tree(dir.path()).unwrap(), changed);
        std::fs::rename(dir.path().join("d/b"), dir.path().join("d/c")).unwrap();
        let renamed = hash_tree(dir.path()).unwrap();
        std::fs::create_dir(dir.path().join(".git")).unwrap();
        std::fs::write(dir.path().join(".git/HEAD"), "ref").unwrap();
        assert_eq!(hash_tree(dir.path()).unwrap(), renamed, ".git is left out");
    }

    #[test]
    fn a_missing_source_says_what_to_give() {
        let e = PolicySource {
            path: "/nonexistent/policy".into(),
            rev: None,
        }
        .resolve()
        .unwrap_err();
        assert!(
            e.to_string().contains("/nonexistent/policy does not exist"),
            "{e}"
        );
    }
}
