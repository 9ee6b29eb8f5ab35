//! Live call migration, the socket's side: moving a call off a draining replica, and
//! resuming one that moved here.
//!
//! Consumes the drain (SIGTERM), the call's playback and audio batch, and a taken
//! [`Handoff`]. Produces, on the draining side, the handoff record and the Twilio redirect
//! ([`Call::migrate`]), then, once the old stream stopped, the final caller-audio frame
//! number and the playback position ([`Call::stopped_here`]); on the new side, a call that
//! continues the old one ([`Call::resume`]): frames numbered on, playback from where the
//! caller stopped hearing, the turn's unplayed audio read back from the `AUDIO` stream. A
//! call whose old socket died (a `lost` handoff, from Twilio's `<Connect action>`) is
//! resumed the same way from where the log says it stood ([`where_lost`]). No
//! `start`, STT lease or `end` is published for a move. State: the call's.

use std::time::Duration;

use sb_audio::FRAME_BYTES;
use sb_runtime::metrics::Metric;
use sb_runtime::redis::handoff::Handoff;
use sb_schemas::{Body, CallSid, TenantId, now_micros};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::call::Call;
use crate::migrate::{HANDOFF_PARAMETER, stream_twiml};
use crate::playback::Position;
use crate::{Backend, LastHeard};

/// How long a socket whose stream dropped waits for the call to be connected anew
/// elsewhere before it ends the call: Twilio's action request and the new socket's
/// handshake take well under a second.
const RECONNECT_GRACE: Duration = Duration::from_secs(3);
/// How often it looks.
const RECONNECT_POLL: Duration = Duration::from_millis(50);
/// How long a resumed socket waits for the old stream to report where it stopped.
const STOPPED_WAIT: Duration = Duration::from_secs(3);
/// How often it looks.
const STOPPED_POLL: Duration = Duration::from_millis(10);
/// Producer clocks differ a little: the turn's audio is read back from this much earlier.
const READ_MARGIN_US: u64 = 2_000_000;
/// How long reading the turn's audio back may take.
const READ_BUDGET: Duration = Duration::from_millis(500);
/// A call whose socket died has its bot audio of this long ago read back (where its turn
/// began is unknown; the playback refuses older turns and heard sentences).
const LOST_READ_BACK_US: u64 = 30_000_000;

impl<B: Backend> Call<B> {
    /// Asks Twilio to move the call to another replica: records the handoff, then the
    /// redirect. `true` when Twilio accepted (the old stream will get `stop`); on failure
    /// the call stays here until it ends or the drain deadline passes.
    pub(crate) async fn migrate(&mut self) -> bool {
        if !self.state.settings.migrate_on_drain || self.migrating.is_some() {
            return false;
        }
        let span = self.span.clone();
        self.redirect_elsewhere().instrument(span).await
    }

    async fn redirect_elsewhere(&mut self) -> bool {
        let token = format!("{:032x}", rand::random::<u128>());
        let handoff = Handoff {
            token: token.clone(),
            seq: self.batch.frames(),
            ..Handoff::default()
        };
        let backend = &self.state.backend;
        if let Err(error) = backend.handoff_begin(&self.sid, &handoff).await {
            tracing::warn!(error = %error, "handoff not recorded; the call stays");
            return false;
        }
        let Some(twiml) = stream_twiml(
            &self.state.settings,
            (self.tenant.id.as_str(), &self.sid),
            (&self.numbers.0, &self.numbers.1),
            &[(HANDOFF_PARAMETER, &token)],
        ) else {
            return false;
        };
        match backend.redirect(&self.account_sid, &self.sid, &twiml).await {
            Ok(()) => {
                metrics::counter!(Metric::IngressMigrations.name(), "outcome" => "redirected")
                    .increment(1);
                tracing::info!("moving the call to another replica");
                self.migrating = Some(token);
                true
            }
            Err(error) => {
                metrics::counter!(Metric::IngressMigrations.name(), "outcome" => "failed")
                    .increment(1);
                tracing::warn!(error = %error, "redirect failed; the call stays");
                let _ = backend.handoff_cancel(&self.sid).await;
                false
            }
        }
    }

    /// The stream dropped without `stop`: Twilio may be connecting the call anew through
    /// the stream's `<Connect action>` (a network cut between Twilio and this replica).
    /// Waits up to [`RECONNECT_GRACE`] for another socket to take the call; `true` when one
    /// did (this socket then ends without `end`).
    pub(crate) async fn reconnected_elsewhere(&mut self) -> bool {
        let deadline = Instant::now() + RECONNECT_GRACE;
        loop {
            if self.live.taken_over().await {
                metrics::counter!(Metric::IngressMigrations.name(), "outcome" => "handed_over")
                    .increment(1);
                return true;
            }
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(RECONNECT_POLL).await;
        }
    }

    /// Whether this socket handed its call over (its stream's end is a move, not a hang-up).
    pub(crate) fn is_migrating(&self) -> bool {
        self.migrating.is_some()
    }

    /// The old stream stopped after the redirect: the next frame number and where the
    /// caller stopped hearing, for the new socket.
    pub(crate) async fn stopped_here(&mut self) {
        let Some(token) = self.migrating.clone() else {
            return;
        };
        let position = self.playback.position(Instant::now());
        let since_us = self
            .turn_since
            .filter(|(turn, _)| *turn == position.turn)
            .map_or(0, |(_, at)| at);
        let handoff = Handoff {
            token,
            seq: self.batch.frames(),
            stopped: true,
            turn: position.turn,
            sentence: position.sentence,
            chunk: position.chunk,
            offset: position.offset,
            stale_below: position.stale_below,
            since_us,
            lost: false,
        };
        let stored = self.state.backend.handoff_stopped(&self.sid, &handoff);
        if let Err(error) = stored.instrument(self.span.clone()).await {
            let _entered = self.span.enter();
            tracing::warn!(error = %error, "handoff position not recorded");
        }
    }

    /// Continues a call that moved here: waits for the old stream's final numbers, then
    /// numbers frames on and plays the turn from where the caller stopped hearing.
    pub(crate) async fn resume(&mut self, taken: Handoff) {
        let span = self.span.clone();
        self.resume_from(taken).instrument(span).await;
    }

    async fn resume_from(&mut self, taken: Handoff) {
        let backend = &self.state.backend;
        let deadline = Instant::now() + STOPPED_WAIT;
        let lost = taken.lost;
        let mut handoff = if lost {
            where_lost(backend, &self.tenant.id, &self.sid, taken).await
        } else {
            taken
        };
        while !handoff.stopped && Instant::now() < deadline {
            tokio::time::sleep(STOPPED_POLL).await;
            if let Ok(Some(now)) = backend.handoff_read(&self.sid).await {
                handoff = now;
            }
        }
        if !handoff.stopped {
            tracing::warn!(
                "the old stream never reported where it stopped; numbering on from the redirect"
            );
        }
        self.batch.start_at(handoff.seq);
        let position = Position {
            turn: handoff.turn,
            sentence: handoff.sentence,
            chunk: handoff.chunk,
            offset: handoff.offset,
            stale_below: handoff.stale_below,
        };
        self.playback.resume(position);
        self.latest_turn = handoff.turn;
        self.turn_since = Some((handoff.turn, handoff.since_us));
        // Everything of the turn since its first chunk (and anything newer); the playback
        // refuses what the caller already heard.
        let since = if handoff.since_us > 0 {
            handoff.since_us.saturating_sub(READ_MARGIN_US)
        } else {
            now_micros().saturating_sub(READ_MARGIN_US)
        };
        let read = backend.fetch_bot_audio(&self.tenant.id, &self.sid, since);
        let events = match tokio::time::timeout(READ_BUDGET, read).await {
            Ok(Ok(events)) => events,
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "the turn's audio not read back");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!("the turn's audio not read back in time");
                Vec::new()
            }
        };
        for event in events {
            if let Body::TtsChunk(chunk) = event.body {
                // A newer turn read back counts as the call's newest, as a live one does.
                let _ = self.take_chunk(event.turn, event.at, chunk);
            }
        }
        let outcome = if lost { "reconnected" } else { "resumed" };
        metrics::counter!(Metric::IngressMigrations.name(), "outcome" => outcome).increment(1);
        tracing::info!(
            seq = handoff.seq,
            turn = position.turn,
            sentence = position.sentence,
            chunk = position.chunk,
            offset = position.offset,
            lost,
            "call resumed here"
        );
    }
}

/// Where a call whose socket died stood, read from the log (no old socket reports it):
/// caller frames number on after the last one stored; playback starts at the sentence
/// after the last one the caller heard to its end (a sentence cut by the death plays again
/// from its start) and keeps the last barge-in's cut; the turn's audio is read back from
/// [`LOST_READ_BACK_US`] ago.
async fn where_lost<B: Backend>(
    backend: &B,
    tenant: &TenantId,
    sid: &CallSid,
    taken: Handoff,
) -> Handoff {
    let last = match backend.last_heard(tenant, sid).await {
        Ok(last) => last,
        Err(error) => {
            tracing::warn!(error = %error, "the log cannot say where the call stood");
            LastHeard::default()
        }
    };
    let seq = last.audio.as_ref().map_or(0, |event| match &event.body {
        Body::Audio(audio) => audio.seq + (audio.payload.0.len() / FRAME_BYTES) as u64,
        _ => 0,
    });
    let (turn, sentence) = last
        .played
        .as_ref()
        .map_or((0, 0), |event| match &event.body {
            Body::Played(played) => (event.turn, played.sentence + 1),
            _ => (0, 0),
        });
    Handoff {
        seq,
        stopped: true,
        turn,
        sentence,
        chunk: 0,
        offset: 0,
        stale_below: last.bargein.map_or(0, |event| u64::from(event.turn) + 1),
        since_us: now_micros().saturating_sub(LOST_READ_BACK_US),
        ..taken
    }
}
