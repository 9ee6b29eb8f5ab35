//! The caller frames Switchboard stored, read back from JetStream after a load run.
//!
//! Consumes every message on the caller-audio subjects (`audio.*.*.in`) of the `AUDIO`
//! stream; produces, per call sid, the frames stored and the frames missing between
//! batches (a gap in the batches' frame sequence numbers). Batches (`AUDIO_BATCH_MS`) are
//! counted by their payload, 160 bytes a frame. State: none.

use std::{collections::HashMap, time::Duration};

use anyhow::Context as _;
use async_nats::jetstream::{self, consumer::pull};
use futures::{StreamExt as _, TryStreamExt as _};
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
    let stream = js.get_stream(subject::AUDIO_STREAM).await?;
    let filter = subject::all_audio_in_filter();
    let total: usize = stream
        .info_with_subjects(filter)
        .await?
        .try_fold(0, |sum, (_, n)| async move { Ok(sum + n) })
        .await?;
    let mut per_call: HashMap<String, Stored> = HashMap::new();
    if total == 0 {
        return Ok(per_call);
    }
    let consumer = stream
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            ..Default::default()
        })
        .await?;
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
