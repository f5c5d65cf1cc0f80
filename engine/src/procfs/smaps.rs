//! `/proc/PID/smaps`: the `VmFlags` of each mapping (what `madvise` and `mlock` set on it).

use super::{read_string, ProcError};

/// One mapping's start address and its `VmFlags` (two-letter codes: `lo`, `hg`, `dc`, ...).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmFlags {
    pub start: u64,
    pub end: u64,
    pub flags: Vec<String>,
}

impl VmFlags {
    /// Parses the whole of a smaps file: a mapping's header line (`start-end perms ...`)
    /// followed by its fields, `VmFlags:` among them.
    pub fn parse(text: &str) -> Option<Vec<VmFlags>> {
        let mut out: Vec<VmFlags> = Vec::new();
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("VmFlags:") {
                let last = out.last_mut()?;
                last.flags = v.split_whitespace().map(str::to_string).collect();
                continue;
            }
            let Some((first, _)) = line.split_once(' ') else {
                continue;
            };
            // A header line starts with `start-end` in hex; field lines with `Name:`.
            if let Some((s, e)) = first.split_once('-') {
                if let (Ok(start), Ok(end)) =
                    (u64::from_str_radix(s, 16), u64::from_str_radix(e, 16))
                {
                    out.push(VmFlags {
                        start,
                        end,
                        flags: Vec::new(),
                    });
                }
            }
        }
        Some(out)
    }

    /// Reads `/proc/PID/smaps`.
    pub fn read(pid: i32) -> Result<Vec<VmFlags>, ProcError> {
        let path = format!("/proc/{pid}/smaps");
        let text = read_string(&path)?;
        VmFlags::parse(&text).ok_or_else(|| ProcError::Parse {
            path,
            what: "a VmFlags line before any mapping".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_flags_per_mapping() {
        let text = "55d0c0a00000-55d0c0a02000 r-xp 00001000 fe:00 325843   /usr/bin/cat\n\
                    Size:                  8 kB\n\
                    VmFlags: rd ex mr mw me sd \n\
                    7f0000000000-7f0000001000 rw-p 00000000 00:00 0 \n\
                    Rss:                   4 kB\n\
                    VmFlags: rd wr mr mw me ac lo dc\n";
        let v = VmFlags::parse(text).unwrap();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].start, v[0].end), (0x55d0c0a00000, 0x55d0c0a02000));
        assert_eq!(v[0].flags, ["rd", "ex", "mr", "mw", "me", "sd"]);
        assert_eq!(v[1].start, 0x7f0000000000);
        assert!(v[1].flags.iter().any(|f| f == "lo"));
        assert!(VmFlags::parse("VmFlags: rd\n").is_none());
    }
}
