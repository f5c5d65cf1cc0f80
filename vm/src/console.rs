//! The serial console: always logged to a file, watched for the signs of a dead guest.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

/// Why the console says the guest is gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fatal {
    KernelPanic(String),
    EmergencyShell(String),
}

impl std::fmt::Display for Fatal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fatal::KernelPanic(l) => write!(f, "kernel panic: {l}"),
            Fatal::EmergencyShell(l) => write!(f, "the guest dropped to an emergency shell: {l}"),
        }
    }
}

/// Looks at one console line.
pub fn classify(line: &str) -> Option<Fatal> {
    let l = line.trim();
    if l.contains("Kernel panic - not syncing") || l.contains("end Kernel panic") {
        return Some(Fatal::KernelPanic(l.to_string()));
    }
    if l.contains("You are in emergency mode")
        || l.contains("Entering emergency mode")
        || l.contains("Give root password for maintenance")
        || l.contains("dropping to a shell")
    {
        return Some(Fatal::EmergencyShell(l.to_string()));
    }
    None
}

/// Follows a console log file, remembering how far it has read.
#[derive(Debug)]
pub struct ConsoleWatch {
    path: PathBuf,
    offset: u64,
    partial: String,
}

impl ConsoleWatch {
    pub fn new(path: &Path) -> ConsoleWatch {
        ConsoleWatch {
            path: path.to_path_buf(),
            offset: 0,
            partial: String::new(),
        }
    }

    /// Reads what was added since the last call; returns the first fatal sign.
    pub fn poll(&mut self) -> Option<Fatal> {
        let mut f = File::open(&self.path).ok()?;
        f.seek(SeekFrom::Start(self.offset)).ok()?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf).ok()?;
        self.offset += buf.len() as u64;
        self.partial.push_str(&String::from_utf8_lossy(&buf));
        let mut fatal = None;
        while let Some(i) = self.partial.find('\n') {
            let line: String = self.partial.drain(..=i).collect();
            if fatal.is_none() {
                fatal = classify(&line);
            }
        }
        fatal
    }

    /// The last `n` lines of the log, for error messages.
    pub fn tail(&self, n: usize) -> String {
        tail(&self.path, n)
    }
}

/// The last `n` lines of a file (empty if it cannot be read).
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path)
        .map(|b| String::from_utf8_lossy(&b).into_owned())
        .unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;
    use std::io::Write;

    #[rstest]
    #[case(
        "[    2.1] Kernel panic - not syncing: VFS: Unable to mount root fs",
        true
    )]
    #[case(
        "You are in emergency mode. After logging in, type \"journalctl -xb\"",
        true
    )]
    #[case(
        "Gave up waiting for root file system device.  Common problems: ... dropping to a shell!",
        true
    )]
    #[case("[    1.0] SELinux:  Initializing.", false)]
    #[case("Welcome to Debian GNU/Linux 12 (bookworm)!", false)]
    fn recognises_fatal_lines(#[case] line: &str, #[case] fatal: bool) {
        assert_eq!(classify(line).is_some(), fatal, "{line}");
    }

    #[test]
    fn follows_a_growing_log_across_partial_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut f = File::create(&path).unwrap();
        let mut w = ConsoleWatch::new(&path);
        write!(f, "booting\nKernel pan").unwrap();
        assert_eq!(w.poll(), None);
        writeln!(f, "ic - not syncing: Attempted to kill init!").unwrap();
        assert!(matches!(w.poll(), Some(Fatal::KernelPanic(_))));
        assert_eq!(w.poll(), None);
        assert!(w.tail(1).contains("Attempted to kill init"));
    }
}
