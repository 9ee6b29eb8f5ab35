//! One live call on a media socket, from Twilio's `start` to its end.
//!
//! Consumes the `start` metadata (once the gate admitted it), caller audio, key presses and
//! mark echoes from the socket, and the call's bot audio and STT events from NATS (a
//! preflight turn's audio is held until its transcript). Produces
//! the `start` event and STT lease (after subscribing, so no bot audio is missed),
//! `audio.in` batches, `dtmf`, `played`, `bargein` and `end` events, and the outbound
//! messages for Twilio (paced media, marks, `clear`), and repairs gaps in the bot audio
//! from the `AUDIO` stream. State: the playback buffer, the audio
//! batch and counters, in memory for the call's lifetime; the session, the barge-in token
//! and the live-socket claim live in Redis.

use std::sync::Arc;

use futures::StreamExt as _;
use sb_runtime::redis::session::Parties;
use sb_runtime::{Tenant, metrics::Metric};
use sb_schemas::{BargeInTrigger, Body, CallSid, End, EndReason, Envelope, Played, Start};
use sb_twilio::media::StartMeta;
use sb_twilio::{OutboundMessage, credential};
use tokio::time::Instant;
use tracing::Instrument as _;

use super::batch::{AudioBatch, CallTag};
use super::gate::{self, LiveClaim, Refusal};
use crate::bargein::Detector;
use crate::meters::LiveGauge;
use crate::playback::{Echo, Output, Playback};
use crate::turns::Turns;
use crate::{Backend, IngressState};

/// How long a gap repair may wait for the stream (a few frames of silence at most).
const FETCH_BUDGET: std::time::Duration = std::time::Duration::from_millis(300);
/// Producer clocks differ a little: a repair reads from this long before the turn's first
/// chunk.
const FETCH_MARGIN_US: u64 = 2_000_000;

/// Why a socket's call ended: a log field, and its `end` event's reason.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EndCause {
    /// Twilio sent `stop`.
    Stop,
    /// The socket closed or failed without `stop`.
    Closed,
    /// The drain deadline passed during shutdown.
    Drained,
    /// The gate refused the `start` (see [`gate`]).
    Refused,
    /// No message for the idle timeout.
    IdleTimeout,
    /// A frame over the hard limit (closed with 1009).
    TooBig,
    /// The call moved to another replica (its stream stopped after our redirect): no `end`.
    Migrated,
}

impl EndCause {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Stop => "stop",
            Self::Closed => "closed",
            Self::Drained => "drained",
            Self::Refused => "refused",
            Self::IdleTimeout => "idle_timeout",
            Self::TooBig => "too_big",
            Self::Migrated => "migrated",
        }
    }

    /// The `end` event's reason.
    pub(crate) fn reason(self) -> EndReason {
        match self {
            Self::Stop => EndReason::Stop,
            Self::Closed => EndReason::Closed,
            Self::Drained | Self::Migrated => EndReason::Drained,
            Self::IdleTimeout => EndReason::IdleTimeout,
            Self::Refused | Self::TooBig => EndReason::Rejected,
        }
    }
}

pub(crate) struct Call<B: Backend> {
    /// This call in `switchboard_calls_live` while it lives here.
    _live_gauge: LiveGauge,
    pub(super) state: IngressState<B>,
    pub(super) tenant: Arc<Tenant>,
    pub(super) sid: CallSid,
    /// Twilio's account of the call and its numbers: what a redirect needs.
    pub(super) account_sid: String,
    pub(super) numbers: (String, String),
    /// The token of the handoff this socket began (a redirect was accepted).
    pub(super) migrating: Option<String>,
    pub(crate) stream_sid: String,
    pub(crate) span: tracing::Span,
    /// This socket's claim on the call, released when it ends.
    pub(super) live: LiveClaim<B>,
    /// `None` when the subscription failed or ended: the call goes on without bot audio.
    pub(super) events: Option<B::Events>,
    pub(super) playback: Playback,
    pub(super) detector: Detector,
    /// The caller's voice, frame by frame (a neural detector).
    pub(super) voice: sb_audio::voice::VoiceDetector,
    /// Caller audio judged so far, in ms (the detector's timeline).
    pub(super) voice_ms: u64,
    /// Pause, resume, barge in: the caller's voice against the bot's.
    pub(super) turns: Turns,
    /// Messages for Twilio decided outside the pacing (a `clear`), sent first.
    pub(super) control: std::collections::VecDeque<String>,
    /// The keypad entry and the silence and call-length clock.
    pub(super) prompts: super::prompts::Prompts,
    /// The turn whose first bot frame went out last (voice-to-voice latency).
    pub(super) spoken_turn: Option<u32>,
    pub(super) batch: AudioBatch,
    /// Names the call in the ack checker's log lines.
    tag: Arc<CallTag>,
    /// The newest turn of any bot audio: the turn of `dtmf` events.
    pub(super) latest_turn: u32,
    /// The highest STT epoch seen: events of a stale STT owner are ignored.
    max_epoch: u64,
    send_failures: u64,
    /// `audio.in` events sent so far: every `audio_ack_every`th asks for a store ack.
    audio_events: u64,
    /// The newest turn of bot audio and the earliest producer time (µs) of its chunks:
    /// where a gap repair reads the stream from.
    pub(super) turn_since: Option<(u32, u64)>,
    /// The process' NATS link: bot audio missed while it was down is read back.
    pub(super) link: tokio::sync::watch::Receiver<sb_runtime::nats::Link>,
}

/// What NATS brought a call.
pub(crate) enum FromNats {
    /// An event of the call (`None`: its subscription ended).
    Event(Option<Envelope>),
    /// The link is back after going down.
    Relinked(sb_runtime::nats::Link),
}

impl<B: Backend> Call<B> {
    /// Handles `start`: the gate (nothing is written or published for a refused one), then
    /// session, subscriptions, the `start` event and the STT lease, all under the tenant the
    /// call's webhook admitted.
    pub(crate) async fn begin(
        state: &IngressState<B>,
        start: StartMeta,
        stream_sid: String,
    ) -> Result<Self, Refusal> {
        let gate::Admitted {
            sid,
            tenant,
            config_revision,
            live,
            handoff,
        } = gate::admit(state, &start).await?;
        let mut custom_parameters = start.custom_parameters;
        // It opens this call's socket: not for the event log.
        custom_parameters.remove(credential::PARAMETER);
        let params = &custom_parameters;
        // The TwiML's <Parameter>s carry the numbers (Twilio's `start` does not).
        let parties = Parties {
            from: params.get("from").cloned().unwrap_or_default(),
            to: params.get("to").cloned().unwrap_or_default(),
        };
        let span = tracing::info_span!("call", tenant = %tenant.id, call_sid = %sid);
        let backend = &state.backend;
        let events = async {
            if let Err(error) = backend
                .session_start(&sid, &tenant.id, &parties, config_revision)
                .await
            {
                tracing::warn!(error = %error, "session not created");
            }
            match backend.subscribe_call(&tenant.id, &sid).await {
                Ok(events) => Some(events),
                Err(error) => {
                    tracing::error!(error = %error, "cannot receive bot audio");
                    None
                }
            }
        }
        .instrument(span.clone())
        .await;
        let event = Envelope::new(
            tenant.id.clone(),
            sid.clone(),
            0,
            Body::Start(Start {
                stream_sid: stream_sid.clone(),
                account_sid: start.account_sid.clone(),
                from: params.get("from").cloned().unwrap_or_default(),
                to: params.get("to").cloned().unwrap_or_default(),
                custom_parameters: custom_parameters.clone(),
            }),
        );
        // A call moved here from another replica has its `start` and STT lease already.
        let resumed = handoff.is_some();
        async {
            if resumed {
                return;
            }
            let (started, leased) =
                tokio::join!(backend.publish(&event), backend.publish_lease(&event));
            if let Err(error) = started {
                tracing::error!(error = %error, "start event not stored");
            }
            if let Err(error) = leased {
                tracing::error!(error = %error, "stt lease not stored");
            }
            tracing::info!(stream_sid = %stream_sid, "call started");
        }
        .instrument(span.clone())
        .await;
        let settings = &state.settings;
        let now = Instant::now();
        let numbers = (
            params.get("from").cloned().unwrap_or_default(),
            params.get("to").cloned().unwrap_or_default(),
        );
        // An outbound call rings the contact from one of the tenant's numbers.
        let outbound = !tenant.numbers.contains(&numbers.1);
        let mut call = Self {
            _live_gauge: LiveGauge::new(&tenant.id, crate::direction(outbound)),
            tag: Arc::new(CallTag {
                tenant: tenant.id.clone(),
                sid: sid.clone(),
            }),
            playback: Playback::new(settings.playback_lead, settings.bargein_pending, now),
            detector: Detector::new(&tenant.barge_in),
            voice: sb_audio::voice::VoiceDetector::new(tenant.turn_taking.vad_threshold),
            voice_ms: 0,
            turns: Turns::new(tenant.barge_in.mode, &tenant.turn_taking),
            control: std::collections::VecDeque::new(),
            spoken_turn: None,
            prompts: super::prompts::Prompts::new(&tenant, now),
            batch: AudioBatch::new(
                settings.audio_batch_frames,
                settings.batch_hold_frames(tenant.stt_endpointing_ms),
            ),
            state: state.clone(),
            tenant,
            sid,
            account_sid: start.account_sid.clone(),
            numbers,
            migrating: None,
            stream_sid,
            span,
            live,
            events,
            latest_turn: 0,
            max_epoch: 0,
            send_failures: 0,
            audio_events: 0,
            turn_since: None,
            link: sb_runtime::nats::link_watch(),
        };
        if let Some(handoff) = handoff {
            call.resume(handoff).await;
        }
        Ok(call)
    }

    pub(super) fn event(&self, turn: u32, body: Body) -> Envelope {
        Envelope::new(self.tenant.id.clone(), self.sid.clone(), turn, body)
    }

    /// Publishes without waiting for the ack; the ack is checked by the side task.
    pub(super) async fn send(&mut self, event: Envelope) {
        match self.state.backend.send(&event).await {
            Ok(ack) => self.state.acks().push(ack, &self.tag),
            Err(error) => self.send_failed(&error),
        }
    }

    fn send_failed(&mut self, error: &crate::BackendError) {
        self.send_failures += 1;
        if self.send_failures.is_power_of_two() {
            let _entered = self.span.enter();
            tracing::warn!(failures = self.send_failures, error = %error, "publish failed");
        }
    }

    /// Caller audio: every `audio_ack_every`th event of the call, and the `last` batch
    /// flushed at its end, with a checked store ack; the rest as plain publishes, which the
    /// stream stores in order with the acked ones (a failing ack is logged for the call).
    async fn send_audio(&mut self, audio: sb_schemas::Audio, last: bool) {
        self.audio_events += 1;
        let event = self.event(0, Body::Audio(audio));
        if last
            || self
                .audio_events
                .is_multiple_of(self.state.settings.audio_ack_every)
        {
            return self.send(event).await;
        }
        if let Err(error) = self.state.backend.send_unconfirmed(&event).await {
            self.send_failed(&error);
        }
    }

    /// The next event of this call from NATS (never, without a subscription), or the
    /// process' NATS link back after going down.
    pub(crate) async fn next_from_nats(&mut self) -> FromNats {
        let next = async {
            match self.events.as_mut() {
                Some(events) => events.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            event = next => FromNats::Event(event),
            link = super::relink::relinked(&mut self.link) => FromNats::Relinked(link),
        }
    }

    /// One frame of caller audio.
    pub(crate) async fn on_audio(&mut self, payload: Vec<u8>, timestamp_ms: u64) {
        self.state.meters().frames_in.increment(1);
        self.hear(&payload, Instant::now());
        if let Some(audio) = self.batch.push(payload, timestamp_ms) {
            self.send_audio(audio, false).await;
        }
    }

    /// A mark echo. `Err`: not a mark of ours.
    pub(crate) async fn on_mark(&mut self, name: String) -> Result<(), &'static str> {
        match self.playback.on_echo(&name) {
            Echo::Played { turn, sentence } => {
                let event = self.event(
                    turn,
                    Body::Played(Played {
                        sentence,
                        mark: name,
                    }),
                );
                self.send(event).await;
                Ok(())
            }
            Echo::Cleared => Ok(()),
            Echo::Unknown => Err("unknown_mark"),
        }
    }

    /// An event from NATS (`None`: the subscription ended). Returns a barge-in trigger when
    /// the tenant's policy says this event interrupts.
    pub(crate) fn on_event(&mut self, event: Option<Envelope>) -> Option<BargeInTrigger> {
        let Some(event) = event else {
            let _entered = self.span.enter();
            tracing::warn!("subscription ended; no more bot audio");
            self.events = None;
            return None;
        };
        if event.call_sid != self.sid {
            return None;
        }
        match event.body {
            Body::TtsChunk(chunk) => {
                let position = (event.turn, chunk.sentence, chunk.chunk);
                if self.state.settings.drop_bot_chunks.contains(&position) {
                    dropped("fault", 1);
                    return None;
                }
                // A newer turn while the bot is paused: the caller took the turn (a held
                // preflight turn's audio is not the bot's yet: its transcript decides).
                if self.playback.held_turn() != Some(event.turn)
                    && self
                        .playback
                        .paused()
                        .is_some_and(|paused| event.turn > paused.cut.turn)
                {
                    self.barge_in(BargeInTrigger::Words);
                }
                match self.take_chunk(event.turn, event.at, chunk) {
                    Ok(0) => {}
                    Ok(superseded) => dropped("superseded", superseded),
                    Err(reason) => dropped(reason.as_str(), 1),
                }
                None
            }
            Body::Speech(speech) if self.fresh_epoch(speech.epoch) => self.detector.on_speech(),
            Body::Partial(partial) if self.fresh_epoch(partial.epoch) => {
                self.detector.on_partial(&partial.text)
            }
            Body::Preflight(preflight) if self.fresh_epoch(preflight.epoch) => {
                dropped("superseded", self.playback.hold(event.turn));
                None
            }
            Body::Transcript(transcript) if self.fresh_epoch(transcript.epoch) => {
                self.confirmed(event.turn);
                None
            }
            _ => None,
        }
    }

    /// The transcript of `turn`: its held preflight audio plays now (the caller took the
    /// turn from a paused bot, as if its audio had just arrived); a held older turn goes.
    pub(super) fn confirmed(&mut self, turn: u32) {
        if self.playback.held_turn() == Some(turn)
            && self
                .playback
                .paused()
                .is_some_and(|paused| turn > paused.cut.turn)
        {
            self.barge_in(BargeInTrigger::Words);
        }
        let released = self.playback.release(turn, Instant::now());
        dropped("superseded", released.discarded + released.superseded);
    }

    /// A chunk of bot audio (live, or read back) into the playback; tracks the newest turn
    /// and when its audio began.
    pub(super) fn take_chunk(
        &mut self,
        turn: u32,
        at: u64,
        chunk: sb_schemas::TtsChunk,
    ) -> Result<usize, crate::playback::Dropped> {
        self.latest_turn = self.latest_turn.max(turn);
        self.turn_since = match self.turn_since {
            Some((newest, since)) if newest == turn => Some((turn, since.min(at))),
            Some((newest, _)) if newest > turn => self.turn_since,
            _ => Some((turn, at)),
        };
        self.playback.push(turn, chunk, Instant::now())
    }

    fn fresh_epoch(&mut self, epoch: u64) -> bool {
        if epoch < self.max_epoch {
            return false;
        }
        self.max_epoch = epoch;
        true
    }

    /// Repairs a due gap in the bot audio: the turn's chunks are read back from the
    /// `AUDIO` stream (within [`FETCH_BUDGET`]) and the missing one takes its place, or
    /// the playback skips it (see [`crate::playback::Gap`]). Counted by outcome.
    pub(crate) async fn repair_gap(&mut self, now: Instant) {
        let Some(gap) = self.playback.gap_due(now) else {
            return;
        };
        let since = self
            .turn_since
            .filter(|(turn, _)| *turn == gap.turn)
            .map_or(0, |(_, at)| at.saturating_sub(FETCH_MARGIN_US));
        let backend = &self.state.backend;
        let fetched = tokio::time::timeout(
            FETCH_BUDGET,
            backend.fetch_bot_audio(&self.tenant.id, &self.sid, since),
        )
        .await;
        let _entered = self.span.enter();
        let events = match fetched {
            Ok(Ok(events)) => events,
            Ok(Err(error)) => {
                tracing::warn!(error = %error, "bot audio not read back");
                Vec::new()
            }
            Err(_) => {
                tracing::warn!("bot audio not read back in time");
                Vec::new()
            }
        };
        let at = Instant::now();
        for event in events {
            if let (true, Body::TtsChunk(chunk)) = (event.turn == gap.turn, event.body) {
                // Chunks already played or buffered are refused as duplicates: not counted.
                let _ = self.playback.push(event.turn, chunk, at);
            }
        }
        let outcome = self.playback.after_repair(gap, at);
        metrics::counter!(Metric::IngressGapRepairs.name(), "outcome" => outcome.as_str())
            .increment(1);
        tracing::info!(
            turn = gap.turn,
            sentence = gap.sentence,
            chunk = gap.chunk,
            outcome = outcome.as_str(),
            "bot audio gap"
        );
    }

    /// The next message for Twilio that is due at `now`.
    pub(crate) fn poll_output(&mut self, now: Instant) -> Option<String> {
        if let Some(control) = self.control.pop_front() {
            return Some(control);
        }
        if let Some(decision) = self.turns.poll(now) {
            self.decide(decision, now);
        }
        self.poll_prompts(now);
        let message = match self.playback.poll(now)? {
            Output::Media { audio, late } => {
                self.state.meters().frames_out.increment(1);
                let turn = self.playback.turn();
                if turn != self.spoken_turn {
                    self.spoken_turn = turn;
                    self.prompts.clock.bot_started(now);
                    if let Some(ended) = self.turns.take_caller_ended() {
                        metrics::histogram!(Metric::VoiceToVoiceSeconds.name(), "tenant" => self.tenant.id.as_str().to_owned())
                            .record(now.duration_since(ended).as_secs_f64());
                    }
                }
                if late {
                    self.state.meters().late_frames.increment(1);
                }
                OutboundMessage::media(self.stream_sid.clone(), &audio)
            }
            Output::Mark(name) => {
                if self.playback.turn_finished() {
                    self.prompts.clock.bot_finished(now);
                }
                OutboundMessage::mark(self.stream_sid.clone(), name)
            }
        };
        Some(message.to_json())
    }

    /// How long the socket may go without a message (the tenant's setting).
    pub(crate) fn idle_timeout(&self) -> std::time::Duration {
        std::time::Duration::from_secs(u64::from(self.tenant.media_idle_secs))
    }

    /// When the next bot frame is due; `None` while waiting for audio.
    pub(crate) fn next_wake(&self) -> Option<Instant> {
        [
            self.playback.next_wake(),
            self.turns.deadline(),
            self.prompts.deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Ends the call: the last audio batch, then `end` once per call (shared with the
    /// status callback), then the subscriptions go.
    pub(crate) async fn finish(mut self, cause: EndCause) {
        let span = self.span.clone();
        async move {
            if let Some(audio) = self.batch.flush() {
                self.send_audio(audio, true).await;
            }
            if cause == EndCause::Migrated {
                self.stopped_here().await;
                self.live.release().await;
                tracing::info!(
                    frames_in = self.batch.frames(),
                    "call moved to another replica"
                );
                return;
            }
            if cause == EndCause::Closed && self.reconnected_elsewhere().await {
                tracing::info!(
                    frames_in = self.batch.frames(),
                    "stream dropped; the call goes on on a new socket"
                );
                return;
            }
            let backend = &self.state.backend;
            let first = backend.claim_end(&self.sid).await.unwrap_or_else(|error| {
                tracing::warn!(error = %error, "end claim failed; publishing anyway");
                true
            });
            if first {
                // One id per call's `end` (`Envelope::once`): should Redis have failed to
                // arbitrate with the status callback, the stream stores one of the two.
                let event = Envelope::once(
                    self.tenant.id.clone(),
                    self.sid.clone(),
                    self.latest_turn,
                    Body::End(End {
                        reason: cause.reason(),
                    }),
                );
                if let Err(error) = backend.publish(&event).await {
                    tracing::error!(error = %error, "end event not stored");
                }
            }
            self.live.release().await;
            tracing::info!(
                cause = cause.as_str(),
                frames_in = self.batch.frames(),
                "call ended"
            );
        }
        .instrument(span)
        .await;
    }
}

pub(super) fn dropped(reason: &'static str, chunks: usize) {
    if chunks > 0 {
        metrics::counter!(Metric::IngressDroppedChunks.name(), "reason" => reason)
            .increment(chunks as u64);
    }
}
