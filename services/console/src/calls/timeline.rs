//! A call's events as rows of the call page's timeline (and of the live page's stream).
//!
//! Consumes a call's events in producer-time order; produces [`Row`]s: one per control
//! event, worded as `replay show` words it ([`sb_replay::timeline::line`], so the two never
//! disagree), without tokens and partial transcripts, and one per run of caller or bot
//! audio of a turn. Pure; no state.

use sb_replay::timeline;
use sb_schemas::{Body, Envelope};
use serde::Serialize;

/// One row of the timeline.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Row {
    /// Producer time, µs since the Unix epoch (an audio run: its first message).
    pub at: u64,
    pub turn: u32,
    /// The event kind (`transcript`, `sentence`, …), or `caller audio` / `bot audio`.
    pub kind: String,
    pub detail: String,
}

impl Row {
    /// Whether the row is an audio run (not marked on the player's time axis).
    pub fn is_audio(&self) -> bool {
        self.kind.ends_with(" audio")
    }
}

/// What happened in `e`, as replay's timeline says it (`“When are you open?” (confidence
/// 0.90, epoch 1)`); empty for audio.
pub fn detail(e: &Envelope) -> String {
    // `line` is `{secs}s  t{turn} {kind} {detail}`: the first three fields have no spaces.
    let line = timeline::line(e, e.at);
    let mut rest = line.as_str();
    for _ in 0..3 {
        rest = rest
            .trim_start()
            .split_once(char::is_whitespace)
            .map_or("", |(_, r)| r);
    }
    rest.trim_start().to_owned()
}

/// A control event as a row (`None`: audio, a token or a partial transcript).
pub fn row(e: &Envelope) -> Option<Row> {
    match e.body {
        Body::Audio(_) | Body::TtsChunk(_) | Body::Token(_) | Body::Partial(_) => None,
        _ => Some(Row {
            at: e.at,
            turn: e.turn,
            kind: e.kind().as_str().to_owned(),
            detail: detail(e),
        }),
    }
}

/// The rows of a call's events, audio folded into runs.
pub fn rows<'a>(events: impl Iterator<Item = &'a Envelope>) -> Vec<Row> {
    // (row index, messages, bytes) of the audio run being folded.
    let mut run: Option<(usize, usize, usize)> = None;
    let mut out: Vec<Row> = Vec::new();
    for e in events {
        let (kind, bytes) = match &e.body {
            Body::Audio(a) => ("caller audio", a.payload.0.len()),
            Body::TtsChunk(c) => ("bot audio", c.payload.0.len()),
            _ => {
                if let Some(r) = row(e) {
                    run = None;
                    out.push(r);
                }
                continue;
            }
        };
        match &mut run {
            Some((i, messages, total)) if out[*i].kind == kind && out[*i].turn == e.turn => {
                *messages += 1;
                *total += bytes;
                out[*i].detail = audio_detail(*messages, *total);
            }
            _ => {
                run = Some((out.len(), 1, bytes));
                out.push(Row {
                    at: e.at,
                    turn: e.turn,
                    kind: kind.to_owned(),
                    detail: audio_detail(1, bytes),
                });
            }
        }
    }
    out
}

/// µ-law at 8 kHz: one byte a sample, 8 bytes a millisecond.
fn audio_detail(messages: usize, bytes: usize) -> String {
    format!("{messages} messages, {} ms of audio", bytes / 8)
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use sb_schemas::testing::{sid, tenant};
    use sb_schemas::*;

    use super::*;

    fn at(turn: u32, ms: u64, body: Body) -> Envelope {
        let mut e = Envelope::new(tenant(), sid(1), turn, body);
        e.at = ms * 1_000;
        e
    }

    fn audio(seq: u64) -> Body {
        Body::Audio(Audio {
            seq,
            timestamp_ms: seq * 20,
            payload: Mulaw(Bytes::from(vec![0xFF; 160])),
        })
    }

    /// Control events keep replay's wording; tokens are left out; audio of one direction
    /// and turn is one row until something else happens.
    #[test]
    fn events_become_rows_with_audio_folded() {
        let transcript = Body::Transcript(Transcript {
            epoch: 1,
            text: "When are you open?".into(),
            confidence: 0.9,
            audio_seq: 3,
            speech_ended_at: 0,
        });
        let token = Body::Token(Token {
            index: 0,
            text: "Nine".into(),
        });
        let events = [
            at(0, 0, audio(0)),
            at(0, 20, audio(1)),
            at(0, 40, audio(2)),
            at(1, 50, transcript),
            at(1, 60, token),
            at(1, 80, audio(3)),
            at(1, 90, Body::Dtmf(Dtmf { digit: "7".into() })),
        ];
        let got: Vec<(String, String)> = rows(events.iter())
            .into_iter()
            .map(|r| (r.kind, r.detail))
            .collect();
        let want = [
            ("caller audio", "3 messages, 60 ms of audio"),
            (
                "transcript",
                "“When are you open?” (confidence 0.90, epoch 1)",
            ),
            ("caller audio", "1 messages, 20 ms of audio"),
            ("dtmf", "digit 7"),
        ]
        .map(|(k, d)| (k.to_owned(), d.to_owned()));
        assert_eq!(got, want);
    }
}
