//! Fuzz target: the LLM stream's server-sent events (`sb_agent::sse`): the incremental
//! decoder, the chunk interpreter and the tool-call assembler.
//!
//! Consumes arbitrary bytes as a response body; checks that nothing panics, that the
//! events do not depend on where the body was cut into reads (whole, one byte at a time,
//! or split at the point the first byte names), and interprets every event. State: none.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sb_agent::sse::{Delta, SseDecoder, ToolCalls, parse_data};

fuzz_target!(|data: &[u8]| {
    let whole = events(&[data]);
    let bytes: Vec<&[u8]> = data.chunks(1).collect();
    assert_eq!(events(&bytes), whole, "one byte per read");
    let cut = data
        .first()
        .map_or(0, |&b| usize::from(b) % (data.len() + 1));
    let (head, tail) = data.split_at(cut);
    assert_eq!(events(&[head, tail]), whole, "cut at {cut}");

    let mut calls = ToolCalls::default();
    for event in whole.iter().flatten() {
        let Ok(deltas) = parse_data(event) else {
            continue;
        };
        for delta in deltas {
            if let Delta::ToolCall {
                index,
                id,
                name,
                arguments,
            } = delta
            {
                calls.add(index, id, name, &arguments);
            }
        }
    }
    for call in calls.finish() {
        assert!(!call.name.is_empty());
        assert!(!call.id.is_empty());
    }
    let _ = parse_data(&String::from_utf8_lossy(data));
});

/// Every event's `data`, reading `reads` in order; `None` once the decoder refuses.
fn events(reads: &[&[u8]]) -> Option<Vec<String>> {
    let mut decoder = SseDecoder::new();
    let mut out = Vec::new();
    for read in reads {
        out.extend(decoder.push(read).ok()?);
    }
    out.extend(decoder.finish());
    Some(out)
}
