//! Publishing what the provider heard, and the checkpoint that makes it durable.
//!
//! Consumes the provider's events on the open connection (assembled into partials,
//! utterances and silence); produces `speech` and `partial` events (the session's current
//! turn), a `preflight` on a new turn when a result shows the caller paused
//! ([`crate::preflight`]) and, per utterance, a `transcript` on a new turn
//! (`session_next_turn`; the preflight's turn when the words are the same), then the
//! session checkpoint (the last `Audio.seq` the utterance covers, fenced by the epoch). The
//! transcript is stored before the checkpoint moves, so a crash in between repeats an
//! utterance rather than losing it. Silence (a final without words, nothing open) moves the
//! checkpoint too, so a takeover resends little audio; so does an utterance of backchannel
//! words only, said while the ingress holds the bot paused for it (no turn: the bot
//! resumes). State: the call's turn and
//! checkpoint (mirrors of the session) and its pending preflight.

use std::future::Future;
use std::time::Duration;

use sb_runtime::metrics::Metric;
use sb_runtime::session_log::RebuildError;
use sb_schemas::{Body, Envelope, Partial, Preflight, Speech, Transcript, now_micros};

use crate::call::{Call, Conn, Exit, Flow};
use crate::preflight::{self, Plan, Settled};
use crate::provider::{Closed, SpeechToText, SttEvent};
use crate::utterance::{Assembled, Utterance};

/// Attempts of a Redis or NATS write before the connection is restarted from the checkpoint.
const ATTEMPTS: u32 = 3;
/// First pause between attempts (doubles).
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// Why an utterance could not be committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CommitError {
    /// The checkpoint refused our epoch: a newer owner has the call.
    Stale,
    /// Redis or NATS kept failing (a bounded label); the utterance will be redone.
    Failed(&'static str),
}

impl From<CommitError> for Flow {
    fn from(error: CommitError) -> Self {
        match error {
            CommitError::Stale => Flow::Exit(Exit::Stale),
            CommitError::Failed(kind) => Flow::Reconnect(kind),
        }
    }
}

impl<S: SpeechToText> Call<S> {
    /// One provider event: `speech`, a `partial`, an utterance committed or silence
    /// checkpointed; a closed stream (or a failed commit) asks for a reconnect.
    pub(crate) async fn on_event(&mut self, conn: &mut Conn, event: Option<SttEvent>) -> Flow {
        let Some(event) = event else {
            return Flow::Reconnect("closed");
        };
        conn.useful = true;
        let result = match event {
            SttEvent::SpeechStarted { at_ms } => {
                let offset_ms = conn.timeline.call_offset_ms(at_ms).unwrap_or(0);
                self.publish_speech(offset_ms).await;
                Ok(())
            }
            SttEvent::Result(result) => match conn.assembler.on_result(&result) {
                Some(Assembled::Partial(text)) => {
                    let stable = preflight::paused(&result).then(|| text.clone());
                    self.publish_partial(text).await;
                    if let Some(text) = stable {
                        self.preflight(&text).await;
                    }
                    Ok(())
                }
                Some(Assembled::Utterance(utterance)) => self.commit(conn, utterance).await,
                Some(Assembled::Silence { end_ms }) => self.silence(conn, end_ms).await,
                None => Ok(()),
            },
            SttEvent::UtteranceEnd { .. } => match conn.assembler.on_utterance_end() {
                Some(Assembled::Utterance(utterance)) => self.commit(conn, utterance).await,
                _ => Ok(()),
            },
            SttEvent::Closed(Closed::Normal) => return Flow::Reconnect("closed"),
            SttEvent::Closed(Closed::Dropped { kind, .. }) => return Flow::Reconnect(kind),
        };
        result.map_or_else(Flow::from, |()| Flow::Continue)
    }

    fn event(&self, turn: u32, body: Body) -> Envelope {
        Envelope::new(self.tenant.id.clone(), self.sid.clone(), turn, body)
    }

    /// `speech`: the caller started speaking at `offset_ms` of the call's audio.
    pub(crate) async fn publish_speech(&self, offset_ms: u64) {
        let body = Body::Speech(Speech {
            epoch: self.epoch,
            offset_ms,
        });
        self.publish_quietly(self.event(self.turn, body)).await;
    }

    /// `partial`: the utterance so far.
    pub(crate) async fn publish_partial(&self, text: String) {
        let body = Body::Partial(Partial {
            epoch: self.epoch,
            text,
        });
        self.publish_quietly(self.event(self.turn, body)).await;
    }

    /// Interim events are not worth a reconnect: a failure is counted (by the publisher)
    /// and logged.
    async fn publish_quietly(&self, event: Envelope) {
        if let Err(error) = self.ctx.runtime.publisher.publish(&event).await {
            tracing::warn!(%error, kind = event.kind().as_str(), "publish failed");
        }
    }

    /// A complete utterance: new turn, `transcript`, checkpoint.
    pub(crate) async fn commit(
        &mut self,
        conn: &mut Conn,
        utterance: Utterance,
    ) -> Result<(), CommitError> {
        let settled = self.preflights.settle(&utterance.text);
        let timeline = &conn.timeline;
        let Some(audio_seq) = timeline
            .covered_through(utterance.end_ms)
            .or(timeline.last_seq())
        else {
            metrics::counter!(Metric::StageSkipped.name(), "stage" => "stt", "reason" => "no_audio").increment(1);
            if settled != Settled::None {
                self.count_preflight("discarded");
            }
            return Ok(());
        };
        if self.over_the_paused_bot(&utterance.text).await {
            if let Settled::Used(turn) | Settled::Discarded(turn) = settled {
                self.count_preflight("discarded");
                tracing::info!(turn, "preflight discarded: the utterance is no turn");
            }
            metrics::counter!(Metric::StageSkipped.name(), "stage" => "stt", "reason" => "backchannel")
                .increment(1);
            tracing::info!(audio_seq, "backchannel over the paused bot: no turn");
            return match self.store_checkpoint(conn, audio_seq).await {
                Err(CommitError::Failed(_)) => Ok(()),
                other => other,
            };
        }
        let spoken_at = timeline
            .spoken_at_us(utterance.last_word_end_ms)
            .unwrap_or_else(now_micros);
        let publisher = &self.ctx.runtime.publisher;
        let turn = match settled {
            // The answer to these words is under way on the preflight's turn.
            Settled::Used(turn) => turn,
            Settled::None | Settled::Discarded(_) => {
                retry("session_next_turn", || self.next_turn())
                    .await
                    .map_err(|_| CommitError::Failed("redis"))?
            }
        };
        let event = self.event(
            turn,
            Body::Transcript(Transcript {
                epoch: self.epoch,
                text: utterance.text,
                confidence: utterance.confidence,
                audio_seq,
                speech_ended_at: spoken_at,
            }),
        );
        retry("publish_transcript", || publisher.publish(&event))
            .await
            .map_err(|_| CommitError::Failed("publish"))?;
        self.turn = turn;
        match settled {
            Settled::Used(_) => self.count_preflight("used"),
            Settled::Discarded(old) => {
                self.count_preflight("discarded");
                tracing::info!(turn = old, "preflight discarded: the final differs");
            }
            Settled::None => {}
        }
        let latency = now_micros().saturating_sub(spoken_at) as f64 / 1e6;
        metrics::histogram!(Metric::StageLatencySeconds.name(), "stage" => "stt").record(latency);
        let stored = self.store_checkpoint(conn, audio_seq).await;
        let outcome = if stored == Err(CommitError::Stale) {
            "stale"
        } else {
            "published"
        };
        metrics::counter!(Metric::SttTranscripts.name(), "outcome" => outcome).increment(1);
        tracing::info!(turn, audio_seq, outcome, "transcript");
        stored
    }

    /// A stable text of the utterance being heard: when the tenant wants it and the text
    /// calls for one, a `preflight` on a new turn (superseding a pending one with other
    /// words). Never while the ingress holds the bot paused for the caller: that utterance
    /// may be a backchannel that must start no turn (`over_the_paused_bot`), and a turn
    /// taken now would supersede the paused answer. Failures are logged, never a reconnect.
    async fn preflight(&mut self, text: &str) {
        if !self.tenant.turn_taking.preemptive {
            return;
        }
        let backchannel =
            sb_runtime::tenants::backchannel::Backchannel::new(&self.tenant.barge_in.backchannel);
        let Plan::Publish { replaces } = self.preflights.consider(text, &backchannel) else {
            return;
        };
        let redis = &self.ctx.runtime.redis;
        if !matches!(redis.session_paused(&self.sid).await, Ok(None)) {
            return;
        }
        let turn = match self.next_turn().await {
            Ok(turn) => turn,
            Err(error) => {
                tracing::warn!(%error, "no turn for a preflight");
                return;
            }
        };
        // The turn is taken: numbers never repeat, even if the publish fails.
        self.turn = turn;
        let event = self.event(
            turn,
            Body::Preflight(Preflight {
                epoch: self.epoch,
                text: text.to_owned(),
            }),
        );
        if let Some(old) = replaces {
            // Superseded by the turn just taken, whether or not its preflight goes out.
            self.preflights.forget();
            self.count_preflight("discarded");
            tracing::info!(turn = old, "preflight discarded: replaced");
        }
        if let Err(error) = self.ctx.runtime.publisher.publish(&event).await {
            tracing::warn!(%error, turn, "preflight not published");
            return;
        }
        self.preflights.published(turn, text.to_owned());
        self.count_preflight("started");
        tracing::info!(turn, "preflight");
    }

    fn count_preflight(&self, outcome: &'static str) {
        metrics::counter!(Metric::SttPreflights.name(), "tenant" => self.tenant.id.as_str().to_owned(), "outcome" => outcome)
            .increment(1);
    }

    /// Whether `text` is only backchannel ("uh-huh", by the tenant's list) said while the
    /// ingress holds the bot paused for it: no turn, so the bot resumes instead of being
    /// superseded (ARCHITECTURE §2f). An unreadable marker counts as not paused.
    async fn over_the_paused_bot(&self, text: &str) -> bool {
        let backchannel =
            sb_runtime::tenants::backchannel::Backchannel::new(&self.tenant.barge_in.backchannel);
        if !backchannel.only_backchannel(text) {
            return false;
        }
        matches!(
            self.ctx.runtime.redis.session_paused(&self.sid).await,
            Ok(Some(_))
        )
    }

    /// The next turn number, above this owner's last one; a session Redis lost is rebuilt
    /// from the call's events first, so numbers never go back.
    async fn next_turn(&self) -> Result<u32, RebuildError> {
        let redis = &self.ctx.runtime.redis;
        if let Some(turn) = redis.session_next_turn(&self.sid, self.turn).await? {
            return Ok(turn);
        }
        self.ctx.runtime.session_log().restore(&self.sid).await?;
        let turn = redis.session_next_turn(&self.sid, self.turn).await?;
        turn.ok_or(RebuildError::Missing)
    }

    /// A final without words while nothing is open: counted, and the checkpoint moves over
    /// the silence.
    pub(crate) async fn silence(
        &mut self,
        conn: &mut Conn,
        end_ms: u64,
    ) -> Result<(), CommitError> {
        metrics::counter!(Metric::StageSkipped.name(), "stage" => "stt", "reason" => "empty_final")
            .increment(1);
        let Some(seq) = conn.timeline.covered_through(end_ms) else {
            return Ok(());
        };
        if self.checkpoint.is_some_and(|c| c >= seq) {
            return Ok(());
        }
        match self.store_checkpoint(conn, seq).await {
            Err(CommitError::Failed(_)) => Ok(()),
            other => other,
        }
    }

    async fn store_checkpoint(&mut self, conn: &mut Conn, seq: u64) -> Result<(), CommitError> {
        let redis = &self.ctx.runtime.redis;
        let stored = retry("session_checkpoint", || {
            redis.session_checkpoint(&self.sid, self.epoch, seq)
        })
        .await
        .map_err(|_| CommitError::Failed("redis"))?;
        if !stored {
            tracing::warn!(
                epoch = self.epoch,
                "checkpoint refused: a newer owner has the call"
            );
            return Err(CommitError::Stale);
        }
        self.checkpoint = Some(seq);
        conn.timeline.prune_through(seq);
        Ok(())
    }
}

/// Runs `op` up to [`ATTEMPTS`] times with a doubling pause.
async fn retry<T, E, F, Fut>(what: &'static str, mut op: F) -> Result<T, E>
where
    E: std::fmt::Display,
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, E>>,
{
    let mut pause = RETRY_PAUSE;
    let mut attempt = 1;
    loop {
        match op().await {
            Ok(value) => return Ok(value),
            Err(error) if attempt >= ATTEMPTS => {
                tracing::warn!(what, %error, "giving up");
                return Err(error);
            }
            Err(error) => {
                tracing::warn!(what, attempt, %error, "retrying");
                tokio::time::sleep(pause).await;
                pause *= 2;
                attempt += 1;
            }
        }
    }
}
