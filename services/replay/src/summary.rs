//! One line about a whole call: who, when, how long, how it went. What `replay calls` and
//! the console's calls list show, and what the post-call report starts from.
//!
//! Consumes a call's [`CallLog`] (control events and bot audio); produces [`Parties`]
//! (numbers, direction, campaign), [`LatencySummary`] (voice-to-voice over the caller's
//! turns) and [`CallSummary`]. No I/O, no state.

use sb_schemas::{Body, EndReason};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::{CallLog, latency};

/// Who a call is between, from its `webhook`, `start` and `dial` events.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Parties {
    pub from: Option<String>,
    pub to: Option<String>,
    pub outbound: bool,
    /// `{campaign, contact, attempt, attempt_number}` of an outbound campaign call.
    pub campaign: Value,
    /// When the media stream started (ms since the epoch).
    pub started_ms: Option<u64>,
}

impl Parties {
    pub fn of(log: &CallLog) -> Self {
        let mut parties = Parties {
            campaign: Value::Null,
            ..Default::default()
        };
        for e in log.envelopes() {
            match &e.body {
                Body::Webhook(w) => {
                    parties.from = Some(w.from.clone());
                    parties.to = Some(w.to.clone());
                    parties.outbound |= w.attempt.is_some();
                }
                Body::Start(s) => {
                    parties.started_ms.get_or_insert(e.at / 1_000);
                    let param = |k: &str, fallback: &String| {
                        s.custom_parameters.get(k).unwrap_or(fallback).clone()
                    };
                    if parties.from.is_none() {
                        parties.from = Some(param("from", &s.from)).filter(|f| !f.is_empty());
                        parties.to = Some(param("to", &s.to)).filter(|t| !t.is_empty());
                    }
                }
                Body::Dial(d) => {
                    parties.outbound = true;
                    parties.campaign = json!({
                        "campaign": d.campaign,
                        "contact": d.contact,
                        "attempt": d.attempt,
                        "attempt_number": d.attempt_number,
                    });
                }
                _ => {}
            }
        }
        parties
    }

    pub fn direction(&self) -> &'static str {
        if self.outbound { "outbound" } else { "inbound" }
    }
}

/// Voice-to-voice (end of the caller's speech → first bot audio stored) over the caller's
/// turns, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencySummary {
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
    pub turns: usize,
}

impl LatencySummary {
    /// `None` for a call without a measured caller turn.
    pub fn of(log: &CallLog) -> Option<Self> {
        let mut totals: Vec<f64> = latency::turns(log)
            .iter()
            .filter(|t| t.turn > 0)
            .filter_map(latency::TurnLatency::total_ms)
            .collect();
        if totals.is_empty() {
            return None;
        }
        totals.sort_by(f64::total_cmp);
        let rank =
            |p: f64| totals[((totals.len() as f64 * p).ceil() as usize).clamp(1, totals.len()) - 1];
        Some(Self {
            p50: rank(0.5),
            p95: rank(0.95),
            max: totals[totals.len() - 1],
            turns: totals.len(),
        })
    }
}

/// How the call ended, for people: completed, transferred, ended_by_agent, dropped or
/// not_connected.
pub fn outcome(reason: EndReason) -> &'static str {
    match reason {
        EndReason::Stop | EndReason::Completed => "completed",
        EndReason::Transferred => "transferred",
        EndReason::Hangup => "ended_by_agent",
        EndReason::Closed | EndReason::Drained | EndReason::IdleTimeout | EndReason::Rejected => {
            "dropped"
        }
        EndReason::Busy | EndReason::Failed | EndReason::NoAnswer | EndReason::Canceled => {
            "not_connected"
        }
    }
}

/// One ended call, as the call index keeps it (stable field names: `replay calls --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallSummary {
    pub call_sid: String,
    pub tenant: String,
    /// `inbound` or `outbound`.
    pub direction: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Media stream start (else the first event) and the `end` event, µs since the epoch.
    pub started_at: u64,
    pub ended_at: u64,
    /// The caller's turns (final transcripts).
    pub turns: u32,
    pub barge_ins: u32,
    /// A fallback phrase was spoken (the LLM or a tool failed).
    pub fallback: bool,
    /// See [`outcome`].
    pub outcome: String,
    /// The `end` event's reason (`stop`, `hangup`, `closed`, …).
    pub end_reason: String,
    pub latency_ms: Option<LatencySummary>,
}

impl CallSummary {
    /// The summary of an ended call; `None` until its `end` is in the log.
    pub fn of(log: &CallLog) -> Option<Self> {
        let (end, reason) = log.envelopes().find_map(|e| match &e.body {
            Body::End(end) => Some((e, end.reason)),
            _ => None,
        })?;
        let parties = Parties::of(log);
        let (mut turns, mut barge_ins, mut fallback) = (0, 0, false);
        for e in log.envelopes() {
            match &e.body {
                Body::Transcript(_) => turns += 1,
                Body::BargeIn(_) => barge_ins += 1,
                Body::Sentence(s) => fallback |= s.fallback,
                _ => {}
            }
        }
        Some(Self {
            call_sid: end.call_sid.as_str().to_owned(),
            tenant: end.tenant.as_str().to_owned(),
            direction: parties.direction().to_owned(),
            started_at: parties
                .started_ms
                .map_or_else(|| log.start_micros(), |ms| ms * 1_000),
            from: parties.from,
            to: parties.to,
            ended_at: end.at,
            turns,
            barge_ins,
            fallback,
            outcome: outcome(reason).to_owned(),
            end_reason: serde_json::to_value(reason)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default(),
            latency_ms: LatencySummary::of(log),
        })
    }

    pub fn duration_ms(&self) -> u64 {
        self.ended_at.saturating_sub(self.started_at) / 1_000
    }
}
