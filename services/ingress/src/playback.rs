//! Playback of one call's bot audio to Twilio: the reorder buffer, pacing and marks.
//!
//! Consumes `TtsChunk`s with their turn, in any order; Twilio's mark echoes; barge-ins; and
//! the clock (passed in, `tokio::time::Instant`, so tests pause time). Produces, strictly in
//! (turn, sentence, chunk) order, 20 ms media frames paced at real time plus a small lead, a
//! `mark` named `{turn}:{sentence}` after each sentence, and a verdict per echoed mark
//! (played, or echoed only because of a `clear`). Chunks of a turn older than the newest
//! seen are dropped (superseded), as are chunks of turns cut by a barge-in (stale). A chunk
//! missing while later ones wait is a gap ([`gap`]): the caller fetches it again or skips
//! it. A preflight turn's chunks are held until its transcript ([`hold`]). State: per
//! call, in the socket task's memory; no I/O.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use bytes::Bytes;
use sb_audio::FRAME_BYTES;
use sb_schemas::TtsChunk;
use tokio::time::Instant;

/// Bot audio buffered per call at most (about 4 minutes); beyond it chunks are dropped.
const MAX_BUFFERED_BYTES: usize = 2 * 1024 * 1024;
/// Marks awaiting their echo at most; the oldest is forgotten beyond it.
const MAX_MARKS: usize = 256;
/// A mark not echoed this long after its audio should have finished no longer keeps its
/// turn "playing" (Twilio lost it, or the caller's line is gone).
const MARK_GRACE: Duration = Duration::from_secs(1);

/// Why a chunk will not be played.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// Its turn was interrupted by a barge-in.
    Stale,
    /// A newer turn has started.
    Superseded,
    /// Already played or already buffered.
    Duplicate,
    /// The buffer is full.
    Overflow,
}

impl Dropped {
    /// A bounded label for metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Stale => "stale",
            Self::Superseded => "superseded",
            Self::Duplicate => "duplicate",
            Self::Overflow => "overflow",
        }
    }
}

/// Something to send to Twilio now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    /// One frame of µ-law (160 bytes, or less at a chunk's end). `late`: Twilio's buffer had
    /// run dry in the middle of a sentence, so the caller heard a gap before it.
    Media { audio: Bytes, late: bool },
    /// A mark after a sentence's last frame.
    Mark(String),
}

/// What an echoed mark means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Echo {
    /// Twilio played the sentence.
    Played { turn: u32, sentence: u32 },
    /// Echoed because of our `clear`: not heard.
    Cleared,
    /// Not a mark of ours (or forgotten).
    Unknown,
}

/// A barge-in cut: what was interrupted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cut {
    pub turn: u32,
    /// Sentences of `turn` heard in full: whose marks came back as played, or which
    /// finished playing before the cut by the pacing clock.
    pub sentences_heard: u32,
    /// How much of the next sentence was heard, when the cut fell inside it.
    pub cut: Option<sb_schemas::CutSentence>,
    /// Chunks discarded without being sent.
    pub dropped: usize,
}

pub(crate) struct Waiting {
    payload: Bytes,
    last: bool,
    turn_last: bool,
}

struct Current {
    payload: Bytes,
    offset: usize,
    sentence: u32,
    chunk: u32,
    last: bool,
    turn_last: bool,
}

struct SentMark {
    name: String,
    turn: u32,
    sentence: u32,
    cleared: bool,
    /// When the audio before it finishes playing, by our clock.
    due: Instant,
}

/// One call's playback state.
pub struct Playback {
    lead: Duration,
    pending_grace: Duration,
    /// Turns below this were interrupted (the local barge-in token).
    stale_below: u64,
    /// The newest turn seen; older turns are superseded.
    turn: Option<u32>,
    /// Next (sentence, chunk) of `turn` to play.
    cursor: (u32, u32),
    /// Chunks of `turn` that arrived ahead of the cursor.
    buffer: BTreeMap<(u32, u32), Waiting>,
    buffered_bytes: usize,
    /// The chunk being sent, frame by frame.
    current: Option<Current>,
    /// When the audio already handed to Twilio will have finished playing.
    drained_at: Instant,
    /// A frame of the current sentence was sent: the next one continues it.
    mid_sentence: bool,
    /// The turn's last chunk was sent.
    turn_finished: bool,
    /// Last chunk received or frame sent of `turn`.
    last_activity: Instant,
    /// Marks sent and not echoed yet, oldest first.
    marks: VecDeque<SentMark>,
    /// Sentences of `turn` confirmed played.
    heard: u32,
    /// Since when the cursor's chunk is missing while later audio of the turn waits.
    stalled_since: Option<Instant>,
    /// Repairs tried on the current gap.
    gap_attempts: u32,
    /// Marks of sentences a skipped gap ended, sent before anything else.
    pending: VecDeque<Output>,
    /// A resumed call's first chunk and the bytes of it already heard.
    resume_at: Option<((u32, u32), usize)>,
    /// Chunks sent of the current sentence and the one before (what a pause replays).
    history: VecDeque<pause::SentChunk>,
    /// Set while the caller's voice holds the bot (see [`pause`]).
    paused: Option<Paused>,
    /// A preflight turn's audio, held until its transcript (see [`hold`]).
    hold: hold::Hold,
}

impl Playback {
    /// `lead`: how far ahead of real time to send; `pending_grace`: how long an unfinished
    /// turn counts as pending after its last activity.
    pub fn new(lead: Duration, pending_grace: Duration, now: Instant) -> Self {
        Self {
            lead,
            pending_grace,
            stale_below: 0,
            turn: None,
            cursor: (0, 0),
            buffer: BTreeMap::new(),
            buffered_bytes: 0,
            current: None,
            drained_at: now,
            mid_sentence: false,
            turn_finished: false,
            last_activity: now,
            marks: VecDeque::new(),
            heard: 0,
            stalled_since: None,
            gap_attempts: 0,
            pending: VecDeque::new(),
            resume_at: None,
            history: VecDeque::new(),
            paused: None,
            hold: hold::Hold::default(),
        }
    }

    /// Takes a chunk of `turn`. `Ok(n)`: queued (or held, see [`hold`]), and `n` chunks of
    /// an older turn were discarded because this one supersedes it.
    pub fn push(&mut self, turn: u32, chunk: TtsChunk, now: Instant) -> Result<usize, Dropped> {
        if u64::from(turn) < self.stale_below {
            return Err(Dropped::Stale);
        }
        let (chunk, mut superseded) = match self.hold_chunk(turn, chunk) {
            hold::Holding::Kept => return Ok(0),
            hold::Holding::Refused(reason) => return Err(reason),
            hold::Holding::Play(chunk, held) => (chunk, held),
        };
        match self.turn {
            Some(current) if turn < current => return Err(Dropped::Superseded),
            Some(current) if turn == current => {}
            _ => superseded += self.start_turn(turn),
        }
        let position = (chunk.sentence, chunk.chunk);
        if position < self.cursor || self.buffer.contains_key(&position) {
            return Err(Dropped::Duplicate);
        }
        let payload = chunk.payload.0;
        if self.buffered_bytes + payload.len() > MAX_BUFFERED_BYTES {
            return Err(Dropped::Overflow);
        }
        self.buffered_bytes += payload.len();
        self.buffer.insert(
            position,
            Waiting {
                payload,
                last: chunk.last,
                turn_last: chunk.turn_last,
            },
        );
        self.last_activity = now;
        Ok(superseded)
    }

    /// Switches to a newer turn; returns how many chunks of the old one were discarded.
    fn start_turn(&mut self, turn: u32) -> usize {
        let discarded = self.buffer.len() + usize::from(self.current.is_some());
        self.buffer.clear();
        self.buffered_bytes = 0;
        self.current = None;
        self.turn = Some(turn);
        self.cursor = (0, 0);
        self.mid_sentence = false;
        self.turn_finished = false;
        self.heard = 0;
        self.stalled_since = None;
        self.gap_attempts = 0;
        self.history.clear();
        self.paused = None;
        discarded
    }

    /// The next thing to send at `now`, if any is due. Call until `None`.
    pub fn poll(&mut self, now: Instant) -> Option<Output> {
        if self.paused.is_some() {
            return None;
        }
        if let Some(output) = self.pending.pop_front() {
            return Some(output);
        }
        loop {
            if let Some(current) = &mut self.current {
                if current.offset < current.payload.len() {
                    if self.drained_at > now + self.lead {
                        return None;
                    }
                    let end = (current.offset + FRAME_BYTES).min(current.payload.len());
                    let audio = current.payload.slice(current.offset..end);
                    current.offset = end;
                    let late = self.mid_sentence && self.drained_at < now;
                    self.drained_at = self.drained_at.max(now) + duration_of(audio.len());
                    self.mid_sentence = true;
                    self.last_activity = now;
                    return Some(Output::Media { audio, late });
                }
                let (sentence, last, turn_last) =
                    (current.sentence, current.last, current.turn_last);
                self.current = None;
                if last {
                    return Some(self.sentence_done(sentence, turn_last));
                }
                continue;
            }
            let turn = self.turn?;
            if u64::from(turn) < self.stale_below {
                return None;
            }
            let Some(waiting) = self.buffer.remove(&self.cursor) else {
                if !self.buffer.is_empty() {
                    self.stalled_since.get_or_insert(now);
                }
                return None;
            };
            self.stalled_since = None;
            self.gap_attempts = 0;
            self.buffered_bytes -= waiting.payload.len();
            let (sentence, chunk) = self.cursor;
            self.cursor = if waiting.last {
                (sentence + 1, 0)
            } else {
                (sentence, chunk + 1)
            };
            // A resumed call starts its first chunk where the old socket's caller stopped.
            let offset = match self.resume_at.take() {
                Some((at, offset)) if at == (sentence, chunk) => {
                    offset.min(waiting.payload.len()) / FRAME_BYTES * FRAME_BYTES
                }
                _ => 0,
            };
            self.remember(pause::SentChunk {
                sentence,
                chunk,
                payload: waiting.payload.clone(),
                last: waiting.last,
                turn_last: waiting.turn_last,
            });
            self.current = Some(Current {
                payload: waiting.payload,
                offset,
                sentence,
                chunk,
                last: waiting.last,
                turn_last: waiting.turn_last,
            });
        }
    }

    fn sentence_done(&mut self, sentence: u32, turn_last: bool) -> Output {
        let turn = self.turn.unwrap_or_default();
        let name = format!("{turn}:{sentence}");
        if self.marks.len() >= MAX_MARKS {
            self.marks.pop_front();
        }
        self.marks.push_back(SentMark {
            name: name.clone(),
            turn,
            sentence,
            cleared: false,
            due: self.drained_at,
        });
        self.mid_sentence = false;
        self.turn_finished |= turn_last;
        Output::Mark(name)
    }

    /// When [`Self::poll`] will next have something to send; `None` while waiting for chunks.
    pub fn next_wake(&self) -> Option<Instant> {
        if self.paused.is_some() {
            return None;
        }
        let current = self
            .current
            .as_ref()
            .is_some_and(|c| c.offset < c.payload.len());
        let next = self.turn.is_some_and(|t| u64::from(t) >= self.stale_below)
            && self.buffer.contains_key(&self.cursor);
        let frame = (current || next || !self.pending.is_empty()).then(|| {
            self.drained_at
                .checked_sub(self.lead)
                .unwrap_or(self.drained_at)
        });
        match (frame, self.gap_deadline()) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Interprets an echoed mark.
    pub fn on_echo(&mut self, name: &str) -> Echo {
        let Some(index) = self.marks.iter().position(|m| m.name == name) else {
            return Echo::Unknown;
        };
        let Some(mark) = self.marks.remove(index) else {
            return Echo::Unknown;
        };
        if mark.cleared {
            return Echo::Cleared;
        }
        if Some(mark.turn) == self.turn {
            self.heard = self.heard.max(mark.sentence + 1);
        }
        Echo::Played {
            turn: mark.turn,
            sentence: mark.sentence,
        }
    }

    /// The newest turn's last chunk was sent (its audio may still be playing out).
    pub fn turn_finished(&self) -> bool {
        self.turn_finished
    }

    /// The newest turn seen (playing, paused, finished or cut).
    pub fn turn(&self) -> Option<u32> {
        self.turn
    }

    /// The turn whose audio is pending or playing at `now`, if any: what a barge-in cuts.
    pub fn playing_turn(&self, now: Instant) -> Option<u32> {
        let turn = self.turn?;
        if u64::from(turn) < self.stale_below {
            return None;
        }
        let busy = self.paused.is_some()
            || self.current.is_some()
            || !self.buffer.is_empty()
            || self.drained_at > now
            || self
                .marks
                .iter()
                .any(|m| m.turn == turn && !m.cleared && now < m.due + MARK_GRACE)
            || (!self.turn_finished && now < self.last_activity + self.pending_grace);
        busy.then_some(turn)
    }

    /// A barge-in at `now`: if bot audio is pending or playing, cuts its turn (stale from
    /// now on), discards what was not sent, and marks every unechoed mark as cleared (the
    /// caller sends Twilio `clear`). `None`: nothing to interrupt.
    pub fn barge_in(&mut self, now: Instant) -> Option<Cut> {
        let turn = self.playing_turn(now)?;
        // After a pause, the caller stopped hearing the bot when it paused.
        let point = match self.paused.take() {
            Some(paused) => Some(paused.cut),
            None => self.cut_point(now),
        };
        let (sentences_heard, cut) = match point {
            Some(point) if point.total == Some(point.heard) => (point.sentence + 1, None),
            Some(point) => (point.sentence, point.cut_sentence()),
            None => (0, None),
        };
        let (sentences_heard, cut) = if self.heard > sentences_heard {
            (self.heard, None)
        } else {
            (sentences_heard, cut)
        };
        let dropped = self.buffer.len() + usize::from(self.current.is_some());
        self.stale_below = self.stale_below.max(u64::from(turn) + 1);
        self.buffer.clear();
        self.buffered_bytes = 0;
        self.current = None;
        self.mid_sentence = false;
        self.stalled_since = None;
        self.pending.clear();
        self.drained_at = now;
        // Marks whose audio finished playing by the pacing clock were heard: their echoes
        // still count as played; the rest come back because of the `clear`.
        for mark in &mut self.marks {
            mark.cleared |= mark.due > now;
        }
        self.history.clear();
        Some(Cut {
            turn,
            sentences_heard,
            cut,
            dropped,
        })
    }
}

/// Playing time of `bytes` of 8 kHz µ-law.
fn duration_of(bytes: usize) -> Duration {
    Duration::from_micros(bytes as u64 * 125)
}

#[path = "playback_gap.rs"]
mod gap;
pub use gap::{Gap, GapOutcome};
#[path = "playback_hold.rs"]
mod hold;
pub use hold::Released;
#[path = "playback_pause.rs"]
mod pause;
pub use pause::{CutPoint, Paused, Resume};
#[path = "playback_resume.rs"]
mod resume;
pub use resume::Position;

#[cfg(test)]
#[path = "playback_tests.rs"]
mod tests;
