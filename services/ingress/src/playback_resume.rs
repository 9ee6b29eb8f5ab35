//! Where a call's playback stands, for a call moving to another ingress replica, and
//! starting a playback from there.
//!
//! Consumes the playback's state and the clock; produces a [`Position`]: the turn, the next
//! (sentence, chunk) the caller has not finished hearing and the bytes of it already heard
//! (what was sent, less what Twilio still buffers), and the barge-in cut. A new socket's
//! playback starts at a position: chunks before it are refused as duplicates when the
//! turn's audio is read back from the stream, and the first chunk plays from the offset.
//! State: the playback's fields.

use tokio::time::Instant;

use super::{Playback, duration_of};

/// A playback's place in a call.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Position {
    pub turn: u32,
    pub sentence: u32,
    pub chunk: u32,
    /// Bytes of that chunk already heard.
    pub offset: u32,
    /// Turns below this were interrupted.
    pub stale_below: u64,
}

impl Playback {
    /// Where the caller is at `now`: audio sent but still buffered at Twilio (up to the
    /// lead) counts as not heard.
    pub fn position(&self, now: Instant) -> Position {
        let turn = self.turn.unwrap_or(0);
        let buffered = self.drained_at.saturating_duration_since(now);
        let unheard = (buffered.as_micros() / duration_of(1).as_micros().max(1)) as usize;
        let (sentence, chunk, offset) = match &self.current {
            Some(current) => (
                current.sentence,
                current.chunk,
                current.offset.saturating_sub(unheard),
            ),
            None => (self.cursor.0, self.cursor.1, 0),
        };
        Position {
            turn,
            sentence,
            chunk,
            offset: u32::try_from(offset).unwrap_or(u32::MAX),
            stale_below: self.stale_below,
        }
    }

    /// Starts at `position` (a call moved here): its turn, cursor and cut; the first chunk
    /// plays from the bytes already heard.
    pub fn resume(&mut self, position: Position) {
        self.start_turn(position.turn);
        self.cursor = (position.sentence, position.chunk);
        self.stale_below = position.stale_below;
        self.resume_at = Some((self.cursor, position.offset as usize));
    }
}
