//! `rerun_diff`'s pairing and rendering, on hand-made calls: what the recording said beside
//! what the re-run said, timed from each one's own input.

use bytes::Bytes;
use sb_schemas::{CallSid, Mulaw, Sentence, TenantId, Token, Transcript, TtsChunk};

use super::*;
use crate::Stored;

fn event(turn: u32, at_ms: u64, body: Body) -> Envelope {
    let sid = CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap();
    let mut event = Envelope::new(TenantId::parse("acme").unwrap(), sid, turn, body);
    event.at = at_ms * 1000;
    event
}

fn log(events: Vec<Envelope>) -> CallLog {
    CallLog {
        events: events
            .into_iter()
            .map(|event| Stored {
                stream: "CALLS",
                seq: 0,
                event,
            })
            .collect(),
        undecodable: 0,
    }
}

fn sentence(index: u32, text: &str) -> Body {
    Body::Sentence(Sentence {
        index,
        text: text.into(),
        last: true,
        fallback: false,
    })
}

fn token(text: &str) -> Body {
    Body::Token(Token {
        index: 0,
        text: text.into(),
    })
}

fn chunk(sentence: u32, bytes: usize) -> Body {
    Body::TtsChunk(TtsChunk {
        sentence,
        chunk: 0,
        last: true,
        turn_last: true,
        payload: Mulaw(Bytes::from(vec![0xff; bytes])),
    })
}

fn fed(recorded: Envelope, input_at_ms: u64, outputs: Vec<Envelope>) -> Fed {
    let mut input = recorded.clone();
    input.at = input_at_ms * 1000;
    Fed {
        recorded,
        input,
        outputs,
        error: None,
        notes: Vec::new(),
    }
}

/// The agent's turn: recorded and new sentences side by side, the first token and first
/// sentence each timed from its own input; a changed text is flagged and summed up.
#[test]
fn agent_turns_set_the_new_answer_beside_the_recorded_one() {
    let question = event(
        1,
        1_000,
        Body::Transcript(Transcript {
            epoch: 1,
            text: "Open on Sunday?".into(),
            confidence: 0.9,
            audio_seq: 1,
            speech_ended_at: 0,
        }),
    );
    let call = log(vec![
        question.clone(),
        event(1, 1_220, token("No")),
        event(1, 1_410, sentence(0, "No, we are closed.")),
    ]);
    let same = fed(
        question.clone(),
        50_000,
        vec![
            event(1, 50_095, token("No")),
            event(1, 50_120, sentence(0, "No, we are closed.")),
        ],
    );
    let changed = fed(
        question,
        60_000,
        vec![event(1, 60_300, sentence(0, "Yes, ten to four."))],
    );
    let turns = turns(StageName::Agent, &call, &[same, changed]);
    let t = &turns[0];
    assert_eq!((t.turn, t.text_changed), (1, false));
    assert_eq!(t.input, "the caller: \"Open on Sunday?\"");
    assert_eq!(
        (t.recorded.first_token_ms, t.recorded.first_sentence_ms),
        (Some(220), Some(410))
    );
    assert_eq!(
        (t.new.first_token_ms, t.new.first_sentence_ms),
        (Some(95), Some(120))
    );
    let t = &turns[1];
    assert!(t.text_changed);
    assert_eq!(
        (t.new.first_token_ms, t.new.first_sentence_ms),
        (None, Some(300))
    );
    let text = render(StageName::Agent, &turns);
    for line in [
        "turn 1 · the caller: \"Open on Sunday?\" · text changed",
        "  first sentence  +410 ms         +300 ms",
        "  recorded [0] No, we are closed.",
        "  new      [0] Yes, ten to four.",
        "summary: the text changed in 1 of 2 turns (turn 1)",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in\n{text}"
        );
    }
    let json: serde_json::Value = serde_json::from_str(&json_line(t)).unwrap();
    assert_eq!(json["stage"], "agent");
    assert_eq!(json["new"]["sentences"][0]["text"], "Yes, ten to four.");
    assert_eq!(json["recorded"]["first_token_ms"], 220);
}

/// The tts turn: each sentence's audio (8 bytes a ms) recorded and new, the first chunk
/// timed from the turn's first sentence, and the total audio change in the summary.
#[test]
fn tts_turns_compare_audio_durations() {
    let first = event(0, 1_000, sentence(0, "Hello."));
    let second = event(0, 1_010, sentence(1, "How can I help?"));
    let call = log(vec![
        first.clone(),
        second.clone(),
        event(0, 1_080, chunk(0, 1_600)),
        event(0, 1_300, chunk(1, 4_000)),
    ]);
    let fed = [
        fed(first, 9_000, vec![event(0, 9_040, chunk(0, 2_400))]),
        fed(second, 9_100, vec![event(0, 9_200, chunk(1, 4_000))]),
    ];
    let turns = turns(StageName::Tts, &call, &fed);
    assert_eq!(turns.len(), 1);
    let t = &turns[0];
    assert_eq!(t.input, "2 sentences");
    assert!(!t.text_changed);
    assert_eq!(
        (t.recorded.audio_ms, t.new.audio_ms),
        (Some(700), Some(800))
    );
    assert_eq!(
        (t.recorded.first_chunk_ms, t.new.first_chunk_ms),
        (Some(80), Some(40))
    );
    let audio: Vec<_> = t.new.sentences.iter().map(|s| s.audio_ms).collect();
    assert_eq!(audio, [Some(300), Some(500)]);
    let text = render(StageName::Tts, &turns);
    for line in [
        "turn 0 · 2 sentences",
        "  audio           0.70 s          0.80 s",
        "  [0] Hello.  0.20 s → 0.30 s",
        "summary: 1 turn re-run, the text changed in none; audio 0.70 s → 0.80 s (+0.10 s)",
    ] {
        assert!(
            text.lines().any(|l| l == line),
            "{line:?} missing in\n{text}"
        );
    }
}

/// A failed `handle` and the LLM's errors are notes of their turn, counted in the summary.
#[test]
fn errors_are_noted_per_turn() {
    let start = event(0, 0, sentence(0, "x"));
    let mut broken = fed(start, 10, Vec::new());
    broken.error = Some("no tenant \"acme\"".into());
    broken
        .notes
        .push("llm: llm answered 404: no such model".into());
    let turns = turns(StageName::Agent, &log(Vec::new()), &[broken]);
    assert_eq!(
        turns[0].notes,
        [
            "the stage failed: no tenant \"acme\"",
            "llm: llm answered 404: no such model"
        ]
    );
    let text = render(StageName::Agent, &turns);
    assert!(text.contains("  new      (no sentence)"), "{text}");
    assert!(text.contains("; 1 turn with errors"), "{text}");
}
