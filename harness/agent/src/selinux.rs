//! The little SELinux the agent needs, straight from procfs and selinuxfs (no libselinux):
//! the mode, its own context, and the exec context of a child (`setexeccon` in the child).

use std::{
    ffi::CString,
    io,
    os::fd::{AsFd, OwnedFd},
};

use nix::{
    errno::Errno,
    fcntl::{open, OFlag},
    sys::stat::Mode,
    unistd::{pipe2, read, write},
};

const ENFORCE: &str = "/sys/fs/selinux/enforce";
const CURRENT: &str = "/proc/self/attr/current";

/// "enforcing", "permissive" or "disabled", as the kernel says in selinuxfs.
pub fn mode() -> &'static str {
    match std::fs::read_to_string(ENFORCE) {
        Ok(s) if s.trim() == "1" => "enforcing",
        Ok(_) => "permissive",
        Err(_) => "disabled",
    }
}

/// The agent's own context; empty when no LSM provides one.
pub fn current_context() -> String {
    std::fs::read(CURRENT)
        .map(|raw| {
            String::from_utf8_lossy(&raw)
                .trim_end_matches(['\0', '\n'])
                .to_owned()
        })
        .unwrap_or_default()
}

#[derive(Debug, thiserror::Error)]
pub enum ExecContextError {
    #[error("the context {0:?} contains a NUL byte")]
    Nul(String),
    #[error("making the pipe that reports setexeccon failures")]
    Pipe(#[source] Errno),
    #[error(
        "setexeccon({context:?}): {} ({}) (is SELinux enabled, is the context valid, \
         and may the agent's domain transition to it?)",
        errno_name(*errno),
        errno.desc()
    )]
    Refused { context: String, errno: Errno },
}

fn errno_name(e: Errno) -> String {
    format!("{e:?}")
}

/// A context for the next exec of a child, prepared before the fork so that the child
/// only makes system calls (no allocation) between fork and exec.
pub struct ExecContext {
    context: String,
    /// The context with its NUL, as libselinux writes it.
    raw: CString,
    report_read: OwnedFd,
    report_write: OwnedFd,
}

impl ExecContext {
    pub fn new(context: &str) -> Result<Self, ExecContextError> {
        let raw = CString::new(context).map_err(|_| ExecContextError::Nul(context.to_owned()))?;
        let (report_read, report_write) =
            pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(ExecContextError::Pipe)?;
        Ok(Self {
            context: context.to_owned(),
            raw,
            report_read,
            report_write,
        })
    }

    /// The `pre_exec` half: writes the context to `/proc/thread-self/attr/exec`.
    /// On failure the errno goes down the report pipe, then back to std as the spawn error.
    /// Only async-signal-safe calls: open, write, close.
    pub fn apply_in_child(&self) -> io::Result<()> {
        let result = open(
            c"/proc/thread-self/attr/exec",
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .and_then(|fd| write(&fd, self.raw.as_bytes_with_nul()));
        match result {
            Ok(_) => Ok(()),
            Err(errno) => {
                let _ = write(&self.report_write, &(errno as i32).to_ne_bytes());
                Err(io::Error::from_raw_os_error(errno as i32))
            }
        }
    }

    /// The parent's half, after a failed spawn: was it this context that was refused?
    /// (std's spawn returns only once the child has exec'd or died, so a report is there
    /// by then; the pipe is non-blocking, so no report reads as "no".)
    pub fn refusal(&self) -> Option<ExecContextError> {
        let mut buf = [0u8; 4];
        match read(self.report_read.as_fd(), &mut buf) {
            Ok(4) => Some(ExecContextError::Refused {
                context: self.context.clone(),
                errno: Errno::from_raw(i32::from_ne_bytes(buf)),
            }),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_context_and_errno_when_refused() {
        let e = ExecContextError::Refused {
            context: "system_u:system_r:container_t:s0".into(),
            errno: Errno::EACCES,
        };
        let text = e.to_string();
        assert!(
            text.starts_with(
                "setexeccon(\"system_u:system_r:container_t:s0\"): EACCES (Permission denied)"
            ),
            "{text}"
        );
    }

    #[test]
    fn mode_is_one_of_three() {
        assert!(["enforcing", "permissive", "disabled"].contains(&mode()));
    }

    #[test]
    fn rejects_a_context_with_nul() {
        assert!(matches!(
            ExecContext::new("a\0b"),
            Err(ExecContextError::Nul(_))
        ));
    }
}
