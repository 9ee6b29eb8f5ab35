//! The Calls REST API (2010-04-01): create and update requests as form pairs, the call
//! resource JSON, and the legacy error body (PROTOCOLS §4).
//!
//! Consumes form pairs or typed requests; produces typed requests (validated with the error
//! codes Twilio answers), form bodies and JSON. Stateless.

use serde::{Deserialize, Serialize};

use crate::amd::{AMD_FIELDS, AmdRequest, MachineDetection};
use crate::form::{all, encode_form, first};
pub use crate::update::UpdateCall;

/// The API version in every path and webhook.
pub const API_VERSION: &str = "2010-04-01";

/// `/2010-04-01/Accounts/{account_sid}/Calls.json`.
pub fn calls_path(account_sid: &str) -> String {
    format!("/{API_VERSION}/Accounts/{account_sid}/Calls.json")
}

/// `/2010-04-01/Accounts/{account_sid}/Calls/{call_sid}.json`.
pub fn call_path(account_sid: &str, call_sid: &str) -> String {
    format!("/{API_VERSION}/Accounts/{account_sid}/Calls/{call_sid}.json")
}

/// How a REST request authenticates, as HTTP Basic (PROTOCOLS §4): the account SID with
/// the account's auth token, or an API key (`SK…`) with its secret. An API key can be
/// revoked alone and keeps the auth token (which also signs Twilio's webhooks) out of the
/// services that only call the API. Its `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct RestAuth {
    user: String,
    password: String,
}

impl RestAuth {
    pub fn auth_token(account_sid: &str, auth_token: &str) -> Self {
        Self {
            user: account_sid.to_owned(),
            password: auth_token.to_owned(),
        }
    }

    pub fn api_key(key_sid: &str, secret: &str) -> Self {
        Self {
            user: key_sid.to_owned(),
            password: secret.to_owned(),
        }
    }

    /// The Basic user: the account SID or the key's SID.
    pub fn user(&self) -> &str {
        &self.user
    }

    /// The Basic password: the auth token or the key's secret.
    pub fn password(&self) -> &str {
        &self.password
    }
}

impl std::fmt::Debug for RestAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RestAuth")
            .field("user", &self.user)
            .finish_non_exhaustive()
    }
}

/// Whether `sid` is `prefix` + 32 lowercase-or-uppercase hex digits (`CA…`, `AC…`, `MZ…`).
pub fn is_sid(sid: &str, prefix: &str) -> bool {
    sid.len() == 34
        && prefix.len() == 2
        && sid.starts_with(prefix)
        && sid.as_bytes()[2..].iter().all(u8::is_ascii_hexdigit)
}

/// A call's status, as in resources and callbacks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CallStatus {
    Queued,
    Initiated,
    Ringing,
    InProgress,
    Completed,
    Busy,
    Failed,
    NoAnswer,
    Canceled,
}

impl CallStatus {
    /// The wire value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "queued",
            Self::Initiated => "initiated",
            Self::Ringing => "ringing",
            Self::InProgress => "in-progress",
            Self::Completed => "completed",
            Self::Busy => "busy",
            Self::Failed => "failed",
            Self::NoAnswer => "no-answer",
            Self::Canceled => "canceled",
        }
    }

    /// Parses a wire value.
    pub fn parse(value: &str) -> Option<Self> {
        [
            Self::Queued,
            Self::Initiated,
            Self::Ringing,
            Self::InProgress,
            Self::Completed,
            Self::Busy,
            Self::Failed,
            Self::NoAnswer,
            Self::Canceled,
        ]
        .into_iter()
        .find(|status| status.as_str() == value)
    }

    /// Whether the call is over.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            Self::Completed | Self::Busy | Self::Failed | Self::NoAnswer | Self::Canceled
        )
    }
}

/// The legacy 2010 API error body, e.g. `{"code":20429,"message":…,"more_info":…,"status":429}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("twilio error {code} (HTTP {status}): {message}")]
pub struct ApiError {
    pub code: u32,
    pub message: String,
    pub more_info: String,
    pub status: u16,
}

impl ApiError {
    /// An error with Twilio's `more_info` link for `code`.
    pub fn new(status: u16, code: u32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            more_info: format!("https://www.twilio.com/docs/errors/{code}"),
            status,
        }
    }

    /// 401 / 20003: wrong or missing credentials.
    pub fn unauthorized() -> Self {
        Self::new(401, 20003, "Authenticate")
    }

    /// 404 / 20404: no such resource at `path`.
    pub fn not_found(path: &str) -> Self {
        Self::new(
            404,
            20404,
            format!("The requested resource {path} was not found"),
        )
    }

    /// 429 / 20429: too many concurrent requests; always safe to retry.
    pub fn too_many_requests() -> Self {
        Self::new(429, 20429, "Too Many Requests")
    }

    /// 400 with a 21xxx validation code.
    pub fn invalid(code: u32, message: impl Into<String>) -> Self {
        Self::new(400, code, message)
    }

    /// The JSON body.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain struct always serialises")
    }
}

/// What a created call runs when answered: exactly one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallTarget {
    /// Fetch TwiML from this URL.
    Url(String),
    /// Run this TwiML (at most 4000 characters).
    Twiml(String),
    /// Run this TwiML application.
    ApplicationSid(String),
}

/// Maximum length of an inline `Twiml` parameter.
pub const MAX_TWIML_CHARS: usize = 4000;

/// `POST …/Calls.json`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreateCall {
    pub to: String,
    pub from: String,
    pub target: CallTarget,
    /// `Method` for `Url` (GET|POST).
    pub method: Option<String>,
    pub status_callback: Option<String>,
    /// Repeated form field: `initiated`, `ringing`, `answered`, `completed`.
    pub status_callback_event: Vec<String>,
    pub status_callback_method: Option<String>,
    /// Ring timeout, seconds.
    pub timeout_secs: Option<u32>,
    /// `MachineDetection`: run AMD on the callee (`AnsweredBy` on the resource and callbacks).
    pub machine_detection: Option<MachineDetection>,
    /// `AsyncAmd=true`: run the call's TwiML at once and POST the AMD result separately.
    pub async_amd: bool,
    /// Where the asynchronous AMD result goes.
    pub async_amd_status_callback: Option<String>,
    /// `GET` or `POST` (Twilio's default).
    pub async_amd_status_callback_method: Option<String>,
    /// `MachineDetectionTimeout`, 3–59 s (Twilio's default 30).
    pub machine_detection_timeout_secs: Option<u32>,
    /// Every other field as sent (`Record`, `SendDigits`, …).
    pub extra: Vec<(String, String)>,
}

/// The values `StatusCallbackEvent` may take.
pub const STATUS_CALLBACK_EVENTS: [&str; 4] = ["initiated", "ringing", "answered", "completed"];

const CREATE_FIELDS: &[&str] = &[
    "To",
    "From",
    "Url",
    "Twiml",
    "ApplicationSid",
    "Method",
    "StatusCallback",
    "StatusCallbackEvent",
    "StatusCallbackMethod",
    "Timeout",
];

impl CreateCall {
    /// A call from `from` to `to` running `target`.
    pub fn new(to: impl Into<String>, from: impl Into<String>, target: CallTarget) -> Self {
        Self {
            to: to.into(),
            from: from.into(),
            target,
            method: None,
            status_callback: None,
            status_callback_event: Vec::new(),
            status_callback_method: None,
            timeout_secs: None,
            machine_detection: None,
            async_amd: false,
            async_amd_status_callback: None,
            async_amd_status_callback_method: None,
            machine_detection_timeout_secs: None,
            extra: Vec::new(),
        }
    }

    /// Whether a status callback is due for `event` (`initiated`, `ringing`, `answered`,
    /// `completed`): those listed in `StatusCallbackEvent`, and `completed` always, as
    /// Twilio sends it whatever the list says. Never without a `StatusCallback`.
    pub fn wants_event(&self, event: &str) -> bool {
        self.status_callback.is_some()
            && (event == "completed" || self.status_callback_event.iter().any(|e| e == event))
    }

    fn amd(&self) -> AmdRequest {
        AmdRequest {
            machine_detection: self.machine_detection,
            async_amd: self.async_amd,
            async_amd_status_callback: self.async_amd_status_callback.clone(),
            async_amd_status_callback_method: self.async_amd_status_callback_method.clone(),
            machine_detection_timeout_secs: self.machine_detection_timeout_secs,
        }
    }

    /// The form pairs, repeated `StatusCallbackEvent`s included.
    pub fn to_params(&self) -> Vec<(String, String)> {
        let mut out = vec![
            ("To".to_owned(), self.to.clone()),
            ("From".to_owned(), self.from.clone()),
        ];
        let mut push = |name: &str, value: &Option<String>| {
            if let Some(value) = value {
                out.push((name.to_owned(), value.clone()));
            }
        };
        match &self.target {
            CallTarget::Url(url) => push("Url", &Some(url.clone())),
            CallTarget::Twiml(twiml) => push("Twiml", &Some(twiml.clone())),
            CallTarget::ApplicationSid(sid) => push("ApplicationSid", &Some(sid.clone())),
        }
        push("Method", &self.method);
        push("StatusCallback", &self.status_callback);
        push("StatusCallbackMethod", &self.status_callback_method);
        push("Timeout", &self.timeout_secs.map(|t| t.to_string()));
        for event in &self.status_callback_event {
            out.push(("StatusCallbackEvent".to_owned(), event.clone()));
        }
        self.amd().to_params(&mut out);
        out.extend(self.extra.iter().cloned());
        out
    }

    /// The form body.
    pub fn to_form(&self) -> String {
        encode_form(&self.to_params())
    }

    /// Reads and validates a create request the way Twilio does (400 + 21xxx on failure).
    pub fn from_params(params: &[(String, String)]) -> Result<Self, ApiError> {
        let to = first(params, "To")
            .ok_or_else(|| ApiError::invalid(21201, "No 'To' number is specified"))?;
        let from = first(params, "From")
            .ok_or_else(|| ApiError::invalid(21213, "No 'From' number is specified"))?;
        if !is_address(to) {
            return Err(ApiError::invalid(
                21211,
                format!("Invalid 'To' Phone Number: {to}"),
            ));
        }
        if !is_address(from) {
            return Err(ApiError::invalid(
                21212,
                format!("Invalid 'From' Phone Number: {from}"),
            ));
        }
        let mut targets = Vec::new();
        if let Some(url) = first(params, "Url") {
            targets.push(CallTarget::Url(url.to_owned()));
        }
        if let Some(twiml) = first(params, "Twiml") {
            targets.push(CallTarget::Twiml(twiml.to_owned()));
        }
        if let Some(sid) = first(params, "ApplicationSid") {
            targets.push(CallTarget::ApplicationSid(sid.to_owned()));
        }
        let target = match (targets.pop(), targets.is_empty()) {
            (Some(target), true) => target,
            _ => {
                return Err(ApiError::invalid(
                    21205,
                    "Exactly one of Url, Twiml or ApplicationSid is required",
                ));
            }
        };
        if let CallTarget::Twiml(twiml) = &target
            && twiml.chars().count() > MAX_TWIML_CHARS
        {
            return Err(ApiError::invalid(
                21205,
                "Twiml must be at most 4000 characters",
            ));
        }
        let events: Vec<String> = all(params, "StatusCallbackEvent")
            .into_iter()
            .map(str::to_owned)
            .collect();
        if let Some(bad) = events
            .iter()
            .find(|e| !STATUS_CALLBACK_EVENTS.contains(&e.as_str()))
        {
            return Err(ApiError::invalid(
                21626,
                format!("Invalid StatusCallbackEvent: {bad}"),
            ));
        }
        let timeout_secs = match first(params, "Timeout") {
            Some(t) => Some(
                t.parse()
                    .map_err(|_| ApiError::invalid(21216, format!("Invalid Timeout: {t}")))?,
            ),
            None => None,
        };
        let amd = AmdRequest::from_params(params)?;
        Ok(Self {
            to: to.to_owned(),
            from: from.to_owned(),
            target,
            method: first(params, "Method").map(str::to_owned),
            status_callback: first(params, "StatusCallback").map(str::to_owned),
            status_callback_event: events,
            status_callback_method: first(params, "StatusCallbackMethod").map(str::to_owned),
            timeout_secs,
            machine_detection: amd.machine_detection,
            async_amd: amd.async_amd,
            async_amd_status_callback: amd.async_amd_status_callback,
            async_amd_status_callback_method: amd.async_amd_status_callback_method,
            machine_detection_timeout_secs: amd.machine_detection_timeout_secs,
            extra: params
                .iter()
                .filter(|(k, _)| {
                    !CREATE_FIELDS.contains(&k.as_str()) && !AMD_FIELDS.contains(&k.as_str())
                })
                .cloned()
                .collect(),
        })
    }
}

/// An E.164 number, or a `client:`/`sip:` address.
fn is_address(value: &str) -> bool {
    if value.starts_with("client:") || value.starts_with("sip:") {
        return value.len() > 7;
    }
    value.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit())
    })
}

#[cfg(test)]
#[path = "rest_tests.rs"]
mod tests;
