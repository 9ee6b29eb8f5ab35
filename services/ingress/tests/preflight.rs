//! A preflight turn on the socket (paused time): the bot audio of a turn started on a
//! stable interim transcript is held, unsent, until the turn's transcript confirms it,
//! then plays from its start; a transcript on a newer turn (the final differed) discards
//! it unheard; and while held it is not the bot speaking, so the caller's voice
//! interrupts nothing.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::line::{Line, is_clear, media_bytes};
use sb_schemas::{Body, Kind, Preflight, Speech, Transcript};
use sb_twilio::OutboundMessage;

fn preflight(text: &str) -> Body {
    Body::Preflight(Preflight {
        epoch: 1,
        text: text.into(),
    })
}

fn transcript(text: &str) -> Body {
    Body::Transcript(Transcript {
        epoch: 1,
        text: text.into(),
        confidence: 0.9,
        audio_seq: 50,
        speech_ended_at: 0,
    })
}

/// Nothing went to Twilio since the last look.
fn silent(line: &mut Line) -> bool {
    line.from_ingress.try_recv().is_err()
}

/// Held until the transcript, then played whole, in order, with its mark.
#[tokio::test(start_paused = true)]
async fn held_audio_plays_when_its_transcript_comes() {
    let mut line = Line::open(31, "acme");
    line.start().await;
    line.deliver(1, preflight("what are your hours"));
    line.chunk(1, (0, 1), 5, (true, true), 8);
    line.chunk(1, (0, 0), 5, (false, false), 7);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(silent(&mut line), "held audio went out");
    line.deliver(1, transcript("What are your hours?"));
    let out = line.until_mark("1:0").await;
    let mut expected = vec![7; 5 * 160];
    expected.extend([8; 5 * 160]);
    assert_eq!(media_bytes(&out), expected);
    line.close().await;
}

/// The final differed: its transcript starts turn 2, the held turn 1 is never heard and
/// turn 2's answer plays.
#[tokio::test(start_paused = true)]
async fn a_transcript_on_a_newer_turn_discards_the_held_one() {
    let mut line = Line::open(32, "acme");
    line.start().await;
    line.deliver(1, preflight("what are your"));
    line.chunk(1, (0, 0), 5, (true, true), 7);
    line.deliver(2, transcript("What are your prices?"));
    line.chunk(2, (0, 0), 5, (true, true), 9);
    let out = line.until_mark("2:0").await;
    assert_eq!(media_bytes(&out), [9; 5 * 160]);
    assert!(
        out.iter().all(
            |(_, m)| !matches!(m, OutboundMessage::Mark { mark, .. } if mark.name.starts_with("1:"))
        ),
        "{out:?}"
    );
    line.close().await;
}

/// While the answer is held, the caller's voice (a `speech` tenant barges in on any) cuts
/// nothing: no `clear`, no `bargein`; the answer plays once confirmed.
#[tokio::test(start_paused = true)]
async fn held_audio_is_not_the_bot_speaking() {
    let mut line = Line::open(33, "globex");
    line.start().await;
    line.deliver(1, preflight("can I book"));
    line.chunk(1, (0, 0), 5, (true, true), 7);
    tokio::time::sleep(Duration::from_millis(500)).await;
    line.deliver(
        1,
        Body::Speech(Speech {
            epoch: 1,
            offset_ms: 900,
        }),
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(silent(&mut line), "nothing sent, no clear");
    assert!(line.backend.of_kind(Kind::BargeIn).is_empty());
    line.deliver(1, transcript("Can I book?"));
    let out = line.until_mark("1:0").await;
    assert!(out.iter().all(|(_, m)| !is_clear(m)));
    assert_eq!(media_bytes(&out), [7; 5 * 160]);
    line.close().await;
}
