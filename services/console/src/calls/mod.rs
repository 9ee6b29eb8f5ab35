//! The call inspector's reads (ARCHITECTURE §9): the calls list from the call index, one
//! call's event log, and who may see them.
//!
//! Consumes the call index (`CALL_INDEX`, newest first, [`sb_replay::index`]) and a call's
//! events and audio (`CALLS`, `AUDIO`, [`CallLog`]) as the console's NATS user; produces
//! summaries and logs limited to what the [`Viewer`] may see: another tenant's call is
//! [`CallError::NotFound`], exactly like an unknown one. The pages ([`crate::web`]) and the
//! JSON API ([`api`]) both read through here. State: none; the streams are the record.
//!
//! Code map: [`query`] (the list's filters), [`transcript`] (the chat view), [`turns`]
//! (per-turn latency segments), [`timeline`] (event rows), [`api`] (`/v1/calls`).

pub mod api;
pub mod query;
pub mod timeline;
pub mod transcript;
pub mod turns;

use async_nats::jetstream;
use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use futures::TryStreamExt as _;
use sb_replay::index::{self, Filter};
use sb_replay::summary::CallSummary;
use sb_replay::{AudioScope, CallLog, ReplayError, Streams};
use sb_runtime::api_error::{ErrorBody, ErrorDetail};
use sb_schemas::subject::{self, CALLS_STREAM, Parsed};
use sb_schemas::{CallSid, TenantId};

use crate::access::Viewer;

/// Why a call or a list cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// Unknown, malformed, expired, or another tenant's: the same answer for each.
    #[error("no call {0:?}: unknown, expired, or not one you may see")]
    NotFound(String),
    #[error("calls cannot be read now; retry later")]
    Unavailable(String),
}

impl CallError {
    /// The metric and log label.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::NotFound(_) => "not_found",
            Self::Unavailable(_) => "unavailable",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn unavailable(error: impl std::fmt::Display) -> Self {
        let reason = error.to_string();
        tracing::warn!(%reason, "call inspector: streams unavailable");
        Self::Unavailable(reason)
    }
}

/// The JSON API's error body (`{"error": {"code", "message"}}`).
impl IntoResponse for CallError {
    fn into_response(self) -> Response {
        let body = ErrorBody {
            error: ErrorDetail {
                code: self.kind().to_owned(),
                message: self.to_string(),
                field: None,
            },
        };
        (self.status(), Json(body)).into_response()
    }
}

/// The call `raw` as `viewer` may see it: its control events and the `audio` asked for,
/// events of other tenants left out (none left: not found).
pub async fn load(
    js: &jetstream::Context,
    viewer: &Viewer,
    raw: &str,
    audio: AudioScope,
) -> Result<(CallSid, CallLog), CallError> {
    let sid = CallSid::parse(raw).map_err(|_| CallError::NotFound(clip(raw)))?;
    let mut log = match CallLog::load_in(js, &Streams::live(), &sid, audio).await {
        Ok(log) => log,
        Err(ReplayError::NotFound(_)) => return Err(CallError::NotFound(clip(raw))),
        Err(other) => return Err(CallError::unavailable(other)),
    };
    log.events.retain(|s| viewer.sees(&s.event.tenant));
    if log.events.is_empty() {
        return Err(CallError::NotFound(clip(raw)));
    }
    Ok((sid, log))
}

/// The tenant of call `raw` from the subjects its events are stored on, if `viewer` may
/// see it: whether a live call can be followed, without reading its events.
pub async fn tenant_of(
    js: &jetstream::Context,
    viewer: &Viewer,
    raw: &str,
) -> Result<(CallSid, TenantId), CallError> {
    let not_found = || CallError::NotFound(clip(raw));
    let sid = CallSid::parse(raw).map_err(|_| not_found())?;
    let stream = js
        .get_stream(CALLS_STREAM)
        .await
        .map_err(CallError::unavailable)?;
    let subjects: Vec<(String, usize)> = stream
        .info_with_subjects(subject::call_events_filter(&sid))
        .await
        .map_err(CallError::unavailable)?
        .try_collect()
        .await
        .map_err(CallError::unavailable)?;
    subjects
        .iter()
        .filter_map(|(s, _)| match subject::parse(s) {
            Ok(Parsed::Event { tenant, .. }) => Some(tenant),
            _ => None,
        })
        .find(|tenant| viewer.sees(tenant))
        .map(|tenant| (sid, tenant))
        .ok_or_else(not_found)
}

/// The ended calls passing `filter`, newest first (`None`: an empty list by scope). Each
/// is checked against the viewer again, whatever the filter said.
pub async fn list(
    js: &jetstream::Context,
    viewer: &Viewer,
    filter: Option<Filter>,
) -> Result<Vec<CallSummary>, CallError> {
    let Some(filter) = filter else {
        return Ok(Vec::new());
    };
    let mut calls = index::recent(js, &filter)
        .await
        .map_err(CallError::unavailable)?;
    calls.retain(|c| TenantId::parse(&c.tenant).is_ok_and(|t| viewer.sees(&t)));
    Ok(calls)
}

/// At most 64 characters of something a client sent, for a message.
fn clip(raw: &str) -> String {
    raw.chars().take(64).collect()
}
