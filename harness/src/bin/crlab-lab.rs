//! `crlab-lab image build|list|clean`: the lab image cache, for `cargo xtask image`;
//! `crlab-lab run`: one command in the lab VM, for `cargo xtask lab-run` (looking around
//! in the guest while writing a scenario).

use crlab_harness::lab::{recipe, session::UNIT, Lab, LabOptions};
use crlab_vm::image;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str =
    "usage: crlab-lab image build --agent PATH --policy DIR | image list | image clean\n       \
     crlab-lab run --agent PATH --policy DIR --run-dir DIR [--context CTX] -- COMMAND [ARG]...";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let result = match args.as_slice() {
        ["image", "list"] => list(),
        ["image", "clean"] => image::clean().map_err(|e| e.to_string()).map(|()| {
            println!("removed every cached lab image and saved VM state");
        }),
        ["image", "build", "--agent", agent, "--policy", policy] => {
            build(PathBuf::from(agent), PathBuf::from(policy))
        }
        ["run", "--agent", agent, "--policy", policy, "--run-dir", dir, rest @ ..] => {
            let (context, argv) = match rest {
                ["--context", ctx, "--", argv @ ..] => (*ctx, argv),
                ["--", argv @ ..] => ("", argv),
                _ => return usage(),
            };
            if argv.is_empty() {
                return usage();
            }
            run(agent, policy, dir, context, argv)
        }
        _ => Err(USAGE.to_string()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("crlab-lab: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn usage() -> ExitCode {
    eprintln!("crlab-lab: error: {USAGE}");
    ExitCode::FAILURE
}

/// Starts the lab (warm when it can), runs `argv` in `context` and prints its output; exits
/// with the command's status.
fn run(agent: &str, policy: &str, dir: &str, context: &str, argv: &[&str]) -> Result<(), String> {
    let opts = LabOptions {
        qemu: std::env::var("CRLAB_QEMU").unwrap_or_else(|_| "qemu-system-x86_64".into()),
        memory_mib: 1024,
        cpus: 2,
        run_dir: PathBuf::from(dir),
        agent: PathBuf::from(agent),
        policy_modules: recipe::policy_modules(&PathBuf::from(policy))?,
        cold_boot_timeout: std::time::Duration::from_secs(600),
    };
    std::fs::create_dir_all(dir).map_err(|e| format!("creating {dir}: {e}"))?;
    let mut lab =
        Lab::start(&opts, &mut |m| eprintln!("[lab] {m}")).map_err(|e| format!("{e:#}"))?;
    let r = lab.run(argv, context, std::time::Duration::from_secs(300));
    lab.shutdown();
    let _ = std::fs::remove_dir_all(dir);
    let r = r.map_err(|e| format!("{e:#}"))?;
    use std::io::Write;
    let _ = std::io::stdout().write_all(&r.stdout);
    let _ = std::io::stderr().write_all(&r.stderr);
    if r.timed_out {
        return Err("the command did not finish within 300 s".into());
    }
    if r.exit_code != 0 {
        return Err(format!("the command exited with {}", r.exit_code));
    }
    Ok(())
}

fn list() -> Result<(), String> {
    let images = image::list().map_err(|e| e.to_string())?;
    if images.is_empty() {
        println!("no cached lab image");
    }
    for (key, bytes) in images {
        println!("{key:<40} {:>8.1} MiB", bytes as f64 / (1 << 20) as f64);
    }
    Ok(())
}

fn build(agent: PathBuf, policy: PathBuf) -> Result<(), String> {
    let agent = std::fs::read(&agent).map_err(|e| format!("reading {}: {e}", agent.display()))?;
    let modules = recipe::policy_modules(&policy)?;
    let r = recipe::debian(agent, UNIT, modules);
    let img = image::ensure(&r, &mut |m| eprintln!("{m}")).map_err(|e| e.to_string())?;
    println!("lab image {} is ready in {}", img.key, img.dir.display());
    Ok(())
}
