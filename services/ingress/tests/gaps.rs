//! Gaps in the bot audio (channel-driven, paused time): a chunk the live subscription lost
//! is read back from the `AUDIO` stream and played in its place; one the stream lacks too
//! is skipped and the turn goes on; the fault-injection setting drops a named chunk.

#![allow(clippy::unwrap_used)]

mod common;

use common::line::{Line, media_bytes};

/// A one-frame chunk of turn 0, sentence 0, every byte `byte`, as the stream holds it.
fn stored(line: &Line, chunk: u32, last: bool, byte: u8) -> sb_schemas::Envelope {
    line.chunk_event(0, (0, chunk), 1, (last, last), byte)
}

/// Chunks 0 and 2 arrive live, chunk 1 only reached the stream: it is fetched and the
/// sentence plays whole, in order.
#[tokio::test(start_paused = true)]
async fn a_chunk_lost_live_is_read_back_from_the_stream() {
    let mut line = Line::open(1, "acme");
    line.start().await;
    line.backend.store_bot_audio(stored(&line, 1, false, 2));
    line.chunk(0, (0, 0), 1, (false, false), 1);
    line.chunk(0, (0, 2), 1, (true, true), 3);
    let out = line.until_mark("0:0").await;
    let mut expected = vec![1u8; 160];
    expected.extend([2u8; 160]);
    expected.extend([3u8; 160]);
    assert_eq!(media_bytes(&out), expected);
    line.close().await;
}

/// A chunk neither the subscription nor the stream has is skipped: the rest of the
/// sentence plays and its mark follows, so the turn never stalls.
#[tokio::test(start_paused = true)]
async fn a_chunk_lost_for_good_is_skipped() {
    let mut line = Line::open(2, "acme");
    line.start().await;
    line.chunk(0, (0, 0), 1, (false, false), 1);
    line.chunk(0, (0, 2), 1, (true, true), 3);
    let out = line.until_mark("0:0").await;
    let mut expected = vec![1u8; 160];
    expected.extend([3u8; 160]);
    assert_eq!(media_bytes(&out), expected);
    line.close().await;
}

/// `SB_FAULT_DROP_BOT_CHUNKS` drops the named chunk on receipt; the repair brings it back.
#[tokio::test(start_paused = true)]
async fn the_fault_setting_drops_a_chunk_the_repair_restores() {
    let mut config = common::config();
    config.fault_drop_bot_chunks = vec!["0:0:1".into()];
    let mut line = Line::open_with(&config, 3, "acme");
    line.start().await;
    line.backend.store_bot_audio(stored(&line, 1, false, 2));
    for (chunk, last, byte) in [(0, false, 1), (1, false, 2), (2, true, 3)] {
        line.chunk(0, (0, chunk), 1, (last, last), byte);
    }
    let out = line.until_mark("0:0").await;
    let mut expected = vec![1u8; 160];
    expected.extend([2u8; 160]);
    expected.extend([3u8; 160]);
    assert_eq!(media_bytes(&out), expected);
    line.close().await;
}
