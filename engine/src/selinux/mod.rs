//! SELinux, the engine's one vocabulary of it: is it on, the engine's own context, the type
//! field of a context, the rule that says when the restore writes a context, labelling the
//! sockets the engine creates, and (in [`access`]) the `process` permissions a context write
//! needs, the kernel's access decisions on them and the `allow` rules that would grant them,
//! and (in [`descriptors`]) whether a restored process may use the descriptors the restore
//! recreates for it.
//!
//! `dump`, `restore` and `check` all speak SELinux through this module, so the diagnostic
//! (`check --images-dir`) and the restore can never disagree on a rule.

mod access;
mod descriptors;
mod keyrings;

pub use access::{
    allow_rules, denial_cause, explain_denial, remedy, AccessOracle, Decision, DenialCause,
    KernelOracle, ProcessPermission,
};
pub use descriptors::{
    recreated as recreated_descriptors, refusal as descriptor_refusal, socket_creations,
    socket_questions, socket_refusal, Descriptor, DescriptorRefusal, Question, Recreated,
    SocketCreation, SocketRefusal,
};
pub use keyrings::{keyring_questions, keyring_refusal, KeyringCreation, KeyringRefusal, Relabel};

use std::io::{self, Write};

/// What the engine could not do or ask about SELinux.
#[derive(Debug, thiserror::Error)]
pub enum SelinuxError {
    #[error("setting the engine's socket creation context to {context:?} (attr/sockcreate)")]
    SockCreate {
        context: String,
        #[source]
        source: io::Error,
    },
    #[error("cannot read this process's own SELinux context (/proc/self/attr/current)")]
    OwnContext {
        #[source]
        source: io::Error,
    },
    #[error("asking the kernel for the number of {what}")]
    Mapping {
        what: String,
        #[source]
        source: ::selinux::errors::Error,
    },
    #[error(
        "asking the kernel {question} (security_compute_av; the calling domain needs \
         `security {{ compute_av }}`)"
    )]
    ComputeAv {
        /// `whether "SOURCE" may `class { permissions }` "TARGET"`.
        question: String,
        #[source]
        source: ::selinux::errors::Error,
    },
    #[error("the context {context:?} holds a NUL byte")]
    NulInContext { context: String },
    #[error(
        "labelling a recreated file {label:?} (fsetfilecon; the calling domain needs \
         `file {{ relabelfrom }}` on the label it was created with and `file {{ relabelto }}` on \
         {label:?})"
    )]
    Relabel {
        label: String,
        #[source]
        source: ::selinux::errors::Error,
    },
    #[error(
        "asking the kernel whether it knows the context {context:?} (/sys/fs/selinux/context; \
         the calling domain needs `security {{ check_context }}`)"
    )]
    CheckContext {
        context: String,
        #[source]
        source: ::selinux::errors::Error,
    },
}

/// SELinux is enabled in the running kernel (enforcing or permissive).
pub fn enabled() -> bool {
    !matches!(
        ::selinux::kernel_support(),
        ::selinux::KernelSupport::Unsupported
    ) && std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

/// A context as the kernel hands it out of an `attr` file: without its trailing NUL or newline.
pub fn context_from_attr(raw: &[u8]) -> String {
    String::from_utf8_lossy(raw)
        .trim_end_matches(['\0', '\n'])
        .to_owned()
}

/// The engine's own context (`/proc/self/attr/current`), as the restore reads it.
pub fn own_context() -> Result<String, SelinuxError> {
    let raw = std::fs::read("/proc/self/attr/current")
        .map_err(|source| SelinuxError::OwnContext { source })?;
    let context = context_from_attr(&raw);
    if context.is_empty() {
        return Err(SelinuxError::OwnContext {
            source: io::Error::new(io::ErrorKind::InvalidData, "it is empty"),
        });
    }
    Ok(context)
}

/// The type field of a `user:role:type[:level]` context (the whole text if it has none).
pub fn context_type(context: &str) -> &str {
    context.split(':').nth(2).unwrap_or(context)
}

/// Why the restore writes no context for a process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NoWrite {
    /// The target is the engine's own context.
    SameContext,
    /// No context to write: none recorded at dump (SELinux off then) and no `--lsm-profile`,
    /// or an empty one. The process keeps the engine's context.
    Empty,
}

/// The restore's rule for one process (SELinux being on): its context is written unless the
/// target is empty or is the engine's own context, compared as text. `None`: it is written.
pub fn no_write(engine: &str, target: &str) -> Option<NoWrite> {
    if target.is_empty() {
        Some(NoWrite::Empty)
    } else if target == engine {
        Some(NoWrite::SameContext)
    } else {
        None
    }
}

fn write_sockcreate(value: &str) -> io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/thread-self/attr/sockcreate")?;
    f.write_all(value.as_bytes())
}

/// Runs `f` with this thread's `attr/sockcreate` set to `context`, so the
/// sockets `f` creates carry it, and resets it right after, whatever `f` did.
/// An empty `context` runs `f` unchanged.
pub fn with_sockcreate<T>(context: &str, f: impl FnOnce() -> T) -> Result<T, SelinuxError> {
    if context.is_empty() {
        return Ok(f());
    }
    write_sockcreate(context).map_err(|source| SelinuxError::SockCreate {
        context: context.to_string(),
        source,
    })?;
    let out = f();
    write_sockcreate("").map_err(|source| SelinuxError::SockCreate {
        context: String::new(),
        source,
    })?;
    Ok(out)
}

/// The SELinux label of an open file (its `security.selinux` attribute), raw, as the kernel
/// gives it and takes it back in `attr/sockcreate` (no translation of levels); empty when
/// SELinux is off or the file has none.
pub fn label_of(file: std::os::fd::BorrowedFd<'_>) -> String {
    ::selinux::SecurityContext::of_file(&file, true)
        .ok()
        .flatten()
        .map(|c| context_from_attr(c.as_bytes()))
        .unwrap_or_default()
}

/// Gives an open file the raw SELinux label `label` (its `security.selinux` attribute), unless
/// it has it already.
pub fn set_label(file: std::os::fd::BorrowedFd<'_>, label: &str) -> Result<(), SelinuxError> {
    if label_of(file) == label {
        return Ok(());
    }
    let c = std::ffi::CString::new(label).map_err(|_| SelinuxError::NulInContext {
        context: label.to_owned(),
    })?;
    let context = ::selinux::SecurityContext::from_c_str(&c, true);
    let set = context.set_for_file(&file);
    set.map_err(|source| SelinuxError::Relabel {
        label: label.to_owned(),
        source,
    })
}

/// The raw SELinux label of the file at `path` (following a final symbolic link, such as a
/// `/proc/PID/fd/N` link to a socket, when `follow`); empty when SELinux is off or the file
/// has none.
pub fn label_of_path(path: &std::path::Path, follow: bool) -> String {
    ::selinux::SecurityContext::of_path(path, follow, true)
        .ok()
        .flatten()
        .map(|c| context_from_attr(c.as_bytes()))
        .unwrap_or_default()
}

/// Contexts the engine's unit tests speak of.
#[cfg(test)]
pub(crate) mod examples {
    pub const UNCONFINED: &str = "unconfined_u:unconfined_r:unconfined_t:s0-s0:c0.c1023";
    pub const SERVICE: &str = "system_u:system_r:unconfined_service_t:s0";
    pub const RUNTIME: &str = "system_u:system_r:container_runtime_t:s0";
    pub const CONTAINER: &str = "system_u:system_r:container_t:s0:c1,c2";
    pub const CONTAINER2: &str = "system_u:system_r:container_t:s0:c3,c4";
}

#[cfg(test)]
mod tests {
    use super::examples::{CONTAINER, UNCONFINED};
    use super::*;

    #[test]
    fn context_type_is_the_third_field() {
        assert_eq!(context_type(CONTAINER), "container_t");
        assert_eq!(context_type(UNCONFINED), "unconfined_t");
        assert_eq!(context_type("u:r:t"), "t");
        assert_eq!(context_type("not-a-context"), "not-a-context");
        assert_eq!(context_type(""), "");
    }

    #[test]
    fn a_context_is_written_unless_empty_or_the_engines() {
        assert_eq!(no_write("a:b:c_t:s0", ""), Some(NoWrite::Empty));
        assert_eq!(
            no_write("a:b:c_t:s0", "a:b:c_t:s0"),
            Some(NoWrite::SameContext)
        );
        assert_eq!(no_write("a:b:c_t:s0", "a:b:d_t:s0"), None);
    }

    #[test]
    fn attr_contents_lose_their_terminator() {
        assert_eq!(context_from_attr(b"u:r:t:s0\0"), "u:r:t:s0");
        assert_eq!(context_from_attr(b"u:r:t:s0\n"), "u:r:t:s0");
        assert_eq!(context_from_attr(b""), "");
    }
}
