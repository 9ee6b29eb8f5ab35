//! `replay show --json`: one event per line as a JSON object. Consumes [`Stored`] events;
//! produces text. State: none.
//!
//! The fields, stable (a new one may be added; none is renamed or removed):
//!
//! | field | type | what |
//! |---|---|---|
//! | `stream` | string | `CALLS` or `AUDIO` (also when read from an import's prefixed copy) |
//! | `seq` | integer | the message's sequence in the stream that holds it |
//! | `id` | string | the event id (UUID; the `Nats-Msg-Id` of control events) |
//! | `tenant` | string | the tenant id |
//! | `call_sid` | string | the call sid |
//! | `turn` | integer | 0 is the greeting; each final utterance starts a new turn |
//! | `at` | integer | producer time, µs since the Unix epoch |
//! | `kind` | string | `webhook`, `start`, `audio`, `dtmf`, `speech`, `partial`, `transcript`, `token`, `sentence`, `tts_chunk`, `bargein`, `played`, `end`, `dial`, `answered_by`, `dial_result`, `tool_call`, `tool_result`, `erased` |
//! | `body` | object | the body's own fields, named as in `sb_schemas` (e.g. `text`, `confidence`, `index`, `reason`) |
//!
//! The body is an object of its own because some body fields share a name with the
//! envelope's (`Audio::seq`, `ToolCall::id`). Audio bodies (`audio`, `tts_chunk`) carry
//! `payload_bytes` (the µ-law length) instead of the payload, and `payload_base64` too
//! with `--full`.

use serde::Serialize;
use serde_json::{Map, Value};

use sb_schemas::{Body, CallSid, TenantId};

use crate::Stored;

/// Whether audio payloads are printed (`--full`) or only counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payloads {
    Length,
    Base64,
}

#[derive(Serialize)]
struct Line<'a> {
    stream: &'a str,
    seq: u64,
    id: String,
    tenant: &'a TenantId,
    call_sid: &'a CallSid,
    turn: u32,
    at: u64,
    kind: &'static str,
    body: Value,
}

/// One event as one line of JSON (no trailing newline).
pub fn line(stored: &Stored, payloads: Payloads) -> String {
    let e = &stored.event;
    let line = Line {
        stream: stored.stream,
        seq: stored.seq,
        id: e.id.to_string(),
        tenant: &e.tenant,
        call_sid: &e.call_sid,
        turn: e.turn,
        at: e.at,
        kind: e.kind().as_str(),
        body: body(&e.body, payloads),
    };
    serde_json::to_string(&line).expect("a JSON value with string keys always serializes")
}

/// The body's fields, without the kind tag; audio payloads replaced by their length.
fn body(body: &Body, payloads: Payloads) -> Value {
    // Serialized externally tagged: `{"transcript": {...}}`; keep the inside.
    let tagged = serde_json::to_value(body).unwrap_or(Value::Null);
    let mut fields = match tagged {
        Value::Object(map) => match map.into_iter().next() {
            Some((_, Value::Object(fields))) => fields,
            _ => Map::new(),
        },
        _ => Map::new(),
    };
    let audio_len = match body {
        Body::Audio(a) => Some(a.payload.0.len()),
        Body::TtsChunk(c) => Some(c.payload.0.len()),
        _ => None,
    };
    if let Some(len) = audio_len {
        // `Mulaw` serializes as base64 in human-readable formats.
        let base64 = fields.remove("payload");
        fields.insert("payload_bytes".into(), len.into());
        if let (Payloads::Base64, Some(b64)) = (payloads, base64) {
            fields.insert("payload_base64".into(), b64);
        }
    }
    Value::Object(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use sb_schemas::{Audio, Envelope, Mulaw, ToolCall, Transcript};

    fn stored(stream: &'static str, body: Body) -> Stored {
        let mut event = Envelope::new(
            TenantId::parse("acme").unwrap(),
            CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap(),
            2,
            body,
        );
        event.at = 1_700_000_000_000_001;
        Stored {
            stream,
            seq: 42,
            event,
        }
    }

    fn parse(text: &str) -> Value {
        assert!(!text.contains('\n'), "one line: {text}");
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn envelope_fields_are_flat_and_the_body_is_nested() {
        let s = stored(
            "CALLS",
            Body::Transcript(Transcript {
                epoch: 1,
                text: "hi".into(),
                confidence: 0.5,
                audio_seq: 9,
                speech_ended_at: 7,
            }),
        );
        let v = parse(&line(&s, Payloads::Length));
        assert_eq!(v["stream"], "CALLS");
        assert_eq!(v["seq"], 42);
        assert_eq!(v["id"], s.event.id.to_string());
        assert_eq!(v["tenant"], "acme");
        assert_eq!(v["call_sid"], "CA0123456789abcdef0123456789abcdef");
        assert_eq!(v["turn"], 2);
        assert_eq!(v["at"], 1_700_000_000_000_001u64);
        assert_eq!(v["kind"], "transcript");
        assert_eq!(v["body"]["text"], "hi");
        assert_eq!(v["body"]["audio_seq"], 9);
    }

    #[test]
    fn a_body_field_named_like_an_envelope_field_does_not_clobber_it() {
        let s = stored(
            "CALLS",
            Body::ToolCall(ToolCall {
                id: "call_1".into(),
                name: "book".into(),
                arguments: "{}".into(),
                round: 0,
            }),
        );
        let v = parse(&line(&s, Payloads::Length));
        assert_eq!(v["id"], s.event.id.to_string());
        assert_eq!(v["body"]["id"], "call_1");
    }

    #[test]
    fn audio_is_a_length_unless_full() {
        let s = stored(
            "AUDIO",
            Body::Audio(Audio {
                seq: 3,
                timestamp_ms: 60,
                payload: Mulaw(Bytes::from_static(&[0xff, 0x7f, 0x00])),
            }),
        );
        let short = parse(&line(&s, Payloads::Length));
        assert_eq!(short["body"]["payload_bytes"], 3);
        assert_eq!(short["body"]["seq"], 3);
        assert!(short["body"].get("payload").is_none());
        assert!(short["body"].get("payload_base64").is_none());
        let full = parse(&line(&s, Payloads::Base64));
        assert_eq!(full["body"]["payload_base64"], "/38A");
        assert_eq!(full["body"]["payload_bytes"], 3);
    }
}
