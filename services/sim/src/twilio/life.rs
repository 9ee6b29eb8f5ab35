//! The life of a created call, driven in the background after the 201 (`queued`), as
//! Twilio drives it: `initiated` → `ringing` → per [`Callee`]: `busy`, `failed`,
//! `no-answer` after the ring time, or answered (`in-progress`): the webhook and media
//! stream through the ingress when one is configured (else the call just lasts: a human
//! its scenario's spoken length, a voicemail until hung up), AMD when requested, and at the
//! end `completed`. Each step is a signed status callback when `StatusCallbackEvent` asks
//! for it (`completed` always); the async AMD result goes to `AsyncAmdStatusCallback`.
//!
//! Consumes the created call, its callee, [`Timing`] and the optional [`Answer`]; produces
//! status transitions in [`TwilioState`] and callbacks through [`Delivery`]. State: this
//! call's task; everything observable is in `TwilioState`.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sb_twilio::resource::rfc2822;
use sb_twilio::rest::API_VERSION;
use sb_twilio::{AmdCallback, AnsweredBy, CallStatus, CallTarget, CreateCall, MachineDetection};
use tokio_util::sync::CancellationToken;

use super::callback::{Callback, Delivery};
use super::callee::{Callee, spoken_length};
use super::record::CallbackKind;
use super::{Answer, Timing, TwilioState};
use crate::caller::{Scenario, Step, place_call};

/// What every call's life shares.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) answer: Option<Answer>,
    pub(crate) timing: Timing,
    pub(crate) delivery: Delivery,
    /// The stand-in's own URL once it listens: answered calls' control lines register
    /// there unless the caller config names another.
    pub(crate) own_url: Arc<std::sync::OnceLock<String>>,
}

/// One created call.
pub(crate) struct Life {
    pub(crate) state: TwilioState,
    pub(crate) settings: Arc<Settings>,
    pub(crate) call_sid: String,
    pub(crate) create: CreateCall,
    pub(crate) callee: Callee,
    pub(crate) hangup: CancellationToken,
}

impl Life {
    /// Runs the call to its end and sends its `completed` callback.
    pub(crate) async fn run(self) {
        for (status, event) in [
            (CallStatus::Initiated, "initiated"),
            (CallStatus::Ringing, "ringing"),
        ] {
            if self.state.advance(&self.call_sid, status).is_none() {
                return self.completed().await;
            }
            self.status_callback(event, status, Vec::new()).await;
        }
        let end = match &self.callee {
            Callee::Busy => CallStatus::Busy,
            Callee::Failed => CallStatus::Failed,
            Callee::NoAnswer => {
                self.wait(self.settings.timing.ring).await;
                CallStatus::NoAnswer
            }
            Callee::Human(_) | Callee::Voicemail { .. } => {
                self.answered().await;
                CallStatus::Completed
            }
        };
        if let Some(resource) = self.state.end(&self.call_sid, end) {
            tracing::info!(
                call_sid = %self.call_sid,
                callee = self.callee.kind(),
                status = resource.status.as_str(),
                "created call ended"
            );
        }
        self.completed().await;
    }

    /// Sleeps `duration`, or less when the call is hung up through REST.
    async fn wait(&self, duration: Duration) -> bool {
        tokio::select! {
            () = tokio::time::sleep(duration) => true,
            () = self.hangup.cancelled() => false,
        }
    }

    /// `in-progress`, AMD, and the conversation until either side hangs up.
    async fn answered(&self) {
        if self
            .state
            .advance(&self.call_sid, CallStatus::InProgress)
            .is_none()
        {
            return;
        }
        self.status_callback("answered", CallStatus::InProgress, Vec::new())
            .await;
        let amd = self.amd_plan();
        let mut webhook_extra = Vec::new();
        let mut greeting_done = false;
        if let Some((answered_by, delay)) = amd.filter(|_| !self.create.async_amd) {
            // Synchronous AMD: Twilio holds the webhook until detection is done and sends
            // `AnsweredBy` with it.
            if !self.wait(delay).await {
                return;
            }
            self.state.set_answered_by(&self.call_sid, answered_by);
            webhook_extra.push(("AnsweredBy".to_owned(), answered_by.as_str().to_owned()));
            greeting_done = true;
        }
        let session = self.session(webhook_extra, greeting_done);
        tokio::pin!(session);
        let detect = async {
            match amd.filter(|_| self.create.async_amd) {
                Some((answered_by, delay)) => {
                    tokio::time::sleep(delay).await;
                    self.amd_result(answered_by, delay).await;
                }
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut session => {}
            () = detect => session.await,
        }
    }

    /// What AMD will say and after how long, when it was requested: a human is detected
    /// after the detection delay; a machine at once (`Enable`: `machine_start`) or at the
    /// end of its greeting (`DetectMessageEnd`: `machine_end_beep`); `unknown` when that
    /// takes longer than `MachineDetectionTimeout`.
    fn amd_plan(&self) -> Option<(AnsweredBy, Duration)> {
        let mode = self.create.machine_detection?;
        let delay = self.settings.timing.amd_delay;
        let (answered_by, after) = match (&self.callee, mode) {
            (Callee::Voicemail { greeting }, MachineDetection::DetectMessageEnd) => {
                (AnsweredBy::MachineEndBeep, *greeting)
            }
            (Callee::Voicemail { .. }, MachineDetection::Enable) => {
                (AnsweredBy::MachineStart, delay)
            }
            _ => (AnsweredBy::Human, delay),
        };
        let limit = Duration::from_secs(
            self.create
                .machine_detection_timeout_secs
                .unwrap_or(30)
                .into(),
        );
        Some(if after > limit {
            (AnsweredBy::Unknown, limit)
        } else {
            (answered_by, after)
        })
    }

    /// Records the async AMD result and POSTs it to `AsyncAmdStatusCallback`.
    async fn amd_result(&self, answered_by: AnsweredBy, took: Duration) {
        self.state.set_answered_by(&self.call_sid, answered_by);
        let Some(url) = self.create.async_amd_status_callback.as_deref() else {
            return;
        };
        let callback = AmdCallback::new(
            self.state.account_sid(),
            &self.call_sid,
            answered_by,
            took.as_millis() as u64,
        );
        self.send(
            CallbackKind::Amd,
            url,
            self.create.async_amd_status_callback_method.as_deref(),
            callback.params,
        )
        .await;
    }

    /// The answered call until it ends: through the ingress when there is one and the call
    /// has a `Url`, else for as long as the callee would stay on the line.
    async fn session(&self, webhook_extra: Vec<(String, String)>, greeting_done: bool) {
        let max_call = self.settings.timing.max_call;
        let scenario = match &self.callee {
            Callee::Human(scenario) => scenario.clone(),
            Callee::Voicemail { greeting } => {
                let greeting = if greeting_done {
                    Duration::ZERO
                } else {
                    *greeting
                };
                voicemail(greeting, max_call)
            }
            _ => return,
        };
        let (Some(answer), CallTarget::Url(url)) = (&self.settings.answer, &self.create.target)
        else {
            let lasts = match &self.callee {
                Callee::Human(scenario) => spoken_length(scenario),
                _ => max_call,
            };
            self.wait(lasts.min(max_call)).await;
            return;
        };
        let mut config = answer.caller.clone();
        config.account_sid = self.state.account_sid().to_owned();
        config.call_sid = Some(self.call_sid.clone());
        config.direction = "outbound-api".to_owned();
        config.hangup = self.hangup.clone();
        config.max_call = max_call;
        config.send_status_callback = false;
        config.webhook_extra = webhook_extra;
        if config.control_url.is_none() {
            config.control_url = self.settings.own_url.get().cloned();
        }
        if let Ok(parsed) = url::Url::parse(url) {
            config.public_url = parsed.origin().ascii_serialization();
            config.voice_path = match parsed.query() {
                Some(query) => format!("{}?{query}", parsed.path()),
                None => parsed.path().to_owned(),
            };
        }
        let mut scenario = scenario;
        scenario.from = self.create.from.clone();
        scenario.to = self.create.to.clone();
        let outcome = place_call(config, &scenario)
            .await
            .map_err(|e| e.to_string());
        self.state.caller_done(&self.call_sid, outcome);
    }

    /// Sends the `completed` event with the call's final status and durations.
    async fn completed(&self) {
        let Some(record) = self.state.call(&self.call_sid) else {
            return;
        };
        let resource = record.resource;
        let seconds: u64 = resource
            .duration
            .as_deref()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        let mut extra = vec![
            ("CallDuration".to_owned(), seconds.to_string()),
            // Billed minutes, at least one for a call that was answered.
            (
                "Duration".to_owned(),
                seconds
                    .div_ceil(60)
                    .max(u64::from(record.answered_at.is_some()))
                    .to_string(),
            ),
        ];
        let sip = match resource.status {
            CallStatus::Busy => "486",
            CallStatus::NoAnswer | CallStatus::Canceled => "487",
            CallStatus::Failed => "404",
            _ => "200",
        };
        extra.push(("SipResponseCode".to_owned(), sip.to_owned()));
        if self.create.machine_detection.is_some() {
            let answered_by = record.answered_by.unwrap_or(AnsweredBy::Unknown);
            extra.push(("AnsweredBy".to_owned(), answered_by.as_str().to_owned()));
        }
        self.status_callback("completed", resource.status, extra)
            .await;
    }

    /// Sends a status callback for `event` if the create request asked for it.
    async fn status_callback(&self, event: &str, status: CallStatus, extra: Vec<(String, String)>) {
        let Some(url) = self.create.status_callback.as_deref() else {
            return;
        };
        if !self.create.wants_event(event) {
            return;
        }
        let sequence = self.state.next_sequence(&self.call_sid);
        let (from, to) = (self.create.from.as_str(), self.create.to.as_str());
        let timestamp = rfc2822(SystemTime::now());
        let mut params: Vec<(String, String)> = [
            ("AccountSid", self.state.account_sid()),
            ("ApiVersion", API_VERSION),
            ("CallSid", self.call_sid.as_str()),
            ("CallStatus", status.as_str()),
            ("Called", to),
            ("Caller", from),
            ("Direction", "outbound-api"),
            ("From", from),
            ("To", to),
            ("Timestamp", timestamp.as_str()),
            ("CallbackSource", "call-progress-events"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        params.extend(extra);
        params.push(("SequenceNumber".to_owned(), sequence.to_string()));
        self.send(
            CallbackKind::Status,
            url,
            self.create.status_callback_method.as_deref(),
            params,
        )
        .await;
    }

    async fn send(
        &self,
        kind: CallbackKind,
        url: &str,
        method: Option<&str>,
        params: Vec<(String, String)>,
    ) {
        let public_url = match &self.create.target {
            CallTarget::Url(url) => Some(url.as_str()),
            _ => None,
        };
        let callback = Callback {
            call_sid: &self.call_sid,
            kind,
            url,
            method,
            public_url,
            params,
        };
        self.settings.delivery.send(&self.state, callback).await;
    }
}

/// An answering machine's side of the stream: `greeting` of silence, then silence while it
/// records, until hung up or `max_call`.
fn voicemail(greeting: Duration, max_call: Duration) -> Scenario {
    let mut scenario = super::callee::empty_scenario();
    scenario.steps = vec![
        Step::Pause {
            ms: greeting.as_millis() as u64,
        },
        Step::Pause {
            ms: max_call.as_millis() as u64,
        },
    ];
    scenario
}
