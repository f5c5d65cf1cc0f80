//! `/proc/PID/fdinfo/FD`: offset, flags and file locks of one descriptor.

use super::{read_string, ProcError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdInfo {
    pub pos: u64,
    /// open(2) flags, O_CLOEXEC included (it is per descriptor).
    pub flags: u32,
    /// The file locks and leases held through this descriptor, as its `lock:` lines show
    /// them (`1: FLOCK  ADVISORY  WRITE 1234 00:2d:56 0 EOF`).
    pub locks: Vec<String>,
}

impl FdInfo {
    pub fn parse(text: &str) -> Option<FdInfo> {
        let mut info = FdInfo::default();
        let mut seen = 0;
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("pos:") {
                info.pos = v.trim().parse().ok()?;
                seen += 1;
            } else if let Some(v) = line.strip_prefix("flags:") {
                info.flags = u32::from_str_radix(v.trim(), 8).ok()?;
                seen += 1;
            } else if let Some(v) = line.strip_prefix("lock:") {
                info.locks.push(v.trim().to_string());
            }
        }
        (seen == 2).then_some(info)
    }

    pub fn read(pid: i32, fd: i32) -> Result<FdInfo, ProcError> {
        let path = format!("/proc/{pid}/fdinfo/{fd}");
        let text = read_string(&path)?;
        FdInfo::parse(&text).ok_or_else(|| ProcError::Parse {
            path,
            what: "no pos/flags lines".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_pos_and_octal_flags() {
        let i = FdInfo::parse("pos:\t42\nflags:\t02102001\nmnt_id:\t25\nino:\t7\n").unwrap();
        assert_eq!(i.pos, 42);
        assert_eq!(i.flags, 0o2102001);
        assert!(i.locks.is_empty());
        assert!(FdInfo::parse("mnt_id: 3\n").is_none());
        let l = FdInfo::parse(
            "pos:\t0\nflags:\t02\nlock:\t1: FLOCK  ADVISORY  WRITE 77 00:2d:56 0 EOF\n\
             lock:\t2: POSIX  ADVISORY  READ 77 00:2d:56 0 9\n",
        )
        .unwrap();
        assert_eq!(
            l.locks,
            [
                "1: FLOCK  ADVISORY  WRITE 77 00:2d:56 0 EOF",
                "2: POSIX  ADVISORY  READ 77 00:2d:56 0 9"
            ]
        );
    }
}
