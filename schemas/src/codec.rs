//! MessagePack encoding with named fields, and a decoder that never panics.
//!
//! Consumes bytes from the wire, produces [`Envelope`]s (or a [`DecodeError`] that says
//! what was wrong). State: none.

use crate::{DeadLetter, Envelope, SCHEMA_VERSION};

/// The largest event a reader accepts; NATS' default max payload is 1 MiB.
pub const MAX_EVENT_BYTES: usize = 1024 * 1024;

/// Why bytes could not be read as an event.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty payload")]
    Empty,
    #[error("payload of {len} bytes exceeds the {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("malformed event: {0}")]
    Malformed(String),
    #[error("unsupported schema version {found} (this reader knows up to {SCHEMA_VERSION})")]
    UnsupportedVersion { found: u16 },
}

impl DecodeError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            DecodeError::Empty => "empty",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::Malformed(_) => "malformed",
            DecodeError::UnsupportedVersion { .. } => "unsupported_version",
        }
    }
}

/// Encodes an event as a MessagePack map with named fields.
pub fn encode(event: &Envelope) -> Vec<u8> {
    rmp_serde::to_vec_named(event).expect("events have string keys and no fallible fields")
}

/// Decodes an event, rejecting empty, oversized, malformed and future-version input.
/// Unknown fields are ignored; unknown body kinds are an error.
pub fn decode(bytes: &[u8]) -> Result<Envelope, DecodeError> {
    check_size(bytes)?;
    let event: Envelope =
        rmp_serde::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))?;
    if event.v == 0 || event.v > SCHEMA_VERSION {
        return Err(DecodeError::UnsupportedVersion { found: event.v });
    }
    Ok(event)
}

/// Encodes a dead-letter record.
pub fn encode_dead_letter(record: &DeadLetter) -> Vec<u8> {
    rmp_serde::to_vec_named(record).expect("dead letters have string keys and no fallible fields")
}

/// Decodes a dead-letter record.
pub fn decode_dead_letter(bytes: &[u8]) -> Result<DeadLetter, DecodeError> {
    check_size(bytes)?;
    rmp_serde::from_slice(bytes).map_err(|e| DecodeError::Malformed(e.to_string()))
}

fn check_size(bytes: &[u8]) -> Result<(), DecodeError> {
    match bytes.len() {
        0 => Err(DecodeError::Empty),
        len if len > MAX_EVENT_BYTES => Err(DecodeError::TooLarge {
            len,
            max: MAX_EVENT_BYTES,
        }),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Body, CallSid, Dtmf, TenantId};

    fn sample() -> Envelope {
        Envelope::new(
            TenantId::parse("acme").unwrap(),
            CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap(),
            3,
            Body::Dtmf(Dtmf { digit: "5".into() }),
        )
    }

    #[test]
    fn round_trips() {
        let e = sample();
        assert_eq!(decode(&encode(&e)).unwrap(), e);
    }

    #[test]
    fn rejects_empty_and_oversized() {
        assert_eq!(decode(&[]), Err(DecodeError::Empty));
        let big = vec![0u8; MAX_EVENT_BYTES + 1];
        assert!(matches!(decode(&big), Err(DecodeError::TooLarge { .. })));
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = encode(&sample());
        for cut in 1..bytes.len() {
            assert!(decode(&bytes[..cut]).is_err(), "truncated at {cut} decoded");
        }
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        // A cheap deterministic byte soup: every single-byte flip of a valid event, plus
        // declared lengths far beyond the buffer.
        let bytes = encode(&sample());
        for i in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[i] ^= flip;
                let _ = decode(&b);
            }
        }
        for hostile in [
            &[0xdd, 0xff, 0xff, 0xff, 0xff][..],
            &[0xc6, 0xff, 0xff, 0xff, 0xff, 0x00],
        ] {
            assert!(decode(hostile).is_err());
        }
    }

    #[test]
    fn future_versions_are_refused_with_a_clear_error() {
        let mut e = sample();
        e.v = SCHEMA_VERSION + 1;
        let err = decode(&encode(&e)).unwrap_err();
        assert!(
            err.to_string().contains("unsupported schema version"),
            "{err}"
        );
    }

    #[test]
    fn unknown_fields_are_ignored_and_unknown_kinds_rejected() {
        #[derive(serde::Serialize)]
        struct Extended<'a> {
            #[serde(flatten)]
            base: &'a Envelope,
            added_later: u32,
        }
        let e = sample();
        let bytes = rmp_serde::to_vec_named(&Extended {
            base: &e,
            added_later: 7,
        })
        .unwrap();
        assert_eq!(decode(&bytes).unwrap(), e);

        let mut value: serde_json::Value = serde_json::to_value(&e).unwrap();
        value["body"] = serde_json::json!({ "teleport": { "to": "mars" } });
        value["id"] = serde_json::json!(e.id.as_bytes());
        let bytes = rmp_serde::to_vec_named(&value).unwrap();
        let err = decode(&bytes).unwrap_err().to_string();
        assert!(err.contains("teleport"), "{err}");
    }

    #[test]
    fn invalid_identifiers_are_rejected_on_decode() {
        let e = sample();
        let mut value: serde_json::Value = serde_json::to_value(&e).unwrap();
        value["id"] = serde_json::json!(e.id.as_bytes());
        value["tenant"] = serde_json::json!("ACME.*");
        let bytes = rmp_serde::to_vec_named(&value).unwrap();
        let err = decode(&bytes).unwrap_err().to_string();
        assert!(err.contains("invalid tenant id"), "{err}");
    }
}
