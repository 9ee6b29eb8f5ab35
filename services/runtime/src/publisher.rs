//! Publishing events to JetStream.
//!
//! Consumes [`Envelope`]s; produces messages on the subject their kind names (via
//! `sb_schemas::subject`). Control events carry `Nats-Msg-Id` = the event id, so a repeated
//! publish within the stream's duplicate window is stored once; audio events do not (per
//! frame dedup costs ~40 % throughput; their sequence numbers suffice), and caller audio may
//! go without a store ack ([`Publisher::send_unconfirmed`]). State: none beyond the JetStream
//! context.

use std::sync::Arc;

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use bytes::Bytes;
use sb_schemas::{Envelope, Kind, encode, subject};

use crate::metrics::Metric;

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

/// A published message whose server ack has not been awaited yet.
#[derive(Debug)]
pub struct PendingAck {
    subject: String,
    kind: Kind,
    ack: PublishAckFuture,
}

impl PendingAck {
    /// Waits until the stream has stored the message.
    pub async fn stored(self) -> Result<jetstream::publish::PublishAck, PublishError> {
        let Self { subject, kind, ack } = self;
        ack.await.map_err(|source| failed(subject, kind, source))
    }
}

#[derive(Clone)]
pub struct Publisher {
    js: jetstream::Context,
    /// The context's connection, for plain publishes.
    client: async_nats::Client,
    /// `switchboard_events_published_total{kind}` handles, resolved once (per event a
    /// labelled lookup would allocate and hash).
    published: Arc<[metrics::Counter; Kind::ALL.len()]>,
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
            js,
            published,
        }
    }

    pub fn jetstream(&self) -> &jetstream::Context {
        &self.js
    }

    /// Hands the event to the connection and returns its pending ack (pipelining).
    pub async fn send(&self, event: &Envelope) -> Result<PendingAck, PublishError> {
        let kind = event.kind();
        let subject = subject::for_envelope(event);
        let mut message = PublishMessage::build().payload(Bytes::from(encode(event)));
        if !kind.is_audio() {
            message = message.message_id(event.id.to_string());
        }
        let ack = match self.js.send_publish(subject.clone(), message).await {
            Ok(ack) => ack,
            Err(source) => return Err(failed(subject, kind, source)),
        };
        self.published[kind.index()].increment(1);
        Ok(PendingAck { subject, kind, ack })
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
        if let Err(source) = self.client.publish(subject.clone(), payload).await {
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
