//! A call as a chat transcript: what the caller said (and pressed), what the bot said, and
//! what of the bot's answer the caller never heard in full.
//!
//! Consumes a call's control events in producer-time order; produces [`Line`]s. A bot
//! sentence is `played` when the ingress confirmed it (`played`, the mark echo), `cut`
//! when its turn was barged in on before it was confirmed, `unplayed` otherwise (the call
//! ended first). Tool calls and their results are lines of their own. Pure; no state.

use std::collections::HashSet;

use sb_schemas::{Body, Envelope, ToolOutcome};
use serde::Serialize;
use utoipa::ToSchema;

/// Who a line is from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Speaker {
    Caller,
    Bot,
    /// The tenant's tools, called by the model.
    Tool,
}

/// What a line records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum LineKind {
    /// A final transcript of the caller's speech.
    Said,
    /// A key the caller pressed.
    Pressed,
    /// A bot sentence the caller heard in full.
    Played,
    /// A bot sentence cut (or never started) by the caller's barge-in.
    Cut,
    /// A bot sentence never confirmed played: the call ended first.
    Unplayed,
    /// The model called a tool.
    ToolCall,
    /// What the tool answered.
    ToolResult,
}

impl LineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Said => "said",
            Self::Pressed => "pressed",
            Self::Played => "played",
            Self::Cut => "cut",
            Self::Unplayed => "unplayed",
            Self::ToolCall => "tool_call",
            Self::ToolResult => "tool_result",
        }
    }
}

/// One line of the transcript.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct Line {
    /// Producer time, µs since the Unix epoch.
    pub at: u64,
    pub turn: u32,
    pub speaker: Speaker,
    pub kind: LineKind,
    pub text: String,
    /// A fallback phrase (the LLM or a tool failed).
    pub fallback: bool,
}

/// The transcript of `events` (control events in producer-time order).
pub fn lines<'a>(events: impl IntoIterator<Item = &'a Envelope>) -> Vec<Line> {
    let events: Vec<&Envelope> = events.into_iter().collect();
    let played: HashSet<(u32, u32)> = events
        .iter()
        .filter_map(|e| match &e.body {
            Body::Played(p) => Some((e.turn, p.sentence)),
            _ => None,
        })
        .collect();
    let barged: HashSet<u32> = events
        .iter()
        .filter(|e| matches!(e.body, Body::BargeIn(_)))
        .map(|e| e.turn)
        .collect();
    // A redelivered sentence is one line: the first copy, by (turn, index).
    let mut sentences: HashSet<(u32, u32)> = HashSet::new();
    let mut out = Vec::new();
    for e in events {
        let line = |speaker, kind, text: String| Line {
            at: e.at,
            turn: e.turn,
            speaker,
            kind,
            text,
            fallback: false,
        };
        match &e.body {
            Body::Transcript(t) => out.push(line(Speaker::Caller, LineKind::Said, t.text.clone())),
            Body::Dtmf(d) => out.push(line(Speaker::Caller, LineKind::Pressed, d.digit.clone())),
            Body::Sentence(s) => {
                if !sentences.insert((e.turn, s.index)) {
                    continue;
                }
                let kind = if played.contains(&(e.turn, s.index)) {
                    LineKind::Played
                } else if barged.contains(&e.turn) {
                    LineKind::Cut
                } else {
                    LineKind::Unplayed
                };
                out.push(Line {
                    fallback: s.fallback,
                    ..line(Speaker::Bot, kind, s.text.clone())
                });
            }
            Body::ToolCall(c) => out.push(line(
                Speaker::Tool,
                LineKind::ToolCall,
                format!("{}({})", c.name, c.arguments),
            )),
            Body::ToolResult(r) => {
                let text = match r.outcome {
                    ToolOutcome::Ok => format!("{} → {}", r.name, r.result),
                    outcome => format!("{} → {}", r.name, outcome.as_str()),
                };
                out.push(line(Speaker::Tool, LineKind::ToolResult, text));
            }
            _ => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use sb_schemas::testing::{sid, tenant};
    use sb_schemas::*;

    use super::*;

    fn at(turn: u32, ms: u64, body: Body) -> Envelope {
        let mut e = Envelope::new(tenant(), sid(1), turn, body);
        e.at = ms * 1_000;
        e
    }

    fn sentence(index: u32, text: &str, fallback: bool) -> Body {
        Body::Sentence(Sentence {
            index,
            text: text.into(),
            last: false,
            fallback,
        })
    }

    fn played(sentence: u32) -> Body {
        Body::Played(Played {
            sentence,
            mark: format!("m{sentence}"),
        })
    }

    /// The caller's words and keys, the bot's sentences as heard, cut or never played,
    /// in time order; a redelivered sentence once; tools as lines of their own.
    #[test]
    fn a_call_reads_as_a_chat() {
        let events = vec![
            at(0, 0, sentence(0, "Hello, how can I help?", false)),
            at(0, 1, sentence(0, "Hello, how can I help?", false)),
            at(0, 500, played(0)),
            at(
                1,
                2_000,
                Body::Transcript(Transcript {
                    epoch: 1,
                    text: "When are you open?".into(),
                    confidence: 0.9,
                    audio_seq: 10,
                    speech_ended_at: 1_900_000,
                }),
            ),
            at(1, 2_300, sentence(0, "Nine to five.", false)),
            at(1, 2_400, sentence(1, "On weekdays we also", false)),
            at(1, 2_900, played(0)),
            at(
                1,
                3_000,
                Body::BargeIn(BargeIn {
                    token: 2,
                    trigger: BargeInTrigger::Speech,
                    sentences_heard: 1,
                    cut: None,
                }),
            ),
            at(2, 4_000, Body::Dtmf(Dtmf { digit: "7".into() })),
            at(2, 4_100, sentence(0, "Sorry, say again?", true)),
            at(
                2,
                4_200,
                Body::End(End {
                    reason: EndReason::Stop,
                }),
            ),
        ];
        let got: Vec<(Speaker, LineKind, String, bool)> = lines(events.iter())
            .into_iter()
            .map(|l| (l.speaker, l.kind, l.text, l.fallback))
            .collect();
        let want = [
            (
                Speaker::Bot,
                LineKind::Played,
                "Hello, how can I help?",
                false,
            ),
            (Speaker::Caller, LineKind::Said, "When are you open?", false),
            (Speaker::Bot, LineKind::Played, "Nine to five.", false),
            (Speaker::Bot, LineKind::Cut, "On weekdays we also", false),
            (Speaker::Caller, LineKind::Pressed, "7", false),
            (Speaker::Bot, LineKind::Unplayed, "Sorry, say again?", true),
        ]
        .map(|(s, k, t, f)| (s, k, t.to_owned(), f));
        assert_eq!(got, want);
        assert_eq!(lines(events.iter())[1].at, 2_000_000);
    }

    /// A tool call and its result, ok or failed, are tool lines.
    #[test]
    fn tools_are_lines_of_their_own() {
        let call = Body::ToolCall(ToolCall {
            id: "c1".into(),
            name: "book".into(),
            arguments: "{\"day\":\"mon\"}".into(),
            round: 0,
        });
        let result = |outcome, result: &str| {
            Body::ToolResult(ToolResult {
                id: "c1".into(),
                name: "book".into(),
                outcome,
                status: 200,
                result: result.into(),
                attempts: 1,
                elapsed_ms: 40,
            })
        };
        let events = [
            at(1, 0, call),
            at(1, 1, result(ToolOutcome::Ok, "{\"ok\":true}")),
            at(1, 2, result(ToolOutcome::Timeout, "")),
        ];
        let got: Vec<(Speaker, LineKind, String)> = lines(events.iter())
            .into_iter()
            .map(|l| (l.speaker, l.kind, l.text))
            .collect();
        assert_eq!(
            got,
            [
                (
                    Speaker::Tool,
                    LineKind::ToolCall,
                    "book({\"day\":\"mon\"})".to_owned()
                ),
                (
                    Speaker::Tool,
                    LineKind::ToolResult,
                    "book → {\"ok\":true}".to_owned()
                ),
                (
                    Speaker::Tool,
                    LineKind::ToolResult,
                    "book → timeout".to_owned()
                ),
            ]
        );
    }
}
