//! Fuzz target `agent_request`: one frame's payload, handled as the agent handles it up to the
//! point where it acts: decoded as a `Request` and checked (`crlab_agent::request`). Nothing is
//! run and nothing is touched: that half is pure by construction.
#![no_main]

use crlab_agent::request;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(req) = request::decode(data) {
        let _ = request::check(req);
    }
});
