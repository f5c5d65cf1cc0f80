//! The agent's command line: which channel to serve, where the audit log is, and test switches.

use std::{os::fd::RawFd, path::PathBuf};

/// The virtio-serial port QEMU's `virtserialport,name=org.crlab.agent` shows in the guest.
pub const DEFAULT_DEVICE: &str = "/dev/virtio-ports/org.crlab.agent";

/// Where auditd writes its log in the guest.
pub const DEFAULT_AUDIT_LOG: &str = "/var/log/audit/audit.log";

pub const USAGE: &str = "\
usage: crlab-agent [CHANNEL] [OPTIONS]

Serves the crlab guest channel: reads framed Requests, answers each with a Response.

CHANNEL (one of; default --device /dev/virtio-ports/org.crlab.agent):
  --device PATH      open PATH read-write (the virtio-serial port); when the host
                     side goes away, wait for it to come back
  --connect PATH     connect to the UNIX stream socket at PATH; stop when it closes
  --fd N             serve the inherited file descriptor N (what Reexec passes)
  --stdio            read requests on stdin, answer on stdout; stop at end of input

OPTIONS:
  --persistent       with --fd: end of input means the host went away, wait for it
  --audit-log PATH   read audit records from PATH, always (default: the auditd log
                     /var/log/audit/audit.log while auditd runs, else the kernel log)
  --poweroff-exits   PowerOff ends the agent instead of powering the machine off
                     (for tests on a host)
  --adopt PID,...    reap these children of a previous agent image (what Reexec passes)
  --help             print this and exit
  --version          print the version and exit
";

/// Where the requests come from and the responses go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChannelSpec {
    Device(PathBuf),
    Connect(PathBuf),
    Fd { fd: RawFd, persistent: bool },
    Stdio,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub channel: ChannelSpec,
    /// An audit log named on the command line: always read, never the kernel log.
    pub audit_log: Option<PathBuf>,
    pub poweroff_exits: bool,
    pub adopt: Vec<i32>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            channel: ChannelSpec::Device(PathBuf::from(DEFAULT_DEVICE)),
            audit_log: None,
            poweroff_exits: false,
            adopt: Vec::new(),
        }
    }
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
pub enum Invocation {
    Serve(Config),
    Help,
    Version,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{flag} needs a value (see --help)")]
    MissingValue { flag: String },
    #[error("{flag} {value}: not a valid {what}")]
    BadValue {
        flag: String,
        value: String,
        what: &'static str,
    },
    #[error("unknown argument {0:?} (see --help)")]
    Unknown(String),
    #[error("{0} and {1} both name a channel: give only one")]
    TwoChannels(String, String),
    #[error("--persistent only applies to --fd")]
    PersistentWithoutFd,
}

impl Invocation {
    /// Parses the arguments after the program name.
    pub fn parse<I, S>(args: I) -> Result<Self, ConfigError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut config = Config::default();
        let mut channel: Option<(String, ChannelSpec)> = None;
        let mut persistent = false;
        let mut args = args.into_iter().map(Into::into);
        while let Some(flag) = args.next() {
            let mut value = |flag: &str| {
                args.next().ok_or_else(|| ConfigError::MissingValue {
                    flag: flag.to_owned(),
                })
            };
            let spec = match flag.as_str() {
                "--help" | "-h" => return Ok(Self::Help),
                "--version" | "-V" => return Ok(Self::Version),
                "--device" => Some(ChannelSpec::Device(value(&flag)?.into())),
                "--connect" => Some(ChannelSpec::Connect(value(&flag)?.into())),
                "--fd" => {
                    let v = value(&flag)?;
                    let fd = v
                        .parse::<RawFd>()
                        .ok()
                        .filter(|fd| *fd >= 0)
                        .ok_or_else(|| ConfigError::BadValue {
                            flag: flag.clone(),
                            value: v.clone(),
                            what: "file descriptor number",
                        })?;
                    Some(ChannelSpec::Fd {
                        fd,
                        persistent: false,
                    })
                }
                "--stdio" => Some(ChannelSpec::Stdio),
                "--persistent" => {
                    persistent = true;
                    None
                }
                "--audit-log" => {
                    config.audit_log = Some(value(&flag)?.into());
                    None
                }
                "--poweroff-exits" => {
                    config.poweroff_exits = true;
                    None
                }
                "--adopt" => {
                    let v = value(&flag)?;
                    for pid in v.split(',').filter(|p| !p.is_empty()) {
                        let pid = pid.parse::<i32>().ok().filter(|p| *p > 0).ok_or_else(|| {
                            ConfigError::BadValue {
                                flag: flag.clone(),
                                value: v.clone(),
                                what: "comma-separated list of pids",
                            }
                        })?;
                        config.adopt.push(pid);
                    }
                    None
                }
                _ => return Err(ConfigError::Unknown(flag)),
            };
            if let Some(spec) = spec {
                if let Some((first, _)) = &channel {
                    return Err(ConfigError::TwoChannels(first.clone(), flag));
                }
                channel = Some((flag, spec));
            }
        }
        match channel {
            Some((_, ChannelSpec::Fd { fd, .. })) => {
                config.channel = ChannelSpec::Fd { fd, persistent }
            }
            Some(_) | None if persistent => return Err(ConfigError::PersistentWithoutFd),
            Some((_, spec)) => config.channel = spec,
            None => {}
        }
        Ok(Self::Serve(config))
    }
}

impl Config {
    /// The options (all but the channel) a re-executed agent must get again.
    pub fn carried_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(log) = &self.audit_log {
            args.push("--audit-log".to_owned());
            args.push(log.display().to_string());
        }
        if self.poweroff_exits {
            args.push("--poweroff-exits".to_owned());
        }
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rstest::rstest;

    fn serve(args: &[&str]) -> Config {
        match Invocation::parse(args.iter().copied()).unwrap() {
            Invocation::Serve(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn defaults_to_the_virtio_port() {
        assert_eq!(serve(&[]), Config::default());
        assert_eq!(
            Config::default().channel,
            ChannelSpec::Device(DEFAULT_DEVICE.into())
        );
    }

    #[rstest]
    #[case(&["--stdio"], ChannelSpec::Stdio)]
    #[case(&["--connect", "/tmp/s"], ChannelSpec::Connect("/tmp/s".into()))]
    #[case(&["--fd", "3"], ChannelSpec::Fd { fd: 3, persistent: false })]
    #[case(&["--persistent", "--fd", "7"], ChannelSpec::Fd { fd: 7, persistent: true })]
    #[case(&["--device", "/dev/vport1p1"], ChannelSpec::Device("/dev/vport1p1".into()))]
    fn picks_the_channel(#[case] args: &[&str], #[case] want: ChannelSpec) {
        assert_eq!(serve(args).channel, want);
    }

    #[test]
    fn reads_options_and_carries_them_over_a_reexec() {
        let c = serve(&[
            "--stdio",
            "--audit-log",
            "/tmp/audit.log",
            "--poweroff-exits",
            "--adopt",
            "12,34",
        ]);
        assert_eq!(c.audit_log, Some("/tmp/audit.log".into()));
        assert!(c.poweroff_exits);
        assert_eq!(c.adopt, vec![12, 34]);
        assert_eq!(
            c.carried_args(),
            ["--audit-log", "/tmp/audit.log", "--poweroff-exits"]
        );
    }

    #[rstest]
    #[case(&["--fd"], "--fd needs a value")]
    #[case(&["--fd", "x"], "--fd x: not a valid file descriptor number")]
    #[case(&["--adopt", "1,-2"], "not a valid comma-separated list of pids")]
    #[case(&["--stdio", "--fd", "3"], "--stdio and --fd both name a channel")]
    #[case(&["--persistent"], "--persistent only applies to --fd")]
    #[case(&["--bogus"], "unknown argument \"--bogus\"")]
    fn rejects_bad_command_lines(#[case] args: &[&str], #[case] want: &str) {
        let err = Invocation::parse(args.iter().copied()).unwrap_err();
        assert!(err.to_string().contains(want), "{err}");
    }

    #[test]
    fn help_and_version_win() {
        assert_eq!(
            Invocation::parse(["--stdio", "--help"]).unwrap(),
            Invocation::Help
        );
        assert_eq!(
            Invocation::parse(["--version"]).unwrap(),
            Invocation::Version
        );
    }
}
