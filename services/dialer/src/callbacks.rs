//! Twilio's callbacks about placed calls: call progress (`POST /twilio/dial/status`) and
//! the asynchronous answering-machine verdict (`POST /twilio/dial/amd`), each with
//! `?attempt=…` in the URL the dialer gave Twilio.
//!
//! Consumes signed form bodies (a bad `X-Twilio-Signature` is 403, a bad body 400, both
//! counted, nothing changed); produces the attempt's call sid, its
//! resolution on a final status ([`Dialer::conclude`]) and the `answered_by` event the
//! agent greets or leaves a voicemail on. Any dialer replica answers any callback: the
//! attempt lives in Redis. State: none here.

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::routing::post;
use sb_runtime::metrics::Metric;
use sb_runtime::redis::campaigns::{Attempt, AttemptId};
use sb_schemas::{AnsweredBy, Body};
use sb_twilio::form::parse_form;
use sb_twilio::{AmdCallback, StatusCallback};
use tracing::Instrument as _;

use crate::dialer::Dialer;
use crate::outcome::is_machine;

/// The header Twilio signs every request with.
const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// The callback routes.
pub fn router(dialer: Dialer) -> Router {
    Router::new()
        .route("/twilio/dial/status", post(status))
        .route("/twilio/dial/amd", post(amd))
        .with_state(dialer)
}

fn counted(route: &'static str, outcome: &'static str, status: StatusCode) -> StatusCode {
    metrics::counter!(Metric::DialerCallbacks.name(), "route" => route, "outcome" => outcome)
        .increment(1);
    status
}

/// The form of a callback whose signature matches the URL Twilio was given, and its
/// open attempt; otherwise the answer to give.
async fn signed(
    dialer: &Dialer,
    route: &'static str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(Vec<(String, String)>, AttemptId, Attempt), StatusCode> {
    let params = parse_form(body).map_err(|error| {
        tracing::warn!(route, error = %error, "callback body rejected");
        counted(route, "bad_request", StatusCode::BAD_REQUEST)
    })?;
    let path = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
    let url = format!("{}{path}", dialer.settings.dialer_url);
    let signature = headers
        .get(SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if let Err(error) = dialer.settings.validator.validate(&url, &params, signature) {
        tracing::warn!(
            route,
            reason = error.kind(),
            "bad X-Twilio-Signature on a callback"
        );
        return Err(counted(route, "bad_signature", StatusCode::FORBIDDEN));
    }
    let attempt = uri
        .query()
        .and_then(|q| parse_form(q.as_bytes()).ok())
        .and_then(|q| q.into_iter().find(|(k, _)| k == "attempt"))
        .and_then(|(_, v)| AttemptId::parse(&v))
        .ok_or_else(|| counted(route, "bad_attempt", StatusCode::BAD_REQUEST))?;
    let record = match dialer.queue.attempt(&attempt).await {
        Ok(Some(record)) => record,
        // Closed more than a day ago, or never ours: nothing to do, and Twilio must not retry.
        Ok(None) => return Err(counted(route, "unknown_attempt", StatusCode::NO_CONTENT)),
        Err(error) => {
            tracing::error!(route, error = %error, "attempt unreadable");
            return Err(counted(
                route,
                "redis_error",
                StatusCode::SERVICE_UNAVAILABLE,
            ));
        }
    };
    Ok((params, attempt, record))
}

async fn status(
    State(dialer): State<Dialer>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    const ROUTE: &str = "status";
    let (params, attempt, record) = match signed(&dialer, ROUTE, &uri, &headers, &body).await {
        Ok(ok) => ok,
        Err(status) => return status,
    };
    let callback = match StatusCallback::from_params(params) {
        Ok(callback) => callback,
        Err(error) => {
            tracing::warn!(error = %error, "status callback fields rejected");
            return counted(ROUTE, "bad_request", StatusCode::BAD_REQUEST);
        }
    };
    let tenant = record.get("tenant").unwrap_or_default().to_owned();
    let span = tracing::info_span!("call", tenant = %tenant, call_sid = %callback.call_sid, attempt = %attempt);
    if !record.is_open() {
        return counted(ROUTE, "closed", StatusCode::NO_CONTENT);
    }
    let result = async {
        dialer.adopt(&attempt, &record, &callback.call_sid).await?;
        // Progress (initiated, ringing, answered) changes nothing: only a final status
        // resolves the attempt, so a progress callback costs one read.
        dialer
            .conclude(&attempt, &record, &callback.call_sid, callback.call_status)
            .await
    }
    .instrument(span.clone())
    .await;
    let _guard = span.enter();
    match result {
        Ok(true) => counted(ROUTE, "concluded", StatusCode::NO_CONTENT),
        Ok(false) => counted(ROUTE, "progress", StatusCode::NO_CONTENT),
        Err(error) => {
            tracing::error!(error = %error, "status callback not recorded");
            // Twilio does not retry status callbacks; the reconciler will ask it later.
            counted(ROUTE, "redis_error", StatusCode::SERVICE_UNAVAILABLE)
        }
    }
}

async fn amd(
    State(dialer): State<Dialer>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    const ROUTE: &str = "amd";
    let (params, attempt, record) = match signed(&dialer, ROUTE, &uri, &headers, &body).await {
        Ok(ok) => ok,
        Err(status) => return status,
    };
    let callback = match AmdCallback::from_params(params) {
        Ok(callback) => callback,
        Err(error) => {
            tracing::warn!(error = %error, "machine-detection callback fields rejected");
            return counted(ROUTE, "bad_request", StatusCode::BAD_REQUEST);
        }
    };
    let (call_sid, answered_by) = (callback.call_sid, callback.answered_by.as_str().to_owned());
    let Some(tenant) = record.tenant() else {
        return counted(ROUTE, "unknown_attempt", StatusCode::NO_CONTENT);
    };
    let span =
        tracing::info_span!("call", tenant = %tenant, call_sid = %call_sid, attempt = %attempt);
    answered(&dialer, &attempt, &record, tenant, call_sid, answered_by)
        .instrument(span)
        .await
}

async fn answered(
    dialer: &Dialer,
    attempt: &AttemptId,
    record: &Attempt,
    tenant: sb_schemas::TenantId,
    call_sid: String,
    answered_by: String,
) -> StatusCode {
    const ROUTE: &str = "amd";
    let machine = is_machine(&answered_by);
    let noted = dialer
        .queue
        .note_attempt(attempt, &[("answered_by", answered_by.as_str())])
        .await;
    if let Err(error) = noted {
        tracing::error!(error = %error, "machine-detection verdict not recorded");
        return counted(ROUTE, "redis_error", StatusCode::SERVICE_UNAVAILABLE);
    }
    // A fax gets no message: the agent only hangs up.
    let voicemail = match (machine, answered_by.as_str()) {
        (true, "fax") | (false, _) => String::new(),
        (true, _) => record.get("voicemail").unwrap_or_default().to_owned(),
    };
    tracing::info!(answered_by, machine, "answered");
    let event = AnsweredBy {
        attempt: attempt.to_string(),
        answered_by,
        machine,
        voicemail,
    };
    dialer
        .publish(&tenant, &call_sid, Body::AnsweredBy(event))
        .await;
    counted(
        ROUTE,
        if machine { "machine" } else { "human" },
        StatusCode::NO_CONTENT,
    )
}
