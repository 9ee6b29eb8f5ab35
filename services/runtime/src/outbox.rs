//! Where a stage's outputs go: the [`Outbox`] seam under the [`crate::Emitter`].
//!
//! Consumes output [`Envelope`]s; produces, in production, JetStream publishes through the
//! [`Publisher`] (the outbox hands the message to the connection at once and returns its
//! pending store ack), and in tests a [`crate::testing::Recorder`] that keeps them in
//! memory. State: none here beyond what an implementation holds.

use futures::future::BoxFuture;
use sb_schemas::Envelope;

use crate::publisher::{PendingAck, PublishError, Publisher};

/// A sink for stage outputs. `send` hands an event over and returns a handle to wait on
/// until it is stored; the emitter waits on every handle before the input is acked.
pub trait Outbox: Send + Sync + 'static {
    fn send<'a>(&'a self, event: &'a Envelope) -> BoxFuture<'a, Result<Stored, PublishError>>;
}

/// An output handed to the outbox, maybe not yet stored.
#[derive(Debug)]
pub struct Stored(Pending);

#[derive(Debug)]
enum Pending {
    /// JetStream's ack is on its way.
    Ack(PendingAck),
    /// Stored already (in memory).
    Done,
}

impl Stored {
    /// An output that is stored already.
    pub fn done() -> Self {
        Self(Pending::Done)
    }

    /// Waits until the output is stored.
    pub async fn wait(self) -> Result<(), PublishError> {
        match self.0 {
            Pending::Ack(ack) => ack.stored().await.map(|_| ()),
            Pending::Done => Ok(()),
        }
    }
}

impl Outbox for Publisher {
    fn send<'a>(&'a self, event: &'a Envelope) -> BoxFuture<'a, Result<Stored, PublishError>> {
        Box::pin(async move {
            let ack = Publisher::send(self, event).await?;
            Ok(Stored(Pending::Ack(ack)))
        })
    }
}
