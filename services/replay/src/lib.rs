//! Replay: everything one call did, read back from JetStream (ARCHITECTURE §9).
//!
//! Consumes the call's control events (`call.*.{sid}.>` on `CALLS`) and audio
//! (`audio.*.{sid}.>` on `AUDIO`) with ordered consumers; produces a [`CallLog`] that
//! renders as a timeline ([`timeline`]), a per-turn latency waterfall ([`latency`]) and a
//! stereo WAV of the call ([`wav`]). State: none; the streams are the record.

pub mod latency;
pub mod timeline;
pub mod wav;

use std::time::Duration;

use async_nats::jetstream::{self, consumer::pull};
use futures::{StreamExt, TryStreamExt};
use sb_schemas::{CallSid, Envelope, decode, subject};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read stream {stream}: {reason}")]
    Read {
        stream: &'static str,
        reason: String,
    },
    #[error("no events stored for call {0}")]
    NotFound(CallSid),
}

/// One stored event with where it sits in its stream.
#[derive(Debug, Clone)]
pub struct Stored {
    pub stream: &'static str,
    pub seq: u64,
    pub event: Envelope,
}

/// A call's events from both streams, ordered by producer time (`at`).
#[derive(Debug, Clone, Default)]
pub struct CallLog {
    pub events: Vec<Stored>,
    /// Stored messages that did not decode (counted, not fatal: the rest still replays).
    pub undecodable: usize,
}

impl CallLog {
    /// Reads every event of `sid` from `CALLS` and `AUDIO`.
    pub async fn load(js: &jetstream::Context, sid: &CallSid) -> Result<Self, ReplayError> {
        Self::load_from(js, sid, subject::call_audio_filter(sid)).await
    }

    /// Every control event of `sid` and its bot audio only: enough for
    /// [`latency::turns`](crate::latency::turns), without reading the caller's frames.
    pub async fn load_turns(js: &jetstream::Context, sid: &CallSid) -> Result<Self, ReplayError> {
        Self::load_from(js, sid, subject::call_audio_out_filter(sid)).await
    }

    /// Every control event of `sid`, no audio at all.
    pub async fn load_events(js: &jetstream::Context, sid: &CallSid) -> Result<Self, ReplayError> {
        Self::load_from(js, sid, None).await
    }

    async fn load_from(
        js: &jetstream::Context,
        sid: &CallSid,
        audio_filter: impl Into<Option<String>>,
    ) -> Result<Self, ReplayError> {
        let mut log = CallLog::default();
        let calls = (subject::CALLS_STREAM, subject::call_events_filter(sid));
        let audio = audio_filter.into().map(|f| (subject::AUDIO_STREAM, f));
        for (stream, filter) in std::iter::once(calls).chain(audio) {
            read_stream(js, stream, &filter, &mut log).await?;
        }
        if log.events.is_empty() {
            return Err(ReplayError::NotFound(sid.clone()));
        }
        log.events
            .sort_by_key(|s| (s.event.at, s.stream == subject::AUDIO_STREAM, s.seq));
        Ok(log)
    }

    /// The earliest producer timestamp (µs), the zero of the timeline.
    pub fn start_micros(&self) -> u64 {
        self.events.iter().map(|s| s.event.at).min().unwrap_or(0)
    }

    pub fn envelopes(&self) -> impl Iterator<Item = &Envelope> {
        self.events.iter().map(|s| &s.event)
    }
}

async fn read_stream(
    js: &jetstream::Context,
    stream: &'static str,
    filter: &str,
    log: &mut CallLog,
) -> Result<(), ReplayError> {
    let fail = |e: &dyn std::fmt::Display| ReplayError::Read {
        stream,
        reason: e.to_string(),
    };
    let handle = js.get_stream(stream).await.map_err(|e| fail(&e))?;
    // Count first: an ordered consumer on an empty filter would wait forever.
    let counts: Vec<(String, usize)> = handle
        .info_with_subjects(filter)
        .await
        .map_err(|e| fail(&e))?
        .try_collect()
        .await
        .map_err(|e| fail(&e))?;
    let expected: usize = counts.iter().map(|(_, n)| n).sum();
    if expected == 0 {
        return Ok(());
    }
    let consumer = handle
        .create_consumer(pull::OrderedConfig {
            filter_subject: filter.to_owned(),
            ..Default::default()
        })
        .await
        .map_err(|e| fail(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| fail(&e))?;
    let mut read = 0;
    while read < expected {
        let next = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .map_err(|_| fail(&"timed out reading the stream"))?;
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(fail(&e)),
            None => break,
        };
        read += 1;
        let seq = message.info().map(|i| i.stream_sequence).unwrap_or(0);
        match decode(&message.payload) {
            Ok(event) => log.events.push(Stored { stream, seq, event }),
            Err(_) => log.undecodable += 1,
        }
    }
    Ok(())
}
