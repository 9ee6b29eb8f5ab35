//! A call's caller audio for one provider connection: live from a core subscription, and
//! from JetStream only to catch up.
//!
//! Why not only a JetStream consumer: an ordered consumer per call, filtered to one subject
//! of the shared `AUDIO` stream, makes nats-server scan past every other call's messages to
//! find each of this call's, so its cost grows with the square of the concurrent calls
//! (measured: over half of nats-server's CPU at 300 calls). A core subscription is routed
//! without touching the store.
//!
//! Consumes `audio.{tenant}.{sid}.in` as a core subscription (made first, so nothing
//! published after it is missed) and, until the two join, an ordered consumer on the same
//! subject from `resume` (the call's start, or a reconnect's resume point). Produces the
//! call's batches in frame order, each once: stored ones until a live batch follows on
//! from what was produced, then live ones only. Core delivery is at most once, so a gap in
//! the live batches (a slow-consumer drop) reopens the catch-up from the last stream
//! sequence seen. Live batches held for [`GAP_WAIT`] while the store does not fill the
//! frames before them (its leader is being elected after a node died, or it never got
//! them) are produced anyway, the gap counted as lost (`live_audio_gap_skipped`): a second
//! of the caller lost, rather than the rest of the call unheard. State: the live batches
//! held back while catching up, the next frame expected ([`Merge`], pure), and the two
//! subscriptions.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull},
};
use futures::StreamExt as _;
use sb_runtime::metrics::Metric;
use sb_schemas::{Audio, Body, CallSid, TenantId, decode, subject};
use tokio::time::Instant;
use tracing::Instrument as _;

use sb_audio::FRAME_BYTES;

/// How long live audio waits for the store to fill the frames before it.
const GAP_WAIT: Duration = Duration::from_secs(2);

/// One batch of caller audio and where it came from.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Batch {
    pub(crate) audio: Audio,
    /// The ingress' publish time (µs).
    pub(crate) at: u64,
    /// Its `AUDIO` stream sequence, when it came from the store.
    pub(crate) stream_seq: Option<u64>,
}

impl Batch {
    fn end(&self) -> u64 {
        self.audio.seq + self.audio.payload.0.len().div_ceil(FRAME_BYTES) as u64
    }
}

/// What a live batch did to the merge.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Live {
    /// It followed on from what was produced: the catch-up is no longer needed.
    Joined,
    /// It is ahead of what was produced: held until the frames before it arrive.
    Held,
    /// Nothing new in it.
    Duplicate,
}

/// Orders batches from the two sources by frame and drops what was already produced.
#[derive(Debug, Default)]
pub(crate) struct Merge {
    /// The next frame to produce.
    next: u64,
    held: BTreeMap<u64, Batch>,
}

impl Merge {
    /// Produces from frame `next` on (frames before it were covered by the checkpoint).
    pub(crate) fn new(next: u64) -> Self {
        Self {
            next,
            held: BTreeMap::new(),
        }
    }

    /// A stored batch: the store is in order and complete, so it is produced unless
    /// already produced (frames the store lost are skipped over, not waited for).
    pub(crate) fn stored(&mut self, batch: Batch, out: &mut VecDeque<Batch>) {
        if batch.end() > self.next {
            self.produce(batch, out);
        }
    }

    /// A live batch.
    pub(crate) fn live(&mut self, batch: Batch, out: &mut VecDeque<Batch>) -> Live {
        if batch.end() <= self.next {
            Live::Duplicate
        } else if batch.audio.seq > self.next {
            self.held.insert(batch.audio.seq, batch);
            Live::Held
        } else {
            self.produce(batch, out);
            Live::Joined
        }
    }

    /// Whether live batches are waiting for earlier frames.
    pub(crate) fn holding(&self) -> bool {
        !self.held.is_empty()
    }

    /// Gives up on the frames before the first held batch: produces from it on. Returns
    /// the frames given up.
    pub(crate) fn skip_gap(&mut self, out: &mut VecDeque<Batch>) -> u64 {
        let Some(&first) = self.held.keys().next() else {
            return 0;
        };
        let lost = first.saturating_sub(self.next);
        self.next = self.next.max(first);
        self.release(out);
        lost
    }

    fn produce(&mut self, batch: Batch, out: &mut VecDeque<Batch>) {
        self.next = self.next.max(batch.end());
        out.push_back(batch);
        self.release(out);
    }

    /// Produces the held batches that now follow on.
    fn release(&mut self, out: &mut VecDeque<Batch>) {
        while let Some(entry) = self.held.first_entry() {
            if *entry.key() > self.next {
                break;
            }
            let batch = entry.remove();
            if batch.end() > self.next {
                self.next = batch.end();
                out.push_back(batch);
            }
        }
    }
}

/// Why one message was skipped (counted by the caller).
pub(crate) type Skipped = &'static str;

/// A message from one of the two sources.
#[expect(
    clippy::large_enum_variant,
    reason = "lives on the stack between one select and one match; boxing would allocate per message"
)]
enum Got {
    Live(Option<async_nats::Message>),
    Stored(Option<Result<jetstream::Message, pull::OrderedError>>),
    /// Live batches waited [`GAP_WAIT`] for the frames before them.
    GapWaited,
}

/// The catch-up consumer and its name, to delete it once it is not needed: left alone, it
/// would keep matching this call's new messages until its pull request expires.
struct Catchup {
    messages: pull::Ordered,
    name: String,
}

/// The live subscription and, while needed, the catch-up consumer.
pub(crate) struct AudioSource {
    js: jetstream::Context,
    subject: String,
    live: async_nats::Subscriber,
    catchup: Option<Catchup>,
    /// A live gap was seen: reopen the catch-up before reading on.
    reopen: bool,
    last_stream_seq: Option<u64>,
    merge: Merge,
    ready: VecDeque<Batch>,
    /// Since when live batches are held.
    holding_since: Option<Instant>,
}

impl AudioSource {
    /// Subscribes live, then opens the catch-up from stream sequence `resume` (`None`: the
    /// call's start), producing from frame `next` on.
    pub(crate) async fn open(
        nats: &async_nats::Client,
        js: &jetstream::Context,
        (tenant, sid): (&TenantId, &CallSid),
        resume: Option<u64>,
        next: u64,
    ) -> Result<Self, async_nats::Error> {
        let subject = subject::audio_in(tenant, sid);
        let live = nats.subscribe(subject.clone()).await?;
        let mut source = Self {
            js: js.clone(),
            subject,
            live,
            catchup: None,
            reopen: false,
            last_stream_seq: resume.map(|s| s.saturating_sub(1)),
            merge: Merge::new(next),
            ready: VecDeque::new(),
            holding_since: None,
        };
        source.catchup = Some(open_catchup(js, &source.subject, resume).await?);
        Ok(source)
    }

    /// The next batch in frame order; `Some(Err)` for a skipped message; `None` when the
    /// live subscription ended (the NATS connection is gone) or the catch-up cannot reopen.
    /// Cancel-safe: state changes only after a message is in hand.
    pub(crate) async fn next(&mut self) -> Option<Result<Batch, Skipped>> {
        loop {
            if let Some(batch) = self.ready.pop_front() {
                return Some(Ok(batch));
            }
            if self.reopen {
                let from = self.last_stream_seq.map(|s| s + 1);
                match open_catchup(&self.js, &self.subject, from).await {
                    Ok(catchup) => self.catchup = Some(catchup),
                    Err(error) => {
                        tracing::warn!(%error, "cannot reopen the audio catch-up");
                        return None;
                    }
                }
                self.reopen = false;
            }
            if !self.merge.holding() {
                self.holding_since = None;
            }
            let gap_deadline = self
                .merge
                .holding()
                .then(|| *self.holding_since.get_or_insert_with(Instant::now) + GAP_WAIT);
            let gap_waited = async {
                match gap_deadline {
                    Some(deadline) => tokio::time::sleep_until(deadline).await,
                    None => std::future::pending().await,
                }
            };
            let got = match &mut self.catchup {
                Some(catchup) => tokio::select! {
                    message = self.live.next() => Got::Live(message),
                    message = catchup.messages.next() => Got::Stored(message),
                    () = gap_waited => Got::GapWaited,
                },
                None => tokio::select! {
                    message = self.live.next() => Got::Live(message),
                    () = gap_waited => Got::GapWaited,
                },
            };
            let skipped = match got {
                Got::Live(message) => self.on_live(message?),
                Got::Stored(message) => self.on_stored(message),
                Got::GapWaited => {
                    self.skip_gap();
                    None
                }
            };
            if let Some(reason) = skipped {
                return Some(Err(reason));
            }
        }
    }

    fn on_live(&mut self, message: async_nats::Message) -> Option<Skipped> {
        let batch = match batch(&message.payload, None) {
            Ok(batch) => batch,
            Err(reason) => return Some(reason),
        };
        match self.merge.live(batch, &mut self.ready) {
            Live::Joined if !self.merge.holding() => self.end_catchup(),
            Live::Held if self.catchup.is_none() => {
                metrics::counter!(Metric::StageSkipped.name(), "stage" => "stt", "reason" => "live_audio_gap")
                    .increment(1);
                tracing::warn!("live audio skipped frames; catching up from the stream");
                self.reopen = true;
            }
            Live::Joined | Live::Held | Live::Duplicate => {}
        }
        None
    }

    fn on_stored(
        &mut self,
        message: Option<Result<jetstream::Message, pull::OrderedError>>,
    ) -> Option<Skipped> {
        let message = match message {
            Some(Ok(message)) => message,
            Some(Err(error)) => {
                tracing::warn!(%error, "audio catch-up error");
                return None;
            }
            None => {
                // The consumer ended: read on live, reopening on the next gap.
                self.end_catchup();
                return None;
            }
        };
        let info = message.info().ok();
        if let (Some(info), Some(catchup)) = (&info, &mut self.catchup)
            && catchup.name != info.consumer
        {
            // An ordered consumer recreates itself under a new name after a hiccup.
            info.consumer.clone_into(&mut catchup.name);
        }
        let stream_seq = info.as_ref().map(|i| i.stream_sequence);
        let caught_up = info.as_ref().is_some_and(|i| i.pending == 0);
        self.last_stream_seq = stream_seq.or(self.last_stream_seq);
        let batch = match batch(&message.payload, stream_seq) {
            Ok(batch) => batch,
            Err(reason) => return Some(reason),
        };
        self.merge.stored(batch, &mut self.ready);
        if caught_up && !self.merge.holding() {
            self.end_catchup();
        }
        None
    }

    /// The store did not fill the gap before the held live batches in time: they play on,
    /// the missing frames counted as lost; the catch-up (if any) is no longer needed.
    fn skip_gap(&mut self) {
        let lost = self.merge.skip_gap(&mut self.ready);
        self.holding_since = None;
        metrics::counter!(Metric::StageSkipped.name(), "stage" => "stt", "reason" => "live_audio_gap_skipped")
            .increment(1);
        tracing::warn!(
            lost_frames = lost,
            "audio gap not filled by the store in time; skipped"
        );
        if !self.merge.holding() {
            self.end_catchup();
            self.reopen = false;
        }
    }

    /// Drops the catch-up and deletes its consumer on the server, off this task's path.
    fn end_catchup(&mut self) {
        let Some(Catchup { name, .. }) = self.catchup.take() else {
            return;
        };
        let js = self.js.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            let delete = async move {
                if let Err(error) = js
                    .delete_consumer_from_stream(&name, subject::AUDIO_STREAM)
                    .await
                {
                    tracing::debug!(%error, consumer = %name, "catch-up consumer not deleted");
                }
            };
            runtime.spawn(delete.instrument(tracing::Span::current()));
        }
    }
}

impl Drop for AudioSource {
    fn drop(&mut self) {
        self.end_catchup();
    }
}

/// An ordered consumer on `subject` from stream sequence `from` (`None`: the start).
async fn open_catchup(
    js: &jetstream::Context,
    subject: &str,
    from: Option<u64>,
) -> Result<Catchup, async_nats::Error> {
    let stream = js.get_stream_no_info(subject::AUDIO_STREAM).await?;
    let deliver_policy = match from {
        Some(start_sequence) => DeliverPolicy::ByStartSequence { start_sequence },
        None => DeliverPolicy::All,
    };
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subject.to_owned(),
            deliver_policy,
            ..Default::default()
        })
        .await?;
    let name = consumer.cached_info().name.clone();
    Ok(Catchup {
        messages: consumer.messages().await?,
        name,
    })
}

fn batch(payload: &[u8], stream_seq: Option<u64>) -> Result<Batch, Skipped> {
    let event = decode(payload).map_err(|e| e.kind())?;
    match event.body {
        Body::Audio(audio) => Ok(Batch {
            audio,
            at: event.at,
            stream_seq,
        }),
        _ => Err("not_audio"),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use sb_schemas::Mulaw;

    use super::*;

    fn batch(seq: u64, frames: usize) -> Batch {
        Batch {
            audio: Audio {
                seq,
                timestamp_ms: seq * 20,
                payload: Mulaw(Bytes::from(vec![0xFF; frames * FRAME_BYTES])),
            },
            at: seq,
            stream_seq: None,
        }
    }

    fn seqs(out: &VecDeque<Batch>) -> Vec<u64> {
        out.iter().map(|b| b.audio.seq).collect()
    }

    /// Live batches that arrive while the store is still catching up wait for it; the
    /// first live batch that follows on joins the two, and the held ones follow in order.
    #[test]
    fn catch_up_then_join_live() {
        let mut merge = Merge::new(0);
        let mut out = VecDeque::new();
        assert_eq!(merge.live(batch(4, 2), &mut out), Live::Held);
        assert_eq!(merge.live(batch(6, 2), &mut out), Live::Held);
        merge.stored(batch(0, 2), &mut out);
        merge.stored(batch(2, 2), &mut out);
        assert_eq!(
            seqs(&out),
            [0, 2, 4, 6],
            "held live batches follow the store"
        );
        assert!(!merge.holding());
        // The store catches up with what live already gave: nothing twice.
        merge.stored(batch(4, 2), &mut out);
        assert_eq!(merge.live(batch(6, 2), &mut out), Live::Duplicate);
        assert_eq!(merge.live(batch(8, 1), &mut out), Live::Joined);
        assert_eq!(seqs(&out), [0, 2, 4, 6, 8]);
    }

    /// After a checkpoint nothing at or before it is produced; a live batch after a lost
    /// one is held (the caller reopens the catch-up), and the store fills the gap.
    /// A gap the store never fills: skipping it produces the held batches in order, and
    /// later live batches follow on.
    #[test]
    fn an_unfilled_gap_is_skipped() {
        let mut merge = Merge::new(0);
        let mut out = VecDeque::new();
        merge.live(batch(0, 10), &mut out);
        assert_eq!(merge.live(batch(20, 10), &mut out), Live::Held);
        assert_eq!(merge.live(batch(30, 10), &mut out), Live::Held);
        assert_eq!(seqs(&out), [0]);
        assert_eq!(merge.skip_gap(&mut out), 10);
        assert_eq!(seqs(&out), [0, 20, 30]);
        assert!(!merge.holding());
        assert_eq!(merge.live(batch(40, 10), &mut out), Live::Joined);
        assert_eq!(merge.skip_gap(&mut out), 0, "nothing held, nothing skipped");
    }

    #[test]
    fn checkpoint_floor_and_live_gap() {
        let mut merge = Merge::new(10);
        let mut out = VecDeque::new();
        merge.stored(batch(6, 4), &mut out);
        assert!(out.is_empty(), "frames 6..10 were covered");
        assert_eq!(merge.live(batch(10, 2), &mut out), Live::Joined);
        assert_eq!(
            merge.live(batch(14, 2), &mut out),
            Live::Held,
            "12..14 lost"
        );
        merge.stored(batch(12, 2), &mut out);
        assert_eq!(seqs(&out), [10, 12, 14]);
        // A partial overlap still moves on: the timeline trims what was sent.
        merge.stored(batch(15, 3), &mut out);
        assert_eq!(seqs(&out), [10, 12, 14, 15]);
    }
}
