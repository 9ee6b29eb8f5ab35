//! Channel-driven tests of the Media Streams socket: the whole protocol, playback order and
//! pacing, superseded turns, barge-in with `clear`, backchannel, marks → `played`, and every
//! bad input. Time is paused, so pacing is checked exactly.

#![allow(clippy::unwrap_used)]

mod common;

use common::line::{Line, STREAM, is_clear, media_bytes, until};
use common::*;
use futures::channel::mpsc;
use futures::{SinkExt as _, StreamExt as _};
use sb_ingress::Incoming;
use sb_schemas::testing::{tenant, tenant_id};
use sb_schemas::{BargeIn, BargeInTrigger, Body, Kind, Partial, Played, Speech};
use sb_twilio::OutboundMessage;
use sb_twilio::media::{Dtmf, InboundMessage};
use tokio::time::Instant;

/// A call's lifecycle: `start` (after subscribing) with the lease, caller frames numbered
/// from 0 in order, `dtmf`, and `end` on `stop`; then the socket closes.
#[tokio::test(start_paused = true)]
async fn lifecycle_publishes_in_order() {
    let mut line = Line::open(1, "acme");
    line.start().await;
    assert!(line.backend.is_subscribed(&line.sid));
    let leases = line.backend.leases();
    assert_eq!(leases.len(), 1);
    let start = &line.backend.of_kind(Kind::Start)[0];
    assert_eq!(leases[0], *start, "the lease is the start event");
    let Body::Start(body) = &start.body else {
        panic!()
    };
    assert_eq!(
        (
            body.stream_sid.as_str(),
            body.from.as_str(),
            body.to.as_str()
        ),
        (STREAM, CALLER, ACME)
    );
    assert_eq!(body.custom_parameters["tenant"], "acme");
    assert_eq!(line.backend.session(&line.sid), Some((tenant(), 0)));

    for i in 0..5u8 {
        line.media(&[i; 160]);
    }
    line.send(InboundMessage::Dtmf {
        stream_sid: STREAM.into(),
        sequence_number: 99,
        dtmf: Dtmf {
            track: "inbound_track".into(),
            digit: "5".into(),
        },
    });
    let mut line_out = std::mem::replace(&mut line.from_ingress, mpsc::unbounded().1);
    let backend = line.close().await;
    assert_eq!(
        line_out.next().await,
        None,
        "the socket is closed after stop"
    );

    let kinds = backend.kinds();
    assert_eq!(
        kinds,
        [
            Kind::Start,
            Kind::Audio,
            Kind::Audio,
            Kind::Audio,
            Kind::Audio,
            Kind::Audio,
            Kind::Dtmf,
            Kind::End
        ]
    );
    for (i, event) in backend.of_kind(Kind::Audio).iter().enumerate() {
        let Body::Audio(audio) = &event.body else {
            panic!()
        };
        assert_eq!((audio.seq, audio.timestamp_ms), (i as u64, i as u64 * 20));
        assert_eq!(audio.payload.0.as_ref(), &[i as u8; 160]);
    }
    let end = &backend.of_kind(Kind::End)[0];
    assert_eq!(
        end.body,
        Body::End(sb_schemas::End {
            reason: sb_schemas::EndReason::Stop
        })
    );
}

/// With `AUDIO_BATCH_MS = 60` three quiet frames make one event; the rest is flushed on
/// stop. (Voice is never held back: see `voice_is_sent_at_once_despite_batching`.)
#[tokio::test(start_paused = true)]
async fn batches_caller_audio() {
    let mut config = config();
    config.audio_batch_ms = 60;
    let mut line = Line::open_with(&config, 2, "acme");
    line.start().await;
    for i in 0..7u8 {
        line.media(&[0xFF - i; 160]);
    }
    let backend = line.close().await;
    let batches: Vec<(u64, u64, usize)> = backend
        .of_kind(Kind::Audio)
        .iter()
        .map(|e| match &e.body {
            Body::Audio(a) => (a.seq, a.timestamp_ms, a.payload.0.len()),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(batches, [(0, 0, 480), (3, 60, 480), (6, 120, 160)]);
}

/// With `AUDIO_ACK_EVERY = 3`, every third `audio.in` event and the partial batch flushed
/// on stop ask for a store ack; the others are plain publishes. Other events always do.
#[tokio::test(start_paused = true)]
async fn samples_caller_audio_acks() {
    let mut config = config();
    config.audio_batch_ms = 40;
    config.audio_ack_every = 3;
    let mut line = Line::open_with(&config, 2, "acme");
    line.start().await;
    // Quiet frames: 13 make six whole batches and a partial one.
    for _ in 0..13 {
        line.media(&[0xFF; 160]);
    }
    let backend = line.close().await;
    let audio: Vec<bool> = backend
        .kinds()
        .into_iter()
        .zip(backend.acked())
        .filter_map(|(kind, acked)| (kind == Kind::Audio).then_some(acked))
        .collect();
    assert_eq!(audio, [false, false, true, false, false, true, true]);
    let others_acked = backend
        .kinds()
        .into_iter()
        .zip(backend.acked())
        .all(|(kind, acked)| kind == Kind::Audio || acked);
    assert!(others_acked, "{:?}", backend.kinds());
}

/// Batching never delays a live turn: a voiced frame goes out at once with the quiet
/// frames waiting before it, and so does each frame of the endpointing silence after it.
#[tokio::test(start_paused = true)]
async fn voice_is_sent_at_once_despite_batching() {
    let mut config = config();
    config.audio_batch_ms = 100;
    let mut line = Line::open_with(&config, 2, "acme");
    line.start().await;
    let voice = sb_audio::mulaw::encode_slice(&[4000, -4000].repeat(80));
    line.media(&[0xFF; 160]);
    line.media(&voice);
    line.media(&[0xFF; 160]);
    let backend = line.backend.clone();
    until(|| backend.of_kind(Kind::Audio).len() == 2).await;
    let batches: Vec<(u64, usize)> = backend
        .of_kind(Kind::Audio)
        .iter()
        .map(|e| match &e.body {
            Body::Audio(a) => (a.seq, a.payload.0.len()),
            _ => unreachable!(),
        })
        .collect();
    assert_eq!(batches, [(0, 320), (2, 160)]);
}

/// Bot audio arriving out of order plays strictly in (sentence, chunk) order, one 20 ms
/// frame per message, paced at real time with the configured lead (80 ms); each sentence is
/// followed by its mark, and echoed marks become `played` events of that turn.
#[tokio::test(start_paused = true)]
async fn plays_in_order_paced_with_marks() {
    let mut line = Line::open(3, "acme");
    line.start().await;
    // (sentence, chunk, frames, last, turn_last, byte)
    for (s, c, frames, last, turn_last, byte) in [
        (1, 0, 3, true, true, 3),
        (0, 1, 2, true, false, 2),
        (0, 0, 2, false, false, 1),
    ] {
        line.chunk(0, (s, c), frames, (last, turn_last), byte);
    }
    let mut out = line.until_mark("0:0").await;
    out.extend(line.until_mark("0:1").await);
    let mut expected = vec![1u8; 320];
    expected.extend([2u8; 320]);
    expected.extend([3u8; 480]);
    assert_eq!(media_bytes(&out), expected);
    let frames: Vec<Instant> = out
        .iter()
        .filter(|(_, m)| matches!(m, OutboundMessage::Media { .. }))
        .map(|(at, _)| *at)
        .collect();
    assert_eq!(frames.len(), 7);
    for (i, at) in frames.iter().enumerate() {
        let due = (i as u64 * 20).saturating_sub(80);
        assert_eq!(
            at.duration_since(frames[0]).as_millis() as u64,
            due,
            "frame {i}"
        );
    }
    line.echo("0:0");
    line.echo("0:1");
    let backend = line.backend.clone();
    until(|| backend.of_kind(Kind::Played).len() == 2).await;
    let played: Vec<(u32, Body)> = backend
        .of_kind(Kind::Played)
        .into_iter()
        .map(|e| (e.turn, e.body))
        .collect();
    assert_eq!(
        played,
        [
            (
                0,
                Body::Played(Played {
                    sentence: 0,
                    mark: "0:0".into()
                })
            ),
            (
                0,
                Body::Played(Played {
                    sentence: 1,
                    mark: "0:1".into()
                })
            ),
        ]
    );
    line.close().await;
}

/// A newer turn supersedes the one playing: the rest of the old turn is never sent, a late
/// chunk of it is dropped, and the new turn plays with its own mark.
#[tokio::test(start_paused = true)]
async fn newer_turn_supersedes_older() {
    let mut line = Line::open(4, "acme");
    line.start().await;
    line.chunk(1, (0, 0), 20, (false, false), 7);
    let (_, first) = line.next().await.unwrap();
    assert!(matches!(first, OutboundMessage::Media { .. }));
    line.chunk(2, (0, 0), 2, (true, true), 8);
    line.chunk(1, (0, 1), 2, (true, true), 9);
    let out = line.until_mark("2:0").await;
    let bytes = media_bytes(&out);
    assert!(bytes.ends_with(&[8; 320]), "turn 2 plays");
    assert!(!bytes.contains(&9), "late chunk of turn 1 dropped");
    assert!(
        bytes.iter().filter(|b| **b == 7).count() < 20 * 160,
        "turn 1 cut short"
    );
    assert!(
        out.iter().all(
            |(_, m)| !matches!(m, OutboundMessage::Mark { mark, .. } if mark.name.starts_with("1:"))
        ),
        "no mark for the superseded sentence"
    );
    line.close().await;
}

/// Speech while the bot talks (tenant mode `speech`): `clear` goes out at once, the token is
/// bumped past the turn, `bargein` says how many sentences were heard, marks echoed because
/// of the clear are not `played`, and the cut turn's later chunks are dropped while the next
/// turn plays.
#[tokio::test(start_paused = true)]
async fn barge_in_clears_and_publishes() {
    let mut line = Line::open(5, "globex");
    line.start().await;
    line.chunk(0, (0, 0), 1, (true, false), 1);
    line.chunk(0, (1, 0), 1, (true, false), 2);
    line.chunk(0, (2, 0), 50, (false, false), 3);
    line.until_mark("0:0").await;
    line.until_mark("0:1").await;
    line.echo("0:0");
    let backend = line.backend.clone();
    until(|| backend.of_kind(Kind::Played).len() == 1).await;

    line.deliver(
        0,
        Body::Speech(Speech {
            epoch: 1,
            offset_ms: 500,
        }),
    );
    loop {
        let (_, message) = line.next().await.unwrap();
        if is_clear(&message) {
            break;
        }
        assert!(matches!(message, OutboundMessage::Media { .. }));
    }
    until(|| !backend.of_kind(Kind::BargeIn).is_empty()).await;
    let barge = &backend.of_kind(Kind::BargeIn)[0];
    assert_eq!(barge.turn, 0);
    assert_eq!(
        barge.body,
        Body::BargeIn(BargeIn {
            token: 1,
            trigger: BargeInTrigger::Speech,
            sentences_heard: 1,
            cut: None,
        })
    );
    assert_eq!(backend.session(&line.sid), Some((tenant_id("globex"), 1)));

    line.echo("0:1"); // Twilio echoes the pending mark because of the clear.
    line.chunk(0, (2, 1), 2, (true, true), 4);
    line.chunk(1, (0, 0), 1, (true, true), 5);
    let out = line.until_mark("1:0").await;
    assert_eq!(media_bytes(&out), [5; 160], "only the new turn plays");
    assert_eq!(
        backend.of_kind(Kind::Played).len(),
        1,
        "the cleared mark was not heard"
    );
    line.close().await;
}

/// Words mode: backchannel partials never interrupt; a partial with enough real words does.
#[tokio::test(start_paused = true)]
async fn backchannel_is_ignored_real_words_interrupt() {
    let mut line = Line::open(6, "acme");
    line.start().await;
    line.chunk(0, (0, 0), 10, (true, false), 1);
    line.chunk(0, (1, 0), 50, (true, true), 2);
    line.next().await.unwrap();
    for text in ["uh-huh", "Okay. Yeah, mm-hmm!", "right"] {
        line.deliver(
            0,
            Body::Partial(Partial {
                epoch: 1,
                text: text.into(),
            }),
        );
    }
    let out = line.until_mark("0:0").await;
    assert!(
        !out.iter().any(|(_, m)| is_clear(m)),
        "no clear for backchannel"
    );
    assert!(line.backend.of_kind(Kind::BargeIn).is_empty());

    line.deliver(
        0,
        Body::Partial(Partial {
            epoch: 1,
            text: "okay wait, stop".into(),
        }),
    );
    loop {
        if is_clear(&line.next().await.unwrap().1) {
            break;
        }
    }
    let backend = line.backend.clone();
    until(|| !backend.of_kind(Kind::BargeIn).is_empty()).await;
    let Body::BargeIn(barge) = &backend.of_kind(Kind::BargeIn)[0].body else {
        panic!()
    };
    assert_eq!(
        (barge.trigger, barge.sentences_heard),
        (BargeInTrigger::Words, 0)
    );
    line.close().await;
}

/// Speech with no bot audio pending interrupts nothing, and a stale STT owner's speech
/// (lower epoch) is ignored.
#[tokio::test(start_paused = true)]
async fn no_barge_in_without_bot_audio_or_from_a_stale_owner() {
    let mut line = Line::open(7, "globex");
    line.start().await;
    line.deliver(
        0,
        Body::Speech(Speech {
            epoch: 2,
            offset_ms: 0,
        }),
    );
    line.chunk(0, (0, 0), 30, (true, true), 1);
    let (_, first) = line.next().await.unwrap();
    assert!(
        matches!(first, OutboundMessage::Media { .. }),
        "nothing to clear before audio"
    );
    line.deliver(
        0,
        Body::Speech(Speech {
            epoch: 1,
            offset_ms: 0,
        }),
    );
    let out = line.until_mark("0:0").await;
    assert!(
        !out.iter().any(|(_, m)| is_clear(m)),
        "epoch 1 < 2 is stale"
    );
    let backend = line.close().await;
    assert!(backend.of_kind(Kind::BargeIn).is_empty());
}

/// Every kind of bad input is rejected on its own (counted) without ending the call or
/// panicking; the valid frame after them is still published in sequence.
#[tokio::test(start_paused = true)]
async fn bad_input_is_rejected_one_message_at_a_time() {
    let metrics = sb_runtime::metrics::install();
    let mut line = Line::open(8, "acme");
    line.raw(Incoming::Binary(160));
    line.raw(Incoming::Text("not json".into()));
    line.raw(Incoming::Text(r#"{"event":"teleport"}"#.into()));
    line.raw(Incoming::Text(r#"{"no":"event"}"#.into()));
    line.raw(Incoming::Text(
        format!(r#"{{"event":"media","pad":"{}"}}"#, "x".repeat(20_000)).into(),
    ));
    line.media(&[1; 160]); // before start
    line.start().await;
    let second = line.start_message("acme");
    line.send(second);
    line.raw(Incoming::Text(
        r#"{"event":"media","sequenceNumber":"9","streamSid":"MZ00000000000000000000000000000001","media":{"track":"inbound","chunk":"1","timestamp":"0","payload":"***"}}"#.into(),
    ));
    line.raw(Incoming::Text(
        r#"{"event":"media","sequenceNumber":9,"streamSid":"MZ00000000000000000000000000000001"}"#
            .into(),
    ));
    let mut wrong = line.media_message(&[2; 160]);
    if let InboundMessage::Media { stream_sid, .. } = &mut wrong {
        *stream_sid = "MZ99999999999999999999999999999999".into();
    }
    line.send(wrong);
    line.echo("7:7");
    line.media(&[3; 160]);
    let backend = line.close().await;

    assert_eq!(backend.kinds(), [Kind::Start, Kind::Audio, Kind::End]);
    let Body::Audio(audio) = &backend.of_kind(Kind::Audio)[0].body else {
        panic!()
    };
    assert_eq!((audio.seq, audio.payload.0[0]), (0, 3));
    let text = metrics.render();
    for reason in [
        "binary",
        "bad_json",
        "unknown_event",
        "missing_event",
        "too_large",
        "before_start",
        "second_start",
        "bad_payload",
        "invalid",
        "wrong_stream",
        "unknown_mark",
    ] {
        let needle = format!("switchboard_ingress_rejected_messages_total{{reason=\"{reason}\"}}");
        assert!(text.contains(&needle), "{reason} not counted:\n{text}");
    }
}

/// At the drain deadline (`abort`) a live socket is closed and its call ended; before it,
/// shutdown alone (`stopping`) leaves the socket playing.
#[tokio::test(start_paused = true)]
async fn drain_deadline_closes_live_sockets() {
    let mut line = Line::open(10, "acme");
    line.start().await;
    line.state.shutdown.trigger();
    line.chunk(0, (0, 0), 2, (true, true), 1);
    let out = line.until_mark("0:0").await;
    assert_eq!(media_bytes(&out).len(), 320, "still playing while draining");
    line.state.shutdown.abort().cancel();
    line.task.await.unwrap();
    assert_eq!(line.backend.kinds().last(), Some(&Kind::End));
    let _ = line.to_ingress.close().await;
}
