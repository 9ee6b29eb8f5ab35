//! Live call migration on drain (channel-driven, paused time): a draining socket asks
//! Twilio to reconnect its call's stream with a handoff, ends without `end` when that
//! stream stops, and records where its caller stopped hearing; the socket that brings the
//! handoff on another replica resumes the call (no second `start` or STT lease, frames
//! numbered on, the unplayed rest of the sentence from the stream); a refused redirect or a
//! wrong token changes nothing.

#![allow(clippy::unwrap_used)]

mod common;

use bytes::Bytes;
use common::line::{Line, media_bytes, until};
use sb_runtime::redis::handoff::Handoff;
use sb_schemas::testing::tenant_id;
use sb_schemas::{Body, EndReason, Envelope, Kind, Mulaw, TtsChunk, now_micros};
use sb_twilio::OutboundMessage;
use sb_twilio::media::InboundMessage;

fn parameter(twiml: &str, name: &str) -> Option<String> {
    let response = sb_twilio::twiml::parse(twiml).ok()?;
    let stream = response.connect_stream().ok()?;
    stream
        .parameters
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
}

/// On drain the socket redirects its call with a handoff; Twilio's `stop` then ends it
/// as a move: no `end`, and the handoff holds the next frame and the playback position.
#[tokio::test(start_paused = true)]
async fn a_draining_socket_hands_its_call_over() {
    let mut line = Line::open(1, "acme");
    line.start().await;
    line.chunk(0, (0, 0), 50, (true, true), 7);
    for _ in 0..10 {
        let (_, message) = line.next().await.unwrap();
        assert!(matches!(message, OutboundMessage::Media { .. }));
    }
    line.state.shutdown.trigger();
    let backend = line.backend.clone();
    until(|| !backend.redirects().is_empty()).await;
    let (sid, twiml) = backend.redirects().remove(0);
    assert_eq!(sid, line.sid);
    let token = parameter(&twiml, "handoff").expect("a handoff token");
    assert!(parameter(&twiml, "credential").is_some(), "{twiml}");
    assert_eq!(parameter(&twiml, "tenant").as_deref(), Some("acme"));
    for _ in 0..3 {
        line.media(&[0xFF; 160]);
    }
    line.stop();
    line.task.await.unwrap();
    assert!(
        backend.of_kind(Kind::End).is_empty(),
        "a move is not a hang-up"
    );
    let handoff = backend.handoff(&line.sid).unwrap();
    assert_eq!(handoff.token, token);
    assert!(handoff.stopped);
    assert_eq!(handoff.seq, 3, "the next caller frame");
    assert_eq!((handoff.turn, handoff.sentence, handoff.chunk), (0, 0, 0));
    // Ten frames sent, up to the lead (80 ms: 4 frames) still in Twilio's buffer.
    assert!(
        (160 * 5..=160 * 10).contains(&handoff.offset),
        "{}",
        handoff.offset
    );
}

/// The socket that brings the handoff on another replica continues the call: no `start`
/// or STT lease again, caller frames numbered on from the handoff, and the sentence plays
/// from where the caller stopped hearing, read back from the stream.
#[tokio::test(start_paused = true)]
async fn the_new_socket_resumes_the_call() {
    let old = Line::open(2, "acme");
    let backend = old.backend.clone();
    let handoff = Handoff {
        token: "f".repeat(32),
        seq: 50,
        stopped: true,
        turn: 1,
        sentence: 0,
        chunk: 0,
        offset: 320,
        stale_below: 0,
        since_us: now_micros(),
        lost: false,
    };
    backend.handoff_begin_for_tests(&old.sid, &handoff);
    let mut chunk = vec![1u8; 320];
    chunk.extend([2u8; 320]);
    backend.store_bot_audio(Envelope::new(
        tenant_id("acme"),
        old.sid.clone(),
        1,
        Body::TtsChunk(TtsChunk {
            sentence: 0,
            chunk: 0,
            last: true,
            turn_last: true,
            payload: Mulaw(Bytes::from(chunk)),
        }),
    ));
    let mut line = old.on_another_replica();
    let mut start = line.start_message("acme");
    if let InboundMessage::Start { start, .. } = &mut start {
        start
            .custom_parameters
            .insert("handoff".into(), handoff.token.clone());
    }
    line.send(start);
    let out = line.until_mark("1:0").await;
    assert_eq!(media_bytes(&out), [2u8; 320], "the rest of the sentence");
    line.media(&[0xFF; 160]);
    until(|| !backend.of_kind(Kind::Audio).is_empty()).await;
    match &backend.of_kind(Kind::Audio)[0].body {
        Body::Audio(audio) => assert_eq!((audio.seq, audio.timestamp_ms), (50, 1000)),
        other => panic!("{other:?}"),
    }
    assert!(backend.of_kind(Kind::Start).is_empty(), "no second start");
    assert!(backend.leases().is_empty(), "no second stt lease");
    line.stop();
    line.task.await.unwrap();
    let ends = backend.of_kind(Kind::End);
    assert!(
        matches!(&ends[..], [e] if matches!(&e.body, Body::End(end) if end.reason == EndReason::Stop))
    );
}

/// Twilio refusing the redirect leaves the call where it is: the handoff is dropped and
/// the call ends normally.
#[tokio::test(start_paused = true)]
async fn a_refused_redirect_keeps_the_call() {
    let mut line = Line::open(3, "acme");
    line.start().await;
    line.backend.fail_redirects(true);
    line.state.shutdown.trigger();
    line.chunk(0, (0, 0), 2, (true, true), 1);
    let out = line.until_mark("0:0").await;
    assert_eq!(media_bytes(&out).len(), 320, "still playing");
    assert_eq!(line.backend.handoff(&line.sid), None);
    line.stop();
    line.task.await.unwrap();
    assert_eq!(line.backend.of_kind(Kind::End).len(), 1);
}

/// A `handoff` parameter without a matching handoff is refused (1008) before anything
/// is published.
#[tokio::test(start_paused = true)]
async fn a_wrong_handoff_token_is_refused() {
    let mut line = Line::open(4, "acme");
    let mut start = line.start_message("acme");
    if let InboundMessage::Start { start, .. } = &mut start {
        start
            .custom_parameters
            .insert("handoff".into(), "0".repeat(32));
    }
    line.send(start);
    assert_eq!(line.closed_with().await, Some(1008));
    assert!(line.backend.published().is_empty());
}
