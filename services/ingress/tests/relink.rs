//! A NATS reconnect under a live call (channel-driven, paused time; its own test binary,
//! as the link it plays is process-wide): a whole answer published while the link was
//! down never reached the call's subscription, and no later chunk reveals the gap, so once
//! the link is back the call reads it back from the `AUDIO` stream and plays it.

#![allow(clippy::unwrap_used)]

mod common;

use async_nats::Event;
use common::line::{Line, media_bytes};

#[tokio::test(start_paused = true)]
async fn an_answer_missed_while_nats_was_down_is_read_back() {
    let mut line = Line::open(1, "acme");
    line.start().await;
    sb_runtime::nats::note_link_event(&Event::Disconnected);
    // Turn 0's only sentence, two chunks, stored while the link was down.
    line.backend
        .store_bot_audio(line.chunk_event(0, (0, 0), 1, (false, false), 1));
    line.backend
        .store_bot_audio(line.chunk_event(0, (0, 1), 1, (true, true), 2));
    sb_runtime::nats::note_link_event(&Event::Connected);
    let out = line.until_mark("0:0").await;
    let mut expected = vec![1u8; 160];
    expected.extend([2u8; 160]);
    assert_eq!(media_bytes(&out), expected);
    line.close().await;
}
