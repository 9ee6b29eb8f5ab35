//! Pausing the bot for the caller's voice, and taking up again where the caller stopped
//! hearing it: the playback side of "pause at once, decide after".
//!
//! Consumes the playback's state, the clock and its history of sent audio (the chunks of
//! the sentence being played and the one before, kept as cheap `Bytes` handles). Produces
//! a [`CutPoint`] (which sentence the caller was hearing and how much of it: what was sent,
//! less what Twilio still buffered by our pacing clock), a [`Paused`] playback that holds
//! the rest of the turn (chunks keep arriving into it), and on resume a [`Resume`]: the
//! sentence replays from the start of the word the pause cut (the last quiet 20 ms before
//! the cut, within [`WORD_SEARCH`]; from the cut itself when there is none). A barge-in
//! that follows a pause cuts at the pause's point. State: the playback's fields.

use std::time::Duration;

use bytes::Bytes;
use sb_audio::FRAME_BYTES;
use sb_schemas::CutSentence;
use tokio::time::Instant;

use super::{Playback, Waiting, duration_of};

/// How far before the cut a word start is looked for.
const WORD_SEARCH: Duration = Duration::from_millis(600);
/// A 20 ms frame quieter than this (dBFS) is a gap between words.
const QUIET_DBFS: f32 = -38.0;

/// A chunk handed to Twilio, kept while its sentence may still be replayed.
pub(super) struct SentChunk {
    pub(super) sentence: u32,
    pub(super) chunk: u32,
    pub(super) payload: Bytes,
    pub(super) last: bool,
    pub(super) turn_last: bool,
}

/// Where the caller stopped hearing the bot.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CutPoint {
    pub turn: u32,
    /// The sentence being heard.
    pub sentence: u32,
    /// Bytes of it heard (8 per ms).
    pub heard: usize,
    /// Its whole length when its last chunk is known.
    pub total: Option<usize>,
}

impl CutPoint {
    /// What a `bargein` event says about the cut sentence (`None`: between sentences, or
    /// its length is not known yet).
    pub fn cut_sentence(&self) -> Option<CutSentence> {
        let total = self.total?;
        let heard_ms = ms(self.heard);
        (heard_ms > 0 && self.heard < total).then(|| CutSentence {
            heard_ms,
            sentence_ms: ms(total),
        })
    }
}

/// A paused playback.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Paused {
    pub cut: CutPoint,
    pub at: Instant,
    /// Where in the sentence playback takes up again (a word start at or before the cut).
    pub resume_from: usize,
}

/// A resumed playback: what the `resumed` event says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Resume {
    pub turn: u32,
    pub sentence: u32,
    pub offset_ms: u32,
    pub paused_ms: u32,
}

fn ms(bytes: usize) -> u32 {
    u32::try_from(duration_of(bytes).as_millis()).unwrap_or(u32::MAX)
}

impl Playback {
    /// Keeps `chunk` as sent; forgets chunks two sentences back.
    pub(super) fn remember(&mut self, sent: SentChunk) {
        let keep_from = sent.sentence.saturating_sub(1);
        while self.history.front().is_some_and(|c| c.sentence < keep_from) {
            self.history.pop_front();
        }
        self.history.push_back(sent);
    }

    /// Where the caller is in the turn at `now`: the sent audio less what Twilio still
    /// buffers. `None` when nothing of the turn was sent.
    pub fn cut_point(&self, now: Instant) -> Option<CutPoint> {
        let turn = self.turn?;
        let mut unheard = self.drained_at.saturating_duration_since(now).as_micros() as usize / 125;
        // The sent audio, newest last: the history (the current chunk is its last entry,
        // sent up to `offset`).
        let offset_of_current = self.current.as_ref().map(|c| c.offset);
        let mut pieces: Vec<(u32, u32, usize)> = self
            .history
            .iter()
            .map(|c| (c.sentence, c.chunk, c.payload.len()))
            .collect();
        if let (Some(offset), Some(last)) = (offset_of_current, pieces.last_mut()) {
            last.2 = offset;
        }
        // Walk back over what is still buffered at Twilio.
        while let Some(&(sentence, chunk, sent)) = pieces.last() {
            if unheard < sent || (unheard == sent && pieces.len() == 1) {
                let heard_here = sent - unheard.min(sent);
                let before: usize = self
                    .history
                    .iter()
                    .filter(|c| c.sentence == sentence && c.chunk < chunk)
                    .map(|c| c.payload.len())
                    .sum();
                return Some(CutPoint {
                    turn,
                    sentence,
                    heard: before + heard_here,
                    total: self.sentence_len(sentence),
                });
            }
            unheard -= sent;
            pieces.pop();
        }
        None
    }

    /// The length of `sentence` when all its chunks are known (sent, or waiting).
    fn sentence_len(&self, sentence: u32) -> Option<usize> {
        let mut total = 0;
        let sent = self.history.iter().filter(|c| c.sentence == sentence);
        let waiting = self
            .buffer
            .range((sentence, 0)..(sentence + 1, 0))
            .map(|(&(_, chunk), w)| (chunk, w.payload.len(), w.last));
        let mut chunks: Vec<(u32, usize, bool)> = sent
            .map(|c| (c.chunk, c.payload.len(), c.last))
            .chain(waiting)
            .collect();
        chunks.sort_by_key(|c| c.0);
        for (next, (chunk, len, last)) in (0..).zip(chunks) {
            if chunk != next {
                return None;
            }
            total += len;
            if last {
                return Some(total);
            }
        }
        None
    }

    /// The start of the word the cut fell in: the end of the last quiet frame before
    /// `heard` within [`WORD_SEARCH`], else `heard` itself.
    fn word_start(&self, sentence: u32, heard: usize) -> usize {
        let audio: Vec<u8> = self
            .history
            .iter()
            .filter(|c| c.sentence == sentence)
            .flat_map(|c| c.payload.iter().copied())
            .take(heard)
            .collect();
        let floor = heard.saturating_sub(WORD_SEARCH.as_micros() as usize / 125);
        let mut end = heard;
        while end >= floor + FRAME_BYTES && end >= FRAME_BYTES {
            let frame = &audio[end - FRAME_BYTES..end];
            if sb_audio::vad::mulaw_dbfs(frame) < QUIET_DBFS {
                return end;
            }
            end -= FRAME_BYTES;
        }
        heard
    }

    /// Pauses the turn playing at `now` (the caller sends Twilio `clear`): nothing more is
    /// sent until [`Self::resume_playing`] or a barge-in; chunks keep arriving. `None`:
    /// nothing is playing, or it is paused already.
    pub fn pause(&mut self, now: Instant) -> Option<Paused> {
        if self.paused.is_some() {
            return None;
        }
        let turn = self.playing_turn(now)?;
        let cut = self.cut_point(now).unwrap_or(CutPoint {
            turn,
            sentence: self.cursor.0,
            heard: 0,
            total: None,
        });
        let resume_from = self.word_start(cut.sentence, cut.heard);
        // Everything sent from the resume point on goes back into the buffer.
        let mut first = None;
        let mut start_of_chunk = 0;
        for sent in &self.history {
            if sent.sentence < cut.sentence {
                continue;
            }
            let len = sent.payload.len();
            if sent.sentence == cut.sentence && start_of_chunk + len <= resume_from && !sent.last {
                start_of_chunk += len;
                continue;
            }
            if first.is_none() {
                let within = if sent.sentence == cut.sentence {
                    resume_from.saturating_sub(start_of_chunk)
                } else {
                    0
                };
                first = Some(((sent.sentence, sent.chunk), within));
            }
            if !self.buffer.contains_key(&(sent.sentence, sent.chunk)) {
                self.buffered_bytes += len;
                self.buffer.insert(
                    (sent.sentence, sent.chunk),
                    Waiting {
                        payload: sent.payload.clone(),
                        last: sent.last,
                        turn_last: sent.turn_last,
                    },
                );
            }
        }
        self.history.retain(|c| c.sentence < cut.sentence);
        if let Some((position, within)) = first {
            self.cursor = position;
            self.resume_at = Some((position, within));
        }
        self.current = None;
        self.mid_sentence = false;
        self.turn_finished = false;
        self.stalled_since = None;
        self.drained_at = now;
        // Marks whose audio finished playing were heard: their echoes still count.
        for mark in &mut self.marks {
            mark.cleared |= mark.due > now;
        }
        let paused = Paused {
            cut,
            at: now,
            resume_from,
        };
        self.paused = Some(paused);
        Some(paused)
    }

    /// The pause, if the playback is paused.
    pub fn paused(&self) -> Option<&Paused> {
        self.paused.as_ref()
    }

    /// Takes up a paused turn at `now`, from the word the pause cut.
    pub fn resume_playing(&mut self, now: Instant) -> Option<Resume> {
        let paused = self.paused.take()?;
        self.drained_at = now;
        self.last_activity = now;
        Some(Resume {
            turn: paused.cut.turn,
            sentence: paused.cut.sentence,
            offset_ms: ms(paused.resume_from),
            paused_ms: u32::try_from(now.duration_since(paused.at).as_millis()).unwrap_or(u32::MAX),
        })
    }
}

#[cfg(test)]
#[path = "playback_pause_tests.rs"]
mod tests;
