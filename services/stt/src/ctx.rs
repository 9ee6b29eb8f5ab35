//! What every call task of a worker shares, built once by the lease loop.
//!
//! Consumes nothing; [`crate::lease`] produces one [`Ctx`] at start-up and each call task
//! holds it behind an `Arc`. State: the runtime's handles (NATS, JetStream, Redis, the
//! publisher, shutdown), the provider client, the stt settings and the heartbeat period,
//! all immutable while the worker runs.

use std::time::Duration;

use sb_runtime::Runtime;

use crate::config::SttConfig;

/// What every call task shares.
pub(crate) struct Ctx<S> {
    pub(crate) runtime: Runtime,
    pub(crate) stt: S,
    pub(crate) config: SttConfig,
    /// Progress-ack period: a third of the consumer's ack_wait.
    pub(crate) heartbeat: Duration,
}
