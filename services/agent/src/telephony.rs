//! Acting on the phone call itself: hang up or transfer, behind the [`Telephony`] trait.
//!
//! Consumes a call sid (and a number to transfer to); produces Twilio REST updates
//! (PROTOCOLS §4): `POST /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with
//! `Status=completed` (hang up) or `Twiml=<Response><Dial>…</Dial></Response>` (transfer),
//! HTTP Basic auth `AccountSid:AuthToken`. A 429 (code 20429) is never processed by Twilio,
//! so it is retried twice with backoff; a 404 means the call is already gone, which is
//! what a hang-up wanted anyway. Outcomes go to `switchboard_telephony_actions_total`.
//! State: the HTTP connection pool.

use std::time::Duration;

use futures::future::BoxFuture;
use sb_runtime::metrics::Metric;
use sb_schemas::CallSid;
use sb_twilio::UpdateCall;
use sb_twilio::rest::{RestAuth, call_path};

/// Why a call could not be updated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TelephonyError {
    #[error("cannot reach twilio: {0}")]
    Connect(String),
    #[error("twilio answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("telephony is not configured (SB_TWILIO_ACCOUNT_SID / SB_TWILIO_AUTH_TOKEN)")]
    Unconfigured,
}

impl TelephonyError {
    pub fn kind(&self) -> &'static str {
        match self {
            TelephonyError::Connect(_) => "connect",
            TelephonyError::Status { status, .. } if *status == 429 => "rate_limited",
            TelephonyError::Status { status, .. } if *status >= 500 => "status_5xx",
            TelephonyError::Status { .. } => "status_4xx",
            TelephonyError::Unconfigured => "unconfigured",
        }
    }
}

/// What the agent can do to a live call.
pub trait Telephony: Send + Sync + 'static {
    /// Ends the call.
    fn hang_up<'a>(&'a self, call: &'a CallSid) -> BoxFuture<'a, Result<(), TelephonyError>>;
    /// Connects the caller to `number` (E.164), ending the agent's part of the call.
    fn transfer<'a>(
        &'a self,
        call: &'a CallSid,
        number: &'a str,
    ) -> BoxFuture<'a, Result<(), TelephonyError>>;
}

/// Telephony for deployments without Twilio credentials: every action fails.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTelephony;

impl Telephony for NoTelephony {
    fn hang_up<'a>(&'a self, _: &'a CallSid) -> BoxFuture<'a, Result<(), TelephonyError>> {
        Box::pin(async { Err(TelephonyError::Unconfigured) })
    }

    fn transfer<'a>(
        &'a self,
        _: &'a CallSid,
        _: &'a str,
    ) -> BoxFuture<'a, Result<(), TelephonyError>> {
        Box::pin(async { Err(TelephonyError::Unconfigured) })
    }
}

/// Twilio's REST API.
#[derive(Clone)]
pub struct TwilioRest {
    http: reqwest::Client,
    api_url: String,
    account_sid: String,
    auth: RestAuth,
}

impl std::fmt::Debug for TwilioRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioRest")
            .field("api_url", &self.api_url)
            .field("account_sid", &self.account_sid)
            .finish_non_exhaustive()
    }
}

/// Retries of a 429 before giving up.
const RATE_LIMIT_RETRIES: u32 = 2;

impl TwilioRest {
    pub fn new(
        api_url: &str,
        account_sid: String,
        auth: RestAuth,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder().timeout(timeout).build()?,
            api_url: api_url.trim_end_matches('/').to_owned(),
            account_sid,
            auth,
        })
    }

    async fn update(
        &self,
        call: &CallSid,
        update: UpdateCall,
        action: &'static str,
    ) -> Result<(), TelephonyError> {
        let url = format!(
            "{}{}",
            self.api_url,
            call_path(&self.account_sid, call.as_str())
        );
        let mut attempt = 0;
        let result = loop {
            let sent = self
                .http
                .post(&url)
                .basic_auth(self.auth.user(), Some(self.auth.password()))
                .header(
                    reqwest::header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded",
                )
                .body(update.to_form())
                .send()
                .await;
            let response = match sent {
                Ok(response) => response,
                Err(e) => break Err(TelephonyError::Connect(e.without_url().to_string())),
            };
            let status = response.status().as_u16();
            if response.status().is_success() || (status == 404 && action == "hang_up") {
                break Ok(());
            }
            let body = response.text().await.unwrap_or_default();
            if status == 429 && attempt < RATE_LIMIT_RETRIES {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                continue;
            }
            let message = serde_json::from_str::<sb_twilio::ApiError>(&body)
                .map(|e| e.message)
                .unwrap_or_else(|_| body.chars().take(200).collect());
            break Err(TelephonyError::Status { status, message });
        };
        let outcome = match &result {
            Ok(()) => "ok",
            Err(e) => e.kind(),
        };
        metrics::counter!(Metric::TelephonyActions.name(), "action" => action, "outcome" => outcome)
            .increment(1);
        result
    }
}

impl Telephony for TwilioRest {
    fn hang_up<'a>(&'a self, call: &'a CallSid) -> BoxFuture<'a, Result<(), TelephonyError>> {
        Box::pin(self.update(call, UpdateCall::hang_up(), "hang_up"))
    }

    fn transfer<'a>(
        &'a self,
        call: &'a CallSid,
        number: &'a str,
    ) -> BoxFuture<'a, Result<(), TelephonyError>> {
        let update = UpdateCall {
            twiml: Some(dial_twiml(number)),
            ..UpdateCall::default()
        };
        Box::pin(self.update(call, update, "transfer"))
    }
}

/// `<Response><Dial>number</Dial></Response>`, the number XML-escaped.
pub fn dial_twiml(number: &str) -> String {
    let mut escaped = String::with_capacity(number.len());
    for c in number.chars() {
        match c {
            '&' => escaped.push_str("&amp;"),
            '<' => escaped.push_str("&lt;"),
            '>' => escaped.push_str("&gt;"),
            '"' => escaped.push_str("&quot;"),
            '\'' => escaped.push_str("&apos;"),
            c => escaped.push(c),
        }
    }
    format!("<Response><Dial>{escaped}</Dial></Response>")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dial_twiml_escapes() {
        assert_eq!(
            dial_twiml("+15005550010"),
            "<Response><Dial>+15005550010</Dial></Response>"
        );
        assert_eq!(
            dial_twiml("<a&b>"),
            "<Response><Dial>&lt;a&amp;b&gt;</Dial></Response>"
        );
    }
}
