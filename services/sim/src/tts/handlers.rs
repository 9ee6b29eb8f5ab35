//! The three TTS faces: Azure `POST /cognitiveservices/v1`, Deepgram `POST /v1/speak`,
//! OpenAI `POST /v1/audio/speech`.
//!
//! Consumes each vendor's headers and body and checks them in the vendor's order (auth,
//! then content type and format, then the body); produces its error envelope and status
//! (401, 415, 400, or an injected 400/401/429/503 for a valid request) or the audio
//! response built by [`super::respond`]. State: none beyond the counters in [`Shared`].

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::response::Response;
use bytes::Bytes;
use http::{HeaderMap, StatusCode, header};
use serde_json::Value;

use super::Shared;
use super::format::Format;
use super::respond::{Face, audio_response, espeak_voice, header_str, injected, refuse};
use super::ssml::Ssml;
use crate::support::{credential, key_accepted};

/// OpenAI's limit on `input`.
const MAX_OPENAI_INPUT_CHARS: usize = 4_096;

/// `POST /cognitiveservices/v1`.
pub(crate) async fn azure(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = shared.begin(Face::Azure as usize);
    let face = Face::Azure;
    let presented = header_str(&headers, "ocp-apim-subscription-key")
        .or_else(|| credential(headers.get(header::AUTHORIZATION), &["Bearer"]));
    if !key_accepted(shared.config.api_key.as_ref(), presented) {
        let message = "Access denied due to invalid subscription key or wrong API endpoint.";
        return refuse(
            &shared,
            face,
            StatusCode::UNAUTHORIZED,
            message,
            &request_id,
        );
    }
    let content_type = header_str(&headers, header::CONTENT_TYPE).unwrap_or("");
    if !content_type
        .to_ascii_lowercase()
        .starts_with("application/ssml+xml")
    {
        let message = "Content-Type must be application/ssml+xml.";
        return refuse(
            &shared,
            face,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            message,
            &request_id,
        );
    }
    let Some(format) = header_str(&headers, "x-microsoft-outputformat").and_then(Format::azure)
    else {
        let message = "X-Microsoft-OutputFormat is missing or not supported.";
        return refuse(&shared, face, StatusCode::BAD_REQUEST, message, &request_id);
    };
    if header_str(&headers, header::USER_AGENT).is_none_or(|ua| ua.len() >= 255) {
        return refuse(
            &shared,
            face,
            StatusCode::BAD_REQUEST,
            "User-Agent is required.",
            &request_id,
        );
    }
    let ssml = match std::str::from_utf8(&body)
        .map_err(|e| e.to_string())
        .and_then(|b| Ssml::parse(b).map_err(|e| e.to_string()))
    {
        Ok(ssml) => ssml,
        Err(message) => {
            return refuse(
                &shared,
                face,
                StatusCode::BAD_REQUEST,
                &message,
                &request_id,
            );
        }
    };
    shared.stats.azure_voices.add(&ssml.voice);
    shared
        .stats
        .azure_langs
        .add(ssml.lang.as_deref().unwrap_or("-"));
    if let Some(response) = injected(&shared, face, &request_id) {
        return response;
    }
    // The voice speaks its own locale (`hi-IN-SwaraNeural`: Hindi), whatever the text.
    let voice = espeak_voice(&ssml.voice, ssml.lang.as_deref());
    audio_response(&shared, format, ssml.text, voice, face, &request_id)
}

/// `POST /v1/speak?model=…&encoding=…&sample_rate=…&container=…` with `{"text": …}`.
pub(crate) async fn deepgram_speak(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
    body: Bytes,
) -> Response {
    let request_id = shared.begin(Face::Deepgram as usize);
    let face = Face::Deepgram;
    if !key_accepted(
        shared.config.api_key.as_ref(),
        credential(headers.get(header::AUTHORIZATION), &["Token", "Bearer"]),
    ) {
        return refuse(
            &shared,
            face,
            StatusCode::UNAUTHORIZED,
            "Invalid credentials.",
            &request_id,
        );
    }
    let pairs: Vec<(String, String)> =
        serde_urlencoded::from_str(query.as_deref().unwrap_or("")).unwrap_or_default();
    let get = |name: &str| {
        pairs
            .iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let format = match Format::deepgram(get("encoding"), get("sample_rate"), get("container")) {
        Ok(format) => format,
        Err(message) => {
            return refuse(
                &shared,
                face,
                StatusCode::BAD_REQUEST,
                &message,
                &request_id,
            );
        }
    };
    let text = match serde_json::from_slice::<Value>(&body)
        .ok()
        .as_ref()
        .and_then(|v| v.get("text"))
        .and_then(Value::as_str)
    {
        Some(text) if !text.trim().is_empty() => text.to_owned(),
        _ => {
            return refuse(
                &shared,
                face,
                StatusCode::BAD_REQUEST,
                "Body must be JSON with a non-empty \"text\".",
                &request_id,
            );
        }
    };
    if let Some(response) = injected(&shared, face, &request_id) {
        return response;
    }
    let voice = if get("model").is_some_and(|m| m.ends_with("-es")) {
        "es"
    } else {
        "en-us"
    };
    audio_response(&shared, format, text, voice.to_owned(), face, &request_id)
}

/// `POST /v1/audio/speech` with `{model, input, voice, response_format}`.
pub(crate) async fn openai_speech(
    State(shared): State<Arc<Shared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request_id = shared.begin(Face::OpenAi as usize);
    let face = Face::OpenAi;
    if !key_accepted(
        shared.config.api_key.as_ref(),
        credential(headers.get(header::AUTHORIZATION), &["Bearer"]),
    ) {
        return refuse(
            &shared,
            face,
            StatusCode::UNAUTHORIZED,
            "Incorrect API key provided.",
            &request_id,
        );
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return refuse(
            &shared,
            face,
            StatusCode::BAD_REQUEST,
            "We could not parse the JSON body of your request.",
            &request_id,
        );
    };
    let field = |name: &str| {
        request
            .get(name)
            .and_then(Value::as_str)
            .filter(|v| !v.is_empty())
    };
    let (Some(_model), Some(input)) = (field("model"), field("input")) else {
        return refuse(
            &shared,
            face,
            StatusCode::BAD_REQUEST,
            "'model' and 'input' are required.",
            &request_id,
        );
    };
    if request.get("voice").is_none_or(Value::is_null) {
        return refuse(
            &shared,
            face,
            StatusCode::BAD_REQUEST,
            "'voice' is required.",
            &request_id,
        );
    }
    if input.chars().count() > MAX_OPENAI_INPUT_CHARS {
        let message = "'input' is too long: at most 4096 characters.";
        return refuse(&shared, face, StatusCode::BAD_REQUEST, message, &request_id);
    }
    let format = match Format::openai(field("response_format")) {
        Ok(format) => format,
        Err(message) => {
            return refuse(
                &shared,
                face,
                StatusCode::BAD_REQUEST,
                &message,
                &request_id,
            );
        }
    };
    if let Some(response) = injected(&shared, face, &request_id) {
        return response;
    }
    audio_response(
        &shared,
        format,
        input.to_owned(),
        "en-us".to_owned(),
        face,
        &request_id,
    )
}
