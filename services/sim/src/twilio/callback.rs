//! Sending a created call's callbacks as Twilio does: status callbacks and the async AMD
//! result, each signed with `X-Twilio-Signature` over the URL exactly as the create
//! request gave it (plus the form fields for `POST`; for `GET` the fields go in the query
//! and the signature covers the whole URL).
//!
//! Where a request really goes: to the URL as given, except that when the stand-in answers
//! calls through an ingress ([`super::Answer`]) a URL on the call's public origin (the
//! origin of its `Url`) is delivered to the ingress at the same path, as Twilio would reach
//! it through the public proxy. The signature is unchanged by this.
//!
//! Consumes callback URLs and fields; produces HTTP requests and a [`CallbackRecord`] per
//! request in [`TwilioState`]. State: a shared HTTP client only.

use std::time::{Duration, SystemTime};

use sb_twilio::form::encode_form;
use sb_twilio::signature::{sign, sign_url};

use super::TwilioState;
use super::record::{CallbackKind, CallbackRecord};

/// Twilio caps every call-related HTTP request at 15 s.
const CALLBACK_TIMEOUT: Duration = Duration::from_secs(15);

/// Signs and sends callbacks; records each one.
#[derive(Clone)]
pub(crate) struct Delivery {
    http: reqwest::Client,
    auth_token: String,
    /// The ingress' real base URL, when calls are answered through one.
    ingress_url: Option<String>,
}

impl std::fmt::Debug for Delivery {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Delivery")
            .field("ingress_url", &self.ingress_url)
            .finish_non_exhaustive()
    }
}

/// One callback to send.
pub(crate) struct Callback<'a> {
    pub(crate) call_sid: &'a str,
    pub(crate) kind: CallbackKind,
    pub(crate) url: &'a str,
    /// `GET` or `POST` (the default).
    pub(crate) method: Option<&'a str>,
    /// The call's `Url`: its origin is the public origin served by the ingress.
    pub(crate) public_url: Option<&'a str>,
    pub(crate) params: Vec<(String, String)>,
}

impl Delivery {
    pub(crate) fn new(auth_token: String, ingress_url: Option<String>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(CALLBACK_TIMEOUT)
            .build()
            .unwrap_or_default();
        Self {
            http,
            auth_token,
            ingress_url,
        }
    }

    /// Sends `callback` once (Twilio does not retry a callback answered at all) and
    /// records the outcome.
    pub(crate) async fn send(&self, state: &TwilioState, callback: Callback<'_>) {
        let method = match callback.method {
            Some(m) if m.eq_ignore_ascii_case("GET") => "GET",
            _ => "POST",
        };
        let (signed_url, signature) = if method == "GET" {
            let separator = if callback.url.contains('?') { '&' } else { '?' };
            let url = format!(
                "{}{separator}{}",
                callback.url,
                encode_form(&callback.params)
            );
            let signature = sign_url(&self.auth_token, &url);
            (url, signature)
        } else {
            let signature = sign(&self.auth_token, callback.url, &callback.params);
            (callback.url.to_owned(), signature)
        };
        let target = self.route(&signed_url, callback.public_url);
        let request = if method == "GET" {
            self.http.get(&target)
        } else {
            self.http
                .post(&target)
                .header("Content-Type", "application/x-www-form-urlencoded")
                .body(encode_form(&callback.params))
        };
        let outcome = request
            .header("X-Twilio-Signature", signature)
            .send()
            .await
            .map(|r| r.status().as_u16())
            .map_err(|e| e.to_string());
        if let Err(error) = &outcome {
            tracing::warn!(call_sid = callback.call_sid, url = callback.url, %error, "callback failed");
        }
        state.record_callback(CallbackRecord {
            call_sid: callback.call_sid.to_owned(),
            kind: callback.kind,
            url: callback.url.to_owned(),
            method: method.to_owned(),
            params: callback.params,
            http_status: outcome.as_ref().ok().copied(),
            error: outcome.err(),
            sent_at: SystemTime::now(),
        });
    }

    /// Where `url` is really sent: the ingress at the same path when `url` is on the
    /// call's public origin and an ingress is configured; `url` itself otherwise.
    fn route(&self, url: &str, public_url: Option<&str>) -> String {
        let (Some(ingress), Some(public)) = (&self.ingress_url, public_url) else {
            return url.to_owned();
        };
        let (Ok(parsed), Ok(public)) = (url::Url::parse(url), url::Url::parse(public)) else {
            return url.to_owned();
        };
        if parsed.origin() != public.origin() {
            return url.to_owned();
        }
        let path = match parsed.query() {
            Some(query) => format!("{}?{query}", parsed.path()),
            None => parsed.path().to_owned(),
        };
        format!("{}{path}", ingress.trim_end_matches('/'))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only URLs on the call's public origin are delivered to the ingress.
    #[test]
    fn routing() {
        let plain = Delivery::new("t".into(), None);
        let public = Some("https://agent.example.com/twilio/voice");
        assert_eq!(
            plain.route("https://agent.example.com/s", public),
            "https://agent.example.com/s"
        );
        let proxied = Delivery::new("t".into(), Some("http://127.0.0.1:9/".into()));
        assert_eq!(
            proxied.route("https://agent.example.com/twilio/status?x=1", public),
            "http://127.0.0.1:9/twilio/status?x=1"
        );
        assert_eq!(
            proxied.route("http://127.0.0.1:5000/cb", public),
            "http://127.0.0.1:5000/cb"
        );
        assert_eq!(proxied.route("http://a/cb", None), "http://a/cb");
    }
}
