//! The webhooks worker, the post-call worker: tells each tenant's own server what happened
//! to its calls (ARCHITECTURE §2c) and keeps the call index (§9).
//!
//! Consumes the durable consumer `webhooks` on `CALLS` (`start`, `end`, `dial_result`);
//! produces, on every call's `end`, its summary in the call index
//! (`sb_replay::index`, for every tenant), and signed `POST`s to the tenant's webhook URL: `call.started`, `call.ended` (the
//! post-call report, [`report`], built from the call's log read back from JetStream) and
//! `contact.completed` ([`deliver`]). At least once: the delivery id is the triggering
//! event's id, the same on every retry. A failed attempt is retried with exponential
//! backoff (a JetStream NAK with a delay) until the event is older than the retry window,
//! then dead-lettered (`dlq.CALLS.webhooks`), so it is never lost silently. The worker is
//! off the call path: a slow or dead endpoint delays only its own tenant's webhooks.
//! State: none of its own; the log is the record.
//!
//! Code map: [`report`] (the bodies), [`deliver`] (the requests), [`config`].

pub mod config;
pub mod deliver;
pub mod report;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use sb_replay::index::IndexError;
use sb_replay::summary::CallSummary;
use sb_replay::{CallLog, ReplayError};
use sb_runtime::http::ReadyNeeds;
use sb_runtime::metrics::Metric;
use sb_runtime::{Emitter, LiveTenants, Runtime, Stage, StageError, StageMain, Tenant, signature};
use sb_schemas::{Body, CallSid, Envelope, now_micros};

pub use config::WebhooksConfig;

use crate::deliver::{Deliverer, Failure};

/// Where a call's log comes from (JetStream in production, a test's own otherwise).
pub trait CallLogs: Send + Sync + 'static {
    /// The call's control events, and its bot audio too with `audio` (the report's
    /// latency needs when each answer's first chunk was stored).
    fn load<'a>(
        &'a self,
        sid: &'a CallSid,
        audio: bool,
    ) -> BoxFuture<'a, Result<CallLog, ReplayError>>;

    /// Stores an ended call's summary in the call index.
    fn index<'a>(&'a self, summary: &'a CallSummary) -> BoxFuture<'a, Result<(), IndexError>>;
}

/// The call's events read back from JetStream.
pub struct JetStreamLogs(pub async_nats::jetstream::Context);

impl CallLogs for JetStreamLogs {
    fn load<'a>(
        &'a self,
        sid: &'a CallSid,
        audio: bool,
    ) -> BoxFuture<'a, Result<CallLog, ReplayError>> {
        Box::pin(async move {
            match audio {
                true => CallLog::load_turns(&self.0, sid).await,
                false => CallLog::load_events(&self.0, sid).await,
            }
        })
    }

    fn index<'a>(&'a self, summary: &'a CallSummary) -> BoxFuture<'a, Result<(), IndexError>> {
        Box::pin(async move { sb_replay::index::record(&self.0, summary).await.map(drop) })
    }
}

/// The webhooks stage.
pub struct Webhooks {
    tenants: Arc<LiveTenants>,
    logs: Arc<dyn CallLogs>,
    deliverer: Deliverer,
    config: WebhooksConfig,
}

impl Webhooks {
    /// The worker with its tenants' secrets read through `env`.
    pub fn new(
        tenants: Arc<LiveTenants>,
        logs: Arc<dyn CallLogs>,
        config: WebhooksConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, String> {
        let secrets = signature::tenant_secrets(&tenants.tenants(), |t| t.webhooks.is_some(), env)?;
        let deliverer = Deliverer::new(
            secrets,
            Duration::from_millis(config.webhook_timeout_ms),
            config.webhook_per_tenant,
        )?;
        Ok(Self {
            tenants,
            logs,
            deliverer,
            config,
        })
    }

    /// The body to send for `input`, or `None` (skipped, with the reason counted); `ended`
    /// is the log an `end` was indexed from.
    async fn body(
        &self,
        input: &Envelope,
        ended: Option<CallLog>,
        out: &Emitter,
    ) -> Result<Option<(&'static str, serde_json::Value)>, StageError> {
        Ok(match &input.body {
            Body::Start(_) => {
                let log = self.log(&input.call_sid, false).await?;
                Some(("call.started", report::call_started(input, &log)))
            }
            Body::End(end) => {
                let log = match ended {
                    Some(log) => log,
                    None => self.log(&input.call_sid, true).await?,
                };
                Some(("call.ended", report::call_ended(input, end, &log)))
            }
            Body::DialResult(result) => {
                let body = report::contact_completed(input, result);
                if body.is_none() {
                    out.skip("contact_retried");
                }
                body.map(|b| ("contact.completed", b))
            }
            other => {
                return Err(StageError::reject(
                    "unexpected_kind",
                    format!(
                        "the webhooks worker does not handle {}",
                        other.kind().as_str()
                    ),
                ));
            }
        })
    }

    /// Writes the ended call's summary to the call index; returns the log it read.
    async fn index(&self, sid: &CallSid) -> Result<CallLog, StageError> {
        let log = self.log(sid, true).await?;
        if let Some(summary) = CallSummary::of(&log) {
            self.logs
                .index(&summary)
                .await
                .map_err(|e| StageError::retry("call_index", e))?;
        }
        Ok(log)
    }

    async fn log(&self, sid: &CallSid, audio: bool) -> Result<CallLog, StageError> {
        self.logs
            .load(sid, audio)
            .await
            .map_err(|e| StageError::retry("log_read", e))
    }

    /// How long to wait before attempt `delivered + 1`: doubling from the base, capped.
    fn backoff(&self, delivered: u64) -> Duration {
        let base = self.config.webhook_retry_base_ms.max(1);
        let shift = delivered.saturating_sub(1).min(20) as u32;
        Duration::from_millis(
            base.saturating_mul(1u64 << shift)
                .min(self.config.webhook_retry_max_ms),
        )
    }

    async fn send(
        &self,
        tenant: &Tenant,
        input: &Envelope,
        event: &'static str,
        body: serde_json::Value,
        out: &Emitter,
    ) -> Result<(), StageError> {
        let Some(hooks) = &tenant.webhooks else {
            return Ok(());
        };
        let id = input.id.to_string();
        let bytes = serde_json::to_vec(&body).expect("a webhook body serialises");
        match self
            .deliverer
            .deliver(tenant, hooks, event, &id, bytes)
            .await
        {
            Ok(status) => {
                tracing::info!(event, status, delivery = %id, "webhook delivered");
                Ok(())
            }
            // A busy tenant backs off like a failing one: every NAK counts as a delivery,
            // so a fixed short delay would use up `max_deliver` long before the window.
            Err(Failure::Busy) => Err(StageError::retry_after(
                "webhook_busy",
                Failure::Busy,
                self.backoff(out.delivered()),
            )),
            Err(failure) => {
                let delay = self.backoff(out.delivered());
                tracing::warn!(event, %failure, delivery = %id, retry_ms = delay.as_millis() as u64, "webhook failed");
                Err(StageError::retry_after("webhook", failure, delay))
            }
        }
    }
}

impl Stage for Webhooks {
    const CONSUMER: &'static str = "webhooks";
    /// Needs NATS only: the worker keeps no state in Redis.
    const READY_NEEDS: ReadyNeeds = ReadyNeeds::NATS_ONLY;

    async fn handle(&self, input: Envelope, out: &mut Emitter) -> Result<(), StageError> {
        let tenant = self.tenants.for_input(&input.tenant)?;
        // Every ended call goes into the index, whether its tenant takes webhooks or not.
        let ended = match &input.body {
            Body::End(_) => Some(self.index(&input.call_sid).await?),
            _ => None,
        };
        let Some(hooks) = &tenant.webhooks else {
            out.skip("no_webhooks");
            return Ok(());
        };
        let age = Duration::from_micros(now_micros().saturating_sub(input.at));
        if age > Duration::from_secs(self.config.webhook_retry_window_secs) {
            metrics::counter!(Metric::WebhookDeliveries.name(), "event" => input.kind().as_str(), "outcome" => "expired")
                .increment(1);
            return Err(StageError::reject(
                "webhook_expired",
                format!("undelivered for {} s: past the retry window", age.as_secs()),
            ));
        }
        let Some((event, body)) = self.body(&input, ended, out).await? else {
            return Ok(());
        };
        if !hooks.wants(event) {
            out.skip("not_subscribed");
            return Ok(());
        }
        self.send(&tenant, &input, event, body, out).await
    }
}

impl StageMain for Webhooks {
    type Config = WebhooksConfig;
    const ABOUT: &'static str = "Switchboard webhooks: delivers each tenant's call webhooks (call.started, call.ended, contact.completed).";

    fn check(config: &WebhooksConfig) -> Result<(), String> {
        config.validate()
    }

    async fn build(runtime: &Runtime, config: WebhooksConfig) -> Result<Self, String> {
        Webhooks::new(
            runtime.tenants.clone(),
            Arc::new(JetStreamLogs(runtime.js.clone())),
            config,
            |var| std::env::var(var).ok(),
        )
    }
}
