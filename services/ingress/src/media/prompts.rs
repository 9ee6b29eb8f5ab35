//! What starts a turn on a live call other than the caller's words: a keypad entry, the
//! caller's silence, the call's length.
//!
//! Consumes the call's key presses (each is also its own `dtmf` event, as before), the
//! playback's turns starting and finishing, the caller's voice and the clock; produces,
//! each on a new turn numbered like a transcript's (`session_next_turn`), `keypad`,
//! `silence` and `max_duration` events for the agent (ARCHITECTURE §2e), and a barge-in
//! when a key is pressed over the bot. A key that is not a keypad key is rejected
//! (counted by the socket). State: the call's [`Entry`] and [`CallClock`], in the socket
//! task.

use sb_schemas::{BargeInTrigger, Body, Dtmf, Envelope};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::call::Call;
use crate::Backend;
use crate::call_clock::CallClock;
use crate::keypad::Entry;

/// The keypad and the clock of one call.
pub(crate) struct Prompts {
    pub(super) keypad: Entry,
    pub(super) clock: CallClock,
}

impl Prompts {
    pub(super) fn new(tenant: &sb_runtime::Tenant, now: Instant) -> Self {
        Self {
            keypad: Entry::new(&tenant.keypad, tenant.transfer_number.is_some()),
            clock: CallClock::new(&tenant.turn_taking, now),
        }
    }

    /// The earliest moment a keypad entry or a clock event falls due.
    pub(super) fn deadline(&self) -> Option<Instant> {
        match (self.keypad.deadline(), self.clock.deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }
}

impl<B: Backend> Call<B> {
    /// A key press: its `dtmf` event, then the keypad entry it may complete; over the bot,
    /// a barge-in. `Err`: not a keypad key (rejected, nothing published).
    pub(crate) async fn on_dtmf(&mut self, digit: String) -> Result<(), &'static str> {
        let now = Instant::now();
        let complete = self
            .prompts
            .keypad
            .press(&digit, now)
            .map_err(|_| "bad_key")?;
        let event = self.event(self.latest_turn, Body::Dtmf(Dtmf { digit }));
        self.send(event).await;
        self.prompts.clock.caller_active(now);
        if self.playback.playing_turn(now).is_some()
            && let Some(clear) = self.barge_in(BargeInTrigger::Dtmf)
        {
            self.control.push_back(clear);
        }
        if let Some(keypad) = complete {
            self.new_turn(Body::Keypad(keypad));
        }
        Ok(())
    }

    /// Keypad entries and clock events due at `now`, each on a new turn.
    pub(super) fn poll_prompts(&mut self, now: Instant) {
        while let Some(keypad) = self.prompts.keypad.due(now) {
            self.new_turn(Body::Keypad(keypad));
        }
        while let Some(body) = self.prompts.clock.due(now) {
            self.new_turn(body);
        }
    }

    /// Publishes `body` on the call's next turn (numbered in Redis, as the stt numbers a
    /// transcript's), in a tracked side task.
    fn new_turn(&mut self, body: Body) {
        let backend = self.state.backend.clone();
        let (tenant, sid) = (self.tenant.id.clone(), self.sid.clone());
        let after = self.latest_turn;
        let kind = body.kind().as_str();
        let task = async move {
            let turn = match backend.next_turn(&sid, after).await {
                Ok(turn) => turn,
                Err(error) => {
                    tracing::error!(error = %error, kind, "no turn for the event; dropped");
                    return;
                }
            };
            let event = Envelope::new(tenant, sid, turn, body);
            if let Err(error) = backend.publish(&event).await {
                tracing::error!(error = %error, kind, "event not stored");
            }
            tracing::info!(turn, kind, "new turn");
        };
        self.state
            .shutdown
            .tracker()
            .spawn(task.instrument(self.span.clone()));
    }
}
