//! `POST /twilio/stream-ended?tenant=…`, every stream's `<Connect action>`: Twilio asks
//! here what to run once a call's stream ended without the call ending.
//!
//! Consumes Twilio's signed request (the standard call parameters; the tenant in the signed
//! URL) and the call's admission record; produces TwiML: a new `<Connect><Stream>` with a
//! `lost` handoff token for a call a socket still held (its replica died; the new socket
//! resumes it, `media/handoff.rs`), `<Hangup/>` for anything else: a call that ended, one
//! no socket held, one under another tenant, one that dropped too often, one Redis cannot
//! tell about. Counted as `reconnecting` in `switchboard_ingress_migrations_total`. State:
//! none here; the decision is one Redis script (`Redis::handoff_reconnect`).

use axum::http::{StatusCode, Uri};
use sb_runtime::metrics::Metric;
use sb_runtime::redis::handoff::Reconnect;
use sb_runtime::redis::idempotency::AdmissionRecord;
use sb_schemas::{CallSid, TenantId};
use sb_twilio::IncomingCall;
use sb_twilio::form::FormError;
use tracing::Instrument as _;

use crate::webhook::{Answer, CallWebhook, answer, query_param, twiml};
use crate::{Backend, IngressState};

/// `POST /twilio/stream-ended?tenant=…`, every stream's `<Connect action>`: Twilio asks
/// what next once a call's stream ended without the call ending. A call still served (its
/// live-socket claim stands: the replica serving it died) is connected anew with a `lost`
/// handoff the new socket resumes from; anything else hangs up: a call that ended, one no
/// socket was serving, one that dropped too often, or one Redis cannot tell about.
async fn stream_ended<B: Backend>(
    state: &IngressState<B>,
    call: IncomingCall,
    sid: CallSid,
    uri: &Uri,
) -> Answer {
    let hang_up = |outcome: &'static str| twiml(outcome, HANG_UP_TWIML.to_owned());
    let tenant = query_param(uri, "tenant")
        .and_then(|raw| TenantId::parse(&raw).ok())
        .and_then(|id| state.tenants.by_id(&id));
    let Some(tenant) = tenant else {
        tracing::warn!(call_sid = %sid, "stream ended for a tenant not configured");
        return hang_up("unknown_tenant");
    };
    let span = tracing::info_span!("call", tenant = %tenant.id, call_sid = %sid);
    async {
        match state.backend.admission(&sid).await {
            Ok(Some(AdmissionRecord::Admitted(id))) if id != tenant.id => {
                tracing::warn!(admitted = %id, "stream ended under another tenant");
                return hang_up("tenant_mismatch");
            }
            Ok(Some(AdmissionRecord::Declined)) => return hang_up("not_admitted"),
            _ => {}
        }
        match state.backend.handoff_reconnect(&sid).await {
            Ok(Reconnect::Token(token)) => match crate::migrate::stream_twiml(
                &state.settings,
                (tenant.id.as_str(), &sid),
                (&call.from, &call.to),
                &[(crate::migrate::HANDOFF_PARAMETER, &token)],
            ) {
                Some(xml) => {
                    metrics::counter!(Metric::IngressMigrations.name(), "outcome" => "reconnecting")
                        .increment(1);
                    tracing::warn!("the call's stream dropped mid-call; connecting it anew");
                    twiml("reconnected", xml)
                }
                None => answer("twiml_error", StatusCode::INTERNAL_SERVER_ERROR),
            },
            Ok(Reconnect::Ended) => hang_up("ended"),
            Ok(Reconnect::NotLive) => {
                tracing::info!("stream ended with no socket serving the call; hanging up");
                hang_up("not_live")
            }
            Ok(Reconnect::TooMany) => {
                tracing::warn!("the call's stream dropped too often; hanging up");
                hang_up("too_many_reconnects")
            }
            Err(error) => {
                tracing::warn!(error = %error, "cannot tell whether the call lives; hanging up");
                hang_up("unreadable")
            }
        }
    }
    .instrument(span)
    .await
}

/// What Twilio runs when a stream ended and the call should end with it.
const HANG_UP_TWIML: &str =
    r#"<?xml version="1.0" encoding="UTF-8"?><Response><Hangup/></Response>"#;

/// Twilio's `<Connect action>` request: the standard call parameters.
pub(crate) struct StreamEnded(IncomingCall);

impl CallWebhook for StreamEnded {
    const ROUTE: &'static str = "stream_ended";
    fn parse(params: Vec<(String, String)>) -> Result<Self, FormError> {
        IncomingCall::from_params(params).map(Self)
    }
    fn call_sid(&self) -> &str {
        &self.0.call_sid
    }
    fn answer<B: Backend>(
        self,
        state: &IngressState<B>,
        sid: CallSid,
        uri: &Uri,
    ) -> impl Future<Output = Answer> + Send {
        stream_ended(state, self.0, sid, uri)
    }
}
