//! Where a call's events live, and reading them raw.
//!
//! Two places: the live streams (`CALLS` on `call.>`, `AUDIO` on `audio.>`), or an
//! import's isolated copy under a prefix `P` (`P_CALLS` on `P.call.>`, `P_AUDIO` on
//! `P.audio.>`), which no live stream captures and no stage consumes. [`Streams`] maps the
//! subjects of `sb_schemas::subject` into one of them and back. [`read_raw`] consumes the
//! messages of one subject filter with an ordered consumer and produces [`RawEvent`]s
//! (original subject, `Nats-Msg-Id`, payload bytes, sequence). State: none.

use std::{fmt, str::FromStr, time::Duration};

use async_nats::jetstream::{self, consumer::pull, stream};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use sb_runtime::Topology;
use sb_schemas::subject::{AUDIO_STREAM, CALLS_STREAM};

use crate::ReplayError;

/// First subject tokens of the live streams: a prefix equal to one would land in them.
const RESERVED: [&str; 4] = ["call", "audio", "assign", "dlq"];

/// A namespace for imported calls: 1-32 of `[A-Za-z0-9_-]`, none of the live streams'
/// first subject tokens. It becomes a subject token and part of a stream name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Prefix(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PrefixError {
    #[error("a prefix is 1 to 32 characters of A-Z, a-z, 0-9, '_' and '-', got {0:?}")]
    Shape(String),
    #[error("prefix {0:?} is the first token of live subjects: imported events would go live")]
    Reserved(String),
}

impl Prefix {
    pub fn parse(raw: &str) -> Result<Self, PrefixError> {
        let ok = (1..=32).contains(&raw.len())
            && raw
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if !ok {
            return Err(PrefixError::Shape(raw.chars().take(64).collect()));
        }
        if RESERVED.iter().any(|r| r.eq_ignore_ascii_case(raw)) {
            return Err(PrefixError::Reserved(raw.to_owned()));
        }
        Ok(Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl FromStr for Prefix {
    type Err = PrefixError;
    fn from_str(raw: &str) -> Result<Self, Self::Err> {
        Self::parse(raw)
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The live streams, or an imported copy under a [`Prefix`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Streams {
    prefix: Option<Prefix>,
}

impl Streams {
    pub fn live() -> Self {
        Self::default()
    }

    pub fn prefixed(prefix: Prefix) -> Self {
        Self {
            prefix: Some(prefix),
        }
    }

    pub fn new(prefix: Option<Prefix>) -> Self {
        Self { prefix }
    }

    pub fn prefix(&self) -> Option<&Prefix> {
        self.prefix.as_ref()
    }

    /// The stream that holds `logical` (`CALLS` or `AUDIO`) here: `P_CALLS` under `P`.
    pub fn stream_name(&self, logical: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{p}_{logical}"),
            None => logical.to_owned(),
        }
    }

    /// A subject (or filter) of `sb_schemas::subject` as it is published here: `P.{subject}`.
    pub fn subject(&self, subject: &str) -> String {
        match &self.prefix {
            Some(p) => format!("{p}.{subject}"),
            None => subject.to_owned(),
        }
    }

    /// The original subject of a subject stored here (`None`: not one of ours).
    pub fn original<'a>(&self, stored: &'a str) -> Option<&'a str> {
        match &self.prefix {
            Some(p) => stored.strip_prefix(p.as_str())?.strip_prefix('.'),
            None => Some(stored),
        }
    }

    /// The configs of this prefix's `P_CALLS` and `P_AUDIO`: the production streams'
    /// (`nats/streams/`) with their names and subjects moved under the prefix, the `CALLS`
    /// duplicate window and age for both (imports carry a `Nats-Msg-Id` on audio too), and
    /// small byte caps that refuse new messages when full rather than drop old ones: a cap
    /// is reserved from the server's store, and a copy must not crowd out the live streams.
    /// Empty for the live streams: the operator creates those.
    pub fn isolated_configs(&self, topology: &Topology) -> Vec<stream::Config> {
        let Some(prefix) = &self.prefix else {
            return Vec::new();
        };
        let Some(calls) = topology.streams.iter().find(|s| s.name == CALLS_STREAM) else {
            return Vec::new();
        };
        [
            (CALLS_STREAM, "call.>", ISOLATED_CALLS_BYTES),
            (AUDIO_STREAM, "audio.>", ISOLATED_AUDIO_BYTES),
        ]
        .into_iter()
        .filter_map(|(logical, subjects, max_bytes)| {
            let base = topology.streams.iter().find(|s| s.name == logical)?;
            let subjects = self.subject(subjects);
            Some(stream::Config {
                name: self.stream_name(logical),
                description: Some(format!(
                    "{logical} events imported by `replay import --prefix {prefix}`, on {subjects}"
                )),
                subjects: vec![subjects],
                duplicate_window: calls.duplicate_window,
                max_age: calls.max_age,
                max_bytes,
                discard: stream::DiscardPolicy::New,
                ..base.clone()
            })
        })
        .collect()
    }
}

/// Byte caps of an import's streams: room for about fifteen 10-minute calls (~1 MB of
/// control events and ~15 MB of audio each).
pub const ISOLATED_CALLS_BYTES: i64 = 32 * 1024 * 1024;
pub const ISOLATED_AUDIO_BYTES: i64 = 256 * 1024 * 1024;

/// One stored message, as it was published.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    /// `CALLS` or `AUDIO` (also for a prefixed copy).
    pub stream: &'static str,
    /// Where it sits in the stream that holds it.
    pub seq: u64,
    /// The subject it was published on, without any prefix.
    pub subject: String,
    /// Its `Nats-Msg-Id` header (audio is published without one).
    pub msg_id: Option<String>,
    /// The MessagePack event, untouched.
    pub payload: Bytes,
}

/// How long one message may take to arrive once the count says it is stored.
pub(crate) const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Every message of `logical` in `streams` on `filter` (a `sb_schemas::subject` filter,
/// unprefixed), in stream order. A missing prefixed stream reads as empty.
pub async fn read_raw(
    js: &jetstream::Context,
    streams: &Streams,
    logical: &'static str,
    filter: &str,
) -> Result<Vec<RawEvent>, ReplayError> {
    let name = streams.stream_name(logical);
    let fail = |e: &dyn fmt::Display| ReplayError::Read {
        stream: name.clone(),
        reason: e.to_string(),
    };
    let handle = match js.get_stream(&name).await {
        Ok(handle) => handle,
        Err(e) if streams.prefix.is_some() && is_missing(&e) => return Ok(Vec::new()),
        Err(e) => return Err(fail(&e)),
    };
    let filter = streams.subject(filter);
    // Count first: an ordered consumer on an empty filter would wait forever.
    let counts: Vec<(String, usize)> = handle
        .info_with_subjects(&filter)
        .await
        .map_err(|e| fail(&e))?
        .try_collect()
        .await
        .map_err(|e| fail(&e))?;
    let expected: usize = counts.iter().map(|(_, n)| n).sum();
    let mut out = Vec::with_capacity(expected);
    if expected == 0 {
        return Ok(out);
    }
    let consumer = handle
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter,
            ..Default::default()
        })
        .await
        .map_err(|e| fail(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| fail(&e))?;
    while out.len() < expected {
        let next = tokio::time::timeout(READ_TIMEOUT, messages.next())
            .await
            .map_err(|_| fail(&"timed out reading the stream"))?;
        match next {
            Some(Ok(message)) => out.push(raw(streams, logical, &message)),
            Some(Err(e)) => return Err(fail(&e)),
            None => break,
        }
    }
    Ok(out)
}

/// A delivered message as a [`RawEvent`].
pub(crate) fn raw(
    streams: &Streams,
    logical: &'static str,
    message: &jetstream::Message,
) -> RawEvent {
    let subject = message.subject.as_str();
    RawEvent {
        stream: logical,
        seq: message.info().map(|i| i.stream_sequence).unwrap_or(0),
        subject: streams.original(subject).unwrap_or(subject).to_owned(),
        msg_id: message
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned()),
        payload: message.payload.clone(),
    }
}

/// Whether `get_stream` failed because the stream does not exist.
pub(crate) fn is_missing(e: &jetstream::context::GetStreamError) -> bool {
    use jetstream::context::GetStreamErrorKind;
    matches!(e.kind(), GetStreamErrorKind::JetStream(j)
        if j.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_are_single_safe_tokens_outside_the_live_subjects() {
        for good in ["imp", "case-42", "A_b-9", &"x".repeat(32)] {
            assert!(Prefix::parse(good).is_ok(), "{good}");
        }
        for bad in ["", "a.b", "a*", ">", "a b", "$KV", &"x".repeat(33), "é"] {
            assert!(
                matches!(Prefix::parse(bad), Err(PrefixError::Shape(_))),
                "{bad}"
            );
        }
        for live in ["call", "audio", "CALL", "dlq", "assign"] {
            assert!(
                matches!(Prefix::parse(live), Err(PrefixError::Reserved(_))),
                "{live}"
            );
        }
    }

    #[test]
    fn a_prefix_moves_streams_and_subjects_and_back() {
        let live = Streams::live();
        assert_eq!(live.stream_name(CALLS_STREAM), "CALLS");
        assert_eq!(live.subject("call.*.CA1.>"), "call.*.CA1.>");
        let imp = Streams::prefixed(Prefix::parse("imp").unwrap());
        assert_eq!(imp.stream_name(AUDIO_STREAM), "imp_AUDIO");
        assert_eq!(imp.subject("audio.acme.CA1.in"), "imp.audio.acme.CA1.in");
        assert_eq!(
            imp.original("imp.audio.acme.CA1.in"),
            Some("audio.acme.CA1.in")
        );
        assert_eq!(imp.original("impx.audio.acme.CA1.in"), None);
        assert_eq!(imp.original("audio.acme.CA1.in"), None);
    }

    #[test]
    fn isolated_streams_copy_production_limits_under_the_prefix() {
        let topology = Topology::embedded().unwrap();
        assert!(Streams::live().isolated_configs(&topology).is_empty());
        let configs = Streams::prefixed(Prefix::parse("imp").unwrap()).isolated_configs(&topology);
        let names: Vec<_> = configs
            .iter()
            .map(|c| (c.name.as_str(), c.subjects.clone()))
            .collect();
        assert_eq!(
            names,
            [
                ("imp_CALLS", vec!["imp.call.>".to_owned()]),
                ("imp_AUDIO", vec!["imp.audio.>".to_owned()])
            ]
        );
        let calls = topology.streams.iter().find(|s| s.name == "CALLS").unwrap();
        assert_eq!(configs[0].max_message_size, calls.max_message_size);
        assert_eq!(configs[0].max_bytes, ISOLATED_CALLS_BYTES);
        assert_eq!(configs[1].max_bytes, ISOLATED_AUDIO_BYTES);
        assert!(configs.iter().all(|c| {
            c.duplicate_window == calls.duplicate_window
                && c.max_age == calls.max_age
                && c.discard == stream::DiscardPolicy::New
        }));
    }
}
