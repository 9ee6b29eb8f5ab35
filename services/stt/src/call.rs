//! One owned call: provider connections over the call's audio, from lease to release.
//!
//! Consumes the call's caller audio (an [`AudioSource`]: live from a core subscription,
//! caught up from `AUDIO`), its `end` event (a core subscription), the provider's events
//! and the lease heartbeat's [`Signal`]s; produces, through [`crate::commit`], `speech`,
//! `partial`, `preflight` and `transcript` events and the Redis checkpoint. A dropped provider stream
//! is reopened with backoff from the checkpoint (the audio since the last final is sent
//! again: speech is delayed, not lost). At the end it drains the audio, sends Finalize and
//! CloseStream and publishes the last results. State: the checkpoint, turn and resume point
//! (rebuildable from Redis and JetStream), and the open connection.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt as _;
use sb_runtime::{Tenant, metrics::Metric};
use sb_schemas::{CallSid, Kind, subject};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::audio::{AudioSource, Batch, Skipped};
use crate::ctx::Ctx;
use crate::preflight::Preflights;
use crate::provider::{SpeechToText, StreamOptions, SttCommand, SttStream};
use crate::timeline::Timeline;
use crate::utterance::Assembler;

/// Connection attempts to finish an already ended call before its last audio is given up.
const ENDED_ATTEMPTS: u32 = 3;

/// What the lease heartbeat learned from the session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Signal {
    /// The session is gone (ended and expired, or evicted).
    SessionGone,
    /// A newer epoch owns the call.
    Stale,
}

/// How a call ends for this worker, and so what happens to its lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Exit {
    /// The call is over and its results are out: ack (remove) the lease.
    Finished(&'static str),
    /// Shutting down: NAK the lease so another replica takes over now.
    HandOff,
    /// The call cannot be served here right now: NAK with a delay.
    Retry(&'static str),
    /// A newer epoch owns the call: drop the lease without a word.
    Stale,
}

/// What one input did to the call.
pub(crate) enum Flow {
    Continue,
    Finish(&'static str),
    Reconnect(&'static str),
    Exit(Exit),
}

/// One provider connection and the audio consumer feeding it.
pub(crate) struct Conn {
    pub(crate) stream: SttStream,
    pub(crate) audio: AudioSource,
    pub(crate) timeline: Timeline,
    pub(crate) assembler: Assembler,
    /// It produced an event (so the reconnect backoff starts over).
    pub(crate) useful: bool,
}

/// The call this worker owns.
pub(crate) struct Call<S> {
    pub(crate) ctx: Arc<Ctx<S>>,
    pub(crate) tenant: Arc<Tenant>,
    pub(crate) sid: CallSid,
    pub(crate) epoch: u64,
    /// The session's current turn (this worker is the only one that advances it).
    pub(crate) turn: u32,
    /// The last `Audio.seq` covered by a final, as stored in the session.
    pub(crate) checkpoint: Option<u64>,
    /// The utterance's pending preflight (kept over reconnects: the final that follows one
    /// may still confirm it).
    pub(crate) preflights: Preflights,
    loaded: bool,
    /// AUDIO stream sequence the next connection starts at (`None`: the call's start).
    resume: Option<u64>,
    pub(crate) last_audio: Instant,
}

impl<S: SpeechToText> Call<S> {
    pub(crate) fn new(ctx: Arc<Ctx<S>>, tenant: Arc<Tenant>, sid: CallSid, epoch: u64) -> Self {
        Self {
            ctx,
            tenant,
            sid,
            epoch,
            turn: 0,
            checkpoint: None,
            preflights: Preflights::default(),
            loaded: false,
            resume: None,
            last_audio: Instant::now(),
        }
    }

    /// Serves the call until it ends, the worker stops, or a newer owner takes it.
    pub(crate) async fn run(mut self, mut signals: mpsc::Receiver<Signal>) -> Exit {
        let end_subject = subject::event(&self.tenant.id, &self.sid, Kind::End);
        let mut ends = match self.ctx.runtime.nats.subscribe(end_subject.clone()).await {
            Ok(ends) => ends,
            Err(error) => {
                tracing::warn!(%error, "cannot subscribe to the call's end");
                return Exit::Retry("subscribe");
            }
        };
        // An end stored while no one owned the call: still transcribe what is left.
        let mut ended = self
            .already_ended(&end_subject)
            .await
            .then_some("ended_before");
        let mut failures = 0u32;
        let stopping = self.ctx.runtime.shutdown.stopping().clone();
        loop {
            let connected = tokio::select! {
                biased;
                () = stopping.cancelled() => return Exit::HandOff,
                connected = self.connect() => connected,
            };
            let flow = match (connected, ended) {
                (Ok(conn), Some(why)) => self.finish(conn, why).await,
                (Ok(conn), None) => {
                    self.pump(conn, &mut signals, &mut ends, &mut failures)
                        .await
                }
                (Err(flow), _) => flow,
            };
            let reason = match flow {
                Flow::Continue => continue,
                Flow::Exit(exit) => return exit,
                Flow::Finish(why) => return Exit::Finished(why),
                Flow::Reconnect(reason) => reason,
            };
            metrics::counter!(Metric::SttReconnects.name(), "reason" => reason).increment(1);
            failures = failures.saturating_add(1);
            if let Some(why) = ended.filter(|_| failures >= ENDED_ATTEMPTS) {
                tracing::error!(
                    reason,
                    "the call ended and its last audio cannot be transcribed"
                );
                return Exit::Finished(why);
            }
            let pause = self.backoff(failures);
            tracing::warn!(reason, pause_ms = pause.as_millis() as u64, "reconnecting");
            match self.idle_wait(pause, &mut signals, &mut ends).await {
                Flow::Continue | Flow::Reconnect(_) => {}
                // Ended while disconnected: reconnect once more to finish the audio.
                Flow::Finish(why) => ended = ended.or(Some(why)),
                Flow::Exit(exit) => return exit,
            }
        }
    }

    /// Whether the call's `end` was stored before we subscribed (e.g. while no one owned it).
    async fn already_ended(&self, end_subject: &str) -> bool {
        let js = &self.ctx.runtime.js;
        let Ok(calls) = js.get_stream_no_info(subject::CALLS_STREAM).await else {
            return false;
        };
        calls.direct_get_last_for_subject(end_subject).await.is_ok()
    }

    fn backoff(&self, failures: u32) -> Duration {
        let base = 200u64.saturating_mul(1 << failures.min(10).saturating_sub(1));
        let capped = base.min(self.ctx.config.reconnect_max().as_millis() as u64);
        let jitter = rand::random_range(0.8..1.2);
        Duration::from_millis((capped as f64 * jitter) as u64)
    }

    /// Waits `pause` without a connection, still honouring stop, end and stale signals.
    async fn idle_wait(
        &mut self,
        pause: Duration,
        signals: &mut mpsc::Receiver<Signal>,
        ends: &mut async_nats::Subscriber,
    ) -> Flow {
        let stopping = self.ctx.runtime.shutdown.stopping().clone();
        tokio::select! {
            () = stopping.cancelled() => Flow::Exit(Exit::HandOff),
            signal = signals.recv() => self.on_signal(signal),
            end = ends.next() => on_end(end.is_some()),
            () = tokio::time::sleep(pause) => Flow::Continue,
        }
    }

    /// Loads the session once (turn, checkpoint; fences older owners), then opens the
    /// audio consumer and the provider stream.
    async fn connect(&mut self) -> Result<Conn, Flow> {
        if !self.loaded {
            self.load_session().await?;
        }
        let audio = self.open_audio().await.map_err(|error| {
            tracing::warn!(%error, "cannot open the audio consumer");
            Flow::Reconnect("audio_consumer")
        })?;
        let options = StreamOptions::for_tenant(&self.tenant);
        let stream = self.ctx.stt.open(&options).await.map_err(|error| {
            tracing::warn!(%error, "cannot open the stt stream");
            Flow::Reconnect(error.kind())
        })?;
        Ok(Conn {
            stream,
            audio,
            timeline: Timeline::new(self.checkpoint),
            assembler: Assembler::new(),
            useful: false,
        })
    }

    async fn load_session(&mut self) -> Result<(), Flow> {
        let redis = &self.ctx.runtime.redis;
        let session = match redis.session_load(&self.sid).await {
            Ok(Some(session)) => Some(session),
            // Lost by Redis: rebuilt from the call's events (none: the call ended).
            Ok(None) => self
                .ctx
                .runtime
                .session_log()
                .rebuild(&self.sid)
                .await
                .map_err(|error| {
                    tracing::warn!(%error, "cannot rebuild the session");
                    Flow::Reconnect("redis")
                })?,
            Err(error) => {
                tracing::warn!(%error, "cannot load the session");
                return Err(Flow::Reconnect("redis"));
            }
        };
        match session {
            Some(session) if session.stt_epoch > self.epoch => return Err(Flow::Exit(Exit::Stale)),
            Some(session) => {
                self.turn = session.turn;
                self.checkpoint = session.stt_checkpoint;
                // Fence the previous owner now, before our first transcript.
                if let (Some(ckpt), true) = (self.checkpoint, session.stt_epoch < self.epoch) {
                    let claimed = redis
                        .session_checkpoint(&self.sid, self.epoch, ckpt)
                        .await
                        .map_err(|_| Flow::Reconnect("redis"))?;
                    if !claimed {
                        return Err(Flow::Exit(Exit::Stale));
                    }
                }
            }
            None => tracing::warn!("the call has no session; transcribing anyway"),
        }
        tracing::info!(turn = self.turn, checkpoint = ?self.checkpoint, "session loaded");
        self.loaded = true;
        Ok(())
    }

    async fn open_audio(&self) -> Result<AudioSource, async_nats::Error> {
        let runtime = &self.ctx.runtime;
        let next = self.checkpoint.map_or(0, |c| c + 1);
        AudioSource::open(
            &runtime.nats,
            &runtime.js,
            (&self.tenant.id, &self.sid),
            self.resume,
            next,
        )
        .await
    }

    /// Moves audio to the provider and events to the commit path until something ends
    /// the connection.
    async fn pump(
        &mut self,
        mut conn: Conn,
        signals: &mut mpsc::Receiver<Signal>,
        ends: &mut async_nats::Subscriber,
        failures: &mut u32,
    ) -> Flow {
        let stopping = self.ctx.runtime.shutdown.stopping().clone();
        let idle_timeout = self.ctx.config.idle_timeout();
        loop {
            let flow = tokio::select! {
                biased;
                () = stopping.cancelled() => Flow::Exit(Exit::HandOff),
                signal = signals.recv() => self.on_signal(signal),
                end = ends.next() => on_end(end.is_some()),
                event = conn.stream.events.recv() => self.on_event(&mut conn, event).await,
                message = conn.audio.next() => self.on_audio(&mut conn, message).await,
                () = tokio::time::sleep_until(self.last_audio + idle_timeout) => Flow::Finish("idle"),
            };
            if conn.useful {
                *failures = 0;
            }
            match flow {
                Flow::Continue => {}
                Flow::Finish(why) => return self.finish(conn, why).await,
                Flow::Reconnect(reason) => {
                    // Resend what no final covered yet, from the oldest such batch.
                    self.resume = conn
                        .timeline
                        .resume_stream_seq(self.checkpoint)
                        .or(self.resume);
                    return Flow::Reconnect(reason);
                }
                Flow::Exit(exit) => return Flow::Exit(exit),
            }
        }
    }

    fn on_signal(&self, signal: Option<Signal>) -> Flow {
        match signal {
            Some(Signal::Stale) => Flow::Exit(Exit::Stale),
            // An evicted session with audio still flowing is a live call: keep serving.
            Some(Signal::SessionGone) if self.last_audio.elapsed() >= self.ctx.heartbeat * 2 => {
                Flow::Finish("session_gone")
            }
            Some(Signal::SessionGone) | None => Flow::Continue,
        }
    }

    pub(crate) async fn on_audio(
        &mut self,
        conn: &mut Conn,
        batch: Option<Result<Batch, Skipped>>,
    ) -> Flow {
        let batch = match batch {
            None => return Flow::Reconnect("audio_consumer"),
            Some(Err(reason)) => return skip(reason),
            Some(Ok(batch)) => batch,
        };
        self.last_audio = Instant::now();
        let Some(bytes) = conn
            .timeline
            .admit(&batch.audio, batch.at, batch.stream_seq)
        else {
            return Flow::Continue;
        };
        match conn.stream.commands.send(SttCommand::Audio(bytes)).await {
            Ok(()) => Flow::Continue,
            Err(_) => Flow::Reconnect("closed"),
        }
    }
}

fn skip(reason: &'static str) -> Flow {
    metrics::counter!(Metric::StageSkipped.name(), "stage" => "stt", "reason" => reason)
        .increment(1);
    tracing::warn!(reason, "skipped an undecodable audio message");
    Flow::Continue
}

/// The `end` subscription fired (`Some`) or closed (the NATS client is gone).
fn on_end(received: bool) -> Flow {
    if received {
        Flow::Finish("end")
    } else {
        Flow::Exit(Exit::Retry("end_subscription"))
    }
}
