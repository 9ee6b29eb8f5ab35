//! The [`Emitter`]: one delivery's outputs, and the per-turn chores every stage shares.
//!
//! Consumes the events a stage makes for one input; produces them through the stage's
//! [`Outbox`] at once (so a streaming stage's tokens leave as they are made) and keeps
//! their pending store acks; the runner acks the input only after every output is stored.
//! Output ids are derived from the input id, the stage and the output's position, so a
//! redelivered input re-publishes the same ids and JetStream stores them once. It also
//! answers [`Emitter::still_wanted`] (the one staleness check), records the stage's
//! first-output latency on the first emit, and counts skips, fallbacks and cancellations
//! under the stage's own label. State: the pending acks and the turn's verdict, for one
//! delivery.

use std::{collections::VecDeque, sync::Arc};

use sb_schemas::{Body, CallSid, Envelope, Kind, SCHEMA_VERSION, TenantId, now_micros};
use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::meter::StageMeter;
use crate::outbox::{Outbox, Stored};
use crate::progress::Stale;
use crate::publisher::PublishError;
use crate::stage::StageError;
use crate::state::Sessions;

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

/// What an emitter is built from, besides the input (the runner's, or a test's).
pub(crate) struct Wiring {
    pub(crate) outbox: Arc<dyn Outbox>,
    pub(crate) meter: Arc<StageMeter>,
    pub(crate) sessions: Option<Arc<dyn Sessions>>,
    pub(crate) first_output: Option<Kind>,
    pub(crate) delivered: u64,
    pub(crate) abort: CancellationToken,
}

/// Collects one delivery's outputs.
pub struct Emitter {
    wiring: Wiring,
    origin: Origin,
    /// How many events of each kind this delivery has made (see [`derived_id`]).
    next_index: [u32; Kind::ALL.len()],
    pending: VecDeque<Stored>,
    published: usize,
    /// The first-output latency is recorded (or was never to be).
    timed: bool,
    /// Once a turn is stale it stays stale: later checks cost nothing and count nothing.
    stale: Option<Stale>,
}

impl Emitter {
    pub(crate) fn new(wiring: Wiring, input: &Envelope) -> Self {
        let origin = Origin {
            id: input.id,
            at: input.at,
            tenant: input.tenant.clone(),
            call_sid: input.call_sid.clone(),
            turn: input.turn,
        };
        Self {
            wiring,
            origin,
            next_index: [0; Kind::ALL.len()],
            pending: VecDeque::new(),
            published: 0,
            timed: false,
            stale: None,
        }
    }

    /// A new event of the input's call and turn. Its id is derived from the input id, the
    /// stage, its kind and how many events of that kind this delivery has made so far, so
    /// a redelivery repeats it.
    pub fn event(&mut self, body: Body) -> Envelope {
        let kind = body.kind();
        let index = self.next_index[kind.index()];
        self.next_index[kind.index()] += 1;
        let stage = self.wiring.meter.stage();
        Envelope {
            v: SCHEMA_VERSION,
            id: derived_id(self.origin.id, self.origin.at, stage, kind, index),
            tenant: self.origin.tenant.clone(),
            call_sid: self.origin.call_sid.clone(),
            turn: self.origin.turn,
            at: now_micros(),
            body,
        }
    }

    /// Publishes an output now; the runner waits for its store ack before acking the
    /// input. The stage's first output (of its [`crate::Stage::FIRST_OUTPUT`] kind) records
    /// the stage's latency.
    pub async fn emit(&mut self, event: Envelope) -> Result<(), StageError> {
        while self.pending.len() >= MAX_PENDING_ACKS {
            if let Some(oldest) = self.pending.pop_front() {
                oldest.wait().await?;
            }
        }
        let stored = self.wiring.outbox.send(&event).await?;
        self.pending.push_back(stored);
        self.published += 1;
        if !self.timed && self.wiring.first_output.is_none_or(|k| k == event.kind()) {
            self.timed = true;
            let latency = now_micros().saturating_sub(self.origin.at) as f64 / 1e6;
            self.wiring.meter.first_output.record(latency);
        }
        Ok(())
    }

    /// Whether the input's turn is still worth working on: false once the caller barged in
    /// on it or a newer turn superseded it ([`crate::progress::Progress::stale`], read from the
    /// stage's [`crate::Stage::sessions`]). Fails open: a failed read keeps the turn wanted
    /// (a Redis hiccup must not silence the caller). The first `false` is counted
    /// (`switchboard_bargein_cancellations_total{stage}`) and logged; later calls answer
    /// from memory.
    pub async fn still_wanted(&mut self) -> bool {
        if self.stale.is_some() {
            return false;
        }
        let Some(sessions) = &self.wiring.sessions else {
            return true;
        };
        let progress = match sessions.progress(&self.origin.call_sid).await {
            Ok(progress) => progress,
            Err(error) => {
                tracing::warn!(%error, "staleness check failed; continuing");
                return true;
            }
        };
        let Some(stale) = progress.stale(self.origin.turn) else {
            return true;
        };
        self.stale = Some(stale);
        self.wiring.meter.cancelled.increment(1);
        tracing::info!(?stale, published = self.published, "turn no longer wanted");
        false
    }

    /// Why the turn stopped being wanted, once [`Emitter::still_wanted`] said so.
    pub fn stale(&self) -> Option<Stale> {
        self.stale
    }

    /// Counts and logs an input skipped on purpose, under the stage's label.
    pub fn skip(&self, reason: &'static str) {
        self.wiring.meter.skipped(reason);
    }

    /// Counts a fallback the caller hears, under the stage's label.
    pub fn fallback(&self, reason: &'static str) {
        self.wiring.meter.fallback(reason);
    }

    /// How many times this input has been delivered (1 on the first delivery).
    pub fn delivered(&self) -> u64 {
        self.wiring.delivered
    }

    /// Fires when the drain deadline passed: a long handler should stop and return.
    pub fn abort(&self) -> &CancellationToken {
        &self.wiring.abort
    }

    /// Waits until every output is stored; returns how many were published.
    pub(crate) async fn finish(mut self) -> Result<usize, PublishError> {
        while let Some(pending) = self.pending.pop_front() {
            pending.wait().await?;
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
    use crate::stage::Stage;
    use crate::testing::{MemorySessions, drive};
    use sb_schemas::{Dtmf, Sentence, Token};

    /// Emits a token, then sentences while the turn is still wanted (at most three),
    /// recording each verdict.
    struct Speaking {
        sessions: Option<Arc<MemorySessions>>,
        verdicts: std::sync::Mutex<Vec<bool>>,
    }

    impl Stage for Speaking {
        const CONSUMER: &'static str = "unit_speaking";
        const FIRST_OUTPUT: Option<Kind> = Some(Kind::Sentence);

        fn sessions(&self) -> Option<Arc<dyn Sessions>> {
            self.sessions.clone().map(|s| s as Arc<dyn Sessions>)
        }

        async fn handle(&self, _input: Envelope, out: &mut Emitter) -> Result<(), StageError> {
            let token = out.event(Body::Token(Token {
                index: 0,
                text: "Hi".into(),
            }));
            out.emit(token).await?;
            for index in 0..3 {
                let wanted = out.still_wanted().await;
                self.verdicts.lock().unwrap().push(wanted);
                if !wanted {
                    break;
                }
                if index == 1 {
                    // The caller barges in on this turn while the second sentence goes out.
                    if let Some(sessions) = &self.sessions {
                        sessions.interrupt(&sid(), 2);
                    }
                }
                let sentence = out.event(Body::Sentence(Sentence {
                    index,
                    text: format!("Sentence {index}."),
                    last: false,
                    fallback: false,
                }));
                out.emit(sentence).await?;
            }
            // Asked again after the verdict: answered from memory.
            let again = out.still_wanted().await;
            self.verdicts.lock().unwrap().push(again);
            Ok(())
        }
    }

    /// [`Speaking`] under a name no other test uses, so its metrics are its own even when
    /// the tests share a process (and so a recorder).
    struct Counted(Speaking);

    impl Stage for Counted {
        const CONSUMER: &'static str = "unit_counted";
        const FIRST_OUTPUT: Option<Kind> = Some(Kind::Sentence);

        fn sessions(&self) -> Option<Arc<dyn Sessions>> {
            self.0.sessions()
        }

        async fn handle(&self, input: Envelope, out: &mut Emitter) -> Result<(), StageError> {
            self.0.handle(input, out).await
        }
    }

    fn sid() -> CallSid {
        CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap()
    }

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

    fn speaking(sessions: Option<Arc<MemorySessions>>) -> Speaking {
        Speaking {
            sessions,
            verdicts: std::sync::Mutex::default(),
        }
    }

    fn counted(text: &str, metric: &str, stage: &str) -> f64 {
        let prefix = format!("{metric}{{stage=\"{stage}\"}} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .map_or(0.0, |v| v.parse().unwrap())
    }

    /// The one staleness check: wanted until the caller barges in on the turn, then not
    /// (and not again, answered from memory); the cancellation is counted once under the
    /// stage's label; the first-output latency is recorded once, on the first sentence
    /// (the stage's `FIRST_OUTPUT`), not on the earlier token.
    #[tokio::test]
    async fn still_wanted_until_interrupted_counted_once() {
        let handle = crate::metrics::install();
        let sessions = Arc::new(MemorySessions::default());
        sessions.next_turn(&sid());
        sessions.next_turn(&sid());
        let stage = Counted(speaking(Some(sessions.clone())));
        let driven = drive(&stage, input()).await;
        assert!(driven.result.is_ok());
        assert_eq!(
            *stage.0.verdicts.lock().unwrap(),
            [true, true, false, false]
        );
        assert_eq!(driven.sentences(), ["Sentence 0.", "Sentence 1."]);
        let text = handle.render();
        let cancelled = "switchboard_bargein_cancellations_total";
        assert_eq!(counted(&text, cancelled, "unit_counted"), 1.0, "{text}");
        let latency = "switchboard_stage_latency_seconds_count";
        assert_eq!(counted(&text, latency, "unit_counted"), 1.0, "{text}");
    }

    /// Fails open: while the session store is down every check says "wanted" (the caller
    /// keeps hearing the answer) and nothing is counted as cancelled; a stage without
    /// sessions never goes stale.
    #[tokio::test]
    async fn still_wanted_fails_open() {
        let sessions = Arc::new(MemorySessions::default());
        sessions.interrupt(&sid(), 5);
        sessions.fail(true);
        let stage = speaking(Some(sessions.clone()));
        let driven = drive(&stage, input()).await;
        assert!(driven.result.is_ok());
        assert_eq!(*stage.verdicts.lock().unwrap(), [true, true, true, true]);
        assert_eq!(driven.sentences().len(), 3);

        let stage = speaking(None);
        let driven = drive(&stage, input()).await;
        assert_eq!(*stage.verdicts.lock().unwrap(), [true, true, true, true]);
        assert_eq!(driven.sentences().len(), 3);
    }

    /// Outputs inherit the input's call and turn and get ids derived from it, so driving
    /// the same input twice yields the same ids (a redelivery is stored once).
    #[tokio::test]
    async fn outputs_inherit_the_input_and_repeat_their_ids() {
        let input = input();
        let first = drive(&speaking(None), input.clone()).await;
        let second = drive(&speaking(None), input.clone()).await;
        let ids = |d: &crate::testing::Driven| d.outputs.iter().map(|e| e.id).collect::<Vec<_>>();
        assert_eq!(ids(&first), ids(&second));
        assert_eq!(first.outputs.len(), 4);
        for event in &first.outputs {
            assert_eq!((&event.call_sid, event.turn), (&input.call_sid, input.turn));
            assert_ne!(event.id, input.id);
        }
    }
}
