//! Per-turn latency waterfall: where the time of each answer went.
//!
//! Consumes a [`CallLog`]; produces, per turn, the producer timestamps of the steps from
//! the end of the caller's speech to the first bot audio chunk (stt → agent first token →
//! first sentence → tts first chunk), and renders them as a table. Turn 0 (the greeting)
//! starts at the `start` event. State: none.

use std::{collections::BTreeMap, fmt::Write as _};

use sb_schemas::Body;

use crate::CallLog;

/// The steps of one turn, in µs since the Unix epoch (`None` when the step never happened).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TurnLatency {
    pub turn: u32,
    /// What the caller said (empty for the greeting).
    pub said: String,
    /// End of the caller's speech (turn 0: the `start` event).
    pub speech_end: Option<u64>,
    pub transcript: Option<u64>,
    pub first_token: Option<u64>,
    pub first_sentence: Option<u64>,
    pub first_audio: Option<u64>,
    pub fallback: bool,
    pub interrupted: bool,
}

impl TurnLatency {
    /// End of speech → first bot audio chunk stored, in ms.
    pub fn total_ms(&self) -> Option<f64> {
        Some(self.first_audio?.saturating_sub(self.speech_end?) as f64 / 1e3)
    }
}

/// Every turn of the call, in order.
pub fn turns(log: &CallLog) -> Vec<TurnLatency> {
    let mut turns: BTreeMap<u32, TurnLatency> = BTreeMap::new();
    let mut first_played: BTreeMap<u32, (u32, u32)> = BTreeMap::new();
    let first = |slot: &mut Option<u64>, at: u64| {
        *slot = Some(slot.map_or(at, |s| s.min(at)));
    };
    for e in log.envelopes() {
        let t = turns.entry(e.turn).or_insert_with(|| TurnLatency {
            turn: e.turn,
            ..Default::default()
        });
        match &e.body {
            Body::Start(_) if e.turn == 0 => first(&mut t.speech_end, e.at),
            Body::Transcript(tr) => {
                t.said = tr.text.clone();
                let end = if tr.speech_ended_at > 0 {
                    tr.speech_ended_at
                } else {
                    e.at
                };
                first(&mut t.speech_end, end);
                first(&mut t.transcript, e.at);
            }
            Body::Token(_) => first(&mut t.first_token, e.at),
            Body::Sentence(s) => {
                first(&mut t.first_sentence, e.at);
                t.fallback |= s.fallback;
            }
            // The first chunk played, not the first stored: a later sentence can be
            // ready first (a cache hit) and waits in the ingress' reorder buffer.
            Body::TtsChunk(c) => {
                let position = (c.sentence, c.chunk);
                if first_played.get(&e.turn).is_none_or(|p| position < *p) {
                    first_played.insert(e.turn, position);
                    t.first_audio = Some(e.at);
                }
            }
            Body::BargeIn(_) => t.interrupted = true,
            _ => {}
        }
    }
    turns
        .into_values()
        .filter(|t| t.first_sentence.is_some() || t.transcript.is_some())
        .collect()
}

/// The waterfall as a table (ms between steps).
pub fn render(turns: &[TurnLatency]) -> String {
    let gap = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) => format!("{:>7.1}", b.saturating_sub(a) as f64 / 1e3),
        _ => format!("{:>7}", "-"),
    };
    let mut out = String::from("turn     stt   llm-1st  sentence    tts     total  caller said\n");
    for t in turns {
        let (stt, llm) = if t.turn == 0 {
            (format!("{:>7}", "-"), format!("{:>7}", "-"))
        } else {
            (
                gap(t.speech_end, t.transcript),
                gap(t.transcript, t.first_token),
            )
        };
        let sentence_from = if t.turn == 0 {
            t.speech_end
        } else {
            t.first_token.or(t.transcript)
        };
        let mut notes = String::new();
        if t.fallback {
            notes.push_str(" [fallback]");
        }
        if t.interrupted {
            notes.push_str(" [barged in]");
        }
        let said = if t.turn == 0 {
            "(greeting)".to_owned()
        } else {
            format!("“{}”", t.said)
        };
        let _ = writeln!(
            out,
            "{:>4} {stt} {llm}  {}  {}  {}  {said}{notes}",
            t.turn,
            gap(sentence_from, t.first_sentence),
            gap(t.first_sentence, t.first_audio),
            gap(t.speech_end, t.first_audio),
        );
    }
    out.push_str(
        "(ms; stt = end of speech → transcript, total = end of speech → first bot audio stored)\n",
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Stored;
    use sb_schemas::*;

    fn at(turn: u32, at: u64, body: Body) -> Stored {
        let mut event = Envelope::new(
            TenantId::parse("acme").unwrap(),
            CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap(),
            turn,
            body,
        );
        event.at = at;
        Stored {
            stream: "CALLS",
            seq: 0,
            event,
        }
    }

    #[test]
    fn waterfall_takes_the_first_of_each_step_and_the_first_chunk_played() {
        let transcript = Body::Transcript(Transcript {
            epoch: 1,
            text: "hours?".into(),
            confidence: 0.9,
            audio_seq: 10,
            speech_ended_at: 1_000_000,
        });
        let sentence = |i: u32| {
            Body::Sentence(Sentence {
                index: i,
                text: "x".into(),
                last: false,
                fallback: false,
            })
        };
        let chunk = |sentence: u32, c: u32| {
            Body::TtsChunk(TtsChunk {
                sentence,
                chunk: c,
                last: false,
                turn_last: false,
                payload: Mulaw::default(),
            })
        };
        let log = CallLog {
            events: vec![
                at(1, 1_300_000, transcript),
                at(
                    1,
                    1_500_000,
                    Body::Token(Token {
                        index: 0,
                        text: "We".into(),
                    }),
                ),
                at(
                    1,
                    1_600_000,
                    Body::Token(Token {
                        index: 1,
                        text: "'re".into(),
                    }),
                ),
                at(1, 1_700_000, sentence(0)),
                at(1, 1_900_000, sentence(1)),
                // Sentence 1 was a cache hit, stored before sentence 0's first chunk: it
                // waits for sentence 0, which is what the caller hears first.
                at(1, 1_720_000, chunk(1, 0)),
                at(1, 1_750_000, chunk(0, 0)),
                at(1, 1_800_000, chunk(0, 1)),
            ],
            undecodable: 0,
        };
        let turns = turns(&log);
        assert_eq!(turns.len(), 1);
        let t = &turns[0];
        assert_eq!(
            (
                t.speech_end,
                t.transcript,
                t.first_token,
                t.first_sentence,
                t.first_audio
            ),
            (
                Some(1_000_000),
                Some(1_300_000),
                Some(1_500_000),
                Some(1_700_000),
                Some(1_750_000)
            )
        );
        assert_eq!(t.total_ms(), Some(750.0));
        assert!(render(&turns).contains("750.0"));
    }
}
