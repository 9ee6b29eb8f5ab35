//! The audio timeline of one provider connection: which call frames were sent, and where.
//!
//! Consumes the call's `Audio` batches in stream order; produces the bytes to send (frames
//! at or before the resume floor, or already sent, are cut off, so a takeover or reconnect
//! never sends a frame twice) and maps provider times (ms since the first byte sent on this
//! connection, 8 bytes per ms of µ-law) back to call frames: the `Audio.seq` a final covers
//! through (the checkpoint), the call-timeline offset of speech and the wall clock when a
//! frame was spoken. State: the sent batches since the last checkpoint (this value).

use std::collections::VecDeque;

use bytes::Bytes;
use sb_schemas::Audio;

/// [`sb_audio::FRAME_BYTES`] as a byte offset on this connection.
const FRAME_BYTES: u64 = sb_audio::FRAME_BYTES as u64;
/// [`sb_audio::FRAME_MS`] as a time on this connection.
const FRAME_MS: u64 = sb_audio::FRAME_MS as u64;
/// µ-law bytes per millisecond (one byte per sample).
const BYTES_PER_MS: u64 = FRAME_BYTES / FRAME_MS;

/// One batch sent on this connection.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Sent {
    /// `Audio.seq` of its first (sent) frame.
    first_seq: u64,
    /// Offset of its first byte on this connection.
    byte_start: u64,
    len: u64,
    /// Producer clock (µs) when the batch was published: right after its last frame arrived.
    at_us: u64,
    /// Its AUDIO stream sequence, to resume a reconnect from it; for a batch that came
    /// live, the newest stored one seen before it (resuming there re-reads a little).
    /// `None`: no stored batch was seen yet (resume from the call's start).
    stream_seq: Option<u64>,
}

impl Sent {
    fn frames(&self) -> u64 {
        self.len.div_ceil(FRAME_BYTES)
    }

    fn last_seq(&self) -> u64 {
        self.first_seq + self.frames().saturating_sub(1)
    }

    fn byte_end(&self) -> u64 {
        self.byte_start + self.len
    }
}

/// What this connection has sent.
#[derive(Debug, Clone, Default)]
pub struct Timeline {
    sent: VecDeque<Sent>,
    sent_bytes: u64,
    /// Frames at or before this seq are never sent (the checkpoint, then the last sent).
    floor: Option<u64>,
    /// The stream sequence after the newest stored batch seen (sent or skipped).
    next_stream_seq: Option<u64>,
}

impl Timeline {
    /// A new connection that resumes after frame `floor` (the checkpoint), if any.
    pub fn new(floor: Option<u64>) -> Self {
        Self {
            floor,
            ..Self::default()
        }
    }

    /// Records a batch and returns the bytes to send: `None` when nothing of it is new.
    pub fn admit(&mut self, audio: &Audio, at_us: u64, stream_seq: Option<u64>) -> Option<Bytes> {
        let stream_seq = stream_seq.or(self.next_stream_seq.map(|s| s.saturating_sub(1)));
        if let Some(seq) = stream_seq {
            self.next_stream_seq = Some(seq + 1);
        }
        let payload = &audio.payload.0;
        let skip_frames = match self.floor {
            Some(floor) if floor >= audio.seq => floor - audio.seq + 1,
            _ => 0,
        };
        let skip_bytes = usize::try_from(skip_frames.saturating_mul(FRAME_BYTES)).ok()?;
        if skip_bytes >= payload.len() {
            return None;
        }
        let bytes = payload.slice(skip_bytes..);
        let sent = Sent {
            first_seq: audio.seq + skip_frames,
            byte_start: self.sent_bytes,
            len: bytes.len() as u64,
            at_us,
            stream_seq,
        };
        self.sent_bytes = sent.byte_end();
        self.floor = Some(sent.last_seq());
        self.sent.push_back(sent);
        Some(bytes)
    }

    /// The newest frame sent on this connection.
    pub fn last_seq(&self) -> Option<u64> {
        self.sent.back().map(Sent::last_seq)
    }

    /// The last frame wholly inside `[0, end_ms)` of this connection: what a final ending
    /// at `end_ms` covers. `None` when it covers no whole frame sent here.
    pub fn covered_through(&self, end_ms: u64) -> Option<u64> {
        let end = end_ms.saturating_mul(BYTES_PER_MS).min(self.sent_bytes);
        let batch = self
            .sent
            .iter()
            .rev()
            .find(|s| s.byte_start < end && end <= s.byte_end())?;
        let whole = (end - batch.byte_start) / FRAME_BYTES;
        let done = end == batch.byte_end();
        match (whole, done) {
            (_, true) => Some(batch.last_seq()),
            (0, false) => self.before(batch),
            (n, false) => Some(batch.first_seq + n - 1),
        }
    }

    /// The frame sent just before `batch`, if still recorded.
    fn before(&self, batch: &Sent) -> Option<u64> {
        self.sent
            .iter()
            .rev()
            .find(|s| s.byte_end() <= batch.byte_start)
            .map(Sent::last_seq)
    }

    /// `(seq, ms into that frame, batch)` of the audio at `ms` on this connection (clamped
    /// to what was sent).
    fn locate(&self, ms: u64) -> Option<(u64, u64, &Sent)> {
        let last = self.sent_bytes.checked_sub(1)?;
        let at = ms.saturating_mul(BYTES_PER_MS).min(last);
        let batch = self
            .sent
            .iter()
            .rev()
            .find(|s| s.byte_start <= at)
            .or_else(|| self.sent.front())?;
        let into = at.saturating_sub(batch.byte_start);
        Some((
            batch.first_seq + into / FRAME_BYTES,
            into % FRAME_BYTES / BYTES_PER_MS,
            batch,
        ))
    }

    /// Where `ms` of this connection lies on the call's audio timeline (frame 0 = 0 ms).
    pub fn call_offset_ms(&self, ms: u64) -> Option<u64> {
        self.locate(ms)
            .map(|(seq, into, _)| seq.saturating_mul(FRAME_MS) + into)
    }

    /// Wall clock (µs) when the audio at `ms` of this connection was spoken: the batch's
    /// publish time minus the frames that followed it in the batch.
    pub fn spoken_at_us(&self, ms: u64) -> Option<u64> {
        self.locate(ms).map(|(seq, into, batch)| {
            let later_frames = batch.last_seq().saturating_sub(seq);
            let later_ms = later_frames * FRAME_MS + FRAME_MS.saturating_sub(into);
            batch.at_us.saturating_sub(later_ms * 1_000)
        })
    }

    /// Forgets batches wholly at or before the checkpoint `seq` (they will not be resent).
    pub fn prune_through(&mut self, seq: u64) {
        // Keep the newest batch: it anchors later lookups and the resume point.
        while self.sent.len() > 1 && self.sent.front().is_some_and(|s| s.last_seq() <= seq) {
            self.sent.pop_front();
        }
    }

    /// Where a new connection's audio consumer should start after a drop: the oldest batch
    /// not yet covered by a checkpoint (frames before the checkpoint are cut by the floor),
    /// else the batch after the newest seen; `None` = from the start of the call.
    pub fn resume_stream_seq(&self, checkpoint: Option<u64>) -> Option<u64> {
        let uncovered = self
            .sent
            .iter()
            .find(|s| checkpoint.is_none_or(|c| s.last_seq() > c));
        match uncovered {
            Some(batch) => batch.stream_seq,
            None if self.sent.is_empty() && checkpoint.is_none() => None,
            None => self.next_stream_seq,
        }
    }
}

#[cfg(test)]
mod tests {
    use sb_schemas::Mulaw;

    use super::*;

    fn audio(seq: u64, frames: usize) -> Audio {
        Audio {
            seq,
            timestamp_ms: seq * FRAME_MS,
            payload: Mulaw(Bytes::from(vec![0xFF; frames * sb_audio::FRAME_BYTES])),
        }
    }

    /// Frames at or before the floor are cut, whole frames at a time; a batch straddling
    /// the floor is trimmed; repeated or older frames are never sent twice.
    #[test]
    fn admit_trims_to_the_floor() {
        // (floor, batches as (seq, frames), bytes sent per batch)
        type Case = (Option<u64>, Vec<(u64, usize)>, Vec<Option<usize>>);
        let cases: Vec<Case> = vec![
            (None, vec![(0, 1), (1, 1)], vec![Some(160), Some(160)]),
            (
                Some(4),
                vec![(0, 3), (3, 3), (6, 1)],
                vec![None, Some(160), Some(160)],
            ),
            (Some(9), vec![(10, 2)], vec![Some(320)]),
            (
                None,
                vec![(0, 2), (1, 2), (0, 1)],
                vec![Some(320), Some(160), None],
            ),
        ];
        for (floor, batches, expected) in cases {
            let mut timeline = Timeline::new(floor);
            let got: Vec<Option<usize>> = batches
                .iter()
                .enumerate()
                .map(|(i, (seq, n))| {
                    timeline
                        .admit(&audio(*seq, *n), 0, Some(i as u64 + 1))
                        .map(|b| b.len())
                })
                .collect();
            assert_eq!(got, expected, "floor {floor:?}, batches {batches:?}");
        }
    }

    /// Provider times map to the frames sent on this connection, from the resume point.
    #[test]
    fn maps_times_to_frames() {
        // Resumed after frame 9: frames 10.. are sent; 5 single frames, then a batch of 3.
        let mut timeline = Timeline::new(Some(9));
        for seq in 10..15 {
            timeline.admit(&audio(seq, 1), 1_000_000 + seq * 20_000, Some(seq + 100));
        }
        timeline.admit(&audio(15, 3), 2_000_000, Some(200));
        let covered: Vec<Option<u64>> = [0, 19, 20, 50, 100, 110, 150, 160, 10_000]
            .iter()
            .map(|ms| timeline.covered_through(*ms))
            .collect();
        assert_eq!(
            covered,
            [
                None,
                None,
                Some(10),
                Some(11),
                Some(14),
                Some(14),
                Some(16),
                Some(17),
                Some(17)
            ]
        );
        assert_eq!(timeline.call_offset_ms(0), Some(200));
        assert_eq!(timeline.call_offset_ms(45), Some(245));
        assert_eq!(timeline.call_offset_ms(99_999), Some(359));
        // Frame 16 is the 2nd of a batch of 3 published at 2 s: it ended 20 ms earlier.
        assert_eq!(timeline.spoken_at_us(139), Some(2_000_000 - 20_000 - 1_000));
        assert_eq!(
            timeline.spoken_at_us(20),
            Some(1_000_000 + 11 * 20_000 - 20_000)
        );
        assert_eq!(timeline.last_seq(), Some(17));
        assert_eq!(Timeline::new(None).covered_through(100), None);
        assert_eq!(Timeline::new(None).spoken_at_us(100), None);
    }

    /// A reconnect resumes at the oldest batch past the checkpoint, else after the newest
    /// batch seen, else from the start; pruning keeps what later lookups need.
    #[test]
    fn resume_points_and_pruning() {
        assert_eq!(Timeline::new(None).resume_stream_seq(None), None);
        let mut timeline = Timeline::new(None);
        for seq in 0..4 {
            timeline.admit(&audio(seq * 2, 2), 0, Some(50 + seq));
        }
        assert_eq!(timeline.resume_stream_seq(None), Some(50));
        assert_eq!(timeline.resume_stream_seq(Some(2)), Some(51));
        assert_eq!(timeline.resume_stream_seq(Some(3)), Some(52));
        assert_eq!(timeline.resume_stream_seq(Some(7)), Some(54));
        timeline.prune_through(4);
        assert_eq!(timeline.resume_stream_seq(Some(4)), Some(52));
        assert_eq!(timeline.covered_through(100), Some(4));
        assert_eq!(timeline.covered_through(160), Some(7));
        timeline.prune_through(7);
        assert_eq!(timeline.last_seq(), Some(7));
        assert_eq!(timeline.resume_stream_seq(Some(7)), Some(54));
        assert_eq!(Timeline::new(Some(3)).resume_stream_seq(Some(3)), None);
    }

    /// Live batches carry no stream sequence: a reconnect resumes from the newest stored
    /// one seen before them (re-reading a little, cut by the floor), or from the start.
    #[test]
    fn live_batches_resume_from_the_last_stored_sequence() {
        let mut timeline = Timeline::new(None);
        timeline.admit(&audio(0, 2), 0, Some(70));
        timeline.admit(&audio(2, 2), 0, None);
        timeline.admit(&audio(4, 2), 0, None);
        assert_eq!(timeline.resume_stream_seq(Some(3)), Some(70));
        assert_eq!(timeline.resume_stream_seq(Some(5)), Some(71));
        let mut live_only = Timeline::new(None);
        live_only.admit(&audio(0, 2), 0, None);
        assert_eq!(live_only.resume_stream_seq(None), None);
    }
}
