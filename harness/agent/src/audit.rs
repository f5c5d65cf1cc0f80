//! SELinux audit records (AVC, USER_AVC, SELINUX_ERR) logged after a marker, read from
//! auditd's log or, when auditd is not running, from the kernel log.
//!
//! A marker is a `u64` whose meaning depends on the source it came from:
//! - bit 63 clear: a byte offset in the audit log, the end of what was read (records are
//!   whole lines; a line still being written is left for the next call);
//! - bit 63 set ([`KMSG_BIT`]): the low bits are the sequence number of the next
//!   `/dev/kmsg` record to read.
//!
//! A marker from the other source (auditd started or stopped in between) reads the current
//! source from its start; so does a log offset past the end of the file (the log was
//! rotated or truncated). Both are noted in the agent's log.

use std::{
    fs::{File, OpenOptions},
    io::{self, BufRead, BufReader, Read, Seek, SeekFrom},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use crlab_protocol::frame::MAX_FRAME;

use super::config::DEFAULT_AUDIT_LOG;
use crlab_protocol::AuditRecords;

/// Set in markers that count kernel log records rather than audit log bytes.
pub const KMSG_BIT: u64 = 1 << 63;

const KMSG: &str = "/dev/kmsg";

/// The records of one reply fit a frame with this much room to spare.
const RECORDS_BUDGET: usize = MAX_FRAME as usize - (64 << 10);

/// The record types asked for, as auditd names them in its log.
const TYPES: [&str; 3] = ["AVC", "USER_AVC", "SELINUX_ERR"];

/// What the kernel log shows of the same records when no auditd takes them
/// (`audit: type=1400 ... avc:  denied ...`; 1107 is USER_AVC, 1401 SELINUX_ERR).
const KMSG_NEEDLES: [&str; 5] = ["avc:", "SELINUX_ERR", "type=1400", "type=1401", "type=1107"];

#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("reading the audit log {path}")]
    Log {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("reading the kernel log {KMSG} (no auditd log to read instead)")]
    Kmsg(#[source] io::Error),
}

/// Where records are read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Log(PathBuf),
    Kmsg,
}

impl Source {
    /// The log named on the command line; else auditd's log while auditd runs (the kernel
    /// sends it the records then); else the kernel log, where the kernel prints them.
    pub fn resolve(explicit: Option<&Path>) -> Self {
        if let Some(path) = explicit {
            return Self::Log(path.to_owned());
        }
        let log = Path::new(DEFAULT_AUDIT_LOG);
        if log.exists() && auditd_running() {
            Self::Log(log.to_owned())
        } else {
            Self::Kmsg
        }
    }

    /// A marker for "from now on".
    pub fn marker(&self) -> Result<u64, AuditError> {
        match self {
            Self::Log(path) => match std::fs::metadata(path) {
                Ok(m) => Ok(m.len() & !KMSG_BIT),
                // No log yet: whatever it will hold comes after now.
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
                Err(source) => Err(AuditError::Log {
                    path: path.clone(),
                    source,
                }),
            },
            Self::Kmsg => {
                let mut next = 0;
                read_kmsg(|seq, _| next = seq + 1).map_err(AuditError::Kmsg)?;
                Ok(KMSG_BIT | next)
            }
        }
    }

    /// The records after `marker`, and the marker to ask with next time.
    pub fn since(&self, marker: u64) -> Result<AuditRecords, AuditError> {
        match self {
            Self::Log(path) => {
                let start = if marker & KMSG_BIT != 0 {
                    tracing::info!(marker, "a kernel log marker, but records come from the audit log now: reading it from its start");
                    0
                } else {
                    marker
                };
                log_since(path, start).map_err(|source| AuditError::Log {
                    path: path.clone(),
                    source,
                })
            }
            Self::Kmsg => {
                let from = if marker & KMSG_BIT != 0 {
                    marker & !KMSG_BIT
                } else {
                    tracing::info!(marker, "an audit log marker, but records come from the kernel log now: reading it from its start");
                    0
                };
                kmsg_since(from).map_err(AuditError::Kmsg)
            }
        }
    }
}

/// The record type of an audit log line (`[node=N ]type=T msg=...`).
fn record_type(line: &str) -> Option<&str> {
    let mut words = line.split_ascii_whitespace();
    let mut word = words.next()?;
    if word.starts_with("node=") {
        word = words.next()?;
    }
    word.strip_prefix("type=")
}

fn wanted(line: &str) -> bool {
    record_type(line).is_some_and(|t| TYPES.contains(&t))
}

fn log_since(path: &Path, marker: u64) -> io::Result<AuditRecords> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            tracing::info!(path = %path.display(), "no audit log (yet): no records");
            return Ok(AuditRecords {
                records: Vec::new(),
                next_marker: 0,
            });
        }
        Err(e) => return Err(e),
    };
    let size = file.metadata()?.len();
    let start = if marker > size {
        tracing::warn!(path = %path.display(), marker, size, "the audit log is shorter than the marker (rotated or truncated): reading it from its start");
        0
    } else {
        marker
    };
    file.seek(SeekFrom::Start(start))?;
    let mut reader = BufReader::new(file);
    let mut records = Vec::new();
    let mut budget = RECORDS_BUDGET;
    let mut offset = start;
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = reader.read_until(b'\n', &mut line)?;
        if n == 0 || line.last() != Some(&b'\n') {
            break; // end of file, or a line still being written
        }
        let text = String::from_utf8_lossy(&line[..n - 1]);
        if wanted(&text) {
            if text.len() + 8 > budget {
                tracing::info!(
                    offset,
                    "the reply is full: the rest comes with the next marker"
                );
                break;
            }
            budget -= text.len() + 8;
            records.push(text.into_owned());
        }
        offset += n as u64;
    }
    Ok(AuditRecords {
        records,
        next_marker: offset,
    })
}

fn kmsg_since(from: u64) -> io::Result<AuditRecords> {
    let mut records = Vec::new();
    let mut next = from;
    let mut budget = RECORDS_BUDGET;
    read_kmsg(|seq, message| {
        if seq < from || budget == 0 {
            return;
        }
        if KMSG_NEEDLES.iter().any(|n| message.contains(n)) {
            if message.len() + 8 > budget {
                budget = 0;
                return;
            }
            budget -= message.len() + 8;
            records.push(message.to_owned());
        }
        next = seq + 1;
    })?;
    Ok(AuditRecords {
        records,
        next_marker: KMSG_BIT | next,
    })
}

/// Calls `each(seq, message)` for every record in the kernel's ring buffer, oldest first.
fn read_kmsg(mut each: impl FnMut(u64, &str)) -> io::Result<()> {
    let mut kmsg = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(KMSG)?;
    // A record is at most a few KiB; a smaller buffer gets EINVAL.
    let mut buf = vec![0u8; 16 << 10];
    loop {
        match kmsg.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                if let Some((seq, message)) = parse_kmsg(&String::from_utf8_lossy(&buf[..n])) {
                    each(seq, message);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
            // Records were overwritten while reading: go on with the ones still there.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// `PRI,SEQ,TIME,FLAGS[,...];MESSAGE\n[ KEY=VALUE\n...]` -> (SEQ, MESSAGE).
fn parse_kmsg(record: &str) -> Option<(u64, &str)> {
    let (prefix, rest) = record.split_once(';')?;
    let seq = prefix.split(',').nth(1)?.parse().ok()?;
    let message = rest.split('\n').next().unwrap_or_default();
    Some((seq, message))
}

/// Whether a process named auditd is running.
fn auditd_running() -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return false;
    };
    dir.flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit()))
        })
        .any(|e| std::fs::read(e.path().join("comm")).is_ok_and(|comm| comm == b"auditd\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::io::Write;

    const AVC: &str = "type=AVC msg=audit(1700000000.123:45): avc:  denied  { dyntransition } for  pid=10 comm=\"crlab\" scontext=system_u:system_r:container_runtime_t:s0 tcontext=system_u:system_r:container_t:s0:c1,c2 tclass=process permissive=0";
    const SYSCALL: &str =
        "type=SYSCALL msg=audit(1700000000.123:45): arch=c000003e syscall=1 success=no exit=-13";

    #[rstest]
    #[case(AVC, true)]
    #[case("node=guest type=AVC msg=audit(1.2:3): avc:  denied", true)]
    #[case("type=USER_AVC msg=audit(1.2:3): pid=1 uid=0 msg='avc:  denied'", true)]
    #[case(
        "type=SELINUX_ERR msg=audit(1.2:3): op=security_bounded_transition",
        true
    )]
    #[case(SYSCALL, false)]
    #[case("type=AVC_PATH msg=audit(1.2:3): path=\"/x\"", false)]
    #[case("type=MAC_POLICY_LOAD msg=audit(1.2:3): auid=0", false)]
    #[case("", false)]
    #[case("garbage", false)]
    fn picks_the_selinux_records(#[case] line: &str, #[case] want: bool) {
        assert_eq!(wanted(line), want, "{line}");
    }

    #[rstest]
    #[case("6,1234,5678,-;audit: type=1400 audit(1.2:3): avc:  denied\n SUBSYSTEM=x\n", Some((1234, "audit: type=1400 audit(1.2:3): avc:  denied")))]
    #[case("5,0,0,-,caller=T1;Linux version\n", Some((0, "Linux version")))]
    #[case("no separator", None)]
    #[case("6,x,0,-;text", None)]
    fn parses_kmsg_records(#[case] record: &str, #[case] want: Option<(u64, &str)>) {
        assert_eq!(parse_kmsg(record), want);
    }

    fn log(lines: &[&str]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        for l in lines {
            writeln!(f, "{l}").unwrap();
        }
        f
    }

    #[test]
    fn reads_the_log_after_the_marker_and_moves_it() {
        let mut f = log(&[AVC, SYSCALL]);
        let source = Source::Log(f.path().to_owned());
        let first = source.since(0).unwrap();
        assert_eq!(first.records, [AVC]);
        assert_eq!(first.next_marker, source.marker().unwrap());
        let denial = AVC.replace("dyntransition", "setcurrent");
        writeln!(f, "{denial}").unwrap();
        write!(f, "type=AVC msg=audit(still being written").unwrap();
        let second = source.since(first.next_marker).unwrap();
        assert_eq!(second.records, [denial.as_str()]);
        // The unfinished line is not consumed.
        assert_eq!(
            second.next_marker,
            first.next_marker + denial.len() as u64 + 1
        );
    }

    #[test]
    fn rereads_a_rotated_log_from_its_start() {
        let f = log(&[AVC]);
        let source = Source::Log(f.path().to_owned());
        let records = source.since(1 << 40).unwrap();
        assert_eq!(records.records, [AVC]);
        assert_eq!(records.next_marker, AVC.len() as u64 + 1);
        let from_kmsg = source.since(KMSG_BIT | 5).unwrap();
        assert_eq!(from_kmsg.records, [AVC]);
    }

    #[test]
    fn a_missing_log_has_no_records() {
        let source = Source::Log("/nonexistent/audit.log".into());
        assert_eq!(source.marker().unwrap(), 0);
        let r = source.since(0).unwrap();
        assert!(r.records.is_empty());
        assert_eq!(r.next_marker, 0);
    }

    #[test]
    fn kernel_log_markers_count_records_on_a_host_with_dev_kmsg() {
        let source = Source::Kmsg;
        let marker = source.marker().unwrap();
        assert_ne!(marker & KMSG_BIT, 0);
        let later = source.since(marker).unwrap();
        assert_ne!(later.next_marker & KMSG_BIT, 0);
        assert!(later.next_marker >= marker);
    }
}
