//! The lease loop: how a worker comes to own calls, keeps them, and lets them go.
//!
//! Consumes the durable consumer `stt` on `STT_ASSIGN` (nats/consumers/STT_ASSIGN.stt.json),
//! ONE message per pull and only while a call slot (`SB_STT_MAX_CALLS`) is free, since a
//! pulled lease starts its `ack_wait` at once. Each lease is a call's `start` event; its
//! delivery count is the fencing epoch. While the call lives the lease is kept with
//! `+WPI` (every ack_wait/3) and the session is checked for a newer owner; at the end the
//! lease is acked (the work queue removes it); on shutdown every held lease is NAKed at once
//! (hand-off); a stale owner drops it without a word; a lease that can never be served is
//! dead-lettered and terminated. State: the call tasks (a `JoinSet`: if the worker dies,
//! so do its calls, and their leases come back after `ack_wait`).

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::StreamExt as _;
use sb_runtime::{Runtime, Tenant, dead_letter, metrics::Metric};
use sb_schemas::{Body, CallSid, Envelope, decode, subject};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};
use tokio::task::JoinSet;
use tracing::Instrument as _;

use crate::call::{Call, Exit, Signal};
use crate::config::SttConfig;
use crate::ctx::Ctx;
use crate::provider::SpeechToText;

/// The durable consumer the leases are pulled from.
pub const CONSUMER: &str = "stt";
/// How long one pull waits for a lease (then pulls again).
const PULL_EXPIRES: Duration = Duration::from_secs(2);
/// Longest wait for the server to confirm an ack or NAK of a lease.
const SETTLE_TIMEOUT: Duration = Duration::from_secs(5);
/// Redelivery delay of a lease handed back because the call could not be set up here.
const RETRY_DELAY: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("cannot bind the stt lease consumer: {0}")]
    Bind(String),
}

/// Serves calls until shutdown: pulls leases while slots are free, then hands every held
/// lease back and returns once the calls have stopped.
pub async fn run<S: SpeechToText>(
    runtime: Runtime,
    stt: S,
    config: SttConfig,
) -> Result<(), RunError> {
    let mut consumer: PullConsumer = runtime
        .js
        .get_consumer_from_stream(CONSUMER, subject::STT_ASSIGN_STREAM)
        .await
        .map_err(|e| RunError::Bind(e.to_string()))?;
    let info = consumer
        .info()
        .await
        .map_err(|e| RunError::Bind(e.to_string()))?;
    let heartbeat = (info.config.ack_wait / 3).max(Duration::from_millis(100));
    let slots = Arc::new(Semaphore::new(config.max_calls as usize));
    tracing::info!(
        max_calls = config.max_calls,
        heartbeat_ms = heartbeat.as_millis() as u64,
        provider = stt.name(),
        "stt worker running"
    );
    let stopping = runtime.shutdown.stopping().clone();
    let ctx = Arc::new(Ctx {
        runtime,
        stt,
        config,
        heartbeat,
    });
    let mut calls = JoinSet::new();
    loop {
        let permit = tokio::select! {
            () = stopping.cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        // A pull in flight is never abandoned: a lease delivered to a dropped inbox would
        // wait out ack_wait. One that arrives while stopping is handed straight back.
        match pull_one(&consumer).await {
            Ok(Some(lease)) if stopping.is_cancelled() => settle(&lease, Exit::HandOff).await,
            Ok(Some(lease)) => {
                calls.spawn(serve(ctx.clone(), lease, permit));
            }
            Ok(None) => {}
            Err(error) => {
                tracing::warn!(%error, "lease pull failed");
                tokio::select! {
                    () = stopping.cancelled() => {}
                    () = tokio::time::sleep(Duration::from_secs(1)) => {}
                }
            }
        }
        while let Some(done) = calls.try_join_next() {
            log_join(done);
        }
    }
    metrics::gauge!(Metric::LifecycleDraining.name()).set(1.0);
    tracing::info!(calls = calls.len(), "stopping: handing calls back");
    while let Some(done) = calls.join_next().await {
        log_join(done);
    }
    Ok(())
}

fn log_join(done: Result<(), tokio::task::JoinError>) {
    if let Err(error) = done {
        tracing::error!(%error, "a call task failed");
    }
}

/// One lease, or `None` when none came within [`PULL_EXPIRES`].
async fn pull_one(
    consumer: &PullConsumer,
) -> Result<Option<jetstream::Message>, async_nats::Error> {
    let mut batch = consumer
        .batch()
        .max_messages(1)
        .expires(PULL_EXPIRES)
        .messages()
        .await?;
    batch.next().await.transpose()
}

/// Why a lease can never be served.
struct Rejection {
    kind: &'static str,
    reason: String,
}

fn reject(kind: &'static str, reason: impl ToString) -> Rejection {
    Rejection {
        kind,
        reason: reason.to_string(),
    }
}

/// The lease's call and tenant, checked against its subject.
fn validate<S>(
    ctx: &Ctx<S>,
    lease: &jetstream::Message,
) -> Result<(Envelope, Arc<Tenant>), Rejection> {
    let start = decode(&lease.payload).map_err(|e| reject(e.kind(), e))?;
    if !matches!(start.body, Body::Start(_)) {
        return Err(reject(
            "not_start",
            format!("a {} event", start.kind().as_str()),
        ));
    }
    match subject::parse(&lease.subject) {
        Ok(subject::Parsed::SttAssign { tenant, call_sid })
            if tenant == start.tenant && call_sid == start.call_sid => {}
        _ => {
            return Err(reject(
                "subject_mismatch",
                format!("lease on {}", lease.subject),
            ));
        }
    }
    let tenant = ctx
        .runtime
        .tenants
        .by_id(&start.tenant)
        .ok_or_else(|| reject("unknown_tenant", format!("tenant {}", start.tenant)))?;
    Ok((start, tenant))
}

/// Serves one lease from pull to release.
async fn serve<S: SpeechToText>(
    ctx: Arc<Ctx<S>>,
    lease: jetstream::Message,
    _slot: OwnedSemaphorePermit,
) {
    let epoch = lease
        .info()
        .map(|info| info.delivered.max(1) as u64)
        .unwrap_or(1);
    let (start, tenant) = match validate(&ctx, &lease) {
        Ok(valid) => valid,
        Err(rejection) => return dead_letter(&ctx, &lease, rejection).await,
    };
    let span = tracing::info_span!(
        "call",
        tenant = %start.tenant,
        call_sid = %start.call_sid,
        epoch,
    );
    async move {
        let _active = ActiveCall::new();
        let event = if epoch > 1 { "takeover" } else { "acquired" };
        metrics::counter!(Metric::SttLeases.name(), "event" => event).increment(1);
        tracing::info!(event, "lease");
        let (signals, signal_rx) = mpsc::channel(4);
        let sid = start.call_sid.clone();
        let call = Call::new(ctx.clone(), tenant, sid.clone(), epoch);
        let exit = tokio::select! {
            exit = call.run(signal_rx) => exit,
            never = heartbeat(&ctx, &lease, &sid, epoch, signals) => match never {},
        };
        settle(&lease, exit).await;
    }
    .instrument(span)
    .await;
}

/// Keeps the lease (`+WPI`) and watches the session for a newer owner or its end.
async fn heartbeat<S>(
    ctx: &Ctx<S>,
    lease: &jetstream::Message,
    sid: &CallSid,
    epoch: u64,
    signals: mpsc::Sender<Signal>,
) -> Infallible {
    let start = tokio::time::Instant::now() + ctx.heartbeat;
    let mut tick = tokio::time::interval_at(start, ctx.heartbeat);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if let Err(error) = lease.ack_with(AckKind::Progress).await {
            tracing::warn!(%error, "lease progress ack failed");
        }
        let signal = match ctx.runtime.redis.session_load(sid).await {
            Ok(None) => Some(Signal::SessionGone),
            Ok(Some(session)) if session.stt_epoch > epoch => Some(Signal::Stale),
            Ok(Some(_)) => None,
            Err(error) => {
                tracing::warn!(%error, "session check failed");
                None
            }
        };
        if let Some(signal) = signal {
            let _ = signals.try_send(signal);
        }
    }
}

/// Acks, NAKs or drops the lease as the call's exit says.
async fn settle(lease: &jetstream::Message, exit: Exit) {
    let (event, ack) = match exit {
        Exit::Finished(_) => ("released", Some(AckKind::Ack)),
        Exit::HandOff => ("handed_off", Some(AckKind::Nak(None))),
        Exit::Retry(_) => ("retried", Some(AckKind::Nak(Some(RETRY_DELAY)))),
        Exit::Stale => ("stale", None),
    };
    metrics::counter!(Metric::SttLeases.name(), "event" => event).increment(1);
    tracing::info!(event, ?exit, "lease settled");
    let Some(ack) = ack else { return };
    match tokio::time::timeout(SETTLE_TIMEOUT, lease.double_ack_with(ack)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, event, "lease settle failed; it returns after ack_wait")
        }
        Err(_) => tracing::warn!(event, "lease settle timed out; it returns after ack_wait"),
    }
}

/// A lease that can never be served: dead letter, then Term (or NAK if the DLQ is down).
async fn dead_letter<S>(ctx: &Ctx<S>, lease: &jetstream::Message, rejection: Rejection) {
    metrics::counter!(Metric::SttLeases.name(), "event" => "rejected").increment(1);
    let stored = dead_letter::publish(
        &ctx.runtime.js,
        lease,
        CONSUMER,
        rejection.kind,
        &rejection.reason,
    )
    .await;
    let ack = match stored {
        Ok(()) => AckKind::Term,
        Err(error) => {
            tracing::error!(%error, "cannot store the dead letter; handing the lease back");
            AckKind::Nak(Some(RETRY_DELAY))
        }
    };
    if let Err(error) = lease.ack_with(ack).await {
        tracing::warn!(%error, "settling a rejected lease failed");
    }
}

/// The active-calls gauge for as long as this value lives (also when the task is aborted).
struct ActiveCall;

impl ActiveCall {
    fn new() -> Self {
        metrics::gauge!(Metric::SttActiveCalls.name()).increment(1.0);
        Self
    }
}

impl Drop for ActiveCall {
    fn drop(&mut self) {
        metrics::gauge!(Metric::SttActiveCalls.name()).decrement(1.0);
    }
}
