//! Live call migration on drain: the Twilio side.
//!
//! Consumes a draining socket's call (its account, sid, tenant, numbers and a handoff
//! token); produces the TwiML that connects the call's stream anew (`<Connect><Stream>` to
//! the service URL, a fresh credential, the handoff token as a `<Parameter>`; every
//! stream's `<Connect action>` is [`STREAM_ENDED_PATH`], so a stream that drops without its
//! call ending is connected anew the same way) and asks
//! Twilio to run it on the live call (`POST …/Calls/{sid}.json`, `Twiml=`; PROTOCOLS §4).
//! Twilio then stops the old stream and opens a new one, which the load balancer hands to
//! a replica that is not draining; that socket resumes the call ([`crate::media`]).
//! State: the HTTP client.

use std::time::{Duration, SystemTime};

use sb_runtime::Secret;
use sb_schemas::CallSid;
use sb_twilio::rest::call_path;
use sb_twilio::twiml::ConnectStream;
use sb_twilio::{CallBinding, UpdateCall, credential};

use crate::BackendError;
use crate::config::Settings;

/// Every stream's `<Connect action>`: Twilio asks here what next when a stream ends
/// without its call ending (`?tenant=…`, covered by the signature).
pub const STREAM_ENDED_PATH: &str = "/twilio/stream-ended";

/// The stream parameter that names a handoff.
pub const HANDOFF_PARAMETER: &str = "handoff";
/// TwiML parameter values are clipped to this (Twilio's limit is larger).
pub const MAX_PARAMETER_VALUE: usize = 128;
/// How long one redirect may take.
const REDIRECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The `<Connect><Stream>` answer for a call: the tenant, its numbers and a media-socket
/// credential bound to the call, the tenant and the stream URL, plus `extra` parameters.
pub fn stream_twiml(
    settings: &Settings,
    (tenant, sid): (&str, &CallSid),
    (from, to): (&str, &str),
    extra: &[(&str, &str)],
) -> Option<String> {
    let clip = |value: &str| value.chars().take(MAX_PARAMETER_VALUE).collect::<String>();
    let binding = CallBinding {
        call_sid: sid.as_str(),
        tenant,
        stream_url: &settings.stream_url,
    };
    let mut stream = ConnectStream::new(settings.stream_url.clone());
    stream.action = Some(settings.public_url_for(&format!("{STREAM_ENDED_PATH}?tenant={tenant}")));
    let mut stream = stream
        .parameter("tenant", tenant)
        .parameter("from", clip(from))
        .parameter("to", clip(to))
        .parameter(
            credential::PARAMETER,
            settings.credentials.issue(&binding, SystemTime::now()),
        );
    for (name, value) in extra {
        stream = stream.parameter(*name, *value);
    }
    match stream.to_twiml() {
        Ok(xml) => Some(xml),
        Err(error) => {
            tracing::error!(error = %error, "cannot build the stream TwiML");
            None
        }
    }
}

/// Twilio's Calls API, for redirects. Without an API URL every redirect fails (the call
/// then stays on its socket until the drain deadline).
#[derive(Clone, Default)]
pub struct TwilioCalls {
    inner: Option<(reqwest::Client, String, Secret)>,
}

impl std::fmt::Debug for TwilioCalls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TwilioCalls")
            .field("api_url", &self.inner.as_ref().map(|(_, url, _)| url))
            .finish_non_exhaustive()
    }
}

impl TwilioCalls {
    /// Redirects through `api_url` (e.g. `https://api.twilio.com`), authenticated with the
    /// account's auth token.
    pub fn new(api_url: &str, auth_token: Secret) -> Result<Self, reqwest::Error> {
        let http = reqwest::Client::builder()
            .timeout(REDIRECT_TIMEOUT)
            .build()?;
        Ok(Self {
            inner: Some((http, api_url.trim_end_matches('/').to_owned(), auth_token)),
        })
    }

    /// `POST …/Calls/{sid}.json` with `Twiml=…`: 2xx or an error naming Twilio's answer.
    pub async fn redirect(
        &self,
        account_sid: &str,
        sid: &CallSid,
        twiml: &str,
    ) -> Result<(), BackendError> {
        let Some((http, api_url, token)) = &self.inner else {
            return Err(BackendError::Redirect("no Twilio API configured".into()));
        };
        let update = UpdateCall {
            twiml: Some(twiml.to_owned()),
            ..UpdateCall::default()
        };
        let response = http
            .post(format!("{api_url}{}", call_path(account_sid, sid.as_str())))
            .basic_auth(account_sid, Some(token.expose()))
            .header(
                reqwest::header::CONTENT_TYPE,
                "application/x-www-form-urlencoded",
            )
            .body(update.to_form())
            .send()
            .await
            .map_err(|e| BackendError::Redirect(e.without_url().to_string()))?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body = response.text().await.unwrap_or_default();
        let message = serde_json::from_str::<sb_twilio::ApiError>(&body)
            .map(|e| e.message)
            .unwrap_or_else(|_| body.chars().take(200).collect());
        Err(BackendError::Redirect(format!("{status}: {message}")))
    }
}
