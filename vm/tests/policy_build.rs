//! Building a broken container-selinux on Fedora's policy, on the host: the error names
//! `container.te` and the line, and nothing is left behind.
//!
//! Needs the pristine policy sources: `CRLAB_POLICY_FIXTURES` names the folder holding
//! `container-selinux-*.tar.gz` and `fedora-selinux-policy-*.tar.gz` (`.ci/run` sets it), and
//! the host's policy tools (`cargo xtask prereqs` installs them with the lab's packages).
//! Without the variable it does not run and says so (NOT RUN), except under CI, where it fails.

use crlab_vm::policy::{build, PolicyError, PolicySelection};
use std::path::{Path, PathBuf};
use std::process::Command;

/// `CRLAB_POLICY_FIXTURES`; a relative path is taken from the workspace root, as `.ci/run`
/// gives it (cargo runs this test in `vm/`). Unset: `None` on a developer's machine (the test
/// says it did not run), a failure under CI (`CI` set), where it must always run.
fn fixtures() -> Option<PathBuf> {
    match std::env::var_os("CRLAB_POLICY_FIXTURES") {
        Some(d) if !d.is_empty() => Some(Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(d)),
        _ if std::env::var_os("CI").is_some() => panic!(
            "CRLAB_POLICY_FIXTURES is unset under CI: this test builds container-selinux on \
             Fedora's policy from their source tarballs; set it to the folder that holds \
             container-selinux-*.tar.gz and fedora-selinux-policy-*.tar.gz (in this \
             workplace: ../shared/fixtures/policy, as .ci/run does)"
        ),
        _ => {
            eprintln!(
                "NOT RUN: CRLAB_POLICY_FIXTURES is unset (the folder with \
                 container-selinux-*.tar.gz and fedora-selinux-policy-*.tar.gz); .ci/run sets it"
            );
            None
        }
    }
}

fn fixture(dir: &Path, prefix: &str) -> PathBuf {
    let found: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("CRLAB_POLICY_FIXTURES={}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".tar.gz"))
        })
        .collect();
    match found.as_slice() {
        [one] => one.clone(),
        _ => panic!(
            "expected one {prefix}*.tar.gz in {}, found {found:?}",
            dir.display()
        ),
    }
}

fn scratch_dirs() -> Vec<String> {
    let me = format!("-{}-", std::process::id());
    std::fs::read_dir(std::env::temp_dir())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.starts_with("crlab-policy-") && n.contains(&me))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_broken_container_te_fails_with_its_file_and_line_needs_crlab_policy_fixtures() {
    let Some(dir) = fixtures() else {
        return;
    };
    let fedora = fixture(&dir, "fedora-selinux-policy-");
    let container = fixture(&dir, "container-selinux-");

    // A copy of container-selinux with a syntax error at line 11 of container.te.
    let work = tempfile::tempdir().expect("temporary directory");
    let ok = Command::new("tar")
        .arg("-xzf")
        .arg(&container)
        .arg("-C")
        .arg(work.path())
        .status()
        .expect("running tar");
    assert!(ok.success(), "extracting {}", container.display());
    let top = std::fs::read_dir(work.path())
        .expect("reading the extracted tree")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.join("container.te").is_file())
        .expect("container.te in the container-selinux tarball");
    let te = top.join("container.te");
    let text = std::fs::read_to_string(&te).expect("reading container.te");
    let mut lines: Vec<&str> = text.lines().collect();
    lines.insert(10, "this is not policy;");
    std::fs::write(&te, lines.join("\n") + "\n").expect("writing container.te");

    let selection = PolicySelection::parse(
        Some(&format!("fedora={}", fedora.display())),
        Some(&format!("container-selinux={}", top.display())),
    )
    .expect("a valid selection");
    let mut log = Vec::new();
    let resolved = selection
        .resolve(&mut |m| log.push(m.to_string()))
        .expect("resolving the sources");
    let err = build::fedora(&resolved, &mut |m| log.push(m.to_string()))
        .expect_err("a broken container.te must not build");
    let text = err.to_string();
    eprintln!("{text}");
    match &err {
        PolicyError::Build { what, errors } => {
            assert!(what.contains("container-selinux"), "{text}");
            assert!(
                errors.contains("container.te:11:ERROR 'syntax error' at token 'this'"),
                "the compiler's message names container.te and line 11:\n{text}"
            );
            assert!(errors.contains("this is not policy;"), "{text}");
        }
        PolicyError::MissingTool { .. } => panic!("{text}"),
        other => panic!("expected a build error, got: {other}"),
    }
    assert!(
        log.iter()
            .any(|m| m.contains("compiling container-selinux")),
        "{log:?}"
    );
    assert!(
        !log.iter().any(|m| m.contains("make base.pp modules")),
        "container-selinux is compiled, and fails, before the base policy: {log:?}"
    );
    drop(resolved);
    assert_eq!(
        scratch_dirs(),
        Vec::<String>::new(),
        "scratch directories left behind"
    );
}
