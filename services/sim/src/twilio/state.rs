//! The REST stand-in's memory: calls created through it, every request it answered, and
//! the injected 429 share. Tests read it to assert what Switchboard did (hung up,
//! redirected, retried after a 429).
//!
//! Consumes validated create/update requests from the routes; produces call resources and
//! recorded requests. State: in process memory behind one mutex (never held across an
//! await), plus a version counter that wakes [`TwilioState::wait_until`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use sb_twilio::resource::rfc2822;
use sb_twilio::{
    AnsweredBy, ApiError, CallResource, CallStatus, CreateCall, ListCalls, UpdateCall,
};
use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;

use super::callee::{Callee, Callees};
use super::record::{CallRecord, CallbackRecord, RecordedRequest};
use crate::caller::{CallReport, new_sid};

#[derive(Default)]
struct Data {
    calls: Vec<CallRecord>,
    /// Call sid → its place in `calls` (a load of tens of thousands of calls stays O(1)).
    index: HashMap<String, usize>,
    /// Calls created per `To` number (which entry of a callee's script is next).
    per_number: HashMap<String, usize>,
    requests: Vec<RecordedRequest>,
    hangups: HashMap<String, CancellationToken>,
    /// Media lines registered for control (`/sim/lines/{sid}`): redirects and hang-ups
    /// reach the line as TwiML.
    lines: HashMap<String, mpsc::UnboundedSender<String>>,
    /// Calls live (created, not yet over) now, and the most at once.
    live: usize,
    max_live: usize,
}

impl Data {
    fn call_mut(&mut self, call_sid: &str) -> Option<&mut CallRecord> {
        let at = *self.index.get(call_sid)?;
        self.calls.get_mut(at)
    }

    /// Applies `change` to a call, keeping the live count.
    fn change<T>(
        &mut self,
        call_sid: &str,
        change: impl FnOnce(&mut CallRecord) -> T,
    ) -> Option<T> {
        let record = self.call_mut(call_sid)?;
        let was_live = record.is_live();
        let out = change(record);
        let ended = was_live && !record.is_live();
        if ended {
            self.live = self.live.saturating_sub(1);
        }
        Some(out)
    }
}

struct Inner {
    account_sid: String,
    auth_token: String,
    /// API keys (`SK…`, secret) also accepted for the account.
    api_keys: Mutex<Vec<(String, String)>>,
    rate_limit_share: Mutex<f64>,
    counter: AtomicU64,
    server_error_share: Mutex<f64>,
    server_error_counter: AtomicU64,
    data: Mutex<Data>,
    version: watch::Sender<u64>,
}

/// Shared handle on the stand-in's memory.
#[derive(Clone)]
pub struct TwilioState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for TwilioState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioState")
            .field("account_sid", &self.inner.account_sid)
            .finish_non_exhaustive()
    }
}

impl TwilioState {
    pub(crate) fn new(account_sid: String, auth_token: String, rate_limit_share: f64) -> Self {
        Self {
            inner: Arc::new(Inner {
                account_sid,
                auth_token,
                api_keys: Mutex::new(Vec::new()),
                rate_limit_share: Mutex::new(rate_limit_share),
                counter: AtomicU64::new(0),
                server_error_share: Mutex::new(0.0),
                server_error_counter: AtomicU64::new(0),
                data: Mutex::new(Data::default()),
                version: watch::Sender::new(0),
            }),
        }
    }

    fn data(&self) -> MutexGuard<'_, Data> {
        self.inner
            .data
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn changed(&self) {
        self.inner.version.send_modify(|v| *v += 1);
    }

    /// The account this stand-in serves.
    pub fn account_sid(&self) -> &str {
        &self.inner.account_sid
    }

    /// Basic credentials: the account SID with its auth token, or one of its API keys
    /// (`SK…`) with the key's secret, as Twilio accepts both.
    pub(crate) fn credentials_match(&self, user: &str, password: &str) -> bool {
        if user == self.inner.account_sid {
            return password == self.inner.auth_token;
        }
        self.inner
            .api_keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .iter()
            .any(|(sid, secret)| sid == user && secret == password)
    }

    /// Accepts the API key `sid` (`SK…`) with `secret` from now on.
    pub fn add_api_key(&self, sid: &str, secret: &str) {
        self.inner
            .api_keys
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .push((sid.to_owned(), secret.to_owned()));
    }

    /// Every request answered so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.data().requests.clone()
    }

    /// Every call created so far, in order.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.data().calls.clone()
    }

    /// One call by sid.
    pub fn call(&self, call_sid: &str) -> Option<CallRecord> {
        let data = self.data();
        let at = *data.index.get(call_sid)?;
        data.calls.get(at).cloned()
    }

    /// Answer this share (0.0–1.0) of requests with 429 / 20429, spread evenly.
    pub fn set_rate_limit_share(&self, share: f64) {
        *self
            .inner
            .rate_limit_share
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = share.clamp(0.0, 1.0);
    }

    /// Waits until `condition` holds (checked after every change), at most `timeout`.
    /// Returns whether it held.
    pub async fn wait_until(
        &self,
        timeout: Duration,
        condition: impl Fn(&TwilioState) -> bool,
    ) -> bool {
        let mut version = self.inner.version.subscribe();
        let wait = async {
            loop {
                if condition(self) {
                    return;
                }
                if version.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.is_ok() && condition(self)
    }

    /// Whether this request falls in the injected 429 share (see [`evenly`]).
    pub(crate) fn take_rate_limit(&self) -> bool {
        evenly(&self.inner.rate_limit_share, &self.inner.counter)
    }

    /// Answer this share (0.0–1.0) of creates with 500 / 20500, spread evenly (after the
    /// 429 share: a request is counted here only when it was not rate-limited).
    pub fn set_server_error_share(&self, share: f64) {
        *self
            .inner
            .server_error_share
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = share.clamp(0.0, 1.0);
    }

    /// Whether this create falls in the injected 500 share.
    pub(crate) fn take_server_error(&self) -> bool {
        evenly(
            &self.inner.server_error_share,
            &self.inner.server_error_counter,
        )
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        self.data().requests.push(request);
        self.changed();
    }

    /// Creates a `queued` outbound call, picking its callee from `callees` (the n-th call to
    /// its `To`); returns its resource, its hang-up token and the callee.
    pub(crate) fn create_call(
        &self,
        create: CreateCall,
        callees: Option<&Callees>,
    ) -> (CallResource, CancellationToken, Option<Callee>) {
        let sid = new_sid("CA");
        let now = rfc2822(SystemTime::now());
        let resource = CallResource::queued_outbound(
            &self.inner.account_sid,
            &sid,
            &create.to,
            &create.from,
            &now,
        );
        let hangup = CancellationToken::new();
        let mut data = self.data();
        let count = data.per_number.entry(create.to.clone()).or_default();
        let nth = *count;
        *count += 1;
        let callee = callees.map(|c| c.pick(&create.to, nth));
        let at = data.calls.len();
        data.calls
            .push(CallRecord::new(resource.clone(), create, callee.clone()));
        data.index.insert(sid.clone(), at);
        data.hangups.insert(sid, hangup.clone());
        data.live += 1;
        data.max_live = data.max_live.max(data.live);
        drop(data);
        self.changed();
        (resource, hangup, callee)
    }

    /// Registers a call's media line for control; its TwiML arrives on the receiver.
    pub(crate) fn open_line(&self, call_sid: &str) -> mpsc::UnboundedReceiver<String> {
        let (sender, receiver) = mpsc::unbounded_channel();
        self.data().lines.insert(call_sid.to_owned(), sender);
        receiver
    }

    pub(crate) fn close_line(&self, call_sid: &str) {
        self.data().lines.remove(call_sid);
    }

    /// Applies an update: `Status=completed|canceled` ends the call (and stops a running
    /// scripted caller); `Url`/`Twiml` redirect a live call. A registered media line gets
    /// the TwiML (a hang-up as `<Hangup/>`), as Twilio would run it on the call: that is
    /// how a call placed by a caller outside this process (an inbound call) is reached.
    pub(crate) fn update_call(
        &self,
        call_sid: &str,
        update: UpdateCall,
        path: &str,
    ) -> Result<CallResource, ApiError> {
        let mut data = self.data();
        if let Some(line) = data.lines.get(call_sid).cloned() {
            let twiml = match (&update.twiml, update.status) {
                (Some(twiml), _) => Some(twiml.clone()),
                (None, Some(_)) => Some("<Response><Hangup/></Response>".to_owned()),
                _ => None,
            };
            if let Some(twiml) = twiml
                && line.send(twiml).is_err()
            {
                data.lines.remove(call_sid);
                return Err(ApiError::invalid(
                    21220,
                    "Call is not in-progress. Cannot redirect.",
                ));
            }
            if !data.index.contains_key(call_sid) {
                let now = rfc2822(SystemTime::now());
                let mut resource =
                    CallResource::queued_outbound(&self.inner.account_sid, call_sid, "", "", &now);
                resource.status = CallStatus::InProgress;
                resource.direction = "inbound".into();
                return Ok(resource);
            }
        }
        let redirect = update.url.is_some() || update.twiml.is_some();
        let over = data
            .call_mut(call_sid)
            .ok_or_else(|| ApiError::not_found(path))?
            .resource
            .status
            .is_final();
        if redirect && over {
            return Err(ApiError::invalid(
                21220,
                "Call is not in-progress. Cannot redirect.",
            ));
        }
        let resource = data
            .change(call_sid, |record| {
                if let Some(status) = update.status
                    && !record.resource.status.is_final()
                {
                    let final_status = if record.resource.status == CallStatus::InProgress {
                        CallStatus::Completed
                    } else {
                        status
                    };
                    record.finish(final_status);
                }
                record.updates.push(update.clone());
                record.resource.clone()
            })
            .ok_or_else(|| ApiError::not_found(path))?;
        if update.status.is_some()
            && let Some(token) = data.hangups.get(call_sid)
        {
            token.cancel();
        }
        drop(data);
        self.changed();
        Ok(resource)
    }

    /// The call's current resource.
    pub(crate) fn fetch(&self, call_sid: &str) -> Option<CallResource> {
        self.call(call_sid).map(|c| c.resource)
    }

    /// Moves a live call to a progress status; `None` when it is already over (hung up).
    pub(crate) fn advance(&self, call_sid: &str, status: CallStatus) -> Option<CallResource> {
        self.with_call(call_sid, |record| {
            record.advance(status).then(|| record.resource.clone())
        })
        .flatten()
    }

    /// Ends the call with `status` unless it already ended; returns the final resource.
    pub(crate) fn end(&self, call_sid: &str, status: CallStatus) -> Option<CallResource> {
        self.with_call(call_sid, |record| {
            record.finish(status);
            record.resource.clone()
        })
    }

    /// The AMD result: on the record and the resource.
    pub(crate) fn set_answered_by(&self, call_sid: &str, answered_by: AnsweredBy) {
        self.with_call(call_sid, |record| {
            record.answered_by = Some(answered_by);
            record.resource.answered_by = Some(answered_by.as_str().to_owned());
        });
    }

    /// Takes the next `SequenceNumber` of the call's status callbacks.
    pub(crate) fn next_sequence(&self, call_sid: &str) -> u64 {
        self.with_call(call_sid, |record| {
            record.sequence += 1;
            record.sequence - 1
        })
        .unwrap_or(0)
    }

    pub(crate) fn record_callback(&self, callback: CallbackRecord) {
        let sid = callback.call_sid.clone();
        self.with_call(&sid, |record| record.callbacks.push(callback));
    }

    /// The scripted caller's call is over: `completed` (or `failed` when the caller could
    /// not place it) unless already over; the report and the bot audio it heard are kept.
    pub(crate) fn caller_done(&self, call_sid: &str, outcome: Result<CallReport, String>) {
        self.with_call(call_sid, |record| {
            record.finish(if outcome.is_ok() {
                CallStatus::Completed
            } else {
                CallStatus::Failed
            });
            match outcome {
                Ok(report) => {
                    record.bot_audio_bytes = report.bot_bytes_received;
                    record.caller_report = Some(report);
                }
                Err(error) => record.caller_error = Some(error),
            }
        });
    }

    fn with_call<T>(&self, call_sid: &str, change: impl FnOnce(&mut CallRecord) -> T) -> Option<T> {
        let out = self.data().change(call_sid, change);
        self.changed();
        out
    }

    /// Calls passing `list`'s filters, newest first (as Twilio lists them).
    pub(crate) fn list(&self, list: &ListCalls) -> Vec<CallResource> {
        self.data()
            .calls
            .iter()
            .rev()
            .filter(|c| list.matches(&c.resource))
            .map(|c| c.resource.clone())
            .collect()
    }

    /// Every callback sent so far, call by call in creation order.
    pub fn callbacks(&self) -> Vec<CallbackRecord> {
        self.data()
            .calls
            .iter()
            .flat_map(|c| c.callbacks.iter().cloned())
            .collect()
    }

    /// Calls created and not yet over.
    pub fn live_calls(&self) -> usize {
        self.data().live
    }

    /// The most calls that were live at once.
    pub fn max_live_calls(&self) -> usize {
        self.data().max_live
    }

    /// How many calls were created to `number`.
    pub fn calls_to(&self, number: &str) -> usize {
        self.data().per_number.get(number).copied().unwrap_or(0)
    }

    /// When each call was created, in order (for calls-per-second checks).
    pub fn created_at(&self) -> Vec<std::time::Instant> {
        self.data().calls.iter().map(|c| c.created_at).collect()
    }
}

/// Whether request `n` of `counter` falls in `share`: it does when
/// `floor((n+1)·share) > floor(n·share)`, so exactly that share is hit, evenly.
fn evenly(share: &Mutex<f64>, counter: &AtomicU64) -> bool {
    let share = *share.lock().unwrap_or_else(|p| p.into_inner());
    let n = counter.fetch_add(1, Ordering::Relaxed) as f64;
    ((n + 1.0) * share).floor() > (n * share).floor()
}
