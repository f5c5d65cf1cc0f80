//! Choosing the accelerator: KVM only when a probe VM proves it works here.
//!
//! `/dev/kvm` can exist while KVM guests hang (nested virtualisation without
//! the features a guest needs): the probe boots the lab kernel under KVM and
//! requires its first console line within a few seconds; otherwise TCG.
//!
//! The answer is kept for the rest of the host's boot ([`ProbeCache`]: keyed by
//! `/proc/sys/kernel/random/boot_id`, the QEMU binary and the kernel probed),
//! so a machine where KVM guests hang pays the probe's seconds once, not on
//! every run.

use crate::qemu::Accel;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The outcome of the probe, with the reason for the choice.
#[derive(Debug, Clone)]
pub struct AccelChoice {
    pub accel: Accel,
    pub reason: String,
}

/// Where a probe's answer is kept, and what it is valid for.
#[derive(Debug, Clone)]
pub struct ProbeCache {
    /// The file holding the last answer.
    pub path: PathBuf,
    /// What the answer depends on: the host's boot, the QEMU binary, the kernel probed.
    key: String,
}

impl ProbeCache {
    /// The cache for probing with `qemu` and `kernel` during this boot of the host, in
    /// `dir`; `None` when the boot cannot be identified (every run then probes).
    pub fn new(dir: &Path, qemu: &str, kernel: &Path) -> Option<ProbeCache> {
        let boot = std::fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
        Some(ProbeCache {
            path: dir.join("kvm-probe"),
            key: format!("{} {qemu} {}", boot.trim(), kernel.display()),
        })
    }

    /// The answer kept for this key, if any.
    fn get(&self) -> Option<AccelChoice> {
        let text = std::fs::read_to_string(&self.path).ok()?;
        let mut lines = text.lines();
        if lines.next()? != self.key {
            return None;
        }
        let accel = match lines.next()? {
            "kvm" => Accel::Kvm,
            "tcg" => Accel::Tcg,
            _ => return None,
        };
        let reason = lines.next()?;
        Some(AccelChoice {
            accel,
            reason: format!(
                "{reason} (probed earlier in this boot of the host; kept in {})",
                self.path.display()
            ),
        })
    }

    /// Keeps `choice` for this key; a cache that cannot be written only costs the next run
    /// a probe.
    fn put(&self, choice: &AccelChoice) {
        let accel = match choice.accel {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        };
        let text = format!("{}\n{accel}\n{}\n", self.key, choice.reason);
        let tmp = self
            .path
            .with_extension(format!("tmp-{}", std::process::id()));
        let written = std::fs::write(&tmp, text).and_then(|()| std::fs::rename(&tmp, &self.path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            tracing::debug!(path = %self.path.display(), error = %e, "keeping the KVM probe's answer");
        }
    }
}

/// Probes KVM with `kernel`/`initrd`, or takes the answer `cache` kept from an earlier probe
/// in this boot of the host; `timeout` bounds the wait.
pub fn choose(
    qemu: &str,
    kernel: &Path,
    initrd: &Path,
    run_dir: &Path,
    timeout: Duration,
    cache: Option<&ProbeCache>,
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
    if let Some(kept) = cache.and_then(ProbeCache::get) {
        return kept;
    }
    let choice = probe(qemu, kernel, initrd, run_dir, timeout);
    if let Some(cache) = cache {
        cache.put(&choice);
    }
    choice
}

/// Boots a probe VM under KVM and waits for its kernel banner.
fn probe(
    qemu: &str,
    kernel: &Path,
    initrd: &Path,
    run_dir: &Path,
    timeout: Duration,
) -> AccelChoice {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_answer_is_kept_for_its_key_only() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let cache = ProbeCache {
            path: dir.path().join("kvm-probe"),
            key: "boot-1 qemu /k".into(),
        };
        assert!(cache.get().is_none(), "nothing kept yet");
        cache.put(&tcg("KVM guests hang here"));
        let kept = cache.get().expect("kept");
        assert_eq!(kept.accel, Accel::Tcg);
        assert!(
            kept.reason.starts_with("KVM guests hang here: using TCG"),
            "{}",
            kept.reason
        );
        assert!(
            kept.reason.contains("probed earlier in this boot"),
            "{}",
            kept.reason
        );
        // Another boot (or QEMU, or kernel) probes again.
        let other = ProbeCache {
            key: "boot-2 qemu /k".into(),
            ..cache.clone()
        };
        assert!(other.get().is_none());
        // A damaged file is no answer.
        std::fs::write(&cache.path, "boot-1 qemu /k\nmaybe\n").expect("write");
        assert!(cache.get().is_none());
    }
}
