//! Unix sockets: the pairs the engine restores exactly (the `sockets` workload checks its
//! queues, boundaries, shutdown state, options, labels and peer credentials itself after the
//! restore, also as another user), the restore's read-back of peer credentials, and the
//! sockets it refuses at dump, by name, with the workload running on afterwards with the
//! refused state still in place.
//!
//! Needs root (the tests fail, not skip, without it). SELinux labels are compared by the
//! workload only where SELinux is on (the lab's VM); here the label path is not exercised.

mod support;

use std::ffi::OsString;

use rstest::rstest;

use crlab::image::schema::{file_entry, FileTable};

use crlab::failpoint;
use support::process::{self, Exit};
use support::protocol::WaitMode;
use support::rewrite::rewrite_dump;
use support::workload::{assert_refusal_names, reap_dumped_child, Identity, Workload};

/// Pairs of each type with queued data both ways, a shut-down pair, options and flags
/// (`pairs`); listeners at a path and an abstract name with a connection accepted on each
/// (`listeners`); a pair and an accepted connection between a process and its child
/// (`children`).
#[rstest]
#[case::pairs("pairs", 10)]
#[case::listeners("listeners", 6)]
#[case::children("children", 5)]
fn unix_sockets_are_restored_exactly(#[case] kind: &str, #[case] ends: usize) {
    let mut w = Workload::start("sockets", WaitMode::Nanosleep, &[kind]);
    let child: Option<i32> = w
        .wait_ready()
        .get("child-pid")
        .map(|p| p.parse().expect("child-pid is a pid"));
    w.wait_in_wait_syscall();
    w.dump_ok(&[]);
    w.reap_dumped_original();
    if let Some(child) = child {
        reap_dumped_child(child);
    }
    // `crlab show` renders every socket (`pairs`: three typed pairs, the shut pair, the
    // options pair; `listeners`: two listeners, two connections), with their queues.
    let json = w.show_json();
    let mut sockets = Vec::new();
    collect(&json, "unixSocket", &mut sockets);
    assert_eq!(sockets.len(), ends, "{sockets:?}");
    assert!(
        sockets
            .iter()
            .any(|s| s["queue"].as_array().is_some_and(|q| q.len() == 4)),
        "a datagram end with its four messages: {sockets:?}"
    );
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

/// Unix sockets neither connected nor listening (`bound`): datagram sockets bound to a path
/// and to an abstract name, a datagram client connected to the path one, an unbound sender,
/// a stream socket bound but not listening. The images hold the five, the client as
/// connected to the path one; after the restore the workload checks their names, labels,
/// empty queues, and datagrams and a connection going through. Before, the dump refused
/// them ("bound to ... and not connected").
#[test]
fn unix_sockets_alone_are_restored_exactly() {
    let (mut w, sockets) = dumped("bound", "unixSocket");
    assert_eq!(sockets.len(), 5, "{sockets:?}");
    let inos: Vec<&serde_json::Value> = sockets.iter().map(|s| &s["ino"]).collect();
    let connected: Vec<&serde_json::Value> = sockets
        .iter()
        .filter(|s| s.get("connectedTo").is_some_and(|c| c != 0 && c != "0"))
        .collect();
    assert_eq!(
        connected.len(),
        1,
        "one client connected to a bound one: {sockets:?}"
    );
    assert!(
        inos.contains(&&connected[0]["connectedTo"]),
        "the client is connected to a socket of the images: {sockets:?}"
    );
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

/// Who the `peercred` workload runs as: not root, with supplementary groups.
const NOT_ROOT: Identity = Identity {
    uid: 4242,
    gid: 4343,
    groups: &[4343, 4444],
};

/// A workload of another user (`peercred`): the peer credentials (`SO_PEERCRED`,
/// `SO_PEERGROUPS`) of both ends of a pair it made (one end also its child's), of its
/// listener, of a pair its child made (one end passed to it), of a connection its child made
/// and it accepted, and of the child's client end, are after the restore what they were:
/// the maker's pid, the user's uid, gid and groups (the workload and its child check them).
/// The images record them.
#[test]
fn peer_credentials_of_another_user_are_restored() {
    let mut w = Workload::start_as("sockets", WaitMode::Nanosleep, &["peercred"], NOT_ROOT);
    let child: i32 = w
        .wait_ready()
        .get("child-pid")
        .expect("the child's pid")
        .parse()
        .expect("child-pid is a pid");
    let parent = w.pid();
    w.wait_in_wait_syscall();
    w.dump_ok(&[]);
    w.reap_dumped_original();
    reap_dumped_child(child);
    let json = w.show_json();
    let mut creds = Vec::new();
    collect(&json, "peerCred", &mut creds);
    // The pair (2), the listener, the child's pair (2), the connection (2).
    assert_eq!(creds.len(), 7, "{creds:?}");
    let mut pids: Vec<i64> = creds.iter().filter_map(|c| c["pid"].as_i64()).collect();
    pids.sort_unstable();
    let mut want = vec![i64::from(parent); 4];
    want.extend([i64::from(child); 3]);
    want.sort_unstable();
    assert_eq!(pids, want, "the makers' pids: {creds:?}");
    for c in &creds {
        assert_eq!(c["uid"], 4242, "{c}");
        assert_eq!(c["gid"], 4343, "{c}");
        assert_eq!(c["groups"], serde_json::json!([4343, 4444]), "{c}");
    }
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

/// A root process's pair made while its thread's effective ids were 4242/4343 with group
/// 4444 (`peercred-switched`): the restore gives it those peer credentials, not the
/// process's own (root's), which it has again after the restore.
#[test]
fn peer_credentials_are_the_makers_at_the_call_not_the_process_now() {
    let mut w = Workload::start("sockets", WaitMode::Nanosleep, &["peercred-switched"]);
    w.wait_ready();
    w.wait_in_wait_syscall();
    w.dump_ok(&[]);
    w.reap_dumped_original();
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

/// The restore reads every socket's peer credentials back and fails, naming the socket, when
/// they are not the image's: here a pair end's uid changed in the images (one call makes both
/// ends, so they cannot differ). Nothing is left behind, and the untouched dump restores.
#[test]
fn restore_fails_by_name_when_peer_credentials_come_back_otherwise() {
    let mut w = Workload::start("sockets", WaitMode::Nanosleep, &["pairs"]);
    w.wait_ready();
    w.wait_in_wait_syscall();
    w.dump_ok(&[]);
    w.reap_dumped_original();
    let images = w.images_dir();
    let doctored = w.scratch_dir().join("doctored");
    let mut ino = 0;
    let edit = |table: &mut FileTable| {
        let end = table
            .files
            .iter_mut()
            .filter_map(|f| match &mut f.kind {
                Some(file_entry::Kind::UnixSocket(s)) => Some(s),
                _ => None,
            })
            .max_by_key(|s| s.ino)
            .expect("a Unix socket in the images");
        end.peer_cred.as_mut().expect("peer credentials").uid = 4242;
        ino = end.ino;
    };
    rewrite_dump(&images, &doctored, edit, |_, _| {});
    let args: Vec<OsString> = vec![
        "restore".into(),
        "--detach".into(),
        "--images-dir".into(),
        doctored.into(),
    ];
    let run = w.crlab(&args);
    let (exit, err) = (run.exit, run.stderr());
    assert_eq!(exit, Some(Exit::Code(1)), "{err}");
    for words in [
        format!("the Unix socket of inode {ino} has the peer credentials pid "),
        ", uid 0, gid 0, groups [] after the restore, not pid ".to_owned(),
        ", uid 4242, gid 0, groups [] as dumped".to_owned(),
    ] {
        assert!(err.contains(&words), "{words:?} in {err}");
    }
    assert!(!process::pid_exists(w.pid()), "nothing was left behind");
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

/// TCP listeners on 127.0.0.1, ::1 and the IPv6 wildcard with their options and backlogs
/// (`inet-listeners`: a new client accepted on each after the restore); UDP sockets bound,
/// connected and unbound (`udp`: datagrams round-trip after the restore).
#[rstest]
#[case::tcp_listeners("inet-listeners", 3, &[5, 9, 3])]
#[case::udp("udp", 5, &[])]
fn tcp_listeners_and_udp_sockets_are_restored_exactly(
    #[case] kind: &str,
    #[case] count: usize,
    #[case] backlogs: &[u64],
) {
    let (mut w, sockets) = dumped(kind, "inetSocket");
    assert_eq!(sockets.len(), count, "{sockets:?}");
    let mut found: Vec<u64> = sockets
        .iter()
        .filter_map(|s| s["backlog"].as_u64())
        .collect();
    let mut want = backlogs.to_vec();
    found.sort_unstable();
    want.sort_unstable();
    assert_eq!(found, want, "the listeners' backlogs: {sockets:?}");
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

/// Established TCP connections over 127.0.0.1, over ::1 and from an IPv4 client to a
/// dual-stack IPv6 listener (IPv4-mapped addresses), both ends and their listener in the
/// process, with data queued unread both ways (`tcp-connections`): read in repair mode
/// (`TCP_REPAIR`), made again in repair mode; the workload finds its queued data whole and in
/// order, new data flowing both ways, the same names and options.
#[test]
fn established_tcp_connections_are_restored_with_tcp_repair() {
    let (mut w, tcp) = dumped("tcp-connections", "tcp");
    assert_eq!(tcp.len(), 6, "three connections, two ends each: {tcp:?}");
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

/// A dump of established TCP connections that fails after reading them (at the last
/// failpoint of the process) leaves them out of repair mode: the workload runs on and finds
/// its connections as they were, and a dump that leaves the tree running does too.
#[test]
fn a_failed_or_leave_running_dump_leaves_tcp_connections_working() {
    let mut w = Workload::start("sockets", WaitMode::Nanosleep, &["tcp-connections"]);
    w.wait_ready();
    w.wait_in_wait_syscall();
    let run = w.dump_with_env(&[], &[(failpoint::ENV, "dump.proc.exe")]);
    assert!(!run.succeeded(), "the dump must fail at dump.proc.exe");
    assert!(
        run.stderr().contains("injected failure at dump.proc.exe"),
        "{}",
        run.stderr()
    );
    w.assert_running("a dump failed after reading its TCP connections");
    w.wait_in_wait_syscall();
    w.dump_ok(&["--leave-running"]);
    w.assert_running("a dump that leaves it running");
    w.wait_in_wait_syscall();
    w.trigger();
    w.expect_ok();
}

/// A dump run without `CAP_NET_ADMIN` (dropped from its bounding set before it starts, so
/// root's exec does not get it) refuses an established TCP connection by name, saying what
/// it lacks; the workload runs on with its connections as they were.
#[test]
fn a_dump_without_cap_net_admin_refuses_tcp_connections() {
    use std::os::unix::process::CommandExt;
    let mut w = Workload::start("sockets", WaitMode::Nanosleep, &["tcp-connections"]);
    w.wait_ready();
    w.wait_in_wait_syscall();
    let mut cmd = std::process::Command::new(support::binaries::crlab());
    cmd.arg("dump")
        .arg("--tree")
        .arg(w.pid().to_string())
        .arg("--images-dir")
        .arg(w.images_dir());
    // SAFETY: prctl takes only integers; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            // CAP_NET_ADMIN is capability 12.
            if libc::prctl(libc::PR_CAPBSET_DROP, 12, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let out = cmd.output().expect("running crlab dump");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "the dump must be refused: {stderr}");
    assert!(
        stderr.contains("an established TCP connection (127.0.0.1:")
            && stderr.contains("which needs CAP_NET_ADMIN for TCP_REPAIR"),
        "{stderr}"
    );
    w.assert_running("a dump refused for lack of CAP_NET_ADMIN");
    w.trigger();
    w.expect_ok();
}

/// Zero-length datagrams at the end of a queue shut for reading, a run of zero-length
/// records followed by one with bytes in a queue shut for reading, and a zero-length
/// datagram first in a queue that the process peeked (marked peeked by the kernel, passed
/// by a walk at offsets): each queue kept whole, in order (`empty-messages`).
#[test]
fn zero_length_messages_are_kept_in_place() {
    let (mut w, sockets) = dumped("empty-messages", "unixSocket");
    let mut lens: Vec<usize> = sockets
        .iter()
        .filter_map(|s| s["queue"].as_array().map(Vec::len))
        .collect();
    lens.sort_unstable();
    assert_eq!(lens, [3, 4, 5], "the three queues, whole: {sockets:?}");
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

/// Options beyond the usual ones, kept and set again (`options`): `SO_MARK`, `SO_PRIORITY`,
/// `SO_RCVLOWAT`, `SO_PASSRIGHTS` on a Unix socket; `TCP_CONGESTION` (an algorithm other
/// than the default), `SO_MARK`, `SO_PRIORITY`, `IP_TOS`, `SO_LINGER`, `TCP_DEFER_ACCEPT`,
/// `TCP_USER_TIMEOUT`, `IP_FREEBIND`, `TCP_MAXSEG` on a TCP listener; `SO_MARK`,
/// `SO_PRIORITY`, `SO_TIMESTAMP`, `IP_RECVTOS`, `IPV6_RECVPKTINFO`, `IPV6_TCLASS` on UDP
/// sockets. The workload reads each back after the restore.
#[test]
fn other_socket_options_are_restored() {
    let (mut w, options) = dumped("options", "options");
    // SO_MARK (36) on the Unix socket, the listener and the IPv4 UDP socket.
    let marks = options
        .iter()
        .filter_map(|o| o.as_array())
        .flatten()
        .filter(|o| o["level"] == 1 && o["name"] == 36)
        .count();
    assert_eq!(marks, 3, "{options:?}");
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

/// A named pipe opened twice (reader and writer) with bytes buffered: reopened by its path,
/// its buffer refilled once (`fifo`).
#[test]
fn a_named_pipe_is_reopened_with_its_buffer() {
    let (mut w, fifos) = dumped("fifo", "fifo");
    assert_eq!(fifos.len(), 2, "{fifos:?}");
    assert_eq!(
        fifos.iter().filter(|f| f["data"].is_string()).count(),
        1,
        "the buffer is kept once: {fifos:?}"
    );
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}

/// Every value under key `key`, anywhere in `v`.
/// Starts the `sockets` workload of `kind`, dumps it (which kills it) and returns it with
/// every value named `key` in the images as `crlab show` renders them.
fn dumped(kind: &str, key: &str) -> (Workload, Vec<serde_json::Value>) {
    let mut w = Workload::start("sockets", WaitMode::Nanosleep, &[kind]);
    w.wait_ready();
    w.wait_in_wait_syscall();
    w.dump_ok(&[]);
    w.reap_dumped_original();
    let json = w.show_json();
    let mut found = Vec::new();
    collect(&json, key, &mut found);
    let found = found.into_iter().cloned().collect();
    (w, found)
}

fn collect<'a>(v: &'a serde_json::Value, key: &str, out: &mut Vec<&'a serde_json::Value>) {
    match v {
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                if k == key {
                    out.push(x);
                }
                collect(x, key, out);
            }
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect(x, key, out)),
        _ => {}
    }
}

/// Each socket the restore would not give back is refused at dump, named with the process
/// and the descriptor; the workload runs on and finds the state still in place.
#[rstest]
#[case::peer_outside(
    "outside",
    &["a Unix socket connected to a process outside the dump (peer inode"]
)]
#[case::peercred_exited(
    "peercred-exited",
    &["a Unix socket whose peer credentials (pid ", ", uid 0, gid 0, groups [", "which made it and has exited (socket:["]
)]
#[case::peercred_reused(
    "peercred-reused",
    &["a Unix socket whose peer credentials (pid ", "which made it and has exited: pid ", "is now another process of the tree"]
)]
#[case::peercred_relisten(
    "peercred-relisten",
    &["a Unix socket whose peer credentials (pid ", ", uid 0, gid 0, groups [", "differ from those of its listener (socket:[", ", uid 4242, gid 0", "which one call cannot make again"]
)]
#[case::scm_rights("scm-rights", &["SCM_RIGHTS", "in flight"])]
#[case::passcred("passcred", &["SCM_CREDENTIALS", "in flight"])]
#[case::tcp_outside(
    "tcp-outside",
    &["an established TCP connection (127.0.0.1:", "-> 127.0.0.1:", "whose peer is outside the dumped tree", "no network lock", "answered with a reset"]
)]
#[case::tcp_unsent(
    "tcp-unsent",
    &["an established TCP connection (127.0.0.1:", "bytes not sent yet (its peer's window is full)"]
)]
#[case::tcp_pending("tcp-pending", &["a TCP listener on 127.0.0.1:", "1 connection(s) not accepted yet (pending)"])]
#[case::netlink("netlink", &["a netlink socket", "TCP listeners and UDP sockets only"])]
#[case::fifo_deleted("fifo-deleted", &["a named pipe (FIFO) whose path was removed"])]
#[case::fifo_outside("fifo-outside", &["also open in process", "outside the dump"])]
#[case::bound_outside("bound-outside", &["a Unix datagram socket bound to", "bound-outside.sock", "a socket outside the dump is connected"])]
#[case::pair_disconnected("pair-disconnected", &["a Unix datagram socket made by socketpair", "disconnected or connected elsewhere since"])]
#[case::bound_queued("bound-queued", &["a Unix datagram socket bound to", "bound-queued.sock", "with datagrams queued from senders that are not a pair's other end"])]
#[case::udp_queued("udp-queued", &["a UDP socket on 127.0.0.1:", "with datagrams queued"])]
#[case::tcp_close_wait("tcp-close-wait", &["a TCP socket in state CLOSE_WAIT (127.0.0.1:"])]
#[case::udp_bindtodevice("udp-bindtodevice", &["a UDP socket on 127.0.0.1:", "SO_BINDTODEVICE"])]
#[case::udp_multicast("udp-multicast", &["a UDP socket on *:", "joined multicast group 239.0.0.10"])]
#[case::pending("pending", &["not accepted yet", "pending"])]
#[case::oob("oob", &["out-of-band data (MSG_OOB)"])]
#[case::tcp_md5("tcp-md5", &["a TCP socket on 127.0.0.1:", "with TCP_MD5SIG keys"])]
#[case::udp_error("udp-error", &["a UDP socket on 127.0.0.1:", "with an error pending"])]
#[case::unix_filter("unix-filter", &["a Unix socket with a socket filter attached"])]
#[case::empty_at_end(
    "empty-at-end",
    &["a Unix seqpacket socket with zero-length records in its queue that the dump cannot place", "shut for reading"]
)]
#[case::empty_peeked(
    "empty-peeked",
    &["a Unix datagram socket with zero-length datagrams in its queue that the dump cannot place", "already peeked"]
)]
fn dump_refuses_sockets_it_does_not_restore(#[case] kind: &str, #[case] words: &[&str]) {
    let mut w = Workload::start("sockets", WaitMode::Nanosleep, &[kind]);
    let ready = w.wait_ready();
    let holder = ready
        .get("refused-pid")
        .expect("the holder's pid")
        .to_owned();
    let fd = ready.get("refused-fd").expect("the descriptor").to_owned();
    w.wait_in_wait_syscall();
    let stderr = w.dump_refused(kind);
    w.trigger();
    w.expect_ok();
    assert_refusal_names(&stderr, words, &[("process", &holder), ("fd", &fd)]);
}

/// The two failpoints only sockets reach (`engine_failpoints` runs on workloads without
/// any): a dump failing at `dump.sock_diag` leaves the workload running, a restore failing at
/// `restore.files.socket` leaves nothing behind and the same images then restore.
#[test]
fn socket_failpoints_fail_their_step_cleanly() {
    let mut w = Workload::start("sockets", WaitMode::Nanosleep, &["pairs"]);
    w.wait_ready();
    w.wait_in_wait_syscall();
    let pid = w.pid();
    let run = w.dump_with_env(&[], &[(failpoint::ENV, "dump.sock_diag")]);
    assert!(!run.succeeded(), "the dump must fail at dump.sock_diag");
    let stderr = run.stderr();
    assert!(
        stderr.contains("injected failure at dump.sock_diag"),
        "{stderr}"
    );
    w.assert_running("a dump failed at dump.sock_diag");

    // Back in its own sleep (not in the kernel's restart of it) before the next dump.
    w.wait_in_wait_syscall();
    w.dump_ok(&[]);
    w.reap_dumped_original();
    let pidfile = w.pidfile();
    let args = [
        "--detach",
        "--pidfile",
        pidfile.to_str().expect("utf-8 path"),
    ];
    let run = w.restore_with_env(&args, &[(failpoint::ENV, "restore.files.socket")]);
    assert!(
        !run.succeeded(),
        "the restore must fail at restore.files.socket"
    );
    let stderr = run.stderr();
    assert!(
        stderr.contains("injected failure at restore.files.socket"),
        "{stderr}"
    );
    process::wait_until(
        support::workload::READY_TIMEOUT,
        format!("pid {pid} to be gone after the failed restore"),
        || !std::path::Path::new(&format!("/proc/{pid}")).exists(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    assert!(!pidfile.exists(), "a failed restore writes no pid file");
    w.restore_detached_ok();
    w.trigger();
    w.expect_ok();
}
