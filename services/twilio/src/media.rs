//! Media Streams WebSocket messages, both directions (PROTOCOLS §3.2, §3.3).
//!
//! Consumes JSON text frames; produces typed messages, and serialises typed messages to the
//! exact JSON Twilio sends or accepts. Twilio's numbers-as-strings (`sequenceNumber`,
//! `chunk`, `timestamp`) are `u64` here and strings on the wire. Parsing Twilio → server is
//! lenient about extra fields (Twilio adds fields); parsing server → Twilio is strict, the
//! way Twilio answers extra fields with error 31951. Stateless.

use std::collections::BTreeMap;

use base64::Engine as _;
use serde::{Deserialize, Serialize};

/// A message Twilio sends to the application.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "event",
    rename_all = "lowercase",
    rename_all_fields = "camelCase"
)]
pub enum InboundMessage {
    /// First message on the socket; carries no sequence number.
    Connected { protocol: String, version: String },
    /// Stream metadata; `sequence_number` is 1.
    Start {
        #[serde(with = "string_u64")]
        sequence_number: u64,
        start: StartMeta,
        stream_sid: String,
    },
    /// 20 ms (160 bytes) of caller audio, base64 µ-law.
    Media {
        #[serde(with = "string_u64")]
        sequence_number: u64,
        media: InboundMedia,
        stream_sid: String,
    },
    /// A key press.
    Dtmf {
        stream_sid: String,
        #[serde(with = "string_u64")]
        sequence_number: u64,
        dtmf: Dtmf,
    },
    /// Echo of a mark we sent: played, or discarded by `clear`.
    Mark {
        #[serde(with = "string_u64")]
        sequence_number: u64,
        stream_sid: String,
        mark: Mark,
    },
    /// The stream ended (the call hung up).
    Stop {
        #[serde(with = "string_u64")]
        sequence_number: u64,
        stop: StopMeta,
        stream_sid: String,
    },
}

/// `start` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartMeta {
    pub account_sid: String,
    pub stream_sid: String,
    pub call_sid: String,
    /// `inbound` only, for bidirectional streams.
    pub tracks: Vec<String>,
    pub media_format: MediaFormat,
    /// The TwiML `<Parameter>`s, in a stable order.
    #[serde(default)]
    pub custom_parameters: BTreeMap<String, String>,
}

/// Always `audio/x-mulaw`, 8000 Hz, mono; the numbers are JSON numbers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct MediaFormat {
    pub encoding: String,
    pub sample_rate: u32,
    pub channels: u16,
}

impl Default for MediaFormat {
    fn default() -> Self {
        Self {
            encoding: "audio/x-mulaw".to_owned(),
            sample_rate: 8000,
            channels: 1,
        }
    }
}

/// `media` payload from Twilio.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InboundMedia {
    pub track: String,
    #[serde(with = "string_u64")]
    pub chunk: u64,
    /// Milliseconds since the stream started.
    #[serde(with = "string_u64")]
    pub timestamp: u64,
    /// Base64 of raw µ-law bytes.
    pub payload: String,
}

/// `dtmf` payload; `track` is always `inbound_track`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dtmf {
    pub track: String,
    pub digit: String,
}

/// A mark's label.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Mark {
    pub name: String,
}

/// `stop` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StopMeta {
    pub account_sid: String,
    pub call_sid: String,
}

/// A message the application sends to Twilio (bidirectional streams only). Exactly these
/// fields: anything more is a 31951 protocol error at Twilio.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "event",
    rename_all = "lowercase",
    rename_all_fields = "camelCase",
    deny_unknown_fields
)]
pub enum OutboundMessage {
    /// Audio to queue for playback.
    Media {
        stream_sid: String,
        media: OutboundMedia,
    },
    /// Echoed back once everything queued before it has played (or was cleared).
    Mark { stream_sid: String, mark: Mark },
    /// Drop all queued audio and echo pending marks.
    Clear { stream_sid: String },
}

/// `media` payload to Twilio: only `payload`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutboundMedia {
    /// Base64 of raw µ-law 8 kHz mono, no file header.
    pub payload: String,
}

impl OutboundMessage {
    /// A `media` message carrying `mulaw` (raw µ-law bytes).
    pub fn media(stream_sid: impl Into<String>, mulaw: &[u8]) -> Self {
        Self::Media {
            stream_sid: stream_sid.into(),
            media: OutboundMedia {
                payload: encode_payload(mulaw),
            },
        }
    }

    /// A `mark` message.
    pub fn mark(stream_sid: impl Into<String>, name: impl Into<String>) -> Self {
        Self::Mark {
            stream_sid: stream_sid.into(),
            mark: Mark { name: name.into() },
        }
    }

    /// A `clear` message.
    pub fn clear(stream_sid: impl Into<String>) -> Self {
        Self::Clear {
            stream_sid: stream_sid.into(),
        }
    }

    /// The stream this message addresses.
    pub fn stream_sid(&self) -> &str {
        match self {
            Self::Media { stream_sid, .. }
            | Self::Mark { stream_sid, .. }
            | Self::Clear { stream_sid } => stream_sid,
        }
    }

    /// The JSON text frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain structs of strings always serialise")
    }
}

impl InboundMessage {
    /// The JSON text frame.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("plain structs of strings always serialise")
    }

    /// The `event` name.
    pub fn event(&self) -> &'static str {
        match self {
            Self::Connected { .. } => "connected",
            Self::Start { .. } => "start",
            Self::Media { .. } => "media",
            Self::Dtmf { .. } => "dtmf",
            Self::Mark { .. } => "mark",
            Self::Stop { .. } => "stop",
        }
    }
}

/// Why a frame is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// Not JSON at all.
    #[error("malformed JSON: {0}")]
    BadJson(String),
    /// JSON, but without a string `event` field.
    #[error("message has no \"event\" string")]
    MissingEvent,
    /// An `event` this direction does not have.
    #[error("unknown event {0:?}")]
    UnknownEvent(String),
    /// A known event with missing, mistyped or (outbound) extra fields.
    #[error("invalid {event} message: {reason}")]
    Invalid { event: String, reason: String },
    /// `payload` is not base64.
    #[error("media payload is not base64: {0}")]
    BadPayload(String),
}

impl MediaError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::BadJson(_) => "bad_json",
            Self::MissingEvent => "missing_event",
            Self::UnknownEvent(_) => "unknown_event",
            Self::Invalid { .. } => "invalid",
            Self::BadPayload(_) => "bad_payload",
        }
    }
}

const INBOUND_EVENTS: &[&str] = &["connected", "start", "media", "dtmf", "mark", "stop"];
const OUTBOUND_EVENTS: &[&str] = &["media", "mark", "clear"];

/// Parses a frame Twilio sent (what the ingress receives). Never panics.
pub fn parse_inbound(text: &str) -> Result<InboundMessage, MediaError> {
    parse(text, INBOUND_EVENTS)
}

/// Parses a frame the application sent (what Twilio, or the stand-in, receives). Strict:
/// extra fields are an error, as at Twilio. Never panics.
pub fn parse_outbound(text: &str) -> Result<OutboundMessage, MediaError> {
    parse(text, OUTBOUND_EVENTS)
}

fn parse<T: serde::de::DeserializeOwned>(text: &str, events: &[&str]) -> Result<T, MediaError> {
    let value: serde_json::Value =
        serde_json::from_str(text).map_err(|e| MediaError::BadJson(e.to_string()))?;
    let event = value
        .get("event")
        .and_then(|e| e.as_str())
        .ok_or(MediaError::MissingEvent)?;
    if !events.contains(&event) {
        return Err(MediaError::UnknownEvent(event.to_owned()));
    }
    let event = event.to_owned();
    serde_json::from_value(value).map_err(|e| MediaError::Invalid {
        event,
        reason: e.to_string(),
    })
}

/// Base64 (standard alphabet, padded) of raw µ-law bytes.
pub fn encode_payload(mulaw: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(mulaw)
}

/// Raw µ-law bytes of a `payload`.
pub fn decode_payload(payload: &str) -> Result<Vec<u8>, MediaError> {
    base64::engine::general_purpose::STANDARD
        .decode(payload)
        .map_err(|e| MediaError::BadPayload(e.to_string()))
}

/// Twilio's counters travel as decimal strings.
mod string_u64 {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(value)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse()
            .map_err(|_| D::Error::custom(format!("expected a decimal string, got {text:?}")))
    }
}

#[cfg(test)]
#[path = "media_tests.rs"]
mod tests;
