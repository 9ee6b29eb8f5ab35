//! The call state a stage reads and writes, behind two small traits: [`Sessions`] (the
//! conversation, the turn counter, the barge-in token, a pending action, answers held
//! aside until their transcript confirms them) and
//! [`AudioCache`] (synthesised speech). Production uses [`Redis`] for both; ring-2 tests
//! use the in-memory doubles of `crate::testing`. [`Progress`] (what makes a turn stale)
//! is re-exported from [`crate::progress`]. State: none here; it lives behind the traits.

use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use sb_schemas::CallSid;

use crate::redis::preflight::{Confirmation, PreflightStart};
use crate::redis::session::{Session, Turn};
use crate::redis::tts_cache::Speech;
use crate::redis::{Redis, RedisError};

pub use crate::progress::{Progress, Stale};

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

    /// A preflight answer of `turn` starts with the caller's interim words `user`
    /// (`crate::redis::preflight`).
    fn preflight_begin<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
        user: &'a str,
    ) -> BoxFuture<'a, Result<PreflightStart, RedisError>>;

    /// The preflight answer of `turn` ended; true when it was confirmed already and the
    /// answer went into the session now.
    fn preflight_finish<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
        answer: &'a Turn,
    ) -> BoxFuture<'a, Result<bool, RedisError>>;

    /// The transcript of `turn` (its words `text`) confirms the turn's preflight (its user
    /// turn goes into the session at once), or claims the turn when there is none.
    fn preflight_confirm<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
        text: &'a str,
    ) -> BoxFuture<'a, Result<Confirmation, RedisError>>;

    /// Whether the transcript of preflight turn `turn` confirmed it.
    fn preflight_confirmed<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
    ) -> BoxFuture<'a, Result<bool, RedisError>>;
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

    fn preflight_begin<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
        user: &'a str,
    ) -> BoxFuture<'a, Result<PreflightStart, RedisError>> {
        Box::pin(Redis::preflight_begin(self, sid, turn, user))
    }

    fn preflight_finish<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
        answer: &'a Turn,
    ) -> BoxFuture<'a, Result<bool, RedisError>> {
        Box::pin(Redis::preflight_finish(self, sid, turn, answer))
    }

    fn preflight_confirm<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
        text: &'a str,
    ) -> BoxFuture<'a, Result<Confirmation, RedisError>> {
        Box::pin(Redis::preflight_confirm(self, sid, turn, text))
    }

    fn preflight_confirmed<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
    ) -> BoxFuture<'a, Result<bool, RedisError>> {
        Box::pin(Redis::preflight_confirmed(self, sid, turn))
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
