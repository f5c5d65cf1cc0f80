//! Credentials on restore: each thread takes the image's user and group ids and supplementary
//! groups itself (they are per thread in the kernel, and raw system calls change only the
//! caller's), last of all: once a thread is no longer root it could do nothing privileged.
//! Then the process's dumpable flag, which a change of ids resets.

use super::error::StepContext;
use super::RestoreError;
use crate::image::schema::Credentials;
use crate::procfs::Status;
use crate::sys::{Remote, Scratch};

/// Where in the scratch area the group list goes (past the strings the other steps write).
const GROUPS_OFF: u64 = 1024;

/// The thread's credentials as the kernel shows them.
fn current(pid: i32, tid: i32) -> Result<Status, RestoreError> {
    let path = format!("/proc/{pid}/task/{tid}/status");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| RestoreError::Inconsistent(format!("reading {path}: {e}")))?;
    Status::parse(&text)
        .ok_or_else(|| RestoreError::Inconsistent(format!("{path}: unexpected Uid/Gid lines")))
}

/// Gives the calling thread of `remote` the image's credentials: groups, then gids, then
/// uids (the order in which it still may). Nothing to do when they already are the engine's
/// (root restoring root).
pub fn set_credentials(
    remote: &mut Remote,
    scratch: Scratch,
    pid: i32,
    creds: &Credentials,
) -> Result<(), RestoreError> {
    failpoint!("restore.creds", super::error::injected(pid, "credentials"));
    let tid = remote.tid();
    let uids = [creds.uid, creds.euid, creds.suid, creds.fsuid];
    let gids = [creds.gid, creds.egid, creds.sgid, creds.fsgid];
    let now = current(pid, tid)?;
    if now.uids == uids && now.gids == gids && now.groups == creds.groups {
        return Ok(());
    }
    let bytes: Vec<u8> = creds.groups.iter().flat_map(|g| g.to_ne_bytes()).collect();
    if GROUPS_OFF + bytes.len() as u64 > scratch.len {
        return Err(RestoreError::Inconsistent(format!(
            "process {pid} has {} supplementary groups, more than the engine can pass",
            creds.groups.len()
        )));
    }
    remote
        .write_mem(scratch.addr + GROUPS_OFF, &bytes)
        .step(pid, "the supplementary groups")?;
    remote
        .syscall(
            "setgroups",
            libc::SYS_setgroups,
            &[creds.groups.len() as u64, scratch.addr + GROUPS_OFF],
        )
        .step(pid, "the supplementary groups")?;
    remote
        .syscall(
            "setresgid",
            libc::SYS_setresgid,
            &[creds.gid as u64, creds.egid as u64, creds.sgid as u64],
        )
        .step(pid, "the group ids")?;
    // setfsgid and setfsuid return the previous id, never an error: checked below.
    remote
        .syscall("setfsgid", libc::SYS_setfsgid, &[creds.fsgid as u64])
        .step(pid, "the filesystem group id")?;
    remote
        .syscall(
            "setresuid",
            libc::SYS_setresuid,
            &[creds.uid as u64, creds.euid as u64, creds.suid as u64],
        )
        .step(pid, "the user ids")?;
    remote
        .syscall("setfsuid", libc::SYS_setfsuid, &[creds.fsuid as u64])
        .step(pid, "the filesystem user id")?;
    let after = current(pid, tid)?;
    if after.uids != uids || after.gids != gids || after.groups != creds.groups {
        return Err(RestoreError::Inconsistent(format!(
            "thread {tid} of process {pid} has uids {:?}, gids {:?}, groups {:?} after the \
             restore set uids {uids:?}, gids {gids:?}, groups {:?}",
            after.uids, after.gids, after.groups, creds.groups
        )));
    }
    Ok(())
}

/// Gives the process the image's dumpable flag: changing its ids made it non-dumpable (the
/// kernel then hands its /proc files to root), and a process may have made itself so.
pub fn set_dumpable(
    remote: &mut Remote,
    pid: i32,
    dumpable: Option<u32>,
) -> Result<(), RestoreError> {
    failpoint!(
        "restore.dumpable",
        super::error::injected(pid, "the dumpable flag")
    );
    let Some(d) = dumpable else {
        return Ok(());
    };
    // PR_SET_DUMPABLE takes 0 or 1; 2 ("as suid_dumpable says") cannot be set back.
    let value = u64::from(d == 1);
    remote
        .syscall(
            "prctl(PR_SET_DUMPABLE)",
            libc::SYS_prctl,
            &[libc::PR_SET_DUMPABLE as u64, value],
        )
        .step(pid, "the dumpable flag")?;
    Ok(())
}
