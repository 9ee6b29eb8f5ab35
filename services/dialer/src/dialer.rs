//! One dial: from a leased contact to a call placed at Twilio, with the attempt recorded
//! first (ARCHITECTURE §6, "Dial attempts").
//!
//! Consumes [`Lease`]s from the campaign queue, the campaign definitions (cached for a
//! moment) and the shared calls-per-second bucket; produces a Twilio `Calls.json` request
//! whose `Url` and callbacks carry the attempt id, the attempt's record in Redis, and the
//! call's `dial` event. Every outcome of the REST call is handled: placed (the sid is
//! recorded), refused (the attempt counts, per the retry policy), rate-limited, 5xx or
//! unreachable (the contact goes back, not counted), unknown (the attempt stays open for
//! the reconciler). State: the definition cache; everything else in Redis.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sb_runtime::Tenants;
use sb_runtime::metrics::Metric;
use sb_runtime::outbox::Outbox;
use sb_runtime::redis::RedisError;
use sb_runtime::redis::campaigns::cps::CpsVerdict;
use sb_runtime::redis::campaigns::{
    AttemptId, CampaignId, CampaignQueue, Lease, Outcome, RetryPolicy,
};
use sb_schemas::{Body, CallSid, Dial, Envelope, TenantId};
use sb_twilio::rest::STATUS_CALLBACK_EVENTS;
use sb_twilio::{CallTarget, CreateCall, MachineDetection};
use tracing::Instrument as _;

use crate::campaign::{Campaign, CampaignState, DEFAULT_VOICEMAIL, Window, render};
use crate::clock::SharedClock;
use crate::config::Settings;
use crate::twilio::RestError;

/// How long a definition read from Redis is used before it is read again.
const DEF_TTL: Duration = Duration::from_secs(2);
/// The longest a dialer waits for a calls-per-second token before looking again.
const MAX_CPS_WAIT: Duration = Duration::from_secs(2);

/// Campaign definitions as last read, and when.
type DefCache = HashMap<(TenantId, CampaignId), (Instant, Option<Arc<Campaign>>)>;

/// Everything a dial, a callback and the reconciler share. Cheap to clone.
#[derive(Clone)]
pub struct Dialer {
    pub queue: CampaignQueue,
    pub outbox: Arc<dyn Outbox>,
    pub settings: Arc<Settings>,
    pub clock: SharedClock,
    defs: Arc<Mutex<DefCache>>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer").finish_non_exhaustive()
    }
}

/// An attempt recorded and its request built, not yet sent ([`Dialer::prepare`]).
#[derive(Debug)]
pub struct Prepared {
    pub lease: Lease,
    pub attempt: AttemptId,
    pub create: CreateCall,
    def: Arc<Campaign>,
}

/// What became of one popped contact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialled {
    Placed,
    /// Given back (outside its hours, no CPS token, a transient Twilio error).
    Returned,
    /// The attempt was counted without a call (Twilio refused it; no definition).
    Refused,
    /// Twilio's answer was lost: the attempt stays open for the reconciler.
    Unknown,
    /// The lease was not ours any more.
    Stale,
}

fn dials(result: &'static str) {
    metrics::counter!(Metric::DialerDials.name(), "result" => result).increment(1);
}

impl Dialer {
    pub fn new(
        queue: CampaignQueue,
        outbox: Arc<dyn Outbox>,
        settings: Settings,
        clock: SharedClock,
    ) -> Self {
        Self {
            queue: queue.with_global_cap(settings.global_cap),
            outbox,
            settings: Arc::new(settings),
            clock,
            defs: Arc::default(),
        }
    }

    /// Sets every tenant's cap on outbound calls in flight from its tier (at start-up: the
    /// tenants file is the truth, so every replica writes the same caps).
    pub async fn apply_tenant_caps(&self, tenants: &Tenants) -> Result<(), RedisError> {
        for tenant in tenants.iter() {
            self.queue
                .set_tenant_cap(&tenant.id, Some(tenant.tier.outbound_concurrency))
                .await?;
        }
        Ok(())
    }

    /// A campaign's definition, from a short-lived cache; `None` if it has none.
    pub async fn campaign(
        &self,
        tenant: &TenantId,
        campaign: &CampaignId,
    ) -> Result<Option<Arc<Campaign>>, RedisError> {
        let key = (tenant.clone(), campaign.clone());
        if let Some((at, def)) = self.lock_defs().get(&key)
            && at.elapsed() < DEF_TTL
        {
            return Ok(def.clone());
        }
        let raw = self.queue.def(tenant, campaign).await?;
        let def = raw.and_then(|raw| match serde_json::from_str::<Campaign>(&raw) {
            Ok(def) => Some(Arc::new(def)),
            Err(error) => {
                tracing::error!(tenant = %tenant, campaign = %campaign, error = %error, "unreadable campaign definition");
                None
            }
        });
        self.lock_defs().insert(key, (Instant::now(), def.clone()));
        Ok(def)
    }

    fn lock_defs(&self) -> std::sync::MutexGuard<'_, DefCache> {
        self.defs.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The retry policy of a campaign (the default one if its definition is gone).
    pub async fn policy(&self, tenant: &TenantId, campaign: &CampaignId) -> RetryPolicy {
        match self.campaign(tenant, campaign).await {
            Ok(Some(def)) => def.spec.retry_policy(),
            _ => RetryPolicy::default(),
        }
    }

    /// Takes a calls-per-second token, then pops one contact and dials it; `None` when
    /// nothing is ready. The token comes first, so no contact is held (out of every other
    /// dialer's reach) while its dialer waits for the rate; a token taken when nothing is
    /// ready is simply unused. `Returned` when no token came within [`MAX_CPS_WAIT`].
    pub async fn dial_next(&self) -> Result<Option<Dialled>, RedisError> {
        if !self.take_cps_token().await? {
            dials("cps_wait");
            return Ok(Some(Dialled::Returned));
        }
        let now = self.clock.now_ms();
        let Some(lease) = self.queue.pop(now, self.settings.lease).await? else {
            return Ok(None);
        };
        self.dial(lease).await.map(Some)
    }

    /// Dials a leased contact, or gives it back when it may not be called now.
    pub async fn dial(&self, lease: Lease) -> Result<Dialled, RedisError> {
        let span = tracing::info_span!("dial", tenant = %lease.tenant, campaign = %lease.campaign, contact = %lease.contact);
        self.dial_leased(lease).instrument(span).await
    }

    async fn dial_leased(&self, lease: Lease) -> Result<Dialled, RedisError> {
        let started = Instant::now();
        let now = self.clock.now_ms();
        let Some(def) = self.campaign(&lease.tenant, &lease.campaign).await? else {
            tracing::warn!("contact of a campaign without a definition: failed");
            let never = RetryPolicy {
                retry_on: Vec::new(),
                ..RetryPolicy::default()
            };
            self.queue
                .complete(&lease, Outcome::Error, &never, now)
                .await?;
            dials("campaign_gone");
            return Ok(Dialled::Refused);
        };
        if def.state == CampaignState::Canceled {
            self.queue.release(&lease, now, 0).await?;
            dials("campaign_gone");
            return Ok(Dialled::Returned);
        }
        let zone = def.zone_for(&lease.payload.vars);
        match def.window(self.clock.now(), zone) {
            Window::Open => {}
            Window::Ended => {
                tracing::info!("campaign past its end time: cancelled");
                self.end_campaign(&lease, &def).await?;
                self.queue.release(&lease, now, 0).await?;
                dials("campaign_gone");
                return Ok(Dialled::Returned);
            }
            Window::Opens(at) => {
                let at_ms = u64::try_from(at.timestamp_millis()).unwrap_or(now);
                if def.callee_zone(&lease.payload.vars).is_some() {
                    // Its own hours: only this contact waits.
                    self.queue.release(&lease, now, at_ms).await?;
                } else {
                    // The campaign's hours: the whole campaign waits, this contact keeps its place.
                    self.queue
                        .hold_until(&lease.tenant, &lease.campaign, at_ms)
                        .await?;
                    self.queue.release(&lease, now, 0).await?;
                }
                dials("outside_hours");
                return Ok(Dialled::Returned);
            }
        }
        let result = self.place(lease, def).await;
        metrics::histogram!(Metric::DialerDialSeconds.name())
            .record(started.elapsed().as_secs_f64());
        result
    }

    /// A campaign past its end time is cancelled: its definition says so and its queued
    /// contacts end `canceled`.
    async fn end_campaign(&self, lease: &Lease, def: &Campaign) -> Result<(), RedisError> {
        let mut ended = def.clone();
        ended.state = CampaignState::Canceled;
        if let Ok(json) = serde_json::to_string(&ended) {
            self.queue
                .put_def(&lease.tenant, &lease.campaign, &json)
                .await?;
        }
        self.queue.cancel(&lease.tenant, &lease.campaign).await?;
        Ok(())
    }

    /// Takes a calls-per-second token, waiting up to [`MAX_CPS_WAIT`] for one.
    async fn take_cps_token(&self) -> Result<bool, RedisError> {
        let deadline = Instant::now() + MAX_CPS_WAIT;
        loop {
            let verdict = self
                .queue
                .cps_take(
                    &self.settings.account,
                    self.settings.cps,
                    self.clock.now_ms(),
                )
                .await?;
            match verdict {
                CpsVerdict::Go => return Ok(true),
                CpsVerdict::Wait(wait) if Instant::now() + wait <= deadline => {
                    tokio::time::sleep(wait).await;
                }
                CpsVerdict::Wait(_) => return Ok(false),
            }
        }
    }

    /// Records the attempt, then asks Twilio for the call.
    async fn place(&self, lease: Lease, def: Arc<Campaign>) -> Result<Dialled, RedisError> {
        match self.prepare(lease, def).await? {
            Some(prepared) => self.send(prepared).await,
            None => {
                dials("stale");
                Ok(Dialled::Stale)
            }
        }
    }

    /// The first half of a dial: the attempt is recorded (the contact is `calling`) and
    /// its `Calls.json` request built. `None` when the lease was no longer ours. A dialer
    /// that dies after this and before [`Self::send`] leaves an attempt with no call,
    /// which the reconciler abandons.
    pub async fn prepare(
        &self,
        lease: Lease,
        def: Arc<Campaign>,
    ) -> Result<Option<Prepared>, RedisError> {
        let attempt = AttemptId::random();
        let vars = &lease.payload.vars;
        let text = |t: &Option<String>| t.as_deref().map(|t| render(t, vars)).unwrap_or_default();
        let voicemail = render(
            def.spec.voicemail.as_deref().unwrap_or(DEFAULT_VOICEMAIL),
            vars,
        );
        let (greeting, prompt) = (text(&def.spec.greeting), text(&def.spec.prompt));
        let now = self.clock.now_ms();
        let number = (lease.attempts + 1).to_string();
        let created = now.to_string();
        let amd = if def.spec.machine_detection { "1" } else { "0" };
        // The contact's variables go to the tenant's tools with the call (a JSON object).
        let vars_json = serde_json::to_string(vars).expect("variables serialise");
        let fields = [
            ("to", lease.payload.phone.as_str()),
            ("from", def.spec.caller_id.as_str()),
            ("greeting", greeting.as_str()),
            ("prompt", prompt.as_str()),
            ("voicemail", voicemail.as_str()),
            ("amd", amd),
            ("created_ms", created.as_str()),
            ("attempt_number", number.as_str()),
            ("vars", vars_json.as_str()),
        ];
        if !self
            .queue
            .begin(&lease, &attempt, now, self.settings.reconcile, &fields)
            .await?
        {
            return Ok(None);
        }
        let create = self.create_call(&attempt, &lease.payload.phone, &def);
        Ok(Some(Prepared {
            lease,
            attempt,
            create,
            def,
        }))
    }

    /// The second half of a dial: asks Twilio for the call and records what it said.
    pub async fn send(&self, prepared: Prepared) -> Result<Dialled, RedisError> {
        let Prepared {
            lease,
            attempt,
            create,
            def,
        } = prepared;
        let (lease, def) = (&lease, def.as_ref());

        match self.settings.rest.create_call(&create).await {
            Ok(call) => {
                self.placed(lease, &attempt, def, &call.sid).await?;
                dials("placed");
                Ok(Dialled::Placed)
            }
            Err(
                error @ (RestError::RateLimited { .. }
                | RestError::Server { .. }
                | RestError::Unreachable(_)),
            ) => {
                tracing::warn!(error = %error, "call not placed; the contact goes back");
                let now = self.clock.now_ms();
                let later = now + u64::try_from(self.settings.backoff.as_millis()).unwrap_or(0);
                self.queue.abandon(&attempt, now, later).await?;
                dials(error.label());
                Ok(Dialled::Returned)
            }
            Err(error @ RestError::Refused { .. }) => {
                tracing::warn!(error = %error, "twilio refused the call");
                let policy = def.spec.retry_policy();
                self.queue
                    .resolve(&attempt, Outcome::Error, &policy, self.clock.now_ms())
                    .await?;
                metrics::counter!(Metric::DialerOutcomes.name(), "outcome" => Outcome::Error.as_str())
                    .increment(1);
                dials(error.label());
                Ok(Dialled::Refused)
            }
            Err(error @ RestError::Unknown(_)) => {
                tracing::warn!(error = %error, attempt = %attempt, "twilio's answer was lost; the reconciler will find out");
                dials(error.label());
                Ok(Dialled::Unknown)
            }
        }
    }

    /// The `Calls.json` request of an attempt: its `Url`, status and AMD callbacks carry
    /// the attempt id.
    fn create_call(&self, attempt: &AttemptId, to: &str, def: &Campaign) -> CreateCall {
        let s = &self.settings;
        let url = format!("{}/twilio/voice?attempt={attempt}", s.ingress_url);
        let mut create = CreateCall::new(to, def.spec.caller_id.clone(), CallTarget::Url(url));
        create.method = Some("POST".into());
        create.status_callback = Some(format!(
            "{}/twilio/dial/status?attempt={attempt}",
            s.dialer_url
        ));
        create.status_callback_method = Some("POST".into());
        create.status_callback_event = STATUS_CALLBACK_EVENTS.map(String::from).to_vec();
        create.timeout_secs = Some(s.ring_secs);
        if def.spec.machine_detection {
            create.machine_detection = Some(MachineDetection::DetectMessageEnd);
            create.async_amd = true;
            create.async_amd_status_callback = Some(format!(
                "{}/twilio/dial/amd?attempt={attempt}",
                s.dialer_url
            ));
            create.async_amd_status_callback_method = Some("POST".into());
        }
        create
    }

    /// Twilio created the call: its sid goes with the attempt and the `dial` event is logged.
    async fn placed(
        &self,
        lease: &Lease,
        attempt: &AttemptId,
        def: &Campaign,
        call_sid: &str,
    ) -> Result<(), RedisError> {
        self.queue.set_call_sid(attempt, call_sid).await?;
        let dial = Dial {
            attempt: attempt.to_string(),
            campaign: lease.campaign.to_string(),
            contact: lease.contact.to_string(),
            to: lease.payload.phone.clone(),
            from: def.spec.caller_id.clone(),
            attempt_number: lease.attempts + 1,
        };
        self.publish(&lease.tenant, call_sid, Body::Dial(dial))
            .await;
        tracing::info!(call_sid, attempt = %attempt, "call placed");
        Ok(())
    }

    /// Publishes one of a call's dial events (once per call and kind: a repeat is stored
    /// once). A failure is logged: the queue, not the log, is the dialer's truth.
    pub async fn publish(&self, tenant: &TenantId, call_sid: &str, body: Body) {
        let Ok(sid) = CallSid::parse(call_sid) else {
            tracing::warn!(
                call_sid,
                "twilio gave a call sid of an unknown shape; no event"
            );
            return;
        };
        let event = Envelope::once(tenant.clone(), sid, 0, body);
        let stored = match self.outbox.send(&event).await {
            Ok(stored) => stored.wait().await,
            Err(error) => Err(error),
        };
        if let Err(error) = stored {
            tracing::error!(kind = event.kind().as_str(), error = %error, "dial event not stored");
        }
    }
}
