//! Copying a dump to a new one, every message decoded and written again, with edits: how the
//! tests make images that a dump would not write.

use std::path::Path;

use crlab::image::schema::{FileTable, Mm, PsTree, Task, ThreadCore};
use crlab::image::{self, parse_name, FileKind, ImageDirReader, ImageDirWriter, Trust};

/// Copies the dump in `from` to a new dump in `to`, with `files` applied to the file table
/// and `process` to each process's task and mm.
pub fn rewrite_dump(
    from: &Path,
    to: &Path,
    mut files: impl FnMut(&mut FileTable),
    mut process: impl FnMut(&mut Task, &mut Mm),
) {
    let reader = ImageDirReader::open_with(from, Trust::OwnerOnly).expect("reading the dump");
    let mut writer = ImageDirWriter::create(to).expect("a new dump");
    let mut tasks: Vec<(u32, Task)> = Vec::new();
    let mut mms: Vec<(u32, Mm)> = Vec::new();
    for entry in &reader.inventory().files {
        let name = entry.name.as_str();
        let parsed = parse_name(name).expect("a dump's file name");
        let (kind, id) = (parsed.kind, parsed.id.unwrap_or(0));
        match kind {
            FileKind::PsTree => {
                let m: PsTree = reader.read_message(name, kind).expect("pstree");
                writer.write_message(name, kind, &m).expect("write");
            }
            FileKind::Files => {
                let mut m: FileTable = reader.read_message(name, kind).expect("files");
                files(&mut m);
                writer.write_message(name, kind, &m).expect("write");
            }
            FileKind::Core => {
                let m: ThreadCore = reader.read_message(name, kind).expect("core");
                writer.write_message(name, kind, &m).expect("write");
            }
            FileKind::Task => tasks.push((id, reader.read_message(name, kind).expect("task"))),
            FileKind::Mm => mms.push((id, reader.read_message(name, kind).expect("mm"))),
            FileKind::Pages => {
                let mut pages = reader.pages(id).expect("pages");
                let mut buf = vec![0u8; usize::try_from(pages.len()).expect("fits")];
                pages.read_exact(&mut buf).expect("page data");
                pages.finish().expect("checksum");
                let mut out = writer.pages_writer(id).expect("pages writer");
                out.write_all(&buf).expect("write pages");
                out.finish().expect("finish pages");
            }
            FileKind::Inventory => unreachable!("the inventory does not list itself"),
        }
    }
    for (pid, mut task) in tasks {
        let at = mms
            .iter()
            .position(|(p, _)| *p == pid)
            .expect("an mm per task");
        let (_, mut mm) = mms.swap_remove(at);
        process(&mut task, &mut mm);
        writer
            .write_message(&image::task_name(pid), FileKind::Task, &task)
            .expect("write task");
        writer
            .write_message(&image::mm_name(pid), FileKind::Mm, &mm)
            .expect("write mm");
    }
    writer
        .commit(reader.inventory().clone())
        .expect("committing the rewritten dump");
}
