//! SELinux, from the engine's side: is it on, and labelling the sockets the engine creates.

use std::io::Write;

/// Failure to set the engine's own socket-creation context.
#[derive(Debug, thiserror::Error)]
pub enum LsmError {
    #[error("setting the engine's socket creation context to {context:?} (attr/sockcreate)")]
    SockCreate {
        context: String,
        #[source]
        source: std::io::Error,
    },
}

/// SELinux is enabled in the running kernel (enforcing or permissive).
pub fn selinux_enabled() -> bool {
    !matches!(
        selinux::kernel_support(),
        selinux::KernelSupport::Unsupported
    ) && std::path::Path::new("/sys/fs/selinux/enforce").exists()
}

fn write_sockcreate(value: &str) -> std::io::Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .open("/proc/thread-self/attr/sockcreate")?;
    f.write_all(value.as_bytes())
}

/// Runs `f` with this thread's `attr/sockcreate` set to `context`, so the
/// sockets `f` creates carry it, and resets it right after, whatever `f` did.
/// An empty `context` runs `f` unchanged.
pub fn with_sockcreate<T>(context: &str, f: impl FnOnce() -> T) -> Result<T, LsmError> {
    if context.is_empty() {
        return Ok(f());
    }
    write_sockcreate(context).map_err(|source| LsmError::SockCreate {
        context: context.to_string(),
        source,
    })?;
    let out = f();
    write_sockcreate("").map_err(|source| LsmError::SockCreate {
        context: String::new(),
        source,
    })?;
    Ok(out)
}
