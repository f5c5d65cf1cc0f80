//! Driving one trial in the lab VM and observing it: load the scenario's policy modules,
//! start the workload in its domain, dump, `crlab check`, restore, read every restored
//! process's threads once, have the workload check itself, collect the audit records, clean
//! up. It records what happened in an [`Observation`] and judges nothing.

use super::backend::Backend;
use super::observation::{Observation, RestoredProcess, SelfCheck, Step, ThreadState, ToolRun};
use crate::audit;
use crate::lab::client::AgentError;
use crate::lab::session::LabError;
use crate::lab::Lab;
use crate::scenario::{Base, Outcome, Scenario, Start};
use crlab_protocol::{file_op::Op, Chown, Copy, FileOp, SetType};
use crlab_workloads::driver::{Driver as WorkloadDriver, Host};
use crlab_workloads::protocol::{self, Ready};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// How long a workload may take to write its ready file, and its result once triggered.
const WORKLOAD_LIMIT: Duration = Duration::from_secs(60);

/// How often the driver looks for a workload's file in the guest (each look is a request).
const GUEST_POLL: Duration = Duration::from_millis(50);

/// The lab policy's boolean that lets the engine domains use `execmem`, on only for criu.
const CRIU_EXECMEM: &str = "crlab_criu_execmem";

/// At most this many restored processes are walked (a runaway tree is an error).
const MAX_RESTORED: usize = 64;

struct Driver<'a> {
    lab: &'a mut Lab,
    obs: Observation,
}

impl Driver<'_> {
    /// Runs one lab action as a named step; its error (the lab could not do it) is recorded.
    fn step<T>(
        &mut self,
        name: &str,
        f: impl FnOnce(&mut Lab) -> Result<(T, String), String>,
    ) -> Option<T> {
        let t = Instant::now();
        let r = f(self.lab);
        let (ok, detail, v) = match r {
            Ok((v, d)) => (true, d, Some(v)),
            Err(e) => (false, e, None),
        };
        self.obs.steps.push(Step {
            name: name.into(),
            ok,
            millis: u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX),
            detail,
        });
        v
    }
}

/// Where a trial lives in the guest, and the context its workload starts in there.
struct Setup {
    dir: String,
    state: String,
    images: String,
    /// The workload's standard output and error. A unit's is under /run: systemd (`init_t`)
    /// may not create files where the agent keeps the trial (on the Fedora-policy image:
    /// `avc: denied { create } ... scontext=...init_t... tcontext=...user_tmp_t`), and the
    /// journal would make it a socket, which crlab does not dump.
    log: String,
    /// The context the workload starts in on this base.
    context: String,
    /// The policy modules loaded for it on this base.
    modules: Vec<String>,
}

impl Setup {
    fn of(s: &Scenario, base: Base) -> Setup {
        let dir = format!("/var/tmp/crlab/{}", s.name);
        Setup {
            state: format!("{dir}/state"),
            images: format!("{dir}/images"),
            log: match s.workload.start {
                Start::Exec => format!("{dir}/state/log"),
                Start::Unit => format!("/run/crlab/{}.log", s.name),
            },
            context: s.workload.context_on(base).to_string(),
            modules: s.policy_modules_on(base).to_vec(),
            dir,
        }
    }
}

/// Runs `s` with `backend` and returns what it observed, with the audit position after it
/// (`marker` is the position before). A successful dump is restored when `restore` says so.
/// `policy_dir` holds the scenario-specific policy modules (`scenarios/policy/modules`).
#[allow(clippy::too_many_arguments)]
pub fn drive(
    lab: &mut Lab,
    s: &Scenario,
    backend: Backend,
    base: Base,
    restore: bool,
    marker: u64,
    policy_dir: &Path,
    modules: &mut LoadedModules,
) -> (Observation, u64) {
    let mut d = Driver {
        lab,
        obs: Observation::default(),
    };
    let paths = Setup::of(s, base);
    let unit = format!("crlab-{}.service", s.name);
    let loaded = d.step("load policy modules", |lab| {
        modules.sync(lab, &paths.modules, policy_dir)
    });
    let prepared = loaded.and_then(|_| d.step("prepare", |lab| prepare(lab, s, backend, &paths)));
    let started = prepared.and_then(|_| {
        d.step("start workload", |lab| {
            start_workload(lab, s, &unit, &paths)
        })
    });
    if let Some((pid, ready)) = started {
        dump_and_restore(&mut d, s, backend, restore, pid, &ready, &paths);
    }
    let next = collect_audit(&mut d, s, backend, marker);
    clean_up(&mut d, s, backend, &unit, &paths);
    (d.obs, next)
}

/// Makes the trial's directories afresh (the agent's own file operations, no program
/// started: removed, made, labelled, given to the workload's user, a unit's program copied in
/// and labelled), then, for criu, turns its boolean on with `setsebool`.
fn prepare(
    lab: &mut Lab,
    s: &Scenario,
    backend: Backend,
    p: &Setup,
) -> Result<((), String), String> {
    let ops = prepare_ops(s, p, &lab.place().bin);
    lab.file_ops("prepare the trial's directories", ops)
        .map_err(|e| e.to_string())?;
    if backend == Backend::Criu {
        // criu maps its restorer as executable anonymous memory (see the lab policy). A
        // program, not the agent: setsebool (`semanage_exec_t` on Debian's image) may run in
        // a domain of its own, and a write to selinuxfs by the agent would change the subject.
        program(lab, &["setsebool", CRIU_EXECMEM, "on"], true)?;
    }
    Ok(((), String::new()))
}

/// The file operations that prepare a trial, in order: what `rm -rf`, `mkdir -p`,
/// `chcon -R -t`, `chown -R`, `cp` and `chcon -t` did.
fn prepare_ops(s: &Scenario, p: &Setup, bin: &str) -> Vec<FileOp> {
    let op = |op| FileOp { op: Some(op) };
    let mut ops: Vec<FileOp> = [&p.dir, &p.log]
        .into_iter()
        .map(|path| op(Op::Remove(path.clone())))
        .chain(
            [p.state.as_str(), p.images.as_str(), "/run/crlab"]
                .into_iter()
                .map(|d| op(Op::MakeDirs(d.into()))),
        )
        .collect();
    if !s.workload.files_type.is_empty() {
        ops.push(op(Op::SetType(SetType {
            path: p.dir.clone(),
            selinux_type: s.workload.files_type.clone(),
            recursive: true,
        })));
    }
    if let Some(u) = &s.workload.user {
        ops.push(op(Op::Chown(Chown {
            path: p.state.clone(),
            uid: u.uid,
            gid: u.gid,
            recursive: true,
        })));
    }
    if let Some(exe) = unit_exe(s, p) {
        // A service's program as a distribution installs it: a `bin_t` file, which systemd
        // runs in `unconfined_service_t` by the policy's own transition.
        ops.push(op(Op::MakeDirs(format!("{}/bin", p.dir))));
        ops.push(op(Op::Copy(Copy {
            from: format!("{bin}/{}", s.workload.program),
            to: exe.clone(),
        })));
        ops.push(op(Op::SetType(SetType {
            path: exe,
            selinux_type: "bin_t".into(),
            recursive: false,
        })));
    }
    ops
}

/// Runs a program as root in the agent's domain; an exit code other than 0 is an error when
/// `strict`, a deadline passed always is.
fn program(lab: &mut Lab, argv: &[&str], strict: bool) -> Result<(), String> {
    let r = lab
        .run(argv, "", Duration::from_secs(60))
        .map_err(|e| e.to_string())?;
    if r.timed_out {
        return Err(format!("`{}` did not finish within 60 s", argv.join(" ")));
    }
    if strict && r.exit_code != 0 {
        return Err(format!(
            "`{}` failed ({}): {}",
            argv.join(" "),
            r.exit_code,
            String::from_utf8_lossy(&r.stderr).trim()
        ));
    }
    Ok(())
}

/// Where a unit workload started without a context runs its program from: a `bin_t` copy, so
/// that systemd's own transition (not a `SELinuxContext=`) picks its domain.
fn unit_exe(s: &Scenario, p: &Setup) -> Option<String> {
    (s.workload.start == Start::Unit && p.context.is_empty())
        .then(|| format!("{}/bin/{}", p.dir, s.workload.program))
}

fn start_workload(
    lab: &mut Lab,
    s: &Scenario,
    unit: &str,
    p: &Setup,
) -> Result<((u32, Ready), String), String> {
    let w = &s.workload;
    let prog = unit_exe(s, p).unwrap_or_else(|| format!("{}/{}", lab.place().bin, w.program));
    let log = p.log.clone();
    let contexts = format!("CRLAB_MEMBER_CONTEXTS={}", w.member_contexts.join(" "));
    let mark = format!("{}={}", protocol::MARK_ENV, protocol::MARK_VALUE);
    let mut env = vec![mark.as_str()];
    if !w.member_contexts.is_empty() {
        env.push(&contexts);
    }
    let setpriv = w.user.as_ref().map(|u| {
        let groups: Vec<String> = u.groups.iter().map(u32::to_string).collect();
        [
            "/usr/bin/setpriv".to_string(),
            format!("--reuid={}", u.uid),
            format!("--regid={}", u.gid),
            if groups.is_empty() {
                "--clear-groups".to_string()
            } else {
                format!("--groups={}", groups.join(","))
            },
            "--".to_string(),
        ]
    });
    let mut argv: Vec<&str> = setpriv.iter().flatten().map(String::as_str).collect();
    argv.extend([prog.as_str(), p.state.as_str(), w.wait.as_str()]);
    argv.extend(w.args.iter().map(String::as_str));
    let pid = match w.start {
        Start::Exec => lab
            .spawn(&argv, &env, &p.context, w.session_keyring, &log)
            .map_err(|e| e.to_string())?,
        Start::Unit => start_unit(lab, unit, &argv, &env, &p.context, &log)?,
    };
    let waited = driver(lab, &p.state).wait_ready(WORKLOAD_LIMIT, || None);
    let ready = waited.map_err(|e| {
        let out = output_tail(lab, s, unit, &log);
        format!(
            "{}; the workload's output ends with:\n{out}",
            e.with_sources()
        )
    })?;
    Ok(((pid, ready), format!("pid {pid}")))
}

/// The last lines the workload printed, and for a unit what systemd said of it.
fn output_tail(lab: &mut Lab, s: &Scenario, unit: &str, log: &str) -> String {
    let mut script = format!("tail -n 10 {log}");
    if s.workload.start == Start::Unit {
        script += &format!("; journalctl -u {unit} -n 10 --no-pager -o cat");
    }
    sh(lab, &script, "", 30)
        .map(|(_, out, _)| out.trim_end().to_string())
        .unwrap_or_default()
}

fn dump_and_restore(
    d: &mut Driver<'_>,
    s: &Scenario,
    backend: Backend,
    restore: bool,
    pid: u32,
    ready: &Ready,
    p: &Setup,
) {
    let engine_ctx = s.engine.context.as_str();
    let dump = d.step("dump", |lab| {
        let argv = backend.dump_argv(&lab.place().bin, &s.engine, pid, &p.images);
        let run = run_tool(
            lab,
            backend,
            &argv,
            engine_ctx,
            &format!("{}/dump.log", p.images),
        )?;
        let said = run.said.clone();
        Ok((run, said))
    });
    let Some(dump) = dump else { return };
    let failed = dump.outcome == Outcome::Fail;
    d.obs.dump = Some(dump);
    if failed {
        // A failed dump must leave the workload as it was: it still passes its check.
        d.obs.self_check = d.step("self-check after the failed dump", |lab| {
            self_check(lab, ready, pid, &p.state)
        });
        return;
    }
    if !restore {
        return;
    }
    if backend == Backend::Crlab {
        // What the engine predicts, from the kernel's access computation, before it tries.
        d.obs.check = d.step("crlab check --images-dir", |lab| {
            let argv = Backend::check_argv(&lab.place().bin, &s.engine, &p.images);
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            let r = lab
                .run(&argv, engine_ctx, Duration::from_secs(60))
                .map_err(|e| e.to_string())?;
            let said = format!(
                "{}{}",
                String::from_utf8_lossy(&r.stdout),
                String::from_utf8_lossy(&r.stderr)
            )
            .trim()
            .to_string();
            let outcome = match r.exit_code {
                0 => Outcome::Ok,
                1 => Outcome::Fail,
                other => return Err(format!("crlab check exited with {other}: {said}")),
            };
            Ok((
                ToolRun {
                    outcome,
                    said: said.clone(),
                },
                said,
            ))
        });
    }
    let pidfile = format!("{}/restored.pid", p.dir);
    let restore = d.step("restore", |lab| {
        // The originals must be gone (reaped) before their pids can be reused.
        let mut pids = vec![pid];
        pids.extend(members(ready)?);
        wait_gone(lab, &pids)?;
        let argv = backend.restore_argv(&lab.place().bin, &s.engine, &p.images, &pidfile);
        let run = run_tool(
            lab,
            backend,
            &argv,
            engine_ctx,
            &format!("{}/restore.log", p.images),
        )?;
        let said = run.said.clone();
        Ok((run, said))
    });
    let Some(restore) = restore else { return };
    let outcome = restore.outcome;
    d.obs.restore = Some(restore);
    if outcome == Outcome::Fail {
        // A failed restore leaves nothing behind: the original pid is free again.
        d.obs.left_after_failed_restore = d
            .step("look for what the failed restore left", |lab| {
                let (code, out, _) = sh(
                    lab,
                    &format!("test -e /proc/{pid} && head -3 /proc/{pid}/status"),
                    "",
                    30,
                )?;
                let left = (code == 0).then(|| format!("pid {pid}: {}", out.trim()));
                let detail = left.clone().unwrap_or_else(|| "nothing".into());
                Ok((left, detail))
            })
            .flatten();
        return;
    }
    let Some(root) = d.step("read the restored pid", |lab| {
        let text = lab
            .read_file(&pidfile)
            .map_err(|e| format!("the restore succeeded but its pid file {pidfile}: {e}"))?;
        let text = String::from_utf8_lossy(&text).trim().to_string();
        let pid = text
            .parse::<u32>()
            .map_err(|_| format!("the pid file {pidfile} holds {text:?}, not a pid"))?;
        Ok((pid, pid.to_string()))
    }) else {
        return;
    };
    if let Some(tree) = d.step("read the restored tree", |lab| {
        let mut tree = Vec::new();
        restored_tree(lab, root, &mut tree)?;
        let detail = tree
            .iter()
            .map(|p| format!("{} {}", p.pid, p.contexts().collect::<Vec<_>>().join(",")))
            .collect::<Vec<_>>()
            .join("; ");
        Ok((tree, detail))
    }) {
        d.obs.restored = tree;
    }
    d.obs.self_check = d.step("self-check", |lab| self_check(lab, ready, root, &p.state));
}

/// How long a dump or restore of a catalog workload may take: each takes a few seconds
/// under TCG. criu's is shorter: its dump was seen to hang now and then (on Fedora's policy,
/// after its parasite's `connectto` was denied), and a recorded trial must not hold the
/// catalog for minutes.
fn tool_limit(backend: Backend) -> Duration {
    match backend {
        Backend::Crlab => Duration::from_secs(120),
        Backend::Criu => Duration::from_secs(30),
    }
}

/// Runs a dump or restore command and records its outcome and what it said.
fn run_tool(
    lab: &mut Lab,
    backend: Backend,
    argv: &[String],
    context: &str,
    log: &str,
) -> Result<ToolRun, String> {
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let limit = tool_limit(backend);
    let r = lab.run(&argv, context, limit).map_err(|e| e.to_string())?;
    if r.timed_out {
        return Err(format!(
            "{} did not finish within {} s",
            argv.join(" "),
            limit.as_secs()
        ));
    }
    Ok(ToolRun {
        outcome: if r.exit_code == 0 {
            Outcome::Ok
        } else {
            Outcome::Fail
        },
        said: error_text(lab, backend, &r.stderr, log),
    })
}

fn collect_audit(d: &mut Driver<'_>, s: &Scenario, backend: Backend, marker: u64) -> u64 {
    let names = [
        s.workload.program.as_str(),
        backend.comm(),
        "sh",
        "env",
        "setpriv",
    ];
    d.step("collect audit records", |lab| {
        let a = lab.audit_since(marker).map_err(|e| e.to_string())?;
        let records: Vec<_> = a
            .records
            .iter()
            .filter_map(|l| audit::parse(l))
            .filter(|r| names.contains(&r.comm.as_str()) || r.kind == "SELINUX_ERR")
            .collect();
        let n = records.len();
        Ok(((records, a.next_marker), format!("{n} record(s)")))
    })
    .map_or(marker, |(records, next)| {
        d.obs.audit = records;
        next
    })
}

/// Stops what the trial started: its processes (killed by the agent, which waits until they
/// are gone or zombies), criu's boolean, its unit (`systemctl stop` and `reset-failed`, whose
/// exit codes say nothing here: the unit is often gone already). Every part is tried; what
/// failed is the step's error.
fn clean_up(d: &mut Driver<'_>, s: &Scenario, backend: Backend, unit: &str, p: &Setup) {
    d.step("clean up", |lab| {
        let mut failed = Vec::new();
        let said = match lab.kill_under(&p.dir) {
            Ok(pids) if pids.is_empty() => "nothing was left running".to_string(),
            Ok(pids) => format!(
                "killed {}",
                pids.iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
            Err(e) => {
                failed.push(e.to_string());
                String::new()
            }
        };
        if backend == Backend::Criu {
            if let Err(e) = program(lab, &["setsebool", CRIU_EXECMEM, "off"], true) {
                failed.push(e);
            }
        }
        if s.workload.start == Start::Unit {
            for action in ["stop", "reset-failed"] {
                if let Err(e) = program(lab, &["systemctl", action, unit], false) {
                    failed.push(e);
                }
            }
        }
        if failed.is_empty() {
            Ok(((), said))
        } else {
            Err(failed.join("; "))
        }
    });
}

/// The scenario policy modules loaded in the lab. A trial loads what it needs and removes
/// what it does not, and leaves its modules loaded for the next trial, which often needs the
/// same ones (the crlab and criu trials of a scenario, scenarios that share a module).
///
/// In a VM, each scenario module was compiled alone into a binary policy when the image
/// was built (`Place::variants`): switching is one load of that file into the kernel (under
/// half a second), and the policy store is never touched. A set of modules the image does
/// not hold precompiled (or any module in place) goes through one `semodule` transaction (a
/// policy rebuild, over a minute under TCG). The last trial's policy stays loaded until the
/// lab shuts down, which discards a VM's disk, so it never reaches another run. In place,
/// each module is recorded in the machine's state file before it is loaded, at crlab's own
/// priority (`Lab::place`), and the lab's shutdown (or an interrupt, or the next run)
/// removes them (`lab::host`).
#[derive(Debug, Default)]
pub struct LoadedModules {
    /// File names (`NAME.cil`) of the modules in the policy the kernel has now.
    active: Vec<String>,
    /// File names of the modules crlab put in the policy store (with `semodule`).
    stored: Vec<String>,
}

impl LoadedModules {
    /// Makes the loaded modules exactly `wanted`; says what it did.
    fn sync(
        &mut self,
        lab: &mut Lab,
        wanted: &[String],
        policy_dir: &Path,
    ) -> Result<((), String), String> {
        let same =
            |a: &[String], b: &[String]| a.len() == b.len() && a.iter().all(|m| b.contains(m));
        if same(&self.active, wanted) {
            return Ok(((), kept(wanted)));
        }
        let precompiled =
            wanted.len() <= 1 && wanted.iter().all(|m| lab.place().variants.contains(m));
        if self.stored.is_empty() && precompiled {
            return self.load_variant(lab, wanted);
        }
        self.rebuild(lab, wanted, policy_dir)
    }

    /// Loads the image's binary policy precompiled with `wanted` (at most one module; none:
    /// the image's own policy) in one write to `/sys/fs/selinux/load`, which must see the
    /// whole file at once.
    fn load_variant(&mut self, lab: &mut Lab, wanted: &[String]) -> Result<((), String), String> {
        let variant = wanted
            .first()
            .map_or(crlab_vm::image::BASE_VARIANT, |m| module_name(m));
        let file = format!("{}/{variant}", crlab_vm::image::POLICY_VARIANTS_DIR);
        let command = format!(
            "f={file}; dd if=$f of=/sys/fs/selinux/load bs=$(stat -c %s $f) count=1 \
             iflag=fullblock status=none"
        );
        let (code, _, e) = sh(lab, &command, "", 60)?;
        if code != 0 {
            // A failed load leaves the kernel's policy as it was.
            return Err(format!("loading the precompiled policy {file}: {e}"));
        }
        let said = if wanted.is_empty() {
            format!(
                "removed {} (loaded the image's own policy)",
                self.active.join(" ")
            )
        } else {
            format!(
                "loaded {} (the image's precompiled policy with it)",
                wanted.join(" ")
            )
        };
        self.active = wanted.to_vec();
        Ok(((), said))
    }

    /// Makes the policy store hold exactly `wanted` of crlab's modules, in one `semodule`
    /// transaction (which rebuilds and loads the policy).
    fn rebuild(
        &mut self,
        lab: &mut Lab,
        wanted: &[String],
        policy_dir: &Path,
    ) -> Result<((), String), String> {
        let remove: Vec<String> = self
            .stored
            .iter()
            .filter(|m| !wanted.contains(m))
            .cloned()
            .collect();
        let add: Vec<String> = wanted
            .iter()
            .filter(|m| !self.stored.contains(m))
            .cloned()
            .collect();
        // In place, what is loaded is recorded first, to be removed at the end.
        let names: Vec<String> = add.iter().map(|m| module_name(m).to_string()).collect();
        lab.will_load(&names).map_err(|e| e.to_string())?;
        let place = lab.place().clone();
        let mut args = Vec::new();
        if let Some(p) = place.priority {
            args.push(format!("-X {p}"));
        }
        for m in &remove {
            args.push(format!("-r {}", module_name(m)));
        }
        for m in &add {
            let data = std::fs::read(policy_dir.join(m))
                .map_err(|e| format!("reading policy module {m}: {e}"))?;
            // semodule runs in semanage_t, which may read /tmp but not /var/lib.
            let path = format!("{}/{m}", place.modules);
            lab.write_file(&path, &data, 0o644)
                .map_err(|e| e.to_string())?;
            args.push(format!("-i {path}"));
        }
        // Nothing to change in the store: rebuild it all the same, to replace a precompiled
        // policy the kernel has now.
        let command = if args.iter().all(|a| a.starts_with("-X")) {
            "semodule -B".to_string()
        } else {
            format!("semodule {}", args.join(" "))
        };
        let ran = sh(lab, &command, "", 240);
        // Whatever happened, ask the store what is loaded now.
        self.refresh(lab, wanted.iter().chain(&remove));
        let (code, _, e) = ran?;
        if code != 0 {
            return Err(format!("{command}: {e}"));
        }
        self.active = self.stored.clone();
        let mut said = Vec::new();
        if !add.is_empty() {
            said.push(format!("loaded {}", add.join(" ")));
        }
        if !remove.is_empty() {
            said.push(format!("removed {}", remove.join(" ")));
        }
        said.push("with semodule".into());
        Ok(((), said.join("; ")))
    }

    /// Re-reads which of `names` the policy store holds (`semodule -l`).
    fn refresh<'a>(&mut self, lab: &mut Lab, names: impl Iterator<Item = &'a String>) {
        let listed = match sh(lab, "semodule -l", "", 60) {
            Ok((0, out, _)) => out,
            _ => return,
        };
        let present: Vec<&str> = listed.split_whitespace().collect();
        let mut now: Vec<String> = names
            .filter(|m| present.contains(&module_name(m)))
            .cloned()
            .collect();
        now.sort();
        now.dedup();
        self.stored = now;
    }
}

/// What a trial whose modules are already loaded says of them.
fn kept(wanted: &[String]) -> String {
    if wanted.is_empty() {
        String::new()
    } else {
        format!("{} (already loaded)", wanted.join(" "))
    }
}

/// A module's name in the store: its file name without `.cil`.
fn module_name(file: &str) -> &str {
    file.trim_end_matches(".cil")
}

/// Runs a shell script in the guest: (exit code, -2 on its deadline; stdout; stderr).
pub(crate) fn sh(
    lab: &mut Lab,
    script: &str,
    context: &str,
    secs: u64,
) -> Result<(i32, String, String), String> {
    let r = lab
        .run(
            &["/bin/sh", "-c", script],
            context,
            Duration::from_secs(secs),
        )
        .map_err(|e| e.to_string())?;
    Ok((
        if r.timed_out { -2 } else { r.exit_code },
        String::from_utf8_lossy(&r.stdout).into_owned(),
        String::from_utf8_lossy(&r.stderr).into_owned(),
    ))
}

/// Waits (in the guest, up to 10 s each) until none of `pids` exists.
pub(crate) fn wait_gone(lab: &mut Lab, pids: &[u32]) -> Result<(), String> {
    lab.wait_gone(pids, Duration::from_secs(10))
        .map_err(|e| format!("the dumped processes did not go away within 10 s: {e}"))
}

/// Starts the workload as a transient systemd service, in `context` when one is given
/// (`SELinuxContext=`; else systemd's own transition for the program), its output appended to
/// `log`; returns its main pid.
fn start_unit(
    lab: &mut Lab,
    unit: &str,
    argv: &[&str],
    env: &[&str],
    context: &str,
    log: &str,
) -> Result<u32, String> {
    lab.will_start_unit(unit).map_err(|e| e.to_string())?;
    let mut script = format!(
        "systemctl reset-failed {unit} 2>/dev/null; systemd-run --quiet --unit={unit} --collect \
         --property=StandardOutput=append:{log} --property=StandardError=append:{log}"
    );
    if !context.is_empty() {
        script += &format!(" --property=SELinuxContext={context}");
    }
    for e in env {
        script += &format!(" --setenv='{e}'");
    }
    for a in argv {
        script += &format!(" '{a}'");
    }
    script += &format!(" && systemctl show --property=MainPID --value {unit}");
    let (code, out, e) = sh(lab, &script, "", 60)?;
    if code != 0 {
        return Err(format!("systemd-run of {unit} failed ({code}): {e}{out}"));
    }
    match out.trim().parse::<u32>() {
        Ok(pid) if pid != 0 => Ok(pid),
        _ => {
            // It is already gone: what systemd and the program said is the error.
            let (_, journal, _) = sh(
                lab,
                &format!("journalctl -u {unit} -n 15 --no-pager -o cat; tail -n 15 {log}"),
                "",
                30,
            )
            .unwrap_or_default();
            Err(format!(
                "{unit} has no main pid ({:?}): it exited at once; its journal and output end \
                 with:\n{}",
                out.trim(),
                journal.trim_end()
            ))
        }
    }
}

/// The restored tree under `pid`, in pre-order with children by pid: each thread's id,
/// context and credentials, read once.
fn restored_tree(lab: &mut Lab, pid: u32, out: &mut Vec<RestoredProcess>) -> Result<(), String> {
    if out.len() >= MAX_RESTORED {
        return Err(format!(
            "more than {MAX_RESTORED} restored processes: a runaway tree?"
        ));
    }
    // One program for the whole process (under TCG, a fork and exec costs about 0.1 s):
    // each line is `TID/FILE:LINE`.
    let (code, text, e) = sh(
        lab,
        &format!("cd /proc/{pid}/task && grep -a -H '' */attr/current */status */children"),
        "",
        30,
    )?;
    if code != 0 {
        return Err(format!("reading restored process {pid}: {e}"));
    }
    let (threads, mut children) = parse_process(&text);
    children.sort_unstable();
    out.push(RestoredProcess { pid, threads });
    for child in children {
        restored_tree(lab, child, out)?;
    }
    Ok(())
}

/// Parses what [`restored_tree`]'s `grep` prints for one process: its threads (by tid)
/// with their contexts and credentials, and its children.
fn parse_process(text: &str) -> (Vec<ThreadState>, Vec<u32>) {
    let mut threads: Vec<ThreadState> = Vec::new();
    let mut children = Vec::new();
    for line in text.lines() {
        let Some((path, value)) = line.split_once(':') else {
            continue;
        };
        let Some((tid, file)) = path.split_once('/') else {
            continue;
        };
        let Ok(tid) = tid.parse::<u32>() else {
            continue;
        };
        let at = match threads.iter().position(|t| t.tid == tid) {
            Some(i) => i,
            None => {
                threads.push(ThreadState {
                    tid,
                    context: String::new(),
                    credentials: Vec::new(),
                });
                threads.len() - 1
            }
        };
        let thread = &mut threads[at];
        match file {
            "attr/current" => thread.context = value.replace('\0', "").trim_end().to_string(),
            "status"
                if ["Uid:", "Gid:", "Groups:"]
                    .iter()
                    .any(|k| value.starts_with(k)) =>
            {
                thread.credentials.push(value.trim_end().to_string());
            }
            "children" => children.extend(
                value
                    .split_whitespace()
                    .filter_map(|p| p.parse::<u32>().ok()),
            ),
            _ => {}
        }
    }
    threads.sort_by_key(|t| t.tid);
    (threads, children)
}

/// Asks the workload to check itself and returns its answer.
fn self_check(
    lab: &mut Lab,
    ready: &Ready,
    pid: u32,
    state: &str,
) -> Result<(SelfCheck, String), String> {
    let pid = i32::try_from(pid).map_err(|_| format!("pid {pid} is out of range"))?;
    let mut driver = driver(lab, state);
    driver
        .trigger(ready, pid)
        .map_err(|e| format!("triggering the workload: {}", e.with_sources()))?;
    let outcome = driver
        .wait_result(WORKLOAD_LIMIT, || None)
        .map_err(|e| e.with_sources())?;
    Ok(match outcome {
        protocol::Outcome::Passed => (SelfCheck::Passed, outcome.to_string()),
        protocol::Outcome::Failed(text) => (SelfCheck::Failed(text.clone()), text),
    })
}

/// The workloads' driver for the workload whose state dir is `state` in the guest. It cannot
/// tell whether the workload still runs, so its waits end on their file or their deadline.
pub(crate) fn driver<'a>(lab: &'a mut Lab, state: &str) -> WorkloadDriver<Guest<'a>> {
    WorkloadDriver::new(Guest(lab), state).polling_every(GUEST_POLL)
}

/// The guest as the workloads' driver sees it: files read and written, the trigger and
/// signals made by the agent itself, as root in its domain.
pub(crate) struct Guest<'a>(&'a mut Lab);

/// What the guest could not do for the driver.
#[derive(Debug, thiserror::Error)]
pub(crate) enum GuestError {
    #[error(transparent)]
    Lab(#[from] LabError),
    #[error("{0:?} is not a UTF-8 path")]
    Path(PathBuf),
    #[error("pid {0} is out of range")]
    Pid(i32),
}

fn guest_path(path: &Path) -> Result<&str, GuestError> {
    path.to_str()
        .ok_or_else(|| GuestError::Path(path.to_owned()))
}

fn guest_pid(pid: i32) -> Result<u32, GuestError> {
    u32::try_from(pid).map_err(|_| GuestError::Pid(pid))
}

impl Host for Guest<'_> {
    type Error = GuestError;

    fn read(&mut self, path: &Path) -> Result<Option<Vec<u8>>, GuestError> {
        match self.0.read_file(guest_path(path)?) {
            Ok(data) => Ok(Some(data)),
            // The agent could not open it: not there yet (waiting tells the rest).
            Err(LabError::Agent(AgentError::Refused { .. })) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    fn write_at(&mut self, path: &Path, offset: u64, bytes: &[u8]) -> Result<(), GuestError> {
        Ok(self.0.write_at(guest_path(path)?, offset, bytes)?)
    }

    fn create(&mut self, path: &Path) -> Result<(), GuestError> {
        Ok(self.0.write_file(guest_path(path)?, b"", 0)?)
    }

    fn write_fd(&mut self, pid: i32, fd: i32, bytes: &[u8]) -> Result<(), GuestError> {
        Ok(self.0.write_fd(guest_pid(pid)?, fd, bytes)?)
    }

    fn signal(&mut self, pid: i32, signal: i32) -> Result<(), GuestError> {
        Ok(self.0.signal(guest_pid(pid)?, signal)?)
    }
}

/// What a tool said: crlab's stderr; criu's own error lines from its log.
fn error_text(lab: &mut Lab, backend: Backend, stderr: &[u8], log: &str) -> String {
    let stderr = String::from_utf8_lossy(stderr).trim().to_string();
    if backend == Backend::Crlab {
        return stderr;
    }
    let Ok(log) = lab.read_file(log) else {
        return stderr;
    };
    let log = String::from_utf8_lossy(&log);
    let errors: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("Error") || l.contains("error"))
        .collect();
    let tail = &errors[errors.len().saturating_sub(6)..];
    format!("{stderr}\n{}", tail.join("\n")).trim().to_string()
}

/// The pids of the members a tree workload announced (`member-NAME PID`).
fn members(ready: &Ready) -> Result<Vec<u32>, String> {
    ready
        .extra
        .iter()
        .filter(|(k, _)| k.starts_with("member-"))
        .map(|(k, v)| {
            v.parse::<u32>()
                .map_err(|_| format!("the ready file's {k} is {v:?}, not a pid"))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_process_is_read_with_each_threads_context_and_credentials() {
        let text = "101/attr/current:system_u:system_r:container_t:s0:c1,c2\0\n\
                    99/attr/current:system_u:system_r:container_t:s0:c1,c2\0\n\
                    101/status:Name:\tmemory\n\
                    101/status:Uid:\t0\t0\t0\t0\n101/status:Gid:\t0\t0\t0\t0\n\
                    101/status:Groups:\t\n101/status:VmRSS:\t100 kB\n\
                    99/status:Uid:\t0\t0\t0\t0\n99/status:Gid:\t0\t0\t0\t0\n\
                    99/status:Groups:\t\n99/children:104 \n101/children:102 \n";
        let (threads, children) = parse_process(text);
        assert_eq!(children, [104, 102]);
        assert_eq!(threads[0].tid, 99);
        assert_eq!(threads.len(), 2);
        assert_eq!(threads[1].tid, 101);
        assert_eq!(threads[1].context, "system_u:system_r:container_t:s0:c1,c2");
        assert_eq!(threads[1].credentials.len(), 3);
        assert_eq!(threads[1].credentials[2], "Groups:");
    }
}
