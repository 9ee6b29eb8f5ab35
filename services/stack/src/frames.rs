//! The caller frames Switchboard stored, read back from JetStream after a load run.
//!
//! Consumes the messages on the caller-audio subjects (`audio.*.*.in`) of the `AUDIO`
//! stream (all, or from a sequence on); produces, per call sid, the frames stored and the frames missing between
//! batches (a gap in the batches' frame sequence numbers). Batches (`AUDIO_BATCH_MS`) are
//! counted by their payload, 160 bytes a frame. State: none.

use std::{collections::HashMap, time::Duration};

use anyhow::Context as _;
use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull},
};
use futures::StreamExt as _;
use sb_audio::FRAME_BYTES;
use sb_schemas::{Body, decode, subject};

/// What one call's stored caller audio holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stored {
    pub frames: u64,
    /// Messages (batches) they were stored in.
    pub messages: u64,
    /// Frames skipped between stored batches (never stored, or stored out of order).
    pub gaps: u64,
    next_seq: u64,
}

impl Stored {
    /// One stored batch whose first frame is `seq`.
    fn add(&mut self, seq: u64, payload_bytes: usize) {
        let frames = payload_bytes.div_ceil(FRAME_BYTES) as u64;
        self.gaps += seq.saturating_sub(self.next_seq);
        self.frames += frames;
        self.messages += 1;
        self.next_seq = self.next_seq.max(seq + frames);
    }
}

/// Reads every stored caller-audio batch once, in stream order.
pub async fn stored(js: &jetstream::Context) -> anyhow::Result<HashMap<String, Stored>> {
    stored_from(js, 1).await
}

/// Reads the caller-audio batches stored at stream sequence `first` or later (a chaos
/// round's, not the whole run's), once, in stream order.
pub async fn stored_from(
    js: &jetstream::Context,
    first: u64,
) -> anyhow::Result<HashMap<String, Stored>> {
    let stream = js.get_stream(subject::AUDIO_STREAM).await?;
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: subject::all_audio_in_filter().to_owned(),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: first.max(1),
            },
            ..Default::default()
        })
        .await?;
    // What is stored now; nothing is being added once the calls are over.
    let total = consumer.cached_info().num_pending;
    let mut per_call: HashMap<String, Stored> = HashMap::new();
    if total == 0 {
        return Ok(per_call);
    }
    let mut messages = consumer.messages().await?;
    for _ in 0..total {
        let message = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .context("timed out reading the caller audio back")?
            .context("the caller audio ended early")??;
        let event = decode(&message.payload).context("a stored caller batch")?;
        if let Body::Audio(audio) = &event.body {
            per_call
                .entry(event.call_sid.as_str().to_owned())
                .or_default()
                .add(audio.seq, audio.payload.0.len());
        }
    }
    Ok(per_call)
}

/// The sequence the next message stored in `AUDIO` will get.
pub async fn next_sequence(js: &jetstream::Context) -> anyhow::Result<u64> {
    let mut stream = js.get_stream(subject::AUDIO_STREAM).await?;
    Ok(stream.info().await?.state.last_sequence + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_count_their_frames_and_gaps_between_them() {
        let mut call = Stored::default();
        call.add(0, 3 * FRAME_BYTES);
        call.add(3, 3 * FRAME_BYTES);
        // Frames 6..8 never arrived.
        call.add(8, FRAME_BYTES);
        assert_eq!((call.frames, call.gaps, call.messages), (7, 2, 3));
    }
}
