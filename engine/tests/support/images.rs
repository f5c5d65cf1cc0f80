//! A reviewable summary of `crlab show`'s JSON: the fields that do not depend on the machine
//! or the run. Addresses, sizes, checksums, times and register values are left out; pids and
//! paths are kept for the snapshot's redactions to replace.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{json, Value};

/// A field by its JSON name (pbjson's lowerCamelCase) or its proto name.
fn field<'a>(obj: &'a Value, name: &str) -> Option<&'a Value> {
    obj.get(name).or_else(|| obj.get(snake_case(name)))
}

fn snake_case(name: &str) -> String {
    let mut out = String::new();
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// A number field (pbjson writes 64-bit integers as strings); absent means 0, as in proto3.
fn num(obj: &Value, name: &str) -> u64 {
    match field(obj, name) {
        Some(Value::Number(n)) => n.as_u64().unwrap_or(0),
        Some(Value::String(s)) => s.parse().unwrap_or(0),
        _ => 0,
    }
}

fn text(obj: &Value, name: &str) -> String {
    field(obj, name)
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned()
}

fn flag(obj: &Value, name: &str) -> bool {
    field(obj, name).and_then(Value::as_bool).unwrap_or(false)
}

fn list<'a>(obj: &'a Value, name: &str) -> &'a [Value] {
    field(obj, name)
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// The stable part of a dump as `crlab show` prints it (one object keyed by image file name).
pub fn summary(show: &Value) -> Value {
    let Some(files) = show.as_object() else {
        return json!({ "error": "crlab show did not print a JSON object" });
    };
    let image_files: Vec<&String> = files.keys().collect();
    let inventory = files.get("inventory.img").cloned().unwrap_or(Value::Null);

    let processes: Vec<Value> = files
        .get("pstree.img")
        .map(|t| list(t, "processes"))
        .unwrap_or_default()
        .iter()
        .map(|p| {
            let pid = num(p, "pid");
            json!({
                "pid": pid,
                "ppid": num(p, "ppid"),
                "pgid_is_pid": num(p, "pgid") == pid,
                "sid_is_pid": num(p, "sid") == pid,
                "threads": list(p, "threads").iter().map(|t| t.as_u64().unwrap_or(0)).collect::<Vec<_>>(),
                "state": field(p, "state").cloned().unwrap_or(Value::Null),
            })
        })
        .collect();

    let file_table: BTreeMap<u64, &Value> = files
        .get("files.img")
        .map(|t| list(t, "files"))
        .unwrap_or_default()
        .iter()
        .map(|f| (num(f, "id"), f))
        .collect();

    let mut tasks = Vec::new();
    let mut vmas = BTreeSet::new();
    let mut exe_paths = BTreeSet::new();
    let mut threads = Vec::new();
    for (name, image) in files {
        if name.starts_with("task-") {
            tasks.push(task_summary(image, &file_table));
        } else if name.starts_with("mm-") {
            for v in list(image, "vmas") {
                vmas.insert((
                    field(v, "kind").cloned().unwrap_or(Value::Null).to_string(),
                    text(v, "path"),
                ));
            }
            exe_paths.insert(text(image, "exePath"));
        } else if name.starts_with("core-") {
            threads.push(json!({
                "comm": text(image, "comm"),
                "has_xstate": !text(image, "xstate").is_empty(),
                "has_regs": field(image, "regs").is_some(),
            }));
        }
    }
    json!({
        "image_files": image_files,
        "format_version": num(&inventory, "formatVersion"),
        "page_size": num(&inventory, "pageSize"),
        "processes": processes,
        "tasks": tasks,
        "threads": threads,
        "exe_paths": exe_paths,
        "vmas": vmas
            .into_iter()
            .map(|(kind, path)| json!({ "kind": kind.trim_matches('"'), "path": path }))
            .collect::<Vec<_>>(),
    })
}

/// Rewrites the `path` of each of the summary's `vmas` with `redact`, then sorts the list
/// again (dropping duplicates) by kind and redacted path. [`summary`] sorts by the real paths,
/// so without this the order of a redacted path (the workload under the target dir) among
/// the others (`/usr/lib/...`) would depend on where the target dir is.
pub fn redact_vma_paths(summary: &mut Value, redact: impl Fn(&str) -> String) {
    let Some(vmas) = summary.get_mut("vmas").and_then(Value::as_array_mut) else {
        return;
    };
    let sorted: BTreeSet<(String, String)> = vmas
        .iter()
        .map(|v| (text(v, "kind"), redact(&text(v, "path"))))
        .collect();
    *vmas = sorted
        .into_iter()
        .map(|(kind, path)| json!({ "kind": kind, "path": path }))
        .collect();
}

fn task_summary(task: &Value, file_table: &BTreeMap<u64, &Value>) -> Value {
    let fds: Vec<Value> = list(task, "fds")
        .iter()
        .map(|fd| {
            let file = file_table.get(&num(fd, "fileId")).copied();
            let (kind, path, file_type) = match file {
                Some(f) if field(f, "path").is_some() => {
                    let p = field(f, "path").cloned().unwrap_or(Value::Null);
                    (
                        "path",
                        text(&p, "path"),
                        field(&p, "type").cloned().unwrap_or(Value::Null),
                    )
                }
                Some(f) if field(f, "pipe").is_some() => ("pipe", String::new(), Value::Null),
                Some(_) => ("unknown", String::new(), Value::Null),
                None => ("missing from files.img", String::new(), Value::Null),
            };
            json!({
                "fd": num(fd, "fd"),
                "cloexec": flag(fd, "cloexec"),
                "flags": format!("{:#o}", file.map(|f| num(f, "flags")).unwrap_or(0)),
                "kind": kind,
                "path": path,
                "type": file_type,
            })
        })
        .collect();
    let mut handled = Vec::new();
    let mut ignored = Vec::new();
    for sa in list(task, "sigactions") {
        match num(sa, "handler") {
            0 => {}
            1 => ignored.push(num(sa, "signo")),
            _ => handled.push(num(sa, "signo")),
        }
    }
    let creds = field(task, "creds").cloned().unwrap_or(Value::Null);
    json!({
        "cwd": text(task, "cwd"),
        "umask": format!("{:#o}", num(task, "umask")),
        "uid": num(&creds, "uid"),
        "fds": fds,
        "handled_signals": handled,
        "ignored_signals": ignored,
        "shared_pending": list(task, "sharedPending").len(),
    })
}
