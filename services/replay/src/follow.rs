//! `replay show --follow`: a live call, event by event, as it happens.
//!
//! Consumes the call's control events (`call.*.{sid}.>` on `CALLS`) and, when asked, its
//! audio (`audio.*.{sid}.>` on `AUDIO`) with ordered consumers that deliver everything
//! already stored and then each new event (also from an import's prefixed copy); produces
//! each decoded event, in arrival order, to a callback. Ends when the call's `end` event
//! (or an erased call's tombstone) arrives, after the audio stored by then when following
//! audio. State: the two ephemeral consumers, gone when this returns.

use async_nats::jetstream::{
    self,
    consumer::{DeliverPolicy, pull},
};
use futures::{StreamExt, TryStreamExt};
use sb_schemas::{
    Body, CallSid, decode,
    subject::{self, AUDIO_STREAM, CALLS_STREAM},
};

use crate::{ReplayError, Stored, Streams, streams::raw};

/// What a follow saw.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Followed {
    /// Events handed to the callback.
    pub events: usize,
    /// Stored messages that did not decode (skipped).
    pub undecodable: usize,
}

/// Follows `sid` in `streams` until its `end` event (or the tombstone of an erased call),
/// handing each event to `on_event` as it arrives. A call not started yet is waited for; a
/// call already over prints whole.
pub async fn follow<F>(
    js: &jetstream::Context,
    streams: &Streams,
    sid: &CallSid,
    audio: bool,
    mut on_event: F,
) -> Result<Followed, ReplayError>
where
    F: FnMut(&Stored) -> std::io::Result<()>,
{
    let calls_filter = subject::call_events_filter(sid);
    let audio_filter = subject::call_audio_filter(sid);
    let mut calls = open(js, streams, CALLS_STREAM, &calls_filter).await?;
    let mut audio = match audio {
        true => Some(open(js, streams, AUDIO_STREAM, &audio_filter).await?),
        false => None,
    };
    let mut seen = Followed::default();
    let mut audio_seen = 0usize;
    // Set by `end`: the call's audio messages stored at that point.
    let mut audio_by_end: Option<usize> = None;
    loop {
        let (stream, next) = match (&mut audio, audio_by_end.is_some()) {
            // After `end`, only the audio stored before it is still to come.
            (Some(a), true) => (AUDIO_STREAM, a.next().await),
            (Some(a), false) => tokio::select! {
                m = calls.next() => (CALLS_STREAM, m),
                m = a.next() => (AUDIO_STREAM, m),
            },
            (None, _) => (CALLS_STREAM, calls.next().await),
        };
        let message = match next {
            Some(Ok(message)) => message,
            Some(Err(e)) => return Err(read_error(streams, stream, &e)),
            None => return Err(read_error(streams, stream, &"the consumer ended")),
        };
        if stream == AUDIO_STREAM {
            audio_seen += 1;
        }
        let r = raw(streams, stream, &message);
        match decode(&r.payload) {
            Ok(event) => {
                // An erased call's tombstone is the last it will ever have too.
                let is_end = matches!(event.body, Body::End(_) | Body::Erased(_));
                on_event(&Stored {
                    stream,
                    seq: r.seq,
                    event,
                })?;
                seen.events += 1;
                if is_end && audio_by_end.is_none() {
                    if audio.is_none() {
                        return Ok(seen);
                    }
                    audio_by_end = Some(count(js, streams, AUDIO_STREAM, &audio_filter).await?);
                }
            }
            Err(_) => seen.undecodable += 1,
        }
        if audio_by_end.is_some_and(|stored| audio_seen >= stored) {
            return Ok(seen);
        }
    }
}

/// An ordered consumer on `filter` of `logical` in `streams`, from the first message.
async fn open(
    js: &jetstream::Context,
    streams: &Streams,
    logical: &'static str,
    filter: &str,
) -> Result<pull::Ordered, ReplayError> {
    let fail = |e: &dyn std::fmt::Display| read_error(streams, logical, e);
    let handle = js
        .get_stream(streams.stream_name(logical))
        .await
        .map_err(|e| fail(&e))?;
    handle
        .create_consumer(pull::OrderedConfig {
            filter_subject: streams.subject(filter),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| fail(&e))?
        .messages()
        .await
        .map_err(|e| fail(&e))
}

/// Messages stored on `filter` of `logical` now.
async fn count(
    js: &jetstream::Context,
    streams: &Streams,
    logical: &'static str,
    filter: &str,
) -> Result<usize, ReplayError> {
    let fail = |e: &dyn std::fmt::Display| read_error(streams, logical, e);
    let handle = js
        .get_stream(streams.stream_name(logical))
        .await
        .map_err(|e| fail(&e))?;
    let counts: Vec<(String, usize)> = handle
        .info_with_subjects(streams.subject(filter))
        .await
        .map_err(|e| fail(&e))?
        .try_collect()
        .await
        .map_err(|e| fail(&e))?;
    Ok(counts.iter().map(|(_, n)| n).sum())
}

fn read_error(streams: &Streams, logical: &str, e: &dyn std::fmt::Display) -> ReplayError {
    ReplayError::Read {
        stream: streams.stream_name(logical),
        reason: e.to_string(),
    }
}
