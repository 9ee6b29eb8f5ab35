//! The dialer's Twilio REST client: create a call, fetch one, list calls to a number.
//!
//! Consumes [`CreateCall`] requests; produces Twilio's call resources (PROTOCOLS §4) or a
//! [`RestError`] that says whether a call may exist: a refused connection or an error
//! status means Twilio created nothing; a timeout or a broken answer after the request
//! was sent ([`RestError::Unknown`]) may have created a call, so the attempt stays open
//! for the reconciler. State: the HTTP connection pool.

use std::time::Duration;

use sb_twilio::rest::{RestAuth, call_path, calls_path};
use sb_twilio::{ApiError, CallPage, CallResource, CreateCall};

/// Why a REST request did not give a call resource.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RestError {
    /// 429 / 20429: Twilio processed nothing.
    #[error("twilio rate limited the request ({code})")]
    RateLimited { code: u32 },
    /// 5xx: Twilio created nothing (its documented contract for errors).
    #[error("twilio answered {status}: {message}")]
    Server { status: u16, message: String },
    /// Another 4xx: the request is wrong for Twilio (a bad number, a permission).
    #[error("twilio refused the call ({status}, code {code}): {message}")]
    Refused {
        status: u16,
        code: u32,
        message: String,
    },
    /// The request never left: Twilio cannot have acted on it.
    #[error("cannot reach twilio: {0}")]
    Unreachable(String),
    /// The request may have been processed (timeout, a broken answer).
    #[error("twilio's answer is unknown: {0}")]
    Unknown(String),
}

impl RestError {
    /// The `result` label of `switchboard_dialer_dials_total`.
    pub fn label(&self) -> &'static str {
        match self {
            Self::RateLimited { .. } => "rate_limited",
            Self::Server { .. } => "server_error",
            Self::Refused { .. } => "refused",
            Self::Unreachable(_) => "unreachable",
            Self::Unknown(_) => "unknown",
        }
    }
}

/// Twilio's REST API for one account.
#[derive(Clone)]
pub struct TwilioRest {
    http: reqwest::Client,
    base: String,
    account_sid: String,
    auth: RestAuth,
}

impl std::fmt::Debug for TwilioRest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioRest")
            .field("base", &self.base)
            .field("account_sid", &self.account_sid)
            .finish_non_exhaustive()
    }
}

impl TwilioRest {
    /// A client for `base` (`https://api.twilio.com`, or a stand-in), each request
    /// capped at `timeout`.
    pub fn new(
        base: &str,
        account_sid: &str,
        auth: RestAuth,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Self {
            http: reqwest::Client::builder()
                .timeout(timeout)
                .pool_max_idle_per_host(64)
                .build()?,
            base: base.trim_end_matches('/').to_owned(),
            account_sid: account_sid.to_owned(),
            auth,
        })
    }

    /// The API's base URL.
    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn account_sid(&self) -> &str {
        &self.account_sid
    }

    /// `POST …/Calls.json`.
    pub async fn create_call(&self, create: &CreateCall) -> Result<CallResource, RestError> {
        let url = format!("{}{}", self.base, calls_path(&self.account_sid));
        let request = self
            .http
            .post(url)
            .basic_auth(self.auth.user(), Some(self.auth.password()))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(create.to_form());
        self.send(request).await
    }

    /// `GET …/Calls/{sid}.json`.
    pub async fn fetch_call(&self, call_sid: &str) -> Result<CallResource, RestError> {
        let url = format!("{}{}", self.base, call_path(&self.account_sid, call_sid));
        let request = self
            .http
            .get(url)
            .basic_auth(self.auth.user(), Some(self.auth.password()));
        self.send(request).await
    }

    /// `GET …/Calls.json?To=…&From=…`: the newest calls between two numbers.
    pub async fn list_calls(&self, to: &str, from: &str) -> Result<CallPage, RestError> {
        let url = format!("{}{}", self.base, calls_path(&self.account_sid));
        let request = self
            .http
            .get(url)
            .query(&[("To", to), ("From", from), ("PageSize", "20")])
            .basic_auth(self.auth.user(), Some(self.auth.password()));
        self.send(request).await
    }

    async fn send<T: serde::de::DeserializeOwned>(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<T, RestError> {
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                RestError::Unreachable(e.to_string())
            } else {
                RestError::Unknown(e.to_string())
            }
        })?;
        let status = response.status().as_u16();
        let body = response
            .bytes()
            .await
            .map_err(|e| RestError::Unknown(e.to_string()))?;
        if (200..300).contains(&status) {
            return serde_json::from_slice(&body)
                .map_err(|e| RestError::Unknown(format!("unreadable answer: {e}")));
        }
        let error: Option<ApiError> = serde_json::from_slice(&body).ok();
        let (code, message) = error.map_or_else(
            || {
                (
                    0,
                    String::from_utf8_lossy(&body).chars().take(200).collect(),
                )
            },
            |e| (e.code, e.message),
        );
        Err(match status {
            429 => RestError::RateLimited { code },
            500.. => RestError::Server { status, message },
            _ if code == 20429 => RestError::RateLimited { code },
            _ => RestError::Refused {
                status,
                code,
                message,
            },
        })
    }
}
