//! Utterance assembly: provider results in, partial texts and complete utterances out.
//!
//! Consumes [`SttResult`]s and `UtteranceEnd`s in stream order; produces [`Assembled`]
//! values. A final result covers only the audio since the previous final, so an utterance
//! is the concatenation of the non-empty `is_final` pieces up to the one with
//! `speech_final` (or a `from_finalize` final, or an `UtteranceEnd` when the endpoint was
//! missed). Empty finals close nothing; with no utterance open they are covered silence.
//! State: the pieces of the open utterance (this value; one per provider connection).

use crate::provider::SttResult;

/// A complete utterance.
#[derive(Debug, Clone, PartialEq)]
pub struct Utterance {
    pub text: String,
    /// Mean confidence of its pieces.
    pub confidence: f32,
    /// End of the audio its final results cover, ms (stream timeline).
    pub end_ms: u64,
    /// End of its last word, ms (stream timeline): where speech ended.
    pub last_word_end_ms: u64,
}

/// What one provider message amounts to.
#[derive(Debug, Clone, PartialEq)]
pub enum Assembled {
    /// The utterance so far (final pieces plus the interim tail).
    Partial(String),
    Utterance(Utterance),
    /// A final without words while no utterance is open: audio up to `end_ms` held no speech.
    Silence {
        end_ms: u64,
    },
}

#[derive(Debug, Clone, PartialEq)]
struct Piece {
    text: String,
    confidence: f32,
}

/// The open utterance of one stream.
#[derive(Debug, Default)]
pub struct Assembler {
    pieces: Vec<Piece>,
    end_ms: u64,
    last_word_end_ms: Option<u64>,
}

impl Assembler {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether final pieces are waiting for their end of utterance.
    pub fn is_open(&self) -> bool {
        !self.pieces.is_empty()
    }

    /// One `Results` message.
    pub fn on_result(&mut self, result: &SttResult) -> Option<Assembled> {
        let text = result.transcript.trim();
        if !result.is_final {
            return (!text.is_empty()).then(|| Assembled::Partial(self.joined_with(text)));
        }
        if !text.is_empty() {
            self.pieces.push(Piece {
                text: text.to_owned(),
                confidence: result.confidence,
            });
            self.last_word_end_ms = Some(result.last_word_end_ms.unwrap_or(result.end_ms));
        }
        if self.pieces.is_empty() {
            return Some(Assembled::Silence {
                end_ms: result.end_ms,
            });
        }
        self.end_ms = self.end_ms.max(result.end_ms);
        if result.speech_final || result.from_finalize {
            return self.take().map(Assembled::Utterance);
        }
        (!text.is_empty()).then(|| Assembled::Partial(self.joined_with("")))
    }

    /// An `UtteranceEnd`: closes the open utterance if the endpoint was missed.
    pub fn on_utterance_end(&mut self) -> Option<Assembled> {
        self.take().map(Assembled::Utterance)
    }

    /// Closes the open utterance now (the stream is ending).
    pub fn take(&mut self) -> Option<Utterance> {
        if self.pieces.is_empty() {
            return None;
        }
        let pieces = std::mem::take(&mut self.pieces);
        let confidence = pieces.iter().map(|p| p.confidence).sum::<f32>() / pieces.len() as f32;
        let text = pieces
            .into_iter()
            .map(|p| p.text)
            .collect::<Vec<_>>()
            .join(" ");
        let end_ms = std::mem::take(&mut self.end_ms);
        Some(Utterance {
            text,
            confidence,
            end_ms,
            last_word_end_ms: self.last_word_end_ms.take().unwrap_or(end_ms),
        })
    }

    fn joined_with(&self, tail: &str) -> String {
        self.pieces
            .iter()
            .map(|p| p.text.as_str())
            .chain((!tail.is_empty()).then_some(tail))
            .collect::<Vec<_>>()
            .join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A provider message in a test script.
    enum In {
        Interim(&'static str),
        Final(&'static str, u64),
        SpeechFinal(&'static str, u64),
        FromFinalize(&'static str, u64),
        UtteranceEnd,
    }

    fn result(text: &str, end_ms: u64, speech_final: bool, from_finalize: bool) -> SttResult {
        SttResult {
            start_ms: 0,
            end_ms,
            is_final: true,
            speech_final,
            from_finalize,
            transcript: text.into(),
            confidence: 0.5,
            last_word_end_ms: (!text.is_empty()).then_some(end_ms.saturating_sub(100)),
        }
    }

    fn run(script: &[In]) -> Vec<Assembled> {
        let mut assembler = Assembler::new();
        let mut out = Vec::new();
        for input in script {
            let produced = match input {
                In::Interim(text) => assembler.on_result(&SttResult {
                    transcript: (*text).into(),
                    ..SttResult::default()
                }),
                In::Final(text, end) => assembler.on_result(&result(text, *end, false, false)),
                In::SpeechFinal(text, end) => assembler.on_result(&result(text, *end, true, false)),
                In::FromFinalize(text, end) => {
                    assembler.on_result(&result(text, *end, false, true))
                }
                In::UtteranceEnd => assembler.on_utterance_end(),
            };
            out.extend(produced);
        }
        out.extend(assembler.take().map(Assembled::Utterance));
        out
    }

    fn utterance(text: &str, end_ms: u64, last_word_end_ms: u64) -> Assembled {
        Assembled::Utterance(Utterance {
            text: text.into(),
            confidence: 0.5,
            end_ms,
            last_word_end_ms,
        })
    }

    fn partial(text: &str) -> Assembled {
        Assembled::Partial(text.into())
    }

    /// Pieces concatenate up to speech_final (or UtteranceEnd, or a from_finalize final);
    /// interims show the utterance so far; empty finals close nothing and, with nothing
    /// open, are covered silence; an empty interim says nothing.
    #[test]
    fn assembles_utterances() {
        use In::*;
        let cases: Vec<(&str, Vec<In>, Vec<Assembled>)> = vec![
            (
                "one final with speech_final",
                vec![Interim("book a"), SpeechFinal("Book a table.", 2_000)],
                vec![partial("book a"), utterance("Book a table.", 2_000, 1_900)],
            ),
            (
                "pieces up to speech_final",
                vec![
                    Final("I'd like", 1_000),
                    Interim("a table"),
                    SpeechFinal("a table.", 2_500),
                ],
                vec![
                    partial("I'd like"),
                    partial("I'd like a table"),
                    utterance("I'd like a table.", 2_500, 2_400),
                ],
            ),
            (
                "an empty speech_final closes the open pieces",
                vec![Final("Hello there.", 1_200), SpeechFinal("", 1_600)],
                vec![
                    partial("Hello there."),
                    utterance("Hello there.", 1_600, 1_100),
                ],
            ),
            (
                "empty finals with nothing open are silence, not utterances",
                vec![Final("", 3_000), SpeechFinal("  ", 3_500), Interim("")],
                vec![
                    Assembled::Silence { end_ms: 3_000 },
                    Assembled::Silence { end_ms: 3_500 },
                ],
            ),
            (
                "UtteranceEnd closes a missed endpoint; a second one is a no-op",
                vec![Final("Yes please", 900), UtteranceEnd, UtteranceEnd],
                vec![partial("Yes please"), utterance("Yes please", 900, 800)],
            ),
            (
                "a from_finalize final closes the utterance",
                vec![Final("Good", 500), FromFinalize("bye.", 1_000)],
                vec![partial("Good"), utterance("Good bye.", 1_000, 900)],
            ),
            (
                "an empty from_finalize with nothing open is silence",
                vec![FromFinalize("", 700)],
                vec![Assembled::Silence { end_ms: 700 }],
            ),
            (
                "the stream ending flushes open pieces",
                vec![Final("Wait", 400)],
                vec![partial("Wait"), utterance("Wait", 400, 300)],
            ),
            (
                "two utterances in a row",
                vec![SpeechFinal("One.", 1_000), SpeechFinal("Two.", 2_000)],
                vec![
                    utterance("One.", 1_000, 900),
                    utterance("Two.", 2_000, 1_900),
                ],
            ),
        ];
        for (name, script, expected) in cases {
            assert_eq!(run(&script), expected, "{name}");
        }
    }

    /// Confidence is the mean over the pieces; a missing word end falls back to the
    /// result's end.
    #[test]
    fn confidence_and_word_end() {
        let mut assembler = Assembler::new();
        let mut first = result("a", 1_000, false, false);
        first.confidence = 0.9;
        first.last_word_end_ms = None;
        let mut second = result("b", 2_000, true, false);
        second.confidence = 0.5;
        second.last_word_end_ms = None;
        assembler.on_result(&first);
        assert!(assembler.is_open());
        let Some(Assembled::Utterance(u)) = assembler.on_result(&second) else {
            panic!("expected an utterance");
        };
        assert!((u.confidence - 0.7).abs() < 1e-6, "{}", u.confidence);
        assert_eq!((u.end_ms, u.last_word_end_ms), (2_000, 2_000));
        assert!(!assembler.is_open());
    }
}
