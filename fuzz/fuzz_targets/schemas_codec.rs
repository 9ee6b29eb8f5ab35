//! Fuzz target: the event codec (`sb_schemas::decode`, `decode_dead_letter`) and the
//! subject parser (`sb_schemas::subject::parse`).
//!
//! Consumes arbitrary bytes as a NATS payload and, when UTF-8, as a subject; checks that
//! decoding never panics, that what decodes re-encodes to bytes that decode to the same
//! value (byte-for-byte the same encoding, which holds for NaN confidences too), and that a
//! parsed subject is rebuilt exactly by the builders. State: none.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sb_schemas::subject::{self, Parsed};
use sb_schemas::{decode, decode_dead_letter, encode, encode_dead_letter};

fuzz_target!(|data: &[u8]| {
    if let Ok(event) = decode(data) {
        let bytes = encode(&event);
        let again = decode(&bytes).expect("an encoded event decodes");
        assert_eq!(encode(&again), bytes);
        let parsed = subject::parse(&subject::for_envelope(&event));
        let expected = Parsed::Event {
            tenant: event.tenant.clone(),
            call_sid: event.call_sid.clone(),
            kind: event.kind(),
        };
        assert_eq!(parsed, Ok(expected), "an event's own subject parses back");
    }
    if let Ok(record) = decode_dead_letter(data) {
        let bytes = encode_dead_letter(&record);
        let again = decode_dead_letter(&bytes).expect("an encoded dead letter decodes");
        assert_eq!(again, record);
    }
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match subject::parse(text) {
        Ok(Parsed::Event {
            tenant,
            call_sid,
            kind,
        }) => assert_eq!(subject::event(&tenant, &call_sid, kind), text),
        Ok(Parsed::SttAssign { tenant, call_sid }) => {
            assert_eq!(subject::stt_assign(&tenant, &call_sid), text);
        }
        Ok(Parsed::Dlq { stream, consumer }) => {
            assert_eq!(subject::dlq(&stream, &consumer), text);
        }
        Err(_) => {}
    }
});
