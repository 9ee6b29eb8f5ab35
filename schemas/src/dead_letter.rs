//! The dead-letter record published on `dlq.{stream}.{consumer}`.
//!
//! Produced by the runtime when an input is poison (rejected) or exhausted `max_deliver`;
//! kept in the `DLQ` stream for 14 days so it can be inspected and re-driven.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The subject the input was published on.
    pub subject: String,
    pub stream: String,
    pub consumer: String,
    pub stream_seq: u64,
    /// How many times it had been delivered when it was dead-lettered.
    pub deliveries: u64,
    /// Why, in words (an error's `Display`).
    pub reason: String,
    /// The bounded error kind (a metric label).
    pub reason_kind: String,
    /// Microseconds since the Unix epoch.
    pub at: u64,
    /// The original payload, untouched, so it can be re-driven.
    #[serde(with = "serde_bytes_compat")]
    pub payload: Vec<u8>,
}

/// MessagePack `bin` for the payload without pulling in `serde_bytes`.
mod serde_bytes_compat {
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(v)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        Ok(bytes::Bytes::deserialize(d)?.to_vec())
    }
}
