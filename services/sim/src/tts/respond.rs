//! How the TTS faces answer: each vendor's error envelope, injected faults, and the audio
//! response itself.
//!
//! Consumes a face, a status and message (errors), or a format, text and voice (audio);
//! produces the HTTP response. Audio is synthesised concurrently with the configured
//! first-byte latency — espeak-ng when installed (unless the config asks for determinism),
//! else the deterministic speech-like signal — rendered into the format and streamed in
//! fixed-size chunks. State: counters and fault dice in [`Shared`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures::SinkExt as _;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use sb_audio::synth;
use serde_json::json;

use super::format::Format;
use super::{Fault, Shared};

/// Which vendor's error envelope to answer in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Face {
    Azure,
    Deepgram,
    OpenAi,
}

impl Face {
    pub(crate) fn error(self, status: StatusCode, message: &str, request_id: &str) -> Response {
        let body = match self {
            Self::Azure => {
                json!({ "error": { "code": status.as_u16().to_string(), "message": message } })
            }
            Self::Deepgram => {
                let code = match status {
                    StatusCode::UNAUTHORIZED => "INVALID_AUTH",
                    StatusCode::TOO_MANY_REQUESTS => "TOO_MANY_REQUESTS",
                    StatusCode::BAD_REQUEST => "INVALID_QUERY_PARAMETER",
                    _ => "INTERNAL_SERVER_ERROR",
                };
                json!({ "err_code": code, "err_msg": message, "request_id": request_id })
            }
            Self::OpenAi => {
                let kind = match status {
                    StatusCode::TOO_MANY_REQUESTS => "requests",
                    s if s.is_server_error() => "server_error",
                    _ => "invalid_request_error",
                };
                json!({ "error": { "message": message, "type": kind, "param": null, "code": null } })
            }
        };
        let mut response = (status, axum::Json(body)).into_response();
        let headers = response.headers_mut();
        set(headers, self.request_id_header(), request_id);
        if self == Self::Deepgram {
            set(headers, "dg-error", message);
        }
        response
    }

    fn request_id_header(self) -> &'static str {
        match self {
            Self::Azure => "x-requestid",
            Self::Deepgram => "dg-request-id",
            Self::OpenAi => "x-request-id",
        }
    }
}

pub(crate) fn set(headers: &mut HeaderMap, name: &'static str, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        headers.insert(name, value);
    }
}

pub(crate) fn header_str(
    headers: &HeaderMap,
    name: impl http::header::AsHeaderName,
) -> Option<&str> {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

/// Counts the request, then turns an injected fault into the face's error response.
pub(crate) fn injected(shared: &Shared, face: Face, request_id: &str) -> Option<Response> {
    let (status, message) = match shared.pick_fault()? {
        Fault::BadRequest => (StatusCode::BAD_REQUEST, "Injected bad request."),
        Fault::Unauthorized => (
            StatusCode::UNAUTHORIZED,
            "Injected: access denied due to invalid subscription key.",
        ),
        Fault::RateLimit => (
            StatusCode::TOO_MANY_REQUESTS,
            "Too many requests. Please retry later.",
        ),
        Fault::Unavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            "Service temporarily unavailable.",
        ),
    };
    shared.stats.errors.fetch_add(1, Ordering::Relaxed);
    let mut response = face.error(status, message, request_id);
    if status == StatusCode::TOO_MANY_REQUESTS {
        set(
            response.headers_mut(),
            "retry-after",
            &shared.config.faults.retry_after_secs.to_string(),
        );
    }
    Some(response)
}

pub(crate) fn refuse(
    shared: &Shared,
    face: Face,
    status: StatusCode,
    message: &str,
    request_id: &str,
) -> Response {
    shared.stats.errors.fetch_add(1, Ordering::Relaxed);
    face.error(status, message, request_id)
}

/// The espeak-ng voice for an Azure voice: `en-US-JennyNeural` → `en-us`; else the SSML
/// language; else `en`.
pub(crate) fn espeak_voice(voice: &str, lang: Option<&str>) -> String {
    let parts: Vec<&str> = voice.split('-').collect();
    match parts.as_slice() {
        [language, region, _, ..] if language.len() == 2 && region.len() == 2 => {
            format!("{language}-{region}").to_ascii_lowercase()
        }
        _ => lang.map_or_else(|| "en".to_owned(), str::to_ascii_lowercase),
    }
}

/// Speech for `text`: espeak-ng unless told to be deterministic or it fails.
async fn synthesize(shared: &Shared, text: &str, voice: &str) -> (u32, Vec<i16>) {
    if !shared.config.deterministic && synth::espeak_available() {
        for attempt in [voice, "en"] {
            match synth::speak_native(text, attempt).await {
                Ok(speech) => return speech,
                Err(error) => tracing::warn!(voice = attempt, %error, "espeak-ng failed"),
            }
        }
    }
    (sb_audio::SAMPLE_RATE, synth::speechlike(text))
}

pub(crate) fn audio_response(
    shared: &Arc<Shared>,
    format: Format,
    text: String,
    voice: String,
    face: Face,
    request_id: &str,
) -> Response {
    shared
        .stats
        .characters
        .fetch_add(text.chars().count() as u64, Ordering::Relaxed);
    let (mut sender, receiver) =
        futures::channel::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    let task_shared = Arc::clone(shared);
    tokio::spawn(async move {
        let shared = task_shared;
        let first_byte = tokio::time::sleep(Duration::from_millis(shared.config.first_byte_ms));
        let ((rate, samples), ()) = tokio::join!(synthesize(&shared, &text, &voice), first_byte);
        let audio = format.render(&samples, rate);
        shared
            .stats
            .audio_bytes
            .fetch_add(audio.len() as u64, Ordering::Relaxed);
        let interval = Duration::from_millis(shared.config.chunk_interval_ms);
        // One clock for the whole response: the pacing does not drift chunk by chunk.
        let mut clock = tokio::time::Instant::now();
        for (index, chunk) in audio.chunks(shared.config.chunk_bytes.max(1)).enumerate() {
            if index > 0 && !interval.is_zero() {
                clock += interval;
                tokio::time::sleep_until(clock).await;
            }
            if sender
                .send(Ok(Bytes::copy_from_slice(chunk)))
                .await
                .is_err()
            {
                return; // The client went away.
            }
        }
    });
    let mut response = Response::new(Body::from_stream(receiver));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    set(headers, face.request_id_header(), request_id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Azure voice names map to espeak-ng voices by locale.
    #[test]
    fn voices() {
        assert_eq!(espeak_voice("en-US-JennyNeural", None), "en-us");
        assert_eq!(espeak_voice("de-DE-KatjaNeural", Some("de-DE")), "de-de");
        assert_eq!(espeak_voice("Jenny", Some("en-GB")), "en-gb");
        assert_eq!(espeak_voice("Jenny", None), "en");
        assert_eq!(espeak_voice("hi-IN-SwaraNeural", Some("hi-IN")), "hi-in");
    }

    /// Each face's error envelope is its vendor's shape.
    #[test]
    fn envelopes() {
        let azure = Face::Azure.error(StatusCode::UNAUTHORIZED, "denied", "r1");
        assert_eq!(
            azure.headers().get("x-requestid").map(|v| v.as_bytes()),
            Some(&b"r1"[..])
        );
        let deepgram = Face::Deepgram.error(StatusCode::BAD_REQUEST, "bad", "r2");
        assert_eq!(
            deepgram.headers().get("dg-error").map(|v| v.as_bytes()),
            Some(&b"bad"[..])
        );
        assert_eq!(
            Face::OpenAi
                .error(StatusCode::TOO_MANY_REQUESTS, "slow", "r3")
                .status(),
            429
        );
    }
}
