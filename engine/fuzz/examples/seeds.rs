//! The seeds of the image fuzz targets, made from a real dump:
//! `cargo +nightly run --example seeds -- DUMP_DIR OUT_DIR` writes `OUT_DIR/<target>/<name>`
//! for `framing`, `image_file`, `inventory` and `show`.
//!
//! Page data is cut to one page (none in the `show` seed), so that every seed stays a few
//! KiB; the `show` seed therefore carries a computed inventory (the dump's own would not match
//! the cut pages files).

use std::fs;
use std::path::Path;
use std::process::ExitCode;

use crlab::image::{parse_name, FileKind, PAGE_SIZE};
use crlab_fuzz::{body_of, selector_of, DirInput, FileRecord, ID};

/// A developer's tool: its errors are lines for a terminal.
type Error = String;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [dump, out] = args.as_slice() else {
        eprintln!("usage: seeds DUMP_DIR OUT_DIR");
        return ExitCode::FAILURE;
    };
    match run(Path::new(dump), Path::new(out)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Cuts a pages file to its header and its first `pages` pages.
fn cut(kind: FileKind, bytes: &[u8], pages: usize) -> Vec<u8> {
    if kind == FileKind::Pages {
        let keep = (16 + pages * PAGE_SIZE as usize).min(bytes.len());
        bytes[..keep].to_vec()
    } else {
        bytes.to_vec()
    }
}

fn run(dump: &Path, out: &Path) -> Result<(), Error> {
    let mut files = Vec::new();
    let mut entries: Vec<_> = fs::read_dir(dump)
        .map_err(|e| format!("reading {}: {e}", dump.display()))?
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(parsed) = parse_name(&name) else {
            continue;
        };
        let bytes = fs::read(entry.path()).map_err(|e| format!("reading {name}: {e}"))?;
        files.push((parsed.kind, name, cut(parsed.kind, &bytes, 1)));
    }
    if files.is_empty() {
        return Err(format!("{} holds no image file", dump.display()));
    }
    let write = |target: &str, name: &str, bytes: &[u8]| -> Result<(), Error> {
        let dir = out.join(target);
        fs::create_dir_all(&dir).map_err(|e| format!("creating {}: {e}", dir.display()))?;
        fs::write(dir.join(name), bytes).map_err(|e| format!("writing {name}: {e}"))
    };
    let mut root_pid = ID;
    for (kind, name, bytes) in &files {
        let stem = name.trim_end_matches(".img");
        if *kind == FileKind::Inventory {
            write("inventory", stem, bytes)?;
            continue;
        }
        let Some(selector) = selector_of(*kind) else {
            continue;
        };
        let mut raw = vec![selector];
        raw.extend_from_slice(bytes);
        write("framing", stem, &raw)?;
        if let Some(body) = body_of(*kind, bytes) {
            let mut seed = vec![selector];
            seed.extend_from_slice(body);
            write("image_file", stem, &seed)?;
        }
        if *kind == FileKind::PsTree {
            if let Some(body) = body_of(*kind, bytes) {
                use prost::Message;
                if let Ok(tree) = crlab::image::schema::PsTree::decode(body) {
                    root_pid = tree.processes.first().map_or(ID, |p| p.pid);
                }
            }
        }
    }
    let dir = DirInput {
        raw_inventory: false,
        root_pid,
        files: files
            .into_iter()
            .filter(|(kind, ..)| *kind != FileKind::Inventory)
            .map(|(kind, name, bytes)| FileRecord {
                bytes: cut(kind, &bytes, 0),
                name,
            })
            .collect(),
    };
    write("show", "dump", &dir.encode())?;
    Ok(())
}
