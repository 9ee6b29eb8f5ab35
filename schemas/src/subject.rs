//! Every NATS subject Switchboard uses, built and parsed in one place.
//!
//! - control events: `call.{tenant}.{call_sid}.{kind}` (stream `CALLS`)
//! - audio: `audio.{tenant}.{call_sid}.in` / `.out` (stream `AUDIO`)
//! - STT leases: `assign.stt.{tenant}.{call_sid}` (stream `STT_ASSIGN`)
//! - dead letters: `dlq.{stream}.{consumer}` (stream `DLQ`)
//! - live tenant configuration: key `config` of the KV bucket `TENANTS` (stream
//!   `KV_TENANTS`, subjects `$KV.TENANTS.>`)
//! - the call index: key `{tenant}.{call_sid}` of the KV bucket `CALL_INDEX` (stream
//!   `KV_CALL_INDEX`)
//!
//! Identifiers are validated types, so no wildcard or dot can reach a subject.

use crate::{CallSid, Envelope, IdError, Kind, TenantId};

pub const CALLS_STREAM: &str = "CALLS";
pub const AUDIO_STREAM: &str = "AUDIO";
pub const STT_ASSIGN_STREAM: &str = "STT_ASSIGN";
pub const DLQ_STREAM: &str = "DLQ";
/// The key-value bucket of the live tenants file, its one key, and the stream behind it.
pub const TENANTS_BUCKET: &str = "TENANTS";
pub const TENANTS_KEY: &str = "config";
pub const TENANTS_KV_STREAM: &str = "KV_TENANTS";
/// The call index: one summary per ended call (key `{tenant}.{call_sid}`).
pub const CALL_INDEX_BUCKET: &str = "CALL_INDEX";
pub const CALL_INDEX_STREAM: &str = "KV_CALL_INDEX";

/// The subject of a control event.
pub fn event(tenant: &TenantId, sid: &CallSid, kind: Kind) -> String {
    match kind {
        Kind::Audio => audio_in(tenant, sid),
        Kind::TtsChunk => audio_out(tenant, sid),
        _ => format!("call.{tenant}.{sid}.{}", kind.as_str()),
    }
}

/// The subject an envelope is published on, from its kind.
pub fn for_envelope(event: &Envelope) -> String {
    self::event(&event.tenant, &event.call_sid, event.kind())
}

pub fn audio_in(tenant: &TenantId, sid: &CallSid) -> String {
    format!("audio.{tenant}.{sid}.in")
}

pub fn audio_out(tenant: &TenantId, sid: &CallSid) -> String {
    format!("audio.{tenant}.{sid}.out")
}

pub fn stt_assign(tenant: &TenantId, sid: &CallSid) -> String {
    format!("assign.stt.{tenant}.{sid}")
}

/// Dead letters of `consumer` on `stream`. Both are names from `nats/`, not input.
pub fn dlq(stream: &str, consumer: &str) -> String {
    format!("dlq.{stream}.{consumer}")
}

/// The server's advisory that a message of `consumer` on `stream` reached its
/// `max_deliver`, which the `DLQ` stream captures beside the dead letters. `*` for any.
pub fn max_deliveries_advisory(stream: &str, consumer: &str) -> String {
    format!("$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.{stream}.{consumer}")
}

/// Every control event of one call (any tenant): for replay.
pub fn call_events_filter(sid: &CallSid) -> String {
    format!("call.*.{sid}.>")
}

/// Every control event of one call of `tenant`: an exact purge filter (`replay delete`).
pub fn tenant_call_events_filter(tenant: &TenantId, sid: &CallSid) -> String {
    format!("call.{tenant}.{sid}.>")
}

/// Every audio message of one call of `tenant` (both directions): an exact purge filter.
pub fn tenant_call_audio_filter(tenant: &TenantId, sid: &CallSid) -> String {
    format!("audio.{tenant}.{sid}.>")
}

/// Every audio subject of one call (both directions): for replay.
pub fn call_audio_filter(sid: &CallSid) -> String {
    format!("audio.*.{sid}.>")
}

/// Every call's caller audio: for counting what was stored.
pub fn all_audio_in_filter() -> &'static str {
    "audio.*.*.in"
}

/// The bot audio of one call: for latency breakdowns that need no caller audio.
pub fn call_audio_out_filter(sid: &CallSid) -> String {
    format!("audio.*.{sid}.out")
}

/// One kind of event across all calls: a durable consumer's filter, a permission.
pub fn kind_filter(kind: Kind) -> String {
    match kind {
        Kind::Audio => "audio.*.*.in".to_owned(),
        Kind::TtsChunk => "audio.*.*.out".to_owned(),
        _ => format!("call.*.*.{}", kind.as_str()),
    }
}

/// Every STT lease (any tenant, any call).
pub fn stt_assign_filter() -> &'static str {
    "assign.stt.*.*"
}

/// What a subject names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Event {
        tenant: TenantId,
        call_sid: CallSid,
        kind: Kind,
    },
    SttAssign {
        tenant: TenantId,
        call_sid: CallSid,
    },
    Dlq {
        stream: String,
        consumer: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SubjectError {
    #[error("unknown subject shape {0:?}")]
    Shape(String),
    #[error("unknown event kind {0:?}")]
    Kind(String),
    #[error(transparent)]
    Id(#[from] IdError),
}

/// Parses any Switchboard subject.
pub fn parse(subject: &str) -> Result<Parsed, SubjectError> {
    let shape = || SubjectError::Shape(subject.chars().take(128).collect());
    let parts: Vec<&str> = subject.split('.').collect();
    match parts.as_slice() {
        ["call", tenant, sid, kind] => {
            let kind = Kind::parse(kind)
                .filter(|k| !k.is_audio())
                .ok_or_else(|| SubjectError::Kind((*kind).to_owned()))?;
            Ok(Parsed::Event {
                tenant: TenantId::parse(tenant)?,
                call_sid: CallSid::parse(sid)?,
                kind,
            })
        }
        ["audio", tenant, sid, dir] => {
            let kind = match *dir {
                "in" => Kind::Audio,
                "out" => Kind::TtsChunk,
                _ => return Err(shape()),
            };
            Ok(Parsed::Event {
                tenant: TenantId::parse(tenant)?,
                call_sid: CallSid::parse(sid)?,
                kind,
            })
        }
        ["assign", "stt", tenant, sid] => Ok(Parsed::SttAssign {
            tenant: TenantId::parse(tenant)?,
            call_sid: CallSid::parse(sid)?,
        }),
        ["dlq", stream, consumer] if !stream.is_empty() && !consumer.is_empty() => {
            Ok(Parsed::Dlq {
                stream: (*stream).to_owned(),
                consumer: (*consumer).to_owned(),
            })
        }
        _ => Err(shape()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids() -> (TenantId, CallSid) {
        (
            TenantId::parse("acme").unwrap(),
            CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap(),
        )
    }

    /// NATS token matching: `*` matches one token.
    fn async_nats_wildcard_matches(filter: &str, subject: &str) -> bool {
        let (f, s): (Vec<_>, Vec<_>) = (filter.split('.').collect(), subject.split('.').collect());
        f.len() == s.len() && f.iter().zip(&s).all(|(f, s)| *f == "*" || f == s)
    }

    #[test]
    fn builds_and_parses_every_kind() {
        let (t, s) = ids();
        for kind in Kind::ALL {
            let subject = event(&t, &s, kind);
            assert_eq!(
                parse(&subject).unwrap(),
                Parsed::Event {
                    tenant: t.clone(),
                    call_sid: s.clone(),
                    kind
                },
                "{subject}"
            );
        }
        assert_eq!(
            event(&t, &s, Kind::Transcript),
            "call.acme.CA0123456789abcdef0123456789abcdef.transcript"
        );
        assert_eq!(
            event(&t, &s, Kind::Audio),
            "audio.acme.CA0123456789abcdef0123456789abcdef.in"
        );
        assert_eq!(
            event(&t, &s, Kind::TtsChunk),
            "audio.acme.CA0123456789abcdef0123456789abcdef.out"
        );
        assert!(async_nats_wildcard_matches(
            all_audio_in_filter(),
            &event(&t, &s, Kind::Audio)
        ));
        assert_eq!(
            call_audio_out_filter(&s),
            "audio.*.CA0123456789abcdef0123456789abcdef.out"
        );
        assert_eq!(
            parse(&stt_assign(&t, &s)).unwrap(),
            Parsed::SttAssign {
                tenant: t,
                call_sid: s
            }
        );
        assert_eq!(
            parse(&dlq("CALLS", "agent")).unwrap(),
            Parsed::Dlq {
                stream: "CALLS".into(),
                consumer: "agent".into()
            }
        );
    }

    #[test]
    fn rejects_bad_subjects() {
        for bad in [
            "",
            "call.acme.CA0123456789abcdef0123456789abcdef",
            "call.ACME.CA0123456789abcdef0123456789abcdef.start",
            "call.acme.CA123.start",
            "call.acme.CA0123456789abcdef0123456789abcdef.teleport",
            "call.acme.CA0123456789abcdef0123456789abcdef.audio",
            "audio.acme.CA0123456789abcdef0123456789abcdef.sideways",
            "call.*.CA0123456789abcdef0123456789abcdef.start",
            "other.thing",
            "dlq..x",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} parsed");
        }
    }
}
