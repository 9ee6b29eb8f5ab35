//! Re-driving a dead letter: its input published again where it was first published.
//!
//! Consumes a [`Letter`] of the `DLQ` stream ([`crate::dlq`]); publishes its payload on the
//! original subject with the original event id as `Nats-Msg-Id`, reads the publish ack to
//! tell a stored event from one the stream dropped as a duplicate of the original (inside
//! its duplicate window), and deletes the dead letter once the event is stored. Produces
//! [`Redriven`]. The durable consumers a redriven event reaches come from `nats/consumers/`
//! ([`consumers_of`]). State: none.

use std::time::Duration;

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use sb_runtime::Topology;
use sb_schemas::{
    DeadLetter, Envelope, decode,
    subject::{self, Parsed},
};

use crate::dlq::{Content, DlqError, Letter, delete, get};

/// What a redrive did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Redriven {
    /// Stored again on `subject`, at `seq` of `stream`; the dead letter is deleted.
    Stored {
        subject: String,
        stream: String,
        seq: u64,
    },
    /// An earlier redrive stored it already (at `seq`), inside the stream's duplicate
    /// window; the dead letter is deleted now.
    Earlier {
        subject: String,
        stream: String,
        seq: u64,
    },
    /// The stream still remembers the original (`seq`) inside its duplicate `window`, so
    /// the publish was dropped as a duplicate and no consumer saw it: the dead letter is
    /// kept, to redrive once the window has passed.
    Deduplicated {
        subject: String,
        stream: String,
        seq: u64,
        window: Duration,
    },
}

/// Re-drives dead letter `seq` ([`redrive_letter`]).
pub async fn redrive(js: &jetstream::Context, seq: u64) -> Result<Redriven, DlqError> {
    redrive_letter(js, &get(js, seq).await?).await
}

/// Publishes the dead letter's payload on its original subject with its event id as
/// `Nats-Msg-Id`, then deletes it from `DLQ` unless the stream dropped the publish as a
/// duplicate of the original. Every durable consumer whose filter takes the subject
/// receives it, not only the one that gave up on it ([`consumers_of`]).
pub async fn redrive_letter(
    js: &jetstream::Context,
    letter: &Letter,
) -> Result<Redriven, DlqError> {
    let (dead, event) = redrivable(letter)?;
    let publish_error = |e: &dyn std::fmt::Display| DlqError::Publish {
        subject: dead.subject.clone(),
        reason: e.to_string(),
    };
    let message = PublishMessage::build()
        .payload(Bytes::from(dead.payload.clone()))
        .message_id(event.id.to_string());
    let ack = js
        .send_publish(dead.subject.clone(), message)
        .await
        .map_err(|e| publish_error(&e))?
        .await
        .map_err(|e| publish_error(&e))?;
    let (subject, stream, seq) = (dead.subject.clone(), ack.stream.clone(), ack.sequence);
    let done = match ack.duplicate {
        false => Redriven::Stored {
            subject,
            stream,
            seq,
        },
        // The id is the original's, still in the stream's duplicate window: nothing went
        // anywhere. (A dead letter without a sequence cannot tell: kept, to be safe.)
        true if dead.stream_seq == 0 || (stream == dead.stream && seq == dead.stream_seq) => {
            let window = duplicate_window(js, &stream).await;
            return Ok(Redriven::Deduplicated {
                subject,
                stream,
                seq,
                window,
            });
        }
        true => Redriven::Earlier {
            subject,
            stream,
            seq,
        },
    };
    match delete(js, letter.seq).await {
        // Another redrive of the same letter finished first: it is gone either way.
        Ok(()) | Err(DlqError::Gone(_)) => Ok(done),
        Err(e) => Err(e),
    }
}

/// The dead letter and its event, when it can be published again as it was.
fn redrivable(letter: &Letter) -> Result<(&DeadLetter, Envelope), DlqError> {
    let refuse = |reason: String| DlqError::Unredrivable {
        seq: letter.seq,
        reason,
    };
    let dead = match &letter.content {
        Content::Dead(dead) => dead,
        Content::Advisory(a) => {
            return Err(DlqError::Advisory {
                seq: letter.seq,
                stream: a.stream.clone(),
                stream_seq: a.stream_seq,
            });
        }
        Content::Unreadable(why) => return Err(refuse(why.clone())),
    };
    match subject::parse(&dead.subject) {
        Ok(Parsed::Event { kind, .. }) if !kind.is_audio() => {}
        _ => {
            return Err(refuse(format!(
                "{} is not a control event's subject (only inputs from CALLS are redriven)",
                dead.subject
            )));
        }
    }
    let event = decode(&dead.payload).map_err(|e| {
        refuse(format!(
            "its payload does not decode ({e}): a stage would reject it again; purge it"
        ))
    })?;
    let meant = subject::for_envelope(&event);
    if meant != dead.subject {
        return Err(refuse(format!(
            "its payload belongs on {meant}, not on {}",
            dead.subject
        )));
    }
    Ok((dead, event))
}

/// The durable consumers (`nats/consumers/`) whose filter takes `subject` of `stream`:
/// who sees a redriven event.
pub fn consumers_of(stream: &str, subject: &str) -> Vec<String> {
    let Ok(topology) = Topology::embedded() else {
        return Vec::new();
    };
    topology
        .consumers
        .iter()
        .filter(|def| def.stream == stream)
        .filter(|def| {
            let c = &def.config;
            match c.filter_subjects.is_empty() {
                true => c.filter_subject.is_empty() || matches(&c.filter_subject, subject),
                false => c.filter_subjects.iter().any(|f| matches(f, subject)),
            }
        })
        .map(|def| def.name().to_owned())
        .collect()
}

/// NATS subject matching: `*` is one token, a final `>` one or more.
fn matches(filter: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for f in filter.split('.') {
        match (f, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (f, Some(t)) if f == t => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

/// The stream's duplicate window (2 minutes, the server's default, if it cannot be read).
async fn duplicate_window(js: &jetstream::Context, stream: &str) -> Duration {
    let Ok(mut handle) = js.get_stream(stream).await else {
        return Duration::from_secs(120);
    };
    match handle.info().await {
        Ok(info) => info.config.duplicate_window,
        Err(_) => Duration::from_secs(120),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_match_like_nats() {
        for (filter, subject, expected) in [
            ("call.*.*.start", "call.acme.CA1.start", true),
            ("call.*.*.start", "call.acme.CA1.end", false),
            ("call.*.*.start", "call.acme.CA1.start.x", false),
            ("call.>", "call.acme.CA1.start", true),
            ("call.>", "call", false),
            ("dlq.*.*", "dlq.CALLS.agent", true),
        ] {
            assert_eq!(matches(filter, subject), expected, "{filter} {subject}");
        }
    }

    /// A redriven event reaches every consumer whose filter takes it; the tombstone of an
    /// erased call reaches none (no stage acts on it, none dead-letters it).
    #[test]
    fn consumers_of_a_subject_come_from_nats_consumers() {
        let t = sb_schemas::TenantId::parse("acme").unwrap();
        let s = sb_schemas::CallSid::parse("CA0123456789abcdef0123456789abcdef").unwrap();
        let of = |kind| consumers_of("CALLS", &subject::event(&t, &s, kind));
        use sb_schemas::Kind;
        assert_eq!(of(Kind::Start), ["agent", "webhooks"]);
        assert_eq!(of(Kind::Sentence), ["tts"]);
        assert!(of(Kind::Erased).is_empty());
        assert!(of(Kind::Token).is_empty());
    }
}
