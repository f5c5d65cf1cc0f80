//! Fuzz target `show`: a whole directory (`crlab_fuzz::DirInput`: any number of image files,
//! with the inventory the input gives or one computed from the files), read by `crlab show`
//! and every other reader of the engine.
#![no_main]

use crlab_fuzz::{lay_out, read_everything, DirInput, Scratch};
use libfuzzer_sys::fuzz_target;

thread_local! {
    static SCRATCH: Scratch = Scratch::new();
}

fuzz_target!(|data: &[u8]| {
    let input = DirInput::decode(data);
    SCRATCH.with(|scratch| {
        read_everything(lay_out(
            scratch,
            &input.files,
            input.raw_inventory,
            input.root_pid,
        ))
    });
});
