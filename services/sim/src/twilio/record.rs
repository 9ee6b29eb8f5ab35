//! What the REST stand-in remembers per call and per request, for tests to assert on: the
//! resource as served, the callee, the status history, every callback sent and how it was
//! answered, the AMD result and the bot audio a callee heard.
//!
//! Consumes transitions from [`super::TwilioState`]; produces plain data. State: none of its
//! own; the records live in `TwilioState`'s mutex.

use std::time::{Instant, SystemTime};

use sb_twilio::resource::rfc2822;
use sb_twilio::{AnsweredBy, CallResource, CallStatus, CreateCall, UpdateCall};

use super::callee::Callee;
use crate::caller::CallReport;

/// One request the stand-in answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordedRequest {
    pub method: String,
    pub path: String,
    /// Form fields as sent (the query's pairs for a list).
    pub params: Vec<(String, String)>,
    /// HTTP status answered.
    pub status: u16,
    /// Twilio error code answered, if any.
    pub error_code: Option<u32>,
}

/// A status the call went through, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatusChange {
    pub status: CallStatus,
    pub at: SystemTime,
    /// Monotonic, for intervals.
    pub instant: Instant,
}

/// Which callback was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CallbackKind {
    /// To `StatusCallback` (call progress events).
    Status,
    /// To `AsyncAmdStatusCallback`.
    Amd,
}

/// A callback the stand-in sent, and what came back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallbackRecord {
    pub call_sid: String,
    pub kind: CallbackKind,
    /// The URL as given in the create request (what was signed).
    pub url: String,
    /// `POST` or `GET`.
    pub method: String,
    pub params: Vec<(String, String)>,
    /// The HTTP status received; `None` when the request failed (see `error`).
    pub http_status: Option<u16>,
    pub error: Option<String>,
    pub sent_at: SystemTime,
}

impl CallbackRecord {
    /// The first value of a field.
    pub fn param(&self, name: &str) -> Option<&str> {
        sb_twilio::form::first(&self.params, name)
    }
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
    /// Who picked up (`None`: the stand-in does not run call lives, see `Config::callees`).
    pub callee: Option<Callee>,
    /// Every status the call went through, from `queued`.
    pub history: Vec<StatusChange>,
    /// Callbacks sent for this call, in order.
    pub callbacks: Vec<CallbackRecord>,
    /// The AMD result, when AMD was requested and finished.
    pub answered_by: Option<AnsweredBy>,
    /// µ-law bytes of bot audio the callee received (human or voicemail with an ingress).
    pub bot_audio_bytes: u64,
    /// When the create request was accepted (for calls-per-second checks).
    pub created_at: Instant,
    /// When the stand-in answered the call with the scripted caller: its report.
    pub caller_report: Option<CallReport>,
    /// … or why the scripted caller failed.
    pub caller_error: Option<String>,
    /// When the call was answered (`in-progress`), for its duration.
    pub answered_at: Option<SystemTime>,
    /// The next `SequenceNumber` of its status callbacks.
    pub(crate) sequence: u64,
}

impl CallRecord {
    pub(crate) fn new(resource: CallResource, create: CreateCall, callee: Option<Callee>) -> Self {
        let now = Instant::now();
        Self {
            history: vec![StatusChange {
                status: resource.status,
                at: SystemTime::now(),
                instant: now,
            }],
            resource,
            create,
            updates: Vec::new(),
            callee,
            callbacks: Vec::new(),
            answered_by: None,
            bot_audio_bytes: 0,
            created_at: now,
            caller_report: None,
            caller_error: None,
            answered_at: None,
            sequence: 0,
        }
    }

    /// The statuses gone through, in order.
    pub fn statuses(&self) -> Vec<CallStatus> {
        self.history.iter().map(|c| c.status).collect()
    }

    /// Whether the call is not over yet.
    pub fn is_live(&self) -> bool {
        !self.resource.status.is_final()
    }

    /// Moves a live call to a non-final `status` (`in-progress` starts its clock).
    /// Returns whether it moved (not when the call is already over).
    pub(crate) fn advance(&mut self, status: CallStatus) -> bool {
        if !self.is_live() {
            return false;
        }
        let now = SystemTime::now();
        if status == CallStatus::InProgress {
            self.answered_at = Some(now);
            self.resource.start_time = Some(rfc2822(now));
        }
        self.set_status(status, now);
        true
    }

    /// Ends a live call: final status, end time, duration in whole seconds since answered.
    pub(crate) fn finish(&mut self, status: CallStatus) {
        if !self.is_live() {
            return;
        }
        let now = SystemTime::now();
        let seconds = self
            .answered_at
            .and_then(|at| now.duration_since(at).ok())
            .map_or(0, |d| d.as_secs());
        self.resource.end_time = Some(rfc2822(now));
        self.resource.duration = Some(seconds.to_string());
        self.set_status(status, now);
    }

    fn set_status(&mut self, status: CallStatus, now: SystemTime) {
        self.resource.status = status;
        self.resource.date_updated = Some(rfc2822(now));
        self.history.push(StatusChange {
            status,
            at: now,
            instant: Instant::now(),
        });
    }
}
