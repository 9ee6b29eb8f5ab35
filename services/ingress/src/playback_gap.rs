//! Gaps in a turn's bot audio: the chunk at the playback cursor is missing while later
//! chunks of the turn wait behind it (bot audio reaches the ingress over a core
//! subscription, at most once).
//!
//! Consumes the playback's cursor and buffer and the clock; produces a [`Gap`] once it is
//! due for repair (the caller fetches the turn's chunks again from the `AUDIO` stream and
//! pushes them) and, after a repair, a [`GapOutcome`]: filled, skipped (the cursor moves to
//! the next chunk that is there, and the skipped sentences' marks are sent so `played`
//! still follows them), or still waiting. A later chunk of the *same sentence* proves the
//! loss (one tts worker publishes a sentence's chunks in order), so it is repaired after
//! [`GAP_WAIT`] and skipped if the stream lacks it too. Only later sentences waiting may
//! just mean a slower synthesis, so it waits [`GAP_WAIT_SENTENCE`] per attempt and skips
//! after [`SENTENCE_ATTEMPTS`]. State: the playback's fields.

use std::time::Duration;

use tokio::time::Instant;

use super::Playback;

/// A missing chunk with a later one of its sentence waiting: repaired this soon (the
/// playback lead, 80 ms, hides most of it).
pub(crate) const GAP_WAIT: Duration = Duration::from_millis(60);
/// A missing chunk with only later sentences waiting: repaired after this, per attempt.
pub(crate) const GAP_WAIT_SENTENCE: Duration = Duration::from_millis(1000);
/// Repairs of a sentence gap before it is skipped.
pub(crate) const SENTENCE_ATTEMPTS: u32 = 3;

/// The position the playback waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gap {
    pub turn: u32,
    pub sentence: u32,
    pub chunk: u32,
}

/// What a repair achieved.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GapOutcome {
    /// The missing chunk is there now.
    Filled,
    /// It was skipped: the cursor moved to the next chunk that is there.
    Skipped,
    /// Still missing, worth another try later.
    Waiting,
}

impl GapOutcome {
    /// A bounded label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Filled => "fetched",
            Self::Skipped => "skipped",
            Self::Waiting => "waiting",
        }
    }
}

impl Playback {
    /// A later chunk of the cursor's own sentence waits: the cursor's chunk was lost.
    fn lost_in_sentence(&self) -> bool {
        let (sentence, chunk) = self.cursor;
        self.buffer
            .range((sentence, chunk.saturating_add(1))..(sentence.saturating_add(1), 0))
            .next()
            .is_some()
    }

    /// When the current gap is due for repair; `None` without a gap.
    pub(super) fn gap_deadline(&self) -> Option<Instant> {
        let since = self.stalled_since?;
        let wait = if self.lost_in_sentence() {
            GAP_WAIT
        } else {
            GAP_WAIT_SENTENCE
        };
        Some(since + wait)
    }

    /// The gap to repair at `now`, if one is due.
    pub fn gap_due(&self, now: Instant) -> Option<Gap> {
        let turn = self.turn?;
        if u64::from(turn) < self.stale_below || self.buffer.contains_key(&self.cursor) {
            return None;
        }
        (self.gap_deadline()? <= now).then_some(Gap {
            turn,
            sentence: self.cursor.0,
            chunk: self.cursor.1,
        })
    }

    /// After chunks fetched for `gap` were pushed: filled, skipped or waiting (see the
    /// module docs).
    pub fn after_repair(&mut self, gap: Gap, now: Instant) -> GapOutcome {
        if self.turn != Some(gap.turn)
            || self.cursor != (gap.sentence, gap.chunk)
            || self.buffer.contains_key(&self.cursor)
        {
            self.stalled_since = None;
            self.gap_attempts = 0;
            return GapOutcome::Filled;
        }
        self.gap_attempts += 1;
        if !self.lost_in_sentence() && self.gap_attempts < SENTENCE_ATTEMPTS {
            self.stalled_since = Some(now);
            return GapOutcome::Waiting;
        }
        self.skip_gap();
        GapOutcome::Skipped
    }

    /// Moves the cursor to the first chunk that is there; each sentence passed gets its
    /// mark, as if its end had played.
    fn skip_gap(&mut self) {
        let Some(&next) = self.buffer.keys().next() else {
            return;
        };
        for sentence in self.cursor.0..next.0 {
            let mark = self.sentence_done(sentence, false);
            self.pending.push_back(mark);
        }
        self.cursor = next;
        self.stalled_since = None;
        self.gap_attempts = 0;
    }
}
