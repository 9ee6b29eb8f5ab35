//! Right to erasure (`replay delete`): every stored message of one call removed, a
//! tombstone left.
//!
//! Consumes a call sid. Finds the call's tenant from the subjects `CALLS` and `AUDIO` hold
//! for it and from the dead letters whose original subject is the call's, then removes the
//! call's audio (`audio.{t}.{sid}.>` purged from `AUDIO`), its STT lease
//! (`assign.stt.{t}.{sid}` from `STT_ASSIGN`), its entry in the call index
//! (`KV_CALL_INDEX`) and its dead letters (from `DLQ`), publishes
//! the tombstone `call.{t}.{sid}.erased` ([`Erased`]) and purges from `CALLS` every
//! `call.{t}.{sid}.>` message stored before it. The tombstone is then all that is left; a
//! run cut short leaves the call findable, to run again. Produces [`Erasure`]s. State: none.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use async_nats::jetstream;
use futures::TryStreamExt;
use sb_runtime::Publisher;
use sb_schemas::{
    Body, CallSid, Envelope, Erased, Kind, TenantId,
    subject::{
        self, AUDIO_STREAM, CALL_INDEX_BUCKET, CALL_INDEX_STREAM, CALLS_STREAM, DLQ_STREAM, Parsed,
        STT_ASSIGN_STREAM,
    },
};

use crate::{
    CallLog, ReplayError,
    dlq::{self, DlqError, Filter, Letter},
};

#[derive(Debug, thiserror::Error)]
pub enum EraseError {
    #[error("no messages stored for call {0} (in CALLS, AUDIO or DLQ)")]
    NotFound(CallSid),
    #[error(
        "call {0} has no `end` event stored: it may still be live, and what it stores after \
         the purge would not be erased. Run `replay delete` once it has ended, or pass \
         --force if it is over (its ingress died before storing `end`)"
    )]
    Live(CallSid),
    #[error("cannot read stream {stream}: {reason}")]
    Read { stream: String, reason: String },
    #[error("cannot purge {stream}: {reason}")]
    Purge { stream: String, reason: String },
    #[error("cannot publish the tombstone on {subject}: {reason}")]
    Publish { subject: String, reason: String },
    #[error(transparent)]
    Dlq(#[from] DlqError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
}

/// What erasing one call of one tenant did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Erasure {
    pub tenant: TenantId,
    pub sid: CallSid,
    /// The tombstone's body: who asked and how many messages were removed from which stream
    /// (`CALLS` counted before the tombstone was stored).
    pub tombstone: Erased,
    /// Where the tombstone is stored in `CALLS`.
    pub tombstone_seq: u64,
}

/// What [`erase`] found and did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// One erasure per tenant the call was stored under (one, in practice).
    Erased(Vec<Erasure>),
    /// Only a tombstone was stored already: nothing was done.
    AlreadyErased { at: u64, by: String },
}

/// Removes every stored message of `sid` and leaves a tombstone naming `by`. Refuses a
/// call without a stored `end` (it may still be live) unless `force`.
pub async fn erase(
    js: &jetstream::Context,
    sid: &CallSid,
    by: &str,
    force: bool,
) -> Result<Outcome, EraseError> {
    let calls = subjects(js, CALLS_STREAM, &subject::call_events_filter(sid)).await?;
    let audio = subjects(js, AUDIO_STREAM, &subject::call_audio_filter(sid)).await?;
    let letters: Vec<Letter> = dlq::list(js, &Filter::default())
        .await?
        .into_iter()
        .filter(|l| l.is_of_call(sid))
        .collect();
    let kinds: Vec<(TenantId, Kind)> = calls
        .keys()
        .chain(audio.keys())
        .chain(letters.iter().filter_map(|l| match &l.content {
            dlq::Content::Dead(dead) => Some(&dead.subject),
            _ => None,
        }))
        .filter_map(|s| match subject::parse(s) {
            Ok(Parsed::Event { tenant, kind, .. }) => Some((tenant, kind)),
            // A dead-lettered lease holds the call's `start`.
            Ok(Parsed::SttAssign { tenant, .. }) => Some((tenant, Kind::Start)),
            _ => None,
        })
        .collect();
    if kinds.is_empty() {
        return Err(EraseError::NotFound(sid.clone()));
    }
    let stored = |kind| {
        calls
            .keys()
            .any(|s| matches!(subject::parse(s), Ok(Parsed::Event { kind: k, .. }) if k == kind))
    };
    // Control events expire from CALLS after 7 days, dead letters after 14: then it is over.
    let over = calls.is_empty() || stored(Kind::End) || stored(Kind::Erased);
    if !over && !force {
        return Err(EraseError::Live(sid.clone()));
    }
    let only_tombstones = kinds.iter().all(|(_, k)| *k == Kind::Erased);
    if only_tombstones {
        let log = CallLog::load_events(js, sid).await?;
        if let Some((tombstone, erased)) = log.erased() {
            return Ok(Outcome::AlreadyErased {
                at: tombstone.at,
                by: erased.by.clone(),
            });
        }
    }
    let tenants: BTreeSet<TenantId> = kinds.into_iter().map(|(t, _)| t).collect();
    let mut done = Vec::new();
    for tenant in tenants {
        let mine: Vec<&Letter> = letters.iter().filter(|l| of_tenant(l, &tenant)).collect();
        done.push(erase_tenant(js, &tenant, sid, by, &mine).await?);
    }
    Ok(Outcome::Erased(done))
}

/// Erases `sid` as stored under `tenant`: audio, lease and dead letters first, then the
/// tombstone, then every control event before it.
async fn erase_tenant(
    js: &jetstream::Context,
    tenant: &TenantId,
    sid: &CallSid,
    by: &str,
    letters: &[&Letter],
) -> Result<Erasure, EraseError> {
    let audio = purge(
        js,
        AUDIO_STREAM,
        &subject::tenant_call_audio_filter(tenant, sid),
        None,
    )
    .await?;
    let leases = purge(
        js,
        STT_ASSIGN_STREAM,
        &subject::stt_assign(tenant, sid),
        None,
    )
    .await?;
    // The index entry holds the call's numbers too.
    let indexed = purge(
        js,
        CALL_INDEX_STREAM,
        &format!("$KV.{CALL_INDEX_BUCKET}.{tenant}.{sid}"),
        None,
    )
    .await?;
    let mut dead_letters = 0;
    for letter in letters {
        match dlq::delete(js, letter.seq).await {
            Ok(()) => dead_letters += 1,
            Err(DlqError::Gone(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    let events = subject::tenant_call_events_filter(tenant, sid);
    let calls = subjects(js, CALLS_STREAM, &events)
        .await?
        .values()
        .sum::<u64>();
    let removed = Erased {
        by: by.to_owned(),
        removed: BTreeMap::from([
            (AUDIO_STREAM.to_owned(), audio),
            (CALL_INDEX_STREAM.to_owned(), indexed),
            (CALLS_STREAM.to_owned(), calls),
            (DLQ_STREAM.to_owned(), dead_letters),
            (STT_ASSIGN_STREAM.to_owned(), leases),
        ]),
    };
    // A fresh id: an earlier tombstone is purged below, so it must not deduplicate this one.
    let tombstone = Envelope::new(
        tenant.clone(),
        sid.clone(),
        0,
        Body::Erased(removed.clone()),
    );
    let ack = Publisher::new(js.clone())
        .publish(&tombstone)
        .await
        .map_err(|e| EraseError::Publish {
            subject: subject::for_envelope(&tombstone),
            reason: e.to_string(),
        })?;
    purge(js, CALLS_STREAM, &events, Some(ack.sequence)).await?;
    Ok(Erasure {
        tenant: tenant.clone(),
        sid: sid.clone(),
        tombstone: removed,
        tombstone_seq: ack.sequence,
    })
}

/// Whether `letter`'s original subject is of `tenant`.
fn of_tenant(letter: &Letter, tenant: &TenantId) -> bool {
    let dlq::Content::Dead(dead) = &letter.content else {
        return false;
    };
    match subject::parse(&dead.subject) {
        Ok(Parsed::Event { tenant: t, .. } | Parsed::SttAssign { tenant: t, .. }) => &t == tenant,
        _ => false,
    }
}

/// Messages per subject stored on `filter` in `stream`.
async fn subjects(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
) -> Result<HashMap<String, u64>, EraseError> {
    let fail = |e: &dyn std::fmt::Display| EraseError::Read {
        stream: stream.to_owned(),
        reason: e.to_string(),
    };
    let handle = js.get_stream(stream).await.map_err(|e| fail(&e))?;
    let counts: Vec<(String, usize)> = handle
        .info_with_subjects(filter)
        .await
        .map_err(|e| fail(&e))?
        .try_collect()
        .await
        .map_err(|e| fail(&e))?;
    Ok(counts.into_iter().map(|(s, n)| (s, n as u64)).collect())
}

/// Purges `filter` from `stream` (only below sequence `below`, if given): how many went.
async fn purge(
    js: &jetstream::Context,
    stream: &str,
    filter: &str,
    below: Option<u64>,
) -> Result<u64, EraseError> {
    let fail = |e: &dyn std::fmt::Display| EraseError::Purge {
        stream: stream.to_owned(),
        reason: e.to_string(),
    };
    let handle = js.get_stream(stream).await.map_err(|e| fail(&e))?;
    let purge = handle.purge().filter(filter);
    let response = match below {
        Some(seq) => purge.sequence(seq).await,
        None => purge.await,
    };
    Ok(response.map_err(|e| fail(&e))?.purged)
}
