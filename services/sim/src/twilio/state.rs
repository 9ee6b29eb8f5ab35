//! The REST stand-in's memory: calls created through it, every request it answered, and
//! the injected 429 share. Tests read it to assert what Switchboard did (hung up,
//! redirected, retried after a 429).
//!
//! Consumes validated create/update requests from the routes; produces call resources and
//! recorded requests. State: in process memory behind one mutex (never held across an
//! await), plus a version counter that wakes [`TwilioState::wait_until`].

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use sb_twilio::resource::rfc2822;
use sb_twilio::{ApiError, CallResource, CallStatus, CreateCall, UpdateCall};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::caller::{CallReport, new_sid};

/// One request the stand-in answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Form fields as sent (empty for GET).
    pub params: Vec<(String, String)>,
    /// HTTP status answered.
    pub status: u16,
    /// Twilio error code answered, if any.
    pub error_code: Option<u32>,
}

/// A call created through the stand-in.
#[derive(Debug, Clone)]
pub struct CallRecord {
    /// The resource as the API would return it now.
    pub resource: CallResource,
    /// The create request.
    pub create: CreateCall,
    /// Accepted updates, in order (hang-ups, redirects).
    pub updates: Vec<UpdateCall>,
    /// When the stand-in answered the call with the scripted caller: its report.
    pub caller_report: Option<CallReport>,
    /// … or why the scripted caller failed.
    pub caller_error: Option<String>,
    /// When the call was answered (`in-progress`), for its duration.
    pub answered_at: Option<SystemTime>,
}

#[derive(Default)]
struct Data {
    calls: Vec<CallRecord>,
    requests: Vec<RecordedRequest>,
    hangups: Vec<(String, CancellationToken)>,
}

struct Inner {
    account_sid: String,
    auth_token: String,
    rate_limit_share: Mutex<f64>,
    counter: AtomicU64,
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
                rate_limit_share: Mutex::new(rate_limit_share),
                counter: AtomicU64::new(0),
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

    pub(crate) fn credentials_match(&self, account_sid: &str, auth_token: &str) -> bool {
        account_sid == self.inner.account_sid && auth_token == self.inner.auth_token
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
        self.data()
            .calls
            .iter()
            .find(|c| c.resource.sid == call_sid)
            .cloned()
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

    /// Whether this request falls in the injected 429 share: request `n` is rejected when
    /// `floor((n+1)·share) > floor(n·share)`, so exactly that share is rejected, evenly.
    pub(crate) fn take_rate_limit(&self) -> bool {
        let share = *self
            .inner
            .rate_limit_share
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        let n = self.inner.counter.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * share).floor() > (n * share).floor()
    }

    pub(crate) fn record(&self, request: RecordedRequest) {
        self.data().requests.push(request);
        self.changed();
    }

    /// Creates a `queued` outbound call; returns its resource and its hang-up token.
    pub(crate) fn create_call(&self, create: CreateCall) -> (CallResource, CancellationToken) {
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
        data.calls.push(CallRecord {
            resource: resource.clone(),
            create,
            updates: Vec::new(),
            caller_report: None,
            caller_error: None,
            answered_at: None,
        });
        data.hangups.push((sid, hangup.clone()));
        drop(data);
        self.changed();
        (resource, hangup)
    }

    /// Applies an update: `Status=completed|canceled` ends the call (and stops a running
    /// scripted caller); `Url`/`Twiml` redirect a live call.
    pub(crate) fn update_call(
        &self,
        call_sid: &str,
        update: UpdateCall,
        path: &str,
    ) -> Result<CallResource, ApiError> {
        let mut data = self.data();
        let record = data
            .calls
            .iter_mut()
            .find(|c| c.resource.sid == call_sid)
            .ok_or_else(|| ApiError::not_found(path))?;
        let redirect = update.url.is_some() || update.twiml.is_some();
        if redirect && record.resource.status.is_final() {
            return Err(ApiError::invalid(
                21220,
                "Call is not in-progress. Cannot redirect.",
            ));
        }
        if let Some(status) = update.status
            && !record.resource.status.is_final()
        {
            let final_status = if record.resource.status == CallStatus::InProgress {
                CallStatus::Completed
            } else {
                status
            };
            finish(record, final_status);
        }
        record.updates.push(update.clone());
        let resource = record.resource.clone();
        if update.status.is_some()
            && let Some((_, token)) = data.hangups.iter().find(|(sid, _)| sid == call_sid)
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

    /// The scripted caller picked up: `in-progress`.
    pub(crate) fn answered(&self, call_sid: &str) {
        self.with_call(call_sid, |record| {
            if !record.resource.status.is_final() {
                record.resource.status = CallStatus::InProgress;
                record.answered_at = Some(SystemTime::now());
                let now = rfc2822(SystemTime::now());
                record.resource.start_time = Some(now.clone());
                record.resource.date_updated = Some(now);
            }
        });
    }

    /// The scripted caller's call is over.
    pub(crate) fn caller_done(&self, call_sid: &str, outcome: Result<CallReport, String>) {
        self.with_call(call_sid, |record| {
            if !record.resource.status.is_final() {
                let status = if outcome.is_ok() {
                    CallStatus::Completed
                } else {
                    CallStatus::Failed
                };
                finish(record, status);
            }
            match outcome {
                Ok(report) => record.caller_report = Some(report),
                Err(error) => record.caller_error = Some(error),
            }
        });
    }

    fn with_call(&self, call_sid: &str, change: impl FnOnce(&mut CallRecord)) {
        if let Some(record) = self
            .data()
            .calls
            .iter_mut()
            .find(|c| c.resource.sid == call_sid)
        {
            change(record);
        }
        self.changed();
    }
}

/// Ends a call: final status, end time, duration in whole seconds since answered.
fn finish(record: &mut CallRecord, status: CallStatus) {
    let now = SystemTime::now();
    let seconds = record
        .answered_at
        .and_then(|at| now.duration_since(at).ok())
        .map_or(0, |d| d.as_secs());
    let resource = &mut record.resource;
    resource.status = status;
    resource.end_time = Some(rfc2822(now));
    resource.date_updated = resource.end_time.clone();
    resource.duration = Some(seconds.to_string());
}
