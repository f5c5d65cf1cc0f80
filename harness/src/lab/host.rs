//! This machine as the lab (the in-place mode): whether it can be (root, SELinux enforcing,
//! the tools the runner and the agent use), which policies it runs (detected from the
//! loaded policy), and its policy state kept as found. Every module crlab loads here is
//! loaded at crlab's own priority ([`PRIORITY`]) and recorded in the state file
//! ([`STATE_FILE`]) before it is loaded; the directories crlab makes are recorded too. At
//! the end of the run, on an error, on SIGINT/SIGTERM/SIGHUP, or at the start of the next
//! run after a killed one, what the file names is removed, then the file.

use crate::scenario::Base;
use crlab_vm::policy::{ModuleHash, PolicyInfo, PolicyPart};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::Duration;

/// What crlab loaded and made on this machine, until it is undone.
pub const STATE_FILE: &str = "/var/lib/crlab/in-place-modules";

/// The policy-store priority crlab's modules are loaded at: a module the machine already
/// has under the same name (at its own priority) is overridden for the run, never removed.
pub const PRIORITY: u16 = 410;

/// The programs the runner and the agent run here, and the package that has each.
pub const TOOLS: &[(&str, &str)] = &[
    (
        "semodule",
        "policycoreutils (Debian: semodule-utils and policycoreutils)",
    ),
    ("setsebool", "policycoreutils"),
    ("chcon", "coreutils"),
    ("setpriv", "util-linux"),
    ("systemd-run", "systemd"),
    ("systemctl", "systemd"),
    ("journalctl", "systemd"),
    ("pkill", "procps (Fedora: procps-ng)"),
];

#[derive(Debug, thiserror::Error)]
pub enum HostError {
    #[error(
        "in-place mode cannot run on this machine:\n  - {}\n(in-place mode runs the catalog \
         on this machine; `cargo xtask vm-test` without --in-place runs it in a lab VM)",
        .0.join("\n  - ")
    )]
    Refused(Vec<String>),
    #[error("{what}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the policies of this machine: {0}")]
    Policy(String),
    #[error("removing crlab's modules ({modules}) from the policy store: {said}; remove them with `semodule -X {PRIORITY} -r NAME`, then remove {STATE_FILE}")]
    Undo { modules: String, said: String },
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> HostError {
    let what = what.into();
    move |source| HostError::Io { what, source }
}

/// What stops a machine from hosting the lab, from what was found: the effective uid,
/// `/sys/fs/selinux/enforce` (None: no SELinux) and the tools not on PATH.
pub fn refusals(euid: u32, enforce: Option<&str>, missing: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    if euid != 0 {
        out.push(
            "it runs as uid {euid}, not root: run it as root (it loads policy modules and \
             starts processes in other domains)"
                .replace("{euid}", &euid.to_string()),
        );
    }
    match enforce.map(str::trim) {
        None => out.push(
            "SELinux is not enabled (no /sys/fs/selinux/enforce): boot with SELinux enforcing"
                .into(),
        ),
        Some("1") => {}
        Some(_) => out.push(
            "SELinux is permissive, the scenarios need it enforcing: run `setenforce 1` (and \
             SELINUX=enforcing in /etc/selinux/config to keep it)"
                .into(),
        ),
    }
    for tool in missing {
        let package = TOOLS
            .iter()
            .find(|(t, _)| t == tool)
            .map_or("", |(_, p)| *p);
        out.push(format!("{tool} is not installed: install {package}"));
    }
    out
}

/// Checks this machine (root, enforcing, the tools); the error lists every reason.
pub fn preflight() -> Result<(), HostError> {
    let enforce = std::fs::read_to_string("/sys/fs/selinux/enforce").ok();
    let missing: Vec<&str> = TOOLS
        .iter()
        .map(|(t, _)| *t)
        .filter(|t| which(t).is_none())
        .collect();
    let found = refusals(
        nix::unistd::geteuid().as_raw(),
        enforce.as_deref(),
        &missing,
    );
    if found.is_empty() {
        Ok(())
    } else {
        Err(HostError::Refused(found))
    }
}

/// `name` on PATH (or the sbin directories, which root's PATH may lack).
pub fn which(name: &str) -> Option<PathBuf> {
    let path = std::env::var("PATH").unwrap_or_default();
    let found = path
        .split(':')
        .chain(["/usr/sbin", "/sbin", "/usr/bin", "/bin"])
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file());
    found
}

/// The policies this machine runs, as detected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detected {
    pub base: Base,
    /// `SELINUXTYPE` of `/etc/selinux/config`.
    pub policy_name: String,
    /// container-selinux's `container` module is loaded (else the lab's stand-in is used).
    pub container_selinux: bool,
}

/// The modules a `semodule --list-modules=full` listing names: (priority, name), disabled
/// ones left out.
pub fn parse_modules(listing: &str) -> Vec<(u16, String)> {
    listing
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            let priority = w.next()?.parse().ok()?;
            let name = w.next()?.to_string();
            let _lang = w.next();
            (w.next() != Some("disabled")).then_some((priority, name))
        })
        .collect()
}

/// The base and container policy from `/etc/selinux/config` and the loaded modules:
/// Fedora's `targeted` with container-selinux's `container` module, or a refpolicy
/// (Debian's `default`) without one, on which the lab's stand-in declares the container
/// names.
pub fn detect(selinux_config: &str, modules: &[(u16, String)]) -> Result<Detected, HostError> {
    let policy_name = selinux_config
        .lines()
        .filter_map(|l| l.trim().strip_prefix("SELINUXTYPE="))
        .next_back()
        .map(|v| v.trim().trim_matches('"').to_string())
        .ok_or_else(|| HostError::Policy("/etc/selinux/config names no SELINUXTYPE".into()))?;
    let container_selinux = modules.iter().any(|(_, n)| n == "container");
    let base = match policy_name.as_str() {
        "targeted" => Base::Fedora,
        "default" | "mcs" => Base::Refpolicy,
        other => {
            return Err(HostError::Policy(format!(
                "SELINUXTYPE={other}: the suite knows Fedora's `targeted` and Debian's refpolicy \
                 `default`"
            )))
        }
    };
    match (base, container_selinux) {
        (Base::Fedora, false) => Err(HostError::Policy(
            "Fedora's policy without container-selinux (no `container` module): install \
             container-selinux"
                .into(),
        )),
        (Base::Refpolicy, true) => Err(HostError::Policy(
            "a refpolicy with a `container` module: the lab's stand-in declares the same \
             names and cannot be loaded beside it"
                .into(),
        )),
        _ => Ok(Detected {
            base,
            policy_name,
            container_selinux,
        }),
    }
}

/// What a report records of the detected policies and the lab's modules loaded for them.
pub fn policy_info(d: &Detected, lab_modules: &[(String, Vec<u8>)]) -> PolicyInfo {
    let part = |kind: &str, source: String| PolicyPart {
        kind: kind.into(),
        source,
        revision: None,
        sha256: None,
        version: None,
    };
    let distro = part(
        d.base.name(),
        format!(
            "this machine's loaded policy, SELINUXTYPE={}",
            d.policy_name
        ),
    );
    let container = if d.container_selinux {
        part(
            "container-selinux",
            "this machine's `container` module".into(),
        )
    } else {
        let mut p = part("lab", "scenarios/policy/*.cil (the lab's stand-in)".into());
        let mut h = Sha256::new();
        for (name, data) in lab_modules {
            h.update(format!("module {name} {}\n", data.len()));
            h.update(data);
        }
        p.sha256 = Some(format!("{:x}", h.finalize()));
        p
    };
    PolicyInfo {
        distro,
        container,
        lab_modules: lab_modules
            .iter()
            .map(|(name, data)| ModuleHash {
                name: name.clone(),
                sha256: format!("{:x}", Sha256::digest(data)),
            })
            .collect(),
    }
}

/// Reads `/etc/selinux/config` and the policy store, and detects.
pub fn detect_here() -> Result<Detected, HostError> {
    let config = std::fs::read_to_string("/etc/selinux/config")
        .map_err(io("reading /etc/selinux/config"))?;
    let listing = list_modules()?;
    detect(&config, &parse_modules(&listing))
}

fn list_modules() -> Result<String, HostError> {
    let out = Command::new("semodule")
        .arg("--list-modules=full")
        .output()
        .map_err(io("running semodule --list-modules=full"))?;
    if !out.status.success() {
        return Err(HostError::Policy(format!(
            "semodule --list-modules=full failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// What the state file records: modules loaded at [`PRIORITY`], directories made, systemd
/// units started (transient: stopped, their failure state reset).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct State {
    pub modules: Vec<String>,
    pub dirs: Vec<String>,
    pub units: Vec<String>,
}

impl State {
    /// Reads the file's text (`module NAME`, `dir PATH`, `unit NAME`, one a line); other
    /// lines are ignored, and so are directories that are not absolute.
    pub fn parse(text: &str) -> State {
        let mut s = State::default();
        for line in text.lines() {
            match line.split_once(' ') {
                Some(("module", m)) if valid_module(m) => s.add_module(m),
                Some(("unit", u)) if valid_unit(u) && !s.units.iter().any(|x| x == u) => {
                    s.units.push(u.to_string());
                }
                Some(("dir", d))
                    if d.starts_with('/')
                        && !d.contains("/..")
                        && d != "/"
                        && !s.dirs.iter().any(|x| x == d) =>
                {
                    s.dirs.push(d.to_string());
                }
                _ => {}
            }
        }
        s
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for m in &self.modules {
            out += &format!("module {m}\n");
        }
        for d in &self.dirs {
            out += &format!("dir {d}\n");
        }
        for u in &self.units {
            out += &format!("unit {u}\n");
        }
        out
    }

    fn add_module(&mut self, m: &str) {
        if !self.modules.iter().any(|x| x == m) {
            self.modules.push(m.to_string());
        }
    }

    pub fn is_empty(&self) -> bool {
        self.modules.is_empty() && self.dirs.is_empty() && self.units.is_empty()
    }
}

/// A module name semodule accepts (and a shell word needs no quoting for).
fn valid_module(m: &str) -> bool {
    !m.is_empty()
        && m.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
}

/// A transient unit the runner starts: `crlab-NAME.service` (the agent's own unit,
/// `crlab-agent.service`, in a lab VM, is never one).
fn valid_unit(u: &str) -> bool {
    u.strip_prefix("crlab-")
        .and_then(|n| n.strip_suffix(".service"))
        .is_some_and(|n| n != "agent" && valid_module(n))
}

/// Which of `ours` the listing holds at [`PRIORITY`] (the ones to remove).
pub fn loaded_at_priority(listing: &[(u16, String)], ours: &[String]) -> Vec<String> {
    ours.iter()
        .filter(|m| listing.iter().any(|(p, n)| *p == PRIORITY && n == *m))
        .cloned()
        .collect()
}

/// The state file of a run on this machine.
#[derive(Debug)]
pub struct Ledger {
    path: PathBuf,
    state: State,
}

impl Ledger {
    pub fn new(path: &Path) -> Ledger {
        Ledger {
            path: path.to_path_buf(),
            state: State::default(),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// What a previous run left (its file exists: it was killed before its end).
    pub fn leftover(path: &Path) -> Result<Option<State>, HostError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Some(State::parse(&text))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(format!("reading {}", path.display()))(e)),
        }
    }

    /// Records modules about to be loaded, before they are: written and synced.
    pub fn record_modules(&mut self, names: &[String]) -> Result<(), HostError> {
        let before = self.state.clone();
        for n in names {
            if !valid_module(n) {
                return Err(HostError::Policy(format!("{n:?} is not a module name")));
            }
            self.state.add_module(n);
        }
        if self.state == before && self.path.exists() {
            return Ok(());
        }
        self.write()
    }

    /// Records a transient unit about to be started, stopped at the end.
    pub fn record_unit(&mut self, unit: &str) -> Result<(), HostError> {
        if !valid_unit(unit) {
            return Err(HostError::Policy(format!(
                "{unit:?} is not a unit the runner starts"
            )));
        }
        if self.state.units.iter().any(|u| u == unit) {
            return Ok(());
        }
        self.state.units.push(unit.to_string());
        self.write()
    }

    /// Records a directory made for the run, removed at the end.
    pub fn record_dir(&mut self, dir: &str) -> Result<(), HostError> {
        if !self.state.dirs.iter().any(|d| d == dir) {
            self.state.dirs.push(dir.to_string());
        }
        self.write()
    }

    fn write(&self) -> Result<(), HostError> {
        use std::io::Write;
        let what = || format!("writing the state file {}", self.path.display());
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io(what()))?;
        }
        let tmp = self.path.with_extension("new");
        let mut f = std::fs::File::create(&tmp).map_err(io(what()))?;
        f.write_all(self.state.render().as_bytes())
            .and_then(|()| f.sync_all())
            .map_err(io(what()))?;
        std::fs::rename(&tmp, &self.path).map_err(io(what()))
    }

    pub fn state(&self) -> &State {
        &self.state
    }
}

/// Undoes `state`: crlab's modules removed from the store (retried while another semodule
/// holds it), the directories removed; then the state file at `path`. `run` runs a
/// command and returns (success, its output): tests give a fake one.
pub fn undo(
    state: &State,
    path: &Path,
    run: &mut dyn FnMut(&[String]) -> (bool, String),
) -> Result<Vec<String>, HostError> {
    let mut removed = Vec::new();
    let mut said = String::new();
    let mut left = state.modules.clone();
    let mut cleared = state.modules.is_empty();
    for attempt in 0..3 {
        if cleared {
            break;
        }
        if attempt > 0 {
            // Another semodule may hold the store (a load the interrupt cut short).
            std::thread::sleep(Duration::from_secs(1));
        }
        let (ok, listing) = run(&["semodule".into(), "--list-modules=full".into()]);
        if !ok {
            said = listing;
            continue;
        }
        left = loaded_at_priority(&parse_modules(&listing), &state.modules);
        if left.is_empty() {
            cleared = true;
            break;
        }
        let mut argv = vec!["semodule".to_string(), "-X".into(), PRIORITY.to_string()];
        for m in &left {
            argv.extend(["-r".into(), m.clone()]);
        }
        let (ok, out) = run(&argv);
        if ok {
            removed.extend(left.iter().cloned());
        } else {
            said = out;
        }
    }
    if !cleared {
        let (ok, listing) = run(&["semodule".into(), "--list-modules=full".into()]);
        left = loaded_at_priority(&parse_modules(&listing), &state.modules);
        cleared = ok && left.is_empty();
    }
    if !cleared {
        return Err(HostError::Undo {
            modules: left.join(" "),
            said: said.trim().to_string(),
        });
    }
    for d in state.dirs.iter().rev() {
        let _ = std::fs::remove_dir_all(d);
    }
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io(format!("removing {}", path.display()))(e)),
    }
    removed.dedup();
    Ok(removed)
}

/// Runs a command on this machine for [`undo`].
pub fn run_here(argv: &[String]) -> (bool, String) {
    let Some((program, args)) = argv.split_first() else {
        return (false, "no command".into());
    };
    match Command::new(program).args(args).output() {
        Ok(o) => (
            o.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
        ),
        Err(e) => (false, format!("running {program}: {e}")),
    }
}

/// The in-place run in progress: what an interrupt must undo. Whoever takes it (the lab's
/// shutdown, or the interrupt handler's thread) undoes it while holding the lock, so the
/// process never exits halfway through an undo.
pub struct Active {
    pub ledger: Ledger,
    /// The local agent's process group, killed first.
    pub agent_pgid: Option<i32>,
    /// Processes whose executable lies here, or whose command line names a trial's
    /// directory, are killed before the modules go.
    pub bin_dir: String,
}

static ACTIVE: Mutex<Option<Active>> = Mutex::new(None);

/// Registers the run in progress.
pub fn set_active(a: Active) {
    let mut g = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
    *g = Some(a);
}

/// Updates the run in progress (its ledger grew).
pub fn with_active<T>(f: impl FnOnce(&mut Active) -> T) -> Option<T> {
    let mut g = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
    g.as_mut().map(f)
}

/// Ends the run in progress, if any: its processes killed, its state undone. Says what it
/// removed through `say`.
pub fn finish(say: &mut dyn FnMut(&str)) -> Result<(), HostError> {
    let mut g = ACTIVE.lock().unwrap_or_else(|p| p.into_inner());
    let Some(a) = g.take() else {
        return Ok(());
    };
    if let Some(pgid) = a.agent_pgid {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pgid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
    kill_leftovers(&a.bin_dir);
    let state = a.ledger.state().clone();
    stop_units(&state.units);
    wait_for_semodule(say);
    let removed = undo(&state, a.ledger.path(), &mut |argv| run_here(argv))?;
    if !removed.is_empty() {
        say(&format!(
            "removed crlab's policy modules (priority {PRIORITY}): {}",
            removed.join(" ")
        ));
    }
    Ok(())
}

/// Stops the transient units the run started (only those: the state file names them).
fn stop_units(units: &[String]) {
    for u in units.iter().filter(|u| valid_unit(u)) {
        let _ = run_here(&["systemctl".into(), "stop".into(), u.clone()]);
        let _ = run_here(&["systemctl".into(), "reset-failed".into(), u.clone()]);
    }
}

/// Waits (up to 10 min) while a `semodule` runs: a load the run started and an interrupt
/// cut short still holds the store, and commits when it is done; what it loads must be
/// listed before crlab's modules are removed.
fn wait_for_semodule(say: &mut dyn FnMut(&str)) {
    let running = || -> Vec<String> {
        let Ok(rd) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        rd.flatten()
            .filter(|e| std::fs::read(e.path().join("comm")).is_ok_and(|c| c == b"semodule\n"))
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let start = std::time::Instant::now();
    let mut said = false;
    loop {
        let pids = running();
        if pids.is_empty() || start.elapsed() > Duration::from_secs(600) {
            return;
        }
        if !said {
            say(&format!(
                "waiting for semodule (pid {}) to finish before removing crlab's modules",
                pids.join(", ")
            ));
            said = true;
        }
        std::thread::sleep(Duration::from_millis(500));
    }
}

/// Kills (SIGKILL) every process whose executable lies under `bin_dir` or whose command
/// line names a trial's directory (`/var/tmp/crlab/`), except this one.
fn kill_leftovers(bin_dir: &str) {
    let me = std::process::id();
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return;
    };
    for e in rd.flatten() {
        let Some(pid) = e.file_name().to_str().and_then(|s| s.parse::<i32>().ok()) else {
            continue;
        };
        if pid as u32 == me {
            continue;
        }
        let exe = std::fs::read_link(e.path().join("exe")).unwrap_or_default();
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        let ours = (!bin_dir.is_empty() && exe.starts_with(bin_dir))
            || cmdline.contains("/var/tmp/crlab/");
        if ours {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// SIGINT, SIGTERM and SIGHUP end an in-place run cleanly: they are blocked in the calling
/// thread (call it first in `main`, so every later thread inherits the mask) and taken by a
/// thread of their own, which undoes the run in progress ([`finish`]) and exits with 128 +
/// the signal.
pub fn handle_interrupts() -> Result<(), HostError> {
    use nix::sys::signal::{SigSet, SigmaskHow, Signal};
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&set), None).map_err(|e| {
        HostError::Io {
            what: "blocking SIGINT, SIGTERM and SIGHUP".into(),
            source: e.into(),
        }
    })?;
    std::thread::Builder::new()
        .name("interrupts".into())
        .spawn(move || {
            let Ok(sig) = set.wait() else { return };
            eprintln!("\n{sig}: undoing what the in-place run changed on this machine");
            if let Err(e) = finish(&mut |m| eprintln!("{m}")) {
                eprintln!("error: {e}");
            }
            std::process::exit(128 + sig as i32);
        })
        .map_err(io("starting the interrupt thread"))?;
    Ok(())
}

/// Removes what a killed run left (its state file exists), saying so.
pub fn clean_leftover(path: &Path, say: &mut dyn FnMut(&str)) -> Result<(), HostError> {
    let Some(state) = Ledger::leftover(path)? else {
        return Ok(());
    };
    say(&format!(
        "{} is left from an in-place run that did not finish: removing what it names \
         (modules: {}; directories: {})",
        path.display(),
        if state.modules.is_empty() {
            "none".to_string()
        } else {
            state.modules.join(" ")
        },
        if state.dirs.is_empty() {
            "none".to_string()
        } else {
            state.dirs.join(" ")
        }
    ));
    for d in state
        .dirs
        .iter()
        .filter(|d| d.starts_with("/opt/crlab-in-place-"))
    {
        kill_leftovers(d);
    }
    stop_units(&state.units);
    wait_for_semodule(say);
    let removed = undo(&state, path, &mut |argv| run_here(argv))?;
    say(&format!(
        "removed {} leftover module(s) at priority {PRIORITY}",
        removed.len()
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = "100 abrt pp\n400 crlab-lab cil\n410 crlab-lab cil\n\
                        410 restore-unconfined-service cil\n200 container pp\n100 old pp disabled\n";

    #[test]
    fn every_refusal_is_named_with_what_to_do() {
        assert!(refusals(0, Some("1\n"), &[]).is_empty());
        let r = refusals(1000, Some("0"), &["semodule"]);
        assert_eq!(r.len(), 3, "{r:?}");
        assert!(r[0].contains("not root"));
        assert!(r[1].contains("setenforce 1"));
        assert!(r[2].contains("semodule is not installed: install policycoreutils"));
        assert!(refusals(0, None, &[])[0].contains("not enabled"));
    }

    #[test]
    fn the_full_listing_gives_priorities_and_leaves_disabled_modules_out() {
        let m = parse_modules(FULL);
        assert_eq!(m.len(), 5);
        assert_eq!(m[1], (400, "crlab-lab".to_string()));
        assert!(!m.iter().any(|(_, n)| n == "old"));
    }

    #[test]
    fn fedora_with_container_selinux_and_refpolicy_with_the_stand_in_are_detected() {
        let fedora = detect(
            "# c\nSELINUX=enforcing\nSELINUXTYPE=targeted\n",
            &parse_modules("100 base pp\n200 container pp\n"),
        )
        .unwrap();
        assert_eq!(fedora.base, Base::Fedora);
        assert!(fedora.container_selinux);
        let debian = detect(
            "SELINUXTYPE=default\n",
            &parse_modules("100 base pp\n400 crlab-lab cil\n"),
        )
        .unwrap();
        assert_eq!(debian.base, Base::Refpolicy);
        assert!(!debian.container_selinux);
        let info = policy_info(&debian, &[("crlab-lab.cil".into(), b"x".to_vec())]);
        assert_eq!(info.distro.kind, "refpolicy");
        assert_eq!(info.container.kind, "lab");
        assert!(info.summary().contains("SELINUXTYPE=default"));
        assert_eq!(info.lab_modules[0].name, "crlab-lab.cil");
    }

    #[test]
    fn unknown_or_inconsistent_policies_are_refused_with_the_reason() {
        let no_cs = detect("SELINUXTYPE=targeted", &parse_modules("100 base pp\n"));
        assert!(no_cs
            .unwrap_err()
            .to_string()
            .contains("install container-selinux"));
        assert!(detect("SELINUXTYPE=mls", &[]).is_err());
        assert!(detect("SELINUX=enforcing", &[]).is_err());
        assert!(detect("SELINUXTYPE=default", &parse_modules("200 container pp")).is_err());
    }

    #[test]
    fn the_state_file_is_written_before_a_load_and_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("crlab/in-place-modules");
        let mut l = Ledger::new(&path);
        l.record_dir("/opt/crlab-in-place-1").unwrap();
        l.record_modules(&["crlab-lab".into(), "x".into()]).unwrap();
        l.record_modules(&["x".into()]).unwrap();
        assert!(l.record_modules(&["a b".into()]).is_err());
        l.record_unit("crlab-systemd-service.service").unwrap();
        // The lab VM's own agent unit is never one of the run's.
        assert!(l.record_unit("crlab-agent.service").is_err());
        assert!(l.record_unit("sshd.service").is_err());
        let back = Ledger::leftover(&path).unwrap().unwrap();
        assert_eq!(back.modules, ["crlab-lab", "x"]);
        assert_eq!(back.dirs, ["/opt/crlab-in-place-1"]);
        assert_eq!(back.units, ["crlab-systemd-service.service"]);
        assert_eq!(Ledger::leftover(&dir.path().join("none")).unwrap(), None);
        // A hand-edited file cannot name `/` or a relative path.
        let s = State::parse("dir /\ndir rel\ndir /a/../b\nmodule ok\nmodule bad;rm\nnoise\n");
        assert_eq!(s.dirs, Vec::<String>::new());
        assert_eq!(s.modules, ["ok"]);
    }

    #[test]
    fn undo_removes_only_crlabs_priority_then_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let made = dir.path().join("payload");
        std::fs::create_dir(&made).unwrap();
        let state = State {
            modules: vec![
                "crlab-lab".into(),
                "restore-unconfined-service".into(),
                "never-loaded".into(),
            ],
            dirs: vec![made.display().to_string()],
            units: vec![],
        };
        std::fs::write(&path, state.render()).unwrap();
        let mut listing = FULL.to_string();
        let mut calls = Vec::new();
        let removed = undo(&state, &path, &mut |argv| {
            calls.push(argv.join(" "));
            if argv[1] == "-X" {
                // The store drops the 410 copies; the machine's own crlab-lab (400) stays.
                listing = listing.lines().filter(|l| !l.starts_with("410 ")).fold(
                    String::new(),
                    |mut acc, l| {
                        acc += l;
                        acc += "\n";
                        acc
                    },
                );
            }
            (true, listing.clone())
        })
        .unwrap();
        assert_eq!(removed, ["crlab-lab", "restore-unconfined-service"]);
        assert_eq!(
            calls[1],
            "semodule -X 410 -r crlab-lab -r restore-unconfined-service"
        );
        assert_eq!(calls.len(), 3, "list, remove, list: {calls:?}");
        assert!(!path.exists() && !made.exists());
    }

    #[test]
    fn a_store_that_keeps_the_modules_is_an_error_and_the_file_stays() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state");
        let state = State {
            modules: vec!["crlab-lab".into()],
            dirs: vec![],
            units: vec![],
        };
        std::fs::write(&path, state.render()).unwrap();
        let e = undo(&state, &path, &mut |argv| {
            if argv[1] == "-X" {
                (false, "semodule: lock held".into())
            } else {
                (true, FULL.into())
            }
        })
        .unwrap_err();
        assert!(e.to_string().contains("crlab-lab"), "{e}");
        assert!(path.exists(), "the next run must still find it");
    }
}
