//! The call index: one [`CallSummary`] per ended call, newest last, so finding recent calls
//! never scans `CALLS` (ARCHITECTURE §9).
//!
//! Consumes summaries (written once per call by the post-call worker, `services/webhooks`,
//! when it sees the call's `end`) and list queries; produces the bucket's entries and,
//! newest first, the summaries that pass a [`Filter`]. State: the KV bucket `CALL_INDEX`
//! (stream `KV_CALL_INDEX`, key `{tenant}.{call_sid}`, one revision per key, kept as long
//! as `CALLS` keeps events). A query reads entries backwards from the stream's last
//! sequence, [`IN_FLIGHT`] direct gets at a time, and stops at the limit or the window.

use async_nats::jetstream::{self, kv};
use futures::StreamExt as _;
use sb_schemas::subject::{CALL_INDEX_BUCKET, CALL_INDEX_STREAM};

use crate::summary::CallSummary;

/// Direct gets in flight while a query reads backwards.
pub const IN_FLIGHT: usize = 64;
/// Entries a query looks at, at most (a rare tenant's last calls in a huge index).
pub const SCAN_LIMIT: u64 = 200_000;

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error("the call index is unavailable: {0}")]
    Unavailable(String),
}

fn unavailable(e: impl std::fmt::Display) -> IndexError {
    IndexError::Unavailable(e.to_string())
}

/// What `direction` may be.
pub const DIRECTIONS: [&str; 2] = ["inbound", "outbound"];
/// What `outcome` may be: how the call ended, or `barged_in` / `fallback` (calls with a
/// barge-in / a fallback phrase).
pub const OUTCOMES: [&str; 7] = [
    "completed",
    "transferred",
    "ended_by_agent",
    "dropped",
    "not_connected",
    "barged_in",
    "fallback",
];

/// Which calls a query wants; `None` fields match everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    pub tenant: Option<String>,
    /// `inbound` or `outbound`.
    pub direction: Option<String>,
    /// Started at or after / before, µs since the epoch.
    pub since: Option<u64>,
    pub until: Option<u64>,
    /// An outcome (`completed`, `transferred`, `ended_by_agent`, `dropped`,
    /// `not_connected`), or `barged_in` / `fallback` (calls with one).
    pub outcome: Option<String>,
    pub limit: usize,
}

impl Filter {
    pub fn matches(&self, call: &CallSummary) -> bool {
        let outcome = match self.outcome.as_deref() {
            None => true,
            Some("barged_in") => call.barge_ins > 0,
            Some("fallback") => call.fallback,
            Some(other) => call.outcome == other,
        };
        outcome
            && self.tenant.as_ref().is_none_or(|t| *t == call.tenant)
            && self.direction.as_ref().is_none_or(|d| *d == call.direction)
            && self.since.is_none_or(|s| call.started_at >= s)
            && self.until.is_none_or(|u| call.started_at < u)
    }
}

/// Stores `summary` as its call's entry (again for a redelivered `end`: same key, same
/// value).
pub async fn record(js: &jetstream::Context, summary: &CallSummary) -> Result<u64, IndexError> {
    let store = js
        .get_key_value(CALL_INDEX_BUCKET)
        .await
        .map_err(unavailable)?;
    let value = serde_json::to_vec(summary).expect("a summary serialises");
    store
        .put(
            format!("{}.{}", summary.tenant, summary.call_sid),
            value.into(),
        )
        .await
        .map_err(unavailable)
}

/// The summaries that pass `filter`, newest first, at most `filter.limit`.
pub async fn recent(
    js: &jetstream::Context,
    filter: &Filter,
) -> Result<Vec<CallSummary>, IndexError> {
    let mut stream = js
        .get_stream(CALL_INDEX_STREAM)
        .await
        .map_err(unavailable)?;
    let state = stream.info().await.map_err(unavailable)?.state.clone();
    if state.messages == 0 || filter.limit == 0 {
        return Ok(Vec::new());
    }
    let lowest = state
        .first_sequence
        .max(state.last_sequence.saturating_sub(SCAN_LIMIT));
    let prefix = format!("$KV.{CALL_INDEX_BUCKET}.");
    let mut entries = futures::stream::iter((lowest..=state.last_sequence).rev())
        .map(|seq| {
            let stream = stream.clone();
            async move { stream.direct_get(seq).await }
        })
        .buffered(IN_FLIGHT);
    let mut out = Vec::new();
    while let Some(got) = entries.next().await {
        // A key written again leaves a gap where its older revision was.
        let Ok(message) = got else { continue };
        if !message.subject.starts_with(&prefix) || message.payload.is_empty() {
            continue;
        }
        let Ok(call) = serde_json::from_slice::<CallSummary>(&message.payload) else {
            continue;
        };
        if filter.since.is_some_and(|since| call.ended_at < since) {
            // Entries are in end order: every older one ended before `since` too.
            break;
        }
        if filter.matches(&call) {
            out.push(call);
            if out.len() == filter.limit {
                break;
            }
        }
    }
    Ok(out)
}

/// The bucket's settings when a test or tool creates it without the topology files.
pub fn bucket_config() -> kv::Config {
    kv::Config {
        bucket: CALL_INDEX_BUCKET.into(),
        history: 1,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(tenant: &str, started_at: u64, outcome: &str, barge_ins: u32) -> CallSummary {
        CallSummary {
            call_sid: "CA00000000000000000000000000000001".into(),
            tenant: tenant.into(),
            direction: "inbound".into(),
            from: None,
            to: None,
            started_at,
            ended_at: started_at + 1,
            turns: 1,
            barge_ins,
            fallback: false,
            outcome: outcome.into(),
            end_reason: "stop".into(),
            latency_ms: None,
        }
    }

    #[test]
    fn the_filter_checks_every_field() {
        let c = call("acme", 1_000, "completed", 1);
        assert!(Filter::default().matches(&c));
        let by = |f: Filter| f.matches(&c);
        assert!(by(Filter {
            tenant: Some("acme".into()),
            ..Default::default()
        }));
        assert!(!by(Filter {
            tenant: Some("globex".into()),
            ..Default::default()
        }));
        assert!(!by(Filter {
            direction: Some("outbound".into()),
            ..Default::default()
        }));
        assert!(by(Filter {
            since: Some(1_000),
            until: Some(1_001),
            ..Default::default()
        }));
        assert!(!by(Filter {
            since: Some(1_001),
            ..Default::default()
        }));
        assert!(!by(Filter {
            until: Some(1_000),
            ..Default::default()
        }));
        assert!(by(Filter {
            outcome: Some("barged_in".into()),
            ..Default::default()
        }));
        assert!(!by(Filter {
            outcome: Some("fallback".into()),
            ..Default::default()
        }));
        assert!(!by(Filter {
            outcome: Some("dropped".into()),
            ..Default::default()
        }));
    }
}
