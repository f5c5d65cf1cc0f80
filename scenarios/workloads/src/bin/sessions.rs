//! Session and process-group layouts, for the restore that rebuilds them and the dump that
//! refuses the ones it cannot. The root (a session leader, started so by the tests) sets up
//! the layout named by the first argument:
//!
//! - `child-session`: child C forks G, then makes its own session: G stays in the root's
//!   session and group, under a parent in another session;
//! - `own-session`: child C makes its own session, then forks G into it;
//! - `group-moved`: child A leads its own group, forks A1 into it, then goes back to the root's
//!   group: A1 is in a group whose leader is not in it;
//! - `sibling-group`: child B leads its own group, its sibling C joins it;
//! - `group-gone` (refused): child A joins the group its child X made, then X exits: A is in a
//!   group whose leader is gone;
//! - `session-gone` (refused): the root is a child subreaper; its child X makes its own
//!   session, forks M into it and exits; M, now the root's child, is in a session whose leader
//!   is gone.
//!
//! Every process but the root records its parent, group and session once the layout is
//! complete, reports its pid to the root, waits (nanosleep) for the `go` file the root creates
//! once triggered, then checks it is where it was, reaps its children (each must exit 0) and
//! exits 0, or 1 when something moved. The root reaps its children the same way and makes the
//! common checks. Announces `members` (every pid but the root's, space separated) and
//! `refused-pid` (the member a refusal must name; for a restored layout, the last member).

use std::ffi::CString;
use std::io;

use crlab_workloads::runtime::Workload;
use crlab_workloads::sys;

fn main() {
    let mut w = Workload::from_args("sessions");
    let kind = w.args().first().cloned().unwrap_or_default();
    let go = sys::cstring(&w.path("go"));
    let (members, children, refused) = match set_up(&kind, &go) {
        Ok(x) => x,
        Err(e) => w.setup_failed(&format!("{kind}: {e}")),
    };
    let list: Vec<String> = members.iter().map(i32::to_string).collect();
    w.announce("members", list.join(" "));
    w.announce("refused-pid", refused);
    let mut checks = w.wait();
    w.common_checks(&mut checks);
    checks.io("creating the go file", std::fs::write(w.path("go"), b""));
    for pid in children {
        let mut status = 0;
        // SAFETY: waits for one child of ours; `status` is writable.
        let got = unsafe { libc::waitpid(pid, &mut status, 0) };
        if got != pid {
            checks.fail(format!("waitpid({pid}): {}", io::Error::last_os_error()));
        } else if !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            checks.fail(format!(
                "member {pid} ended with status {status:#x}: its parent, group or session \
                 moved, or one of its children failed"
            ));
        }
    }
    w.finish(checks)
}

/// The layout: every member's pid, the root's children, the member a refusal names.
fn set_up(kind: &str, go: &CString) -> io::Result<(Vec<i32>, Vec<i32>, i32)> {
    let (report_r, report) = pipe()?;
    let me = sys::getpid();
    let (children, expected) = match kind {
        "child-session" => {
            let c = fork(|| {
                let g = fork(|| member(report, go, &[])).unwrap_or(-1);
                // SAFETY: setsid takes no argument.
                let made = unsafe { libc::setsid() };
                if g < 0 || made < 0 {
                    exit(3);
                }
                member(report, go, &[g])
            })?;
            (vec![c], 2)
        }
        "own-session" => {
            let c = fork(|| {
                // SAFETY: setsid takes no argument.
                if unsafe { libc::setsid() } < 0 {
                    exit(3);
                }
                let g = fork(|| member(report, go, &[])).unwrap_or_else(|_| exit(3));
                member(report, go, &[g])
            })?;
            (vec![c], 2)
        }
        "group-moved" => {
            let a = fork(|| {
                // SAFETY: setpgid takes only integers.
                if unsafe { libc::setpgid(0, 0) } < 0 {
                    exit(3);
                }
                let a1 = fork(|| member(report, go, &[])).unwrap_or_else(|_| exit(3));
                // SAFETY: setpgid takes only integers.
                if unsafe { libc::setpgid(0, me) } < 0 {
                    exit(3);
                }
                member(report, go, &[a1])
            })?;
            (vec![a], 2)
        }
        "sibling-group" => {
            let b = fork(|| {
                // SAFETY: setpgid takes only integers.
                if unsafe { libc::setpgid(0, 0) } < 0 {
                    exit(3);
                }
                member(report, go, &[])
            })?;
            // C joins once B's group exists: B reports after it made it.
            let first = read_pid(report_r)?;
            let c = fork(|| {
                // SAFETY: setpgid takes only integers.
                if unsafe { libc::setpgid(0, b) } < 0 {
                    exit(3);
                }
                member(report, go, &[])
            })?;
            let second = read_pid(report_r)?;
            close(report);
            close(report_r);
            return Ok((vec![first, second], vec![b, c], c));
        }
        "group-gone" => {
            let a = fork(|| {
                let (r, wr) = pipe().unwrap_or_else(|_| exit(3));
                let x = fork(|| {
                    // SAFETY: setpgid takes only integers; write and pause are
                    // async-signal-safe.
                    unsafe {
                        if libc::setpgid(0, 0) < 0 {
                            exit(3);
                        }
                        libc::write(wr, [1u8].as_ptr().cast(), 1);
                        loop {
                            libc::pause();
                        }
                    }
                })
                .unwrap_or_else(|_| exit(3));
                let mut byte = [0u8];
                if sys::read(r, &mut byte).ok() != Some(1) {
                    exit(3);
                }
                let mut status = 0;
                // SAFETY: joins X's group, then ends and reaps X, our child.
                unsafe {
                    if libc::setpgid(0, x) < 0 {
                        exit(3);
                    }
                    libc::kill(x, libc::SIGKILL);
                    libc::waitpid(x, &mut status, 0);
                }
                member(report, go, &[])
            })?;
            (vec![a], 1)
        }
        "session-gone" => {
            // SAFETY: PR_SET_CHILD_SUBREAPER takes an integer flag.
            let ret = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
            sys::check(ret.into())?;
            let x = fork(|| {
                // SAFETY: setsid takes no argument.
                if unsafe { libc::setsid() } < 0 {
                    exit(3);
                }
                fork(|| {
                    // Reparented to the root once X is gone: recorded only then.
                    // SAFETY: getppid cannot fail; nanosleep reads a live timespec.
                    while unsafe { libc::getppid() } != me {
                        nap();
                    }
                    member(report, go, &[])
                })
                .unwrap_or_else(|_| exit(3));
                exit(0)
            })?;
            let mut status = 0;
            // SAFETY: reaps X, our child.
            unsafe { libc::waitpid(x, &mut status, 0) };
            let m = read_pid(report_r)?;
            close(report);
            close(report_r);
            return Ok((vec![m], vec![m], m));
        }
        other => {
            return Err(io::Error::other(format!(
                "unknown layout {other:?}: see the module documentation"
            )))
        }
    };
    close(report);
    let mut members = Vec::new();
    for _ in 0..expected {
        members.push(read_pid(report_r)?);
    }
    close(report_r);
    let refused = *members.last().unwrap_or(&me);
    Ok((members, children, refused))
}

/// A member: records where it is, reports its pid, waits for `go`, checks, reaps `kids`.
fn member(report: i32, go: &CString, kids: &[i32]) -> ! {
    let before = ids();
    let pid = sys::getpid();
    // SAFETY: write reads 4 live bytes.
    unsafe { libc::write(report, pid.to_ne_bytes().as_ptr().cast(), 4) };
    // SAFETY: `go` is a valid NUL-terminated path.
    while unsafe { libc::access(go.as_ptr(), libc::F_OK) } != 0 {
        nap();
    }
    let mut code = i32::from(ids() != before);
    for &k in kids {
        let mut status = 0;
        // SAFETY: waits for one child of ours; `status` is writable.
        let got = unsafe { libc::waitpid(k, &mut status, 0) };
        if got != k || !(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0) {
            code = 2;
        }
    }
    exit(code)
}

fn ids() -> (i32, i32, i32) {
    // SAFETY: getppid, getpgid(0) and getsid(0) ask about the caller and cannot fail.
    unsafe { (libc::getppid(), libc::getpgid(0), libc::getsid(0)) }
}

fn nap() {
    let ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 10_000_000,
    };
    // SAFETY: `ts` is a valid timespec; no remainder is asked for.
    unsafe { libc::nanosleep(&ts, std::ptr::null_mut()) };
}

fn fork(body: impl FnOnce() -> i32) -> io::Result<i32> {
    // SAFETY: the workload is single-threaded when it forks; the child makes only
    // async-signal-safe calls and never returns into the parent's code.
    let pid = unsafe { libc::fork() };
    match pid {
        -1 => Err(io::Error::last_os_error()),
        0 => exit(body()),
        child => Ok(child),
    }
}

fn exit(code: i32) -> ! {
    // SAFETY: _exit ends the process at once.
    unsafe { libc::_exit(code) }
}

fn pipe() -> io::Result<(i32, i32)> {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two descriptors into `fds`, a live [i32; 2].
    sys::check(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }.into())?;
    Ok((fds[0], fds[1]))
}

fn read_pid(fd: i32) -> io::Result<i32> {
    let mut buf = [0u8; 4];
    match sys::read(fd, &mut buf)? {
        4 => Ok(i32::from_ne_bytes(buf)),
        n => Err(io::Error::other(format!(
            "a member reported {n} bytes, not a pid (it failed to set up)"
        ))),
    }
}

fn close(fd: i32) {
    // SAFETY: closes a descriptor this process owns and no longer uses.
    unsafe { libc::close(fd) };
}
