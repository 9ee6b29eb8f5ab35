//! Dead letters: the record of an input a stage gave up on.
//!
//! Consumes the failed JetStream message and the reason; produces a [`DeadLetter`] on
//! `dlq.{stream}.{consumer}` (stream `DLQ`, 14 days) with the original subject, payload,
//! delivery count and reason. Published with `Nats-Msg-Id = dlq:{stream}:{seq}`, so a retried
//! dead-lettering is stored once. State: none.

use async_nats::jetstream::{self, message::PublishMessage};
use bytes::Bytes;
use sb_schemas::{DeadLetter, encode_dead_letter, now_micros, subject};

use crate::metrics::Metric;

/// Writes the dead letter and waits until it is stored.
pub async fn publish(
    js: &jetstream::Context,
    message: &jetstream::Message,
    consumer: &str,
    reason_kind: &str,
    reason: &str,
) -> Result<(), jetstream::context::PublishError> {
    let (stream, stream_seq, deliveries) = match message.info() {
        Ok(info) => (
            info.stream.to_owned(),
            info.stream_sequence,
            info.delivered.max(0) as u64,
        ),
        Err(_) => (String::from("unknown"), 0, 0),
    };
    let record = DeadLetter {
        subject: message.subject.to_string(),
        stream: stream.clone(),
        consumer: consumer.to_owned(),
        stream_seq,
        deliveries,
        reason: reason.to_owned(),
        reason_kind: reason_kind.to_owned(),
        at: now_micros(),
        payload: message.payload.to_vec(),
    };
    let publish = PublishMessage::build()
        .payload(Bytes::from(encode_dead_letter(&record)))
        .message_id(format!("dlq:{stream}:{stream_seq}"));
    js.send_publish(subject::dlq(&stream, consumer), publish)
        .await?
        .await?;
    metrics::counter!(Metric::StageDeadLetters.name(), "stage" => consumer.to_owned(), "reason" => reason_kind.to_owned())
        .increment(1);
    tracing::warn!(
        stage = consumer,
        subject = %record.subject,
        deliveries,
        reason_kind,
        reason,
        "dead-lettered"
    );
    Ok(())
}
