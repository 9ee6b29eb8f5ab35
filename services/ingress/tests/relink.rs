//! A NATS reconnect under a live call (channel-driven, paused time; its own test binary,
//! as the link it plays is process-wide): a whole answer published while the link was
//! down never reached the call's subscription, and no later chunk reveals the gap, so once
//! the link is back the call reads it back from the `AUDIO` stream and plays it; a held
//! preflight turn whose transcript fell in the hole is released from the stored one.

#![allow(clippy::unwrap_used)]

mod common;

use async_nats::Event;
use common::line::{Line, media_bytes};

/// Both cases in one test: the link is process-wide, so two tests of one binary running
/// side by side (`cargo test`) would reconnect each other's calls.
#[tokio::test(start_paused = true)]
async fn what_was_missed_while_nats_was_down_is_caught_up() {
    an_answer_missed_while_nats_was_down_is_read_back().await;
    a_held_turn_confirmed_while_nats_was_down_plays().await;
}

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

/// A preflight turn's audio is held; its transcript came while the link was down and never
/// reached the call: once the link is back, the last transcript stored releases it.
async fn a_held_turn_confirmed_while_nats_was_down_plays() {
    use sb_schemas::{Body, Envelope, Preflight, Transcript};
    let mut line = Line::open(2, "acme");
    line.start().await;
    let preflight = Body::Preflight(Preflight {
        epoch: 1,
        text: "what are your hours".into(),
    });
    line.deliver(1, preflight);
    line.chunk(1, (0, 0), 1, (true, true), 3);
    // Paused time: the socket task handles both before the test goes on.
    tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    sb_runtime::nats::note_link_event(&Event::Disconnected);
    let transcript = Body::Transcript(Transcript {
        epoch: 1,
        text: "What are your hours?".into(),
        confidence: 0.9,
        audio_seq: 40,
        speech_ended_at: 0,
    });
    let tenant = sb_schemas::testing::tenant_id("acme");
    let stored = Envelope::new(tenant, line.sid.clone(), 1, transcript);
    line.backend.store_event(stored);
    sb_runtime::nats::note_link_event(&Event::Connected);
    let out = line.until_mark("1:0").await;
    assert_eq!(media_bytes(&out), [3u8; 160]);
    line.close().await;
}
