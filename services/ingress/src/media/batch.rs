//! Caller audio batching (`AUDIO_BATCH_MS`) and the side task that checks publish acks.
//!
//! Consumes decoded Twilio media payloads and pending publish acks; produces `Audio` bodies
//! numbered from 0 (one per `frames_per_batch` frames) and counts failed or unchecked acks.
//! Batching never delays a live turn: a frame with any voice in it, and every frame for
//! `hold` after one (the STT's endpointing silence and a margin), flushes the batch at
//! once, so barge-in and end-of-turn detection see audio as soon as it arrives; only the
//! silence between turns waits to fill a batch. State: the batch being filled and the
//! frames since voice, in the socket task; the acks in flight, in one task per process.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use futures::StreamExt as _;
use futures::stream::FuturesUnordered;
use metrics::Counter;
use sb_schemas::{Audio, CallSid, Mulaw, TenantId};
use tokio::sync::mpsc;

use crate::BackendError;

/// A frame at or above this level (dBFS) counts as voice for flushing: 10 dB more
/// sensitive than a typical STT VAD (-40), so whatever a vendor could call speech is sent
/// at once. Line noise above it only costs batching, never latency.
const VOICE_DBFS: f32 = -50.0;

/// Whether a µ-law frame carries voice (its level reaches [`VOICE_DBFS`]).
fn voiced(payload: &[u8]) -> bool {
    sb_audio::vad::mulaw_dbfs(payload) >= VOICE_DBFS
}

/// Groups Twilio frames into `audio.in` events.
#[derive(Debug)]
pub(crate) struct AudioBatch {
    frames_per_batch: usize,
    /// Frames after a voiced one that are still sent at once.
    hold_frames: u64,
    /// Frames since the last voiced one (`None`: no voice yet).
    since_voice: Option<u64>,
    /// Index of the next frame, counted from 0 per call.
    next_seq: u64,
    /// Added to Twilio's timestamps (ms since its stream started): a resumed call's new
    /// stream starts at 0 again.
    timestamp_offset_ms: u64,
    first_seq: u64,
    first_timestamp_ms: u64,
    frames: usize,
    buffer: BytesMut,
}

impl AudioBatch {
    /// Batches of up to `frames_per_batch` frames; voice and the `hold_frames` after it
    /// are flushed at once.
    pub(crate) fn new(frames_per_batch: usize, hold_frames: u64) -> Self {
        Self {
            frames_per_batch: frames_per_batch.max(1),
            hold_frames,
            since_voice: None,
            next_seq: 0,
            timestamp_offset_ms: 0,
            first_seq: 0,
            first_timestamp_ms: 0,
            frames: 0,
            buffer: BytesMut::new(),
        }
    }

    /// Numbers frames on from `seq` (a call resumed on a new stream), its timestamps
    /// following the old stream's 20 ms per frame.
    pub(crate) fn start_at(&mut self, seq: u64) {
        self.next_seq = seq;
        self.timestamp_offset_ms = seq * 20;
    }

    /// Adds one frame; returns a batch that is full or must not wait.
    pub(crate) fn push(&mut self, payload: Vec<u8>, timestamp_ms: u64) -> Option<Audio> {
        let timestamp_ms = timestamp_ms + self.timestamp_offset_ms;
        let seq = self.next_seq;
        self.next_seq += 1;
        if self.frames_per_batch == 1 {
            return Some(Audio {
                seq,
                timestamp_ms,
                payload: Mulaw(Bytes::from(payload)),
            });
        }
        self.since_voice = if voiced(&payload) {
            Some(0)
        } else {
            self.since_voice.map(|n| n + 1)
        };
        let urgent = self.since_voice.is_some_and(|n| n <= self.hold_frames);
        if self.frames == 0 {
            self.first_seq = seq;
            self.first_timestamp_ms = timestamp_ms;
        }
        self.buffer.extend_from_slice(&payload);
        self.frames += 1;
        (urgent || self.frames >= self.frames_per_batch)
            .then(|| self.flush())
            .flatten()
    }

    /// The partial batch, if any (at the end of the call).
    pub(crate) fn flush(&mut self) -> Option<Audio> {
        if self.frames == 0 {
            return None;
        }
        self.frames = 0;
        Some(Audio {
            seq: self.first_seq,
            timestamp_ms: self.first_timestamp_ms,
            payload: Mulaw(self.buffer.split().freeze()),
        })
    }

    /// Frames received so far.
    pub(crate) fn frames(&self) -> u64 {
        self.next_seq
    }
}

/// The call a pending ack belongs to, for the log line if it fails.
#[derive(Debug)]
pub(crate) struct CallTag {
    pub(crate) tenant: TenantId,
    pub(crate) sid: CallSid,
}

/// Pending acks of every call's pipelined publishes, checked by one task off the sockets'
/// path: one task (instead of one per call) takes the acks' wake-ups in batches.
#[derive(Debug)]
pub(crate) struct AckQueue<A> {
    sender: mpsc::Sender<(A, Arc<CallTag>)>,
    unchecked: Counter,
}

impl<A> AckQueue<A>
where
    A: Future<Output = Result<(), BackendError>> + Send + 'static,
{
    /// Spawns the checker: at most `in_flight` acks awaited at once, `in_flight` more queued;
    /// beyond that an ack is dropped unchecked (the message is still published) and counted.
    /// The task ends when the queue is dropped.
    pub(crate) fn spawn(in_flight: usize, unchecked: Counter) -> Self {
        let (sender, mut receiver) = mpsc::channel::<(A, Arc<CallTag>)>(in_flight);
        tokio::spawn(async move {
            let mut pending = FuturesUnordered::new();
            let mut open = true;
            let mut failures: u64 = 0;
            loop {
                tokio::select! {
                    next = receiver.recv(), if open && pending.len() < in_flight => match next {
                        Some((ack, call)) => pending.push(async move { (ack.await, call) }),
                        None => open = false,
                    },
                    Some((result, call)) = pending.next(), if !pending.is_empty() => {
                        if let Err(error) = result {
                            failures += 1;
                            if failures.is_power_of_two() {
                                tracing::warn!(
                                    tenant = %call.tenant,
                                    call_sid = %call.sid,
                                    failures,
                                    error = %error,
                                    "publish not stored"
                                );
                            }
                        }
                    },
                    else => break,
                }
            }
        });
        Self { sender, unchecked }
    }

    /// Queues an ack for checking, never waiting.
    pub(crate) fn push(&self, ack: A, call: &Arc<CallTag>) {
        if self.sender.try_send((ack, call.clone())).is_err() {
            self.unchecked.increment(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Frames are numbered from 0; batches carry their first frame's seq and timestamp;
    /// the partial batch comes out on flush. (Near-silent payloads: voice would flush.)
    #[test]
    fn batches_frames() {
        let mut single = AudioBatch::new(1, 0);
        let a = single.push(vec![0xFF; 160], 0).unwrap();
        let b = single.push(vec![0xFE; 160], 20).unwrap();
        assert_eq!((a.seq, b.seq, b.timestamp_ms), (0, 1, 20));
        assert_eq!(single.flush(), None);

        let mut triple = AudioBatch::new(3, 0);
        assert_eq!(triple.push(vec![0xFF; 160], 0), None);
        assert_eq!(triple.push(vec![0xFE; 160], 20), None);
        let full = triple.push(vec![0xFD; 160], 40).unwrap();
        assert_eq!(
            (full.seq, full.timestamp_ms, full.payload.0.len()),
            (0, 0, 480)
        );
        assert_eq!(&full.payload.0[160..320], &[0xFE; 160]);
        assert_eq!(triple.push(vec![0xFC; 160], 60), None);
        let rest = triple.flush().unwrap();
        assert_eq!(
            (rest.seq, rest.timestamp_ms, rest.payload.0.len()),
            (3, 60, 160)
        );
        assert_eq!(triple.flush(), None);
        assert_eq!(triple.frames(), 4);
    }

    /// Voice, and the `hold` frames after it, flush at once (with whatever silence was
    /// waiting before them); later silence fills whole batches again.
    #[test]
    fn voice_and_the_silence_after_it_are_not_held_back() {
        let silence = || vec![sb_audio::mulaw::SILENCE; 160];
        let voice = || sb_audio::mulaw::encode_slice(&[3000, -3000].repeat(80));
        let quiet_noise = || sb_audio::mulaw::encode_slice(&[40, -40].repeat(80));
        assert!(voiced(&voice()) && !voiced(&silence()) && !voiced(&quiet_noise()));

        let mut batch = AudioBatch::new(5, 2);
        assert_eq!(batch.push(silence(), 0), None);
        assert_eq!(batch.push(quiet_noise(), 20), None);
        // Voice: the two waiting frames go out with it.
        let first = batch.push(voice(), 40).unwrap();
        assert_eq!((first.seq, first.payload.0.len()), (0, 480));
        // The next two silent frames are within the hold: one by one.
        for seq in [3, 4] {
            let held = batch.push(silence(), seq * 20).unwrap();
            assert_eq!((held.seq, held.payload.0.len()), (seq, 160));
        }
        // Past the hold, silence waits for a whole batch.
        for seq in 5..9 {
            assert_eq!(batch.push(silence(), seq * 20), None, "frame {seq}");
        }
        let full = batch.push(silence(), 180).unwrap();
        assert_eq!((full.seq, full.payload.0.len()), (5, 800));
    }
}
