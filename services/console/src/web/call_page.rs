//! The call page's markup: facts, the audio player with the events on a time axis, the
//! chat transcript, the latency waterfall and the timeline.
//!
//! Consumes a call's [`CallLog`] (control events and bot audio, as the viewer may see
//! them); produces HTML. The player plays `/console/calls/{sid}/audio.wav`; the axis is an
//! SVG in seconds from the call's first event (the WAV's zero), one `line.mark` per control
//! event, which `call.js` stretches to the audio's duration and scrubs with. The timeline
//! folds the bot's audio into runs; the caller's audio is in the player only (the page
//! reads no caller frames). No state.

use maud::{Markup, html};
use sb_replay::summary::{CallSummary, Parties};
use sb_replay::{CallLog, latency};
use sb_schemas::CallSid;

use super::{duration, numbers, p95, utc, waterfall};
use crate::calls::timeline::{self, Row};
use crate::calls::transcript::{self, Line, LineKind, Speaker};
use crate::calls::turns::{self, TurnSteps};

/// Seconds from `start` (µs) to `at` (µs).
fn secs(start: u64, at: u64) -> f64 {
    at.saturating_sub(start) as f64 / 1e6
}

/// Where the page's audio and script come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Assets<'a> {
    /// From the console: `/console/calls/{sid}/audio.wav`, `/console/assets/call.js`.
    Served,
    /// A file of its own (the demo's report): the WAV beside it, the script inline.
    Standalone { wav: &'a str },
}

/// The call page's body.
pub fn render(sid: &CallSid, log: &CallLog, assets: Assets<'_>) -> Markup {
    let audio_src = match assets {
        Assets::Served => format!("/console/calls/{sid}/audio.wav"),
        Assets::Standalone { wav } => wav.to_owned(),
    };
    let start = log.start_micros();
    let last = log.envelopes().map(|e| e.at).max().unwrap_or(start);
    let summary = CallSummary::of(log);
    let tenant = log
        .envelopes()
        .next()
        .map(|e| e.tenant.as_str().to_owned())
        .unwrap_or_default();
    let lines = transcript::lines(log.envelopes());
    let turns: Vec<TurnSteps> = latency::turns(log).iter().map(turns::steps).collect();
    let rows = timeline::rows(log.envelopes());
    html! {
        section.call-head {
            h1 { "Call " code #sid { (sid) } }
            (facts(log, &tenant, summary.as_ref(), start))
            @if summary.is_none() {
                p.live-note { "This call has no end yet. "
                    a href={ "/console/calls/" (sid) "/live" } { "Follow it live" } }
            }
        }
        section #player {
            h2 { "Audio" }
            p.hint { "Caller on the left channel, bot on the right." }
            audio #call-audio controls preload="metadata" src=(audio_src) {}
            (axis(&rows, start, secs(start, last)))
        }
        section #transcript {
            h2 { "Transcript" }
            @if lines.is_empty() { p.empty { "Nothing was said." } }
            ol.chat { @for line in &lines { (chat_line(line, start)) } }
        }
        section #latency {
            h2 { "Latency per turn" }
            @if turns.is_empty() { p.empty { "No turn was answered." } }
            @else { (waterfall::render(&waterfall::layout(&turns))) }
        }
        section #timeline {
            h2 { "Timeline" }
            table.timeline {
                thead { tr { th.num { "Time" } th.num { "Turn" } th { "Event" } th { "Detail" } } }
                tbody { @for row in &rows {
                    tr data-kind=(row.kind) {
                        td.num { (format!("+{:.3} s", secs(start, row.at))) }
                        td.num { (row.turn) }
                        td { (row.kind) }
                        td { (row.detail) }
                    }
                } }
            }
        }
        @match assets {
            Assets::Served => { script src="/console/assets/call.js" {} }
            Assets::Standalone { .. } => { script { (maud::PreEscaped(super::CALL_JS)) } }
        }
    }
}

fn facts(log: &CallLog, tenant: &str, summary: Option<&CallSummary>, start: u64) -> Markup {
    let parties = Parties::of(log);
    html! {
        dl.facts {
            dt { "Tenant" } dd { (tenant) }
            dt { "Direction" } dd { (parties.direction()) }
            dt { "From → to" }
            dd { (numbers(parties.from.as_deref(), parties.to.as_deref())) }
            @match summary {
                Some(s) => {
                    dt { "Started" } dd { (utc(s.started_at)) }
                    dt { "Duration" } dd { (duration(s.duration_ms())) }
                    dt { "Outcome" } dd { (s.outcome.replace('_', " ")) " (" (s.end_reason) ")" }
                    dt { "Turns" } dd { (s.turns) }
                    dt { "Barge-ins" } dd { (s.barge_ins) }
                    dt { "p95 turn latency" } dd { (p95(s.latency_ms)) }
                }
                None => {
                    dt { "First event" } dd { (utc(start)) }
                    dt { "Outcome" } dd { "in progress" }
                }
            }
        }
    }
}

fn chat_line(line: &Line, start: u64) -> Markup {
    let (who, class) = match line.speaker {
        Speaker::Caller => ("Caller", "caller"),
        Speaker::Bot => ("Bot", "bot"),
        Speaker::Tool => ("Tool", "tool"),
    };
    let tag = match line.kind {
        LineKind::Cut => Some("cut by barge-in"),
        LineKind::Unplayed => Some("not played"),
        LineKind::Pressed => Some("key pressed"),
        _ => None,
    };
    html! {
        li class=(format!("line {class} {}", line.kind.as_str()))
            data-speaker=(class) data-kind=(line.kind.as_str()) data-turn=(line.turn) {
            span.when { (format!("+{:.1} s", secs(start, line.at))) }
            span.who { (who) }
            span.text { (line.text) }
            @if let Some(tag) = tag { " " span.tag { (tag) } }
            @if line.fallback { " " span.tag.fallback { "fallback" } }
        }
    }
}

/// The events on a time axis in seconds, under the player.
fn axis(rows: &[Row], start: u64, span_secs: f64) -> Markup {
    let span = span_secs.max(0.001);
    html! {
        svg #axis.axis xmlns="http://www.w3.org/2000/svg"
            viewBox={ "0 0 " (format!("{span:.3}")) " 10" }
            preserveAspectRatio="none" data-span=(format!("{span:.3}")) role="img"
            aria-label="The call's events on the audio's time axis" {
            rect.axis-bg x="0" y="0" width=(format!("{span:.3}")) height="10" {}
            @for row in rows.iter().filter(|r| !r.is_audio()) {
                @let at = format!("{:.3}", secs(start, row.at));
                line class=(format!("mark mark-{}", row.kind)) x1=(at) x2=(at) y1="0" y2="10"
                    vector-effect="non-scaling-stroke" data-at=(at) {
                    title { (format!("+{at} s  {}: {}", row.kind, row.detail)) }
                }
            }
            line #playhead x1="0" x2="0" y1="0" y2="10" vector-effect="non-scaling-stroke" {}
        }
        ul.axis-legend {
            li { span.swatch.mark-transcript {} "caller said" }
            li { span.swatch.mark-sentence {} "bot sentence" }
            li { span.swatch.mark-played {} "played" }
            li { span.swatch.mark-bargein {} "barge-in" }
            li { span.swatch.mark-dtmf {} "key" }
            li { span.swatch.mark-tool_call {} "tool" }
        }
    }
}
