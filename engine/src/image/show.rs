//! `show`: a whole dump as one JSON object, for `crlab show`.

use std::path::Path;

use serde_json::{json, Map, Value};

use super::schema::{FileTable, Mm, PsTree, Task, ThreadCore};
use super::{parse_name, FileKind, ImageDirReader, ImageError, Trust, INVENTORY, PAGE_SIZE};

/// `crlab show`: every file of the dump as one JSON object keyed by file name (pbjson's serde
/// for messages; for pages files a summary `{bytes, pages}` instead of the contents).
///
/// The dump is opened with [`ImageDirReader::open`], so it is checked against its inventory
/// first; the contents of pages files are not read.
pub fn show(dir: &Path) -> Result<Value, ImageError> {
    show_with(dir, Trust::default())
}

/// [`show`], accepting images as `trust` says.
pub fn show_with(dir: &Path, trust: Trust) -> Result<Value, ImageError> {
    let reader = ImageDirReader::open_with(dir, trust)?;
    let mut out = Map::new();
    out.insert(
        INVENTORY.to_owned(),
        to_json(&dir.join(INVENTORY), reader.inventory())?,
    );
    for entry in &reader.inventory().files {
        let name = entry.name.as_str();
        let path = dir.join(name);
        let bad_name = |reason| ImageError::BadFileName {
            path: dir.join(INVENTORY),
            name: name.to_owned(),
            reason,
        };
        let parsed = parse_name(name).map_err(bad_name)?;
        let kind = parsed.kind;
        let value = match kind {
            FileKind::PsTree => to_json(&path, &reader.read_message::<PsTree>(name, kind)?)?,
            FileKind::Files => to_json(&path, &reader.read_message::<FileTable>(name, kind)?)?,
            FileKind::Task => to_json(&path, &reader.read_message::<Task>(name, kind)?)?,
            FileKind::Mm => to_json(&path, &reader.read_message::<Mm>(name, kind)?)?,
            FileKind::Core => to_json(&path, &reader.read_message::<ThreadCore>(name, kind)?)?,
            FileKind::Pages => {
                let pid = parsed
                    .id
                    .ok_or_else(|| bad_name("a pages file name carries a pid"))?;
                let pages = reader.pages(pid)?;
                json!({ "bytes": pages.len(), "pages": pages.len() / PAGE_SIZE })
            }
            FileKind::Inventory => return Err(bad_name("the inventory cannot list itself")),
        };
        out.insert(name.to_owned(), value);
    }
    Ok(Value::Object(out))
}

fn to_json<T: serde::Serialize>(path: &Path, value: &T) -> Result<Value, ImageError> {
    serde_json::to_value(value).map_err(|source| ImageError::Json {
        path: path.to_owned(),
        source,
    })
}
