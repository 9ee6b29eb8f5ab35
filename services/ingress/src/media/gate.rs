//! The `start` gate: which media socket may become a call's live stream, and for which
//! tenant.
//!
//! Consumes Twilio's `start` metadata (the CallSid and `customParameters`, all as the peer
//! sent them), the call's admission record (`idem:{sid}`, written by the webhook that
//! admitted it) and the live-socket claim (`live:{sid}`). Produces an [`Admitted`] call —
//! its tenant taken from the admission record, never from the socket, and the live-socket
//! claim it holds, refreshed by a side task until [`LiveClaim::release`] — or a [`Refusal`],
//! counted (`switchboard_ingress_sockets_refused_total{reason}`) and logged with the call
//! sid and the tenant when known. A refused socket is closed with 1008 before anything is
//! published or written: no `start`, no STT lease, no `end`, no session. State: the claim's
//! refresh task, for the call's lifetime; the claim itself lives in Redis.
//!
//! A `start` is served only when, in this order: it brings a credential (`no_credential`);
//! its call was not declined by a webhook (`not_admitted`: a declined call, or a tenant no
//! longer configured; with no record at all, as after Redis lost it, the credential alone
//! decides: only an admitting webhook issues one); a `tenant` parameter, if any, names the admitted tenant
//! (`tenant_mismatch`); the credential was issued for this call, that tenant and our stream
//! URL (`bad_credential`) and has not expired (`expired`); the call has not ended (`ended`:
//! its `end` was claimed, so a credential replayed after a short call cannot start a ghost
//! call); and no other socket serves the call (`already_live`). A socket whose call is
//! being moved here from a draining replica brings the handoff token in its `handoff`
//! parameter: it takes the call's live-socket claim from the old socket with it (`handoff`
//! when the token is wrong or expired) and resumes the call ([`Admitted::handoff`]).
//!
//! Rate limits: a socket costs its tenant nothing beyond its webhook, which the tenant's
//! webhook rate limit already counted (`admit`); a socket without an admitted webhook is
//! refused before it can open a session, a subscription or an STT lease (a Deepgram
//! stream), so sockets cannot get around that limit.
//!
//! Redis down, as for `idem:` (the webhook admits a call it cannot check, the status
//! callback publishes an `end` it cannot claim): a call is not refused for it. If the
//! admission record cannot be read, the credential alone decides, verified for the tenant
//! the socket names: its MAC proves our webhook issued it for that call and tenant, so the
//! tenant is still the webhook's, not one taken on trust. If the live-socket claim cannot
//! be made, the socket is served without it and its refresh task takes the claim once Redis
//! answers. What is lost while Redis is down is only the one-socket-per-call check, against
//! a replay of a captured credential within its validity.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sb_runtime::redis::handoff::Handoff;
use sb_runtime::redis::idempotency::AdmissionRecord;
use sb_runtime::redis::live_socket::LIVE_SOCKET_REFRESH;
use sb_runtime::{Tenant, metrics::Metric};
use sb_schemas::{CallSid, TenantId};
use sb_twilio::media::StartMeta;
use sb_twilio::{CallBinding, CredentialError, credential};
use tokio::task::JoinHandle;
use tracing::Instrument as _;

use crate::{Backend, IngressState};

/// Why a `start` was refused: the `reason` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    NoCredential,
    BadCredential,
    Expired,
    NotAdmitted,
    TenantMismatch,
    Ended,
    AlreadyLive,
    Handoff,
}

impl Refusal {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::NoCredential => "no_credential",
            Self::BadCredential => "bad_credential",
            Self::Expired => "expired",
            Self::NotAdmitted => "not_admitted",
            Self::TenantMismatch => "tenant_mismatch",
            Self::Ended => "ended",
            Self::AlreadyLive => "already_live",
            Self::Handoff => "handoff",
        }
    }
}

/// A `start` that passed the gate.
pub(crate) struct Admitted<B: Backend> {
    pub(crate) sid: CallSid,
    /// The tenant the call's webhook admitted.
    pub(crate) tenant: Arc<Tenant>,
    /// The revision of the tenants file `tenant` comes from (the call keeps it).
    pub(crate) config_revision: u64,
    pub(crate) live: LiveClaim<B>,
    /// Set when the call moved here from a draining replica: where to resume.
    pub(crate) handoff: Option<Handoff>,
}

/// Checks a `start` (see the module doc); refusals are counted and logged here.
pub(crate) async fn admit<B: Backend>(
    state: &IngressState<B>,
    start: &StartMeta,
) -> Result<Admitted<B>, Refusal> {
    let params = &start.custom_parameters;
    let claimed = params.get("tenant").map(String::as_str);
    let refuse = |refusal: Refusal, tenant: Option<&TenantId>| {
        metrics::counter!(Metric::IngressSocketsRefused.name(), "reason" => refusal.as_str())
            .increment(1);
        // The peer's strings are logged only once they are valid ids (bounded, no markup).
        tracing::warn!(
            reason = refusal.as_str(),
            tenant = tenant.map(TenantId::as_str),
            claimed_tenant = claimed
                .and_then(|t| TenantId::parse(t).ok())
                .as_ref()
                .map(TenantId::as_str),
            call_sid = CallSid::parse(&start.call_sid)
                .ok()
                .as_ref()
                .map(CallSid::as_str),
            "media socket refused"
        );
        refusal
    };
    let Ok(sid) = CallSid::parse(&start.call_sid) else {
        return Err(refuse(Refusal::NotAdmitted, None));
    };
    let Some(presented) = params.get(credential::PARAMETER) else {
        return Err(refuse(Refusal::NoCredential, None));
    };
    let backend = &state.backend;
    let tenant_id = match backend.admission(&sid).await {
        Ok(Some(AdmissionRecord::Admitted(id))) => id,
        Ok(Some(AdmissionRecord::Declined)) => return Err(refuse(Refusal::NotAdmitted, None)),
        // No record: Redis lost it (a restart, a failover) or the webhook could not write
        // it (it admits when Redis fails). Only an admitting webhook issues a credential,
        // so the credential decides, for the tenant the socket names.
        result => {
            if let Err(error) = &result {
                tracing::warn!(call_sid = %sid, error = %error, "admission record unreadable; the credential decides");
            } else {
                tracing::warn!(call_sid = %sid, "admission record missing; the credential decides");
            }
            match claimed.and_then(|t| TenantId::parse(t).ok()) {
                Some(id) => id,
                None => return Err(refuse(Refusal::NotAdmitted, None)),
            }
        }
    };
    if claimed.is_some_and(|claimed| claimed != tenant_id.as_str()) {
        return Err(refuse(Refusal::TenantMismatch, Some(&tenant_id)));
    }
    let config = state.tenants.now();
    let Some(tenant) = config.tenants.by_id(&tenant_id).cloned() else {
        return Err(refuse(Refusal::NotAdmitted, Some(&tenant_id)));
    };
    let binding = CallBinding {
        call_sid: sid.as_str(),
        tenant: tenant_id.as_str(),
        stream_url: &state.settings.stream_url,
    };
    match state
        .settings
        .credentials
        .verify(presented, &binding, SystemTime::now())
    {
        Ok(()) => {}
        Err(CredentialError::Expired { .. }) => {
            return Err(refuse(Refusal::Expired, Some(&tenant_id)));
        }
        Err(_) => return Err(refuse(Refusal::BadCredential, Some(&tenant_id))),
    }
    // A credential replayed after its call ended (still valid for a short call) would
    // start a ghost call: the `end` claim outlives the credential.
    match backend.ended(&sid).await {
        Ok(false) => {}
        Ok(true) => return Err(refuse(Refusal::Ended, Some(&tenant_id))),
        Err(error) => {
            tracing::warn!(tenant = %tenant_id, call_sid = %sid, error = %error, "end claim unreadable; serving");
        }
    }
    let owner = format!("{:032x}", rand::random::<u128>());
    let mut handoff = None;
    if let Some(token) = params.get(crate::migrate::HANDOFF_PARAMETER) {
        match backend.handoff_take(&sid, token, &owner).await {
            Ok(Some(taken)) => handoff = Some(taken),
            Ok(None) => return Err(refuse(Refusal::Handoff, Some(&tenant_id))),
            Err(error) => {
                tracing::warn!(tenant = %tenant_id, call_sid = %sid, error = %error, "handoff unreadable");
                return Err(refuse(Refusal::Handoff, Some(&tenant_id)));
            }
        }
    } else {
        match backend.live_claim(&sid, &owner).await {
            Ok(true) => {}
            Ok(false) => return Err(refuse(Refusal::AlreadyLive, Some(&tenant_id))),
            Err(error) => {
                tracing::warn!(tenant = %tenant_id, call_sid = %sid, error = %error, "live-socket claim failed; serving without it");
            }
        }
    }
    let span = tracing::info_span!("call", tenant = %tenant_id, call_sid = %sid);
    Ok(Admitted {
        live: LiveClaim::hold(backend.clone(), sid.clone(), owner, span),
        sid,
        tenant,
        config_revision: config.revision,
        handoff,
    })
}

/// This socket's claim on its call (`live:{sid}`), refreshed every
/// [`LIVE_SOCKET_REFRESH`] by a side task until released (or dropped: then the key expires).
pub(crate) struct LiveClaim<B: Backend> {
    backend: B,
    sid: CallSid,
    owner: String,
    refresher: JoinHandle<()>,
}

impl<B: Backend> LiveClaim<B> {
    fn hold(backend: B, sid: CallSid, owner: String, span: tracing::Span) -> Self {
        let refresher = tokio::spawn(
            refresh(
                backend.clone(),
                sid.clone(),
                owner.clone(),
                LIVE_SOCKET_REFRESH,
            )
            .instrument(span),
        );
        Self {
            backend,
            sid,
            owner,
            refresher,
        }
    }

    /// Whether another socket holds the call now (its stream was connected anew there).
    /// Refreshes this socket's claim otherwise; a Redis error counts as not taken.
    pub(crate) async fn taken_over(&self) -> bool {
        matches!(
            self.backend.live_refresh(&self.sid, &self.owner).await,
            Ok(false)
        )
    }

    /// Stops refreshing and deletes the claim if it is still this socket's.
    pub(crate) async fn release(self) {
        self.refresher.abort();
        if let Err(error) = self.backend.live_release(&self.sid, &self.owner).await {
            tracing::warn!(error = %error, "live-socket claim not released; it expires");
        }
    }
}

impl<B: Backend> Drop for LiveClaim<B> {
    fn drop(&mut self) {
        self.refresher.abort();
    }
}

async fn refresh<B: Backend>(backend: B, sid: CallSid, owner: String, every: Duration) {
    let mut failures: u64 = 0;
    loop {
        tokio::time::sleep(every).await;
        match backend.live_refresh(&sid, &owner).await {
            Ok(true) => failures = 0,
            Ok(false) => tracing::warn!("another socket holds this call's live-socket claim"),
            Err(error) => {
                failures += 1;
                if failures.is_power_of_two() {
                    tracing::warn!(failures, error = %error, "live-socket claim not refreshed");
                }
            }
        }
    }
}
