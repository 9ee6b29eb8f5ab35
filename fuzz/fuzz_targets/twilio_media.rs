//! Fuzz target: Media Streams frames (`sb_twilio::media`), both directions, and the call
//! credential a `start` frame carries.
//!
//! Consumes arbitrary bytes as one WebSocket text frame; checks that parsing never panics,
//! that what parses serialises back to a frame that parses to the same message, that a
//! payload which decodes re-encodes to the same base64, and that the credential check of a
//! `start` frame's parameters never panics. State: none.
#![no_main]

use std::time::{Duration, UNIX_EPOCH};

use libfuzzer_sys::fuzz_target;
use sb_twilio::credential::{self, CallBinding, CallCredentials};
use sb_twilio::media::{InboundMessage, decode_payload, encode_payload};
use sb_twilio::{parse_inbound, parse_outbound};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(message) = parse_inbound(text) {
        let again = parse_inbound(&message.to_json()).expect("a serialised frame parses");
        assert_eq!(again, message);
        if let InboundMessage::Media { media, .. } = &message {
            check_payload(&media.payload);
        }
        if let InboundMessage::Start { start, .. } = &message
            && let Some(token) = start.custom_parameters.get(credential::PARAMETER)
        {
            let credentials = CallCredentials::new(b"fuzz", Duration::from_secs(60));
            let call = CallBinding {
                call_sid: &start.call_sid,
                tenant: "acme",
                stream_url: "wss://agent.example.com/twilio/media",
            };
            let _ = credentials.verify(token, &call, UNIX_EPOCH);
        }
    }
    if let Ok(message) = parse_outbound(text) {
        let again = parse_outbound(&message.to_json()).expect("a serialised frame parses");
        assert_eq!(again, message);
    }
    check_payload(text);
});

/// A payload that decodes is canonical base64: encoding the bytes gives it back.
fn check_payload(payload: &str) {
    if let Ok(bytes) = decode_payload(payload) {
        assert_eq!(encode_payload(&bytes), payload);
    }
}
