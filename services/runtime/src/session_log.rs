//! Rebuilding a call's session from its events, for when Redis has lost it.
//!
//! Consumes the call's `webhook`, `start`, `transcript`, `preflight`, `keypad`, `silence`,
//! `max_duration`, `sentence`, `bargein` and `end` events from `CALLS` (direct gets, kind by
//! kind); produces a [`Restore`]: the turn counter (the highest turn started), the barge-in
//! token, the STT epoch and checkpoint, the conversation (a caller turn per transcript and
//! per keypad entry, the keys in words; an answer per turn whose last sentence was
//! published, cut to the sentences heard when it was interrupted; none for a preflight
//! turn no transcript confirmed) and an outbound call's
//! campaign texts (from its dial attempt, while Redis still has it).
//! [`SessionLog::rebuild`] writes it back (merged, counters only up), counts
//! `switchboard_session_rebuilt_total{service}` and logs it. An ended call is not rebuilt.
//! [`LoggedSessions`] is the [`Sessions`] a stage uses: Redis, rebuilding on a lost
//! session. State: none; the stream is the record.

use std::{collections::BTreeMap, time::Duration};

use async_nats::jetstream::{self, stream::DirectGetErrorKind};
use futures::future::BoxFuture;
use sb_schemas::{Body, CallSid, Envelope, Kind, decode};

use crate::metrics::Metric;
use crate::redis::campaigns::AttemptId;
use crate::redis::preflight::{Confirmation, PreflightStart};
use crate::redis::session::{Parties, Role, Session, Turn, keys_pressed};
use crate::redis::session_restore::Restore;
use crate::redis::{Redis, RedisError};
use crate::state::{Progress, Sessions};

/// The kinds a session is rebuilt from.
const KINDS: [Kind; 10] = [
    Kind::Webhook,
    Kind::Start,
    Kind::Transcript,
    Kind::Preflight,
    Kind::Keypad,
    Kind::Silence,
    Kind::MaxDuration,
    Kind::Sentence,
    Kind::BargeIn,
    Kind::End,
];

/// How long one read of the log may take.
const READ_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum RebuildError {
    #[error("cannot read the call's events: {0}")]
    Read(String),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error("nothing to rebuild the session from: the call has no events or has ended")]
    Missing,
}

/// What the events say, before it is written.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Folded {
    pub restore: Restore,
    /// The dial attempt of an outbound call.
    pub attempt: Option<String>,
    pub ended: bool,
}

/// Folds a call's events (any order) into what its session held.
pub fn fold<'a>(events: impl IntoIterator<Item = &'a Envelope>) -> Folded {
    let mut folded = Folded::default();
    let mut answers: BTreeMap<u32, BTreeMap<u32, (String, bool)>> = BTreeMap::new();
    let mut heard: BTreeMap<u32, (u32, Option<sb_schemas::CutSentence>)> = BTreeMap::new();
    let mut users: BTreeMap<u32, String> = BTreeMap::new();
    // Turns started on an interim transcript: answered only once a transcript confirmed them.
    let mut preflights: Vec<u32> = Vec::new();
    let r = &mut folded.restore;
    for event in events {
        r.tenant.get_or_insert_with(|| event.tenant.clone());
        match &event.body {
            Body::Webhook(webhook) if webhook.attempt.is_some() => {
                folded.attempt.clone_from(&webhook.attempt);
            }
            Body::Start(start) => {
                r.parties = Some(Parties {
                    from: start.from.clone(),
                    to: start.to.clone(),
                });
            }
            Body::Transcript(t) => {
                r.turn = r.turn.max(event.turn);
                r.stt_epoch = r.stt_epoch.max(t.epoch);
                r.stt_checkpoint = r.stt_checkpoint.max(Some(t.audio_seq));
                users.insert(event.turn, t.text.clone());
            }
            // The ingress starts these turns as the stt starts a transcript's.
            Body::Keypad(k) => {
                r.turn = r.turn.max(event.turn);
                users.insert(event.turn, keys_pressed(&k.digits));
            }
            Body::Silence(_) | Body::MaxDuration(_) => r.turn = r.turn.max(event.turn),
            Body::Preflight(_) => {
                r.turn = r.turn.max(event.turn);
                preflights.push(event.turn);
            }
            Body::Sentence(s) => {
                r.turn = r.turn.max(event.turn);
                let answer = answers.entry(event.turn).or_default();
                answer.insert(s.index, (s.text.clone(), s.last));
            }
            Body::BargeIn(b) => {
                r.bargein = r.bargein.max(b.token);
                heard.insert(event.turn, (b.sentences_heard, b.cut));
            }
            Body::End(_) => folded.ended = true,
            _ => {}
        }
    }
    // A preflight answer whose transcript never came was discarded: never the caller's.
    answers.retain(|turn, _| !preflights.contains(turn) || users.contains_key(turn));
    let mut turns: Vec<Turn> = users
        .into_iter()
        .map(|(turn, text)| Turn {
            role: Role::User,
            text,
            turn,
            interrupted: false,
        })
        .collect();
    for (turn, sentences) in answers {
        let complete = sentences.values().any(|(_, last)| *last);
        let cut = heard.get(&turn).copied();
        if !complete && cut.is_none() {
            continue; // Still being answered: the agent's redelivery finishes it.
        }
        let texts: Vec<&str> = sentences.values().map(|(text, _)| text.as_str()).collect();
        let whole = texts.join("\n");
        let text = match cut {
            Some((sentences_heard, cut)) => crate::heard::kept_answer(&whole, sentences_heard, cut),
            None => whole,
        };
        turns.push(Turn {
            role: Role::Assistant,
            text,
            turn,
            interrupted: cut.is_some(),
        });
    }
    turns.sort_by_key(|t| (t.turn, t.role == Role::Assistant));
    r.turns = turns;
    folded
}

/// Reads a call's session-bearing events from `CALLS`: per kind, "next message on
/// `call.*.{sid}.{kind}` from sequence n" direct gets until none is left. Direct gets need
/// no consumer, so a stage's NATS user reads the log without being able to touch the
/// stages' durable consumers on the same stream.
pub async fn read(js: &jetstream::Context, sid: &CallSid) -> Result<Vec<Envelope>, RebuildError> {
    let fail = |e: &dyn std::fmt::Display| RebuildError::Read(e.to_string());
    let stream = js
        .get_stream_no_info(sb_schemas::subject::CALLS_STREAM)
        .await
        .map_err(|e| fail(&e))?;
    let mut events = Vec::new();
    for kind in KINDS {
        let filter = format!("call.*.{sid}.{}", kind.as_str());
        let mut from = 1;
        loop {
            let next = stream.direct_get_next_for_subject(filter.as_str(), Some(from));
            let message = match tokio::time::timeout(READ_TIMEOUT, next).await {
                Ok(Ok(message)) => message,
                Ok(Err(e)) if e.kind() == DirectGetErrorKind::NotFound => break,
                Ok(Err(e)) => return Err(fail(&e)),
                Err(_) => return Err(fail(&"timed out reading the stream")),
            };
            from = message.sequence + 1;
            // An undecodable event cannot have been written by a stage; it holds nothing.
            if let Ok(event) = decode(&message.payload) {
                events.push(event);
            }
        }
    }
    Ok(events)
}

/// Rebuilds lost sessions from the log for one service.
#[derive(Clone)]
pub struct SessionLog {
    pub js: jetstream::Context,
    pub redis: Redis,
    /// The service that rebuilds (the metric's label).
    pub service: &'static str,
}

impl SessionLog {
    /// Rebuilds `sid`'s session from its events and writes it back merged; returns the
    /// session as now stored. `None` when the call has no events or has ended.
    pub async fn rebuild(&self, sid: &CallSid) -> Result<Option<Session>, RebuildError> {
        let events = read(&self.js, sid).await?;
        let mut folded = fold(&events);
        let Some(tenant) = folded.restore.tenant.clone().filter(|_| !folded.ended) else {
            return Ok(None);
        };
        if let Some(attempt) = folded.attempt.as_deref().and_then(AttemptId::parse) {
            let record = self.redis.campaign_queue().attempt(&attempt).await?;
            folded.restore.outbound = record.map(|r| r.outbound_session());
        }
        self.redis
            .session_restore(sid, &tenant, &folded.restore)
            .await?;
        metrics::counter!(Metric::SessionRebuilt.name(), "service" => self.service).increment(1);
        tracing::warn!(
            tenant = %tenant,
            call_sid = %sid,
            events = events.len(),
            turn = folded.restore.turn,
            bargein = folded.restore.bargein,
            "session lost in redis; rebuilt from the call's events"
        );
        Ok(self.redis.session_load(sid).await?)
    }

    /// [`SessionLog::rebuild`], failing when there was nothing to rebuild from.
    pub async fn restore(&self, sid: &CallSid) -> Result<Session, RebuildError> {
        self.rebuild(sid).await?.ok_or(RebuildError::Missing)
    }
}

/// The [`Sessions`] of a stage: Redis, with a lost session rebuilt from the log on `load`
/// (a failed rebuild reads as no session, as before: logged, never fatal).
pub struct LoggedSessions(pub SessionLog);

impl Sessions for LoggedSessions {
    fn load<'a>(&'a self, sid: &'a CallSid) -> BoxFuture<'a, Result<Option<Session>, RedisError>> {
        Box::pin(async move {
            if let Some(session) = self.0.redis.session_load(sid).await? {
                return Ok(Some(session));
            }
            match self.0.rebuild(sid).await {
                Ok(session) => Ok(session),
                Err(RebuildError::Redis(error)) => Err(error),
                Err(error) => {
                    tracing::warn!(%error, call_sid = %sid, "cannot rebuild the session");
                    Ok(None)
                }
            }
        })
    }

    fn push_turn<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: &'a Turn,
    ) -> BoxFuture<'a, Result<(), RedisError>> {
        self.0.redis.push_turn(sid, turn)
    }

    fn progress<'a>(&'a self, sid: &'a CallSid) -> BoxFuture<'a, Result<Progress, RedisError>> {
        self.0.redis.progress(sid)
    }

    fn truncate_turn<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
        heard: &'a str,
    ) -> BoxFuture<'a, Result<bool, RedisError>> {
        self.0.redis.truncate_turn(sid, turn, heard)
    }

    fn set_action<'a>(
        &'a self,
        sid: &'a CallSid,
        action: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), RedisError>> {
        self.0.redis.set_action(sid, action)
    }

    fn action<'a>(&'a self, sid: &'a CallSid) -> BoxFuture<'a, Result<Option<String>, RedisError>> {
        self.0.redis.action(sid)
    }

    fn end<'a>(
        &'a self,
        sid: &'a CallSid,
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), RedisError>> {
        self.0.redis.end(sid, keep)
    }

    fn preflight_begin<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
        user: &'a str,
    ) -> BoxFuture<'a, Result<PreflightStart, RedisError>> {
        Box::pin(self.0.redis.preflight_begin(sid, turn, user))
    }

    fn preflight_finish<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
        answer: &'a Turn,
    ) -> BoxFuture<'a, Result<bool, RedisError>> {
        Box::pin(self.0.redis.preflight_finish(sid, turn, answer))
    }

    fn preflight_confirm<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
        text: &'a str,
    ) -> BoxFuture<'a, Result<Confirmation, RedisError>> {
        Box::pin(self.0.redis.preflight_confirm(sid, turn, text))
    }

    fn preflight_confirmed<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
    ) -> BoxFuture<'a, Result<bool, RedisError>> {
        Box::pin(self.0.redis.preflight_confirmed(sid, turn))
    }
}

#[cfg(test)]
#[path = "session_log_tests.rs"]
mod tests;
