//! An in-memory [`Backend`] for router and socket tests (rings 1 and 2): Redis semantics
//! (claims and admission records, live-socket claims, fixed-window rate limits, sessions,
//! the barge-in token) in a map, publishes
//! recorded in order, and per-call event channels a test pushes bot audio and speech into.
//!
//! Consumes what the ingress does; produces a record a test can assert on. State: one shared
//! `Mutex`, per backend value (clones share it). Built only with the cargo feature
//! `testing` (the crate's own tests turn it on), never into the service.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use futures::channel::mpsc;
use sb_runtime::Tenant;
use sb_runtime::redis::campaigns::AttemptId;
use sb_runtime::redis::handoff::{Handoff, MAX_RECONNECTS, Reconnect};
use sb_runtime::redis::idempotency::AdmissionRecord;
use sb_runtime::redis::session::Parties;
use sb_schemas::{CallSid, Envelope, Kind, TenantId};

use crate::backend::{Admission, Backend, BackendError, LastHeard, Outbound, OutboundCall};

#[derive(Default)]
struct State {
    /// `idem:{sid}`: the first answer.
    admissions: HashMap<CallSid, AdmissionRecord>,
    /// `live:{sid}` → the owner of the call's live socket.
    live: HashMap<CallSid, String>,
    /// `idem:{sid}:end`.
    ends: HashSet<CallSid>,
    /// `rl:{tenant}:{window}` → count.
    rates: HashMap<(TenantId, u64), u64>,
    /// `session:{sid}` → (tenant, barge-in token).
    sessions: HashMap<CallSid, (TenantId, u64)>,
    /// Open dial attempts and the call sid each was claimed by.
    attempts: HashMap<AttemptId, (OutboundCall, Option<CallSid>)>,
    published: Vec<Envelope>,
    /// Per published event: whether it asked for a store ack.
    acked: Vec<bool>,
    leases: Vec<Envelope>,
    subscribers: HashMap<CallSid, mpsc::UnboundedSender<Envelope>>,
    fail_publish: bool,
    fail_redis: bool,
    /// Bot audio "in the AUDIO stream", for [`Backend::fetch_bot_audio`].
    stored_audio: Vec<Envelope>,
    /// Other stages' events "in the CALLS stream" (a transcript), for
    /// [`Backend::last_heard`].
    stored_events: Vec<Envelope>,
    /// `handoff:{sid}`.
    handoffs: HashMap<CallSid, Handoff>,
    /// Drops per call, as the handoff's `reconnects` field counts them.
    reconnects: HashMap<CallSid, u32>,
    /// Redirects asked of "Twilio": (call, TwiML).
    redirects: Vec<(CallSid, String)>,
    fail_redirect: bool,
    /// `session:{sid}` field `paused`.
    paused: HashMap<CallSid, u32>,
    /// `session:{sid}` field `turn`.
    turns: HashMap<CallSid, u32>,
}

/// The stand-in. Clones share one record.
#[derive(Clone, Default)]
pub struct MemoryBackend {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemoryBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryBackend").finish_non_exhaustive()
    }
}

impl MemoryBackend {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panicking test thread poisons the lock; the record is still worth reading.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every event published (not leases), in order.
    pub fn published(&self) -> Vec<Envelope> {
        self.lock().published.clone()
    }

    /// Per [`Self::published`] event, in order: whether it asked for a store ack.
    pub fn acked(&self) -> Vec<bool> {
        self.lock().acked.clone()
    }

    /// The kinds of [`Self::published`], in order.
    pub fn kinds(&self) -> Vec<Kind> {
        self.lock().published.iter().map(Envelope::kind).collect()
    }

    /// Published events of one kind, in order.
    pub fn of_kind(&self, kind: Kind) -> Vec<Envelope> {
        self.lock()
            .published
            .iter()
            .filter(|e| e.kind() == kind)
            .cloned()
            .collect()
    }

    /// STT leases published, in order.
    pub fn leases(&self) -> Vec<Envelope> {
        self.lock().leases.clone()
    }

    /// The session's tenant and barge-in token, if the call started.
    pub fn session(&self, sid: &CallSid) -> Option<(TenantId, u64)> {
        self.lock().sessions.get(sid).cloned()
    }

    /// The bot's turn marked paused for the caller, if any.
    pub fn paused(&self, sid: &CallSid) -> Option<u32> {
        self.lock().paused.get(sid).copied()
    }

    /// The call's admission record, if its webhook was answered.
    pub fn admission(&self, sid: &CallSid) -> Option<AdmissionRecord> {
        self.lock().admissions.get(sid).cloned()
    }

    /// An open dial attempt, as the dialer would record it.
    pub fn add_attempt(&self, attempt: AttemptId, call: OutboundCall) {
        self.lock().attempts.insert(attempt, (call, None));
    }

    /// The call sid an outbound webhook recorded with its attempt.
    pub fn attempt_call_sid(&self, attempt: &AttemptId) -> Option<CallSid> {
        self.lock()
            .attempts
            .get(attempt)
            .and_then(|(_, sid)| sid.clone())
    }

    /// The redirects asked of Twilio so far: (call, TwiML).
    pub fn redirects(&self) -> Vec<(CallSid, String)> {
        self.lock().redirects.clone()
    }

    /// Makes every redirect fail (Twilio refuses or cannot be reached).
    pub fn fail_redirects(&self, fail: bool) {
        self.lock().fail_redirect = fail;
    }

    /// Records a handoff as a draining replica would have.
    pub fn handoff_begin_for_tests(&self, sid: &CallSid, handoff: &Handoff) {
        self.lock().handoffs.insert(sid.clone(), handoff.clone());
    }

    /// The call's handoff record, if one was begun.
    pub fn handoff(&self, sid: &CallSid) -> Option<Handoff> {
        self.lock().handoffs.get(sid).cloned()
    }

    /// Stores bot audio as the tts would in `AUDIO`, without delivering it live (a chunk
    /// the live subscription lost).
    /// Stores another stage's event (a transcript) "in the CALLS stream", undelivered.
    pub fn store_event(&self, event: Envelope) {
        self.lock().stored_events.push(event);
    }

    pub fn store_bot_audio(&self, event: Envelope) {
        self.lock().stored_audio.push(event);
    }

    /// Records an answered webhook, as [`Backend::admit`] would.
    pub fn record_admission(&self, sid: &CallSid, record: AdmissionRecord) {
        self.lock().admissions.insert(sid.clone(), record);
    }

    /// The owner token of the call's live socket, while one holds it.
    pub fn live_owner(&self, sid: &CallSid) -> Option<String> {
        self.lock().live.get(sid).cloned()
    }

    /// Whether the call's events are subscribed to.
    pub fn is_subscribed(&self, sid: &CallSid) -> bool {
        self.lock()
            .subscribers
            .get(sid)
            .is_some_and(|s| !s.is_closed())
    }

    /// Delivers an event to its call's subscription, as NATS would. `false`: nobody listens.
    pub fn deliver(&self, event: Envelope) -> bool {
        let state = self.lock();
        match state.subscribers.get(&event.call_sid) {
            Some(sender) => sender.unbounded_send(event).is_ok(),
            None => false,
        }
    }

    /// Makes every publish fail from now on.
    pub fn fail_publishes(&self, fail: bool) {
        self.lock().fail_publish = fail;
    }

    /// Makes every Redis operation fail from now on.
    pub fn fail_redis(&self, fail: bool) {
        self.lock().fail_redis = fail;
    }

    fn redis(&self) -> Result<MutexGuard<'_, State>, BackendError> {
        let state = self.lock();
        if state.fail_redis {
            return Err(BackendError::Injected("redis"));
        }
        Ok(state)
    }

    fn record(&self, event: &Envelope, acked: bool) -> Result<(), BackendError> {
        let mut state = self.lock();
        if state.fail_publish {
            return Err(BackendError::Injected("publish"));
        }
        state.published.push(event.clone());
        state.acked.push(acked);
        Ok(())
    }
}

impl Backend for MemoryBackend {
    type Ack = std::future::Ready<Result<(), BackendError>>;
    type Events = mpsc::UnboundedReceiver<Envelope>;

    async fn admit(
        &self,
        sid: &CallSid,
        tenant: &Tenant,
        now: SystemTime,
    ) -> Result<Admission, BackendError> {
        let mut state = self.redis()?;
        if let Some(record) = state.admissions.get(sid) {
            return Ok(Admission::Duplicate {
                admitted: record.connected(),
            });
        }
        let secs = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
        let window = secs / tenant.tier.rate_window_secs.max(1);
        let count = state.rates.entry((tenant.id.clone(), window)).or_default();
        *count += 1;
        let admitted = *count <= u64::from(tenant.tier.webhook_rate_limit);
        let record = if admitted {
            AdmissionRecord::Admitted(tenant.id.clone())
        } else {
            AdmissionRecord::Declined
        };
        state.admissions.insert(sid.clone(), record);
        Ok(if admitted {
            Admission::Admitted
        } else {
            Admission::RateLimited
        })
    }

    async fn claim_end(&self, sid: &CallSid) -> Result<bool, BackendError> {
        Ok(self.redis()?.ends.insert(sid.clone()))
    }

    async fn ended(&self, sid: &CallSid) -> Result<bool, BackendError> {
        Ok(self.redis()?.ends.contains(sid))
    }

    async fn admission(&self, sid: &CallSid) -> Result<Option<AdmissionRecord>, BackendError> {
        Ok(self.redis()?.admissions.get(sid).cloned())
    }

    async fn live_claim(&self, sid: &CallSid, owner: &str) -> Result<bool, BackendError> {
        let mut state = self.redis()?;
        if state.live.contains_key(sid) {
            return Ok(false);
        }
        state.live.insert(sid.clone(), owner.to_owned());
        Ok(true)
    }

    async fn live_refresh(&self, sid: &CallSid, owner: &str) -> Result<bool, BackendError> {
        let mut state = self.redis()?;
        let holder = state
            .live
            .entry(sid.clone())
            .or_insert_with(|| owner.to_owned());
        Ok(holder == owner)
    }

    async fn live_release(&self, sid: &CallSid, owner: &str) -> Result<(), BackendError> {
        let mut state = self.redis()?;
        if state.live.get(sid).is_some_and(|holder| holder == owner) {
            state.live.remove(sid);
        }
        Ok(())
    }

    async fn outbound(
        &self,
        sid: &CallSid,
        attempt: &AttemptId,
        (to, from): (&str, &str),
    ) -> Result<Outbound, BackendError> {
        let mut state = self.redis()?;
        let Some((call, known)) = state.attempts.get_mut(attempt) else {
            return Ok(Outbound::Unknown);
        };
        if known.as_ref().is_some_and(|known| known != sid) {
            return Ok(Outbound::Unknown);
        }
        if call.to != to || call.from != from {
            return Ok(Outbound::Mismatch);
        }
        *known = Some(sid.clone());
        let call = call.clone();
        state
            .sessions
            .entry(sid.clone())
            .or_insert_with(|| (call.tenant.clone(), 0));
        Ok(Outbound::Call(call.tenant))
    }

    async fn session_start(
        &self,
        sid: &CallSid,
        tenant: &TenantId,
        _parties: &Parties,
        _config_revision: u64,
    ) -> Result<(), BackendError> {
        self.redis()?
            .sessions
            .entry(sid.clone())
            .or_insert_with(|| (tenant.clone(), 0));
        Ok(())
    }

    async fn interrupt(&self, sid: &CallSid, turn: u32) -> Result<u64, BackendError> {
        let mut state = self.redis()?;
        let Some(session) = state.sessions.get_mut(sid) else {
            return Ok(u64::from(turn) + 1);
        };
        session.1 = session.1.max(u64::from(turn) + 1);
        Ok(session.1)
    }

    async fn set_paused(&self, sid: &CallSid, turn: Option<u32>) -> Result<(), BackendError> {
        let mut state = self.redis()?;
        match turn {
            Some(turn) => state.paused.insert(sid.clone(), turn),
            None => state.paused.remove(sid),
        };
        Ok(())
    }

    async fn next_turn(&self, sid: &CallSid, after: u32) -> Result<u32, BackendError> {
        let mut state = self.redis()?;
        let turn = state.turns.entry(sid.clone()).or_default();
        *turn = (*turn + 1).max(after + 1);
        Ok(*turn)
    }

    async fn publish(&self, event: &Envelope) -> Result<(), BackendError> {
        self.record(event, true)
    }

    async fn send(&self, event: &Envelope) -> Result<Self::Ack, BackendError> {
        self.record(event, true)?;
        Ok(std::future::ready(Ok(())))
    }

    async fn send_unconfirmed(&self, event: &Envelope) -> Result<(), BackendError> {
        self.record(event, false)
    }

    async fn publish_lease(&self, start: &Envelope) -> Result<(), BackendError> {
        let mut state = self.lock();
        if state.fail_publish {
            return Err(BackendError::Injected("publish"));
        }
        state.leases.push(start.clone());
        Ok(())
    }

    async fn handoff_begin(&self, sid: &CallSid, handoff: &Handoff) -> Result<(), BackendError> {
        self.redis()?.handoffs.insert(sid.clone(), handoff.clone());
        Ok(())
    }

    async fn handoff_cancel(&self, sid: &CallSid) -> Result<(), BackendError> {
        self.redis()?.handoffs.remove(sid);
        Ok(())
    }

    async fn handoff_stopped(&self, sid: &CallSid, handoff: &Handoff) -> Result<(), BackendError> {
        let mut state = self.redis()?;
        if state
            .handoffs
            .get(sid)
            .is_some_and(|h| h.token == handoff.token)
        {
            state.handoffs.insert(sid.clone(), handoff.clone());
        }
        Ok(())
    }

    async fn handoff_take(
        &self,
        sid: &CallSid,
        token: &str,
        owner: &str,
    ) -> Result<Option<Handoff>, BackendError> {
        let mut state = self.redis()?;
        let Some(handoff) = state
            .handoffs
            .get(sid)
            .filter(|h| h.token == token)
            .cloned()
        else {
            return Ok(None);
        };
        state.live.insert(sid.clone(), owner.to_owned());
        Ok(Some(handoff))
    }

    async fn handoff_reconnect(&self, sid: &CallSid) -> Result<Reconnect, BackendError> {
        let mut state = self.redis()?;
        if state.ends.contains(sid) {
            return Ok(Reconnect::Ended);
        }
        if !state.live.contains_key(sid) {
            return Ok(Reconnect::NotLive);
        }
        let reconnects = state.reconnects.entry(sid.clone()).or_default();
        *reconnects += 1;
        if *reconnects > MAX_RECONNECTS {
            return Ok(Reconnect::TooMany);
        }
        let token = format!("lost-{reconnects}");
        let handoff = Handoff {
            token: token.clone(),
            stopped: true,
            lost: true,
            ..Handoff::default()
        };
        state.handoffs.insert(sid.clone(), handoff);
        Ok(Reconnect::Token(token))
    }

    /// The last of each kind among what was published (bot audio is not consulted).
    async fn last_heard(
        &self,
        _tenant: &TenantId,
        sid: &CallSid,
    ) -> Result<LastHeard, BackendError> {
        let state = self.lock();
        let last = |kind: Kind| {
            state
                .published
                .iter()
                .chain(&state.stored_events)
                .rev()
                .find(|e| &e.call_sid == sid && e.kind() == kind)
                .cloned()
        };
        Ok(LastHeard {
            audio: last(Kind::Audio),
            played: last(Kind::Played),
            bargein: last(Kind::BargeIn),
            transcript: last(Kind::Transcript),
        })
    }

    async fn handoff_read(&self, sid: &CallSid) -> Result<Option<Handoff>, BackendError> {
        Ok(self.redis()?.handoffs.get(sid).cloned())
    }

    async fn redirect(
        &self,
        _account_sid: &str,
        sid: &CallSid,
        twiml: &str,
    ) -> Result<(), BackendError> {
        let mut state = self.lock();
        if state.fail_redirect {
            return Err(BackendError::Injected("redirect"));
        }
        state.redirects.push((sid.clone(), twiml.to_owned()));
        Ok(())
    }

    async fn fetch_bot_audio(
        &self,
        _tenant: &TenantId,
        sid: &CallSid,
        since_us: u64,
    ) -> Result<Vec<Envelope>, BackendError> {
        Ok(self
            .lock()
            .stored_audio
            .iter()
            .filter(|e| &e.call_sid == sid && e.at >= since_us)
            .cloned()
            .collect())
    }

    async fn subscribe_call(
        &self,
        _tenant: &TenantId,
        sid: &CallSid,
    ) -> Result<Self::Events, BackendError> {
        let (sender, receiver) = mpsc::unbounded();
        self.lock().subscribers.insert(sid.clone(), sender);
        Ok(receiver)
    }
}
