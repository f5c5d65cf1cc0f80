//! `crlab-lab image build|list|clean`: the lab image cache, for `cargo xtask image`.

use crlab_harness::lab::{recipe, session::UNIT};
use crlab_vm::image;
use std::path::PathBuf;
use std::process::ExitCode;

const USAGE: &str =
    "usage: crlab-lab image build --agent PATH --policy DIR | image list | image clean";

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
