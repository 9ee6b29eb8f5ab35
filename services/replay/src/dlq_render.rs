//! Dead letters as an operator reads them: `replay dlq list` lines, `show` text, and the
//! JSON of both (fields: docs/REPLAY.md).
//!
//! Consumes [`Letter`]s ([`crate::dlq`]) and, for an advisory, the message it names (read
//! with [`crate::dlq::message_at`]); produces text and JSON values. State: none.

use std::{io::Write, time::Duration};

use async_nats::jetstream;
use base64::Engine as _;
use sb_schemas::{
    DeadLetter, decode, now_micros,
    subject::{AUDIO_STREAM, CALLS_STREAM},
};
use serde_json::{Value, json};

use crate::{
    Stored,
    dlq::{self, Content, Letter},
    json::{self as event_json, Payloads},
    redrive, utc,
};

/// `list`: newest first, at most `limit`, as lines under a header or as JSON lines.
pub(crate) fn list<W: Write>(
    letters: &[Letter],
    limit: usize,
    json: bool,
    out: &mut W,
) -> anyhow::Result<()> {
    let now = now_micros();
    let newest = letters.iter().rev().take(limit);
    if json {
        for letter in newest {
            writeln!(out, "{}", letter_json(letter, false, None))?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:>8}  {:>5}  {:>5}  {:<22}  {:<48}  reason",
        "seq", "age", "tries", "stream/consumer", "subject"
    )?;
    for letter in newest {
        let (stream, consumer) = letter.source();
        let (deliveries, subject, reason) = match &letter.content {
            Content::Dead(d) => (
                d.deliveries.to_string(),
                d.subject.clone(),
                format!("{}: {}", d.reason_kind, d.reason),
            ),
            Content::Advisory(a) => (
                a.deliveries.to_string(),
                format!("({} seq {})", a.stream, a.stream_seq),
                "[advisory] max deliveries reached; no payload, nothing to redrive".to_owned(),
            ),
            Content::Unreadable(why) => ("?".into(), "?".into(), format!("[unreadable] {why}")),
        };
        writeln!(
            out,
            "{:>8}  {:>5}  {deliveries:>5}  {:<22}  {subject:<48}  {reason}",
            letter.seq,
            ago(now, letter.stored_at),
            format!("{stream}/{consumer}"),
        )?;
    }
    if letters.len() > limit {
        writeln!(out, "({} older not shown: --limit)", letters.len() - limit)?;
    }
    Ok(())
}

/// What `show` found of the message an advisory names.
pub(crate) type Original = Result<Option<Value>, String>;

pub(crate) async fn original(js: &jetstream::Context, stream: &str, seq: u64) -> Original {
    let message = dlq::message_at(js, stream, seq)
        .await
        .map_err(|e| e.to_string())?;
    Ok(message.map(|m| match decode(&m.payload) {
        Ok(event) => event_value(stream, seq, event),
        Err(e) => json!({ "subject": m.subject.as_str(), "error": e.to_string() }),
    }))
}

/// `show`: everything about one letter, as text.
pub(crate) fn show(letter: &Letter, original: Option<Original>) -> String {
    let now = now_micros();
    let stored = format!(
        "stored {} ({} ago)",
        utc(letter.stored_at),
        ago(now, letter.stored_at)
    );
    let seq = letter.seq;
    match &letter.content {
        Content::Dead(d) => {
            let event = match decode(&d.payload) {
                Ok(event) => event_value(&d.stream, d.stream_seq, event).to_string(),
                Err(e) => format!("does not decode ({e}): it cannot be redriven; purge it"),
            };
            let seen_by = redrive::consumers_of(&d.stream, &d.subject).join(", ");
            format!(
                "DLQ {seq}: dead letter, {stored}\n  subject     {} ({} seq {})\n  consumer    \
                 {}, gave up after {} deliveries at {}\n  reason      {}: {}\n  payload     {} \
                 bytes\n  event       {event}\n  redrive     `replay dlq redrive {seq}` publishes \
                 it again on {}, seen by: {}\n",
                d.subject,
                d.stream,
                d.stream_seq,
                d.consumer,
                d.deliveries,
                utc(d.at),
                d.reason_kind,
                d.reason,
                d.payload.len(),
                d.subject,
                if seen_by.is_empty() {
                    "no consumer"
                } else {
                    &seen_by
                },
            )
        }
        Content::Advisory(a) => {
            let found = match original {
                Some(Ok(Some(event))) => event.to_string(),
                Some(Ok(None)) => format!("no longer stored in {}", a.stream),
                Some(Err(e)) => format!("cannot read it: {e}"),
                None => format!("not looked up ({} is not CALLS or AUDIO)", a.stream),
            };
            format!(
                "DLQ {seq}: max-deliveries advisory, {stored}\n  message     {} seq {} reached \
                 max_deliver on consumer {} ({} deliveries, never acknowledged)\n  payload     \
                 none: an advisory carries no payload, so there is nothing to redrive\n  \
                 original    {found}\n",
                a.stream, a.stream_seq, a.consumer, a.deliveries
            )
        }
        Content::Unreadable(why) => format!(
            "DLQ {seq}: unreadable, {stored}\n  subject     {}\n  error       {why}\n",
            letter.dlq_subject
        ),
    }
}

/// One letter as JSON; `full`: with the payload in base64 and what it decodes to.
pub(crate) fn letter_json(letter: &Letter, full: bool, original: Option<Original>) -> Value {
    let mut v = json!({
        "seq": letter.seq,
        "stored_at": letter.stored_at,
        "dlq_subject": letter.dlq_subject,
    });
    let fields = match &letter.content {
        Content::Dead(d) => dead_json(d, full),
        Content::Advisory(a) => {
            let mut f = json!({ "type": "advisory", "stream": a.stream, "stream_seq": a.stream_seq,
                "consumer": a.consumer, "deliveries": a.deliveries });
            if let Some(original) = original {
                // null: no longer stored.
                f["original"] = match original {
                    Ok(found) => found.unwrap_or(Value::Null),
                    Err(e) => json!({ "error": e }),
                };
            }
            f
        }
        Content::Unreadable(why) => json!({ "type": "unreadable", "error": why }),
    };
    if let (Some(v), Value::Object(fields)) = (v.as_object_mut(), fields) {
        v.extend(fields);
    }
    v
}

fn dead_json(d: &DeadLetter, full: bool) -> Value {
    let mut f = json!({
        "type": "dead_letter", "subject": d.subject, "stream": d.stream,
        "stream_seq": d.stream_seq, "consumer": d.consumer, "deliveries": d.deliveries,
        "reason_kind": d.reason_kind, "reason": d.reason, "dead_at": d.at,
        "payload_bytes": d.payload.len(),
    });
    if full {
        f["payload_base64"] = base64::engine::general_purpose::STANDARD
            .encode(&d.payload)
            .into();
        match decode(&d.payload) {
            Ok(event) => f["event"] = event_value(&d.stream, d.stream_seq, event),
            Err(e) => f["event_error"] = e.to_string().into(),
        }
    }
    f
}

/// An event as the object `show --json` prints for it.
fn event_value(stream: &str, seq: u64, event: sb_schemas::Envelope) -> Value {
    let stream = match stream {
        AUDIO_STREAM => AUDIO_STREAM,
        _ => CALLS_STREAM,
    };
    let line = event_json::line(&Stored { stream, seq, event }, Payloads::Length);
    serde_json::from_str(&line).unwrap_or(Value::Null)
}

/// How long ago `at` was, coarsely (`42s`, `17m`, `5h`, `3d`).
fn ago(now: u64, at: u64) -> String {
    age_text(Duration::from_micros(now.saturating_sub(at)))
}

/// A duration, coarsely (`42s`, `17m`, `5h`, `3d`).
pub(crate) fn age_text(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages_print_coarsely() {
        let at = 1_000_000_000_000;
        for (secs, text) in [(5, "5s"), (600, "10m"), (10_800, "3h"), (259_200, "3d")] {
            assert_eq!(ago(at + secs * 1_000_000, at), text);
        }
        assert_eq!(ago(at, at + 5), "0s", "a clock behind says 0, not a panic");
    }
}
