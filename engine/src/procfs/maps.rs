//! `/proc/PID/maps`: the task's memory mappings.

use super::{read_string, ProcError};

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapEntry {
    pub start: u64,
    pub end: u64,
    /// `rwxp` / `rwxs` as printed.
    pub perms: [u8; 4],
    pub offset: u64,
    pub dev: String,
    pub inode: u64,
    /// Path or pseudo-name (`[heap]`, `[stack]`, `[vdso]`, ...); empty for anonymous memory.
    pub path: String,
}

impl MapEntry {
    pub fn prot(&self) -> u32 {
        let mut p = 0;
        if self.perms[0] == b'r' {
            p |= libc::PROT_READ as u32;
        }
        if self.perms[1] == b'w' {
            p |= libc::PROT_WRITE as u32;
        }
        if self.perms[2] == b'x' {
            p |= libc::PROT_EXEC as u32;
        }
        p
    }
    pub fn prot_exec(&self) -> bool {
        self.perms[2] == b'x'
    }
    pub fn shared(&self) -> bool {
        self.perms[3] == b's'
    }
    pub fn len(&self) -> u64 {
        self.end - self.start
    }

    /// Parses one line.
    pub fn parse(line: &str) -> Option<MapEntry> {
        let mut it = line.splitn(6, ' ');
        let range = it.next()?;
        let perms = it.next()?.as_bytes();
        let offset = u64::from_str_radix(it.next()?, 16).ok()?;
        let dev = it.next()?.to_string();
        let inode = it.next()?.parse().ok()?;
        let path = it.next().unwrap_or("").trim_start().to_string();
        let (s, e) = range.split_once('-')?;
        if perms.len() != 4 {
            return None;
        }
        Some(MapEntry {
            start: u64::from_str_radix(s, 16).ok()?,
            end: u64::from_str_radix(e, 16).ok()?,
            perms: [perms[0], perms[1], perms[2], perms[3]],
            offset,
            dev,
            inode,
            path,
        })
    }

    /// Reads `/proc/PID/maps`.
    pub fn read(pid: i32) -> Result<Vec<MapEntry>, ProcError> {
        let path = format!("/proc/{pid}/maps");
        let text = read_string(&path)?;
        text.lines()
            .filter(|l| !l.is_empty())
            .map(|l| {
                MapEntry::parse(l).ok_or_else(|| ProcError::Parse {
                    path: path.clone(),
                    what: format!("line {l:?}"),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_file_anon_and_named_lines() {
        let f = MapEntry::parse(
            "55d0c0a00000-55d0c0a02000 r-xp 00001000 fe:00 325843                     /usr/bin/cat",
        )
        .unwrap();
        assert_eq!(
            (f.start, f.end, f.offset, f.inode),
            (0x55d0c0a00000, 0x55d0c0a02000, 0x1000, 325843)
        );
        assert_eq!(f.path, "/usr/bin/cat");
        assert_eq!(f.prot(), (libc::PROT_READ | libc::PROT_EXEC) as u32);
        assert!(!f.shared());
        let a = MapEntry::parse("7f0000000000-7f0000001000 ---p 00000000 00:00 0 ").unwrap();
        assert_eq!(a.path, "");
        assert_eq!(a.prot(), 0);
        let s = MapEntry::parse(
            "7ffc00000000-7ffc00021000 rw-p 00000000 00:00 0                          [stack]",
        )
        .unwrap();
        assert_eq!(s.path, "[stack]");
        let d = MapEntry::parse(
            "7f0000000000-7f0000001000 rw-s 00000000 00:01 1234 /dev/zero (deleted)",
        )
        .unwrap();
        assert!(d.shared());
        assert_eq!(d.path, "/dev/zero (deleted)");
    }

    #[test]
    fn rejects_garbage() {
        assert!(MapEntry::parse("nonsense").is_none());
        assert!(MapEntry::parse("1-2 rw 0 0 0").is_none());
    }
}
