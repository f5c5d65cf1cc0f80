//! `/proc/PID/timers`: the POSIX timers of a process (`timer_create`), as the kernel lists
//! them: id, signal and its value, how it notifies, clock.

use super::{read_string, ProcError};

/// `SIGEV_*` of `<asm-generic/siginfo.h>`.
pub const SIGEV_SIGNAL: u32 = 0;
pub const SIGEV_NONE: u32 = 1;
pub const SIGEV_THREAD_ID: u32 = 4;

/// One timer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PosixTimer {
    pub id: i32,
    pub signo: u32,
    /// `sigev_value`, as the timer was created with it.
    pub value: u64,
    /// `SIGEV_SIGNAL`, `SIGEV_NONE`, or `SIGEV_SIGNAL | SIGEV_THREAD_ID`.
    pub notify: u32,
    /// The process or (with `SIGEV_THREAD_ID`) thread it signals.
    pub target: i32,
    pub clock: i32,
}

impl PosixTimer {
    /// Parses the whole file; `None` on anything it does not know (a notification kind the
    /// kernel added, a field missing).
    pub fn parse(text: &str) -> Option<Vec<PosixTimer>> {
        let mut out = Vec::new();
        let mut lines = text.lines().filter(|l| !l.trim().is_empty());
        while let Some(first) = lines.next() {
            let id = first.strip_prefix("ID:")?.trim().parse().ok()?;
            let (signo, value) = lines
                .next()?
                .strip_prefix("signal:")?
                .trim()
                .split_once('/')?;
            let (how, target) = lines
                .next()?
                .strip_prefix("notify:")?
                .trim()
                .split_once('/')?;
            let clock = lines
                .next()?
                .strip_prefix("ClockID:")?
                .trim()
                .parse()
                .ok()?;
            let base = match how {
                "signal" => SIGEV_SIGNAL,
                "none" => SIGEV_NONE,
                _ => return None,
            };
            let (kind, target) = target.split_once('.')?;
            let notify = match kind {
                "pid" => base,
                "tid" => base | SIGEV_THREAD_ID,
                _ => return None,
            };
            out.push(PosixTimer {
                id,
                signo: signo.parse().ok()?,
                value: u64::from_str_radix(value, 16).ok()?,
                notify,
                target: target.parse().ok()?,
                clock,
            });
        }
        Some(out)
    }

    /// Reads `/proc/PID/timers`.
    pub fn read(pid: i32) -> Result<Vec<PosixTimer>, ProcError> {
        let path = format!("/proc/{pid}/timers");
        let text = read_string(&path)?;
        PosixTimer::parse(&text).ok_or_else(|| ProcError::Parse {
            path,
            what: "a timer this engine does not know how to read".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_signal_none_and_thread_timers() {
        let text = "ID: 0\nsignal: 10/0000000000000abc\nnotify: signal/pid.300\nClockID: 1\n\
                    ID: 42\nsignal: 0/0000000000000000\nnotify: none/pid.300\nClockID: 0\n\
                    ID: 7\nsignal: 34/00007f0000001000\nnotify: signal/tid.301\nClockID: -6\n";
        let t = PosixTimer::parse(text).unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(
            t[0],
            PosixTimer {
                id: 0,
                signo: 10,
                value: 0xabc,
                notify: SIGEV_SIGNAL,
                target: 300,
                clock: 1
            }
        );
        assert_eq!((t[1].id, t[1].notify), (42, SIGEV_NONE));
        assert_eq!(
            (t[2].notify, t[2].target, t[2].clock),
            (SIGEV_SIGNAL | SIGEV_THREAD_ID, 301, -6)
        );
        assert_eq!(PosixTimer::parse("").unwrap(), vec![]);
        assert!(
            PosixTimer::parse("ID: 1\nsignal: 1/0\nnotify: thread/pid.3\nClockID: 0\n").is_none()
        );
    }
}
