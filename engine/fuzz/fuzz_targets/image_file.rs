//! Fuzz target `image_file`: the message (or page data) of one image file, framed as the engine
//! frames it (header, length prefix) as the kind byte 0 picks, listed in a computed inventory,
//! and read by every reader of the engine: the fuzzer's bytes go straight to the decoders of
//! the process tree, the file table, the task, the address space, the thread core and the
//! pages, and to the checks made on what they decode.
#![no_main]

use crlab_fuzz::{framed, kind_of, lay_out, name_of, read_everything, FileRecord, Scratch, ID};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static SCRATCH: Scratch = Scratch::new();
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let kind = kind_of(selector);
    let file = FileRecord {
        name: name_of(kind, ID),
        bytes: framed(kind, body),
    };
    SCRATCH.with(|scratch| read_everything(lay_out(scratch, &[file], false, ID)));
});
