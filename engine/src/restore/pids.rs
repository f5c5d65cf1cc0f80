//! The pids a restore needs: free, or held by zombies that are waited for within a bound.
//!
//! A dumped tree is killed at the end of the dump, but its members stay zombies until their
//! parent (or init, or a subreaper) reaps them, which can take seconds. A restore started
//! right after the dump waits for such pids instead of failing; a pid held by a live process
//! fails at once, naming the process.

use super::RestoreError;
use crate::procfs::{self, Stat};
use std::time::{Duration, Instant};
use tracing::info;

/// What holds a pid now.
enum Holder {
    Free,
    /// A zombie (or a task being torn down), with its parent.
    Dead {
        ppid: i32,
    },
    /// A live process: its description for the error.
    Live(String),
}

fn holder(pid: i32) -> Holder {
    // A thread id resolves under /proc too (hidden from the listing): a thread of another
    // process holds the id as surely as a process does.
    let stat = match Stat::read(pid) {
        Ok(stat) => stat,
        Err(_) if !std::path::Path::new(&format!("/proc/{pid}")).exists() => return Holder::Free,
        Err(_) => return Holder::Live("a task whose state could not be read".into()),
    };
    if matches!(stat.state, 'Z' | 'X' | 'x') {
        return Holder::Dead { ppid: stat.ppid };
    }
    Holder::Live(describe(pid, &stat))
}

/// `process 1234 (name, /usr/bin/name, state S)`: what a user needs to find it.
fn describe(pid: i32, stat: &Stat) -> String {
    let comm = procfs::read_string(format!("/proc/{pid}/comm"))
        .map(|c| c.trim_end().to_owned())
        .unwrap_or_default();
    let exe = procfs::read_link(format!("/proc/{pid}/exe")).unwrap_or_default();
    let tgid = procfs::read_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Tgid:"))
                .and_then(|v| v.trim().parse::<i32>().ok())
        })
        .unwrap_or(pid);
    let whose = if tgid == pid {
        format!("process {pid}")
    } else {
        format!("a thread of process {tgid}")
    };
    format!(
        "{whose} ({comm}{}{exe}, state {}, parent {})",
        if exe.is_empty() { "" } else { ", " },
        stat.state,
        stat.ppid
    )
}

/// What holds `pid`, in words, for an error found after the wait (the kernel's `EEXIST`).
pub fn holder_text(pid: i32) -> String {
    match holder(pid) {
        Holder::Free => "a task that ended since".into(),
        Holder::Dead { ppid } => format!("a zombie whose parent {ppid} has not reaped it"),
        Holder::Live(text) => text,
    }
}

/// Waits until every id of `ids` is free: a live holder fails at once
/// ([`RestoreError::PidTaken`]), zombies are waited for up to `bound`
/// ([`RestoreError::PidHeldByZombie`] after that).
pub fn wait_free(ids: &[i32], bound: Duration) -> Result<(), RestoreError> {
    let start = Instant::now();
    let mut pause = Duration::from_millis(1);
    let mut announced = false;
    loop {
        super::check_interrupt()?;
        let mut zombie = None;
        for &id in ids {
            match holder(id) {
                Holder::Free => {}
                Holder::Live(holder) => return Err(RestoreError::PidTaken { pid: id, holder }),
                Holder::Dead { ppid } => {
                    zombie = Some((id, ppid));
                    break;
                }
            }
        }
        let Some((pid, ppid)) = zombie else {
            return Ok(());
        };
        let waited = start.elapsed();
        if waited >= bound {
            return Err(RestoreError::PidHeldByZombie {
                pid,
                parent: ppid,
                waited: bound,
            });
        }
        if !announced {
            info!(
                pid,
                parent = ppid,
                "waiting for pid {pid}, held by a zombie that its parent {ppid} has not reaped yet"
            );
            announced = true;
        }
        std::thread::sleep(pause.min(bound - waited));
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
