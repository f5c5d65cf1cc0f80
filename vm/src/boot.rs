//! Bringing a lab VM up, the one way: image -> accelerator -> warm-start key -> disk -> boot
//! -> readiness -> saved state.
//!
//! [`boot`] owns that order and every decision in it: the image is ensured in the cache, KVM
//! is used only after a probe VM proved it, the saved state is looked up under its key (image,
//! QEMU version, machine shape) and copied into a fresh overlay, QEMU is started from it
//! (`-loadvm`) or booted cold, the guest channel is connected, and after a cold boot the
//! state is saved once the guest is ready, so the next run can warm-start.
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
use crate::image::{self, ImageError, Recipe};
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
pub fn boot<R, E: From<BootError>>(
    spec: &BootSpec,
    recipe: &Recipe,
    progress: &mut dyn FnMut(&str),
    ready: impl FnOnce(&mut Machine, Start, &mut dyn FnMut(&str)) -> Result<R, E>,
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
    let mut config = VmConfig {
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
    let start = if warm::prepare_disk(&img, &saved, &config.disk).map_err(BootError::from)? {
        config.loadvm = Some(warm::SNAPSHOT.into());
        progress("starting the lab VM from its saved state (warm start)");
        Start::Warm
    } else {
        progress("booting the lab VM (cold boot; its state is saved for the next runs)");
        Start::Cold
    };

    let boot = Instant::now();
    let mut machine = Machine::start(&spec.qemu, config).map_err(BootError::from)?;
    machine
        .connect_channel(CHANNEL_CONNECT)
        .map_err(BootError::from)?;
    let ready = ready(&mut machine, start, progress)?;
    if start == Start::Cold {
        progress("saving the VM state for warm starts");
        save_state(&machine, &saved)?;
    }
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
