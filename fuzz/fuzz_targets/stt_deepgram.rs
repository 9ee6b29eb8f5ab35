//! Fuzz target: Deepgram's live-streaming server frames (`sb_stt`'s `deepgram::wire`,
//! reached through `sb_stt::fuzzing`).
//!
//! Consumes arbitrary bytes as one WebSocket text frame; checks that parsing never panics,
//! that a result's span never ends before it starts and its confidence is a number, and
//! that an error's text stays bounded (it is logged and counted). State: none.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sb_stt::SttEvent;
use sb_stt::fuzzing::deepgram_frame;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match deepgram_frame(text) {
        Ok(Some(SttEvent::Result(result))) => {
            assert!(result.end_ms >= result.start_ms);
            assert!(result.confidence.is_finite());
        }
        Ok(_) => {}
        Err(error) => assert!(error.len() <= 250, "{} bytes of error", error.len()),
    }
});
