//! One turn's latency as consecutive segments: end of the caller's speech → transcript →
//! first token → first sentence → first bot audio, and which segment took longest.
//!
//! Consumes replay's per-turn step timestamps ([`TurnLatency`]); produces [`TurnSteps`]:
//! the segments between the steps that happened, as offsets from the turn's start, with
//! the dominant (longest) one; the JSON API and the waterfall both draw from it. A missing
//! step is skipped (the next segment starts where the last present step was); a step
//! stamped before the previous one (producers' clocks differ) is a zero-length segment.
//! Pure; no state.

use sb_replay::latency::TurnLatency;
use serde::Serialize;
use utoipa::ToSchema;

/// A segment, named by the step it ends at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// End of speech → final transcript (speech to text).
    Stt,
    /// Transcript → the model's first token.
    Llm,
    /// First token (the greeting: the call's start) → first complete sentence.
    Sentence,
    /// First sentence → first bot audio chunk (text to speech).
    Tts,
}

impl Step {
    pub const ALL: [Step; 4] = [Step::Stt, Step::Llm, Step::Sentence, Step::Tts];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stt => "stt",
            Self::Llm => "llm",
            Self::Sentence => "sentence",
            Self::Tts => "tts",
        }
    }

    /// What the segment measures, for people.
    pub fn label(self) -> &'static str {
        match self {
            Self::Stt => "end of speech → transcript",
            Self::Llm => "transcript → first token",
            Self::Sentence => "first token → first sentence",
            Self::Tts => "first sentence → first audio",
        }
    }
}

/// One segment of a turn, in µs from the turn's start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Segment {
    pub step: Step,
    pub from_us: u64,
    pub to_us: u64,
}

impl Segment {
    pub fn ms(&self) -> f64 {
        (self.to_us - self.from_us) as f64 / 1e3
    }
}

/// A turn's segments.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct TurnSteps {
    /// 0 is the greeting.
    pub turn: u32,
    /// What the caller said (empty for the greeting).
    pub said: String,
    /// The turn's start: end of the caller's speech (the greeting: the call's `start`),
    /// µs since the Unix epoch.
    pub started_at: Option<u64>,
    pub segments: Vec<Segment>,
    /// Index into `segments` of the longest one (the first of equals).
    pub dominant: Option<usize>,
    /// End of speech → first bot audio, ms (`None` when either is missing).
    pub total_ms: Option<f64>,
    /// A fallback phrase was spoken.
    pub fallback: bool,
    /// The caller barged in on the answer.
    pub interrupted: bool,
}

/// The segments of `t`.
pub fn steps(t: &TurnLatency) -> TurnSteps {
    let points = [
        (Step::Stt, t.transcript),
        (Step::Llm, t.first_token),
        (Step::Sentence, t.first_sentence),
        (Step::Tts, t.first_audio),
    ];
    let origin = t
        .speech_end
        .or_else(|| points.iter().find_map(|(_, at)| *at));
    let mut segments = Vec::new();
    if let Some(origin) = origin {
        let mut cursor = 0u64;
        // Without an end of speech, the first step that happened is the origin itself.
        let mut is_origin = t.speech_end.is_none();
        for (step, at) in points {
            let Some(at) = at else { continue };
            let to = at.saturating_sub(origin).max(cursor);
            if !std::mem::take(&mut is_origin) {
                segments.push(Segment {
                    step,
                    from_us: cursor,
                    to_us: to,
                });
            }
            cursor = to;
        }
    }
    let dominant = segments
        .iter()
        .enumerate()
        .fold(None, |best: Option<(usize, u64)>, (i, s)| {
            let len = s.to_us - s.from_us;
            match best {
                Some((_, longest)) if longest >= len => best,
                _ => Some((i, len)),
            }
        })
        .map(|(i, _)| i);
    TurnSteps {
        turn: t.turn,
        said: t.said.clone(),
        started_at: origin,
        segments,
        dominant,
        total_ms: t.total_ms(),
        fallback: t.fallback,
        interrupted: t.interrupted,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn turn(points: [Option<u64>; 5]) -> TurnLatency {
        let ms = |p: Option<u64>| p.map(|ms| 1_000_000_000 + ms * 1_000);
        TurnLatency {
            turn: 1,
            said: "hours?".into(),
            speech_end: ms(points[0]),
            transcript: ms(points[1]),
            first_token: ms(points[2]),
            first_sentence: ms(points[3]),
            first_audio: ms(points[4]),
            fallback: false,
            interrupted: false,
        }
    }

    fn shape(s: &TurnSteps) -> Vec<(&'static str, f64, f64)> {
        s.segments
            .iter()
            .map(|g| {
                (
                    g.step.as_str(),
                    g.from_us as f64 / 1e3,
                    g.to_us as f64 / 1e3,
                )
            })
            .collect()
    }

    /// Four segments end to end; the longest (the model's first token) is dominant.
    #[test]
    fn a_full_turn_is_four_segments_end_to_end() {
        let s = steps(&turn([
            Some(0),
            Some(300),
            Some(900),
            Some(1_000),
            Some(1_150),
        ]));
        assert_eq!(
            shape(&s),
            [
                ("stt", 0.0, 300.0),
                ("llm", 300.0, 900.0),
                ("sentence", 900.0, 1_000.0),
                ("tts", 1_000.0, 1_150.0)
            ]
        );
        assert_eq!(s.dominant, Some(1));
        assert_eq!(s.total_ms, Some(1_150.0));
        assert_eq!(s.started_at, Some(1_000_000_000));
    }

    /// The greeting has no transcript or token: start → sentence → audio. A step stamped
    /// before the previous one is a zero-length segment, never a negative one.
    #[test]
    fn missing_steps_are_skipped_and_skew_is_clamped() {
        let greeting = steps(&turn([Some(0), None, None, Some(40), Some(400)]));
        assert_eq!(
            shape(&greeting),
            [("sentence", 0.0, 40.0), ("tts", 40.0, 400.0)]
        );
        assert_eq!(greeting.dominant, Some(1));
        let skewed = steps(&turn([Some(0), Some(300), Some(250), Some(500), Some(600)]));
        assert_eq!(
            shape(&skewed),
            [
                ("stt", 0.0, 300.0),
                ("llm", 300.0, 300.0),
                ("sentence", 300.0, 500.0),
                ("tts", 500.0, 600.0)
            ]
        );
        assert_eq!(skewed.dominant, Some(0));
    }

    /// Without an end of speech the first step that happened is the origin; with no step
    /// at all there is nothing to draw.
    #[test]
    fn a_turn_without_its_start_begins_at_its_first_step() {
        let s = steps(&turn([None, Some(100), None, Some(400), None]));
        assert_eq!(shape(&s), [("sentence", 0.0, 300.0)]);
        assert_eq!(s.total_ms, None);
        let empty = steps(&turn([None; 5]));
        assert!(empty.segments.is_empty());
        assert_eq!(empty.dominant, None);
    }
}
