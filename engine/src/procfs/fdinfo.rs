//! `/proc/PID/fdinfo/FD`: offset, flags and file locks of one descriptor, and what the
//! kernel shows of an eventfd, a timerfd, a signalfd, an epoll or an inotify instance.

use super::{read_string, ProcError};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FdInfo {
    pub pos: u64,
    /// open(2) flags, O_CLOEXEC included (it is per descriptor).
    pub flags: u32,
    /// The file locks and leases held through this descriptor, as its `lock:` lines show
    /// them (`1: FLOCK  ADVISORY  WRITE 1234 00:2d:56 0 EOF`).
    pub locks: Vec<String>,
    /// An eventfd's `eventfd-count:` and `eventfd-semaphore:` lines.
    pub eventfd: Option<EventFdInfo>,
    /// A timerfd's `clockid:` ... `it_interval:` lines.
    pub timerfd: Option<TimerFdInfo>,
    /// A signalfd's `sigmask:` line (bit n - 1 for signal n).
    pub sigmask: Option<u64>,
    /// An epoll instance's `tfd:` lines, in the order the kernel lists them.
    pub epoll: Vec<EpollTfd>,
    /// An inotify instance's `inotify wd:` lines, in the order the kernel lists them.
    pub inotify: Vec<InotifyWatch>,
}

/// One watch of an inotify instance: `inotify wd:3 ino:40e sdev:800001 mask:2 ignored_mask:0
/// fhandle-bytes:8 fhandle-type:1 f_handle:0e04000000000000` (numbers in hexadecimal; the
/// handle is missing when the watched object's filesystem gives none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InotifyWatch {
    pub wd: i32,
    pub ino: u64,
    /// The kernel's `s_dev` (major in the bits from 20, minor below).
    pub sdev: u64,
    /// The mask as the process asked it (events, `IN_ONESHOT`, `IN_EXCL_UNLINK`).
    pub mask: u32,
    pub ignored_mask: u32,
    /// `fhandle-type:` and the `f_handle:` bytes, for `open_by_handle_at`.
    pub handle: Option<(i32, Vec<u8>)>,
}

impl InotifyWatch {
    fn parse(line: &str) -> Option<InotifyWatch> {
        let mut w = InotifyWatch {
            wd: -1,
            ino: 0,
            sdev: 0,
            mask: 0,
            ignored_mask: 0,
            handle: None,
        };
        let (mut ino, mut sdev, mut mask) = (false, false, false);
        let (mut bytes, mut htype, mut handle) = (None, None, None);
        for word in line.split_whitespace() {
            let (key, v) = word.split_once(':')?;
            match key {
                "wd" => w.wd = i32::from_str_radix(v, 16).ok()?,
                "ino" => (w.ino, ino) = (u64::from_str_radix(v, 16).ok()?, true),
                "sdev" => (w.sdev, sdev) = (u64::from_str_radix(v, 16).ok()?, true),
                "mask" => (w.mask, mask) = (u32::from_str_radix(v, 16).ok()?, true),
                "ignored_mask" => w.ignored_mask = u32::from_str_radix(v, 16).ok()?,
                "fhandle-bytes" => bytes = Some(usize::from_str_radix(v, 16).ok()?),
                "fhandle-type" => htype = Some(i32::from_str_radix(v, 16).ok()?),
                "f_handle" => {
                    if v.len() % 2 != 0 {
                        return None;
                    }
                    let b: Option<Vec<u8>> = (0..v.len())
                        .step_by(2)
                        .map(|i| u8::from_str_radix(v.get(i..i + 2)?, 16).ok())
                        .collect();
                    handle = Some(b?);
                }
                _ => {}
            }
        }
        if w.wd < 1 || !(ino && sdev && mask) {
            return None;
        }
        match (bytes, htype, handle) {
            (Some(n), Some(t), Some(h)) if h.len() == n => w.handle = Some((t, h)),
            (None, None, None) => {}
            _ => return None,
        }
        Some(w)
    }
}

/// What fdinfo shows of an eventfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EventFdInfo {
    /// `eventfd-count:` (hexadecimal in the kernel's text).
    pub count: u64,
    /// `eventfd-semaphore:`, which kernels before 6.6 do not show.
    pub semaphore: Option<bool>,
}

/// What fdinfo shows of a timerfd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerFdInfo {
    pub clockid: i32,
    /// Expirations not yet read.
    pub ticks: u64,
    /// `settime flags:` (octal): TFD_TIMER_ABSTIME, TFD_TIMER_CANCEL_ON_SET.
    pub settime_flags: u32,
    /// Time left, (seconds, nanoseconds); zero when disarmed or expired and not yet rearmed.
    pub value: (u64, u64),
    pub interval: (u64, u64),
}

/// One registration of an epoll instance: `tfd: N events: X data: Y  pos:P ino:I sdev:D`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpollTfd {
    /// The descriptor number it was added with.
    pub tfd: i32,
    pub events: u32,
    pub data: u64,
    /// The watched file's offset, inode and device, as the kernel shows them.
    pub pos: u64,
    pub ino: u64,
    pub sdev: u64,
}

impl EpollTfd {
    fn parse(line: &str) -> Option<EpollTfd> {
        let mut words = line.split_whitespace();
        let tfd = words.next()?.parse().ok()?;
        let mut t = EpollTfd {
            tfd,
            events: 0,
            data: 0,
            pos: 0,
            ino: 0,
            sdev: 0,
        };
        let (mut events, mut data) = (false, false);
        while let Some(w) = words.next() {
            match w {
                "events:" => {
                    t.events = u32::from_str_radix(words.next()?, 16).ok()?;
                    events = true;
                }
                "data:" => {
                    t.data = u64::from_str_radix(words.next()?, 16).ok()?;
                    data = true;
                }
                _ => {
                    if let Some(v) = w.strip_prefix("pos:") {
                        t.pos = v.parse().ok()?;
                    } else if let Some(v) = w.strip_prefix("ino:") {
                        t.ino = u64::from_str_radix(v, 16).ok()?;
                    } else if let Some(v) = w.strip_prefix("sdev:") {
                        t.sdev = u64::from_str_radix(v, 16).ok()?;
                    }
                }
            }
        }
        (events && data).then_some(t)
    }
}

/// `(S, N)` as `it_value:` and `it_interval:` show a time.
fn time_pair(v: &str) -> Option<(u64, u64)> {
    let (s, n) = v
        .trim()
        .strip_prefix('(')?
        .strip_suffix(')')?
        .split_once(',')?;
    Some((s.trim().parse().ok()?, n.trim().parse().ok()?))
}

impl FdInfo {
    /// `None` when the pos and flags lines are missing, or a line this parser knows is
    /// malformed (a timerfd's lines must all be there).
    pub fn parse(text: &str) -> Option<FdInfo> {
        let mut info = FdInfo::default();
        let mut seen = 0;
        let mut timer: [Option<(u64, u64)>; 5] = [None; 5];
        for line in text.lines() {
            if let Some(v) = line.strip_prefix("pos:") {
                info.pos = v.trim().parse().ok()?;
                seen += 1;
            } else if let Some(v) = line.strip_prefix("flags:") {
                info.flags = u32::from_str_radix(v.trim(), 8).ok()?;
                seen += 1;
            } else if let Some(v) = line.strip_prefix("lock:") {
                info.locks.push(v.trim().to_string());
            } else if let Some(v) = line.strip_prefix("eventfd-count:") {
                let count = u64::from_str_radix(v.trim(), 16).ok()?;
                let e = info.eventfd.get_or_insert(EventFdInfo {
                    count,
                    semaphore: None,
                });
                e.count = count;
            } else if let Some(v) = line.strip_prefix("eventfd-semaphore:") {
                let semaphore = match v.trim() {
                    "0" => false,
                    "1" => true,
                    _ => return None,
                };
                info.eventfd
                    .get_or_insert(EventFdInfo {
                        count: 0,
                        semaphore: None,
                    })
                    .semaphore = Some(semaphore);
            } else if let Some(v) = line.strip_prefix("clockid:") {
                timer[0] = Some((v.trim().parse().ok()?, 0));
            } else if let Some(v) = line.strip_prefix("ticks:") {
                timer[1] = Some((v.trim().parse().ok()?, 0));
            } else if let Some(v) = line.strip_prefix("settime flags:") {
                timer[2] = Some((u64::from_str_radix(v.trim(), 8).ok()?, 0));
            } else if let Some(v) = line.strip_prefix("it_value:") {
                timer[3] = Some(time_pair(v)?);
            } else if let Some(v) = line.strip_prefix("it_interval:") {
                timer[4] = Some(time_pair(v)?);
            } else if let Some(v) = line.strip_prefix("sigmask:") {
                info.sigmask = Some(u64::from_str_radix(v.trim(), 16).ok()?);
            } else if let Some(v) = line.strip_prefix("tfd:") {
                info.epoll.push(EpollTfd::parse(v)?);
            } else if let Some(v) = line.strip_prefix("inotify ") {
                info.inotify.push(InotifyWatch::parse(v)?);
            }
        }
        if timer.iter().any(Option::is_some) {
            let [Some(clock), Some(ticks), Some(flags), Some(value), Some(interval)] = timer else {
                return None;
            };
            info.timerfd = Some(TimerFdInfo {
                clockid: i32::try_from(clock.0).ok()?,
                ticks: ticks.0,
                settime_flags: u32::try_from(flags.0).ok()?,
                value,
                interval,
            });
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

    /// The texts below are what Linux 6.18 shows.
    #[test]
    fn parses_an_eventfd() {
        let i = FdInfo::parse(
            "pos:\t0\nflags:\t04002\nmnt_id:\t17\nino:\t1038\n\
             eventfd-count:               14\neventfd-id: 2\neventfd-semaphore: 1\n",
        )
        .unwrap();
        assert_eq!(
            i.eventfd,
            Some(EventFdInfo {
                count: 0x14,
                semaphore: Some(true)
            })
        );
        assert_eq!(i.flags, 0o4002);
        // Before Linux 6.6: no semaphore line, so the mode is unknown, not "off".
        let old = FdInfo::parse("pos:\t0\nflags:\t02\neventfd-count: ffffffff\n").unwrap();
        assert_eq!(
            old.eventfd,
            Some(EventFdInfo {
                count: 0xffff_ffff,
                semaphore: None
            })
        );
        assert!(FdInfo::parse("pos:\t0\nflags:\t02\neventfd-semaphore: 2\n").is_none());
        assert!(FdInfo::parse("pos:\t0\nflags:\t02\neventfd-count: zz\n").is_none());
    }

    #[test]
    fn parses_a_timerfd() {
        let i = FdInfo::parse(
            "pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1038\nclockid: 0\nticks: 42\n\
             settime flags: 03\nit_value: (99, 892692335)\nit_interval: (5, 0)\n",
        )
        .unwrap();
        assert_eq!(
            i.timerfd,
            Some(TimerFdInfo {
                clockid: 0,
                ticks: 42,
                settime_flags: 3,
                value: (99, 892_692_335),
                interval: (5, 0),
            })
        );
        assert!(i.eventfd.is_none() && i.sigmask.is_none() && i.epoll.is_empty());
        // A timerfd's lines come together: one missing is a text this parser does not know.
        assert!(FdInfo::parse("pos:\t0\nflags:\t02\nclockid: 1\nticks: 0\n").is_none());
        assert!(FdInfo::parse(
            "pos:\t0\nflags:\t02\nclockid: 1\nticks: 0\nsettime flags: 00\n\
             it_value: 3\nit_interval: (0, 0)\n"
        )
        .is_none());
    }

    #[test]
    fn parses_a_signalfd() {
        let i = FdInfo::parse("pos:\t0\nflags:\t04002\nsigmask:\t0000000800000200\n").unwrap();
        assert_eq!(i.sigmask, Some(0x8_0000_0200));
    }

    #[test]
    fn parses_an_epoll() {
        let i = FdInfo::parse(
            "pos:\t0\nflags:\t02\nmnt_id:\t17\nino:\t1038\n\
             tfd:        3 events: 80000019 data:             1234  pos:0 ino:40e sdev:10\n\
             tfd:        5 events: 40000019 data:     deadbeefcafe  pos:0 ino:40e sdev:10\n\
             tfd:        9 events: 1000001c data:                7  pos:0 ino:40e sdev:10\n",
        )
        .unwrap();
        assert_eq!(i.epoll.len(), 3);
        assert_eq!(
            i.epoll[1],
            EpollTfd {
                tfd: 5,
                events: 0x4000_0019,
                data: 0xdead_beef_cafe,
                pos: 0,
                ino: 0x40e,
                sdev: 0x10,
            }
        );
        assert_eq!(i.epoll[0].events, 0x8000_0019);
        assert_eq!(i.epoll[2].tfd, 9);
        assert!(FdInfo::parse("pos:\t0\nflags:\t02\ntfd: 3 events: 19\n").is_none());
    }

    /// The text is what Linux 6.18 shows (6.1's is the same).
    #[test]
    fn parses_an_inotify() {
        let i = FdInfo::parse(
            "pos:\t0\nflags:\t02004000\nmnt_id:\t16\nino:\t1057\n\
             inotify wd:5 ino:2c3 sdev:2d mask:8000100 ignored_mask:0 fhandle-bytes:c \
             fhandle-type:81 f_handle:c302000067d3f5d900000000\n\
             inotify wd:1a ino:40e sdev:800001 mask:2 ignored_mask:0\n",
        )
        .unwrap();
        assert_eq!(
            i.inotify,
            [
                InotifyWatch {
                    wd: 5,
                    ino: 0x2c3,
                    sdev: 0x2d,
                    mask: 0x800_0100,
                    ignored_mask: 0,
                    handle: Some((
                        0x81,
                        vec![0xc3, 2, 0, 0, 0x67, 0xd3, 0xf5, 0xd9, 0, 0, 0, 0]
                    )),
                },
                InotifyWatch {
                    wd: 0x1a,
                    ino: 0x40e,
                    sdev: 0x80_0001,
                    mask: 2,
                    ignored_mask: 0,
                    handle: None,
                }
            ]
        );
        // A handle whose length is not the one announced, a watch without its mask.
        assert!(FdInfo::parse(
            "pos:\t0\nflags:\t02\ninotify wd:1 ino:1 sdev:1 mask:2 ignored_mask:0 \
             fhandle-bytes:8 fhandle-type:1 f_handle:00\n"
        )
        .is_none());
        assert!(FdInfo::parse("pos:\t0\nflags:\t02\ninotify wd:1 ino:1 sdev:1\n").is_none());
    }
}
