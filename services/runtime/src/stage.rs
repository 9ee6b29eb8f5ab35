//! The stage contract: one `handle` method over a shared runtime.
//!
//! A stage consumes one decoded [`Envelope`] per call and pushes its outputs into the
//! [`Emitter`] (see [`crate::emitter`]); the runner acks the input only after every output
//! is stored. What a stage declares beyond `handle`: its consumer, which output its
//! latency is measured to, and the call state its turns are checked against. What it gets
//! for free: ids derived from the input, the one staleness check, its metrics labelled
//! with its name. State: none.

use std::{future::Future, sync::Arc, time::Duration};

use sb_schemas::{Envelope, Kind};

pub use crate::emitter::Emitter;
use crate::http::ReadyNeeds;
use crate::publisher::PublishError;
use crate::state::Sessions;

/// A pipeline stage. The runtime owns pulling, decoding, acking, retries, dead letters,
/// metrics and shutdown; the stage owns its logic.
pub trait Stage: Send + Sync + 'static {
    /// The durable consumer this stage reads (a file `nats/consumers/{STREAM}.{name}.json`).
    /// It is also the stage's name: its `stage` metric label and its derived ids' salt.
    const CONSUMER: &'static str;

    /// The output whose first emit per input is the stage's latency
    /// (`switchboard_stage_latency_seconds{stage}`: input published → that output); `None`
    /// for the first output of any kind.
    const FIRST_OUTPUT: Option<Kind> = None;

    /// What `/ready` requires (NATS, and Redis unless the stage degrades without it).
    const READY_NEEDS: ReadyNeeds = ReadyNeeds::NATS_AND_REDIS;

    /// The call state [`Emitter::still_wanted`] checks a turn against; `None` for a stage
    /// with no notion of turns (every input stays wanted).
    fn sessions(&self) -> Option<Arc<dyn Sessions>> {
        None
    }

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
