//! Replay: everything one call did, read back from JetStream (ARCHITECTURE §9).
//!
//! Consumes the call's control events (`call.*.{sid}.>` on `CALLS`) and audio
//! (`audio.*.{sid}.>` on `AUDIO`) with ordered consumers, from the live streams or from an
//! imported copy under a prefix ([`streams`]); produces a [`CallLog`] that renders as a
//! timeline ([`timeline`]), JSON lines ([`json`]), a per-turn latency waterfall
//! ([`latency`]) and a stereo WAV of the call ([`wav`]). [`follow`] prints a live call as
//! it happens; [`format`] is the `.sbcall` export file and [`transfer`] moves a call
//! between JetStream and such a file. [`dlq`] reads and purges dead letters, [`redrive`]
//! publishes them again ([`dlq_cli`] is the `dlq` command, [`dlq_render`] its output);
//! [`erase`] removes every stored message of a call (right to erasure), leaving a
//! tombstone. [`rerun`] runs one stage (agent or tts) again on a call's recorded inputs,
//! in process over in-memory state, [`rerun_diff`] sets its outputs beside the recorded
//! ones and [`rerun_cli`] is the `redrive` command (storing them under a prefix).
//! [`cli`] is the `replay` command. State: none; the streams are the record.

pub mod calls;
pub mod cli;
pub mod dlq;
pub mod dlq_cli;
pub mod dlq_render;
pub mod erase;
pub mod follow;
pub mod format;
pub mod index;
pub mod json;
pub mod latency;
pub mod redrive;
pub mod rerun;
pub mod rerun_cli;
pub mod rerun_diff;
pub mod streams;
pub mod summary;
pub mod timeline;
pub mod transfer;
pub mod wav;

use sb_schemas::{Body, CallSid, Envelope, Erased, decode, subject};

pub use streams::{Prefix, RawEvent, Streams};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("cannot read stream {stream}: {reason}")]
    Read { stream: String, reason: String },
    #[error(
        "no events stored for call {0}: an unknown call, or one past its retention (the \
         streams keep 7 days unless configured otherwise, a tenant's `retention` less)"
    )]
    NotFound(CallSid),
    #[error("call {sid} was erased at {at} by {by} (`replay delete`): nothing of it is stored")]
    Erased {
        sid: CallSid,
        /// When, in UTC.
        at: String,
        by: String,
    },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// One stored event with where it sits in its stream.
#[derive(Debug, Clone)]
pub struct Stored {
    /// `CALLS` or `AUDIO` (also when read from a prefixed copy).
    pub stream: &'static str,
    pub seq: u64,
    pub event: Envelope,
}

/// Which of the call's audio a [`CallLog`] reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AudioScope {
    /// Caller and bot audio.
    All,
    /// Bot audio only: enough for [`latency::turns`], without the caller's frames.
    Bot,
    /// No audio at all.
    None,
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
    pub async fn load(
        js: &async_nats::jetstream::Context,
        sid: &CallSid,
    ) -> Result<Self, ReplayError> {
        Self::load_in(js, &Streams::live(), sid, AudioScope::All).await
    }

    /// Every control event of `sid` and its bot audio only: enough for
    /// [`latency::turns`](crate::latency::turns), without reading the caller's frames.
    pub async fn load_turns(
        js: &async_nats::jetstream::Context,
        sid: &CallSid,
    ) -> Result<Self, ReplayError> {
        Self::load_in(js, &Streams::live(), sid, AudioScope::Bot).await
    }

    /// Every control event of `sid`, no audio at all.
    pub async fn load_events(
        js: &async_nats::jetstream::Context,
        sid: &CallSid,
    ) -> Result<Self, ReplayError> {
        Self::load_in(js, &Streams::live(), sid, AudioScope::None).await
    }

    /// Reads `sid`'s control events and `audio` from `streams`.
    pub async fn load_in(
        js: &async_nats::jetstream::Context,
        streams: &Streams,
        sid: &CallSid,
        audio: AudioScope,
    ) -> Result<Self, ReplayError> {
        let mut raw = streams::read_raw(
            js,
            streams,
            subject::CALLS_STREAM,
            &subject::call_events_filter(sid),
        )
        .await?;
        let audio_filter = match audio {
            AudioScope::All => Some(subject::call_audio_filter(sid)),
            AudioScope::Bot => Some(subject::call_audio_out_filter(sid)),
            AudioScope::None => None,
        };
        if let Some(filter) = audio_filter {
            raw.extend(streams::read_raw(js, streams, subject::AUDIO_STREAM, &filter).await?);
        }
        if raw.is_empty() {
            return Err(ReplayError::NotFound(sid.clone()));
        }
        Ok(Self::from_raw(&raw))
    }

    /// The events of `raw` that decode, ordered by producer time.
    pub fn from_raw(raw: &[RawEvent]) -> Self {
        let mut log = CallLog::default();
        for r in raw {
            match decode(&r.payload) {
                Ok(event) => log.events.push(Stored {
                    stream: r.stream,
                    seq: r.seq,
                    event,
                }),
                Err(_) => log.undecodable += 1,
            }
        }
        log.events
            .sort_by_key(|s| (s.event.at, s.stream == subject::AUDIO_STREAM, s.seq));
        log
    }

    /// The tombstone, when the call was erased (`replay delete`): then it is all there is.
    pub fn erased(&self) -> Option<(&Envelope, &Erased)> {
        self.envelopes().find_map(|e| match &e.body {
            Body::Erased(erased) => Some((e, erased)),
            _ => None,
        })
    }

    /// [`ReplayError::Erased`] when the call was erased: for what needs the call itself
    /// (its audio, an export).
    pub fn not_erased(&self) -> Result<&Self, ReplayError> {
        match self.erased() {
            Some((tombstone, erased)) => Err(ReplayError::erased(tombstone, erased)),
            None => Ok(self),
        }
    }

    /// The earliest producer timestamp (µs), the zero of the timeline.
    pub fn start_micros(&self) -> u64 {
        self.events.iter().map(|s| s.event.at).min().unwrap_or(0)
    }

    pub fn envelopes(&self) -> impl Iterator<Item = &Envelope> {
        self.events.iter().map(|s| &s.event)
    }
}

impl ReplayError {
    /// The erased call `tombstone` stands for.
    pub fn erased(tombstone: &Envelope, erased: &Erased) -> Self {
        ReplayError::Erased {
            sid: tombstone.call_sid.clone(),
            at: utc(tombstone.at),
            by: erased.by.clone(),
        }
    }
}

/// Microseconds since the epoch as a UTC time to the second (`2025-11-23 00:00:00 UTC`).
pub fn utc(micros: u64) -> String {
    let secs = i64::try_from(micros / 1_000_000).unwrap_or(i64::MAX);
    match chrono::DateTime::from_timestamp(secs, 0) {
        Some(t) => t.format("%Y-%m-%d %H:%M:%S UTC").to_string(),
        None => format!("{micros} µs since the epoch"),
    }
}
