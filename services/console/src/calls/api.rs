//! The call inspector's JSON API: `GET /v1/calls` (the calls list, filtered) and
//! `GET /v1/calls/{sid}` (one call: summary, chat transcript, per-turn latency).
//!
//! Consumes bearer-authenticated requests ([`ApiViewer`]: the operator token, or a tenant's
//! API key limited to its own calls); produces JSON, the same data the pages draw. A call
//! another tenant's key cannot see is 404, like an unknown one. State: none.

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use sb_replay::AudioScope;
use sb_replay::latency;
use sb_replay::summary::{CallSummary, LatencySummary};
use sb_runtime::api_error::ErrorBody;
use serde::Serialize;
use utoipa::ToSchema;

use super::query::{CallQuery, DirectionDoc};
use super::transcript::{self, Line};
use super::turns::{self, TurnSteps};
use crate::ConsoleState;
use crate::access::ApiViewer;

/// Voice-to-voice latency over the caller's turns (end of speech → first bot audio), ms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, ToSchema)]
pub struct LatencyMs {
    pub p50: f64,
    pub p95: f64,
    pub max: f64,
    /// Caller turns measured.
    pub turns: usize,
}

impl From<LatencySummary> for LatencyMs {
    fn from(l: LatencySummary) -> Self {
        Self {
            p50: l.p50,
            p95: l.p95,
            max: l.max,
            turns: l.turns,
        }
    }
}

/// One ended call, as the call index keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
pub struct CallItem {
    #[schema(example = "CA0123456789abcdef0123456789abcdef")]
    pub call_sid: String,
    pub tenant: String,
    #[schema(value_type = DirectionDoc)]
    pub direction: String,
    pub from: Option<String>,
    pub to: Option<String>,
    /// Media stream start (else the first event), µs since the Unix epoch.
    pub started_at: u64,
    /// The `end` event, µs since the Unix epoch.
    pub ended_at: u64,
    pub duration_ms: u64,
    /// The caller's turns (final transcripts).
    pub turns: u32,
    pub barge_ins: u32,
    /// A fallback phrase was spoken (the LLM or a tool failed).
    pub fallback: bool,
    /// `completed`, `transferred`, `ended_by_agent`, `dropped` or `not_connected`.
    pub outcome: String,
    /// The `end` event's reason (`stop`, `hangup`, `closed`, …).
    pub end_reason: String,
    pub latency_ms: Option<LatencyMs>,
}

impl From<&CallSummary> for CallItem {
    fn from(c: &CallSummary) -> Self {
        Self {
            call_sid: c.call_sid.clone(),
            tenant: c.tenant.clone(),
            direction: c.direction.clone(),
            from: c.from.clone(),
            to: c.to.clone(),
            started_at: c.started_at,
            ended_at: c.ended_at,
            duration_ms: c.duration_ms(),
            turns: c.turns,
            barge_ins: c.barge_ins,
            fallback: c.fallback,
            outcome: c.outcome.clone(),
            end_reason: c.end_reason.clone(),
            latency_ms: c.latency_ms.map(LatencyMs::from),
        }
    }
}

/// Ended calls, newest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallList {
    pub calls: Vec<CallItem>,
}

/// One call: what happened and how fast.
#[derive(Debug, Serialize, ToSchema)]
pub struct CallDetail {
    pub call_sid: String,
    pub tenant: String,
    /// Whether the call's `end` is stored (a live call has no summary yet).
    pub ended: bool,
    pub summary: Option<CallItem>,
    /// The conversation, in time order.
    pub transcript: Vec<Line>,
    /// Per-turn latency, turn 0 being the greeting.
    pub turns: Vec<TurnSteps>,
}

#[utoipa::path(get, path = "/v1/calls", tag = "calls",
    params(CallQuery),
    responses(
        (status = 200, description = "Ended calls, newest first", body = CallList),
        (status = 400, description = "A filter is invalid (names the field)", body = ErrorBody),
        (status = 401, description = "No valid operator token or API key", body = ErrorBody),
        (status = 503, description = "The call index is unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn list(
    ApiViewer(viewer): ApiViewer,
    State(state): State<ConsoleState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<CallList>, Response> {
    let query = CallQuery::parse(raw.as_deref()).map_err(IntoResponse::into_response)?;
    let filter = query
        .filter(&viewer.scope(query.tenant.as_deref()))
        .map_err(IntoResponse::into_response)?;
    let calls = super::list(&state.js, &viewer, filter)
        .await
        .map_err(IntoResponse::into_response)?;
    Ok(Json(CallList {
        calls: calls.iter().map(CallItem::from).collect(),
    }))
}

#[utoipa::path(get, path = "/v1/calls/{sid}", tag = "calls",
    params(("sid" = String, Path, description = "Call sid",
        pattern = "^CA[0-9a-fA-F]{32}$")),
    responses(
        (status = 200, description = "The call", body = CallDetail),
        (status = 401, description = "No valid operator token or API key", body = ErrorBody),
        (status = 404, description = "Unknown call, or another tenant's", body = ErrorBody),
        (status = 503, description = "The streams are unavailable", body = ErrorBody)),
    security(("bearer" = [])))]
pub async fn get(
    ApiViewer(viewer): ApiViewer,
    State(state): State<ConsoleState>,
    Path(sid): Path<String>,
) -> Result<Json<CallDetail>, super::CallError> {
    // Bot audio for the first chunk's time; the caller's audio is not needed.
    let (sid, log) = super::load(&state.js, &viewer, &sid, AudioScope::Bot).await?;
    let summary = CallSummary::of(&log);
    let tenant = log
        .envelopes()
        .next()
        .map(|e| e.tenant.as_str().to_owned())
        .unwrap_or_default();
    Ok(Json(CallDetail {
        call_sid: sid.as_str().to_owned(),
        tenant,
        ended: summary.is_some(),
        summary: summary.as_ref().map(CallItem::from),
        transcript: transcript::lines(log.envelopes()),
        turns: latency::turns(&log).iter().map(turns::steps).collect(),
    }))
}
