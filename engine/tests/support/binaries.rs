//! The programs the tests run: the `crlab` binary and the workload binaries of
//! `crlab-workloads`, built once per test process with the profile this test was built with.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

/// The crlab CLI cargo built for this test.
pub fn crlab() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_crlab"))
}

/// The path of workload binary `name`, building the workloads first (once per process).
pub fn workload(name: &str) -> PathBuf {
    static DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    match DIR.get_or_init(build_workloads) {
        Ok(dir) => {
            let bin = dir.join(name);
            assert!(
                bin.is_file(),
                "workload binary {} missing after building crlab-workloads: is there a \
                 scenarios/workloads/src/bin/{name}.rs?",
                bin.display()
            );
            bin
        }
        Err(e) => panic!("{e}"),
    }
}

/// Where this test executable's profile keeps its binaries, and how to build into it.
struct Layout {
    /// `<target>/[<triple>/]<profile-dir>`: the binaries land here.
    profile_dir: PathBuf,
    target_dir: PathBuf,
    profile: String,
    triple: Option<String>,
}

fn layout() -> Result<Layout, String> {
    let exe = std::env::current_exe().map_err(|e| format!("finding the test executable: {e}"))?;
    // <target>/[<triple>/]<profile-dir>/deps/<test>-<hash>
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .ok_or_else(|| format!("{} is not inside <target>/<profile>/deps", exe.display()))?
        .to_path_buf();
    let dir_name = profile_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("debug");
    let profile = match dir_name {
        "debug" => "dev".to_owned(),
        other => other.to_owned(),
    };
    let above = profile_dir
        .parent()
        .ok_or_else(|| format!("{} has no parent", profile_dir.display()))?;
    // With --target, the profile dir sits under a directory named after the triple.
    let (derived_target, triple) = if !above.join("CACHEDIR.TAG").exists()
        && above
            .parent()
            .is_some_and(|t| t.join("CACHEDIR.TAG").exists())
    {
        let triple = above.file_name().map(|n| n.to_string_lossy().into_owned());
        (above.parent().unwrap_or(above).to_path_buf(), triple)
    } else {
        (above.to_path_buf(), None)
    };
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or(derived_target);
    Ok(Layout {
        profile_dir,
        target_dir,
        profile,
        triple,
    })
}

fn build_workloads() -> Result<PathBuf, String> {
    let layout = layout()?;
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new(".."));
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut cmd = Command::new(&cargo);
    cmd.current_dir(workspace)
        .args(["build", "--quiet", "-p", "crlab-workloads", "--bins"])
        .args(["--profile", &layout.profile])
        .env("CARGO_TARGET_DIR", &layout.target_dir);
    if let Some(triple) = &layout.triple {
        cmd.args(["--target", triple]);
    }
    let out = cmd
        .output()
        .map_err(|e| format!("running {cmd:?} to build the workloads: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "building the workloads failed ({}): {cmd:?}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(layout.profile_dir)
}
