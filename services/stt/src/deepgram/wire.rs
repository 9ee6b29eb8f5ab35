//! Deepgram live-streaming messages on the wire (PROTOCOLS §5.3–5.4).
//!
//! Consumes the server's JSON text frames; produces [`SttEvent`]s (times converted from
//! seconds to ms on the stream timeline), `None` for messages the worker does not act on
//! (`Metadata`, unknown types), or a [`WireError`] for malformed frames and provider
//! `Error` messages. Parsing is lenient, as the official SDKs are: unknown fields are
//! ignored, missing optional fields default. Produces the client control frames too.
//! State: none.

use serde::Deserialize;

use crate::provider::{SttEvent, SttResult};

pub(crate) const KEEP_ALIVE: &str = r#"{"type":"KeepAlive"}"#;
pub(crate) const FINALIZE: &str = r#"{"type":"Finalize"}"#;
pub(crate) const CLOSE_STREAM: &str = r#"{"type":"CloseStream"}"#;

/// A text frame the worker cannot use.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum WireError {
    #[error("malformed provider message: {0}")]
    Malformed(String),
    #[error("provider error: {0}")]
    Provider(String),
}

impl WireError {
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            WireError::Malformed(_) => "malformed_reply",
            WireError::Provider(_) => "provider_error",
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(tag = "type")]
enum Incoming {
    Results(Results),
    SpeechStarted {
        #[serde(default)]
        timestamp: f64,
    },
    UtteranceEnd {
        #[serde(default)]
        last_word_end: Option<f64>,
    },
    Error {
        #[serde(default)]
        description: String,
        #[serde(default)]
        variant: String,
    },
    #[serde(other)]
    Other,
}

#[derive(Debug, Deserialize)]
struct Results {
    #[serde(default)]
    start: f64,
    #[serde(default)]
    duration: f64,
    #[serde(default)]
    is_final: bool,
    #[serde(default)]
    speech_final: bool,
    #[serde(default)]
    from_finalize: bool,
    channel: Channel,
}

#[derive(Debug, Deserialize)]
struct Channel {
    #[serde(default)]
    alternatives: Vec<Alternative>,
}

#[derive(Debug, Deserialize)]
struct Alternative {
    #[serde(default)]
    transcript: String,
    #[serde(default)]
    confidence: f64,
    #[serde(default)]
    words: Vec<Word>,
}

#[derive(Debug, Deserialize)]
struct Word {
    #[serde(default)]
    end: f64,
}

/// Seconds (possibly garbage) to whole ms, never negative.
fn ms(seconds: f64) -> u64 {
    if seconds.is_finite() && seconds > 0.0 {
        (seconds * 1_000.0).round().min(u64::MAX as f64) as u64
    } else {
        0
    }
}

/// The longest reason kept from a frame (it quotes the frame, and is logged).
const MAX_REASON_BYTES: usize = 200;

/// `reason` cut to at most [`MAX_REASON_BYTES`], at a character boundary.
fn clip(mut reason: String) -> String {
    if reason.len() > MAX_REASON_BYTES {
        let mut end = MAX_REASON_BYTES;
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        reason.truncate(end);
    }
    reason
}

/// Parses one text frame.
pub(crate) fn parse(text: &str) -> Result<Option<SttEvent>, WireError> {
    let incoming: Incoming =
        serde_json::from_str(text).map_err(|e| WireError::Malformed(clip(e.to_string())))?;
    Ok(match incoming {
        Incoming::Results(results) => Some(SttEvent::Result(result(results))),
        Incoming::SpeechStarted { timestamp } => Some(SttEvent::SpeechStarted {
            at_ms: ms(timestamp),
        }),
        Incoming::UtteranceEnd { last_word_end } => Some(SttEvent::UtteranceEnd {
            last_word_end_ms: last_word_end.map(ms),
        }),
        Incoming::Error {
            description,
            variant,
        } => {
            return Err(WireError::Provider(clip(format!(
                "{variant}: {description}"
            ))));
        }
        Incoming::Other => None,
    })
}

fn result(results: Results) -> SttResult {
    let start_ms = ms(results.start);
    let end_ms = ms(results.start + results.duration).max(start_ms);
    let best = results.channel.alternatives.into_iter().next();
    let (transcript, confidence, last_word_end_ms) = match best {
        Some(alt) => {
            let last_word = alt.words.iter().map(|w| ms(w.end)).max();
            (alt.transcript, alt.confidence as f32, last_word)
        }
        None => (String::new(), 0.0, None),
    };
    SttResult {
        start_ms,
        end_ms,
        is_final: results.is_final,
        speech_final: results.speech_final,
        from_finalize: results.from_finalize,
        transcript,
        confidence: if confidence.is_finite() {
            confidence
        } else {
            0.0
        },
        last_word_end_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every message shape of PROTOCOLS §5.3 parses to the event it means; unknown types
    /// and Metadata are ignored; malformed frames and provider errors are errors, not panics.
    #[test]
    fn parses_server_messages() {
        let results = r#"{"type":"Results","channel_index":[0,1],"duration":1.65,"start":0.745,
            "is_final":true,"speech_final":true,"from_finalize":false,
            "channel":{"alternatives":[{"transcript":"Testing. 123.","confidence":0.77905273,
            "words":[{"word":"testing","start":1.07,"end":1.57,"confidence":0.69},
                     {"word":"123","start":1.895,"end":2.395,"confidence":0.77}]}]},
            "metadata":{"request_id":"x"}}"#;
        let cases: Vec<(&str, Result<Option<SttEvent>, &str>)> = vec![
            (
                results,
                Ok(Some(SttEvent::Result(SttResult {
                    start_ms: 745,
                    end_ms: 2_395,
                    is_final: true,
                    speech_final: true,
                    from_finalize: false,
                    transcript: "Testing. 123.".into(),
                    confidence: 0.779_052_73_f64 as f32,
                    last_word_end_ms: Some(2_395),
                }))),
            ),
            (
                r#"{"type":"Results","start":3,"duration":1,"channel":{"alternatives":[]}}"#,
                Ok(Some(SttEvent::Result(SttResult {
                    start_ms: 3_000,
                    end_ms: 4_000,
                    ..SttResult::default()
                }))),
            ),
            (
                r#"{"type":"SpeechStarted","channel":[0,1],"timestamp":9.54}"#,
                Ok(Some(SttEvent::SpeechStarted { at_ms: 9_540 })),
            ),
            (
                r#"{"type":"UtteranceEnd","channel":[0,1],"last_word_end":2.395}"#,
                Ok(Some(SttEvent::UtteranceEnd {
                    last_word_end_ms: Some(2_395),
                })),
            ),
            (
                r#"{"type":"SpeechStarted","timestamp":-4}"#,
                Ok(Some(SttEvent::SpeechStarted { at_ms: 0 })),
            ),
            (
                r#"{"type":"Metadata","request_id":"x","duration":1.0}"#,
                Ok(None),
            ),
            (r#"{"type":"SomethingNew","x":1}"#, Ok(None)),
            (r#"{"type":"Results","start":1}"#, Err("malformed_reply")),
            (r#"{"no_type":true}"#, Err("malformed_reply")),
            ("not json", Err("malformed_reply")),
            (
                r#"{"type":"Error","variant":"SchemaError","description":"bad"}"#,
                Err("provider_error"),
            ),
        ];
        for (text, expected) in cases {
            match (parse(text), expected) {
                (Ok(got), Ok(want)) => assert_eq!(got, want, "{text}"),
                (Err(err), Err(kind)) => assert_eq!(err.kind(), kind, "{text}"),
                (got, want) => panic!("{text}: got {got:?}, expected {want:?}"),
            }
        }
    }

    /// A long reason is cut at a character boundary, not inside one: a frame that is a
    /// JSON string of `Ḟ`s (the error quotes it; found by fuzzing) and a provider error
    /// with a multi-byte description (the same cut) are errors, not panics.
    #[test]
    fn long_reasons_are_cut_between_characters() {
        let quoted = format!("\"{}\"", "\u{1e1e}".repeat(100));
        let described = format!(
            r#"{{"type":"Error","variant":"","description":"a{}"}}"#,
            "é".repeat(150)
        );
        for (text, kind) in [(quoted, "malformed_reply"), (described, "provider_error")] {
            let err = parse(&text).unwrap_err();
            assert_eq!(err.kind(), kind, "{text}");
            let reason = match err {
                WireError::Malformed(reason) | WireError::Provider(reason) => reason,
            };
            assert!((MAX_REASON_BYTES - 3..=MAX_REASON_BYTES).contains(&reason.len()));
        }
    }
}
