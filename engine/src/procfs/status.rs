//! `/proc/PID/status`: credentials, capabilities, umask, the seccomp mode and CPU affinity.

use super::{read_string, ProcError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Status {
    pub uids: [u32; 4],
    pub gids: [u32; 4],
    pub groups: Vec<u32>,
    pub umask: u32,
    /// Capability sets: inheritable, permitted, effective, bounding, ambient.
    pub caps: Caps,
    /// `Seccomp:`: 0 none, 1 strict, 2 filter.
    pub seccomp: u32,
    /// `NoNewPrivs:`.
    pub no_new_privs: bool,
    /// `Cpus_allowed:` as a bitmap, CPU n in bit n % 8 of byte n / 8.
    pub cpus_allowed: Vec<u8>,
    /// `SigIgn:`: the ignored signals, signal n in bit n - 1.
    pub sig_ign: u64,
}

/// A thread's capability sets, as `/proc/PID/task/TID/status` shows them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Caps {
    pub inheritable: u64,
    pub permitted: u64,
    pub effective: u64,
    pub bounding: u64,
    pub ambient: u64,
}

impl Status {
    pub fn parse(text: &str) -> Option<Status> {
        let mut st = Status::default();
        for line in text.lines() {
            let Some((key, val)) = line.split_once(':') else {
                continue;
            };
            let four = |v: &str| -> Option<[u32; 4]> {
                let n: Vec<u32> = v
                    .split_whitespace()
                    .filter_map(|x| x.parse().ok())
                    .collect();
                Some([*n.first()?, *n.get(1)?, *n.get(2)?, *n.get(3)?])
            };
            match key {
                "Uid" => st.uids = four(val)?,
                "Gid" => st.gids = four(val)?,
                "Groups" => {
                    st.groups = val
                        .split_whitespace()
                        .filter_map(|x| x.parse().ok())
                        .collect()
                }
                "Umask" => st.umask = u32::from_str_radix(val.trim(), 8).ok()?,
                "CapInh" => st.caps.inheritable = u64::from_str_radix(val.trim(), 16).ok()?,
                "CapPrm" => st.caps.permitted = u64::from_str_radix(val.trim(), 16).ok()?,
                "CapEff" => st.caps.effective = u64::from_str_radix(val.trim(), 16).ok()?,
                "CapBnd" => st.caps.bounding = u64::from_str_radix(val.trim(), 16).ok()?,
                "CapAmb" => st.caps.ambient = u64::from_str_radix(val.trim(), 16).ok()?,
                "Seccomp" => st.seccomp = val.trim().parse().ok()?,
                "NoNewPrivs" => st.no_new_privs = val.trim() == "1",
                "Cpus_allowed" => st.cpus_allowed = cpu_bitmap(val)?,
                "SigIgn" => st.sig_ign = u64::from_str_radix(val.trim(), 16).ok()?,
                _ => {}
            }
        }
        Some(st)
    }

    /// The status of thread `tid` of process `pid` (credentials, capabilities and affinity are
    /// per thread).
    pub fn read_task(pid: i32, tid: i32) -> Result<Status, ProcError> {
        let path = format!("/proc/{pid}/task/{tid}/status");
        let text = read_string(&path)?;
        Status::parse(&text).ok_or_else(|| ProcError::Parse {
            path,
            what: "unexpected Uid/Gid/Cap/Cpus_allowed lines".into(),
        })
    }

    pub fn read(pid: i32) -> Result<Status, ProcError> {
        let path = format!("/proc/{pid}/status");
        let text = read_string(&path)?;
        Status::parse(&text).ok_or_else(|| ProcError::Parse {
            path,
            what: "unexpected Uid/Gid/Umask lines".into(),
        })
    }
}

/// A cpumask as /proc prints it (`ff,ffffffff`: 32-bit groups in hex, highest first) as bytes,
/// lowest CPUs first.
fn cpu_bitmap(text: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    for group in text.trim().rsplit(',') {
        out.extend_from_slice(&u32::from_str_radix(group, 16).ok()?.to_le_bytes());
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_ids_groups_and_umask() {
        let s = Status::parse(
            "Name:\tx\nUmask:\t0027\nUid:\t1\t2\t3\t4\nGid:\t5\t6\t7\t8\nGroups:\t10 20 \n\
             CapInh:\t0000000000000001\nCapPrm:\t000001ffffffffff\nCapEff:\t0000000000000400\n\
             CapBnd:\t000001ffffffffff\nCapAmb:\t0000000000000000\nNoNewPrivs:\t1\n\
             Seccomp:\t2\nSigIgn:\t0000000000001001\n",
        )
        .unwrap();
        assert_eq!(s.sig_ign, 1 << 12 | 1);
        assert_eq!(s.uids, [1, 2, 3, 4]);
        assert_eq!(s.gids, [5, 6, 7, 8]);
        assert_eq!(s.groups, vec![10, 20]);
        assert_eq!(s.umask, 0o27);
        assert_eq!(
            s.caps,
            Caps {
                inheritable: 1,
                permitted: 0x1ff_ffff_ffff,
                effective: 0x400,
                bounding: 0x1ff_ffff_ffff,
                ambient: 0
            }
        );
        assert_eq!((s.seccomp, s.no_new_privs), (2, true));
        assert_eq!(cpu_bitmap("3\n"), Some(vec![3, 0, 0, 0]));
        assert_eq!(
            cpu_bitmap("1,80000000"),
            Some(vec![0, 0, 0, 0x80, 1, 0, 0, 0])
        );
        assert_eq!(cpu_bitmap("zz"), None);
    }
}
