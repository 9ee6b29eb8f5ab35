//! Publishing events to JetStream.
//!
//! Consumes [`Envelope`]s; produces messages on the subject their kind names (via
//! `sb_schemas::subject`). Control events carry `Nats-Msg-Id` = the event id, so a repeated
//! publish within the stream's duplicate window is stored once; audio events do not (per
//! frame dedup costs ~40 % throughput; their sequence numbers suffice), and caller audio may
//! go without a store ack ([`Publisher::send_unconfirmed`]). A publish that fails the way a
//! JetStream failover fails (no answer in time, no stream leader, the connection moving to
//! another node) is sent again for up to [`RETRY_FOR`], the same message with the same id:
//! a stage's outputs then survive the loss of a node without waiting out `ack_wait`.
//! Caller audio is never re-sent (no id to deduplicate it). A tenant with a shorter
//! retention (`[tenant.retention]`) has each message published with `Nats-TTL`, so the
//! stream drops it when the tenant's time is up. State: none beyond the JetStream context
//! and the live tenants.

use std::sync::Arc;
use std::time::Duration;

use async_nats::header::NATS_MESSAGE_TTL;
use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use bytes::Bytes;
use sb_schemas::{Envelope, Kind, encode, subject};

use crate::metrics::Metric;
use crate::tenants::LiveTenants;

#[derive(Debug, thiserror::Error)]
#[error("publish to {subject} failed: {source}")]
pub struct PublishError {
    pub subject: String,
    #[source]
    pub source: jetstream::context::PublishError,
}

impl PublishError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        use jetstream::context::PublishErrorKind as K;
        match self.source.kind() {
            K::StreamNotFound => "stream_not_found",
            K::TimedOut => "timed_out",
            K::BrokenPipe => "broken_pipe",
            K::MaxPayloadExceeded => "too_large",
            K::MaxAckPending => "max_ack_pending",
            _ => "other",
        }
    }
}

/// How long a failed publish is retried: longer than a JetStream leader election.
pub const RETRY_FOR: Duration = Duration::from_secs(10);

/// A published message whose server ack has not been awaited yet.
#[derive(Debug)]
pub struct PendingAck {
    subject: String,
    kind: Kind,
    ack: PublishAckFuture,
    /// What to send again on a transient failure (`None`: never re-sent).
    again: Option<Box<Again>>,
}

#[derive(Debug)]
struct Again {
    /// Shared with the publisher: one reference count per event, not a context clone.
    js: Arc<jetstream::Context>,
    payload: Bytes,
    id: Option<String>,
    ttl: Option<Duration>,
}

/// A message with its id and time to live, as every publish builds it.
fn message(payload: Bytes, id: Option<&String>, ttl: Option<Duration>) -> PublishMessage {
    let mut message = PublishMessage::build().payload(payload);
    if let Some(id) = id {
        message = message.message_id(id.clone());
    }
    if let Some(ttl) = ttl {
        message = message.header(NATS_MESSAGE_TTL, format!("{}s", ttl.as_secs()).as_str());
    }
    message
}

impl Again {
    async fn send(
        &self,
        subject: &str,
    ) -> Result<jetstream::publish::PublishAck, jetstream::context::PublishError> {
        let message = message(self.payload.clone(), self.id.as_ref(), self.ttl);
        self.js
            .send_publish(subject.to_owned(), message)
            .await?
            .await
    }
}

impl PendingAck {
    /// Waits until the stream has stored the message, sending it again while JetStream
    /// fails over (for up to [`RETRY_FOR`]).
    pub async fn stored(self) -> Result<jetstream::publish::PublishAck, PublishError> {
        let Self {
            subject,
            kind,
            ack,
            again,
        } = self;
        let mut result = ack.await;
        if let Some(again) = again {
            let deadline = tokio::time::Instant::now() + RETRY_FOR;
            let mut pause = Duration::from_millis(100);
            while let Err(error) = &result
                && transient(error)
                && tokio::time::Instant::now() + pause < deadline
            {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
                metrics::counter!(Metric::PublishRetries.name(), "kind" => kind.as_str())
                    .increment(1);
                result = again.send(&subject).await;
            }
        }
        result.map_err(|source| failed(subject, kind, source))
    }
}

/// The failures of a JetStream failover: worth sending the same message again.
fn transient(error: &jetstream::context::PublishError) -> bool {
    use jetstream::context::PublishErrorKind as K;
    matches!(
        error.kind(),
        K::TimedOut | K::StreamNotFound | K::BrokenPipe
    )
}

#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    /// The same context behind an `Arc`, for re-sends ([`PendingAck`] keeps it).
    resend: Arc<jetstream::Context>,
    /// The context's connection, for plain publishes.
    client: async_nats::Client,
    /// `switchboard_events_published_total{kind}` handles, resolved once (per event a
    /// labelled lookup would allocate and hash).
    published: Arc<[metrics::Counter; Kind::ALL.len()]>,
    /// Whose retention gives a message its `Nats-TTL` (`None`: never set).
    tenants: Option<Arc<LiveTenants>>,
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

impl Publisher {
    pub fn new(js: jetstream::Context) -> Self {
        let published = Arc::new(
            Kind::ALL
                .map(|k| metrics::counter!(Metric::EventsPublished.name(), "kind" => k.as_str())),
        );
        Self {
            client: js.client(),
            resend: Arc::new(js.clone()),
            js,
            published,
            tenants: None,
        }
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// The publisher giving each tenant's messages its retention as `Nats-TTL`.
    pub fn with_retention(mut self, tenants: Arc<LiveTenants>) -> Self {
        self.tenants = Some(tenants);
        self
    }

    /// The time to live of `event` (its tenant's retention), if shorter than the stream's.
    fn ttl(&self, event: &Envelope) -> Option<Duration> {
        let tenant = self.tenants.as_ref()?.by_id(&event.tenant)?;
        tenant.retention.ttl(event.kind())
    }

    /// Hands the event to the connection and returns its pending ack (pipelining).
    pub async fn send(&self, event: &Envelope) -> Result<PendingAck, PublishError> {
        let kind = event.kind();
        let subject = subject::for_envelope(event);
        let payload = Bytes::from(encode(event));
        let id = (!kind.is_audio()).then(|| event.id.to_string());
        let ttl = self.ttl(event);
        let ack = match self
            .js
            .send_publish(subject.clone(), message(payload.clone(), id.as_ref(), ttl))
            .await
        {
            Ok(ack) => ack,
            Err(source) => return Err(failed(subject, kind, source)),
        };
        self.published[kind.index()].increment(1);
        // Caller audio has no id to deduplicate a second copy; bot audio is deduplicated by
        // the ingress (sentence and chunk numbers), control events by JetStream.
        let again = (kind != Kind::Audio).then(|| {
            Box::new(Again {
                js: self.resend.clone(),
                payload,
                id,
                ttl,
            })
        });
        Ok(PendingAck {
            subject,
            kind,
            ack,
            again,
        })
    }

    /// Publishes without asking for a store ack: a plain publish on the event's subject,
    /// which its stream captures and stores in order with the acked publishes around it on
    /// this connection. For caller audio between the ingress' sampled acks only: a control
    /// event always waits for its ack (and carries its `Nats-Msg-Id`).
    pub async fn send_unconfirmed(&self, event: &Envelope) -> Result<(), PublishError> {
        let kind = event.kind();
        debug_assert!(kind.is_audio(), "{kind:?} published without an ack");
        let subject = subject::for_envelope(event);
        let payload = Bytes::from(encode(event));
        let sent = match self.ttl(event) {
            None => self.client.publish(subject.clone(), payload).await,
            Some(ttl) => {
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(NATS_MESSAGE_TTL, format!("{}s", ttl.as_secs()).as_str());
                let subject = subject.clone();
                self.client
                    .publish_with_headers(subject, headers, payload)
                    .await
            }
        };
        if let Err(source) = sent {
            let source = jetstream::context::PublishError::with_source(
                jetstream::context::PublishErrorKind::BrokenPipe,
                source,
            );
            return Err(failed(subject, kind, source));
        }
        self.published[kind.index()].increment(1);
        Ok(())
    }

    /// Publishes the call's STT lease (ARCHITECTURE §5): the `start` event itself, on
    /// `assign.stt.{tenant}.{sid}` (stream `STT_ASSIGN`), stored once per call.
    pub async fn publish_lease(
        &self,
        start: &Envelope,
    ) -> Result<jetstream::publish::PublishAck, PublishError> {
        let subject = subject::stt_assign(&start.tenant, &start.call_sid);
        let message = PublishMessage::build()
            .payload(Bytes::from(encode(start)))
            .message_id(format!("lease:{}", start.call_sid));
        match self.js.send_publish(subject.clone(), message).await {
            Ok(ack) => ack
                .await
                .map_err(|source| failed(subject, start.kind(), source)),
            Err(source) => Err(failed(subject, start.kind(), source)),
        }
    }

    /// Publishes and waits until the stream has stored the event.
    pub async fn publish(
        &self,
        event: &Envelope,
    ) -> Result<jetstream::publish::PublishAck, PublishError> {
        self.send(event).await?.stored().await
    }
}

fn failed(subject: String, kind: Kind, source: jetstream::context::PublishError) -> PublishError {
    let error = PublishError { subject, source };
    metrics::counter!(Metric::PublishFailures.name(), "kind" => kind.as_str(), "reason" => error.kind())
        .increment(1);
    error
}
