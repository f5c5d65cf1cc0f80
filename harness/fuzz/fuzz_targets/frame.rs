//! Fuzz target `frame`: a byte stream as the guest channel carries it, read frame by frame
//! with `crlab_protocol::frame::read_frame` until it ends or fails; each frame is decoded as
//! the host decodes it (a `Response`) and as the agent does (a `Request`), and written back
//! with `write_frame`, which must give the same frame again.
#![no_main]

use std::io::Cursor;

use crlab_protocol::frame::{read_frame, write_frame};
use crlab_protocol::Response;
use libfuzzer_sys::fuzz_target;
use prost::Message;

fuzz_target!(|data: &[u8]| {
    let mut stream = Cursor::new(data);
    while let Ok(frame) = read_frame(&mut stream) {
        let _ = Response::decode(frame.as_slice());
        let _ = crlab_agent::request::decode(&frame);
        let mut again = Vec::with_capacity(frame.len() + 4);
        write_frame(&mut again, &frame).expect("a frame that was read can be written");
        let back = read_frame(&mut Cursor::new(again)).expect("a written frame reads back");
        assert_eq!(
            back, frame,
            "a frame changed on its way through write and read"
        );
    }
});
