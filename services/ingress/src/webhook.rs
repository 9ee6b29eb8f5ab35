//! Twilio's HTTP webhooks: the incoming call (`POST /twilio/voice`) and the call status
//! callback (`POST /twilio/status`); the end of a call's stream is [`crate::stream_ended`],
//! through the same [`CallWebhook`] handler.
//!
//! Consumes signed form bodies; an outbound campaign call's webhook URL carries its dial
//! attempt (`?attempt=…`), which decides its tenant. Produces TwiML (connect the media stream, with the call's
//! media-socket credential among its `<Parameter>`s, or a polite `<Say>…<Hangup/>` for
//! unknown numbers and rate-limited calls), the `webhook` event once per call and the `end`
//! event once per admitted call (shared with the socket's `stop`), and the outcome metrics.
//! Bad signatures get 403 and nothing is published; bad bodies get 400; a status callback
//! for a call no webhook admitted publishes nothing. State: none here; idempotency, the
//! admission record and rate limits live in Redis (via the [`Backend`]).

use std::time::{Instant, SystemTime};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use sb_runtime::redis::campaigns::AttemptId;
use sb_runtime::redis::idempotency::AdmissionRecord;
use sb_runtime::{Tenant, metrics::Metric};
use sb_schemas::{Body, CallSid, End, EndReason, Envelope, Webhook};
use sb_twilio::form::{FormError, parse_form};
use sb_twilio::rest::CallStatus;
use sb_twilio::{IncomingCall, StatusCallback};
use tracing::Instrument as _;

use crate::backend::Outbound;
use crate::{Admission, Backend, IngressState, Settings};

/// The header Twilio signs every request with.
pub(crate) const SIGNATURE_HEADER: &str = "x-twilio-signature";

/// How one webhook ended: a metric label and the response.
pub(crate) struct Answer {
    outcome: &'static str,
    response: Response,
}

pub(crate) fn answer(outcome: &'static str, response: impl IntoResponse) -> Answer {
    Answer {
        outcome,
        response: response.into_response(),
    }
}

pub(crate) fn twiml(outcome: &'static str, xml: String) -> Answer {
    answer(outcome, ([(header::CONTENT_TYPE, "text/xml")], xml))
}

fn bad_request(reason: &'static str, detail: impl std::fmt::Display) -> Answer {
    tracing::warn!(reason, detail = %detail, "webhook rejected");
    answer(
        "bad_request",
        (StatusCode::BAD_REQUEST, format!("{detail}\n")),
    )
}

/// Records the outcome and latency of one webhook.
fn finish(route: &'static str, started: Instant, answer: Answer) -> Response {
    metrics::counter!(Metric::IngressWebhooks.name(), "route" => route, "outcome" => answer.outcome)
        .increment(1);
    metrics::histogram!(Metric::IngressWebhookSeconds.name(), "route" => route)
        .record(started.elapsed().as_secs_f64());
    answer.response
}

/// Checks `X-Twilio-Signature` over the public URL Twilio requested and every parameter.
pub(crate) fn verify(
    settings: &Settings,
    route: &'static str,
    uri: &Uri,
    headers: &HeaderMap,
    params: Option<&[(String, String)]>,
) -> Result<(), &'static str> {
    let reason = match headers.get(SIGNATURE_HEADER).map(|v| v.to_str()) {
        None => "missing",
        Some(Err(_)) => "malformed",
        Some(Ok(signature)) => {
            let path = uri.path_and_query().map_or(uri.path(), |pq| pq.as_str());
            let url = settings.public_url_for(path);
            let result = match params {
                Some(params) => settings.validator.validate(&url, params, signature),
                None => settings.validator.validate_websocket(&url, signature),
            };
            match result {
                Ok(()) => return Ok(()),
                Err(error) => error.kind(),
            }
        }
    };
    metrics::counter!(Metric::IngressSignatureFailures.name(), "route" => route, "reason" => reason)
        .increment(1);
    tracing::warn!(route, reason, path = uri.path(), "bad X-Twilio-Signature");
    Err(reason)
}

fn forbidden() -> Answer {
    answer(
        "bad_signature",
        (StatusCode::FORBIDDEN, "invalid X-Twilio-Signature\n"),
    )
}

/// `POST /twilio/voice`: a new call, admitted once. An inbound call's tenant owns the
/// called number; an outbound call's (`?attempt=…` in the signed URL) is its dial attempt's.
async fn incoming_call<B: Backend>(
    state: &IngressState<B>,
    call: IncomingCall,
    sid: CallSid,
    uri: &Uri,
) -> Answer {
    if let Some(raw) = attempt_param(uri) {
        return outbound_call(state, call, sid, &raw).await;
    }
    let Some(tenant) = state.tenants.by_number(&call.to) else {
        tracing::info!(call_sid = %sid, to = %call.to, "call to a number without a tenant");
        return twiml(
            "unknown_tenant",
            state.settings.unknown_number_twiml.clone(),
        );
    };
    let span = tracing::info_span!("call", tenant = %tenant.id, call_sid = %sid);
    admit(state, &tenant, &sid, &call, None)
        .instrument(span)
        .await
}

/// The `attempt` query parameter of the webhook URL, if any.
fn attempt_param(uri: &Uri) -> Option<String> {
    query_param(uri, "attempt")
}

/// A query parameter of a signed URL (the signature covers the query).
pub(crate) fn query_param(uri: &Uri, wanted: &str) -> Option<String> {
    parse_form(uri.query()?.as_bytes())
        .ok()?
        .into_iter()
        .find(|(name, _)| name == wanted)
        .map(|(_, value)| value)
}

/// An outbound campaign call: admitted for the tenant of its open dial attempt when the
/// numbers match it; anything else is hung up politely (and counted).
async fn outbound_call<B: Backend>(
    state: &IngressState<B>,
    call: IncomingCall,
    sid: CallSid,
    raw: &str,
) -> Answer {
    let hang_up = |outcome: &'static str, why: &str| {
        tracing::warn!(call_sid = %sid, attempt = %raw, why, "outbound call refused");
        twiml(outcome, state.settings.unknown_number_twiml.clone())
    };
    let Some(attempt) = AttemptId::parse(raw) else {
        return bad_request("bad_attempt", "attempt must be 32 hex digits");
    };
    let numbers = (call.to.as_str(), call.from.as_str());
    let tenant_id = match state.backend.outbound(&sid, &attempt, numbers).await {
        Ok(Outbound::Call(tenant)) => tenant,
        Ok(Outbound::Unknown) => {
            return hang_up(
                "unknown_attempt",
                "no open attempt of that id for this call",
            );
        }
        Ok(Outbound::Mismatch) => {
            return hang_up(
                "attempt_mismatch",
                "the call's numbers are not the attempt's",
            );
        }
        // Without the attempt there is no tenant to run the call for.
        Err(error) => return hang_up("attempt_unreadable", &error.to_string()),
    };
    let Some(tenant) = state.tenants.by_id(&tenant_id) else {
        return hang_up("unknown_tenant", "the attempt's tenant is not configured");
    };
    let span = tracing::info_span!("call", tenant = %tenant.id, call_sid = %sid);
    admit(state, &tenant, &sid, &call, Some(&attempt))
        .instrument(span)
        .await
}

async fn admit<B: Backend>(
    state: &IngressState<B>,
    tenant: &Tenant,
    sid: &CallSid,
    call: &IncomingCall,
    attempt: Option<&AttemptId>,
) -> Answer {
    let admission = match state.backend.admit(sid, tenant, SystemTime::now()).await {
        Ok(admission) => admission,
        Err(error) => {
            // Redis down: let the call through rather than fail it. A retry publishes the
            // `webhook` again, under the same id (`Envelope::once`), so it is stored once.
            tracing::warn!(error = %error, "admission check failed; admitting the call");
            Admission::Admitted
        }
    };
    let connect = || match connect_twiml(&state.settings, tenant, sid, call) {
        Some(xml) => twiml("accepted", xml),
        None => answer("twiml_error", StatusCode::INTERNAL_SERVER_ERROR),
    };
    match admission {
        Admission::Admitted => {
            let event = Envelope::once(
                tenant.id.clone(),
                sid.clone(),
                0,
                Body::Webhook(Webhook {
                    account_sid: call.account_sid.clone(),
                    from: call.from.clone(),
                    to: call.to.clone(),
                    direction: call.direction.clone(),
                    call_status: call.call_status.as_str().to_owned(),
                    attempt: attempt.map(ToString::to_string),
                }),
            );
            if let Err(error) = state.backend.publish(&event).await {
                // The call still connects: the socket's `start` is what drives the pipeline.
                tracing::error!(error = %error, "webhook event not stored");
            }
            let direction = crate::direction(attempt.is_some());
            metrics::counter!(Metric::CallsStarted.name(), "tenant" => tenant.id.to_string(), "direction" => direction)
                .increment(1);
            tracing::info!(from = %call.from, direction, "call accepted");
            connect()
        }
        Admission::RateLimited => {
            metrics::counter!(Metric::IngressRateLimited.name(), "tier" => tenant.tier_name.clone())
                .increment(1);
            tracing::info!(tier = %tenant.tier_name, "call declined by the rate limit");
            twiml("rate_limited", state.settings.rate_limited_twiml.clone())
        }
        Admission::Duplicate { admitted } => {
            tracing::info!(admitted, "webhook retry answered again");
            let answer = if admitted {
                connect()
            } else {
                twiml("duplicate", state.settings.rate_limited_twiml.clone())
            };
            // The same answer as the first time, counted as a retry.
            Answer {
                outcome: "duplicate",
                ..answer
            }
        }
    }
}

/// `<Connect><Stream url="wss://…/twilio/media">` with the tenant, the call's numbers and
/// its media-socket credential (bound to the call, the tenant and the stream URL) as
/// `<Parameter>`s (Twilio echoes them in `start.customParameters`).
fn connect_twiml(
    settings: &Settings,
    tenant: &Tenant,
    sid: &CallSid,
    call: &IncomingCall,
) -> Option<String> {
    crate::migrate::stream_twiml(
        settings,
        (tenant.id.as_str(), sid),
        (&call.from, &call.to),
        &[],
    )
}

/// A webhook's form fields, once they parse and `X-Twilio-Signature` matches them: 400 or
/// 403 otherwise (nothing is published for either).
fn signed_form<B: Backend>(
    state: &IngressState<B>,
    route: &'static str,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Vec<(String, String)>, Box<Answer>> {
    let params = parse_form(body).map_err(|error| Box::new(bad_request(error.kind(), error)))?;
    verify(&state.settings, route, uri, headers, Some(&params))
        .map_err(|_| Box::new(forbidden()))?;
    Ok(params)
}

/// A webhook about one call: its route label, typed parameters and answer.
pub(crate) trait CallWebhook: Sized + Send {
    /// The `route` label of its metrics and log lines.
    const ROUTE: &'static str;
    fn parse(params: Vec<(String, String)>) -> Result<Self, FormError>;
    fn call_sid(&self) -> &str;
    /// The answer, once the signature and the parameters are good.
    fn answer<B: Backend>(
        self,
        state: &IngressState<B>,
        sid: CallSid,
        uri: &Uri,
    ) -> impl Future<Output = Answer> + Send;
}

impl CallWebhook for IncomingCall {
    const ROUTE: &'static str = "voice";
    fn parse(params: Vec<(String, String)>) -> Result<Self, FormError> {
        Self::from_params(params)
    }
    fn call_sid(&self) -> &str {
        &self.call_sid
    }
    fn answer<B: Backend>(
        self,
        state: &IngressState<B>,
        sid: CallSid,
        uri: &Uri,
    ) -> impl Future<Output = Answer> + Send {
        incoming_call(state, self, sid, uri)
    }
}

impl CallWebhook for StatusCallback {
    const ROUTE: &'static str = "status";
    fn parse(params: Vec<(String, String)>) -> Result<Self, FormError> {
        Self::from_params(params)
    }
    fn call_sid(&self) -> &str {
        &self.call_sid
    }
    fn answer<B: Backend>(
        self,
        state: &IngressState<B>,
        sid: CallSid,
        _uri: &Uri,
    ) -> impl Future<Output = Answer> + Send {
        status_callback(state, self, sid)
    }
}

/// Every call webhook (`POST /twilio/voice`, `/twilio/status`): the signed form as `T` and
/// its call sid (400 or 403 otherwise, as [`signed_form`]), then `T`'s answer; the outcome
/// and latency are recorded.
pub(crate) async fn handle<B: Backend, T: CallWebhook>(
    State(state): State<IngressState<B>>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let started = Instant::now();
    let answer = match signed_call::<B, T>(&state, &uri, &headers, &body) {
        Ok((params, sid)) => params.answer(&state, sid, &uri).await,
        Err(answer) => *answer,
    };
    finish(T::ROUTE, started, answer)
}

fn signed_call<B: Backend, T: CallWebhook>(
    state: &IngressState<B>,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<(T, CallSid), Box<Answer>> {
    let params = signed_form(state, T::ROUTE, uri, headers, body)?;
    let typed = T::parse(params).map_err(|error| Box::new(bad_request(error.kind(), error)))?;
    let sid = CallSid::parse(typed.call_sid())
        .map_err(|error| Box::new(bad_request("bad_call_sid", error)))?;
    Ok((typed, sid))
}

/// `POST /twilio/status`: `end` once per admitted call on a final status, under the tenant
/// its webhook admitted it for.
async fn status_callback<B: Backend>(
    state: &IngressState<B>,
    callback: StatusCallback,
    sid: CallSid,
) -> Answer {
    // Progress callbacks (and late ones after the end) change nothing.
    let Some(reason) = end_reason(callback.call_status) else {
        return answer("ignored", StatusCode::NO_CONTENT);
    };
    // Inbound calls are to the tenant's number; calls it placed are from it.
    let by_number = || {
        state
            .tenants
            .by_number(&callback.to)
            .or_else(|| state.tenants.by_number(&callback.from))
    };
    let tenant = match state.backend.admission(&sid).await {
        Ok(Some(AdmissionRecord::Admitted(id))) => state.tenants.by_id(&id),
        // Claimed without a tenant (`claim_once`, an older ingress): the number's tenant.
        Ok(Some(AdmissionRecord::Unattributed)) => by_number(),
        Ok(None | Some(AdmissionRecord::Declined)) => {
            // Nothing of a call no webhook admitted is published, its `end` included.
            tracing::warn!(call_sid = %sid, "status callback for a call never admitted");
            return answer("not_admitted", StatusCode::NO_CONTENT);
        }
        Err(error) => {
            // Redis down: end the call rather than lose its `end`, as `admit` connects it;
            // the `end` id is derived from the call, so the stream stores it once.
            tracing::warn!(call_sid = %sid, error = %error, "admission record unreadable; ending the call");
            by_number()
        }
    };
    let Some(tenant) = tenant else {
        tracing::info!(call_sid = %sid, "status callback for a number without a tenant");
        return answer("unknown_tenant", StatusCode::NO_CONTENT);
    };
    let span = tracing::info_span!("call", tenant = %tenant.id, call_sid = %sid);
    end_call(state, &tenant, sid, reason).instrument(span).await
}

async fn end_call<B: Backend>(
    state: &IngressState<B>,
    tenant: &Tenant,
    sid: CallSid,
    reason: EndReason,
) -> Answer {
    let first = state.backend.claim_end(&sid).await.unwrap_or_else(|error| {
        tracing::warn!(error = %error, "end claim failed; publishing anyway");
        true
    });
    if !first {
        return answer("duplicate", StatusCode::NO_CONTENT);
    }
    // The same id as the socket's `end`: if Redis could not arbitrate, the stream does.
    let event = Envelope::once(tenant.id.clone(), sid, 0, Body::End(End { reason }));
    match state.backend.publish(&event).await {
        Ok(()) => {
            tracing::info!(reason = ?reason, "call ended (status callback)");
            answer("ended", StatusCode::NO_CONTENT)
        }
        Err(error) => {
            tracing::error!(error = %error, "end event not stored");
            answer("publish_failed", StatusCode::NO_CONTENT)
        }
    }
}

/// The `end` reason of a final call status; `None` for progress statuses.
fn end_reason(status: CallStatus) -> Option<EndReason> {
    match status {
        CallStatus::Completed => Some(EndReason::Completed),
        CallStatus::Busy => Some(EndReason::Busy),
        CallStatus::Failed => Some(EndReason::Failed),
        CallStatus::NoAnswer => Some(EndReason::NoAnswer),
        CallStatus::Canceled => Some(EndReason::Canceled),
        CallStatus::Queued
        | CallStatus::Initiated
        | CallStatus::Ringing
        | CallStatus::InProgress => None,
    }
}
