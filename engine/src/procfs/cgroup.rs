//! `/proc/PID/cgroup` (a task's cgroup in each hierarchy) and the cgroup mounts of
//! `/proc/self/mountinfo` (where each hierarchy can be reached).

use super::{read_string, ProcError};

/// One line of `/proc/PID/cgroup`: `hierarchy-id:controllers:path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupLine {
    /// The hierarchy's id; 0 for cgroup v2.
    pub hierarchy: u32,
    /// A v1 hierarchy's controllers and name, comma-separated as the kernel lists them
    /// (`cpu,cpuacct`, `name=systemd`); empty for v2.
    pub controllers: String,
    /// The cgroup's path from the hierarchy's root.
    pub path: String,
}

impl CgroupLine {
    /// Every line of `/proc/PID/task/TID/cgroup`.
    pub fn read(pid: i32, tid: i32) -> Result<Vec<CgroupLine>, ProcError> {
        let path = format!("/proc/{pid}/task/{tid}/cgroup");
        let text = read_string(&path)?;
        parse_cgroup(&text).map_err(|what| ProcError::Parse { path, what })
    }
}

/// Parses `/proc/PID/cgroup`. The path is everything after the second colon (a path may
/// hold colons).
pub fn parse_cgroup(text: &str) -> Result<Vec<CgroupLine>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(3, ':');
        let (Some(id), Some(controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{line:?} is not hierarchy:controllers:path"));
        };
        let hierarchy = id
            .parse()
            .map_err(|_| format!("{line:?}: {id:?} is not a hierarchy id"))?;
        out.push(CgroupLine {
            hierarchy,
            controllers: controllers.to_owned(),
            path: path.to_owned(),
        });
    }
    Ok(out)
}

/// A mounted cgroup hierarchy, from `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// The cgroup of the hierarchy at the mount point (`/` unless a sub-tree is mounted).
    pub root: String,
    pub mount_point: String,
    /// cgroup v2 (`cgroup2`), else v1 (`cgroup`).
    pub v2: bool,
    /// A v1 mount's super options (its controllers and `name=` among them).
    pub options: Vec<String>,
}

impl CgroupMount {
    /// The cgroup mounts the engine sees.
    pub fn read_own() -> Result<Vec<CgroupMount>, ProcError> {
        let path = "/proc/self/mountinfo";
        let text = read_string(path)?;
        parse_mountinfo(&text).map_err(|what| ProcError::Parse {
            path: path.to_owned(),
            what,
        })
    }

    /// Whether this mount shows the hierarchy of a `/proc/PID/cgroup` line with
    /// `controllers` (empty: cgroup v2).
    pub fn serves(&self, controllers: &str) -> bool {
        if controllers.is_empty() {
            return self.v2;
        }
        !self.v2
            && controllers
                .split(',')
                .all(|c| self.options.iter().any(|o| o == c))
    }

    /// The directory of cgroup `path` under this mount, if the mount shows it.
    pub fn dir_of(&self, path: &str) -> Option<std::path::PathBuf> {
        let rest = if self.root == "/" {
            path.strip_prefix('/')?
        } else if path == self.root {
            ""
        } else {
            path.strip_prefix(&self.root)?.strip_prefix('/')?
        };
        let mut dir = std::path::PathBuf::from(&self.mount_point);
        if !rest.is_empty() {
            dir.push(rest);
        }
        Some(dir)
    }
}

/// Undoes mountinfo's octal escapes (`\040` for a space, ...).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() && b[i + 1..i + 4].iter().all(u8::is_ascii_digit) {
            let v = (b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0');
            out.push(v);
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The mount points of a mountinfo text whose filesystem is device `major:minor` (the third
/// field), in its order.
pub fn mount_points_of(text: &str, major: u64, minor: u64) -> Vec<String> {
    let want = format!("{major}:{minor}");
    text.lines()
        .filter_map(|line| {
            let mut f = line.split(' ');
            let dev = f.nth(2)?;
            let mount_point = f.nth(1)?;
            (dev == want).then(|| unescape(mount_point))
        })
        .collect()
}

/// The cgroup and cgroup2 mounts of a mountinfo text.
pub fn parse_mountinfo(text: &str) -> Result<Vec<CgroupMount>, String> {
    let mut out = Vec::new();
    for line in text.lines().filter(|l| !l.is_empty()) {
        let fields: Vec<&str> = line.split(' ').collect();
        let Some(sep) = fields.iter().position(|f| *f == "-") else {
            return Err(format!("{line:?} has no separator"));
        };
        let (Some(root), Some(mount_point), Some(fstype), Some(options)) = (
            fields.get(3),
            fields.get(4),
            fields.get(sep + 1),
            fields.get(sep + 3),
        ) else {
            return Err(format!("{line:?} has too few fields"));
        };
        let v2 = match *fstype {
            "cgroup2" => true,
            "cgroup" => false,
            _ => continue,
        };
        out.push(CgroupMount {
            root: unescape(root),
            mount_point: unescape(mount_point),
            v2,
            options: options.split(',').map(str::to_owned).collect(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_hybrid_cgroup_file() {
        let text = "9:name=systemd:/\n4:memory:/a/b:c\n1:cpu,cpuacct:/\n0::/user.slice\n";
        let lines = parse_cgroup(text).unwrap();
        assert_eq!(lines.len(), 4);
        assert_eq!(lines[1].controllers, "memory");
        assert_eq!(lines[1].path, "/a/b:c");
        assert_eq!(lines[3].hierarchy, 0);
        assert_eq!(lines[3].controllers, "");
        assert!(parse_cgroup("x:y\n").is_err());
    }

    #[test]
    fn finds_the_mount_points_of_a_device() {
        let text = "27 1 254:0 / / rw - ext4 /dev/vda rw\n\
                    30 27 0:27 / /dev/shm rw - tmpfs tmpfs rw\n\
                    31 27 254:0 /srv /my\\040srv rw - ext4 /dev/vda rw\n";
        assert_eq!(mount_points_of(text, 254, 0), ["/", "/my srv"]);
        assert_eq!(mount_points_of(text, 0, 27), ["/dev/shm"]);
        assert!(mount_points_of(text, 8, 1).is_empty());
    }

    #[test]
    fn finds_cgroup_mounts_and_their_directories() {
        let text = "\
25 19 0:22 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755\n\
26 25 0:23 / /sys/fs/cgroup/unified rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n\
30 25 0:27 / /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct\n\
31 25 0:28 /sub /mnt/my\\040cg rw - cgroup cgroup rw,name=systemd\n";
        let mounts = parse_mountinfo(text).unwrap();
        assert_eq!(mounts.len(), 3);
        assert!(mounts[0].serves(""));
        assert!(!mounts[0].serves("cpu"));
        assert!(mounts[1].serves("cpu,cpuacct"));
        assert!(!mounts[1].serves("memory"));
        assert!(mounts[2].serves("name=systemd"));
        assert_eq!(mounts[2].mount_point, "/mnt/my cg");
        assert_eq!(
            mounts[0].dir_of("/a/b").unwrap(),
            std::path::Path::new("/sys/fs/cgroup/unified/a/b")
        );
        assert_eq!(
            mounts[0].dir_of("/").unwrap(),
            std::path::Path::new("/sys/fs/cgroup/unified")
        );
        assert_eq!(
            mounts[2].dir_of("/sub/x").unwrap(),
            std::path::Path::new("/mnt/my cg/x")
        );
        assert_eq!(mounts[2].dir_of("/subx"), None);
        assert_eq!(mounts[2].dir_of("/other"), None);
    }
}
