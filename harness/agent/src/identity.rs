//! Who the agent is and where it runs (`Hello`): version, SELinux mode and modules, kernel,
//! its own context, an audit marker, and the hash of its binary.

use std::{
    io::{self, Read},
    sync::OnceLock,
    time::Duration,
};

use sha2::{Digest, Sha256};

use super::{audit::Source, command, reaper::Reaper, selinux};
use crlab_protocol::HelloReply;

const SEMODULE_TIMEOUT: Duration = Duration::from_secs(120);

/// The reply, and what could not be found out (each a sentence).
pub fn hello(audit: &Source, reaper: &Reaper) -> (HelloReply, Vec<String>) {
    let mut problems = Vec::new();
    let selinux_mode = selinux::mode();
    let policy_modules = if selinux_mode == "disabled" {
        Vec::new()
    } else {
        policy_modules(reaper).unwrap_or_else(|e| {
            problems.push(e);
            Vec::new()
        })
    };
    let audit_marker = audit.marker().unwrap_or_else(|e| {
        problems.push(super::error_chain(&e));
        0
    });
    let agent_sha256 = binary_sha256().unwrap_or_else(|e| {
        problems.push(format!("hashing /proc/self/exe: {e}"));
        String::new()
    });
    let reply = HelloReply {
        agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        selinux_mode: selinux_mode.to_owned(),
        policy_modules,
        kernel: nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default(),
        context: selinux::current_context(),
        audit_marker,
        agent_sha256,
    };
    (reply, problems)
}

/// `semodule -l`, one module a line; no modules and no error when semodule is not installed.
fn policy_modules(reaper: &Reaper) -> Result<Vec<String>, String> {
    let result = match command::run_argv(&["semodule", "-l"], SEMODULE_TIMEOUT, reaper) {
        Ok(r) => r,
        Err(command::CommandError::Spawn { source, .. })
            if source.kind() == io::ErrorKind::NotFound =>
        {
            tracing::info!("semodule is not installed: no policy modules to list");
            return Ok(Vec::new());
        }
        Err(e) => return Err(super::error_chain(&e)),
    };
    if result.exit_code != 0 || result.timed_out {
        return Err(format!(
            "semodule -l failed (exit {}, signal {}{}): {}",
            result.exit_code,
            result.signal,
            if result.timed_out { ", timed out" } else { "" },
            String::from_utf8_lossy(&result.stderr).trim()
        ));
    }
    Ok(String::from_utf8_lossy(&result.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_owned)
        .collect())
}

/// SHA-256 of the running binary, hex; computed once (the image cannot change under a
/// running process: a reexec starts over).
fn binary_sha256() -> io::Result<String> {
    static HASH: OnceLock<String> = OnceLock::new();
    if let Some(h) = HASH.get() {
        return Ok(h.clone());
    }
    let mut file = std::fs::File::open("/proc/self/exe")?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 256 << 10];
    loop {
        match file.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let hex = format!("{:x}", hasher.finalize());
    Ok(HASH.get_or_init(|| hex).clone())
}
