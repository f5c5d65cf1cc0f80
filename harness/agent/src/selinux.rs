//! The little SELinux the agent needs, straight from procfs and selinuxfs (no libselinux):
//! the mode, its own context, and the exec context of a child (`setexeccon` in the child),
//! with a session keyring of its own labelled with it when asked.

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
        "{}({context:?}): {} ({}) ({})",
        step.call(),
        errno_name(*errno),
        errno.desc(),
        step.hint()
    )]
    Refused {
        step: Step,
        context: String,
        errno: Errno,
    },
}

fn errno_name(e: Errno) -> String {
    format!("{e:?}")
}

/// What the child does before its exec, in order; the one that failed is reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// `attr/keycreate`: the label of the session keyring it makes.
    KeyCreate,
    /// `keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)`: a new anonymous session keyring.
    JoinKeyring,
    /// `attr/keycreate` cleared again.
    ClearKeyCreate,
    /// `attr/exec`: the context of its exec.
    Exec,
}

impl Step {
    const ALL: [Step; 4] = [
        Step::KeyCreate,
        Step::JoinKeyring,
        Step::ClearKeyCreate,
        Step::Exec,
    ];

    fn call(self) -> &'static str {
        match self {
            Step::KeyCreate => "setkeycreatecon",
            Step::JoinKeyring => "joining a new session keyring labelled",
            Step::ClearKeyCreate => "setkeycreatecon(NULL) after labelling",
            Step::Exec => "setexeccon",
        }
    }

    fn hint(self) -> &'static str {
        match self {
            Step::KeyCreate => {
                "may the agent's domain set a key creation context (process setkeycreate) and \
                 create keys of that context (key create)?"
            }
            Step::JoinKeyring => {
                "is the key quota of root full (kernel.keys.root_maxkeys, root_maxbytes)?"
            }
            Step::ClearKeyCreate => "the kernel refused to clear attr/keycreate",
            Step::Exec => {
                "is SELinux enabled, is the context valid, and may the agent's domain \
                 transition to it?"
            }
        }
    }

    fn code(self) -> u32 {
        self as u32
    }
}

/// A context for the next exec of a child, prepared before the fork so that the child
/// only makes system calls (no allocation) between fork and exec. With `session_keyring`,
/// the child first joins a new anonymous session keyring labelled with the context, so that
/// the container does not share the agent's. A runtime gives each container one of its own
/// under its label too (runc: `SetKeyLabel`, then `JoinSessionKeyring`); runc's is named
/// `_ses.<container id>` and its owner may search it, where this one is anonymous with the
/// kernel's permissions.
pub struct ExecContext {
    context: String,
    /// The context with its NUL, as libselinux writes it.
    raw: CString,
    session_keyring: bool,
    report_read: OwnedFd,
    report_write: OwnedFd,
}

impl ExecContext {
    pub fn new(context: &str, session_keyring: bool) -> Result<Self, ExecContextError> {
        let raw = CString::new(context).map_err(|_| ExecContextError::Nul(context.to_owned()))?;
        let (report_read, report_write) =
            pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).map_err(ExecContextError::Pipe)?;
        Ok(Self {
            context: context.to_owned(),
            raw,
            session_keyring,
            report_read,
            report_write,
        })
    }

    /// The `pre_exec` half: with a session keyring, writes the context to
    /// `/proc/thread-self/attr/keycreate`, joins a new session keyring and clears the
    /// attribute; then writes the context to `/proc/thread-self/attr/exec`. On failure the
    /// step and errno go down the report pipe, then back to std as the spawn error. Only
    /// async-signal-safe calls: open, write, close, keyctl.
    pub fn apply_in_child(&self) -> io::Result<()> {
        if self.session_keyring {
            self.step(Step::KeyCreate, || {
                write_attr(
                    c"/proc/thread-self/attr/keycreate",
                    self.raw.as_bytes_with_nul(),
                )
            })?;
            self.step(Step::JoinKeyring, join_new_session_keyring)?;
            self.step(Step::ClearKeyCreate, || {
                write_attr(c"/proc/thread-self/attr/keycreate", b"\0")
            })?;
        }
        self.step(Step::Exec, || {
            write_attr(c"/proc/thread-self/attr/exec", self.raw.as_bytes_with_nul())
        })
    }

    fn step(&self, step: Step, call: impl FnOnce() -> Result<(), Errno>) -> io::Result<()> {
        call().map_err(|errno| {
            let mut report = [0u8; 8];
            report[..4].copy_from_slice(&step.code().to_ne_bytes());
            report[4..].copy_from_slice(&(errno as i32).to_ne_bytes());
            let _ = write(&self.report_write, &report);
            io::Error::from_raw_os_error(errno as i32)
        })
    }

    /// The parent's half, after a failed spawn: was it this context that was refused?
    /// (std's spawn returns only once the child has exec'd or died, so a report is there
    /// by then; the pipe is non-blocking, so no report reads as "no".)
    pub fn refusal(&self) -> Option<ExecContextError> {
        let mut buf = [0u8; 8];
        match read(self.report_read.as_fd(), &mut buf) {
            Ok(8) => {
                let code = u32::from_ne_bytes([buf[0], buf[1], buf[2], buf[3]]);
                let errno = i32::from_ne_bytes([buf[4], buf[5], buf[6], buf[7]]);
                let step = Step::ALL.into_iter().find(|s| s.code() == code)?;
                Some(ExecContextError::Refused {
                    step,
                    context: self.context.clone(),
                    errno: Errno::from_raw(errno),
                })
            }
            _ => None,
        }
    }
}

/// Writes `value` to the attribute file `path` of the calling thread.
fn write_attr(path: &std::ffi::CStr, value: &[u8]) -> Result<(), Errno> {
    let fd = open(path, OFlag::O_WRONLY | OFlag::O_CLOEXEC, Mode::empty())?;
    write(&fd, value).map(drop)
}

/// `keyctl(KEYCTL_JOIN_SESSION_KEYRING, NULL)`: a new anonymous session keyring (`_ses`).
fn join_new_session_keyring() -> Result<(), Errno> {
    const KEYCTL_JOIN_SESSION_KEYRING: libc::c_long = 1;
    // SAFETY: with a NULL name the call reads no memory of ours; it takes integers only.
    let r = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_JOIN_SESSION_KEYRING,
            std::ptr::null::<libc::c_char>(),
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_context_and_errno_when_refused() {
        let e = ExecContextError::Refused {
            step: Step::Exec,
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
    fn a_failed_step_is_reported_with_its_errno() {
        let context = "system_u:system_r:container_t:s0";
        for step in Step::ALL {
            let c = ExecContext::new(context, true).expect("a pipe");
            assert!(c.refusal().is_none(), "no report before a failure");
            let failed = c.step(step, || Err(Errno::EACCES));
            assert_eq!(failed.unwrap_err().raw_os_error(), Some(libc::EACCES));
            match c.refusal() {
                Some(ExecContextError::Refused {
                    step: got, errno, ..
                }) => {
                    assert_eq!(got, step);
                    assert_eq!(errno, Errno::EACCES);
                }
                other => panic!("{step:?}: {other:?}"),
            }
        }
    }

    #[test]
    fn rejects_a_context_with_nul() {
        assert!(matches!(
            ExecContext::new("a\0b", false),
            Err(ExecContextError::Nul(_))
        ));
    }
}
