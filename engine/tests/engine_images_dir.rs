//! The images directory: a dump never mixes with an older one (refused without `--replace`,
//! swapped in whole with it, an old dump intact after a failed replacement), the modes the
//! engine writes, and the readers' refusal of images another user could have written, or that
//! name a path no dump records.
//!
//! Needs root, as every end-to-end test of the engine. Every process a test starts is killed
//! and reaped by a guard.

mod support;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use rstest::rstest;

use ::crlab::image::ImageDirReader;
use support::process::{self, Exit};
use support::protocol::WaitMode;
use support::rewrite::rewrite_dump;
use support::workload::Workload;

/// Every file of a directory, by name, with its bytes.
fn snapshot(dir: &Path) -> BTreeMap<String, Vec<u8>> {
    std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| {
            let e = e.expect("a directory entry");
            let name = e.file_name().to_string_lossy().into_owned();
            let bytes = std::fs::read(e.path()).expect("reading a file of the dump");
            (name, bytes)
        })
        .collect()
}

/// The staging directories of dumps (`.<name>.crlab-dump-*`) left beside `dir`.
fn staging_left(dir: &Path) -> Vec<String> {
    let name = dir.file_name().expect("a named dir").to_string_lossy();
    let prefix = format!(".{name}.crlab-dump-");
    let parent = dir.parent().expect("a parent");
    std::fs::read_dir(parent)
        .expect("listing the parent")
        .filter_map(|e| Some(e.ok()?.file_name().to_string_lossy().into_owned()))
        .filter(|n| n.starts_with(&prefix))
        .collect()
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// The modes the engine writes: 0600 for every image file.
fn assert_files_0600(dir: &Path) {
    for e in std::fs::read_dir(dir).expect("listing the dump") {
        let path = e.expect("entry").path();
        assert_eq!(mode(&path), 0o600, "mode of {}", path.display());
    }
}

/// A dump into a directory that holds files is refused, naming the directory and the flag,
/// before the workload is touched; `--replace` replaces the whole directory (a file that was
/// not part of the old dump goes with it) with a 0700 directory of 0600 files.
#[test]
fn a_dump_never_mixes_with_an_older_one() {
    let mut w = Workload::start("idle", WaitMode::Nanosleep, &[]);
    w.wait_ready();
    w.dump_ok(&["--leave-running"]);
    let images = w.images_dir();
    std::fs::write(images.join("notes.txt"), b"not part of any dump").expect("a stray file");
    let before = snapshot(&images);

    let run = w.dump(&["--leave-running"]);
    let (ok, exit, err) = (run.succeeded(), run.exit, run.stderr());
    assert!(!ok, "a dump into a non-empty directory must be refused");
    assert_eq!(exit, Some(Exit::Code(1)), "{err}");
    assert!(
        err.contains(&format!("{}: failed to dump into", images.display())),
        "the error names the directory: {err}"
    );
    assert!(err.contains("is not empty"), "{err}");
    assert!(err.contains("--replace"), "the error names the flag: {err}");
    assert_eq!(snapshot(&images), before, "the old dump is byte-identical");
    w.assert_running("a refused dump");

    w.dump_ok(&["--leave-running", "--replace"]);
    let after = snapshot(&images);
    assert!(
        !after.contains_key("notes.txt"),
        "the old directory went whole"
    );
    assert_ne!(
        after.get("inventory.img"),
        before.get("inventory.img"),
        "a new inventory"
    );
    assert!(
        staging_left(&images).is_empty(),
        "{:?}",
        staging_left(&images)
    );
    assert_eq!(mode(&images), 0o700, "a directory the engine made");
    assert_files_0600(&images);
    ImageDirReader::open(&images).expect("the new dump reads back");
    w.assert_running("crlab dump --replace --leave-running");
    w.trigger();
    w.expect_ok();
}

/// How a replacing dump is made to fail.
#[derive(Clone, Copy, Debug)]
enum Failure {
    /// The target process is gone before the dump starts.
    TargetGone,
    /// The target holds an inotify descriptor with unread events, which the dump refuses after
    /// seizing it.
    Unsupported,
}

/// A `--replace` dump that fails leaves the old dump byte-identical, and no staging directory.
#[rstest]
#[case::target_gone(Failure::TargetGone)]
#[case::unsupported_descriptor(Failure::Unsupported)]
fn a_failed_replacement_leaves_the_old_dump_intact(#[case] failure: Failure) {
    let mut old = Workload::start("idle", WaitMode::Nanosleep, &[]);
    old.wait_ready();
    old.dump_ok(&[]);
    old.reap_dumped_original();
    let images = old.images_dir();
    let before = snapshot(&images);

    let (tree, mut target) = match failure {
        Failure::TargetGone => (old.pid(), None),
        Failure::Unsupported => {
            let mut w = Workload::start("unsupported", WaitMode::Nanosleep, &["inotify"]);
            w.wait_ready();
            (w.pid(), Some(w))
        }
    };
    let args: Vec<OsString> = vec![
        "dump".into(),
        "--tree".into(),
        tree.to_string().into(),
        "--images-dir".into(),
        images.clone().into(),
        "--replace".into(),
    ];
    let run = old.crlab(&args);
    let (ok, exit) = (run.succeeded(), run.exit);
    assert!(!ok, "the replacing dump must fail ({failure:?})");
    assert_eq!(exit, Some(Exit::Code(1)));
    assert_eq!(snapshot(&images), before, "the old dump is byte-identical");
    assert!(
        staging_left(&images).is_empty(),
        "{:?}",
        staging_left(&images)
    );
    ImageDirReader::open(&images).expect("the old dump still reads");
    if let Some(w) = &mut target {
        w.assert_running("a failed replacing dump");
        w.trigger();
        w.expect_ok();
    }
    // And it still restores.
    old.restore_detached_ok();
    old.trigger();
    old.expect_ok();
}

/// The lab's layout: an images directory made beforehand by root with the default umask
/// (0755) is accepted empty, keeps its mode, gets 0600 files, and its dump passes the restore's
/// checks (`check --images-dir`, `show`, `restore`). A directory the engine makes is 0700.
#[test]
fn a_directory_made_beforehand_or_by_the_engine_is_accepted() {
    let mut w = Workload::start("idle", WaitMode::Nanosleep, &[]);
    w.wait_ready();
    let images = w.images_dir();
    std::fs::set_permissions(&images, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // A second dump, into a directory that does not exist yet, with missing parents.
    let fresh = w.scratch_dir().join("new/parent/images");
    let args: Vec<OsString> = vec![
        "dump".into(),
        "--tree".into(),
        w.pid().to_string().into(),
        "--images-dir".into(),
        fresh.clone().into(),
        "--leave-running".into(),
    ];
    let run = w.crlab(&args);
    assert!(run.succeeded(), "a dump into a new directory");
    assert_eq!(mode(&fresh), 0o700, "a directory the engine made");
    assert_files_0600(&fresh);
    assert!(staging_left(&fresh).is_empty());

    w.dump_ok(&[]);
    w.reap_dumped_original();
    assert_eq!(
        mode(&images),
        0o755,
        "the caller's directory keeps its mode"
    );
    assert_files_0600(&images);
    for sub in ["check", "show"] {
        let args: Vec<OsString> = vec![sub.into(), "--images-dir".into(), images.clone().into()];
        let run = w.crlab(&args);
        assert!(run.succeeded(), "crlab {sub} --images-dir");
    }
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

/// How a test makes the images something another user could have written.
#[derive(Clone, Copy, Debug)]
enum Untrusted {
    DirGroupWritable,
    DirOwnedByNobody,
    FileOtherWritable,
    FileOwnedByNobody,
    FileSymlink,
}

const NOBODY: u32 = 65534;

/// Restore, show and check refuse images another user could have written, naming the path and
/// `--allow-untrusted-images`, and create nothing; with the flag, the restore goes through.
#[rstest]
#[case::dir_group_writable(Untrusted::DirGroupWritable)]
#[case::dir_owned_by_another_user(Untrusted::DirOwnedByNobody)]
#[case::file_other_writable(Untrusted::FileOtherWritable)]
#[case::file_owned_by_another_user(Untrusted::FileOwnedByNobody)]
#[case::file_a_symlink(Untrusted::FileSymlink)]
fn readers_refuse_images_another_user_could_have_written(#[case] how: Untrusted) {
    let mut w = Workload::start("idle", WaitMode::Nanosleep, &[]);
    w.wait_ready();
    w.dump_ok(&[]);
    w.reap_dumped_original();
    let images = w.images_dir();
    let core = images.join(format!("core-{}.img", w.pid()));
    let (culprit, problem) = match how {
        Untrusted::DirGroupWritable => {
            std::fs::set_permissions(&images, std::fs::Permissions::from_mode(0o775))
                .expect("chmod");
            (images.clone(), "lets its group write it")
        }
        Untrusted::DirOwnedByNobody => {
            std::os::unix::fs::chown(&images, Some(NOBODY), None).expect("chown");
            (images.clone(), "is owned by uid 65534")
        }
        Untrusted::FileOtherWritable => {
            std::fs::set_permissions(&core, std::fs::Permissions::from_mode(0o602)).expect("chmod");
            (core.clone(), "lets others write it")
        }
        Untrusted::FileOwnedByNobody => {
            std::os::unix::fs::chown(&core, Some(NOBODY), None).expect("chown");
            (core.clone(), "is owned by uid 65534")
        }
        Untrusted::FileSymlink => {
            let aside = w.scratch_dir().join("core-aside.img");
            std::fs::rename(&core, &aside).expect("moving the core aside");
            std::os::unix::fs::symlink(&aside, &core).expect("symlink");
            (core.clone(), "is a symbolic link")
        }
    };
    let pidfile = w.pidfile();
    let pidfile = pidfile.to_str().expect("utf-8");
    let commands: [Vec<&str>; 3] = [
        vec!["restore", "--detach", "--pidfile", pidfile],
        vec!["show"],
        vec!["check"],
    ];
    for command in &commands {
        let mut args: Vec<OsString> = command.iter().map(OsString::from).collect();
        args.extend(["--images-dir".into(), images.clone().into()]);
        let run = w.crlab(&args);
        let (exit, err) = (run.exit, run.stderr());
        assert_eq!(
            exit,
            Some(Exit::Code(1)),
            "crlab {command:?} must refuse\n{err}"
        );
        assert!(
            err.contains(&culprit.display().to_string()),
            "names {}: {err}",
            culprit.display()
        );
        assert!(err.contains(problem), "says it {problem}: {err}");
        assert!(
            err.contains("--allow-untrusted-images"),
            "names the flag: {err}"
        );
        assert!(
            !process::pid_exists(w.pid()),
            "a refused restore creates nothing"
        );
    }
    let ok = w
        .restore(&["--allow-untrusted-images", "--detach", "--pidfile", pidfile])
        .succeeded();
    // Owned before anything can fail: a restored process is killed and reaped on a panic.
    let mut restored = process::Proc::adopt(w.pid());
    assert!(ok, "with --allow-untrusted-images the restore goes through");
    w.trigger();
    wait_result_ok(&w, &mut restored);
}

/// Waits for a restored workload that the test owns as `restored` to write `ok` and exit 0.
fn wait_result_ok(w: &Workload, restored: &mut process::Proc) {
    let exit = restored
        .reap_within(support::workload::RESULT_TIMEOUT, "the restored workload")
        .unwrap_or_else(|e| panic!("{e}"));
    let result = std::fs::read_to_string(w.state_dir().join(support::protocol::RESULT));
    assert_eq!(
        result.ok().as_deref(),
        Some(support::protocol::RESULT_OK),
        "the restored workload's result ({exit})"
    );
    assert_eq!(exit, Exit::Code(0));
}

/// A path in the images that no dump records (relative, `..`) is refused before anything is
/// created, naming the image file, what the path is, and the path.
#[rstest]
#[case::relative_cwd("working directory", "tmp")]
#[case::dotdot_cwd("working directory", "/tmp/../etc")]
#[case::dotdot_exe("executable", "/usr/../bin/sh")]
fn restore_refuses_a_path_no_dump_records(#[case] what: &str, #[case] bad: &str) {
    let mut w = Workload::start("idle", WaitMode::Nanosleep, &[]);
    w.wait_ready();
    w.dump_ok(&[]);
    w.reap_dumped_original();
    let images = w.images_dir();
    let doctored = w.scratch_dir().join("doctored");
    let pid = u32::try_from(w.pid()).expect("a pid");
    rewrite_dump(
        &images,
        &doctored,
        |_| {},
        |task, mm| match what {
            "working directory" if task.pid == pid => task.cwd = bad.to_owned(),
            "executable" => mm.exe_path = bad.to_owned(),
            _ => {}
        },
    );
    let args: Vec<OsString> = vec![
        "restore".into(),
        "--detach".into(),
        "--images-dir".into(),
        doctored.clone().into(),
    ];
    let run = w.crlab(&args);
    let (exit, err) = (run.exit, run.stderr());
    assert_eq!(exit, Some(Exit::Code(1)), "{err}");
    assert!(
        err.contains(&format!("the {what} {bad:?} is not a path a dump records")),
        "{err}"
    );
    assert!(err.contains(&doctored.display().to_string()), "{err}");
    assert!(!process::pid_exists(w.pid()), "nothing was created");
    // The untouched dump restores.
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}
