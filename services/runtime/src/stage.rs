//! The stage contract: one `handle` method over a shared runtime.
//!
//! A stage consumes one decoded [`Envelope`] per call and pushes its outputs into the
//! [`Emitter`], which publishes them at once (so a streaming stage's tokens leave as they
//! are made) and keeps their pending acks; the runner acks the input only after every
//! output is stored. Output ids are derived from the input id, the stage and the output's
//! position, so a redelivered input re-publishes the same ids and JetStream stores them
//! once. State: the emitter's pending acks, for one delivery.

use std::{collections::VecDeque, future::Future, time::Duration};

use sb_schemas::{Body, CallSid, Envelope, Kind, SCHEMA_VERSION, TenantId, now_micros};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::publisher::{PendingAck, PublishError, Publisher};

/// A pipeline stage. The runtime owns pulling, decoding, acking, retries, dead letters,
/// metrics and shutdown; the stage owns its logic.
pub trait Stage: Send + Sync + 'static {
    /// The durable consumer this stage reads (a file `nats/consumers/{STREAM}.{name}.json`).
    const CONSUMER: &'static str;

    /// Handles one input. Return an error to have it retried, rejected or to stop the process.
    fn handle(
        &self,
        input: Envelope,
        out: &mut Emitter,
    ) -> impl Future<Output = Result<(), StageError>> + Send;
}

/// What went wrong, and so what the runner does with the input.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// Transient: NAK and redeliver after `after` (or the runner's backoff); dead-lettered
    /// once `max_deliver` is reached.
    #[error("{reason}")]
    Retry {
        kind: &'static str,
        reason: String,
        after: Option<Duration>,
    },
    /// Poison input that can never succeed: Term and dead-letter now.
    #[error("{reason}")]
    Reject { kind: &'static str, reason: String },
    /// The process cannot go on (misconfiguration): NAK and shut down.
    #[error("{reason}")]
    Fatal { kind: &'static str, reason: String },
}

impl StageError {
    pub fn retry(kind: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Retry {
            kind,
            reason: reason.to_string(),
            after: None,
        }
    }

    pub fn retry_after(
        kind: &'static str,
        reason: impl std::fmt::Display,
        after: Duration,
    ) -> Self {
        Self::Retry {
            kind,
            reason: reason.to_string(),
            after: Some(after),
        }
    }

    pub fn reject(kind: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Reject {
            kind,
            reason: reason.to_string(),
        }
    }

    pub fn fatal(kind: &'static str, reason: impl std::fmt::Display) -> Self {
        Self::Fatal {
            kind,
            reason: reason.to_string(),
        }
    }

    /// A bounded label for metrics and dead letters.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Retry { kind, .. } | Self::Reject { kind, .. } | Self::Fatal { kind, .. } => kind,
        }
    }
}

impl From<PublishError> for StageError {
    fn from(error: PublishError) -> Self {
        StageError::retry("publish", error)
    }
}

/// How many outputs may wait for their acks before `emit` waits for the oldest. Bounds
/// memory and keeps a long streaming handle from holding every in-flight publish permit.
const MAX_PENDING_ACKS: usize = 64;

/// What outputs inherit from the input: its call, its turn, and what their ids derive from.
struct Origin {
    id: Uuid,
    at: u64,
    tenant: TenantId,
    call_sid: CallSid,
    turn: u32,
}

/// Collects one delivery's outputs.
pub struct Emitter {
    publisher: Publisher,
    origin: Origin,
    stage: &'static str,
    /// How many events of each kind this delivery has made (see [`derived_id`]).
    next_index: [u32; Kind::ALL.len()],
    pending: VecDeque<PendingAck>,
    published: usize,
    delivered: u64,
    abort: CancellationToken,
}

impl Emitter {
    pub(crate) fn new(
        publisher: Publisher,
        input: &Envelope,
        stage: &'static str,
        delivered: u64,
        abort: CancellationToken,
    ) -> Self {
        let origin = Origin {
            id: input.id,
            at: input.at,
            tenant: input.tenant.clone(),
            call_sid: input.call_sid.clone(),
            turn: input.turn,
        };
        Self {
            publisher,
            origin,
            stage,
            next_index: [0; Kind::ALL.len()],
            pending: VecDeque::new(),
            published: 0,
            delivered,
            abort,
        }
    }

    /// A new event of the input's call and turn. Its id is derived from the input id, the
    /// stage, its kind and how many events of that kind this delivery has made so far, so
    /// a redelivery repeats it.
    pub fn event(&mut self, body: Body) -> Envelope {
        let kind = body.kind();
        let index = self.next_index[kind.index()];
        self.next_index[kind.index()] += 1;
        Envelope {
            v: SCHEMA_VERSION,
            id: derived_id(self.origin.id, self.origin.at, self.stage, kind, index),
            tenant: self.origin.tenant.clone(),
            call_sid: self.origin.call_sid.clone(),
            turn: self.origin.turn,
            at: now_micros(),
            body,
        }
    }

    /// Publishes an output now; the runner waits for its ack before acking the input.
    pub async fn emit(&mut self, event: Envelope) -> Result<(), StageError> {
        while self.pending.len() >= MAX_PENDING_ACKS {
            if let Some(oldest) = self.pending.pop_front() {
                oldest.stored().await?;
            }
        }
        let pending = self.publisher.send(&event).await?;
        self.pending.push_back(pending);
        self.published += 1;
        Ok(())
    }

    /// How many times this input has been delivered (1 on the first delivery).
    pub fn delivered(&self) -> u64 {
        self.delivered
    }

    /// Fires when the drain deadline passed: a long handler should stop and return.
    pub fn abort(&self) -> &CancellationToken {
        &self.abort
    }

    /// The publisher, for stages that publish outside the emitter's contract (rare).
    pub fn publisher(&self) -> &Publisher {
        &self.publisher
    }

    /// Waits until every output is stored; returns how many were published.
    pub(crate) async fn finish(mut self) -> Result<usize, PublishError> {
        while let Some(pending) = self.pending.pop_front() {
            pending.stored().await?;
        }
        Ok(self.published)
    }
}

/// A UUID v7 carrying the input's timestamp and a hash of (input id, stage, kind, index).
fn derived_id(input_id: Uuid, input_at: u64, stage: &str, kind: Kind, index: u32) -> Uuid {
    let mut hash = Sha256::new();
    hash.update(input_id.as_bytes());
    hash.update(stage.as_bytes());
    hash.update(kind.as_str().as_bytes());
    hash.update(index.to_be_bytes());
    let digest = hash.finalize();
    let mut random = [0u8; 10];
    random.copy_from_slice(&digest[..10]);
    uuid::Builder::from_unix_timestamp_millis(input_at / 1000, &random).into_uuid()
}

#[cfg(test)]
mod tests {
    use super::*;
    use sb_schemas::Dtmf;

    fn input() -> Envelope {
        Envelope::new(
            TenantId::parse("acme").unwrap(),
            CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap(),
            2,
            Body::Dtmf(Dtmf { digit: "1".into() }),
        )
    }

    #[test]
    fn derived_ids_are_deterministic_v7_and_distinct() {
        let input = input();
        let derive = |stage, kind, index| derived_id(input.id, input.at, stage, kind, index);
        let a = derive("agent", Kind::Sentence, 0);
        assert_eq!(a, derive("agent", Kind::Sentence, 0));
        assert_ne!(a, derive("agent", Kind::Sentence, 1));
        assert_ne!(
            a,
            derive("agent", Kind::Token, 0),
            "a token never takes a sentence's id"
        );
        assert_ne!(a, derive("tts", Kind::Sentence, 0));
        assert_eq!(a.get_version_num(), 7);
        let (secs, _) = a.get_timestamp().unwrap().to_unix();
        assert_eq!(secs, input.at / 1_000_000);
    }
}
