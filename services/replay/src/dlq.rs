//! The dead-letter queue: what the stages gave up on, read back and deleted.
//!
//! Consumes the `DLQ` stream with ordered consumers: dead letters (`dlq.{stream}.{consumer}`,
//! one [`DeadLetter`] each, carrying the original subject and payload) and the server's
//! max-deliveries advisories (JSON naming a stream sequence, no payload). Produces
//! [`Letter`]s; [`delete`] and [`purge`] delete them ([`crate::redrive`] publishes them
//! again). State: none; the stream is the record.

use std::time::SystemTime;

use async_nats::jetstream::{self, consumer::DeliverPolicy, consumer::pull};
use futures::StreamExt;
use sb_schemas::{
    DeadLetter, decode_dead_letter,
    subject::{self, DLQ_STREAM, Parsed},
};
use serde::{Deserialize, Serialize};

use crate::streams::READ_TIMEOUT;

#[derive(Debug, thiserror::Error)]
pub enum DlqError {
    #[error("cannot read stream {stream}: {reason}")]
    Read { stream: String, reason: String },
    #[error("DLQ message {0} is gone: redriven or purged already, or never there")]
    Gone(u64),
    #[error(
        "DLQ message {seq} is a max-deliveries advisory: it carries no payload, so there is \
         nothing to redrive (the message it names is {stream} seq {stream_seq}: `replay dlq \
         show {seq}`)"
    )]
    Advisory {
        seq: u64,
        stream: String,
        stream_seq: u64,
    },
    #[error("dead letter {seq} cannot be redriven: {reason}")]
    Unredrivable { seq: u64, reason: String },
    #[error("cannot publish to {subject}: {reason}")]
    Publish { subject: String, reason: String },
    #[error("cannot delete from DLQ: {reason}")]
    Delete { reason: String },
}

/// One message of the `DLQ` stream.
#[derive(Debug, Clone)]
pub struct Letter {
    /// Its sequence in `DLQ`: what `show`, `redrive` and `purge` take.
    pub seq: u64,
    /// When `DLQ` stored it, µs since the epoch.
    pub stored_at: u64,
    /// Its subject in `DLQ`.
    pub dlq_subject: String,
    pub content: Content,
}

/// What a `DLQ` message holds.
#[derive(Debug, Clone)]
pub enum Content {
    /// A stage gave up on an input: its subject, payload, reason and delivery count.
    Dead(DeadLetter),
    /// The server saw a message reach `max_deliver` unacknowledged: which one, no payload.
    Advisory(Advisory),
    /// Neither of the two (why it does not read).
    Unreadable(String),
}

/// The fields of nats-server's `io.nats.jetstream.advisory.v1.max_deliver` we show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Advisory {
    pub stream: String,
    pub consumer: String,
    pub stream_seq: u64,
    pub deliveries: u64,
}

impl Letter {
    fn read(message: &jetstream::Message) -> Self {
        let (seq, stored_at) = match message.info() {
            Ok(info) => (
                info.stream_sequence,
                micros(SystemTime::from(info.published)),
            ),
            Err(_) => (0, 0),
        };
        let dlq_subject = message.subject.to_string();
        let content = match subject::parse(&dlq_subject) {
            Ok(Parsed::Dlq { .. }) => match decode_dead_letter(&message.payload) {
                Ok(dead) => Content::Dead(dead),
                Err(e) => Content::Unreadable(format!("not a dead letter: {e}")),
            },
            _ => match serde_json::from_slice::<Advisory>(&message.payload) {
                Ok(advisory) => Content::Advisory(advisory),
                Err(e) => Content::Unreadable(format!("not an advisory: {e}")),
            },
        };
        Self {
            seq,
            stored_at,
            dlq_subject,
            content,
        }
    }

    /// The stream and consumer it came from (from the DLQ subject when it does not read).
    pub fn source(&self) -> (String, String) {
        match &self.content {
            Content::Dead(d) => (d.stream.clone(), d.consumer.clone()),
            Content::Advisory(a) => (a.stream.clone(), a.consumer.clone()),
            Content::Unreadable(_) => match subject::parse(&self.dlq_subject) {
                Ok(Parsed::Dlq { stream, consumer }) => (stream, consumer),
                _ => ("?".into(), "?".into()),
            },
        }
    }

    /// Whether it names call `sid`: a dead letter whose original subject is the call's.
    pub fn is_of_call(&self, sid: &sb_schemas::CallSid) -> bool {
        let Content::Dead(dead) = &self.content else {
            return false;
        };
        match subject::parse(&dead.subject) {
            Ok(Parsed::Event { call_sid, .. } | Parsed::SttAssign { call_sid, .. }) => {
                &call_sid == sid
            }
            _ => false,
        }
    }
}

/// Which letters: those of one original stream and/or consumer, or all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub stream: Option<String>,
    pub consumer: Option<String>,
}

impl Filter {
    /// The `DLQ` subjects it covers (none: every message).
    fn subjects(&self) -> Vec<String> {
        if self.stream.is_none() && self.consumer.is_none() {
            return Vec::new();
        }
        let stream = self.stream.as_deref().unwrap_or("*");
        let consumer = self.consumer.as_deref().unwrap_or("*");
        vec![
            subject::dlq(stream, consumer),
            subject::max_deliveries_advisory(stream, consumer),
        ]
    }
}

/// A stream or consumer name for a [`Filter`]: one subject token, no wildcard.
pub fn name(raw: &str) -> Result<String, String> {
    let ok = !raw.is_empty()
        && raw.len() <= 64
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    match ok {
        true => Ok(raw.to_owned()),
        false => Err(format!(
            "{raw:?} is not a stream or consumer name (1-64 of A-Z a-z 0-9 _ -)"
        )),
    }
}

/// Every letter of `filter`, oldest first.
pub async fn list(js: &jetstream::Context, filter: &Filter) -> Result<Vec<Letter>, DlqError> {
    let messages = read(js, DLQ_STREAM, filter.subjects(), DeliverPolicy::All, None).await?;
    Ok(messages.iter().map(Letter::read).collect())
}

/// `DLQ` message `seq`.
pub async fn get(js: &jetstream::Context, seq: u64) -> Result<Letter, DlqError> {
    match message_at(js, DLQ_STREAM, seq).await? {
        Some(message) => Ok(Letter::read(&message)),
        None => Err(DlqError::Gone(seq)),
    }
}

/// Message `seq` of `stream`, if it is still stored: read with an ordered consumer (the
/// `replay` user may not use the stream-message API, and `DLQ` has no direct gets).
pub async fn message_at(
    js: &jetstream::Context,
    stream: &str,
    seq: u64,
) -> Result<Option<jetstream::Message>, DlqError> {
    if seq == 0 {
        return Ok(None);
    }
    let from = DeliverPolicy::ByStartSequence {
        start_sequence: seq,
    };
    let first = read(js, stream, Vec::new(), from, Some(1)).await?;
    Ok(first
        .into_iter()
        .find(|m| m.info().is_ok_and(|i| i.stream_sequence == seq)))
}

/// Deletes `DLQ` message `seq`.
pub async fn delete(js: &jetstream::Context, seq: u64) -> Result<(), DlqError> {
    let stream = js
        .get_stream(DLQ_STREAM)
        .await
        .map_err(|e| read_error(&e))?;
    match stream.delete_message(seq).await {
        Ok(_) => Ok(()),
        Err(e) if is_no_message(&e) => Err(DlqError::Gone(seq)),
        Err(e) => Err(DlqError::Delete {
            reason: e.to_string(),
        }),
    }
}

/// Deletes every letter of `filter`, or only those stored before `before`; returns how
/// many. Whole subjects are purged by the server, not message by message.
pub async fn purge(
    js: &jetstream::Context,
    filter: &Filter,
    before: Option<SystemTime>,
) -> Result<u64, DlqError> {
    let stream = js
        .get_stream(DLQ_STREAM)
        .await
        .map_err(|e| read_error(&e))?;
    let subjects = match filter.subjects() {
        all if all.is_empty() => vec![None],
        some => some.into_iter().map(Some).collect(),
    };
    let mut purged = 0;
    for subject in subjects {
        // Stored times grow with the sequence: "older than" is "below the first one since".
        let below = match before {
            None => None,
            Some(before) => {
                let since = DeliverPolicy::ByStartTime {
                    start_time: before.into(),
                };
                let filters = subject.iter().cloned().collect();
                let first = read(js, DLQ_STREAM, filters, since, Some(1)).await?;
                first
                    .first()
                    .and_then(|m| m.info().ok().map(|i| i.stream_sequence))
            }
        };
        let purge = stream.purge();
        let response = match (subject, below) {
            (Some(f), Some(seq)) => purge.filter(f).sequence(seq).await,
            (Some(f), None) => purge.filter(f).await,
            (None, Some(seq)) => purge.sequence(seq).await,
            (None, None) => purge.await,
        };
        purged += response
            .map_err(|e| DlqError::Delete {
                reason: e.to_string(),
            })?
            .purged;
    }
    Ok(purged)
}

/// The messages of `stream` on `filters` (none: all) from `deliver` on, at most `max`,
/// oldest first: as many as it holds when the consumer is created (an ordered consumer
/// would wait for more).
async fn read(
    js: &jetstream::Context,
    stream: &str,
    filters: Vec<String>,
    deliver: DeliverPolicy,
    max: Option<usize>,
) -> Result<Vec<jetstream::Message>, DlqError> {
    let fail = |e: &dyn std::fmt::Display| DlqError::Read {
        stream: stream.to_owned(),
        reason: e.to_string(),
    };
    let handle = js.get_stream(stream).await.map_err(|e| fail(&e))?;
    let mut config = pull::OrderedConfig {
        deliver_policy: deliver,
        ..Default::default()
    };
    match <[String; 1]>::try_from(filters) {
        Ok([one]) => config.filter_subject = one,
        Err(many) => config.filter_subjects = many,
    }
    let consumer = handle.create_consumer(config).await.map_err(|e| fail(&e))?;
    let pending = usize::try_from(consumer.cached_info().num_pending).unwrap_or(usize::MAX);
    let expected = max.map_or(pending, |max| pending.min(max));
    let mut out = Vec::with_capacity(expected.min(4096));
    if expected == 0 {
        return Ok(out);
    }
    let mut messages = consumer.messages().await.map_err(|e| fail(&e))?;
    while out.len() < expected {
        let next = tokio::time::timeout(READ_TIMEOUT, messages.next())
            .await
            .map_err(|_| fail(&"timed out reading the stream"))?;
        match next {
            Some(Ok(message)) => out.push(message),
            Some(Err(e)) => return Err(fail(&e)),
            None => break,
        }
    }
    Ok(out)
}

fn read_error(e: &dyn std::fmt::Display) -> DlqError {
    DlqError::Read {
        stream: DLQ_STREAM.to_owned(),
        reason: e.to_string(),
    }
}

/// Whether a delete failed because the message is not there.
fn is_no_message(e: &jetstream::stream::DeleteMessageError) -> bool {
    use jetstream::{ErrorCode, stream::DeleteMessageErrorKind};
    matches!(e.kind(), DeleteMessageErrorKind::JetStream(j)
        if [ErrorCode::NO_MESSAGE_FOUND, ErrorCode::SEQUENCE_NOT_FOUND, ErrorCode(10057)]
            .contains(&j.error_code()))
}

/// µs since the epoch.
fn micros(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_name_dead_letters_and_advisories() {
        assert!(Filter::default().subjects().is_empty());
        let f = Filter {
            stream: None,
            consumer: Some("agent".into()),
        };
        assert_eq!(
            f.subjects(),
            [
                "dlq.*.agent",
                "$JS.EVENT.ADVISORY.CONSUMER.MAX_DELIVERIES.*.agent"
            ]
        );
        assert!(name("agent").is_ok());
        for bad in ["", "a.b", "*", ">", "a b"] {
            assert!(name(bad).is_err(), "{bad:?}");
        }
    }
}
