//! The checkpoint/restore tools a trial drives, and their command lines built from the
//! scenario's typed engine options.

use crate::scenario::{Engine, Scenario};
use serde::{Deserialize, Serialize};

/// Where the payload binaries live in a lab VM (in place: a private directory, see
/// `Lab::place`).
pub const GUEST_BIN: &str = "/opt/crlab/bin";

/// Which checkpoint/restore tool a trial drives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// crlab, the engine under test: its outcomes must be the scenario's.
    Crlab,
    /// The image's own criu (Debian's build, without libselinux): its outcomes are recorded
    /// and compared with crlab's, not required to match the scenario's.
    Criu,
}

/// Options of every criu run: the workloads share the agent's session, and criu logs at
/// level 4 into the images directory, where the runner reads its errors.
const CRIU_COMMON: [&str; 2] = ["--shell-job", "-v4"];

impl Backend {
    pub const ALL: [Backend; 2] = [Backend::Crlab, Backend::Criu];

    pub fn name(self) -> &'static str {
        match self {
            Backend::Crlab => "crlab",
            Backend::Criu => "criu",
        }
    }

    /// The command names whose audit records belong to a trial of this backend.
    pub fn comm(self) -> &'static str {
        self.name()
    }

    /// Whether the scenario's outcomes are required of this backend (else recorded).
    pub fn judged(self) -> bool {
        self == Backend::Crlab
    }

    fn program(self, bin: &str, verb: &str) -> Vec<String> {
        match self {
            Backend::Crlab => vec![format!("{bin}/crlab"), verb.into()],
            Backend::Criu => vec!["criu".into(), verb.into()],
        }
    }

    fn criu_log(argv: &mut Vec<String>, log: &str) {
        argv.extend(CRIU_COMMON.map(String::from));
        argv.extend(["--log-file".into(), log.into()]);
    }

    pub fn dump_argv(self, bin: &str, e: &Engine, pid: u32, images: &str) -> Vec<String> {
        let mut argv = self.program(bin, "dump");
        argv.extend([
            "--tree".into(),
            pid.to_string(),
            "--images-dir".into(),
            images.into(),
        ]);
        match self {
            Backend::Crlab => argv.extend(
                e.negative_control
                    .map(|c| c.flag())
                    .filter(|(_, dump)| *dump)
                    .map(|(flag, _)| flag.to_string()),
            ),
            Backend::Criu => Self::criu_log(&mut argv, "dump.log"),
        }
        argv
    }

    pub fn restore_argv(self, bin: &str, e: &Engine, images: &str, pidfile: &str) -> Vec<String> {
        let mut argv = self.program(bin, "restore");
        argv.push(
            match self {
                Backend::Crlab => "--detach",
                Backend::Criu => "--restore-detached",
            }
            .into(),
        );
        argv.extend([
            "--images-dir".into(),
            images.into(),
            "--pidfile".into(),
            pidfile.into(),
        ]);
        match self {
            Backend::Crlab => {
                if let Some(ctx) = &e.target_context {
                    argv.extend(["--lsm-profile".into(), ctx.clone()]);
                }
                argv.extend(
                    e.negative_control
                        .map(|c| c.flag())
                        .filter(|(_, dump)| !*dump)
                        .map(|(flag, _)| flag.to_string()),
                );
            }
            Backend::Criu => {
                Self::criu_log(&mut argv, "restore.log");
                // criu spells the context override with the LSM's name.
                if let Some(ctx) = &e.target_context {
                    argv.extend(["--lsm-profile".into(), format!("selinux:{ctx}")]);
                }
            }
        }
        argv
    }

    /// `crlab check --images-dir` as the restore would run it (crlab only).
    pub fn check_argv(bin: &str, e: &Engine, images: &str) -> Vec<String> {
        let mut argv = Backend::Crlab.program(bin, "check");
        argv.extend(["--images-dir".into(), images.into()]);
        if let Some(ctx) = &e.target_context {
            argv.extend(["--lsm-profile".into(), ctx.clone()]);
        }
        argv
    }

    /// The scenario's engine options that this backend cannot express (it runs without them).
    pub fn unexpressed_options(self, s: &Scenario) -> Vec<String> {
        match (self, s.engine.negative_control) {
            (Backend::Criu, Some(c)) => vec![c.flag().0.to_string()],
            _ => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenario::NegativeControl;

    #[test]
    fn typed_options_become_each_tools_flags() {
        let e = Engine {
            context: String::new(),
            target_context: Some("system_u:system_r:container_t:s0:c5,c6".into()),
            negative_control: Some(NegativeControl::ContextAfterThreads),
        };
        let crlab = Backend::Crlab
            .restore_argv(GUEST_BIN, &e, "/i", "/p")
            .join(" ");
        assert_eq!(
            crlab,
            "/opt/crlab/bin/crlab restore --detach --images-dir /i --pidfile /p \
             --lsm-profile system_u:system_r:container_t:s0:c5,c6 --unsafe-context-after-threads"
        );
        let criu = Backend::Criu
            .restore_argv(GUEST_BIN, &e, "/i", "/p")
            .join(" ");
        assert!(criu.ends_with("--lsm-profile selinux:system_u:system_r:container_t:s0:c5,c6"));
        assert!(!criu.contains("--unsafe"));
        assert_eq!(
            Backend::Crlab.dump_argv(GUEST_BIN, &e, 7, "/i").join(" "),
            "/opt/crlab/bin/crlab dump --tree 7 --images-dir /i",
            "a restore control is not a dump flag"
        );
        let dump_control = Engine {
            negative_control: Some(NegativeControl::UnlabelledTransport),
            ..e
        };
        assert!(Backend::Crlab
            .dump_argv(GUEST_BIN, &dump_control, 7, "/i")
            .ends_with(&["--unsafe-unlabelled-transport".to_string()]));
        assert!(Backend::check_argv(GUEST_BIN, &dump_control, "/i")
            .contains(&"--lsm-profile".to_string()));
    }
}
