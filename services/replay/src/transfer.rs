//! Moving one call between JetStream and a `.sbcall` file ([`crate::format`]).
//!
//! [`export`] consumes the call's stored messages (`CALLS` and `AUDIO`, live or under a
//! prefix) and produces an [`Export`]: original subjects, `Nats-Msg-Id`s and payload bytes.
//! [`import`] consumes a checked [`Export`] and publishes it, under a prefix into the
//! isolated streams `P_CALLS` / `P_AUDIO` (created here from the production limits), or
//! back into the live streams. Each event is published with its `Nats-Msg-Id` (an audio
//! event without one gets its event id), and events already stored there are skipped,
//! so importing twice stores each event once. A call erased from the live streams (its
//! tombstone stored) is refused. State: none beyond the streams.

use std::collections::{HashSet, VecDeque};

use async_nats::jetstream::{self, context::PublishAckFuture, message::PublishMessage};
use sb_runtime::Topology;
use sb_schemas::{
    Body, CallSid, Envelope, Kind, TenantId, decode, now_micros,
    subject::{self, AUDIO_STREAM, CALLS_STREAM},
};

use crate::{
    ReplayError, Streams,
    format::{Export, Header, Record},
    streams::read_raw,
};

/// Publishes in flight before the oldest ack is awaited.
const ACK_WINDOW: usize = 256;

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    #[error(transparent)]
    Read(#[from] ReplayError),
    #[error("cannot create stream {stream}: {reason}")]
    CreateStream { stream: String, reason: String },
    #[error("stream {stream} exists but does not capture {subject}: pick another prefix")]
    Foreign { stream: String, subject: String },
    #[error("publish to {subject} failed: {reason}")]
    Publish { subject: String, reason: String },
    #[error(
        "call {sid} was erased from this deployment at {at} by {by} (`replay delete`): an \
         export taken before would bring back what was erased"
    )]
    Erased {
        sid: CallSid,
        at: String,
        by: String,
    },
}

/// What an import did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Imported {
    /// The streams written (`P_CALLS`, `P_AUDIO`, or the live ones).
    pub streams: Vec<String>,
    /// Events newly stored.
    pub stored: usize,
    /// Events already there (found before publishing, or deduplicated by the stream).
    pub present: usize,
}

/// Every event of `sid` in `streams` that decodes, in stream order (`CALLS`, then `AUDIO`).
/// Returns the export and how many stored messages did not decode (left out).
pub async fn export(
    js: &jetstream::Context,
    streams: &Streams,
    sid: &CallSid,
) -> Result<(Export, usize), ReplayError> {
    let mut raw = read_raw(js, streams, CALLS_STREAM, &subject::call_events_filter(sid)).await?;
    raw.extend(read_raw(js, streams, AUDIO_STREAM, &subject::call_audio_filter(sid)).await?);
    let total = raw.len();
    let records: Vec<Record> = raw
        .into_iter()
        .filter_map(|r| {
            let event = decode(&r.payload).ok()?;
            Some(Record {
                stream: r.stream,
                subject: r.subject,
                msg_id: r.msg_id,
                payload: r.payload,
                event,
            })
        })
        .collect();
    let Some(first) = records.first() else {
        return Err(ReplayError::NotFound(sid.clone()));
    };
    if let Some((tombstone, erased)) = records.iter().find_map(|r| match &r.event.body {
        Body::Erased(erased) => Some((&r.event, erased)),
        _ => None,
    }) {
        return Err(ReplayError::erased(tombstone, erased));
    }
    let audio = records.iter().filter(|r| r.stream == AUDIO_STREAM).count() as u64;
    let header = Header {
        switchboard_version: env!("CARGO_PKG_VERSION").to_owned(),
        call_sid: sid.clone(),
        tenant: first.event.tenant.clone(),
        events: records.len() as u64,
        calls_events: records.len() as u64 - audio,
        audio_events: audio,
        exported_at: now_micros(),
    };
    let skipped = total - records.len();
    Ok((Export { header, records }, skipped))
}

/// Publishes `export` into `streams` (creating a prefix's streams first), skipping the
/// events already stored there.
pub async fn import(
    js: &jetstream::Context,
    streams: &Streams,
    export: &Export,
) -> Result<Imported, ImportError> {
    let topology = Topology::embedded().map_err(|e| ImportError::CreateStream {
        stream: "(topology)".into(),
        reason: e.to_string(),
    })?;
    let sid = &export.header.call_sid;
    refuse_erased(js, &export.header.tenant, sid).await?;
    for config in streams.isolated_configs(&topology) {
        ensure_stream(js, config).await?;
    }
    let mut present = stored_ids(js, streams, sid).await?;
    let mut done = Imported {
        streams: [CALLS_STREAM, AUDIO_STREAM]
            .map(|s| streams.stream_name(s))
            .to_vec(),
        ..Imported::default()
    };
    let mut pending: VecDeque<(String, PublishAckFuture)> = VecDeque::new();
    for record in &export.records {
        let id = record
            .msg_id
            .clone()
            .unwrap_or_else(|| record.event.id.to_string());
        // An id stored twice in the file, or already in the stream: once is enough.
        if !present.insert(id.clone()) {
            done.present += 1;
            continue;
        }
        let subject = streams.subject(&record.subject);
        let message = PublishMessage::build()
            .payload(record.payload.clone())
            .message_id(id);
        let ack = js
            .send_publish(subject.clone(), message)
            .await
            .map_err(|e| publish_error(&subject, &e))?;
        pending.push_back((subject, ack));
        if pending.len() >= ACK_WINDOW {
            settle(pending.pop_front(), &mut done).await?;
        }
    }
    while !pending.is_empty() {
        settle(pending.pop_front(), &mut done).await?;
    }
    Ok(done)
}

/// Refuses a call whose tombstone the live `CALLS` holds, for an import under a prefix
/// too: erased means nowhere in this deployment.
async fn refuse_erased(
    js: &jetstream::Context,
    tenant: &TenantId,
    sid: &CallSid,
) -> Result<(), ImportError> {
    use jetstream::stream::DirectGetErrorKind;
    let fail = |e: &dyn std::fmt::Display| ReplayError::Read {
        stream: CALLS_STREAM.to_owned(),
        reason: e.to_string(),
    };
    let calls = js.get_stream(CALLS_STREAM).await.map_err(|e| fail(&e))?;
    let tombstone = subject::event(tenant, sid, Kind::Erased);
    let stored = match calls.direct_get_last_for_subject(tombstone).await {
        Ok(stored) => stored,
        Err(e) if e.kind() == DirectGetErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(fail(&e).into()),
    };
    match decode(&stored.payload) {
        Ok(Envelope {
            at,
            body: Body::Erased(erased),
            ..
        }) => Err(ImportError::Erased {
            sid: sid.clone(),
            at: crate::utc(at),
            by: erased.by,
        }),
        _ => Ok(()),
    }
}

/// The ids of `sid`'s events already in `streams`: their `Nats-Msg-Id`, else the event id.
async fn stored_ids(
    js: &jetstream::Context,
    streams: &Streams,
    sid: &CallSid,
) -> Result<HashSet<String>, ReplayError> {
    let mut raw = read_raw(js, streams, CALLS_STREAM, &subject::call_events_filter(sid)).await?;
    raw.extend(read_raw(js, streams, AUDIO_STREAM, &subject::call_audio_filter(sid)).await?);
    Ok(raw
        .into_iter()
        .filter_map(|r| {
            r.msg_id
                .or_else(|| decode(&r.payload).ok().map(|e| e.id.to_string()))
        })
        .collect())
}

/// Creates `config`'s stream, or checks that the existing one captures its subjects.
async fn ensure_stream(
    js: &jetstream::Context,
    config: jetstream::stream::Config,
) -> Result<(), ImportError> {
    let name = config.name.clone();
    let wanted = config.subjects.clone();
    let mut stream =
        js.get_or_create_stream(config)
            .await
            .map_err(|e| ImportError::CreateStream {
                stream: name.clone(),
                reason: e.to_string(),
            })?;
    let info = stream.info().await.map_err(|e| ImportError::CreateStream {
        stream: name.clone(),
        reason: e.to_string(),
    })?;
    match wanted
        .into_iter()
        .find(|s| !info.config.subjects.contains(s))
    {
        Some(subject) => Err(ImportError::Foreign {
            stream: name,
            subject,
        }),
        None => Ok(()),
    }
}

async fn settle(
    next: Option<(String, PublishAckFuture)>,
    done: &mut Imported,
) -> Result<(), ImportError> {
    let Some((subject, ack)) = next else {
        return Ok(());
    };
    let ack = ack.await.map_err(|e| publish_error(&subject, &e))?;
    match ack.duplicate {
        true => done.present += 1,
        false => done.stored += 1,
    }
    Ok(())
}

fn publish_error(subject: &str, e: &dyn std::fmt::Display) -> ImportError {
    ImportError::Publish {
        subject: subject.to_owned(),
        reason: e.to_string(),
    }
}
