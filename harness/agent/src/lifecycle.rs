//! What becomes of the agent itself once it has answered: the machine powered off, or the
//! agent re-executed from a new binary on the same channel.

use std::{
    ffi::CString,
    os::unix::{ffi::OsStrExt, fs::PermissionsExt},
    path::{Path, PathBuf},
    process::Command,
};

use nix::{
    sys::reboot::{reboot, RebootMode},
    unistd::{execv, sync},
};

use super::{channel::Channel, config::Config, reaper::Reaper};

#[derive(Debug, thiserror::Error)]
pub enum LifecycleError {
    #[error("no binary to re-execute at {path}")]
    Missing {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not an executable file")]
    NotExecutable { path: PathBuf },
    #[error("the path {0:?} contains a NUL byte")]
    Nul(PathBuf),
    #[error("keeping the channel open for the new agent")]
    Channel(#[from] super::channel::ChannelError),
    #[error("exec {path}")]
    Exec {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("powering off: reboot(RB_POWER_OFF) failed ({reboot}) and so did systemctl poweroff ({systemctl})")]
    PowerOff {
        reboot: nix::Error,
        systemctl: String,
    },
}

/// Checked before answering a Reexec, so that a bad path is an error reply, not a silence.
pub fn check_reexec_target(path: &str) -> Result<PathBuf, LifecycleError> {
    let path = PathBuf::from(path);
    let meta = std::fs::metadata(&path).map_err(|source| LifecycleError::Missing {
        path: path.clone(),
        source,
    })?;
    if !meta.is_file() || meta.permissions().mode() & 0o111 == 0 {
        return Err(LifecycleError::NotExecutable { path });
    }
    Ok(path)
}

/// The new agent's argv: where the channel is, the options carried over, the background
/// children it must reap.
pub fn reexec_argv(
    path: &Path,
    channel_args: Vec<String>,
    config: &Config,
    reaper: &Reaper,
) -> Vec<String> {
    let mut argv = vec![path.display().to_string()];
    argv.extend(channel_args);
    argv.extend(config.carried_args());
    let pids = reaper.pids();
    if !pids.is_empty() {
        argv.push("--adopt".to_owned());
        argv.push(
            pids.iter()
                .map(i32::to_string)
                .collect::<Vec<_>>()
                .join(","),
        );
    }
    argv
}

/// Replaces the agent with the binary at `path`; returns only if that failed (with the
/// channel closed on exec again, so the agent can go on serving).
pub fn reexec(path: &Path, channel: &Channel, config: &Config, reaper: &Reaper) -> LifecycleError {
    let exec = || -> Result<std::convert::Infallible, LifecycleError> {
        let c_path = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| LifecycleError::Nul(path.to_owned()))?;
        let argv = reexec_argv(path, channel.inherit_across_exec()?, config, reaper);
        let c_argv = argv
            .iter()
            .map(|a| CString::new(a.as_bytes()).map_err(|_| LifecycleError::Nul(a.into())))
            .collect::<Result<Vec<_>, _>>()?;
        tracing::info!(?argv, "re-executing");
        execv(&c_path, &c_argv).map_err(|source| LifecycleError::Exec {
            path: path.to_owned(),
            source,
        })
    };
    let Err(e) = exec();
    channel.close_on_exec();
    e
}

/// Syncs and powers the machine off at once (the run's disk is a throwaway overlay, so a
/// full systemd shutdown would only cost time); asks `systemctl poweroff` if the kernel
/// refuses, and then returns: systemd stops the agent on its way down.
pub fn power_off() -> Result<(), LifecycleError> {
    tracing::info!("powering off");
    sync();
    let Err(reboot_err) = reboot(RebootMode::RB_POWER_OFF);
    tracing::warn!(error = %reboot_err, "reboot(RB_POWER_OFF) failed, trying systemctl poweroff");
    let systemctl = match Command::new("systemctl").arg("poweroff").status() {
        Ok(s) if s.success() => return Ok(()),
        Ok(s) => format!("it ended with {s}"),
        Err(e) => e.to_string(),
    };
    Err(LifecycleError::PowerOff {
        reboot: reboot_err,
        systemctl,
    })
}
