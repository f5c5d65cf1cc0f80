//! Reaps the background commands the agent started, and only those, so none stays a zombie.
//!
//! One small thread per background child blocks in `waitpid` on that child's pid; the agent
//! never waits for "any child", so it never steals the status of a foreground command.

use std::{
    collections::BTreeSet,
    process::Child,
    sync::{Arc, Mutex, PoisonError},
};

use nix::{sys::wait::waitpid, unistd::Pid};

#[derive(Clone, Default)]
pub struct Reaper {
    live: Arc<Mutex<BTreeSet<i32>>>,
}

impl Reaper {
    /// Takes over a started child: it is waited for when it exits.
    pub fn adopt(&self, mut child: Child, what: &str) {
        let pid = child.id() as i32;
        let what = what.to_owned();
        self.watch(pid, move || match child.wait() {
            Ok(status) => tracing::info!(pid, %status, command = %what, "background command ended"),
            Err(e) => {
                tracing::warn!(pid, error = %e, command = %what, "waiting for a background command")
            }
        });
    }

    /// Takes over a child known only by its pid (one a previous agent image started).
    pub fn adopt_pid(&self, pid: i32) {
        self.watch(pid, move || match waitpid(Pid::from_raw(pid), None) {
            Ok(status) => tracing::info!(pid, ?status, "adopted background command ended"),
            Err(e) => tracing::info!(pid, error = %e, "adopted background command already gone"),
        });
    }

    fn watch(&self, pid: i32, wait: impl FnOnce() + Send + 'static) {
        self.lock().insert(pid);
        let live = Arc::clone(&self.live);
        let spawned = std::thread::Builder::new()
            .name(format!("reap-{pid}"))
            .spawn(move || {
                wait();
                live.lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&pid);
            });
        if let Err(e) = spawned {
            tracing::error!(pid, error = %e, "no thread to reap a background command; it will stay a zombie when it exits");
        }
    }

    /// The background children not reaped yet.
    pub fn pids(&self) -> Vec<i32> {
        self.lock().iter().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<i32>> {
        self.live.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
