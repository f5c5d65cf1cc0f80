//! The tidy test (rust-analyzer's habit): reads the source tree and checks the invariants
//! ARCHITECTURE.md states about it, so they stay true. Each check lists every offender as
//! `path:line: what`, then fails.
//!
//! The rules, precisely:
//!
//! - **Raw `libc` calls only in `engine/src/sys/`.** Outside it, a `libc::` path may name a
//!   constant (`libc::SYS_open`, `libc::O_CLOEXEC`, an upper-case name) or a type
//!   (`libc::pid_t`, `libc::sa_family_t`, a lower-case name *not* followed by `(`), but never
//!   a function: `libc::name(` is a raw call, and so is an `unsafe` block, which is the other
//!   way in. Comments and string literals do not count.
//! - **`dump`, `restore` and `check` are siblings.** No file of one names another, by
//!   `crate::other`, by a `crate::{.., other, ..}` group, or by `super::` chains that climb
//!   to it.
//! - **Every module says what it owns.** Every `.rs` file of the repository (outside
//!   `target/` and hidden directories) starts with a `//!` line.

use std::fs;
use std::path::{Path, PathBuf};

/// The three engine modules that must not import each other.
const SIBLINGS: [&str; 3] = ["dump", "restore", "check"];

/// The repository root: the parent of xtask's manifest directory.
fn repo_root() -> PathBuf {
    let xtask = Path::new(env!("CARGO_MANIFEST_DIR"));
    xtask
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| xtask.to_path_buf())
}

/// Every `.rs` file below `dir`, sorted, skipping `target/` and hidden directories.
fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries =
            fs::read_dir(&dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .path();
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            if path.is_dir() {
                if name != "target" && !name.starts_with('.') {
                    stack.push(path);
                }
            } else if name.ends_with(".rs") {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

fn read(path: &Path) -> String {
    fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// `path` relative to the repository root, for messages.
fn shown(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .display()
        .to_string()
}

/// Fails listing every offender, if there is one.
fn report(what: &str, offenders: &[String]) {
    assert!(
        offenders.is_empty(),
        "{what}: {} offender(s)\n{}\n",
        offenders.len(),
        offenders.join("\n")
    );
}

/// The code of a Rust file with comments and the contents of string and character literals
/// blanked out (newlines kept, so offsets still give line numbers).
fn code_only(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        if c == '/' && next == Some('/') {
            while i < chars.len() && chars[i] != '\n' {
                out.push(' ');
                i += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0;
            while i < chars.len() {
                if chars[i] == '/' && chars.get(i + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    i += 2;
                } else if chars[i] == '*' && chars.get(i + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[i]));
                    i += 1;
                }
            }
        } else if c == 'r' && matches!(next, Some('"' | '#')) && (i == 0 || !is_ident(chars[i - 1]))
        {
            // A raw string: r"..." or r#"..."#.
            let mut j = i + 1;
            let mut hashes = 0;
            while chars.get(j) == Some(&'#') {
                hashes += 1;
                j += 1;
            }
            if chars.get(j) != Some(&'"') {
                out.push(c);
                i += 1;
                continue;
            }
            out.push('"');
            for _ in i + 1..=j {
                out.push(' ');
            }
            i = j + 1;
            while i < chars.len() {
                let closes =
                    chars[i] == '"' && (1..=hashes).all(|k| chars.get(i + k) == Some(&'#'));
                if closes {
                    out.push('"');
                    for _ in 0..hashes {
                        out.push(' ');
                    }
                    i += 1 + hashes;
                    break;
                }
                out.push(blank(chars[i]));
                i += 1;
            }
        } else if c == '"' {
            out.push('"');
            i += 1;
            while i < chars.len() {
                match chars[i] {
                    '\\' => {
                        out.push(' ');
                        if let Some(&escaped) = chars.get(i + 1) {
                            out.push(blank(escaped));
                        }
                        i += 2;
                    }
                    '"' => {
                        out.push('"');
                        i += 1;
                        break;
                    }
                    other => {
                        out.push(blank(other));
                        i += 1;
                    }
                }
            }
        } else if c == '\'' {
            // A character literal ('x', '\n', '\''), not a lifetime ('a).
            let len = match (next, chars.get(i + 2), chars.get(i + 3)) {
                (Some('\\'), _, _) => (i + 2..chars.len())
                    .find(|&k| chars[k] == '\'')
                    .map(|k| k - i + 1),
                (Some(_), Some('\''), _) => Some(3),
                _ => None,
            };
            match len {
                Some(len) => {
                    out.push('\'');
                    out.extend(chars[i + 1..i + len - 1].iter().map(|&c| blank(c)));
                    out.push('\'');
                    i += len;
                }
                None => {
                    out.push(c);
                    i += 1;
                }
            }
        } else {
            out.push(c);
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_'
}

/// The 1-based line of byte offset `at` in `text`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at].matches('\n').count() + 1
}

/// The identifier starting at byte `at` of `text`, and where it ends.
fn ident_at(text: &str, at: usize) -> (&str, usize) {
    let end = text[at..]
        .find(|c: char| !is_ident(c))
        .map_or(text.len(), |n| at + n);
    (&text[at..end], end)
}

/// Every whole-word occurrence of `word` in `code`, as byte offsets.
fn words<'a>(code: &'a str, word: &'a str) -> impl Iterator<Item = usize> + 'a {
    code.match_indices(word)
        .map(|(at, _)| at)
        .filter(move |&at| {
            let before = code[..at].chars().next_back();
            let after = code[at + word.len()..].chars().next();
            !before.is_some_and(is_ident) && !after.is_some_and(is_ident)
        })
}

/// Raw `libc` calls (`libc::name(`) and `unsafe` in `code`: (line, what).
fn raw_libc_uses(code: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    for at in words(code, "libc") {
        let rest = &code[at + "libc".len()..];
        let Some(path) = rest.strip_prefix("::") else {
            continue;
        };
        let start = code.len() - path.len();
        let (name, end) = ident_at(code, start);
        let lower = name.starts_with(|c: char| c.is_ascii_lowercase() || c == '_');
        if lower && code[end..].trim_start().starts_with('(') {
            out.push((line_of(code, at), format!("raw call `libc::{name}(`")));
        }
    }
    for at in words(code, "unsafe") {
        out.push((line_of(code, at), "`unsafe`".to_owned()));
    }
    out
}

/// The module path of an engine source file: `check/restore.rs` -> `[check, restore]`,
/// `dump/mod.rs` -> `[dump]`.
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap_or(file);
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" && stem != "lib" {
            parts.push(stem.to_owned());
        }
    }
    parts
}

/// The top-level engine modules that `code` (the file of module `module`) names through
/// `crate::` or `super::` paths: (line, module).
fn named_top_modules(code: &str, module: &[String]) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut push_targets = |at: usize, base: &[String]| {
        // `at` is just past `crate::` or the last `super::`.
        if code[at..].starts_with('{') {
            // A group: the first segment of each item at depth 1.
            let mut depth = 0;
            let mut expect_item = true;
            let mut k = at;
            while k < code.len() {
                let c = code[k..].chars().next().unwrap_or(' ');
                match c {
                    '{' => {
                        depth += 1;
                        expect_item = depth == 1;
                    }
                    '}' => {
                        depth -= 1;
                        if depth == 0 {
                            break;
                        }
                    }
                    ',' if depth == 1 => expect_item = true,
                    c if is_ident(c) && expect_item && depth == 1 => {
                        let (name, end) = ident_at(code, k);
                        let top = base.first().cloned().unwrap_or_else(|| name.to_owned());
                        out.push((line_of(code, k), top));
                        expect_item = false;
                        k = end;
                        continue;
                    }
                    _ => {}
                }
                k += c.len_utf8();
            }
        } else {
            let (name, _) = ident_at(code, at);
            if !name.is_empty() {
                let top = base.first().cloned().unwrap_or_else(|| name.to_owned());
                out.push((line_of(code, at), top));
            }
        }
    };
    for at in words(code, "crate") {
        if let Some(rest) = code[at + "crate".len()..].strip_prefix("::") {
            push_targets(code.len() - rest.len(), &[]);
        }
    }
    let mut at = 0;
    while let Some(found) = code[at..].find("super::") {
        let start = at + found;
        let before = code[..start].chars().next_back();
        if before.is_some_and(is_ident) || code[..start].ends_with("super::") {
            at = start + "super::".len();
            continue;
        }
        let mut end = start;
        let mut climbs = 0;
        while code[end..].starts_with("super::") {
            end += "super::".len();
            climbs += 1;
        }
        let base: Vec<String> = module[..module.len().saturating_sub(climbs)].to_vec();
        push_targets(end, &base);
        at = end;
    }
    out
}

/// Offenders against the sibling rule in the engine at `src`.
fn sibling_imports(root: &Path, src: &Path) -> Vec<String> {
    let mut offenders = Vec::new();
    for file in rust_files(src) {
        let module = module_path(src, &file);
        let Some(own) = module.first().filter(|m| SIBLINGS.contains(&m.as_str())) else {
            continue;
        };
        let code = code_only(&read(&file));
        for (line, top) in named_top_modules(&code, &module) {
            if SIBLINGS.contains(&top.as_str()) && top != *own {
                offenders.push(format!(
                    "{}:{line}: `{own}` names its sibling `{top}`",
                    shown(root, &file)
                ));
            }
        }
    }
    offenders
}

/// Offenders against the `libc` rule in the engine at `src`.
fn raw_libc_outside_sys(root: &Path, src: &Path) -> Vec<String> {
    let sys = src.join("sys");
    let mut offenders = Vec::new();
    for file in rust_files(src) {
        if file.starts_with(&sys) {
            continue;
        }
        for (line, what) in raw_libc_uses(&code_only(&read(&file))) {
            offenders.push(format!(
                "{}:{line}: {what} outside engine/src/sys/",
                shown(root, &file)
            ));
        }
    }
    offenders
}

/// Offenders against the `//!` rule in the whole repository at `root`.
fn missing_module_docs(root: &Path) -> Vec<String> {
    rust_files(root)
        .into_iter()
        .filter(|file| !read(file).starts_with("//!"))
        .map(|file| {
            format!(
                "{}:1: does not open with a `//!` line saying what it owns",
                shown(root, &file)
            )
        })
        .collect()
}

/// The crates of the host side of the guest seam, which the guest's crates must not use.
const HOST_CRATES: [&str; 3] = ["crlab-vm", "crlab-harness", "crlab"];

/// The guest's crates (the agent, and the protocol both sides share): their manifest and their
/// sources, checked for any dependency on, or path to, a host-side crate.
fn guest_reaches_host(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    for krate in ["harness/agent", "harness/protocol"] {
        let manifest = root.join(krate).join("Cargo.toml");
        for (i, line) in read(&manifest).lines().enumerate() {
            let key = line.split('=').next().unwrap_or("").trim();
            if HOST_CRATES.contains(&key) {
                out.push(format!(
                    "{}:{}: the guest crate depends on the host side's `{key}`",
                    shown(root, &manifest),
                    i + 1
                ));
            }
        }
        for file in rust_files(&root.join(krate)) {
            let code = code_only(&read(&file));
            for name in ["crlab_vm", "crlab_harness", "crlab::"] {
                for at in words(&code, name.trim_end_matches("::")) {
                    if name.ends_with("::") && !code[at..].starts_with(name) {
                        continue;
                    }
                    out.push(format!(
                        "{}:{}: the guest crate names the host side's `{}`",
                        shown(root, &file),
                        line_of(&code, at),
                        name.trim_end_matches("::")
                    ));
                }
            }
        }
    }
    out
}

#[test]
fn the_guest_agent_depends_on_nothing_of_the_host_side() {
    let root = repo_root();
    report(
        "the guest agent and the protocol see only the protocol (move what they need into \
         crlab-protocol)",
        &guest_reaches_host(&root),
    );
}

#[test]
fn no_raw_libc_call_outside_engine_sys() {
    let root = repo_root();
    report(
        "raw libc calls and `unsafe` belong in engine/src/sys/ (wrap the call there)",
        &raw_libc_outside_sys(&root, &root.join("engine/src")),
    );
}

#[test]
fn dump_restore_and_check_do_not_import_each_other() {
    let root = repo_root();
    report(
        "dump, restore and check are siblings (move what they share into image, selinux, \
         procfs or sys)",
        &sibling_imports(&root, &root.join("engine/src")),
    );
}

#[test]
fn every_module_opens_with_a_doc_line() {
    let root = repo_root();
    report(
        "every .rs file opens with a `//!` line",
        &missing_module_docs(&root),
    );
}

#[test]
fn the_scanner_sees_code_not_comments_or_strings() {
    let code = code_only(
        "// libc::fork()\nlet s = \"libc::fork() unsafe\";\nlet c = '\"'; libc::getpid();\n\
         let t: libc::pid_t = libc::SIGKILL; /* unsafe { } */ libc::c_ulong::from(1u32);\n\
         let r = r#\"crate::dump\"#;\n",
    );
    let found = raw_libc_uses(&code);
    assert_eq!(
        found,
        [(3, "raw call `libc::getpid(`".to_owned())],
        "{code}"
    );
    assert_eq!(
        raw_libc_uses("unsafe { x }\nfn f() -> libc::c_int { 0 }\n"),
        [(1, "`unsafe`".to_owned())]
    );
}

#[test]
fn paths_to_siblings_are_resolved() {
    let module = |m: &[&str]| m.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    let tops = |code: &str, m: &[&str]| -> Vec<String> {
        named_top_modules(&code_only(code), &module(m))
            .into_iter()
            .map(|(_, top)| top)
            .collect()
    };
    assert_eq!(tops("use crate::restore::Foo;", &["dump"]), ["restore"]);
    assert_eq!(
        tops(
            "use crate::{\n    image,\n    check::x,\n};",
            &["dump", "files"]
        ),
        ["image", "check"]
    );
    // From check/restore.rs, `super::x` is check's own child; from check.rs it is the crate's.
    assert_eq!(
        tops("use super::restore;", &["check", "restore"]),
        ["check"]
    );
    assert_eq!(tops("use super::restore;", &["check"]), ["restore"]);
    assert_eq!(
        tops("use super::super::dump::X;", &["restore", "thread"]),
        ["dump"]
    );
    assert!(tops("// crate::dump\nlet s = \"crate::dump\";", &["check"]).is_empty());
}
