//! Fuzz target `framing`: one image file's raw bytes (header, length prefix, message, or page
//! data), written as the file of the kind byte 0 picks, listed in a computed inventory (true
//! size and checksum), and read by every reader of the engine.
#![no_main]

use crlab_fuzz::{kind_of, lay_out, name_of, read_everything, FileRecord, Scratch, ID};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static SCRATCH: Scratch = Scratch::new();
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let file = FileRecord {
        name: name_of(kind_of(selector), ID),
        bytes: bytes.to_vec(),
    };
    SCRATCH.with(|scratch| read_everything(lay_out(scratch, &[file], false, ID)));
});
