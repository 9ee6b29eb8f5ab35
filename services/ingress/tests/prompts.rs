//! Turns that start without words, on the socket and paused time: a keypad entry (ended
//! by the terminator, by the timeout, or at once by an action key), the caller's silence
//! after the bot finished, and the call's length; each on a new turn, numbered past the
//! call's latest. Keys that are not keypad keys are rejected.

#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use common::line::{Line, until};
use sb_schemas::{Body, Keypad, KeypadEnd, Kind, MaxDuration, Silence};
use sb_twilio::media::{Dtmf, InboundMessage};

fn press(line: &mut Line, key: &str) {
    line.send(InboundMessage::Dtmf {
        stream_sid: common::line::STREAM.into(),
        sequence_number: 7,
        dtmf: Dtmf {
            track: "inbound_track".into(),
            digit: key.into(),
        },
    });
}

/// The caller's line for `span`: a silent frame every 20 ms, as Twilio sends them.
async fn silent(line: &mut Line, span: Duration) {
    for _ in 0..span.as_millis() / 20 {
        line.media(&[sb_audio::mulaw::SILENCE; 160]);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The bodies of `kind` published so far, with their turns.
fn published(line: &Line, kind: Kind) -> Vec<(u32, Body)> {
    line.backend
        .of_kind(kind)
        .into_iter()
        .map(|e| (e.turn, e.body))
        .collect()
}

/// Digits end at `#` (not part of them), or after the timeout; `0` with a transfer
/// number is an entry of its own at once; every key is also a `dtmf` event; a bad key is
/// rejected and publishes nothing.
#[tokio::test(start_paused = true)]
async fn keypad_entries_start_new_turns() {
    let mut line = Line::open(51, "quiet");
    line.start().await;
    for key in ["4", "4", "1", "7", "#"] {
        press(&mut line, key);
    }
    let backend = line.backend.clone();
    until(|| backend.of_kind(Kind::Keypad).len() == 1).await;
    assert_eq!(
        published(&line, Kind::Keypad),
        [(
            1,
            Body::Keypad(Keypad {
                digits: "4417".into(),
                ended_by: KeypadEnd::Terminator
            })
        )]
    );
    assert_eq!(backend.of_kind(Kind::Dtmf).len(), 5);

    press(&mut line, "9");
    press(&mut line, "x");
    tokio::time::sleep(Duration::from_millis(2900)).await;
    assert_eq!(
        backend.of_kind(Kind::Keypad).len(),
        1,
        "not before the timeout"
    );
    until(|| backend.of_kind(Kind::Keypad).len() == 2).await;
    assert_eq!(
        published(&line, Kind::Keypad)[1],
        (
            2,
            Body::Keypad(Keypad {
                digits: "9".into(),
                ended_by: KeypadEnd::Timeout
            })
        )
    );
    assert_eq!(
        backend.of_kind(Kind::Dtmf).len(),
        6,
        "the bad key is not published"
    );

    press(&mut line, "0");
    until(|| backend.of_kind(Kind::Keypad).len() == 3).await;
    assert_eq!(
        published(&line, Kind::Keypad)[2].1,
        Body::Keypad(Keypad {
            digits: "0".into(),
            ended_by: KeypadEnd::Action
        })
    );
    line.close().await;
}

/// Once the bot's turn has played, 3 s of silence is a `silence` on a new turn; a minute
/// into the call, `max_duration`.
#[tokio::test(start_paused = true)]
async fn silence_after_the_bot_and_the_calls_length_start_turns() {
    let mut line = Line::open(52, "quiet");
    line.start().await;
    line.chunk(0, (0, 0), 25, (true, true), 1);
    line.until_mark("0:0").await;
    let backend = line.backend.clone();
    silent(&mut line, Duration::from_millis(2900)).await;
    assert!(backend.of_kind(Kind::Silence).is_empty(), "not before 3 s");
    silent(&mut line, Duration::from_millis(200)).await;
    until(|| backend.of_kind(Kind::Silence).len() == 1).await;
    assert_eq!(
        published(&line, Kind::Silence),
        [(
            1,
            Body::Silence(Silence {
                count: 1,
                after_ms: 3000
            })
        )]
    );
    // No bot audio since: no second silence.
    silent(&mut line, Duration::from_secs(50)).await;
    assert_eq!(backend.of_kind(Kind::Silence).len(), 1);
    silent(&mut line, Duration::from_secs(10)).await;
    until(|| !backend.of_kind(Kind::MaxDuration).is_empty()).await;
    assert_eq!(
        published(&line, Kind::MaxDuration)[0].1,
        Body::MaxDuration(MaxDuration { limit_secs: 60 })
    );
    line.close().await;
}
