//! Who may publish and subscribe to what on NATS: one role per service, its permissions
//! built from the same subject functions the code publishes with ([`crate::subject`]).
//!
//! Consumes nothing; produces, per [`Role`], the kinds it emits and the NATS
//! [`Permissions`] its user gets (data subjects, the JetStream API subjects of its own
//! streams and consumers, its private inbox). `sb_runtime::nats_auth` renders them into
//! the nats-server configuration (`nats/auth.conf`), so code and config cannot drift.
//! No I/O, no state.

use crate::{
    Kind,
    subject::{
        self, AUDIO_STREAM, CALL_INDEX_BUCKET, CALL_INDEX_STREAM, CALLS_STREAM, DLQ_STREAM,
        STT_ASSIGN_STREAM, TENANTS_BUCKET, TENANTS_KV_STREAM,
    },
};

/// A NATS user: one per service, plus the operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Ingress,
    Stt,
    Agent,
    Tts,
    /// Places outbound campaign calls; publishes their dial events.
    Dialer,
    /// Delivers the tenants' call webhooks: reads the log, writes nothing.
    Webhooks,
    /// The replay CLI: reads the log, writes nothing.
    Replay,
    /// The operators' console: the tenant admin API (writes the live tenants bucket) and
    /// the call inspector (reads the log).
    Console,
    /// The operator (`switchboard topology apply`, `replay import`, `replay dlq redrive`,
    /// `replay delete`, the tests' inspector): everything.
    Ops,
}

/// Allowed subjects (NATS wildcards) for publishing and subscribing.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Permissions {
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
}

impl Role {
    pub const ALL: [Role; 9] = [
        Role::Ingress,
        Role::Stt,
        Role::Agent,
        Role::Tts,
        Role::Dialer,
        Role::Webhooks,
        Role::Replay,
        Role::Console,
        Role::Ops,
    ];

    /// The NATS user name (also the service name).
    pub const fn user(self) -> &'static str {
        match self {
            Role::Ingress => "ingress",
            Role::Stt => "stt",
            Role::Agent => "agent",
            Role::Tts => "tts",
            Role::Dialer => "dialer",
            Role::Webhooks => "webhooks",
            Role::Replay => "replay",
            Role::Console => "console",
            Role::Ops => "ops",
        }
    }

    pub fn parse(user: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.user() == user)
    }

    /// The environment variable holding this user's password, for nats-server's config
    /// and for the service (`SB_NATS_PASSWORD_INGRESS`, …).
    pub fn password_env(self) -> String {
        format!("SB_NATS_PASSWORD_{}", self.user().to_uppercase())
    }

    /// The prefix of this user's reply inboxes: private, so no one else can read the
    /// replies to its requests (JetStream acks and pulled messages travel as replies).
    pub fn inbox_prefix(self) -> String {
        format!("_INBOX_{}", self.user())
    }

    /// The event kinds this role publishes (what its code constructs and emits).
    pub const fn emits(self) -> &'static [Kind] {
        match self {
            Role::Ingress => &[
                Kind::Webhook,
                Kind::Start,
                Kind::Audio,
                Kind::Dtmf,
                Kind::BargeIn,
                Kind::Played,
                Kind::End,
                Kind::Resumed,
                Kind::Keypad,
                Kind::Silence,
                Kind::MaxDuration,
            ],
            Role::Stt => &[
                Kind::Speech,
                Kind::Partial,
                Kind::Transcript,
                Kind::Preflight,
            ],
            Role::Agent => &[
                Kind::Token,
                Kind::Sentence,
                Kind::ToolCall,
                Kind::ToolResult,
            ],
            Role::Tts => &[Kind::TtsChunk],
            Role::Dialer => &[Kind::Dial, Kind::AnsweredBy, Kind::DialResult],
            // The tombstone of an erased call: `replay delete` logs in as ops, which may
            // purge streams (its permissions do not change: ops may publish anything).
            Role::Ops => &[Kind::Erased],
            Role::Webhooks | Role::Replay | Role::Console => &[],
        }
    }

    /// The durable consumer this role pulls from, as `(stream, consumer)` (`nats/consumers/`).
    pub const fn durable(self) -> Option<(&'static str, &'static str)> {
        match self {
            Role::Stt => Some((STT_ASSIGN_STREAM, "stt")),
            Role::Agent => Some((CALLS_STREAM, "agent")),
            Role::Tts => Some((CALLS_STREAM, "tts")),
            Role::Webhooks => Some((CALLS_STREAM, "webhooks")),
            _ => None,
        }
    }

    /// The streams this role must find at start-up (it checks them; only ops creates them).
    pub const fn streams(self) -> &'static [&'static str] {
        match self {
            Role::Ingress => &[CALLS_STREAM, AUDIO_STREAM, STT_ASSIGN_STREAM],
            Role::Stt => &[STT_ASSIGN_STREAM, AUDIO_STREAM, CALLS_STREAM, DLQ_STREAM],
            Role::Agent | Role::Tts => &[CALLS_STREAM, AUDIO_STREAM, DLQ_STREAM],
            Role::Replay => &[CALLS_STREAM, AUDIO_STREAM, DLQ_STREAM],
            Role::Console => &[CALLS_STREAM, AUDIO_STREAM, DLQ_STREAM, TENANTS_KV_STREAM],
            Role::Dialer => &[CALLS_STREAM],
            Role::Webhooks => &[CALLS_STREAM, AUDIO_STREAM, DLQ_STREAM],
            Role::Ops => &[],
        }
    }

    /// Whether this role follows the live tenants bucket (every service; the replay CLI
    /// reads files only).
    pub const fn reads_tenants(self) -> bool {
        !matches!(self, Role::Replay | Role::Ops)
    }

    /// Everything this role's NATS user may do.
    pub fn permissions(self) -> Permissions {
        if self == Role::Ops {
            return Permissions {
                publish: vec![">".into()],
                subscribe: vec![">".into()],
            };
        }
        let mut publish: Vec<String> = self
            .emits()
            .iter()
            .map(|k| subject::kind_filter(*k))
            .collect();
        let mut subscribe = vec![format!("{}.>", self.inbox_prefix())];
        for stream in self.streams() {
            publish.push(js::stream_info(stream));
        }
        if let Some((stream, consumer)) = self.durable() {
            publish.extend(js::pull(stream, consumer));
            publish.push(subject::dlq(stream, consumer));
        }
        match self {
            Role::Ingress => {
                publish.push(subject::stt_assign_filter().into());
                // A lost session rebuilt from the call's events (direct gets: no consumer
                // on CALLS, where the stages' durables live); bot audio read again after
                // a gap or a migration (AUDIO has no durable consumer).
                publish.push(js::direct_next(CALLS_STREAM));
                publish.extend(js::read_ordered(AUDIO_STREAM));
                // Where a call whose socket died stood: its last caller audio, `played`
                // and `bargein` (direct gets, last by subject).
                publish.push(js::direct_get(CALLS_STREAM));
                publish.push(js::direct_get(AUDIO_STREAM));
                // Its calls' bot audio and the caller's voice activity, live; a preflight
                // turn's audio is held until its transcript confirms it.
                subscribe.extend(
                    [
                        Kind::TtsChunk,
                        Kind::Speech,
                        Kind::Partial,
                        Kind::Preflight,
                        Kind::Transcript,
                    ]
                    .map(subject::kind_filter),
                );
            }
            Role::Stt => {
                // The caller's audio live, and from the log after a hand-off.
                subscribe.extend([
                    subject::kind_filter(Kind::Audio),
                    subject::kind_filter(Kind::End),
                ]);
                publish.extend(js::read_ordered(AUDIO_STREAM));
                // A lost session rebuilt from the call's events.
                publish.push(js::direct_next(CALLS_STREAM));
                // Whether a call's `end` is already stored (direct get, last by subject).
                publish.push(js::direct_get(CALLS_STREAM));
            }
            // A lost session rebuilt from the call's events.
            Role::Agent => publish.push(js::direct_next(CALLS_STREAM)),
            // A call's events and bot audio read back for its report (`call.ended`), and
            // its summary written to the call index.
            Role::Webhooks => {
                publish.extend(js::read_ordered(CALLS_STREAM));
                publish.extend(js::read_ordered(AUDIO_STREAM));
                publish.push(js::stream_info(CALL_INDEX_STREAM));
                publish.push(format!("$KV.{CALL_INDEX_BUCKET}.>"));
            }
            Role::Replay | Role::Console => {
                for stream in [CALLS_STREAM, AUDIO_STREAM, DLQ_STREAM] {
                    publish.extend(js::read_ordered(stream));
                    publish.push(js::direct_get(stream));
                }
                // The call index, read backwards by sequence.
                publish.push(js::stream_info(CALL_INDEX_STREAM));
                publish.push(js::direct_next(CALL_INDEX_STREAM));
            }
            _ => {}
        }
        if self.reads_tenants() {
            for allowed in js::read_kv(TENANTS_KV_STREAM) {
                if !publish.contains(&allowed) {
                    publish.push(allowed);
                }
            }
        }
        if self == Role::Console {
            // Puts a new revision of the tenants file (the admin API validated it first).
            publish.push(format!("$KV.{TENANTS_BUCKET}.>"));
        }
        Permissions { publish, subscribe }
    }
}

/// JetStream API subjects (`$JS.API.…`), as the client library requests them.
mod js {
    pub(super) fn stream_info(stream: &str) -> String {
        format!("$JS.API.STREAM.INFO.{stream}")
    }

    /// Pull and acknowledge one durable consumer's messages.
    pub(super) fn pull(stream: &str, consumer: &str) -> [String; 3] {
        [
            format!("$JS.API.CONSUMER.INFO.{stream}.{consumer}"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.{consumer}"),
            format!("$JS.ACK.{stream}.{consumer}.>"),
        ]
    }

    /// Create, read and delete ordered (ephemeral, unacknowledged) consumers of `stream`.
    pub(super) fn read_ordered(stream: &str) -> [String; 5] {
        [
            format!("$JS.API.CONSUMER.CREATE.{stream}"),
            format!("$JS.API.CONSUMER.CREATE.{stream}.>"),
            format!("$JS.API.CONSUMER.INFO.{stream}.*"),
            format!("$JS.API.CONSUMER.MSG.NEXT.{stream}.*"),
            format!("$JS.API.CONSUMER.DELETE.{stream}.*"),
        ]
    }

    /// Direct gets by sequence or "next by subject" (the request names the subject in its
    /// body, not in the API subject): reading a call's events without a consumer.
    pub(super) fn direct_next(stream: &str) -> String {
        format!("$JS.API.DIRECT.GET.{stream}")
    }

    pub(super) fn direct_get(stream: &str) -> String {
        format!("$JS.API.DIRECT.GET.{stream}.>")
    }

    /// Read and watch a key-value bucket: its stream's info, direct gets (the latest
    /// entry, an older revision), and an ordered push consumer with flow control.
    pub(super) fn read_kv(stream: &str) -> Vec<String> {
        let mut subjects = vec![stream_info(stream), direct_next(stream), direct_get(stream)];
        subjects.extend(read_ordered(stream));
        subjects.push(format!("$JS.FC.{stream}.>"));
        subjects
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every kind has exactly one producer, so a forged event needs that service's password.
    #[test]
    fn every_kind_has_one_producer() {
        for kind in Kind::ALL {
            let producers: Vec<Role> = Role::ALL
                .into_iter()
                .filter(|r| r.emits().contains(&kind))
                .collect();
            assert_eq!(producers.len(), 1, "{kind:?}: {producers:?}");
        }
    }

    #[test]
    fn stages_cannot_forge_the_ingress_events() {
        for role in [
            Role::Stt,
            Role::Agent,
            Role::Tts,
            Role::Dialer,
            Role::Replay,
        ] {
            let p = role.permissions();
            for forbidden in ["call.*.*.end", "call.*.*.bargein", "call.*.*.start", ">"] {
                assert!(
                    !p.publish.iter().any(|s| s == forbidden),
                    "{role:?} {forbidden}"
                );
            }
            assert!(
                !p.subscribe.iter().any(|s| s == ">" || s == "_INBOX.>"),
                "{role:?}"
            );
        }
    }

    #[test]
    fn inboxes_are_private_and_users_parse() {
        for role in Role::ALL {
            assert_eq!(Role::parse(role.user()), Some(role));
            if role != Role::Ops {
                let p = role.permissions();
                assert_eq!(p.subscribe[0], format!("_INBOX_{}.>", role.user()));
            }
        }
        assert_eq!(Role::Agent.password_env(), "SB_NATS_PASSWORD_AGENT");
    }
}
