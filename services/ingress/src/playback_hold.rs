//! Holding a preflight turn's audio until its transcript confirms it (ARCHITECTURE §2g).
//!
//! Consumes the call's `preflight` (a turn started on a stable interim transcript: hold
//! it) and `transcript` events (release the held turn when it is the same turn; drop it
//! when the transcript started a newer one), and the held turn's chunks. Produces nothing
//! while a turn is held: its chunks wait here, not in the reorder buffer, so for pacing,
//! pauses and barge-ins the bot is not playing it. On release the chunks go through
//! [`Playback::push`] as if they had just arrived: the turn supersedes older ones and plays
//! from its start, paced. A newer turn's audio supersedes a held turn, as it would a
//! playing one. State: the held turn and its chunks (the playback's `hold` field).

use std::collections::BTreeMap;

use sb_schemas::TtsChunk;
use tokio::time::Instant;

use super::{Dropped, MAX_BUFFERED_BYTES, Playback};

/// The turn whose audio waits for its transcript.
#[derive(Default)]
pub(super) struct Hold {
    held: Option<Held>,
    /// The newest turn a transcript confirmed or superseded: a preflight of it (or of an
    /// older turn) comes too late to be held (the two travel on different subjects).
    settled: u32,
}

struct Held {
    turn: u32,
    chunks: BTreeMap<(u32, u32), TtsChunk>,
    bytes: usize,
}

/// What became of a chunk offered to the hold.
pub(super) enum Holding {
    /// Held until the transcript.
    Kept,
    /// Not held: play it. The count: chunks of an older held turn it superseded.
    Play(TtsChunk, usize),
    /// Neither held nor played.
    Refused(Dropped),
}

/// What a transcript did to the held audio.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Released {
    /// Chunks of the confirmed turn handed to the playback.
    pub played: usize,
    /// Chunks of a held turn that a newer transcript superseded.
    pub discarded: usize,
    /// Chunks of an older turn the released one superseded.
    pub superseded: usize,
}

impl Playback {
    /// A preflight of `turn`: its audio is held until its transcript. Returns the chunks of
    /// an older held turn it supersedes. A turn already playing, confirmed or cut is not
    /// held.
    pub fn hold(&mut self, turn: u32) -> usize {
        let late = turn <= self.hold.settled
            || self.turn.is_some_and(|playing| turn <= playing)
            || u64::from(turn) < self.stale_below
            || self.hold.held.as_ref().is_some_and(|h| turn <= h.turn);
        if late {
            return 0;
        }
        let discarded = self.drop_held();
        self.hold.held = Some(Held {
            turn,
            chunks: BTreeMap::new(),
            bytes: 0,
        });
        discarded
    }

    /// The turn being held, if any.
    pub fn held_turn(&self) -> Option<u32> {
        self.hold.held.as_ref().map(|h| h.turn)
    }

    /// The transcript of `turn` arrived: a held `turn` plays from its start; a held older
    /// turn is discarded (the final differed, so it came on a newer turn).
    pub fn release(&mut self, turn: u32, now: Instant) -> Released {
        self.hold.settled = self.hold.settled.max(turn);
        let mut released = Released::default();
        match self.hold.held.as_ref().map(|h| h.turn) {
            Some(held) if held == turn => {
                let chunks = self.hold.held.take().map(|h| h.chunks).unwrap_or_default();
                for chunk in chunks.into_values() {
                    match self.push(turn, chunk, now) {
                        Ok(superseded) => {
                            released.played += 1;
                            released.superseded += superseded;
                        }
                        Err(_) => released.discarded += 1,
                    }
                }
            }
            Some(held) if held < turn => released.discarded = self.drop_held(),
            _ => {}
        }
        released
    }

    /// Keeps `chunk` when `turn` is held; otherwise hands it back to be played, with the
    /// chunks of an older held turn it superseded.
    pub(super) fn hold_chunk(&mut self, turn: u32, chunk: TtsChunk) -> Holding {
        let Some(held) = self.hold.held.as_mut() else {
            return Holding::Play(chunk, 0);
        };
        if turn < held.turn {
            return Holding::Play(chunk, 0);
        }
        if turn > held.turn {
            let discarded = self.drop_held();
            return Holding::Play(chunk, discarded);
        }
        let position = (chunk.sentence, chunk.chunk);
        if held.chunks.contains_key(&position) {
            return Holding::Refused(Dropped::Duplicate);
        }
        let size = chunk.payload.0.len();
        if self.buffered_bytes + held.bytes + size > MAX_BUFFERED_BYTES {
            return Holding::Refused(Dropped::Overflow);
        }
        held.bytes += size;
        held.chunks.insert(position, chunk);
        Holding::Kept
    }

    /// Drops the held turn's chunks; how many there were.
    fn drop_held(&mut self) -> usize {
        self.hold.held.take().map_or(0, |h| h.chunks.len())
    }
}

#[cfg(test)]
#[path = "playback_hold_tests.rs"]
mod tests;
