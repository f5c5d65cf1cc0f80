//! QEMU's human monitor (HMP) over its UNIX socket: `stop`, `savevm`, `cont`, `quit`.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum MonitorError {
    #[error("QEMU monitor at {path}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("QEMU monitor command {command:?} failed: {reply}")]
    Command { command: String, reply: String },
}

/// A connection to the monitor.
pub struct Monitor {
    stream: BufReader<UnixStream>,
    path: String,
}

const PROMPT: &[u8] = b"(qemu) ";

impl Monitor {
    pub fn connect(path: &Path, timeout: Duration) -> Result<Monitor, MonitorError> {
        let p = path.display().to_string();
        let err = |source| MonitorError::Io {
            path: p.clone(),
            source,
        };
        let stream = UnixStream::connect(path).map_err(err)?;
        stream.set_read_timeout(Some(timeout)).map_err(err)?;
        let mut m = Monitor {
            stream: BufReader::new(stream),
            path: p.clone(),
        };
        m.read_to_prompt()?;
        Ok(m)
    }

    fn read_to_prompt(&mut self) -> Result<String, MonitorError> {
        let mut out = Vec::new();
        loop {
            let mut byte = [0u8; 1];
            match self.stream.read(&mut byte) {
                Ok(0) => {
                    return Err(MonitorError::Io {
                        path: self.path.clone(),
                        source: std::io::ErrorKind::UnexpectedEof.into(),
                    })
                }
                Ok(_) => {
                    out.push(byte[0]);
                    if out.ends_with(PROMPT) {
                        out.truncate(out.len() - PROMPT.len());
                        return Ok(clean(&out));
                    }
                }
                Err(source) => {
                    return Err(MonitorError::Io {
                        path: self.path.clone(),
                        source,
                    })
                }
            }
        }
    }

    /// Runs one command; its output (with QEMU's echo and escapes removed).
    pub fn command(&mut self, command: &str, timeout: Duration) -> Result<String, MonitorError> {
        let p = self.path.clone();
        let err = |source| MonitorError::Io {
            path: p.clone(),
            source,
        };
        self.stream
            .get_ref()
            .set_read_timeout(Some(timeout))
            .map_err(err)?;
        self.stream
            .get_mut()
            .write_all(format!("{command}\n").as_bytes())
            .map_err(err)?;
        let reply = self.read_to_prompt()?;
        // The first line is QEMU echoing the command.
        let body: Vec<&str> = reply.lines().skip(1).collect();
        let body = body.join("\n").trim().to_string();
        let lower = body.to_lowercase();
        if lower.contains("error")
            || lower.contains("could not")
            || lower.contains("unknown command")
        {
            return Err(MonitorError::Command {
                command: command.into(),
                reply: body,
            });
        }
        Ok(body)
    }

    /// Reads lines until EOF (after `quit`).
    pub fn drain(mut self) {
        let mut line = String::new();
        while matches!(self.stream.read_line(&mut line), Ok(n) if n > 0) {
            line.clear();
        }
    }
}

/// Removes terminal escape sequences and carriage returns.
fn clean(raw: &[u8]) -> String {
    let text = String::from_utf8_lossy(raw);
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if c != '\r' {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_escapes() {
        assert_eq!(clean(b"savevm x\r\n\x1b[K\x1b[Dok"), "savevm x\nok");
    }
}
