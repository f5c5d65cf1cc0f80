//! `crlab-agent`: the guest agent binary (see the `crlab_agent` library and `--help`).

use std::process::ExitCode;

use anyhow::Context;
use crlab_agent::{config::USAGE, serve, Agent, Channel, Ended, Invocation};

fn main() -> ExitCode {
    // stderr only: journald takes it under systemd; the serial console is never written.
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("crlab-agent: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let config =
        match Invocation::parse(std::env::args().skip(1)).context("reading the command line")? {
            Invocation::Help => {
                print!("{USAGE}");
                return Ok(());
            }
            Invocation::Version => {
                println!("crlab-agent {}", env!("CARGO_PKG_VERSION"));
                return Ok(());
            }
            Invocation::Serve(config) => config,
        };
    let mut channel = Channel::open(&config.channel)
        .with_context(|| format!("opening the channel {:?}", config.channel))?;
    tracing::info!(version = env!("CARGO_PKG_VERSION"), channel = ?config.channel, "serving");
    let agent = Agent::new(config);
    match serve(&agent, &mut channel).context("serving the channel")? {
        Ended::PeerClosed => tracing::info!("the peer closed the channel"),
        Ended::PowerOff => tracing::info!("powered off (agent only)"),
    }
    Ok(())
}
