//! File system changes made by the agent itself (`FileOps`): what a trial's preparation did
//! with `rm -rf`, `mkdir -p`, `chcon [-R] -t`, `chown [-R]` and `cp`, in the agent's own
//! process (the same subject, root in the agent's domain, as those programs, which ran
//! without a domain transition), without a program started for each.
//!
//! A label is the `security.selinux` extended attribute, read and written with
//! `lgetxattr`/`lsetxattr` (what libselinux's `lgetfilecon`/`lsetfilecon` do).

use std::{
    fs, io,
    os::unix::fs::lchown,
    path::{Path, PathBuf},
};

use crlab_protocol::{file_op::Op, Chown, Copy, FileOp, FileOps, SetType};

/// The extended attribute that holds a file's SELinux label.
const LABEL_XATTR: &str = "security.selinux";

/// The longest label read (the kernel's limit on an xattr value is 64 KiB).
const LABEL_MAX: usize = 4096;

#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    #[error("file operation {index} has no operation")]
    Empty { index: usize },
    #[error("file operation {index} ({what}) has an empty path")]
    NoPath { index: usize, what: &'static str },
    #[error("the SELinux type {value:?} for {path} is not a type name")]
    BadType { path: PathBuf, value: String },
    #[error("removing {path}")]
    Remove {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("making the directory {path} and its parents")]
    MakeDirs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("listing the directory {path}")]
    List {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the SELinux label of {path}")]
    ReadLabel {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("the SELinux label {label:?} of {path} has no type field to replace")]
    Unlabelled { path: PathBuf, label: String },
    #[error("setting the SELinux label of {path} to {label}")]
    SetLabel {
        path: PathBuf,
        label: String,
        #[source]
        source: io::Error,
    },
    #[error("changing the owner of {path} to {uid}:{gid}")]
    Chown {
        path: PathBuf,
        uid: u32,
        gid: u32,
        #[source]
        source: io::Error,
    },
    #[error("copying {from} to {to}")]
    Copy {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What [`apply`] refuses before it acts: an operation without its kind, an empty path, a
/// type that is not a type name. Pure: nothing is touched.
pub fn check(req: &FileOps) -> Result<(), TreeError> {
    for (index, op) in req.ops.iter().enumerate() {
        let no_path = |what| TreeError::NoPath { index, what };
        match &op.op {
            None => return Err(TreeError::Empty { index }),
            Some(Op::Remove(p)) if p.is_empty() => return Err(no_path("remove")),
            Some(Op::MakeDirs(p)) if p.is_empty() => return Err(no_path("make_dirs")),
            Some(Op::SetType(s)) if s.path.is_empty() => return Err(no_path("set_type")),
            Some(Op::SetType(s)) if !is_type_name(&s.selinux_type) => {
                return Err(TreeError::BadType {
                    path: s.path.clone().into(),
                    value: s.selinux_type.clone(),
                })
            }
            Some(Op::Chown(c)) if c.path.is_empty() => return Err(no_path("chown")),
            Some(Op::Copy(c)) if c.from.is_empty() || c.to.is_empty() => {
                return Err(no_path("copy"))
            }
            Some(_) => {}
        }
    }
    Ok(())
}

/// A type name as policies write them: letters, digits, `_`, `.` and `-`, nothing else (no
/// `:`, which would split the label differently).
fn is_type_name(t: &str) -> bool {
    !t.is_empty()
        && t.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// Does each operation in order; the first that fails ends it.
pub fn apply(req: &FileOps) -> Result<(), TreeError> {
    check(req)?;
    for FileOp { op } in &req.ops {
        match op {
            None => {}
            Some(Op::Remove(p)) => remove(Path::new(p))?,
            Some(Op::MakeDirs(p)) => make_dirs(Path::new(p))?,
            Some(Op::SetType(s)) => set_type(s)?,
            Some(Op::Chown(c)) => chown(c)?,
            Some(Op::Copy(c)) => copy(c)?,
        }
    }
    Ok(())
}

/// Removes a file, a symbolic link or a directory tree; a missing path is no error.
pub fn remove(path: &Path) -> Result<(), TreeError> {
    let removed = match fs::symlink_metadata(path) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
        Ok(m) if m.is_dir() => fs::remove_dir_all(path),
        Ok(_) => fs::remove_file(path),
    };
    match removed {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(TreeError::Remove {
            path: path.to_owned(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn make_dirs(path: &Path) -> Result<(), TreeError> {
    fs::create_dir_all(path).map_err(|source| TreeError::MakeDirs {
        path: path.to_owned(),
        source,
    })
}

/// Calls `f` on `path`, then, when `recursive`, on everything under it (a directory's entries
/// after the directory, symbolic links not followed).
fn walk(
    path: &Path,
    recursive: bool,
    f: &mut dyn FnMut(&Path) -> Result<(), TreeError>,
) -> Result<(), TreeError> {
    f(path)?;
    if !recursive {
        return Ok(());
    }
    let is_dir = fs::symlink_metadata(path)
        .map(|m| m.is_dir())
        .map_err(|source| TreeError::List {
            path: path.to_owned(),
            source,
        })?;
    if !is_dir {
        return Ok(());
    }
    let list_err = |source| TreeError::List {
        path: path.to_owned(),
        source,
    };
    let mut entries = Vec::new();
    for entry in fs::read_dir(path).map_err(list_err)? {
        entries.push(entry.map_err(list_err)?.path());
    }
    entries.sort();
    for entry in entries {
        walk(&entry, true, f)?;
    }
    Ok(())
}

fn set_type(s: &SetType) -> Result<(), TreeError> {
    walk(Path::new(&s.path), s.recursive, &mut |path| {
        set_type_of(path, &s.selinux_type)
    })
}

/// Gives `path` (not followed if a link) the label it has with `selinux_type` as its type.
fn set_type_of(path: &Path, selinux_type: &str) -> Result<(), TreeError> {
    let mut raw = vec![0u8; LABEL_MAX];
    let n =
        rustix::fs::lgetxattr(path, LABEL_XATTR, &mut raw).map_err(|e| TreeError::ReadLabel {
            path: path.to_owned(),
            source: e.into(),
        })?;
    let label = String::from_utf8_lossy(&raw[..n])
        .trim_end_matches('\0')
        .to_owned();
    let Some(new) = with_type(&label, selinux_type) else {
        return Err(TreeError::Unlabelled {
            path: path.to_owned(),
            label,
        });
    };
    if new == label {
        return Ok(());
    }
    // Written with its NUL, as libselinux writes it.
    let mut value = new.clone().into_bytes();
    value.push(0);
    rustix::fs::lsetxattr(path, LABEL_XATTR, &value, rustix::fs::XattrFlags::empty()).map_err(|e| {
        TreeError::SetLabel {
            path: path.to_owned(),
            label: new,
            source: e.into(),
        }
    })
}

/// `label` (`user:role:type[:level]`) with its type replaced; `None` when it has no type
/// field. Pure.
fn with_type(label: &str, selinux_type: &str) -> Option<String> {
    let mut fields = label.splitn(4, ':');
    let (user, role, _, level) = (
        fields.next()?,
        fields.next()?,
        fields.next()?,
        fields.next(),
    );
    if user.is_empty() || role.is_empty() {
        return None;
    }
    Some(match level {
        Some(level) => format!("{user}:{role}:{selinux_type}:{level}"),
        None => format!("{user}:{role}:{selinux_type}"),
    })
}

fn chown(c: &Chown) -> Result<(), TreeError> {
    walk(Path::new(&c.path), c.recursive, &mut |path| {
        lchown(path, Some(c.uid), Some(c.gid)).map_err(|source| TreeError::Chown {
            path: path.to_owned(),
            uid: c.uid,
            gid: c.gid,
            source,
        })
    })
}

/// Contents and mode, as `cp` gives them to a new file (`fs::copy`).
fn copy(c: &Copy) -> Result<(), TreeError> {
    let (from, to) = (Path::new(&c.from), Path::new(&c.to));
    fs::copy(from, to)
        .map(drop)
        .map_err(|source| TreeError::Copy {
            from: from.to_owned(),
            to: to.to_owned(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn op(op: Op) -> FileOp {
        FileOp { op: Some(op) }
    }

    fn ops(list: Vec<Op>) -> FileOps {
        FileOps {
            ops: list.into_iter().map(op).collect(),
        }
    }

    fn s(p: &Path) -> String {
        p.to_str().unwrap().to_owned()
    }

    #[test]
    fn a_tree_is_removed_made_copied_and_given_its_owner_in_order() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("trial");
        let log = tmp.path().join("trial.log");
        fs::create_dir_all(dir.join("old/deeper")).unwrap();
        fs::write(dir.join("old/deeper/file"), b"x").unwrap();
        std::os::unix::fs::symlink("/etc", dir.join("old/link")).unwrap();
        fs::write(&log, b"old").unwrap();
        let src = tmp.path().join("prog");
        fs::write(&src, b"#!/bin/sh\n").unwrap();
        fs::set_permissions(&src, fs::Permissions::from_mode(0o755)).unwrap();
        let me = fs::metadata(tmp.path()).unwrap();
        let req = ops(vec![
            Op::Remove(s(&dir)),
            Op::Remove(s(&log)),
            Op::Remove(s(&tmp.path().join("never-there"))),
            Op::MakeDirs(s(&dir.join("state"))),
            Op::MakeDirs(s(&dir.join("images"))),
            Op::MakeDirs(s(&dir.join("state"))),
            Op::Chown(Chown {
                path: s(&dir.join("state")),
                uid: me.uid(),
                gid: me.gid(),
                recursive: true,
            }),
            Op::MakeDirs(s(&dir.join("bin"))),
            Op::Copy(Copy {
                from: s(&src),
                to: s(&dir.join("bin/prog")),
            }),
        ]);
        apply(&req).unwrap();
        assert!(!log.exists());
        assert!(!dir.join("old").exists());
        assert!(fs::metadata("/etc").is_ok(), "the link was not followed");
        assert!(dir.join("state").is_dir() && dir.join("images").is_dir());
        let copied = fs::metadata(dir.join("bin/prog")).unwrap();
        assert_eq!(fs::read(dir.join("bin/prog")).unwrap(), b"#!/bin/sh\n");
        assert_eq!(copied.permissions().mode() & 0o777, 0o755);
    }

    #[test]
    fn the_first_failure_ends_it_and_names_the_operation_and_path() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("file");
        fs::write(&file, b"").unwrap();
        let later = tmp.path().join("later");
        let req = ops(vec![
            Op::MakeDirs(s(&file.join("sub"))),
            Op::MakeDirs(s(&later)),
        ]);
        let e = apply(&req).unwrap_err();
        assert!(
            crate::error_chain(&e).starts_with(&format!(
                "making the directory {}/sub and its parents: ",
                file.display()
            )),
            "{}",
            crate::error_chain(&e)
        );
        assert!(!later.exists());
        let e = apply(&ops(vec![Op::Copy(Copy {
            from: s(&tmp.path().join("missing")),
            to: s(&later),
        })]))
        .unwrap_err();
        assert!(e.to_string().starts_with("copying "), "{e}");
    }

    #[test]
    fn an_operation_without_a_path_or_with_a_bad_type_is_refused_before_anything() {
        let tmp = tempfile::tempdir().unwrap();
        let made = tmp.path().join("made");
        let bad = |op2: Op| {
            let req = ops(vec![Op::MakeDirs(s(&made)), op2]);
            let e = apply(&req).unwrap_err().to_string();
            assert!(!made.exists(), "acted before refusing: {e}");
            e
        };
        assert_eq!(
            bad(Op::Remove(String::new())),
            "file operation 1 (remove) has an empty path"
        );
        assert!(bad(Op::SetType(SetType {
            path: "/x".into(),
            selinux_type: "a:b".into(),
            recursive: false,
        }))
        .contains("is not a type name"));
        assert_eq!(
            check(&FileOps {
                ops: vec![FileOp { op: None }]
            })
            .unwrap_err()
            .to_string(),
            "file operation 0 has no operation"
        );
    }

    #[test]
    fn a_labels_type_is_replaced_and_the_rest_kept() {
        assert_eq!(
            with_type("system_u:object_r:tmp_t:s0", "container_file_t").unwrap(),
            "system_u:object_r:container_file_t:s0"
        );
        assert_eq!(
            with_type("system_u:object_r:tmp_t:s0:c1,c2", "bin_t").unwrap(),
            "system_u:object_r:bin_t:s0:c1,c2"
        );
        assert_eq!(
            with_type("system_u:object_r:tmp_t:s0-s0:c0.c1023", "bin_t").unwrap(),
            "system_u:object_r:bin_t:s0-s0:c0.c1023"
        );
        assert_eq!(
            with_type("u:r:t", "bin_t").unwrap(),
            "u:r:bin_t",
            "a policy without MLS"
        );
        assert_eq!(with_type("unlabeled", "bin_t"), None);
        assert_eq!(with_type("u:r", "bin_t"), None);
    }

    #[test]
    fn setting_a_type_names_the_path_when_the_label_cannot_be_read_or_set() {
        let tmp = tempfile::tempdir().unwrap();
        let missing = tmp.path().join("missing");
        let e = apply(&ops(vec![Op::SetType(SetType {
            path: s(&missing),
            selinux_type: "bin_t".into(),
            recursive: true,
        })]))
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("reading the SELinux label of {}", missing.display())
        );
    }
}
