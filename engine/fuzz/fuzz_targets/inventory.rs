//! Fuzz target `inventory`: the raw bytes of `inventory.img`, alone in a directory but for the
//! files it lists (each created with as many zero bytes as it says, up to a page), opened by
//! every reader of the engine.
#![no_main]

use crlab::image::schema::Inventory;
use crlab::image::{parse_name, FileKind, INVENTORY, PAGE_SIZE};
use crlab_fuzz::{body_of, lay_out, read_everything, FileRecord, Scratch, ID};
use libfuzzer_sys::fuzz_target;
use prost::Message;

thread_local! {
    static SCRATCH: Scratch = Scratch::new();
}

/// At most this many listed files are created.
const MAX_LISTED: usize = 16;

fuzz_target!(|data: &[u8]| {
    let mut files = vec![FileRecord {
        name: INVENTORY.to_owned(),
        bytes: data.to_vec(),
    }];
    let listed = body_of(FileKind::Inventory, data)
        .and_then(|body| Inventory::decode(body).ok())
        .map(|inventory| inventory.files)
        .unwrap_or_default();
    for entry in listed.iter().take(MAX_LISTED) {
        if parse_name(&entry.name).is_ok_and(|p| p.kind != FileKind::Inventory) {
            let len = usize::try_from(entry.size.min(PAGE_SIZE)).unwrap_or(0);
            files.push(FileRecord {
                name: entry.name.clone(),
                bytes: vec![0; len],
            });
        }
    }
    SCRATCH.with(|scratch| read_everything(lay_out(scratch, &files, true, ID)));
});
