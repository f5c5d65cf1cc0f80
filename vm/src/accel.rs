//! Choosing the accelerator: KVM only when a probe VM proves it works here.
//!
//! `/dev/kvm` can exist while KVM guests hang (nested virtualisation without
//! the features a guest needs): the probe boots the lab kernel under KVM and
//! requires its first console line within a few seconds; otherwise TCG.

use crate::qemu::Accel;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The outcome of the probe, with the reason for the choice.
#[derive(Debug, Clone)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

/// Probes KVM with `kernel`/`initrd`; `timeout` bounds the wait.
pub fn choose(
    qemu: &str,
    kernel: &Path,
    initrd: &Path,
    run_dir: &Path,
    timeout: Duration,
) -> AccelChoice {
    if std::env::var("CRLAB_ACCEL").as_deref() == Ok("tcg") {
        return tcg("CRLAB_ACCEL=tcg");
    }
    let kvm = Path::new("/dev/kvm");
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(kvm)
        .is_err()
    {
        return tcg("/dev/kvm is missing or not accessible");
    }
    let log = run_dir.join("kvm-probe.log");
    let _ = std::fs::remove_file(&log);
    let mut cmd = Command::new(qemu);
    cmd.args([
        "-machine",
        "q35",
        "-accel",
        "kvm",
        "-cpu",
        "host",
        "-m",
        "256M",
        "-nodefaults",
    ])
    .args(["-no-user-config", "-display", "none", "-no-reboot"])
    .arg("-kernel")
    .arg(kernel)
    .arg("-initrd")
    .arg(initrd)
    .args(["-append", "console=ttyS0 panic=-1 earlyprintk=serial"])
    .arg("-chardev")
    .arg(format!("file,id=c,path={}", log.display()))
    .args(["-serial", "chardev:c"])
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .process_group(0);
    // SAFETY: runs in the forked child before exec; prctl is async-signal-safe.
    unsafe {
        cmd.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    let Ok(mut child) = cmd.spawn() else {
        return tcg("the KVM probe VM could not start");
    };
    let start = Instant::now();
    let mut booted = false;
    while start.elapsed() < timeout {
        if std::fs::read_to_string(&log)
            .map(|t| t.contains("Linux version"))
            .unwrap_or(false)
        {
            booted = true;
            break;
        }
        if matches!(child.try_wait(), Ok(Some(_))) {
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(&log);
    if booted {
        AccelChoice {
            accel: Accel::Kvm,
            reason: format!(
                "a KVM probe VM printed its kernel banner in {:.1} s",
                start.elapsed().as_secs_f64()
            ),
        }
    } else {
        tcg(&format!(
            "/dev/kvm exists but a KVM probe VM printed nothing within {:.0} s (KVM guests hang here)",
            timeout.as_secs_f64()
        ))
    }
}

fn tcg(reason: &str) -> AccelChoice {
    AccelChoice {
        accel: Accel::Tcg,
        reason: format!("{reason}: using TCG (software emulation, slow)"),
    }
}
