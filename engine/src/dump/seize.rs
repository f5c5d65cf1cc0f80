//! Holding a process tree still: every thread seized and interrupted, and
//! everything the dump changed in it undone before it is let go.

use super::DumpError;
use crate::procfs;
use crate::sys::{Remote, Scratch, SysError, Tracee, PAGE_SIZE};
use nix::errno::Errno;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tracing::warn;

/// One seized process.
pub struct SeizedProcess {
    pub pid: i32,
    pub tracees: Vec<Tracee>,
    /// One per thread, leader first, once remote calls are needed.
    pub remotes: Vec<Remote>,
    pub scratch: Option<Scratch>,
    /// Descriptors the dump opened in the process (the transport's end) and has not closed:
    /// the undo closes them.
    pub opened_fds: Vec<u64>,
    /// The signal of the group stop the process was in when seized (SIGSTOP or a job-control
    /// stop), as the kernel reported it with the interrupt stop of one of its threads.
    pub group_stop: Option<Signal>,
    /// The threads that slept in `restart_syscall` when seized, with the kernel stack they
    /// showed then (the interrupt stop replaces it), if it could be read.
    pub restarts: Vec<(i32, Option<String>)>,
}

impl SeizedProcess {
    pub fn make_remotes(&mut self, gadget: u64) -> Result<(), SysError> {
        for t in &self.tracees {
            let regs = t.regs()?;
            self.remotes.push(Remote::new_live(*t, gadget, regs)?);
        }
        Ok(())
    }

    pub fn map_scratch(&mut self) -> Result<Scratch, SysError> {
        let s = self.remotes[0].map_scratch(2 * PAGE_SIZE)?;
        self.scratch = Some(s);
        Ok(s)
    }
}

/// A tree of seized processes. Dropping it without `release` or `kill`
/// detaches every thread (the tracer's exit would do the same).
pub struct SeizedTree {
    pub processes: Vec<SeizedProcess>,
    done: bool,
}

impl SeizedTree {
    /// Seizes every thread of every process of `pids`, re-reading each thread
    /// list until no new thread appears.
    pub fn seize(pids: &[i32]) -> Result<SeizedTree, DumpError> {
        let mut tree = SeizedTree {
            processes: Vec::new(),
            done: false,
        };
        for &pid in pids {
            // Dropped on an error, the tree detaches what it seized so far.
            super::check_interrupt()?;
            tree.processes.push(SeizedProcess {
                pid,
                tracees: Vec::new(),
                remotes: Vec::new(),
                scratch: None,
                opened_fds: Vec::new(),
                group_stop: None,
                restarts: Vec::new(),
            });
            let proc = tree.processes.last_mut().expect("just pushed");
            loop {
                let tids = procfs::threads(pid)?;
                let new: Vec<i32> = tids
                    .into_iter()
                    .filter(|t| !proc.tracees.iter().any(|s| s.tid == *t))
                    .collect();
                if new.is_empty() {
                    break;
                }
                for tid in new {
                    if let Some(restart) = procfs::restart_stack(pid, tid) {
                        proc.restarts.push((tid, restart));
                    }
                    let t = Tracee::seize_and_interrupt(tid)?;
                    proc.tracees.push(t);
                    failpoint!("dump.seize.stop", |source| SysError::Io {
                        what: format!("waiting for task {tid} to stop"),
                        source,
                    });
                    if let Some(sig) = t.wait_interrupt_stop()? {
                        proc.group_stop.get_or_insert(sig);
                    }
                    failpoint!("dump.seize", |source| SysError::Io {
                        what: format!("seizing the thread after task {tid}"),
                        source,
                    });
                }
            }
            // Leader first.
            proc.tracees.sort_by_key(|t| (t.tid != pid, t.tid));
        }
        Ok(tree)
    }

    /// Undoes every change and detaches: the processes go on as before. Once released (or
    /// killed), the tree is no longer the engine's: a second call does nothing.
    pub fn release(&mut self) -> Result<(), DumpError> {
        if self.done {
            return Ok(());
        }
        self.done = true;
        let mut first: Option<DumpError> = None;
        for proc in &mut self.processes {
            if let Some(leader) = proc.remotes.first_mut() {
                for fd in proc.opened_fds.drain(..) {
                    if let Err(e) = leader.syscall("close", libc::SYS_close, &[fd]) {
                        first.get_or_insert(e.into());
                    }
                }
            }
            if let (Some(s), Some(leader)) = (proc.scratch.take(), proc.remotes.first_mut()) {
                if let Err(e) = leader.unmap(s.addr, s.len) {
                    first.get_or_insert(e.into());
                }
            }
            let mut deferred = Vec::new();
            for r in &mut proc.remotes {
                if let Err(e) = r.restore_base(true) {
                    first.get_or_insert(e.into());
                }
                let tracee = r.tracee;
                deferred.extend(r.deferred_signals.drain(..).map(|s| (tracee, s)));
            }
            for t in &proc.tracees {
                if let Err(e) = detach(t) {
                    first.get_or_insert(e.into());
                }
            }
            for (tracee, sig) in deferred {
                // Handed back as the kernel would have delivered it; a thread gone since
                // cannot take it any more.
                if let Err(e) = tracee.tgkill(proc.pid, sig) {
                    warn!(pid = proc.pid, tid = tracee.tid, error = %e, "handing back a held signal");
                }
            }
        }
        match first {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Kills every process and waits until the kernel has reported each
    /// thread's end to us, so the real parents see their children exit.
    pub fn kill(&mut self) {
        self.done = true;
        for proc in &self.processes {
            if let Err(e) = kill(Pid::from_raw(proc.pid), Signal::SIGKILL) {
                warn!(pid = proc.pid, error = %e, "killing the dumped process");
            }
        }
        // Non-leader threads first: the kernel reports a traced leader's exit
        // only once its other threads have been reaped by the tracer.
        for proc in &self.processes {
            for t in proc.tracees.iter().rev() {
                for _ in 0..16 {
                    if t.wait("being killed after the dump").is_err() {
                        break;
                    }
                }
            }
        }
    }
}

impl Drop for SeizedTree {
    fn drop(&mut self) {
        if !self.done {
            for proc in &self.processes {
                for t in &proc.tracees {
                    let _ = detach(t);
                }
            }
        }
    }
}

/// Lets a seized thread go. The kernel detaches a thread only in a ptrace-stop: one that a
/// failure left between its seize and the stop it was asked for (still running, the interrupt
/// pending) is waited for into that stop first, or it would stay traced, and stop, until the
/// engine exits.
fn detach(t: &Tracee) -> Result<(), SysError> {
    match t.detach() {
        Err(e) if e.errno() == Some(Errno::ESRCH) => {
            t.wait_interrupt_stop()?;
            // A process in group stop goes back into it as it is let go (the kernel does so).
            t.detach()
        }
        done => done,
    }
}
