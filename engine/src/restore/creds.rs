//! Credentials on restore: each thread takes the image's user and group ids, supplementary
//! groups and capability sets itself (they are per thread in the kernel, and raw system calls
//! change only the caller's), last of all: once a thread is no longer root it could do nothing
//! privileged. Then the process's dumpable flag, which a change of ids resets.

use super::error::StepContext;
use super::RestoreError;
use crate::image::schema::{Caps, Credentials, ThreadCore};
use crate::procfs::Status;
use crate::sys::{Remote, Scratch};

/// Where in the scratch area the group list goes (past the strings the other steps write).
const GROUPS_OFF: u64 = 1024;
/// Where the capset header and data go.
const CAPS_OFF: u64 = 512;
/// `_LINUX_CAPABILITY_VERSION_3`: two 32-bit words per set.
const CAP_VERSION_3: u32 = 0x2008_0522;

/// The thread's credentials as the kernel shows them.
fn current(pid: i32, tid: i32) -> Result<Status, RestoreError> {
    let path = format!("/proc/{pid}/task/{tid}/status");
    let text = std::fs::read_to_string(&path)
        .map_err(|e| RestoreError::Inconsistent(format!("reading {path}: {e}")))?;
    Status::parse(&text)
        .ok_or_else(|| RestoreError::Inconsistent(format!("{path}: unexpected Uid/Gid lines")))
}

/// Gives the calling thread of `remote` the image's credentials: its bounding set, then
/// groups, gids and uids (the order in which it still may; the thread keeps its permitted
/// capabilities across the change of ids when the image has any), then its capability sets,
/// ambient ones last, and its keep-capabilities bit (`core`). Each step is taken only when the
/// thread, a copy of the engine, does not already have what the image says: each needs a
/// permission of the thread's restored context.
pub fn set_credentials(
    remote: &mut Remote,
    scratch: Scratch,
    pid: i32,
    creds: &Credentials,
    core: &ThreadCore,
) -> Result<(), RestoreError> {
    let tid = remote.tid();
    let caps = core.caps.as_ref();
    if let Some(caps) = caps {
        let now = current(pid, tid)?.caps;
        drop_bounding(remote, pid, now.bounding & !caps.bounding)?;
        if caps.permitted != 0 {
            set_keepcaps(remote, pid, true)?;
        }
    }
    set_ids(remote, scratch, pid, creds)?;
    if let Some(caps) = caps {
        if current(pid, tid)?.caps != want(caps) {
            set_caps(remote, scratch, pid, caps)?;
        }
        if caps.permitted != 0 || core.keep_caps {
            set_keepcaps(remote, pid, core.keep_caps)?;
        }
    }
    Ok(())
}

/// The image's capability sets as `/proc` shows them.
fn want(caps: &Caps) -> crate::procfs::Caps {
    crate::procfs::Caps {
        inheritable: caps.inheritable,
        permitted: caps.permitted,
        effective: caps.effective,
        bounding: caps.bounding,
        ambient: caps.ambient,
    }
}

/// Drops the capabilities of `drop` from the bounding set.
fn drop_bounding(remote: &mut Remote, pid: i32, drop: u64) -> Result<(), RestoreError> {
    for cap in (0..64u64).filter(|c| drop & (1 << c) != 0) {
        remote
            .syscall(
                "prctl(PR_CAPBSET_DROP)",
                libc::SYS_prctl,
                &[libc::PR_CAPBSET_DROP as u64, cap],
            )
            .step(pid, "the capability bounding set")?;
    }
    Ok(())
}

fn set_keepcaps(remote: &mut Remote, pid: i32, keep: bool) -> Result<(), RestoreError> {
    remote
        .syscall(
            "prctl(PR_SET_KEEPCAPS)",
            libc::SYS_prctl,
            &[libc::PR_SET_KEEPCAPS as u64, u64::from(keep)],
        )
        .step(pid, "the keep-capabilities flag")
        .map(drop)
}

/// The effective, permitted and inheritable sets (`capset`), then the ambient set; checked
/// against what the kernel then shows.
fn set_caps(
    remote: &mut Remote,
    scratch: Scratch,
    pid: i32,
    caps: &Caps,
) -> Result<(), RestoreError> {
    let tid = remote.tid();
    // struct __user_cap_header_struct { u32 version; int pid; } and two
    // struct __user_cap_data_struct { u32 effective, permitted, inheritable; }, low words first.
    let mut b = Vec::with_capacity(32);
    b.extend_from_slice(&CAP_VERSION_3.to_ne_bytes());
    b.extend_from_slice(&0i32.to_ne_bytes());
    for half in [0u32, 32] {
        for set in [caps.effective, caps.permitted, caps.inheritable] {
            // The low or high 32 bits, by design.
            #[allow(clippy::cast_possible_truncation)]
            let word = (set >> half) as u32;
            b.extend_from_slice(&word.to_ne_bytes());
        }
    }
    remote
        .write_mem(scratch.addr + CAPS_OFF, &b)
        .step(pid, "the capabilities")?;
    remote
        .syscall(
            "capset",
            libc::SYS_capset,
            &[scratch.addr + CAPS_OFF, scratch.addr + CAPS_OFF + 8],
        )
        .step(pid, "the capabilities")?;
    remote
        .syscall(
            "prctl(PR_CAP_AMBIENT_CLEAR_ALL)",
            libc::SYS_prctl,
            &[
                libc::PR_CAP_AMBIENT as u64,
                libc::PR_CAP_AMBIENT_CLEAR_ALL as u64,
                0,
                0,
                0,
            ],
        )
        .step(pid, "the ambient capabilities")?;
    for cap in (0..64u64).filter(|c| caps.ambient & (1 << c) != 0) {
        remote
            .syscall(
                "prctl(PR_CAP_AMBIENT_RAISE)",
                libc::SYS_prctl,
                &[
                    libc::PR_CAP_AMBIENT as u64,
                    libc::PR_CAP_AMBIENT_RAISE as u64,
                    cap,
                    0,
                    0,
                ],
            )
            .step(pid, "the ambient capabilities")?;
    }
    let now = current(pid, tid)?.caps;
    let want = want(caps);
    if now != want {
        return Err(RestoreError::Inconsistent(format!(
            "thread {tid} of process {pid} has capabilities {now:x?} after the restore set \
             {want:x?}"
        )));
    }
    Ok(())
}

/// Groups, then gids, then uids. Nothing to do when they already are the engine's (root
/// restoring root).
fn set_ids(
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
