//! Tests for `media.rs` with the exact JSON of PROTOCOLS §3.2/§3.3: every message parses,
//! numbers-as-strings round-trip, and bad frames give clear errors instead of panics.
//! Consumes constants only; no state.

use super::*;
use serde_json::{Value, json};

const SID: &str = "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";

fn roundtrip_inbound(text: &str) -> InboundMessage {
    let message = parse_inbound(text).unwrap();
    let back: Value = serde_json::from_str(&message.to_json()).unwrap();
    assert_eq!(
        back,
        serde_json::from_str::<Value>(text).unwrap(),
        "re-serialises to the same JSON"
    );
    message
}

/// `connected` and `start` exactly as documented.
#[test]
fn connected_and_start() {
    let connected =
        roundtrip_inbound(r#"{ "event": "connected", "protocol": "Call", "version": "1.0.0" }"#);
    assert_eq!(
        connected,
        InboundMessage::Connected {
            protocol: "Call".into(),
            version: "1.0.0".into()
        }
    );
    let start = roundtrip_inbound(
        r#"{
  "event": "start",
  "sequenceNumber": "1",
  "start": {
    "accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "callSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "tracks": ["inbound"],
    "mediaFormat": { "encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1 },
    "customParameters": { "tenant": "acme", "callerE164": "+14155551234" }
  },
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
}"#,
    );
    let InboundMessage::Start {
        sequence_number,
        start,
        stream_sid,
    } = start
    else {
        panic!("{start:?}")
    };
    assert_eq!(sequence_number, 1);
    assert_eq!(stream_sid, SID);
    assert_eq!(start.media_format, MediaFormat::default());
    assert_eq!(start.tracks, ["inbound"]);
    assert_eq!(start.custom_parameters["tenant"], "acme");
    assert_eq!(start.custom_parameters["callerE164"], "+14155551234");
}

/// `media`, `dtmf`, `mark` and `stop` as documented; counters are strings on the wire.
#[test]
fn media_dtmf_mark_stop() {
    let media = roundtrip_inbound(
        r#"{ "event": "media", "sequenceNumber": "4",
             "media": { "track": "inbound", "chunk": "2", "timestamp": "5", "payload": "no+JhoaJjpzS" },
             "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX" }"#,
    );
    let InboundMessage::Media {
        sequence_number: 4,
        media,
        ..
    } = media
    else {
        panic!("{media:?}")
    };
    assert_eq!((media.chunk, media.timestamp), (2, 5));
    assert_eq!(decode_payload(&media.payload).unwrap().len(), 9);
    let dtmf = roundtrip_inbound(
        r#"{ "event": "dtmf", "streamSid": "MZ1", "sequenceNumber": "5", "dtmf": { "track": "inbound_track", "digit": "1" } }"#,
    );
    assert!(matches!(dtmf, InboundMessage::Dtmf { ref dtmf, .. } if dtmf.digit == "1"));
    let mark = roundtrip_inbound(
        r#"{ "event": "mark", "sequenceNumber": "4", "streamSid": "MZ1", "mark": { "name": "my label" } }"#,
    );
    assert!(matches!(mark, InboundMessage::Mark { ref mark, .. } if mark.name == "my label"));
    let stop = roundtrip_inbound(
        r#"{ "event": "stop", "sequenceNumber": "5", "stop": { "accountSid": "AC1", "callSid": "CA1" }, "streamSid": "MZ1" }"#,
    );
    assert_eq!(stop.event(), "stop");
    let text = roundtrip_inbound(r#"{"event":"media","sequenceNumber":"7","media":{"track":"inbound","chunk":"3","timestamp":"40","payload":""},"streamSid":"MZ1"}"#).to_json();
    assert!(text.contains(r#""sequenceNumber":"7""#) && text.contains(r#""timestamp":"40""#));
}

/// Twilio may add fields: the ingress side ignores them.
#[test]
fn inbound_tolerates_new_fields() {
    let text = r#"{ "event": "mark", "sequenceNumber": "4", "streamSid": "MZ1", "mark": { "name": "x" }, "new": 1 }"#;
    assert!(parse_inbound(text).is_ok());
}

/// Outbound messages serialise to exactly the documented shape.
#[test]
fn outbound_shapes() {
    let cases = [
        (
            OutboundMessage::media(SID, &[0xff, 0x7f]),
            json!({"event": "media", "streamSid": SID, "media": {"payload": "/38="}}),
        ),
        (
            OutboundMessage::mark(SID, "utt-42"),
            json!({"event": "mark", "streamSid": SID, "mark": {"name": "utt-42"}}),
        ),
        (
            OutboundMessage::clear(SID),
            json!({"event": "clear", "streamSid": SID}),
        ),
    ];
    for (message, expected) in cases {
        let text = message.to_json();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), expected);
        assert_eq!(parse_outbound(&text).unwrap(), message);
        assert_eq!(message.stream_sid(), SID);
    }
}

/// Bad frames: every failure is a typed error with the right kind, never a panic.
#[test]
fn bad_frames() {
    let cases = [
        ("not json", "bad_json"),
        ("[1,2]", "missing_event"),
        (r#"{"streamSid":"MZ1"}"#, "missing_event"),
        (r#"{"event":7}"#, "missing_event"),
        (r#"{"event":"play","streamSid":"MZ1"}"#, "unknown_event"),
        (r#"{"event":"start","streamSid":"MZ1"}"#, "unknown_event"),
        (r#"{"event":"media","streamSid":"MZ1"}"#, "invalid"),
        (
            r#"{"event":"media","streamSid":"MZ1","media":{"payload":"AA==","track":"outbound"}}"#,
            "invalid",
        ),
        (
            r#"{"event":"clear","streamSid":"MZ1","sequenceNumber":"3"}"#,
            "invalid",
        ),
        (r#"{"event":"mark","streamSid":"MZ1","mark":{}}"#, "invalid"),
    ];
    for (text, kind) in cases {
        assert_eq!(parse_outbound(text).unwrap_err().kind(), kind, "{text}");
    }
    let bad_counter =
        r#"{"event":"mark","sequenceNumber":4,"streamSid":"MZ1","mark":{"name":"x"}}"#;
    assert_eq!(parse_inbound(bad_counter).unwrap_err().kind(), "invalid");
    let negative =
        r#"{"event":"mark","sequenceNumber":"-4","streamSid":"MZ1","mark":{"name":"x"}}"#;
    assert_eq!(parse_inbound(negative).unwrap_err().kind(), "invalid");
    assert_eq!(decode_payload("%%%").unwrap_err().kind(), "bad_payload");
}
