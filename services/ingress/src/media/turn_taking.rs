//! Turn-taking on a live call: the caller's voice against the bot's.
//!
//! Consumes each frame of caller audio (judged by the call's neural voice detector, its
//! verdicts dated on the audio timeline), the decisions of [`crate::turns`] and the call's
//! barge-in triggers (words, a provider's speech event, a key); produces the `clear` that
//! pauses or stops the bot, the `bargein` event with the barge-in token, the pause marker in the session (so the stt makes no turn
//! of backchannel said over the bot), the `resumed` event and the playback taking up again
//! from the cut word after a false interruption, and the per-tenant metrics: onset →
//! `clear` (`switchboard_ingress_interruption_seconds`) and how pauses ended
//! (`switchboard_ingress_pauses_total`). State: the call's detector, turn machine and
//! playback, in the socket task.

use sb_runtime::metrics::Metric;
use sb_schemas::{BargeIn, BargeInTrigger, Body, Envelope, Resumed};
use sb_twilio::OutboundMessage;
use tokio::time::Instant;
use tracing::Instrument as _;

use super::call::{Call, dropped};
use crate::Backend;
use crate::turns::Decision;

/// A voice this long is the caller speaking (for the silence timer).
const CALLER_ACTIVE: std::time::Duration = std::time::Duration::from_millis(160);

impl<B: Backend> Call<B> {
    /// The caller's voice in one frame of audio, judged as it arrives: may pause the bot
    /// or barge in (see [`crate::turns`]).
    pub(super) fn hear(&mut self, payload: &[u8], now: Instant) {
        // A 20 ms frame completes one or two 16 ms verdicts.
        let mut verdicts = [(0, 0.0); 4];
        let mut count = 0;
        self.voice.push_mulaw(payload, |verdict| {
            if count < verdicts.len() {
                verdicts[count] = (verdict.end_ms, verdict.score);
                count += 1;
            }
        });
        // This frame's audio ends now: a verdict that ended earlier on the audio timeline
        // is dated that much earlier.
        self.voice_ms += payload.len() as u64 / 8;
        for &(end_ms, score) in &verdicts[..count] {
            let behind = std::time::Duration::from_millis(self.voice_ms.saturating_sub(end_ms));
            let at = now.checked_sub(behind).unwrap_or(now);
            let playing = self.playback.playing_turn(now).is_some();
            // A voice (not a click) stops the silence timer.
            if self
                .turns
                .onset()
                .is_some_and(|onset| at.duration_since(onset) >= CALLER_ACTIVE)
            {
                self.prompts.clock.caller_active(at);
            }
            if let Some(decision) = self.turns.on_verdict(at, score, playing) {
                self.decide(decision, now);
            }
        }
    }

    /// Carries out a turn-taking decision.
    pub(super) fn decide(&mut self, decision: Decision, now: Instant) {
        match decision {
            Decision::Pause { onset } => {
                let Some(paused) = self.playback.pause(now) else {
                    self.turns.pause_over();
                    return;
                };
                self.interrupted_after(onset, now);
                self.control
                    .push_back(OutboundMessage::clear(self.stream_sid.clone()).to_json());
                let turn = paused.cut.turn;
                self.mark_paused(Some(turn));
                let _entered = self.span.enter();
                tracing::info!(
                    turn,
                    sentence = paused.cut.sentence,
                    heard_ms = paused.cut.heard / 8,
                    "bot paused for the caller"
                );
            }
            Decision::BargeIn { onset } => {
                if let Some(clear) = self.barge_in(BargeInTrigger::Speech) {
                    self.interrupted_after(onset, now);
                    self.control.push_back(clear);
                }
            }
            Decision::Resume => self.resume_after_false_interruption(now),
        }
    }

    /// Records the caller's onset → `clear` latency.
    pub(super) fn interrupted_after(&self, onset: Instant, now: Instant) {
        metrics::histogram!(Metric::IngressInterruptionSeconds.name(), "tenant" => self.tenant.id.as_str().to_owned())
            .record(now.duration_since(onset).as_secs_f64());
    }

    pub(super) fn pause_ended(&self, outcome: &'static str) {
        metrics::counter!(Metric::IngressPauses.name(), "tenant" => self.tenant.id.as_str().to_owned(), "outcome" => outcome)
            .increment(1);
    }

    /// Tells the stt (through the session) whether the bot is paused for the caller.
    pub(super) fn mark_paused(&self, turn: Option<u32>) {
        let backend = self.state.backend.clone();
        let sid = self.sid.clone();
        let task = async move {
            if let Err(error) = backend.set_paused(&sid, turn).await {
                tracing::warn!(error = %error, "pause marker not stored");
            }
        };
        self.state
            .shutdown
            .tracker()
            .spawn(task.instrument(self.span.clone()));
    }

    /// No qualifying words came: the bot plays on from the word it was cut in, and the
    /// call's log says so (`resumed`).
    fn resume_after_false_interruption(&mut self, now: Instant) {
        let Some(resume) = self.playback.resume_playing(now) else {
            return;
        };
        // The caller's sound was no turn: no voice-to-voice latency starts from it.
        self.turns.take_caller_ended();
        self.pause_ended("resumed");
        self.mark_paused(None);
        let event = self.event(
            resume.turn,
            Body::Resumed(Resumed {
                sentence: resume.sentence,
                offset_ms: resume.offset_ms,
                paused_ms: resume.paused_ms,
            }),
        );
        let backend = self.state.backend.clone();
        let task = async move {
            if let Err(error) = backend.publish(&event).await {
                tracing::error!(error = %error, "resumed event not stored");
            }
        };
        self.state
            .shutdown
            .tracker()
            .spawn(task.instrument(self.span.clone()));
        let _entered = self.span.enter();
        tracing::info!(
            turn = resume.turn,
            sentence = resume.sentence,
            offset_ms = resume.offset_ms,
            paused_ms = resume.paused_ms,
            "bot resumed after a false interruption"
        );
    }

    /// Applies a barge-in if bot audio is pending or playing: returns the `clear` to send
    /// at once; bumps the token and publishes `bargein` in a tracked side task.
    pub(crate) fn barge_in(&mut self, trigger: BargeInTrigger) -> Option<String> {
        let now = Instant::now();
        let was_paused = self.playback.paused().is_some();
        let cut = self.playback.barge_in(now)?;
        if was_paused {
            self.turns.pause_over();
            self.pause_ended(match trigger {
                BargeInTrigger::Words | BargeInTrigger::Speech => "bargein",
                BargeInTrigger::Dtmf => "dtmf",
            });
            self.mark_paused(None);
        } else if let Some(onset) = self.turns.onset() {
            // Words before the pause (or a provider's speech event): still an onset → clear.
            self.interrupted_after(onset, now);
        }
        let trigger_name = match trigger {
            BargeInTrigger::Speech => "speech",
            BargeInTrigger::Words => "words",
            BargeInTrigger::Dtmf => "dtmf",
        };
        metrics::counter!(Metric::IngressBargeIns.name(), "trigger" => trigger_name).increment(1);
        dropped("stale", cut.dropped);
        let backend = self.state.backend.clone();
        let sid = self.sid.clone();
        let tenant = self.tenant.id.clone();
        let task = async move {
            let token = backend
                .interrupt(&sid, cut.turn)
                .await
                .unwrap_or_else(|error| {
                    tracing::warn!(error = %error, "barge-in token not stored");
                    u64::from(cut.turn) + 1
                });
            let body = Body::BargeIn(BargeIn {
                token,
                trigger,
                sentences_heard: cut.sentences_heard,
                cut: cut.cut,
            });
            let event = Envelope::new(tenant, sid, cut.turn, body);
            if let Err(error) = backend.publish(&event).await {
                tracing::error!(error = %error, "bargein event not stored");
            }
            tracing::info!(
                turn = cut.turn,
                token,
                trigger = trigger_name,
                sentences_heard = cut.sentences_heard,
                "barge-in"
            );
        };
        self.state
            .shutdown
            .tracker()
            .spawn(task.instrument(self.span.clone()));
        Some(OutboundMessage::clear(self.stream_sid.clone()).to_json())
    }
}
