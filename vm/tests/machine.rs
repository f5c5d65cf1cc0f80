//! A machine whose QEMU dies midway: the error says so and carries the
//! console's tail, and nothing is left running. A stand-in QEMU (a shell
//! script that writes to the console file it is given, then sleeps) plays
//! the part, so the test needs no VM.

use crlab_vm::machine::{Machine, VmError};
use crlab_vm::qemu::{lab_cmdline, Accel, VmConfig};
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

fn fake_qemu(dir: &Path, script: &str) -> String {
    let path = dir.join("fake-qemu");
    std::fs::write(&path, format!("#!/bin/sh\n{script}\n")).expect("writing the stand-in QEMU");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    path.display().to_string()
}

fn config(dir: &Path) -> VmConfig {
    VmConfig {
        accel: Accel::Tcg,
        memory_mib: 256,
        cpus: 1,
        kernel: dir.join("vmlinuz"),
        initrd: dir.join("initrd.img"),
        cmdline: lab_cmdline(""),
        disk: dir.join("disk.qcow2"),
        console_log: dir.join("console.log"),
        channel_socket: dir.join("agent.sock"),
        monitor_socket: dir.join("monitor.sock"),
        loadvm: None,
    }
}

/// Writes a console line to the file QEMU was told to log to (the value of
/// `file,id=console,path=...`), then sleeps.
const WRITES_CONSOLE_THEN_SLEEPS: &str = r#"for a in "$@"; do case "$a" in file,id=console,path=*) log="${a#file,id=console,path=}";; esac; done
echo "[    0.1] booting the fake guest" >> "$log"
exec sleep 600"#;

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

#[test]
fn qemu_killed_midway_is_a_clear_error_with_the_console_tail() {
    let dir = tempfile::tempdir().unwrap();
    let qemu = fake_qemu(dir.path(), WRITES_CONSOLE_THEN_SLEEPS);
    let mut m = Machine::start(&qemu, config(dir.path())).unwrap();
    let pid = m.pid().unwrap();
    m.wait_until(
        "waiting for the fake console",
        Duration::from_secs(10),
        |m| m.console_tail(1).contains("booting"),
    )
    .unwrap();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let err = m
        .wait_until(
            "waiting for the guest agent",
            Duration::from_secs(10),
            |_| false,
        )
        .unwrap_err();
    assert!(matches!(err, VmError::Died { .. }), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("QEMU exited") && text.contains("waiting for the guest agent"),
        "{text}"
    );
    assert!(
        text.contains("booting the fake guest"),
        "the console tail is missing: {text}"
    );
    drop(m);
    assert!(!alive(pid));
}

#[test]
fn a_kernel_panic_on_the_console_ends_the_wait_and_drop_kills_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let qemu = fake_qemu(
        dir.path(),
        &WRITES_CONSOLE_THEN_SLEEPS.replace(
            "exec sleep 600",
            "echo '[    2.0] Kernel panic - not syncing: VFS: Unable to mount root fs' >> \"$log\"\nexec sleep 600",
        ),
    );
    let mut m = Machine::start(&qemu, config(dir.path())).unwrap();
    let pid = m.pid().unwrap();
    let err = m
        .wait_until("booting", Duration::from_secs(10), |_| false)
        .unwrap_err();
    assert!(matches!(err, VmError::GuestFatal { .. }), "{err}");
    assert!(err.to_string().contains("kernel panic"), "{err}");
    drop(m);
    assert!(!alive(pid), "QEMU outlived its Machine");
}

#[test]
fn a_guest_that_never_answers_times_out_with_what_was_awaited() {
    let dir = tempfile::tempdir().unwrap();
    let qemu = fake_qemu(dir.path(), WRITES_CONSOLE_THEN_SLEEPS);
    let mut m = Machine::start(&qemu, config(dir.path())).unwrap();
    let err = m.connect_channel(Duration::from_millis(500)).unwrap_err();
    assert!(matches!(err, VmError::Timeout { .. }), "{err}");
    assert!(
        err.to_string().contains("connecting to the guest channel"),
        "{err}"
    );
}

/// The directory `an_interrupted_owner_leaves_no_qemu` hands to its child.
const OWNER_DIR: &str = "CRLAB_TEST_MACHINE_OWNER_DIR";

/// Not a test on its own: the child process of `an_interrupted_owner_leaves_no_qemu`. It
/// starts a machine, says QEMU's pid, and waits to be interrupted.
#[test]
#[ignore = "run by an_interrupted_owner_leaves_no_qemu in a child process"]
fn machine_owner_waiting_for_ctrl_c() {
    let Ok(dir) = std::env::var(OWNER_DIR) else {
        return;
    };
    let dir = Path::new(&dir);
    let qemu = fake_qemu(dir, WRITES_CONSOLE_THEN_SLEEPS);
    let mut m = Machine::start(&qemu, config(dir)).unwrap();
    m.wait_until("the fake console", Duration::from_secs(10), |m| {
        m.console_tail(1).contains("booting")
    })
    .unwrap();
    std::fs::write(dir.join("qemu.pid"), m.pid().unwrap().to_string()).unwrap();
    std::thread::sleep(Duration::from_secs(60));
}

/// Ctrl-C on a run: the terminal sends SIGINT to the run's process group, which QEMU is
/// not in (it has a group of its own); QEMU must still go, through PR_SET_PDEATHSIG.
#[test]
fn an_interrupted_owner_leaves_no_qemu() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
        .args([
            "--ignored",
            "--exact",
            "machine_owner_waiting_for_ctrl_c",
            "--test-threads=1",
        ])
        .env(OWNER_DIR, dir.path())
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let pid_file = dir.path().join("qemu.pid");
    let start = std::time::Instant::now();
    while !pid_file.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the child never started its machine"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let qemu: u32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    assert!(alive(qemu));
    // What a terminal does on Ctrl-C: SIGINT to the foreground group.
    nix::sys::signal::killpg(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success(), "the child ended normally: {status}");
    let start = std::time::Instant::now();
    while alive(qemu) {
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "QEMU (pid {qemu}) outlived the interrupted run"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
