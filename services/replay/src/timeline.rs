//! The timeline of a call: one line per control event, caller and bot audio folded into
//! runs ([`render`]), or one line per event as it arrives ([`line`]). Consumes a
//! [`CallLog`] or events; produces text. State: none.

use std::fmt::Write as _;

use sb_schemas::{Body, Envelope, ToolOutcome};

use crate::CallLog;

/// How much of the call to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detail {
    /// Every event.
    Full,
    /// Control events without tokens and partial transcripts; audio as totals at the end.
    Summary,
}

/// Renders the call as lines `+seconds  turn  kind  detail`.
pub fn render(log: &CallLog, detail_level: Detail) -> String {
    let start = log.start_micros();
    let mut out = String::new();
    let mut audio_run: Option<(&'static str, u32, u64, usize, usize)> = None; // (dir, turn, first at, chunks, bytes)
    let mut totals = ((0usize, 0usize), (0usize, 0usize)); // (caller, bot) × (messages, bytes)
    let flush = |out: &mut String, run: &mut Option<(&'static str, u32, u64, usize, usize)>| {
        if let Some((dir, turn, at, chunks, bytes)) = run.take() {
            let secs = at.saturating_sub(start) as f64 / 1e6;
            let ms = bytes as f64 / 8.0;
            let _ = writeln!(
                out,
                "{secs:>8.3}s  t{turn:<3} {dir:<10} {chunks} messages, {ms:.0} ms of audio"
            );
        }
    };
    for e in log.envelopes() {
        let dir = match &e.body {
            Body::Audio(_) => Some("caller"),
            Body::TtsChunk(_) => Some("bot"),
            _ => None,
        };
        if let Some(dir) = dir {
            let bytes = match &e.body {
                Body::Audio(a) => a.payload.0.len(),
                Body::TtsChunk(c) => c.payload.0.len(),
                _ => 0,
            };
            let total = if dir == "caller" {
                &mut totals.0
            } else {
                &mut totals.1
            };
            total.0 += 1;
            total.1 += bytes;
            if detail_level == Detail::Summary {
                continue;
            }
            match &mut audio_run {
                Some((d, t, _, chunks, total)) if *d == dir && *t == e.turn => {
                    *chunks += 1;
                    *total += bytes;
                }
                _ => {
                    flush(&mut out, &mut audio_run);
                    audio_run = Some((dir, e.turn, e.at, 1, bytes));
                }
            }
            continue;
        }
        flush(&mut out, &mut audio_run);
        if detail_level == Detail::Summary && matches!(e.body, Body::Token(_) | Body::Partial(_)) {
            continue;
        }
        let _ = writeln!(out, "{}", line(e, start));
    }
    flush(&mut out, &mut audio_run);
    let ((cm, cb), (bm, bb)) = totals;
    let _ = writeln!(
        out,
        "audio: caller {cm} messages ({:.1} s), bot {bm} chunks ({:.1} s)",
        cb as f64 / 8000.0,
        bb as f64 / 8000.0
    );
    if log.undecodable > 0 {
        let _ = writeln!(out, "({} stored messages did not decode)", log.undecodable);
    }
    out
}

/// One event as one timeline line, `start` (µs) being zero: what `replay show --follow`
/// prints as events arrive. Audio is a line per message here, not a run.
pub fn line(e: &Envelope, start: u64) -> String {
    let secs = e.at.saturating_sub(start) as f64 / 1e6;
    let (name, detail) = match &e.body {
        Body::Audio(a) => ("caller", format!("{} bytes of audio", a.payload.0.len())),
        Body::TtsChunk(c) => (
            "bot",
            format!(
                "sentence #{} chunk {}: {} bytes of audio",
                c.sentence,
                c.chunk,
                c.payload.0.len()
            ),
        ),
        body => (e.kind().as_str(), detail(body)),
    };
    format!("{secs:>8.3}s  t{:<3} {name:<10} {detail}", e.turn)
}

fn detail(body: &Body) -> String {
    match body {
        Body::Webhook(w) => match &w.attempt {
            Some(attempt) => format!(
                "{} → {} ({}, dial attempt {attempt})",
                w.from, w.to, w.call_status
            ),
            None => format!("{} → {} ({})", w.from, w.to, w.call_status),
        },
        Body::Start(s) => format!("stream {}", s.stream_sid),
        Body::Dtmf(d) => format!("digit {}", d.digit),
        Body::Speech(s) => format!("caller speaking at {} ms (epoch {})", s.offset_ms, s.epoch),
        Body::Partial(p) => format!("“{}”", p.text),
        Body::Transcript(t) => format!(
            "“{}” (confidence {:.2}, epoch {})",
            t.text, t.confidence, t.epoch
        ),
        Body::Preflight(p) => format!(
            "“{}” (stable interim: answered ahead, epoch {})",
            p.text, p.epoch
        ),
        Body::Token(t) => format!("#{} {:?}", t.index, t.text),
        Body::Sentence(s) => {
            let tag = if s.fallback { " [fallback]" } else { "" };
            format!(
                "#{} “{}”{}{tag}",
                s.index,
                s.text,
                if s.last { " (last)" } else { "" }
            )
        }
        Body::BargeIn(b) => match b.cut {
            Some(cut) => format!(
                "{:?}, token {}, {} sentences heard, then {} of {} ms of the next",
                b.trigger, b.token, b.sentences_heard, cut.heard_ms, cut.sentence_ms
            ),
            None => format!(
                "{:?}, token {}, {} sentences heard",
                b.trigger, b.token, b.sentences_heard
            ),
        },
        Body::Resumed(r) => format!(
            "bot resumed sentence #{} at {} ms after a {} ms pause",
            r.sentence, r.offset_ms, r.paused_ms
        ),
        Body::Keypad(k) => format!("keys “{}” (ended by {:?})", k.digits, k.ended_by),
        Body::Silence(s) => format!("caller silent for {} ms (#{})", s.after_ms, s.count),
        Body::MaxDuration(m) => format!("call reached its {} s limit", m.limit_secs),
        Body::Played(p) => format!("sentence #{} heard (mark {})", p.sentence, p.mark),
        Body::End(e) => format!("{:?}", e.reason),
        Body::Dial(d) => format!(
            "campaign {} contact {}: {} → {} (attempt {}, {})",
            d.campaign, d.contact, d.from, d.to, d.attempt_number, d.attempt
        ),
        Body::AnsweredBy(a) => match a.machine {
            true => format!("answered by {}: leaving the voicemail", a.answered_by),
            false => format!("answered by {}", a.answered_by),
        },
        Body::DialResult(r) => format!(
            "{} after {} attempt(s): {}",
            r.outcome, r.attempts, r.decision
        ),
        Body::ToolCall(c) => format!("{}({}) [{}, round {}]", c.name, c.arguments, c.id, c.round),
        Body::ToolResult(r) => match r.outcome {
            ToolOutcome::Ok => format!(
                "{} → {} ({} ms, {} attempt(s))",
                r.name, r.result, r.elapsed_ms, r.attempts
            ),
            outcome => format!(
                "{} → {} (status {}, {} ms, {} attempt(s))",
                r.name,
                outcome.as_str(),
                r.status,
                r.elapsed_ms,
                r.attempts
            ),
        },
        Body::Erased(e) => {
            let removed: Vec<String> = e.removed.iter().map(|(s, n)| format!("{n} {s}")).collect();
            format!("by {}: removed {} messages", e.by, removed.join(", "))
        }
        Body::Audio(_) | Body::TtsChunk(_) => String::new(),
    }
}
