//! Ring-2 doubles for stages (feature `testing`): run a stage's real `handle` with no
//! servers.
//!
//! [`drive`] runs one delivery through an in-memory [`Recorder`] outbox and returns what
//! the stage emitted and how it ended; [`MemorySessions`] and [`MemoryCache`] stand in for
//! the Redis-backed [`Sessions`] and [`AudioCache`], with knobs a test turns (a barge-in,
//! a Redis outage). What needs Redis' own semantics (Lua scripts, TTLs, eviction) is
//! tested against a real redis-server in ring 3. State: in memory, per test.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use futures::future::BoxFuture;
use sb_schemas::{Body, CallSid, Envelope, Kind, TenantId};
use tokio_util::sync::CancellationToken;

use crate::emitter::{Emitter, Wiring};
use crate::meter::StageMeter;
use crate::outbox::{Outbox, Stored};
use crate::publisher::PublishError;
use crate::redis::preflight::{Confirmation, PreflightStart};
use crate::redis::session::{MAX_TURNS, OutboundSession, Parties, Role, Session, Turn};
use crate::redis::tts_cache::Speech;
use crate::redis::{Keys, RedisError};
use crate::stage::{Stage, StageError};
use crate::state::{AudioCache, Progress, Sessions};

/// An outbox that keeps every output in memory, in emit order; each is stored at once.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    events: Arc<Mutex<Vec<Envelope>>>,
}

impl Recorder {
    /// Everything emitted so far.
    pub fn events(&self) -> Vec<Envelope> {
        lock(&self.events).clone()
    }
}

impl Outbox for Recorder {
    fn send<'a>(&'a self, event: &'a Envelope) -> BoxFuture<'a, Result<Stored, PublishError>> {
        lock(&self.events).push(event.clone());
        Box::pin(async { Ok(Stored::done()) })
    }
}

/// One delivery, handled: what the stage emitted, in order, and how `handle` ended.
#[derive(Debug)]
pub struct Driven {
    pub outputs: Vec<Envelope>,
    pub result: Result<(), StageError>,
}

impl Driven {
    /// The outputs of one kind, in order.
    pub fn of(&self, kind: Kind) -> Vec<&Envelope> {
        self.outputs.iter().filter(|e| e.kind() == kind).collect()
    }

    /// The text of every `sentence` output, in order.
    pub fn sentences(&self) -> Vec<&str> {
        self.outputs
            .iter()
            .filter_map(|e| match &e.body {
                Body::Sentence(s) => Some(s.text.as_str()),
                _ => None,
            })
            .collect()
    }
}

/// Runs `input` through `stage.handle` as its first delivery, on an in-memory outbox,
/// with the stage's own [`Stage::sessions`] for the staleness check.
pub async fn drive<S: Stage>(stage: &S, input: Envelope) -> Driven {
    drive_delivery(stage, input, 1).await
}

/// [`drive`], as the `delivered`th delivery of the input (for redelivery paths).
pub async fn drive_delivery<S: Stage>(stage: &S, input: Envelope, delivered: u64) -> Driven {
    let recorder = Recorder::default();
    let wiring = Wiring {
        outbox: Arc::new(recorder.clone()),
        meter: Arc::new(StageMeter::new(S::CONSUMER)),
        sessions: stage.sessions(),
        first_output: S::FIRST_OUTPUT,
        delivered,
        abort: CancellationToken::new(),
    };
    let mut out = Emitter::new(wiring, &input);
    let result = stage.handle(input, &mut out).await;
    Driven {
        outputs: recorder.events(),
        result,
    }
}

/// One call's state in [`MemorySessions`].
#[derive(Debug, Clone, Default)]
struct Call {
    session: Session,
    action: Option<String>,
    ended: Option<Duration>,
    /// `preflight:{sid}:{turn}` records by turn.
    preflights: HashMap<u32, Preflight>,
}

/// A preflight record, as `crate::redis::preflight` keeps it.
#[derive(Debug, Clone, Default)]
struct Preflight {
    /// `Some(true)`: the preflight answers the turn; `Some(false)`: its transcript claimed it.
    by_preflight: Option<bool>,
    final_text: String,
    answer: Option<Turn>,
    confirmed: bool,
    user_pushed: bool,
    pushed: bool,
}

impl Call {
    /// The user turn of a confirmed preflight into the conversation, once.
    fn push_preflight_user(&mut self, turn: u32) {
        let Some(record) = self.preflights.get_mut(&turn).filter(|r| !r.user_pushed) else {
            return;
        };
        record.user_pushed = true;
        let user = Turn {
            role: Role::User,
            text: record.final_text.clone(),
            turn,
            interrupted: false,
        };
        self.append(user);
    }

    /// Both turns of a confirmed, finished preflight into the conversation, each once.
    fn push_preflight(&mut self, turn: u32) {
        self.push_preflight_user(turn);
        let Some(record) = self.preflights.get_mut(&turn) else {
            return;
        };
        let Some(answer) = record.answer.clone().filter(|_| !record.pushed) else {
            return;
        };
        record.pushed = true;
        self.append(answer);
    }

    fn append(&mut self, turn: Turn) {
        let turns = &mut self.session.turns;
        turns.push(turn);
        let excess = turns.len().saturating_sub(MAX_TURNS);
        turns.drain(..excess);
    }
}

/// [`Sessions`] in memory, with the same semantics as the Redis scripts (last
/// [`MAX_TURNS`] turns, a barge-in token that never goes down), plus a switch that makes
/// every call fail as if Redis were down.
#[derive(Debug, Default)]
pub struct MemorySessions {
    calls: Mutex<HashMap<CallSid, Call>>,
    failing: AtomicBool,
}

impl MemorySessions {
    /// Starts a call's session (as the ingress does on `start`).
    pub fn start(&self, sid: &CallSid, tenant: &TenantId) {
        lock(&self.calls)
            .entry(sid.clone())
            .or_default()
            .session
            .tenant = Some(tenant.clone());
    }

    /// Starts an outbound call's session (as the ingress does on its webhook).
    pub fn outbound(&self, sid: &CallSid, tenant: &TenantId, outbound: OutboundSession) {
        let mut calls = lock(&self.calls);
        let session = &mut calls.entry(sid.clone()).or_default().session;
        session.tenant = Some(tenant.clone());
        session.outbound = Some(outbound);
    }

    /// Sets the call's numbers (as the ingress does on `start`).
    pub fn parties(&self, sid: &CallSid, parties: Parties) {
        lock(&self.calls)
            .entry(sid.clone())
            .or_default()
            .session
            .parties = Some(parties);
    }

    /// Starts the call's next caller turn (as the stt does on a final); returns its number.
    pub fn next_turn(&self, sid: &CallSid) -> u32 {
        let mut calls = lock(&self.calls);
        let session = &mut calls.entry(sid.clone()).or_default().session;
        session.turn += 1;
        session.turn
    }

    /// The caller interrupted `turn` (as the ingress does on a barge-in); returns the token.
    pub fn interrupt(&self, sid: &CallSid, turn: u32) -> u64 {
        let mut calls = lock(&self.calls);
        let session = &mut calls.entry(sid.clone()).or_default().session;
        session.bargein = session.bargein.max(u64::from(turn) + 1);
        session.bargein
    }

    /// The session as it is now.
    pub fn session(&self, sid: &CallSid) -> Option<Session> {
        lock(&self.calls).get(sid).map(|c| c.session.clone())
    }

    /// The TTL an ended call's session was shortened to, if it ended.
    pub fn ended(&self, sid: &CallSid) -> Option<Duration> {
        lock(&self.calls).get(sid).and_then(|c| c.ended)
    }

    /// From now on every call fails (`true`) or works again (`false`).
    pub fn fail(&self, failing: bool) {
        self.failing.store(failing, Ordering::SeqCst);
    }

    /// Fails while [`MemorySessions::fail`] is on, as every Redis command would.
    fn check(&self) -> Result<(), RedisError> {
        if self.failing.load(Ordering::SeqCst) {
            return Err(RedisError::Corrupt {
                what: "memory session",
                reason: "failing on purpose (redis down)".into(),
            });
        }
        Ok(())
    }

    /// Applies `f` to the call's state (created if missing, as a Redis write would).
    fn with<T>(&self, sid: &CallSid, f: impl FnOnce(&mut Call) -> T) -> Result<T, RedisError> {
        self.check()?;
        Ok(f(lock(&self.calls).entry(sid.clone()).or_default()))
    }

    /// Reads the call's state (a missing one reads as the default, and is not created).
    fn read<T>(&self, sid: &CallSid, f: impl FnOnce(&Call) -> T) -> Result<T, RedisError> {
        self.check()?;
        let calls = lock(&self.calls);
        Ok(f(calls.get(sid).unwrap_or(&Call::default())))
    }
}

impl Sessions for MemorySessions {
    fn load<'a>(&'a self, sid: &'a CallSid) -> BoxFuture<'a, Result<Option<Session>, RedisError>> {
        let loaded = self.check().map(|()| self.session(sid));
        Box::pin(async move { loaded })
    }

    fn push_turn<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: &'a Turn,
    ) -> BoxFuture<'a, Result<(), RedisError>> {
        let pushed = self.with(sid, |call| {
            let turns = &mut call.session.turns;
            turns.push(turn.clone());
            let excess = turns.len().saturating_sub(MAX_TURNS);
            turns.drain(..excess);
        });
        Box::pin(async move { pushed })
    }

    fn progress<'a>(&'a self, sid: &'a CallSid) -> BoxFuture<'a, Result<Progress, RedisError>> {
        let progress = self.read(sid, |call| Progress {
            turn: call.session.turn,
            bargein: call.session.bargein,
        });
        Box::pin(async move { progress })
    }

    fn truncate_turn<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
        heard: &'a str,
    ) -> BoxFuture<'a, Result<bool, RedisError>> {
        let found = self.with(sid, |call| {
            let answer = call
                .session
                .turns
                .iter_mut()
                .rev()
                .find(|t| t.role == Role::Assistant && t.turn == turn);
            answer
                .map(|t| {
                    t.text = heard.to_owned();
                    t.interrupted = true;
                })
                .is_some()
        });
        Box::pin(async move { found })
    }

    fn set_action<'a>(
        &'a self,
        sid: &'a CallSid,
        action: Option<&'a str>,
    ) -> BoxFuture<'a, Result<(), RedisError>> {
        let set = self.with(sid, |call| call.action = action.map(str::to_owned));
        Box::pin(async move { set })
    }

    fn action<'a>(&'a self, sid: &'a CallSid) -> BoxFuture<'a, Result<Option<String>, RedisError>> {
        let action = self.read(sid, |call| call.action.clone());
        Box::pin(async move { action })
    }

    fn end<'a>(
        &'a self,
        sid: &'a CallSid,
        keep: Duration,
    ) -> BoxFuture<'a, Result<(), RedisError>> {
        let ended = self.with(sid, |call| call.ended = Some(keep));
        Box::pin(async move { ended })
    }

    fn preflight_begin<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
        _user: &'a str,
    ) -> BoxFuture<'a, Result<PreflightStart, RedisError>> {
        let started = self.with(sid, |call| {
            let record = call.preflights.entry(turn).or_default();
            match (record.by_preflight, &record.answer) {
                (Some(false), _) => PreflightStart::Claimed,
                (_, Some(answer)) => PreflightStart::Done(answer.text.clone()),
                _ => {
                    record.by_preflight = Some(true);
                    PreflightStart::Go
                }
            }
        });
        Box::pin(async move { started })
    }

    fn preflight_finish<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
        answer: &'a Turn,
    ) -> BoxFuture<'a, Result<bool, RedisError>> {
        let pushed = self.with(sid, |call| {
            let record = call.preflights.entry(turn).or_default();
            record.answer = Some(answer.clone());
            if !record.confirmed || record.pushed {
                return false;
            }
            call.push_preflight(turn);
            true
        });
        Box::pin(async move { pushed })
    }

    fn preflight_confirm<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
        text: &'a str,
    ) -> BoxFuture<'a, Result<Confirmation, RedisError>> {
        let found = self.with(sid, |call| {
            let record = call.preflights.entry(turn).or_default();
            if record.by_preflight != Some(true) {
                record.by_preflight = Some(false);
                return Confirmation::Absent;
            }
            record.confirmed = true;
            text.clone_into(&mut record.final_text);
            if record.answer.is_none() {
                call.push_preflight_user(turn);
                return Confirmation::Pending;
            }
            call.push_preflight(turn);
            Confirmation::Settled
        });
        Box::pin(async move { found })
    }

    fn preflight_confirmed<'a>(
        &'a self,
        sid: &'a CallSid,
        turn: u32,
    ) -> BoxFuture<'a, Result<bool, RedisError>> {
        let confirmed = self.read(sid, |call| {
            call.preflights.get(&turn).is_some_and(|r| r.confirmed)
        });
        Box::pin(async move { confirmed })
    }
}

/// [`AudioCache`] in memory, keyed exactly as in Redis.
#[derive(Debug, Default)]
pub struct MemoryCache {
    audio: Mutex<HashMap<String, Bytes>>,
    keys: Keys,
}

impl MemoryCache {
    /// The audio stored for `speech`, if any.
    pub fn audio(&self, speech: &Speech<'_>) -> Option<Bytes> {
        lock(&self.audio).get(&self.keys.tts(speech)).cloned()
    }

    /// How many entries the cache holds.
    pub fn len(&self) -> usize {
        lock(&self.audio).len()
    }

    /// Whether the cache is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl AudioCache for MemoryCache {
    fn get<'a>(
        &'a self,
        speech: &'a Speech<'a>,
    ) -> BoxFuture<'a, Result<Option<Bytes>, RedisError>> {
        let audio = self.audio(speech);
        Box::pin(async move { Ok(audio) })
    }

    fn put<'a>(
        &'a self,
        speech: &'a Speech<'a>,
        audio: &'a [u8],
        _ttl: Duration,
    ) -> BoxFuture<'a, Result<(), RedisError>> {
        lock(&self.audio).insert(self.keys.tts(speech), Bytes::copy_from_slice(audio));
        Box::pin(async { Ok(()) })
    }
}

/// A poisoned lock only means another test thread panicked; the data is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}
