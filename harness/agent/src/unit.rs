//! systemd units acted on for the host (`UnitAction`): `systemctl ACTION UNIT` under a deadline.

use std::time::Duration;

use super::{command, reaper::Reaper};
use crlab_protocol::{CommandResult, UnitAction};

/// Longer than systemd's default start timeout (90 s), so systemd reports first.
pub const TIMEOUT: Duration = Duration::from_secs(120);

#[derive(Debug, thiserror::Error)]
pub enum UnitError {
    #[error("the unit action needs a {what} that does not start with '-' (got {value:?})")]
    BadArgument { what: &'static str, value: String },
    #[error(transparent)]
    Command(#[from] command::CommandError),
}

/// What [`act`] refuses before it acts: an empty unit or action, or one that starts with `-`
/// (systemctl would read it as an option). Pure: nothing is touched.
pub fn check(req: &UnitAction) -> Result<(), UnitError> {
    for (what, value) in [("unit", &req.unit), ("action", &req.action)] {
        if value.is_empty() || value.starts_with('-') {
            return Err(UnitError::BadArgument {
                what,
                value: value.clone(),
            });
        }
    }
    Ok(())
}

/// Runs systemctl; the result comes back whatever its exit status, and a failure is
/// described by [`failure`].
pub fn act(req: &UnitAction, reaper: &Reaper) -> Result<CommandResult, UnitError> {
    check(req)?;
    Ok(command::run_argv(
        &["systemctl", &req.action, &req.unit],
        TIMEOUT,
        reaper,
    )?)
}

/// Why `systemctl` did not do it, with its output; `None` when it did.
pub fn failure(req: &UnitAction, result: &CommandResult) -> Option<String> {
    if result.exit_code == 0 && !result.timed_out {
        return None;
    }
    let how = if result.timed_out {
        format!("did not finish within {} s", TIMEOUT.as_secs())
    } else if result.signal != 0 {
        format!("was killed by signal {}", result.signal)
    } else {
        format!("exited with {}", result.exit_code)
    };
    let output = [&result.stderr, &result.stdout]
        .iter()
        .map(|o| String::from_utf8_lossy(o).trim().to_owned())
        .filter(|o| !o.is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    Some(format!(
        "systemctl {} {} {how}: {output} (see journalctl -u {})",
        req.action, req.unit, req.unit
    ))
}
