//! `replay redrive`'s report: per turn, what the call recorded beside what the stage made
//! on the re-run, and a summary of what changed.
//!
//! Consumes the recorded [`CallLog`] and the re-run's [`Fed`] inputs; produces one [`Turn`]
//! per turn: for the agent its sentences and its first token and first sentence, each
//! timed from the input that caused it; for the tts each sentence's audio duration and the
//! turn's first chunk, timed from its first sentence. Renders them as text ([`render`]) or
//! one JSON object per turn ([`json_line`]). State: none.

use std::{collections::BTreeMap, fmt::Write as _};

use serde::Serialize;

use sb_schemas::{Body, Envelope};

use crate::{CallLog, rerun::Fed, rerun::StageName};

/// One turn, recorded and re-run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Turn {
    /// `agent` or `tts`.
    pub stage: &'static str,
    pub turn: u32,
    /// What the stage was fed: `start`, the caller's words, or how many sentences (tts).
    pub input: String,
    pub recorded: Said,
    pub new: Said,
    /// The sentences' words differ (what is said, not how it sounds).
    pub text_changed: bool,
    /// What went wrong on the re-run (`handle` failing, the LLM failing underneath).
    pub notes: Vec<String>,
}

/// What the bot said in one turn, and how fast.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Said {
    pub sentences: Vec<Spoken>,
    /// Input → first `token`, ms (agent).
    pub first_token_ms: Option<u64>,
    /// Input → first `sentence`, ms (agent).
    pub first_sentence_ms: Option<u64>,
    /// The turn's first sentence → its first `tts_chunk`, ms (tts).
    pub first_chunk_ms: Option<u64>,
    /// The turn's bot audio, ms (tts).
    pub audio_ms: Option<u64>,
}

/// One sentence.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Spoken {
    pub index: u32,
    pub text: String,
    pub fallback: bool,
    /// Its audio, ms (tts).
    pub audio_ms: Option<u64>,
}

/// The turns of a re-run, in order.
pub fn turns(stage: StageName, log: &CallLog, fed: &[Fed]) -> Vec<Turn> {
    match stage {
        StageName::Agent => fed.iter().map(|f| agent_turn(log, f)).collect(),
        StageName::Tts => {
            let mut by_turn: BTreeMap<u32, Vec<&Fed>> = BTreeMap::new();
            for f in fed {
                by_turn.entry(f.recorded.turn).or_default().push(f);
            }
            by_turn
                .into_iter()
                .map(|(turn, fed)| tts_turn(log, turn, &fed))
                .collect()
        }
    }
}

fn agent_turn(log: &CallLog, fed: &Fed) -> Turn {
    let turn = fed.recorded.turn;
    let input = match &fed.recorded.body {
        Body::Transcript(t) => format!("the caller: {:?}", t.text),
        _ => "start (the greeting)".to_owned(),
    };
    let recorded = agent_said(log.envelopes().filter(|e| e.turn == turn), fed.recorded.at);
    let new = agent_said(fed.outputs.iter(), fed.input.at);
    finish(StageName::Agent, turn, input, recorded, new, vec![fed])
}

/// The agent's sentences (each index once) and first outputs among `events`, timed from
/// `from`.
fn agent_said<'a>(events: impl Iterator<Item = &'a Envelope>, from: u64) -> Said {
    let mut said = Said::default();
    let mut sentences = BTreeMap::new();
    let since = |at: u64| Some(at.saturating_sub(from) / 1000);
    for e in events {
        match &e.body {
            Body::Token(_) => said.first_token_ms = earliest(said.first_token_ms, since(e.at)),
            Body::Sentence(s) => {
                said.first_sentence_ms = earliest(said.first_sentence_ms, since(e.at));
                sentences.entry(s.index).or_insert_with(|| Spoken {
                    index: s.index,
                    text: s.text.clone(),
                    fallback: s.fallback,
                    audio_ms: None,
                });
            }
            _ => {}
        }
    }
    said.sentences = sentences.into_values().collect();
    said
}

fn tts_turn(log: &CallLog, turn: u32, fed: &[&Fed]) -> Turn {
    let input = plural(fed.len(), "sentence");
    let recorded_chunks: Vec<&Envelope> = log
        .envelopes()
        .filter(|e| e.turn == turn && matches!(e.body, Body::TtsChunk(_)))
        .collect();
    let new_chunks: Vec<&Envelope> = fed.iter().flat_map(|f| &f.outputs).collect();
    let recorded_from = fed.iter().map(|f| f.recorded.at).min().unwrap_or(0);
    let new_from = fed.iter().map(|f| f.input.at).min().unwrap_or(0);
    let recorded = tts_said(fed, &recorded_chunks, recorded_from);
    let new = tts_said(fed, &new_chunks, new_from);
    finish(StageName::Tts, turn, input, recorded, new, fed.to_vec())
}

/// The sentences `fed` with the audio of `chunks`, the first chunk timed from `from`.
fn tts_said(fed: &[&Fed], chunks: &[&Envelope], from: u64) -> Said {
    let mut said = Said::default();
    let mut audio: BTreeMap<u32, u64> = BTreeMap::new();
    for e in chunks {
        if let Body::TtsChunk(c) = &e.body {
            *audio.entry(c.sentence).or_default() += c.payload.0.len() as u64;
            said.first_chunk_ms =
                earliest(said.first_chunk_ms, Some(e.at.saturating_sub(from) / 1000));
        }
    }
    for f in fed {
        if let Body::Sentence(s) = &f.recorded.body {
            said.sentences.push(Spoken {
                index: s.index,
                text: s.text.clone(),
                fallback: s.fallback,
                audio_ms: Some(audio_ms(audio.get(&s.index).copied().unwrap_or(0))),
            });
        }
    }
    said.audio_ms = Some(audio_ms(audio.values().sum()));
    said
}

fn finish(
    stage: StageName,
    turn: u32,
    input: String,
    recorded: Said,
    new: Said,
    fed: Vec<&Fed>,
) -> Turn {
    let words = |s: &Said| {
        s.sentences
            .iter()
            .map(|s| s.text.clone())
            .collect::<Vec<_>>()
    };
    let notes = fed
        .iter()
        .flat_map(|f| {
            f.error
                .iter()
                .map(|e| format!("the stage failed: {e}"))
                .chain(f.notes.iter().cloned())
        })
        .collect();
    Turn {
        stage: stage.as_str(),
        turn,
        input,
        text_changed: words(&recorded) != words(&new),
        recorded,
        new,
        notes,
    }
}

fn earliest(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// 8 kHz µ-law: one byte per sample.
fn audio_ms(bytes: u64) -> u64 {
    bytes * 1000 / u64::from(sb_audio::SAMPLE_RATE)
}

/// Every turn, recorded beside new, then the summary.
pub fn render(stage: StageName, turns: &[Turn]) -> String {
    let mut out = String::new();
    for t in turns {
        let changed = if t.text_changed {
            " · text changed"
        } else {
            ""
        };
        let _ = writeln!(out, "turn {} · {}{changed}", t.turn, t.input);
        let _ = writeln!(out, "  {:<16}{:<16}new", "", "recorded");
        let row = |out: &mut String, label: &str, r: String, n: String| {
            let _ = writeln!(out, "  {label:<16}{r:<16}{n}");
        };
        match stage {
            StageName::Agent => {
                row(
                    &mut out,
                    "first token",
                    after(t.recorded.first_token_ms),
                    after(t.new.first_token_ms),
                );
                row(
                    &mut out,
                    "first sentence",
                    after(t.recorded.first_sentence_ms),
                    after(t.new.first_sentence_ms),
                );
                for (label, said) in [("recorded", &t.recorded), ("new", &t.new)] {
                    if said.sentences.is_empty() {
                        let _ = writeln!(out, "  {label:<9}(no sentence)");
                    }
                    for s in &said.sentences {
                        let _ =
                            writeln!(out, "  {label:<9}[{}] {}{}", s.index, s.text, fallback(s));
                    }
                }
            }
            StageName::Tts => {
                row(
                    &mut out,
                    "first chunk",
                    after(t.recorded.first_chunk_ms),
                    after(t.new.first_chunk_ms),
                );
                row(
                    &mut out,
                    "audio",
                    secs(t.recorded.audio_ms),
                    secs(t.new.audio_ms),
                );
                for (r, n) in t.recorded.sentences.iter().zip(&t.new.sentences) {
                    let _ = writeln!(
                        out,
                        "  [{}] {}{}  {} → {}",
                        r.index,
                        r.text,
                        fallback(r),
                        secs(r.audio_ms),
                        secs(n.audio_ms)
                    );
                }
            }
        }
        for note in &t.notes {
            let _ = writeln!(out, "  note: {note}");
        }
        out.push('\n');
    }
    out.push_str(&summary(stage, turns));
    out
}

/// What changed over the whole call.
pub fn summary(stage: StageName, turns: &[Turn]) -> String {
    let changed: Vec<String> = turns
        .iter()
        .filter(|t| t.text_changed)
        .map(|t| t.turn.to_string())
        .collect();
    let n = turns.len();
    let mut out = match changed.as_slice() {
        [] => format!(
            "summary: {} re-run, the text changed in none",
            plural(n, "turn")
        ),
        [one] => format!("summary: the text changed in 1 of {n} turns (turn {one})"),
        c => format!(
            "summary: the text changed in {} of {n} turns (turns {})",
            c.len(),
            c.join(", ")
        ),
    };
    if stage == StageName::Tts {
        let total = |f: fn(&Turn) -> Option<u64>| turns.iter().filter_map(f).sum::<u64>();
        let (recorded, new) = (total(|t| t.recorded.audio_ms), total(|t| t.new.audio_ms));
        let delta = new as i64 - recorded as i64;
        let _ = write!(
            out,
            "; audio {} → {} ({:+.2} s)",
            secs(Some(recorded)),
            secs(Some(new)),
            delta as f64 / 1e3
        );
    }
    let failed = turns.iter().filter(|t| !t.notes.is_empty()).count();
    if failed > 0 {
        let _ = write!(
            out,
            "; {} with errors (the `note:` lines)",
            plural(failed, "turn")
        );
    }
    out.push('\n');
    out
}

/// One turn as one line of JSON.
pub fn json_line(turn: &Turn) -> String {
    serde_json::to_string(turn).unwrap_or_else(|e| format!("{{\"error\":{:?}}}", e.to_string()))
}

fn after(ms: Option<u64>) -> String {
    ms.map_or_else(|| "–".to_owned(), |ms| format!("+{ms} ms"))
}

fn secs(ms: Option<u64>) -> String {
    ms.map_or_else(|| "–".to_owned(), |ms| format!("{:.2} s", ms as f64 / 1e3))
}

/// `1 turn`, `2 turns`.
pub(crate) fn plural(n: usize, what: &str) -> String {
    match n {
        1 => format!("1 {what}"),
        n => format!("{n} {what}s"),
    }
}

fn fallback(s: &Spoken) -> &'static str {
    if s.fallback { " (fallback)" } else { "" }
}

#[cfg(test)]
#[path = "rerun_diff_tests.rs"]
mod tests;
