//! What the ingress does to the outside world besides Twilio: Redis (idempotency, rate
//! limits, sessions, barge-in tokens) and NATS (publishing events, subscribing to one call's
//! bot audio and speech events), behind one small trait.
//!
//! Consumes events and call identities; produces Redis writes (the admission record, the
//! live-socket claim, …), JetStream publishes and a stream of the call's incoming events. [`Live`] is the production implementation on the
//! runtime's handles; `testing::MemoryBackend` (cargo feature `testing`) stands in for
//! router and socket tests. State: connections only.

use std::future::Future;
use std::pin::Pin;
use std::time::{SystemTime, UNIX_EPOCH};

use async_nats::jetstream::consumer::{DeliverPolicy, pull};
use async_nats::jetstream::stream::DirectGetErrorKind;
use futures::{FutureExt as _, Stream, StreamExt as _, future::BoxFuture};
use sb_runtime::redis::session::Parties;
use sb_runtime::session_log::{RebuildError, SessionLog};
use sb_runtime::{
    Publisher, Runtime, Tenant,
    metrics::Metric,
    publisher::PublishError,
    redis::{
        Redis, RedisError,
        campaigns::AttemptId,
        handoff::{Handoff, Reconnect},
        idempotency::{AdmissionRecord, IDEMPOTENCY_TTL},
    },
};
use sb_schemas::{CallSid, Envelope, Kind, TenantId, decode, subject};

/// Why a backend operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Publish(#[from] PublishError),
    #[error(transparent)]
    Rebuild(#[from] RebuildError),
    #[error("subscribe to {subject} failed: {reason}")]
    Subscribe { subject: String, reason: String },
    #[error("cannot read the call's audio back: {0}")]
    Fetch(String),
    #[error("twilio refused the redirect: {0}")]
    Redirect(String),
    /// A stand-in was told to fail (tests).
    #[error("injected failure: {0}")]
    Injected(&'static str),
}

impl BackendError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Redis(e) => e.kind(),
            Self::Publish(e) => e.kind(),
            Self::Subscribe { .. } => "subscribe",
            Self::Fetch(_) => "fetch",
            Self::Redirect(_) => "redirect",
            Self::Rebuild(_) => "session_rebuild",
            Self::Injected(kind) => kind,
        }
    }
}

/// The verdict on an incoming-call webhook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// First sight of the call, within the tenant's rate limit: publish and connect.
    Admitted,
    /// First sight of the call, over the tenant's rate limit: decline politely.
    RateLimited,
    /// A retry of a webhook already answered; `admitted` is what the first answer was.
    Duplicate { admitted: bool },
}

/// An outbound call's dial attempt as the in-memory backend keeps it (the dialer writes it
/// to Redis in production).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutboundCall {
    pub tenant: TenantId,
    /// The contact's number (the call's `To`).
    pub to: String,
    /// The campaign's caller id (the call's `From`).
    pub from: String,
}

/// What an outbound webhook's attempt says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outbound {
    /// Open and this call's: run the call for this tenant.
    Call(TenantId),
    /// Unknown, closed, or claimed by another call.
    Unknown,
    /// Open, but the webhook's numbers are not the attempt's (nothing was claimed).
    Mismatch,
}

/// The last of a call's caller audio, `played`, `bargein` and `transcript` events as
/// stored: where a call whose socket died stood, and whether a held preflight turn was
/// confirmed while the link was down.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LastHeard {
    pub audio: Option<Envelope>,
    pub played: Option<Envelope>,
    pub bargein: Option<Envelope>,
    pub transcript: Option<Envelope>,
}

/// The side effects of the ingress. Cheap to clone.
pub trait Backend: Clone + Send + Sync + 'static {
    /// The server ack of a pipelined publish.
    type Ack: Future<Output = Result<(), BackendError>> + Send + 'static;
    /// One call's incoming events: bot audio (`audio.out`), `speech`, `partial`,
    /// `preflight`, `transcript`.
    type Events: Stream<Item = Envelope> + Send + Unpin + 'static;

    /// Claims `idem:{sid}` with the answer as the call's admission record and counts the
    /// call against the tenant's rate limit.
    fn admit(
        &self,
        sid: &CallSid,
        tenant: &Tenant,
        now: SystemTime,
    ) -> impl Future<Output = Result<Admission, BackendError>> + Send;

    /// Claims the call's one `end` event (`idem:{sid}:end`): `true` for the first caller.
    fn claim_end(&self, sid: &CallSid) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Whether the call's `end` was claimed (`idem:{sid}:end` exists): the call is over.
    fn ended(&self, sid: &CallSid) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// The call's admission record (`idem:{sid}`); `None` when no webhook of it was answered.
    fn admission(
        &self,
        sid: &CallSid,
    ) -> impl Future<Output = Result<Option<AdmissionRecord>, BackendError>> + Send;

    /// Claims the call's live socket (`live:{sid}`) for `owner`: `false` when another
    /// socket holds it.
    fn live_claim(
        &self,
        sid: &CallSid,
        owner: &str,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Refreshes `owner`'s live-socket claim: `false` when another socket holds it.
    fn live_refresh(
        &self,
        sid: &CallSid,
        owner: &str,
    ) -> impl Future<Output = Result<bool, BackendError>> + Send;

    /// Releases `owner`'s live-socket claim (someone else's is left alone).
    fn live_release(
        &self,
        sid: &CallSid,
        owner: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The dial attempt of an outbound call's webhook: when it is open, not another
    /// call's, and `numbers` (the call's `To`, `From`) are its own, records the call sid
    /// with it and starts the session with the campaign's overrides.
    fn outbound(
        &self,
        sid: &CallSid,
        attempt: &AttemptId,
        numbers: (&str, &str),
    ) -> impl Future<Output = Result<Outbound, BackendError>> + Send;

    /// Creates the call's session, with its numbers and its tenants revision.
    fn session_start(
        &self,
        sid: &CallSid,
        tenant: &TenantId,
        parties: &Parties,
        config_revision: u64,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Bumps the barge-in token past `turn`; returns the token.
    fn interrupt(
        &self,
        sid: &CallSid,
        turn: u32,
    ) -> impl Future<Output = Result<u64, BackendError>> + Send;

    /// Marks the bot's `turn` paused for the caller's voice (`None`: not paused), so the
    /// stt does not make a turn of backchannel said over it.
    fn set_paused(
        &self,
        sid: &CallSid,
        turn: Option<u32>,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Starts the call's next turn (a keypad entry, a silence): its number.
    fn next_turn(
        &self,
        sid: &CallSid,
        after: u32,
    ) -> impl Future<Output = Result<u32, BackendError>> + Send;

    /// Publishes and waits until the event is stored.
    fn publish(&self, event: &Envelope) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Hands the event to the connection; the returned ack resolves once it is stored.
    fn send(
        &self,
        event: &Envelope,
    ) -> impl Future<Output = Result<Self::Ack, BackendError>> + Send;

    /// Publishes caller audio without asking for a store ack (see
    /// [`sb_runtime::Publisher::send_unconfirmed`]).
    fn send_unconfirmed(
        &self,
        event: &Envelope,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Publishes the call's STT lease (the `start` event on `assign.stt.…`) and waits.
    fn publish_lease(
        &self,
        start: &Envelope,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Records a live call's handoff to another replica (before the redirect).
    fn handoff_begin(
        &self,
        sid: &CallSid,
        handoff: &Handoff,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Drops a handoff whose redirect failed.
    fn handoff_cancel(
        &self,
        sid: &CallSid,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The old stream stopped: the final frame number and playback position.
    fn handoff_stopped(
        &self,
        sid: &CallSid,
        handoff: &Handoff,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// Takes a handoff with its token, and the live claim for `owner`.
    fn handoff_take(
        &self,
        sid: &CallSid,
        token: &str,
        owner: &str,
    ) -> impl Future<Output = Result<Option<Handoff>, BackendError>> + Send;

    /// A call's stream ended without the call ending (Twilio's `<Connect action>`): a
    /// `lost` handoff that connects it anew, or why not.
    fn handoff_reconnect(
        &self,
        sid: &CallSid,
    ) -> impl Future<Output = Result<Reconnect, BackendError>> + Send;

    /// The call's last caller audio, `played` and `bargein` events, as stored.
    fn last_heard(
        &self,
        tenant: &TenantId,
        sid: &CallSid,
    ) -> impl Future<Output = Result<LastHeard, BackendError>> + Send;

    /// The handoff as stored now.
    fn handoff_read(
        &self,
        sid: &CallSid,
    ) -> impl Future<Output = Result<Option<Handoff>, BackendError>> + Send;

    /// Asks Twilio to run `twiml` on the live call (`POST …/Calls/{sid}.json`, `Twiml=`).
    fn redirect(
        &self,
        account_sid: &str,
        sid: &CallSid,
        twiml: &str,
    ) -> impl Future<Output = Result<(), BackendError>> + Send;

    /// The call's bot audio stored since `since_us` (µs since the epoch), read back from
    /// the `AUDIO` stream: a gap's missing chunk, or a migrated call's unplayed audio.
    fn fetch_bot_audio(
        &self,
        tenant: &TenantId,
        sid: &CallSid,
        since_us: u64,
    ) -> impl Future<Output = Result<Vec<Envelope>, BackendError>> + Send;

    /// Subscribes to the call's bot audio, `speech`, `partial`, `preflight` and
    /// `transcript` events.
    fn subscribe_call(
        &self,
        tenant: &TenantId,
        sid: &CallSid,
    ) -> impl Future<Output = Result<Self::Events, BackendError>> + Send;
}

/// The production backend: the runtime's Redis patterns, publisher and NATS client, plus
/// the one-round-trip admission pipeline on a connection of its own.
#[derive(Clone)]
pub struct Live {
    js: async_nats::jetstream::Context,
    twilio: crate::migrate::TwilioCalls,
    redis: Redis,
    log: SessionLog,
    admission: redis::aio::ConnectionManager,
    publisher: Publisher,
    nats: async_nats::Client,
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live").finish_non_exhaustive()
    }
}

impl Live {
    /// Uses the runtime's handles; opens the admission connection (same Redis, same
    /// timeouts as the runtime's).
    pub async fn connect(runtime: &Runtime) -> Result<Self, BackendError> {
        let client =
            redis::Client::open(runtime.config.redis_url.expose()).map_err(RedisError::Connect)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(std::time::Duration::from_secs(2)))
            .set_response_timeout(Some(std::time::Duration::from_millis(500)))
            .set_number_of_retries(6);
        let admission = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(RedisError::Connect)?;
        Ok(Self {
            js: runtime.js.clone(),
            twilio: crate::migrate::TwilioCalls::default(),
            redis: runtime.redis.clone(),
            log: runtime.session_log(),
            admission,
            publisher: runtime.publisher.clone(),
            nats: runtime.nats.clone(),
        })
    }
}

impl Live {
    /// Moves live calls through this Twilio client on drain (none by default: a redirect
    /// fails and the call stays).
    pub fn with_twilio(mut self, twilio: crate::migrate::TwilioCalls) -> Self {
        self.twilio = twilio;
        self
    }
}

fn admission_failed(source: redis::RedisError) -> BackendError {
    metrics::counter!(Metric::RedisErrors.name(), "op" => "ingress_admit").increment(1);
    BackendError::Redis(RedisError::Command {
        op: "ingress_admit",
        source,
    })
}

/// A call's merged core subscriptions, decoded.
pub type LiveEvents = Pin<Box<dyn Stream<Item = Envelope> + Send>>;

impl Backend for Live {
    type Ack = BoxFuture<'static, Result<(), BackendError>>;
    type Events = LiveEvents;

    /// One round trip: `SET idem:{sid} admitted:{tenant} NX EX … GET` (the claim and
    /// admission record, returning an earlier answer), `INCR rl:{tenant}:{window}` and `EXPIRE … NX` (the window counter, as
    /// `Redis::rate_limit` keeps it). The rare cases take a second trip: a retry gives its
    /// count back (`DECR`), and a declined call records `0` as its answer, so its retry is
    /// declined too (and its socket and status callback find no admitted tenant).
    async fn admit(
        &self,
        sid: &CallSid,
        tenant: &Tenant,
        now: SystemTime,
    ) -> Result<Admission, BackendError> {
        let window_secs = tenant.tier.rate_window_secs.max(1);
        let now_secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let keys = self.redis.keys();
        let claim = keys.idempotency(sid, None);
        let window = keys.rate_limit(&tenant.id, now_secs / window_secs);
        let mut conn = self.admission.clone();
        let (prior, count): (Option<String>, u64) = redis::pipe()
            .cmd("SET")
            .arg(&claim)
            .arg(AdmissionRecord::Admitted(tenant.id.clone()).encode())
            .arg("NX")
            .arg("EX")
            .arg(IDEMPOTENCY_TTL.as_secs())
            .arg("GET")
            .incr(&window, 1)
            .cmd("EXPIRE")
            .arg(&window)
            .arg(window_secs + 1)
            .arg("NX")
            .ignore()
            .query_async(&mut conn)
            .await
            .map_err(admission_failed)?;
        if let Some(prior) = prior {
            redis::cmd("DECR")
                .arg(&window)
                .query_async::<i64>(&mut conn)
                .await
                .map_err(admission_failed)?;
            // `claim_once` stores "1": a key it claimed reads as admitted.
            return Ok(Admission::Duplicate {
                admitted: AdmissionRecord::decode(&prior).connected(),
            });
        }
        if count <= u64::from(tenant.tier.webhook_rate_limit) {
            return Ok(Admission::Admitted);
        }
        redis::cmd("SET")
            .arg(&claim)
            .arg(AdmissionRecord::Declined.encode())
            .arg("XX")
            .arg("KEEPTTL")
            .query_async::<()>(&mut conn)
            .await
            .map_err(admission_failed)?;
        Ok(Admission::RateLimited)
    }

    async fn claim_end(&self, sid: &CallSid) -> Result<bool, BackendError> {
        Ok(self
            .redis
            .claim_once(sid, Some("end"), IDEMPOTENCY_TTL)
            .await?)
    }

    async fn ended(&self, sid: &CallSid) -> Result<bool, BackendError> {
        Ok(self.redis.claimed(sid, Some("end")).await?)
    }

    async fn admission(&self, sid: &CallSid) -> Result<Option<AdmissionRecord>, BackendError> {
        Ok(self.redis.admission(sid).await?)
    }

    async fn live_claim(&self, sid: &CallSid, owner: &str) -> Result<bool, BackendError> {
        Ok(self.redis.live_claim(sid, owner).await?)
    }

    async fn live_refresh(&self, sid: &CallSid, owner: &str) -> Result<bool, BackendError> {
        Ok(self.redis.live_refresh(sid, owner).await?)
    }

    async fn live_release(&self, sid: &CallSid, owner: &str) -> Result<(), BackendError> {
        Ok(self.redis.live_release(sid, owner).await?)
    }

    async fn outbound(
        &self,
        sid: &CallSid,
        attempt: &AttemptId,
        (to, from): (&str, &str),
    ) -> Result<Outbound, BackendError> {
        let queue = self.redis.campaign_queue();
        let Some(record) = queue.attempt(attempt).await? else {
            return Ok(Outbound::Unknown);
        };
        let foreign = record.call_sid().is_some_and(|known| known != sid.as_str());
        let Some(tenant) = record.tenant().filter(|_| record.is_open() && !foreign) else {
            return Ok(Outbound::Unknown);
        };
        if record.get("to") != Some(to) || record.get("from") != Some(from) {
            return Ok(Outbound::Mismatch);
        }
        queue.set_call_sid(attempt, sid.as_str()).await?;
        self.redis
            .session_outbound(sid, &tenant, &record.outbound_session())
            .await?;
        Ok(Outbound::Call(tenant))
    }

    async fn session_start(
        &self,
        sid: &CallSid,
        tenant: &TenantId,
        parties: &Parties,
        config_revision: u64,
    ) -> Result<(), BackendError> {
        Ok(self
            .redis
            .session_start(sid, tenant, parties, config_revision)
            .await?)
    }

    /// A lost session is rebuilt from the call's events first, so the token is raised
    /// past every turn the call had, not from zero.
    async fn interrupt(&self, sid: &CallSid, turn: u32) -> Result<u64, BackendError> {
        if let Some(token) = self.redis.session_interrupt(sid, turn).await? {
            return Ok(token);
        }
        self.log.restore(sid).await?;
        let token = self.redis.session_interrupt(sid, turn).await?;
        Ok(token.ok_or(RebuildError::Missing)?)
    }

    async fn set_paused(&self, sid: &CallSid, turn: Option<u32>) -> Result<(), BackendError> {
        Ok(self.redis.session_set_paused(sid, turn).await?)
    }

    /// As the stt numbers turns: a lost session is rebuilt from the call's events first.
    async fn next_turn(&self, sid: &CallSid, after: u32) -> Result<u32, BackendError> {
        if let Some(turn) = self.redis.session_next_turn(sid, after).await? {
            return Ok(turn);
        }
        self.log.restore(sid).await?;
        let turn = self.redis.session_next_turn(sid, after).await?;
        Ok(turn.ok_or(RebuildError::Missing)?)
    }

    async fn publish(&self, event: &Envelope) -> Result<(), BackendError> {
        self.publisher.publish(event).await?;
        Ok(())
    }

    async fn send(&self, event: &Envelope) -> Result<Self::Ack, BackendError> {
        let pending = self.publisher.send(event).await?;
        Ok(async move {
            pending.stored().await?;
            Ok(())
        }
        .boxed())
    }

    async fn send_unconfirmed(&self, event: &Envelope) -> Result<(), BackendError> {
        Ok(self.publisher.send_unconfirmed(event).await?)
    }

    async fn publish_lease(&self, start: &Envelope) -> Result<(), BackendError> {
        self.publisher.publish_lease(start).await?;
        Ok(())
    }

    async fn handoff_begin(&self, sid: &CallSid, handoff: &Handoff) -> Result<(), BackendError> {
        Ok(self.redis.handoff_begin(sid, handoff).await?)
    }

    async fn handoff_cancel(&self, sid: &CallSid) -> Result<(), BackendError> {
        Ok(self.redis.handoff_cancel(sid).await?)
    }

    async fn handoff_stopped(&self, sid: &CallSid, handoff: &Handoff) -> Result<(), BackendError> {
        Ok(self.redis.handoff_stopped(sid, handoff).await?)
    }

    async fn handoff_take(
        &self,
        sid: &CallSid,
        token: &str,
        owner: &str,
    ) -> Result<Option<Handoff>, BackendError> {
        Ok(self.redis.handoff_take(sid, token, owner).await?)
    }

    async fn handoff_reconnect(&self, sid: &CallSid) -> Result<Reconnect, BackendError> {
        Ok(self.redis.handoff_reconnect(sid).await?)
    }

    /// Four "last message on a subject" direct gets.
    async fn last_heard(
        &self,
        tenant: &TenantId,
        sid: &CallSid,
    ) -> Result<LastHeard, BackendError> {
        let fail = |e: &dyn std::fmt::Display| BackendError::Fetch(e.to_string());
        let last = |stream: &'static str, on: String| async move {
            let stream = self
                .js
                .get_stream_no_info(stream)
                .await
                .map_err(|e| fail(&e))?;
            match stream.direct_get_last_for_subject(on).await {
                Ok(message) => Ok(decode(&message.payload).ok()),
                Err(e) if e.kind() == DirectGetErrorKind::NotFound => Ok(None),
                Err(e) => Err(fail(&e)),
            }
        };
        let calls = subject::CALLS_STREAM;
        Ok(LastHeard {
            audio: last(subject::AUDIO_STREAM, subject::audio_in(tenant, sid)).await?,
            played: last(calls, subject::event(tenant, sid, Kind::Played)).await?,
            bargein: last(calls, subject::event(tenant, sid, Kind::BargeIn)).await?,
            transcript: last(calls, subject::event(tenant, sid, Kind::Transcript)).await?,
        })
    }

    async fn handoff_read(&self, sid: &CallSid) -> Result<Option<Handoff>, BackendError> {
        Ok(self.redis.handoff_read(sid).await?)
    }

    async fn redirect(
        &self,
        account_sid: &str,
        sid: &CallSid,
        twiml: &str,
    ) -> Result<(), BackendError> {
        self.twilio.redirect(account_sid, sid, twiml).await
    }

    /// An ordered consumer on the call's `audio.out` subject from `since_us`, read to the
    /// end and deleted.
    async fn fetch_bot_audio(
        &self,
        tenant: &TenantId,
        sid: &CallSid,
        since_us: u64,
    ) -> Result<Vec<Envelope>, BackendError> {
        let fail = |e: &dyn std::fmt::Display| BackendError::Fetch(e.to_string());
        let stream = self
            .js
            .get_stream_no_info(subject::AUDIO_STREAM)
            .await
            .map_err(|e| fail(&e))?;
        let start_time =
            async_nats::datetime::from_nanos(i128::from(since_us) * 1000).map_err(|e| fail(&e))?;
        let consumer = stream
            .create_consumer(pull::OrderedConfig {
                filter_subject: subject::audio_out(tenant, sid),
                deliver_policy: DeliverPolicy::ByStartTime { start_time },
                ..Default::default()
            })
            .await
            .map_err(|e| fail(&e))?;
        let mut pending = consumer.cached_info().num_pending;
        let mut events = Vec::new();
        if pending == 0 {
            return Ok(events);
        }
        let mut messages = consumer.messages().await.map_err(|e| fail(&e))?;
        while pending > 0 {
            let message = match messages.next().await {
                Some(Ok(message)) => message,
                Some(Err(e)) => return Err(fail(&e)),
                None => break,
            };
            pending = message.info().map(|i| i.pending).unwrap_or(0);
            if let Ok(event) = decode(&message.payload) {
                events.push(event);
            }
        }
        Ok(events)
    }

    async fn subscribe_call(
        &self,
        tenant: &TenantId,
        sid: &CallSid,
    ) -> Result<Self::Events, BackendError> {
        let subjects = [
            subject::audio_out(tenant, sid),
            subject::event(tenant, sid, sb_schemas::Kind::Speech),
            subject::event(tenant, sid, sb_schemas::Kind::Partial),
            subject::event(tenant, sid, sb_schemas::Kind::Preflight),
            subject::event(tenant, sid, sb_schemas::Kind::Transcript),
        ];
        let mut streams = Vec::with_capacity(subjects.len());
        for subject in subjects {
            let subscriber = self.nats.subscribe(subject.clone()).await.map_err(|e| {
                BackendError::Subscribe {
                    subject,
                    reason: e.to_string(),
                }
            })?;
            streams.push(subscriber);
        }
        let merged = futures::stream::select_all(streams).filter_map(|message| async move {
            match decode(&message.payload) {
                Ok(event) => Some(event),
                Err(error) => {
                    metrics::counter!(Metric::IngressRejectedMessages.name(), "reason" => "bad_event")
                        .increment(1);
                    tracing::warn!(subject = %message.subject, error = %error, "undecodable event dropped");
                    None
                }
            }
        });
        Ok(Box::pin(merged))
    }
}
