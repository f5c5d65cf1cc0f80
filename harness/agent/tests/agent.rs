//! The real `crlab-agent` binary driven over a UNIX socket (`--connect`), on a host without
//! SELinux and without a VM: every request kind, bad frames, and that it keeps serving.

use std::{
    io::Write,
    os::unix::net::{UnixListener, UnixStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use crlab_protocol::frame::{read_frame, write_frame, MAX_FRAME};
use crlab_protocol::{
    AuditSince, CommandResult, Hello, PowerOff, ReadFile, Reexec, Request, RequestKind, Response,
    ResponseKind, RunCommand, UnitAction, WriteFile,
};
use prost::Message;
use rstest::rstest;
use sha2::{Digest, Sha256};

const AGENT: &str = env!("CARGO_BIN_EXE_crlab-agent");
const REPLY_DEADLINE: Duration = Duration::from_secs(30);

/// One agent process on one socket, killed and reaped when dropped.
struct Agent {
    child: Option<Child>,
    stream: UnixStream,
    next_id: u64,
    dir: tempfile::TempDir,
}

impl Agent {
    fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts the agent with `--audit-log DIR/audit.log --poweroff-exits` and `extra`.
    fn start_with(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let socket = dir.path().join("channel.sock");
        let listener = UnixListener::bind(&socket).expect("binding the channel socket");
        let log =
            std::fs::File::create(dir.path().join("agent.log")).expect("creating the agent log");
        let child = Command::new(AGENT)
            .arg("--connect")
            .arg(&socket)
            .arg("--audit-log")
            .arg(dir.path().join("audit.log"))
            .arg("--poweroff-exits")
            .args(extra)
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .expect("starting crlab-agent");
        let (stream, _) = listener.accept().expect("the agent connecting");
        stream
            .set_read_timeout(Some(REPLY_DEADLINE))
            .expect("setting the reply deadline");
        Self {
            child: Some(child),
            stream,
            next_id: 1,
            dir,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().expect("the agent still running").id()
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).expect("writing to the agent");
    }

    fn receive(&mut self) -> Response {
        let frame = read_frame(&mut self.stream).unwrap_or_else(|e| {
            panic!(
                "no response within {REPLY_DEADLINE:?}: {e}\nagent log:\n{}",
                self.log()
            )
        });
        Response::decode(frame.as_slice()).expect("a Response")
    }

    fn request(&mut self, kind: RequestKind) -> Response {
        let id = self.next_id;
        self.next_id += 1;
        let request = Request {
            id,
            kind: Some(kind),
        };
        write_frame(&mut self.stream, &request.encode_to_vec()).expect("sending a request");
        let response = self.receive();
        assert_eq!(response.id, id, "{response:?}");
        response
    }

    fn ok(&mut self, kind: RequestKind) -> Option<ResponseKind> {
        let response = self.request(kind);
        assert_eq!(response.error, "", "agent log:\n{}", self.log());
        response.kind
    }

    fn run(&mut self, run: RunCommand) -> CommandResult {
        match self.ok(RequestKind::Run(run)) {
            Some(ResponseKind::Run(r)) => r,
            other => panic!("{other:?}"),
        }
    }

    fn hello(&mut self) -> crlab_protocol::HelloReply {
        match self.ok(RequestKind::Hello(Hello {})) {
            Some(ResponseKind::Hello(h)) => h,
            other => panic!("{other:?}"),
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.path("agent.log")).unwrap_or_default()
    }

    /// Waits (bounded) for the agent to exit on its own and returns its status code.
    fn exit_code(&mut self) -> Option<i32> {
        let mut child = self.child.take().expect("the agent still running");
        wait_until(Duration::from_secs(10), "the agent to exit", || {
            child.try_wait().expect("waiting for the agent").is_some()
        });
        child.wait().expect("reaping the agent").code()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("agent log:\n{}", self.log());
        }
    }
}

fn wait_until(deadline: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !done() {
        assert!(Instant::now() < end, "waited {deadline:?} for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Gone or a zombie: either way it no longer runs (who reaps it is another question).
fn not_running(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| {
            stat.rsplit_once(") ")
                .is_some_and(|(_, rest)| rest.starts_with('Z'))
        })
        .unwrap_or(true)
}

fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

fn argv(args: &[&str]) -> Vec<String> {
    args.iter().map(|a| (*a).to_owned()).collect()
}

#[test]
fn hello_says_who_and_where() {
    let mut agent = Agent::start();
    std::fs::write(
        agent.path("audit.log"),
        "type=DAEMON_START msg=audit(1.2:3): op=start\n",
    )
    .unwrap();
    let hello = agent.hello();
    assert_eq!(hello.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(
        hello.selinux_mode,
        if Path::new("/sys/fs/selinux/enforce").exists() {
            hello.selinux_mode.as_str()
        } else {
            "disabled"
        }
    );
    assert_eq!(
        hello.kernel,
        nix::sys::utsname::uname()
            .unwrap()
            .release()
            .to_str()
            .unwrap()
    );
    let binary = std::fs::read(AGENT).unwrap();
    let hex = format!("{:x}", Sha256::digest(&binary));
    assert_eq!(hello.agent_sha256, hex);
    assert_eq!(
        hello.audit_marker,
        std::fs::metadata(agent.path("audit.log")).unwrap().len()
    );
    if hello.selinux_mode == "disabled" {
        assert!(hello.policy_modules.is_empty());
    }
}

#[rstest]
#[case::exit_code(&["sh", "-c", "exit 3"], &[], "", 3, "", "")]
#[case::stdout_and_stderr(&["sh", "-c", "echo out; echo err >&2"], &[], "", 0, "out\n", "err\n")]
#[case::clean_env_plus_given(&["env"], &["FOO=bar=baz"], "", 0, "FOO=bar=baz\nPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\n", "")]
#[case::path_can_be_replaced(&["sh", "-c", "echo $PATH"], &["PATH=/bin"], "", 0, "/bin\n", "")]
#[case::cwd(&["pwd"], &[], "/usr", 0, "/usr\n", "")]
#[case::default_cwd_is_root(&["pwd"], &[], "", 0, "/\n", "")]
#[case::stdin_is_empty(&["cat"], &[], "", 0, "", "")]
fn runs_commands(
    #[case] args: &[&str],
    #[case] env: &[&str],
    #[case] cwd: &str,
    #[case] exit_code: i32,
    #[case] stdout: &str,
    #[case] stderr: &str,
) {
    let mut agent = Agent::start();
    let r = agent.run(RunCommand {
        argv: argv(args),
        env: argv(env),
        cwd: cwd.to_owned(),
        ..RunCommand::default()
    });
    assert_eq!(
        (r.exit_code, r.signal, r.timed_out),
        (exit_code, 0, false),
        "{r:?}"
    );
    assert_eq!(String::from_utf8_lossy(&r.stdout), stdout);
    assert_eq!(String::from_utf8_lossy(&r.stderr), stderr);
    assert!(r.pid > 0);
}

#[test]
fn runs_each_command_in_its_own_session() {
    let mut agent = Agent::start();
    let r = agent.run(RunCommand {
        argv: argv(&["sh", "-c", "echo $$; cut -d' ' -f5,6 /proc/$$/stat"]),
        ..RunCommand::default()
    });
    let out = String::from_utf8(r.stdout).unwrap();
    let ids: Vec<&str> = out.split_whitespace().collect();
    assert_eq!(ids.len(), 3, "{out}");
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "pid, pgid and sid differ: {out}"
    );
}

#[test]
fn a_signal_gives_exit_code_minus_one() {
    let mut agent = Agent::start();
    let r = agent.run(RunCommand {
        argv: argv(&["sh", "-c", "kill -TERM $$"]),
        ..RunCommand::default()
    });
    assert_eq!((r.exit_code, r.signal, r.timed_out), (-1, 15, false));
}

#[test]
fn keeps_a_mebibyte_of_output_and_says_it_was_truncated() {
    let mut agent = Agent::start();
    let r = agent.run(RunCommand {
        argv: argv(&["head", "-c", "3000000", "/dev/zero"]),
        ..RunCommand::default()
    });
    assert_eq!(r.exit_code, 0);
    assert_eq!(r.stdout.len(), (1 << 20) + b"\n[truncated]\n".len());
    assert!(r.stdout.ends_with(b"\0\n[truncated]\n"));
}

#[test]
fn a_deadline_kills_the_whole_group() {
    let mut agent = Agent::start();
    let started = Instant::now();
    let r = agent.run(RunCommand {
        argv: argv(&["sh", "-c", "sleep 100 & echo $!; wait"]),
        timeout_ms: 500,
        ..RunCommand::default()
    });
    assert!(r.timed_out, "{r:?}");
    assert_eq!((r.exit_code, r.signal), (-1, 9));
    assert!(started.elapsed() < Duration::from_secs(10));
    let sleeper: u32 = String::from_utf8(r.stdout).unwrap().trim().parse().unwrap();
    wait_until(Duration::from_secs(5), "the group's sleep to die", || {
        not_running(sleeper)
    });
    // The agent still serves.
    agent.hello();
}

#[test]
fn background_commands_return_at_once_append_output_and_are_reaped() {
    let mut agent = Agent::start();
    let out = agent.path("logs/bg.out");
    std::fs::create_dir_all(out.parent().unwrap()).unwrap();
    std::fs::write(&out, "before\n").unwrap();
    let started = Instant::now();
    let r = agent.run(RunCommand {
        argv: argv(&["sh", "-c", "echo hi; echo err >&2; sleep 0.3"]),
        background: true,
        stdout_path: out.display().to_string(),
        ..RunCommand::default()
    });
    assert!(started.elapsed() < Duration::from_millis(300), "{r:?}");
    assert!(r.pid > 0);
    assert!(!r.timed_out);
    // Reaped by the agent: not even a zombie is left.
    wait_until(
        Duration::from_secs(10),
        "the background command to be reaped",
        || gone(r.pid),
    );
    assert_eq!(std::fs::read_to_string(&out).unwrap(), "before\nhi\nerr\n");
}

#[test]
fn a_context_on_a_host_without_selinux_is_a_clear_error() {
    if Path::new("/sys/fs/selinux/enforce").exists() {
        eprintln!("skipped: this host has SELinux (the VM suite tests contexts)");
        return;
    }
    let mut agent = Agent::start();
    let response = agent.request(RequestKind::Run(RunCommand {
        argv: argv(&["true"]),
        context: "system_u:system_r:container_t:s0:c1,c2".to_owned(),
        ..RunCommand::default()
    }));
    assert!(
        response
            .error
            .starts_with("setexeccon(\"system_u:system_r:container_t:s0:c1,c2\"): E"),
        "{}",
        response.error
    );
    assert_eq!(response.kind, None);
    agent.hello();
}

#[rstest]
#[case::empty_argv(&[], &[], "", "the command has an empty argv")]
#[case::missing_program(&["/nonexistent/program"], &[], "", "starting /nonexistent/program: No such file or directory")]
#[case::bad_env(&["true"], &["NOEQUALS"], "", "environment entry \"NOEQUALS\" is not KEY=VALUE")]
#[case::missing_cwd(&["true"], &[], "/nonexistent/dir", "working directory /nonexistent/dir is not a directory: No such file")]
fn command_errors_say_what_failed(
    #[case] args: &[&str],
    #[case] env: &[&str],
    #[case] cwd: &str,
    #[case] want: &str,
) {
    let mut agent = Agent::start();
    let response = agent.request(RequestKind::Run(RunCommand {
        argv: argv(args),
        env: argv(env),
        cwd: cwd.to_owned(),
        ..RunCommand::default()
    }));
    assert!(response.error.starts_with(want), "{}", response.error);
}

#[test]
fn files_round_trip_with_parents_mode_and_append() {
    use std::os::unix::fs::PermissionsExt;
    let mut agent = Agent::start();
    let path = agent.path("a/b/c.bin").display().to_string();
    let write = |data: &[u8], append| {
        RequestKind::WriteFile(WriteFile {
            path: path.clone(),
            data: data.to_vec(),
            append,
            mode: 0o750,
        })
    };
    assert!(matches!(
        agent.ok(write(b"one\0", false)),
        Some(ResponseKind::Done(_))
    ));
    agent.ok(write(b"two", true));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o7777, 0o750);
    match agent.ok(RequestKind::ReadFile(ReadFile { path: path.clone() })) {
        Some(ResponseKind::File(f)) => assert_eq!(f.data, b"one\0two"),
        other => panic!("{other:?}"),
    }
    agent.ok(write(b"new", false));
    assert_eq!(std::fs::read(&path).unwrap(), b"new");
    let missing = agent.request(RequestKind::ReadFile(ReadFile {
        path: "/nonexistent/file".into(),
    }));
    assert_eq!(
        missing.error,
        "reading /nonexistent/file: No such file or directory (os error 2)"
    );
    let nameless = agent.request(RequestKind::WriteFile(WriteFile::default()));
    assert_eq!(nameless.error, "the path is empty");
}

#[test]
fn the_agent_prepares_a_tree_and_kills_what_runs_from_it_itself() {
    use crlab_protocol::{file_op::Op, FileOp, FileOps, KillUnder, WaitGone};
    let mut agent = Agent::start();
    let dir = agent.path("trial").display().to_string();
    let op = |op| FileOp { op: Some(op) };
    let ops = |list: Vec<Op>| {
        RequestKind::FileOps(FileOps {
            ops: list.into_iter().map(op).collect(),
        })
    };
    agent.ok(ops(vec![
        Op::Remove(dir.clone()),
        Op::MakeDirs(format!("{dir}/state")),
        Op::Copy(crlab_protocol::Copy {
            from: "/bin/sleep".into(),
            to: format!("{dir}/sleep"),
        }),
    ]));
    // A background child of the agent runs from the tree; the agent reaps it once killed.
    let sleeper = agent.run(RunCommand {
        argv: argv(&[&format!("{dir}/sleep"), "30"]),
        background: true,
        ..RunCommand::default()
    });
    let killed = match agent.ok(RequestKind::KillUnder(KillUnder {
        dir: dir.clone(),
        timeout_ms: 0,
    })) {
        Some(ResponseKind::Killed(k)) => k.pids,
        other => panic!("{other:?}"),
    };
    assert_eq!(killed, [sleeper.pid]);
    assert!(not_running(sleeper.pid));
    agent.ok(RequestKind::WaitGone(WaitGone {
        pids: vec![sleeper.pid],
        timeout_ms: 0,
    }));
    assert!(gone(sleeper.pid));
    // The agent is not among what it kills, and a failure names the operation and the path.
    let failed = agent.request(ops(vec![Op::MakeDirs(format!("{dir}/sleep/x"))]));
    assert!(
        failed.error.starts_with(&format!(
            "making the directory {dir}/sleep/x and its parents: "
        )),
        "{}",
        failed.error
    );
    let refused = agent.request(RequestKind::KillUnder(KillUnder {
        dir: "/".into(),
        timeout_ms: 0,
    }));
    assert!(
        refused.error.contains("must be absolute and not /"),
        "{}",
        refused.error
    );
    agent.hello();
}

#[test]
fn reading_a_file_too_large_for_a_frame_is_an_error() {
    let mut agent = Agent::start();
    let big = agent.path("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(u64::from(MAX_FRAME))
        .unwrap();
    let response = agent.request(RequestKind::ReadFile(ReadFile {
        path: big.display().to_string(),
    }));
    assert!(
        response.error.contains("is larger than the"),
        "{}",
        response.error
    );
    agent.hello();
}

const AVC: &str = "type=AVC msg=audit(1700000000.100:10): avc:  denied  { dyntransition } for  pid=42 comm=\"crlab\" scontext=system_u:system_r:container_runtime_t:s0 tcontext=system_u:system_r:container_t:s0:c1,c2 tclass=process permissive=0";
const USER_AVC: &str = "type=USER_AVC msg=audit(1700000000.200:11): pid=1 uid=0 auid=4294967295 ses=4294967295 subj=system_u:system_r:init_t:s0 msg='avc:  denied  { start } for auid=n/a uid=0 gid=0 path=\"/x.service\" cmdline=\"\" scontext=system_u:system_r:init_t:s0 tcontext=system_u:object_r:etc_t:s0 tclass=service permissive=0'";
const SELINUX_ERR: &str = "type=SELINUX_ERR msg=audit(1700000000.300:12): op=security_bounded_transition seresult=denied oldcontext=system_u:system_r:container_runtime_t:s0 newcontext=system_u:system_r:container_t:s0";

#[test]
fn audit_records_after_a_marker_from_a_fake_log() {
    let mut agent = Agent::start();
    let log = agent.path("audit.log");
    std::fs::write(
        &log,
        format!("{AVC}\ntype=DAEMON_START msg=audit(1.2:3): op=start\n"),
    )
    .unwrap();
    let marker = agent.hello().audit_marker;
    assert_eq!(marker, std::fs::metadata(&log).unwrap().len());
    let mut f = std::fs::OpenOptions::new().append(true).open(&log).unwrap();
    writeln!(
        f,
        "type=SYSCALL msg=audit(1700000000.100:10): arch=c000003e syscall=1"
    )
    .unwrap();
    writeln!(f, "{AVC}\n{USER_AVC}\nnode=guest {SELINUX_ERR}").unwrap();
    writeln!(
        f,
        "type=PROCTITLE msg=audit(1700000000.300:12): proctitle=63726C6162"
    )
    .unwrap();
    let size = std::fs::metadata(&log).unwrap().len();
    let records = match agent.ok(RequestKind::Audit(AuditSince { marker })) {
        Some(ResponseKind::Audit(a)) => a,
        other => panic!("{other:?}"),
    };
    assert_eq!(
        records.records,
        [
            AVC.to_owned(),
            USER_AVC.to_owned(),
            format!("node=guest {SELINUX_ERR}")
        ]
    );
    assert_eq!(records.next_marker, size);
    match agent.ok(RequestKind::Audit(AuditSince {
        marker: records.next_marker,
    })) {
        Some(ResponseKind::Audit(a)) => {
            assert!(a.records.is_empty());
            assert_eq!(a.next_marker, size);
        }
        other => panic!("{other:?}"),
    }
    // Rotated: the new, shorter log is read from its start.
    std::fs::write(&log, format!("{SELINUX_ERR}\n")).unwrap();
    match agent.ok(RequestKind::Audit(AuditSince { marker: size })) {
        Some(ResponseKind::Audit(a)) => assert_eq!(a.records, [SELINUX_ERR]),
        other => panic!("{other:?}"),
    }
}

#[rstest]
#[case::not_protobuf(vec![0xff; 7], "does not decode as a crlab.agent.v1.Request")]
#[case::empty_request_kind(Request { id: 9, kind: None }.encode_to_vec(), "")]
fn garbage_frames_get_error_replies_and_the_agent_keeps_serving(
    #[case] frame: Vec<u8>,
    #[case] want: &str,
) {
    let mut agent = Agent::start();
    write_frame(&mut agent.stream, &frame).unwrap();
    let response = agent.receive();
    if want.is_empty() {
        // It decodes (an empty oneof): answered under its own id.
        assert_eq!(response.id, 9);
        assert!(
            response.error.contains("carries no kind"),
            "{}",
            response.error
        );
    } else {
        assert_eq!(response.id, 0);
        assert!(response.error.contains(want), "{}", response.error);
    }
    agent.hello();
}

#[test]
fn an_oversized_frame_gets_an_error_reply_and_the_agent_keeps_serving() {
    let mut agent = Agent::start();
    let mut bytes = (MAX_FRAME + 1).to_le_bytes().to_vec();
    bytes.extend_from_slice(&[0xab; 1000]);
    agent.send_raw(&bytes);
    let response = agent.receive();
    assert_eq!(response.id, 0);
    assert!(
        response.error.contains("more than the limit")
            && response.error.contains("discarded 1000 bytes"),
        "{}",
        response.error
    );
    agent.hello();
    agent.hello();
}

#[test]
fn a_truncated_frame_gets_an_error_reply_then_the_agent_ends() {
    let mut agent = Agent::start();
    agent.send_raw(&[100, 0, 0, 0, 1, 2, 3]);
    agent.stream.shutdown(std::net::Shutdown::Write).unwrap();
    let response = agent.receive();
    assert_eq!(response.id, 0);
    assert!(
        response.error.contains("in the middle of a frame"),
        "{}",
        response.error
    );
    assert_eq!(agent.exit_code(), Some(0));
}

#[rstest]
#[case::option_as_unit(
    "-x",
    "status",
    "the unit action needs a unit that does not start with '-'"
)]
#[case::empty_action("crlab-none.service", "", "the unit action needs a action")]
#[case::unknown_unit("crlab-no-such-unit.service", "status", "systemctl")]
fn unit_action_failures_say_so(#[case] unit: &str, #[case] action: &str, #[case] want: &str) {
    let mut agent = Agent::start();
    let response = agent.request(RequestKind::Unit(UnitAction {
        unit: unit.into(),
        action: action.into(),
    }));
    assert!(response.error.starts_with(want), "{}", response.error);
}

#[test]
fn power_off_answers_done_then_ends_the_agent_with_poweroff_exits() {
    let mut agent = Agent::start();
    assert!(matches!(
        agent.ok(RequestKind::PowerOff(PowerOff {})),
        Some(ResponseKind::Done(_))
    ));
    assert_eq!(agent.exit_code(), Some(0));
}

#[test]
fn reexec_keeps_the_pid_the_channel_and_the_background_children() {
    let mut agent = Agent::start();
    let pid = agent.pid();
    let bg = agent.run(RunCommand {
        argv: argv(&["sleep", "1"]),
        background: true,
        ..RunCommand::default()
    });
    assert!(matches!(
        agent.ok(RequestKind::Reexec(Reexec { path: AGENT.into() })),
        Some(ResponseKind::Done(_))
    ));
    agent.hello();
    let r = agent.run(RunCommand {
        argv: argv(&["sh", "-c", "echo $PPID"]),
        ..RunCommand::default()
    });
    assert_eq!(String::from_utf8_lossy(&r.stdout).trim(), pid.to_string());
    assert!(agent.log().contains("re-executing"));
    // The new image reaps the child the old one started.
    wait_until(
        Duration::from_secs(10),
        "the new agent to reap the old one's child",
        || gone(bg.pid),
    );
    // And it still powers off as told on the first command line.
    agent.ok(RequestKind::PowerOff(PowerOff {}));
    assert_eq!(agent.exit_code(), Some(0));
}

#[test]
fn reexec_of_a_missing_binary_is_an_error_and_the_agent_goes_on() {
    let mut agent = Agent::start();
    let response = agent.request(RequestKind::Reexec(Reexec {
        path: "/nonexistent/crlab-agent".into(),
    }));
    assert!(
        response
            .error
            .starts_with("no binary to re-execute at /nonexistent/crlab-agent"),
        "{}",
        response.error
    );
    agent.hello();
}

#[test]
fn the_agent_ends_when_the_peer_closes() {
    let mut agent = Agent::start();
    agent.hello();
    agent.stream.shutdown(std::net::Shutdown::Both).unwrap();
    assert_eq!(agent.exit_code(), Some(0));
}

#[test]
fn bad_command_lines_fail_with_a_message() {
    let out = Command::new(AGENT).arg("--bogus").output().unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown argument \"--bogus\""));
    let out = Command::new(AGENT).arg("--help").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("usage: crlab-agent"));
}
