//! The call state a stage reads and writes, behind two small traits: [`Sessions`] (the
//! conversation, the turn counter, the barge-in token, a pending action) and
//! [`AudioCache`] (synthesised speech). Production uses [`Redis`] for both; ring-2 tests
//! use the in-memory doubles of [`crate::testing`].
//!
//! Also the one definition of a stale turn ([`Progress::stale`]): the work of turn `t` is
//! unwanted once the caller barged in on it or a newer turn started. Every stage asks it
//! through [`crate::Emitter::still_wanted`]. State: none here; it lives behind the traits.

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use sb_schemas::CallSid;

use crate::redis::session::{Session, Turn};
use crate::redis::tts_cache::Speech;
use crate::redis::{Redis, RedisError};

/// Why a turn's work is no longer wanted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale {
    /// The caller barged in on this turn (or a later one).
    Interrupted,
    /// A newer turn started (the caller said something else first).
    Superseded,
}

impl Stale {
    /// The metric label (`interrupted`, `superseded`).
    pub fn as_str(self) -> &'static str {
        match self {
            Stale::Interrupted => "interrupted",
            Stale::Superseded => "superseded",
        }
    }
}

/// A call's latest turn and barge-in token (one past the highest interrupted turn).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Progress {
    pub turn: u32,
    pub bargein: u64,
}

impl Progress {
    /// Whether the work of `turn` is stale, and why. The ingress drops the same audio
    /// (barge-in token, newest turn seen), so a stage that stops here loses nothing heard.
    pub fn stale(&self, turn: u32) -> Option<Stale> {
        if u64::from(turn) < self.bargein {
            Some(Stale::Interrupted)
        } else if self.turn > turn {
            Some(Stale::Superseded)
        } else {
            None
        }
    }
}

/// A call's session, as the stages use it. Every method is one Redis round trip in
/// production; a missing session reads as `None` (or the default), never an error.
pub trait Sessions: Send + Sync + 'static {
    /// The whole session; `None` when there is none (never started, expired or evicted).
    fn load<'a>(&'a self, sid: &'a CallSid) -> BoxFuture<'a, Result<Option<Session>, RedisError>>;

    /// Appends a turn (the session keeps the last few) and refreshes the TTL.
    fn push_turn<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: &'a Turn,
    ) -> BoxFuture<'a, Result<(), RedisError>>;

    /// The latest turn and barge-in token in one read.
    fn progress<'a>(&'a self, sid: &'a CallSid) -> BoxFuture<'a, Result<Progress, RedisError>>;

    /// Sets assistant turn `turn` to what was heard and marks it interrupted; false when
    /// there is no such turn (yet).
    fn truncate_turn<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
        heard: &'a str,
    ) -> BoxFuture<'a, Result<bool, RedisError>>;

    /// Stores (`Some`) or clears (`None`) the call's pending action.
    fn set_action<'a>(
        &'a self,
        sid: &'a CallSid,
        action: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), RedisError>>;

    /// The call's pending action, if any.
    fn action<'a>(&'a self, sid: &'a CallSid) -> BoxFuture<'a, Result<Option<String>, RedisError>>;

    /// Shortens an ended call's session to `keep`.
    fn end<'a>(&'a self, sid: &'a CallSid, keep: Duration)
    -> BoxFuture<'a, Result<(), RedisError>>;
}

/// Synthesised speech by (engine, format, voice, text); see [`Speech`].
pub trait AudioCache: Send + Sync + 'static {
    fn get<'a>(
        &'a self,
        speech: &'a Speech<'a>,
    ) -> BoxFuture<'a, Result<Option<Bytes>, RedisError>>;

    fn put<'a>(
        &'a self,
        speech: &'a Speech<'a>,
        audio: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), RedisError>>;
}

impl Sessions for Redis {
    fn load<'a>(&'a self, sid: &'a CallSid) -> BoxFuture<'a, Result<Option<Session>, RedisError>> {
        Box::pin(self.session_load(sid))
    }

    fn push_turn<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: &'a Turn,
    ) -> BoxFuture<'a, Result<(), RedisError>> {
        Box::pin(self.session_push_turn(sid, turn))
    }

    fn progress<'a>(&'a self, sid: &'a CallSid) -> BoxFuture<'a, Result<Progress, RedisError>> {
        Box::pin(self.session_progress(sid))
    }

    fn truncate_turn<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
        heard: &'a str,
    ) -> BoxFuture<'a, Result<bool, RedisError>> {
        Box::pin(self.session_truncate_turn(sid, turn, heard))
    }

    fn set_action<'a>(
        &'a self,
        sid: &'a CallSid,
        action: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), RedisError>> {
        Box::pin(self.session_set_action(sid, action))
    }

    fn action<'a>(&'a self, sid: &'a CallSid) -> BoxFuture<'a, Result<Option<String>, RedisError>> {
        Box::pin(self.session_action(sid))
    }

    fn end<'a>(
        &'a self,
        sid: &'a CallSid,
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), RedisError>> {
        Box::pin(self.session_end(sid, keep))
    }
}

impl AudioCache for Redis {
    fn get<'a>(
        &'a self,
        speech: &'a Speech<'a>,
    ) -> BoxFuture<'a, Result<Option<Bytes>, RedisError>> {
        Box::pin(self.tts_get(speech))
    }

    fn put<'a>(
        &'a self,
        speech: &'a Speech<'a>,
        audio: &'a [u8],
        ttl: Duration,
    ) -> BoxFuture<'a, Result<(), RedisError>> {
        Box::pin(self.tts_put(speech, audio, ttl))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The one staleness rule, as a table: (latest turn, barge-in token, turn asked) → verdict.
    #[test]
    fn stale_table() {
        let cases = [
            // Nothing happened: the greeting and the current turn are wanted.
            (0, 0, 0, None),
            (3, 0, 3, None),
            // A barge-in on turn 3 makes 3 and everything before it stale.
            (3, 4, 3, Some(Stale::Interrupted)),
            (3, 4, 0, Some(Stale::Interrupted)),
            // A barge-in on the greeting (token 1) leaves turn 1 wanted.
            (1, 1, 1, None),
            // A newer turn supersedes an older, uninterrupted one.
            (4, 0, 3, Some(Stale::Superseded)),
            // Interrupted wins over superseded when both hold.
            (5, 4, 3, Some(Stale::Interrupted)),
            // A turn ahead of the counter (a stage racing the stt) is wanted.
            (2, 0, 3, None),
        ];
        for (turn, bargein, asked, expected) in cases {
            let progress = Progress { turn, bargein };
            assert_eq!(progress.stale(asked), expected, "{progress:?} turn {asked}");
        }
    }
}
