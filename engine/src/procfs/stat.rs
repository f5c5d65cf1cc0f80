//! `/proc/PID/stat`: process relations, scheduling and the mm fields.

use super::{read_string, ProcError};

/// The fields of `/proc/PID/stat` the engine uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stat {
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub start_code: u64,
    pub end_code: u64,
    pub start_stack: u64,
    pub start_data: u64,
    pub end_data: u64,
    pub start_brk: u64,
    pub arg_start: u64,
    pub arg_end: u64,
    pub env_start: u64,
    pub env_end: u64,
    pub exit_code: i32,
    /// The nice value, -20 to 19.
    pub nice: i32,
    /// The real-time priority, 0 for the other policies.
    pub rt_priority: u32,
    /// The scheduling policy (`SCHED_*`, without `SCHED_RESET_ON_FORK`).
    pub policy: u32,
}

impl Stat {
    pub fn parse(text: &str) -> Option<Stat> {
        // The command name may contain spaces and parentheses: fields start
        // after the last ')'.
        let rest = &text[text.rfind(')')? + 1..];
        let f: Vec<&str> = rest.split_whitespace().collect();
        // f[0] is field 3 (state).
        let n = |i: usize| -> Option<u64> { f.get(i - 3)?.parse().ok() };
        let s = |i: usize| -> Option<i32> { f.get(i - 3)?.parse().ok() };
        Some(Stat {
            state: f.first()?.chars().next()?,
            ppid: s(4)?,
            pgid: s(5)?,
            sid: s(6)?,
            start_code: n(26)?,
            end_code: n(27)?,
            start_stack: n(28)?,
            start_data: n(45)?,
            end_data: n(46)?,
            start_brk: n(47)?,
            arg_start: n(48)?,
            arg_end: n(49)?,
            env_start: n(50)?,
            env_end: n(51)?,
            exit_code: s(52)?,
            nice: s(19)?,
            rt_priority: f.get(40 - 3)?.parse().ok()?,
            policy: f.get(41 - 3)?.parse().ok()?,
        })
    }

    pub fn read(pid: i32) -> Result<Stat, ProcError> {
        Stat::read_path(format!("/proc/{pid}/stat"))
    }

    /// The `stat` of thread `tid` of process `pid` (its own scheduling and nice value).
    pub fn read_task(pid: i32, tid: i32) -> Result<Stat, ProcError> {
        Stat::read_path(format!("/proc/{pid}/task/{tid}/stat"))
    }

    fn read_path(path: String) -> Result<Stat, ProcError> {
        let text = read_string(&path)?;
        Stat::parse(&text).ok_or_else(|| ProcError::Parse {
            path,
            what: "unexpected layout".into(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_name_with_spaces_and_parens() {
        let line = "1234 (a (b) c) S 1 1234 1234 0 -1 4194304 100 0 0 0 0 0 0 0 20 0 1 0 100 1000 10 18446744073709551615 93824992231424 93824992235000 140737488347136 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0 93824992242000 93824992243000 93824994000000 140737488349000 140737488349100 140737488349100 140737488351000 0";
        let s = Stat::parse(line).unwrap();
        assert_eq!((s.state, s.ppid, s.pgid, s.sid), ('S', 1, 1234, 1234));
        assert_eq!(s.start_code, 93824992231424);
        assert_eq!(s.start_stack, 140737488347136);
        assert_eq!(s.start_brk, 93824994000000);
        assert_eq!(s.env_end, 140737488351000);
        assert_eq!(s.exit_code, 0);
        assert_eq!((s.nice, s.rt_priority, s.policy), (0, 0, 0));
        let rr = line
            .replace(" 20 0 1 0 100 ", " -4 -3 1 0 100 ")
            .replace(" 17 1 0 0 0 0 0 ", " 17 1 3 2 0 0 0 ");
        let s = Stat::parse(&rr).unwrap();
        assert_eq!((s.nice, s.rt_priority, s.policy), (-3, 3, 2));
    }
}
