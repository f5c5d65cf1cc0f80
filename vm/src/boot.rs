//! Bringing a lab VM up, the one way: image -> accelerator -> warm-start key -> disk -> boot
//! -> readiness -> saved state.
//!
//! [`boot`] owns that order and every decision in it: the image is ensured in the cache, KVM
//! is used only after a probe VM proved it, the saved state is looked up under its key (image,
//! QEMU version, machine shape) and copied into a fresh overlay, QEMU is started from it
//! (`-loadvm`) or booted cold, the guest channel is connected, and after a cold boot the
//! state is saved once the guest is ready, so the next run can warm-start. A warm start that
//! does not come up to ready (a damaged or stale saved state: QEMU refuses it, or the guest
//! never answers) is never tried again: its saved state is removed and the machine boots
//! cold, saving a new one.
//!
//! Readiness is passed in: a closure that gets the running [`Machine`] (its channel
//! connected) and how it [`Start`]ed, and returns once the guest is ready for work. Why a
//! closure and not a check of our own: what "ready" means (the agent answered its hello, its
//! binary is the host's, the guest's services settled, SELinux enforces) is written in the
//! agent's protocol, and this crate knows only its framing; but *when* readiness is waited
//! for and what follows from it (the saved state is only ever a ready guest's, the
//! boot-to-ready time includes it) is the choreography, which belongs here. The closure
//! returns the caller's error type, which takes this module's errors in (`E:
//! From<BootError>`), so neither side flattens the other's errors into strings.

use crate::cache::{self, CacheError};
use crate::image::{self, ImageError, LabImage, Recipe};
use crate::machine::{Machine, VmError};
use crate::monitor::MonitorError;
use crate::qemu::{lab_cmdline, Accel, VmConfig};
use crate::{accel, warm};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long the KVM probe VM has to print its kernel banner.
const KVM_PROBE: Duration = Duration::from_secs(6);
/// How long QEMU may take to create the guest channel's socket.
const CHANNEL_CONNECT: Duration = Duration::from_secs(30);

/// The machine to bring up (the image is the [`Recipe`] passed beside it).
#[derive(Debug, Clone)]
pub struct BootSpec {
    pub qemu: String,
    pub memory_mib: u32,
    pub cpus: u32,
    /// Per-run files (overlay, console log, sockets); removed by the caller.
    pub run_dir: PathBuf,
}

/// How the machine started, which tells readiness what to wait for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// Booted from the image: the guest comes up from scratch, and its state is saved once
    /// it is ready.
    Cold,
    /// Resumed from a saved state: the guest was ready when the state was saved.
    Warm,
}

/// What bringing the machine up took.
#[derive(Debug, Clone, Default)]
pub struct Timings {
    /// Ensuring the image (building it, or finding and verifying it in the cache).
    pub image: Duration,
    /// From starting QEMU to the guest ready (and, after a cold boot, its state saved).
    pub boot_to_ready: Duration,
    /// Whether it resumed from a saved state.
    pub warm: bool,
    /// The accelerator chosen, and why.
    pub accel: String,
}

/// A machine that is up and ready, with what its readiness returned.
pub struct Booted<R> {
    pub machine: Machine,
    pub ready: R,
    pub timings: Timings,
}

#[derive(Debug, thiserror::Error)]
pub enum BootError {
    #[error(transparent)]
    Image(#[from] ImageError),
    #[error(transparent)]
    Cache(#[from] CacheError),
    #[error(transparent)]
    Warm(#[from] warm::WarmError),
    #[error(transparent)]
    Vm(#[from] VmError),
    #[error(transparent)]
    Monitor(#[from] MonitorError),
}

/// Brings the machine up from `recipe`'s image, waits for `ready`, and after a cold boot
/// saves the ready state for warm starts. `progress` hears about each long step (and is
/// lent to `ready` for its own).
pub fn boot<R, E: From<BootError> + std::fmt::Display>(
    spec: &BootSpec,
    recipe: &Recipe,
    progress: &mut dyn FnMut(&str),
    mut ready: impl FnMut(&mut Machine, Start, &mut dyn FnMut(&str)) -> Result<R, E>,
) -> Result<Booted<R>, E> {
    let t0 = Instant::now();
    let img = image::ensure(recipe, progress).map_err(BootError::from)?;
    let image_time = t0.elapsed();

    let probe_cache = crate::cache::cache_dir()
        .ok()
        .and_then(|dir| accel::ProbeCache::new(&dir, &spec.qemu, &img.kernel));
    let choice = accel::choose(
        &spec.qemu,
        &img.kernel,
        &img.initrd,
        &spec.run_dir,
        KVM_PROBE,
        probe_cache.as_ref(),
    );
    if choice.accel == Accel::Tcg {
        progress(&format!("notice: {}", choice.reason));
    } else {
        progress(&choice.reason);
    }
    let config = VmConfig {
        accel: choice.accel,
        memory_mib: spec.memory_mib,
        cpus: spec.cpus,
        kernel: img.kernel.clone(),
        initrd: img.initrd.clone(),
        cmdline: lab_cmdline(""),
        disk: spec.run_dir.join("disk.qcow2"),
        console_log: spec.run_dir.join("console.log"),
        channel_socket: spec.run_dir.join("agent.sock"),
        monitor_socket: spec.run_dir.join("monitor.sock"),
        loadvm: None,
    };
    let cache = cache::cache_dir().map_err(BootError::from)?;
    let saved = warm::path(
        &cache,
        &warm::key(&img, &warm::qemu_version(&spec.qemu), &config),
    );
    let boot = Instant::now();
    let (machine, ready, start) =
        warm_or_cold(&spec.qemu, &img, &saved, config, progress, &mut ready)?;
    Ok(Booted {
        machine,
        ready,
        timings: Timings {
            image: image_time,
            boot_to_ready: boot.elapsed(),
            warm: start == Start::Warm,
            accel: choice.reason,
        },
    })
}

/// Brings the machine up from the saved state `saved` when there is one, else (or when that
/// does not come up to ready: the state is then removed) by a cold boot whose ready state is
/// saved as `saved`.
fn warm_or_cold<R, E: From<BootError> + std::fmt::Display>(
    qemu: &str,
    img: &LabImage,
    saved: &Path,
    config: VmConfig,
    progress: &mut dyn FnMut(&str),
    ready: &mut impl FnMut(&mut Machine, Start, &mut dyn FnMut(&str)) -> Result<R, E>,
) -> Result<(Machine, R, Start), E> {
    if warm::prepare_disk(img, saved, &config.disk).map_err(BootError::from)? {
        progress("starting the lab VM from its saved state (warm start)");
        let warm_config = VmConfig {
            loadvm: Some(warm::SNAPSHOT.into()),
            ..config.clone()
        };
        match bring_up(qemu, warm_config, Start::Warm, progress, ready) {
            Ok((machine, r)) => return Ok((machine, r, Start::Warm)),
            Err(e) => {
                progress(&format!(
                    "the saved VM state did not come up ({e}); removing it ({}) and booting cold",
                    saved.display()
                ));
                discard_saved(saved, &config.disk).map_err(BootError::from)?;
                warm::prepare_disk(img, saved, &config.disk).map_err(BootError::from)?;
            }
        }
    }
    progress("booting the lab VM (cold boot; its state is saved for the next runs)");
    let (machine, r) = bring_up(qemu, config, Start::Cold, progress, ready)?;
    progress("saving the VM state for warm starts");
    save_state(&machine, saved)?;
    Ok((machine, r, Start::Cold))
}

/// Starts QEMU with `config`, connects the guest channel and waits for `ready`.
fn bring_up<R, E: From<BootError>>(
    qemu: &str,
    config: VmConfig,
    start: Start,
    progress: &mut dyn FnMut(&str),
    ready: &mut impl FnMut(&mut Machine, Start, &mut dyn FnMut(&str)) -> Result<R, E>,
) -> Result<(Machine, R), E> {
    let mut machine = Machine::start(qemu, config).map_err(BootError::from)?;
    machine
        .connect_channel(CHANNEL_CONNECT)
        .map_err(BootError::from)?;
    let r = ready(&mut machine, start, progress)?;
    Ok((machine, r))
}

/// Removes a saved state that did not come up, and the overlay copied from it.
fn discard_saved(saved: &Path, disk: &Path) -> Result<(), warm::WarmError> {
    for path in [saved, disk] {
        match std::fs::remove_file(path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(warm::WarmError::Io {
                    what: "removing",
                    path: path.to_path_buf(),
                    source: e,
                })
            }
            _ => {}
        }
    }
    Ok(())
}

/// Pauses the guest, snapshots it into its overlay, keeps a copy of the overlay as the saved
/// state, and lets the guest run on.
fn save_state(machine: &Machine, saved: &Path) -> Result<(), BootError> {
    let mut mon = machine.monitor(Duration::from_secs(120))?;
    mon.command("stop", Duration::from_secs(10))?;
    mon.command(
        &format!("savevm {}", warm::SNAPSHOT),
        Duration::from_secs(300),
    )?;
    warm::store(machine.disk(), saved)?;
    mon.command("cont", Duration::from_secs(10))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::qemu::lab_cmdline;
    use std::os::unix::fs::PermissionsExt;

    /// A stand-in QEMU: refuses any `-loadvm` as a damaged state makes QEMU do, and otherwise
    /// listens on the agent channel's socket (so the channel connects) and waits.
    const QEMU: &str = r#"#!/bin/sh
for a in "$@"; do
  [ "$a" = "-loadvm" ] && { echo "qemu-system-x86_64: Error -22 while loading VM state" >&2; exit 1; }
  case "$a" in socket,id=agent,path=*) p="${a#socket,id=agent,path=}"; p="${p%%,*}";; esac
done
exec python3 -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX); s.bind(sys.argv[1]); s.listen(1)
c, _ = s.accept(); time.sleep(60)' "$p"
"#;

    fn has(program: &str) -> bool {
        std::process::Command::new(program)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
    }

    #[test]
    fn a_saved_state_that_does_not_come_up_is_removed_and_the_machine_boots_cold_needs_qemu_img() {
        if !has("qemu-img") || !has("python3") {
            eprintln!("qemu-img or python3 is missing: not run");
            return;
        }
        let dir = tempfile::tempdir().expect("a temp dir");
        let d = dir.path();
        let qemu = d.join("qemu");
        std::fs::write(&qemu, QEMU).expect("write the stand-in");
        std::fs::set_permissions(&qemu, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let base = d.join("base.qcow2");
        let made = std::process::Command::new("qemu-img")
            .args(["create", "-q", "-f", "qcow2"])
            .arg(&base)
            .arg("1M")
            .status()
            .expect("qemu-img runs");
        assert!(made.success());
        let img = LabImage {
            key: "k".into(),
            dir: d.to_path_buf(),
            base,
            kernel: d.join("vmlinuz"),
            initrd: d.join("initrd.img"),
        };
        let saved = d.join("saved.qcow2");
        std::fs::write(&saved, b"not a qcow2 any more").expect("a damaged state");
        let config = VmConfig {
            accel: Accel::Tcg,
            memory_mib: 256,
            cpus: 1,
            kernel: img.kernel.clone(),
            initrd: img.initrd.clone(),
            cmdline: lab_cmdline(""),
            disk: d.join("disk.qcow2"),
            console_log: d.join("console.log"),
            channel_socket: d.join("agent.sock"),
            monitor_socket: d.join("monitor.sock"),
            loadvm: None,
        };
        let mut said = Vec::new();
        let mut starts = Vec::new();
        // The cold boot's readiness stops the test there: saving a state needs a real QEMU.
        let mut ready = |_: &mut Machine, start: Start, _: &mut dyn FnMut(&str)| {
            starts.push(start);
            Err::<(), BootError>(BootError::Vm(VmError::Timeout {
                what: "the test stops here".into(),
                secs: 0.0,
                tail: String::new(),
            }))
        };
        let result = warm_or_cold(
            &qemu.display().to_string(),
            &img,
            &saved,
            config,
            &mut |m| said.push(m.to_string()),
            &mut ready,
        );
        let err = result
            .err()
            .expect("the test's readiness fails the cold boot");
        assert!(err.to_string().contains("the test stops here"), "{err}");
        assert_eq!(
            starts,
            [Start::Cold],
            "QEMU refused the state before readiness"
        );
        assert!(!saved.exists(), "the damaged state is still there");
        let text = said.join("\n");
        assert!(
            text.contains("the saved VM state did not come up")
                && text.contains("Error -22 while loading VM state")
                && text.contains("booting cold"),
            "{text}"
        );
    }
}
