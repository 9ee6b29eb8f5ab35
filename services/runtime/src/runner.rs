//! The stage runner: the one consume loop every stage shares.
//!
//! Consumes the stage's durable pull consumer (definition from `nats/consumers/`); for each
//! delivery it decodes the input, calls [`Stage::handle`] under the concurrency limit,
//! waits until every output is stored, then acks. While a delivery is worked on it is kept
//! alive with in-progress acks, so the consumer's `ack_wait` can stay short: a delivery
//! whose replica died is redelivered to another within seconds, not half a minute. Retryable errors NAK with exponential
//! backoff and jitter; poison input and inputs past `max_deliver` are dead-lettered and
//! terminated; a fatal error stops the process. On shutdown it stops pulling, hands back
//! what it prefetched, lets in-flight work finish until the drain deadline and NAKs the
//! rest. State: the in-flight deliveries (tracked by the [`Shutdown`]'s tracker).

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use async_nats::jetstream::{self, AckKind, consumer::PullConsumer};
use futures::{FutureExt, StreamExt};
use rand::Rng;
use sb_schemas::decode;
use tokio::sync::Semaphore;
use tracing::Instrument;

use crate::{
    dead_letter,
    emitter::{Emitter, Wiring},
    meter::{Outcome, StageMeter},
    metrics::Metric,
    outbox::Outbox,
    publisher::Publisher,
    shutdown::Shutdown,
    stage::{Stage, StageError},
    topology::Topology,
};

/// How a stage is run.
#[derive(Debug, Clone, clap::Args)]
pub struct RunnerConfig {
    /// Deliveries handled at once by this replica.
    #[arg(long, env = "SB_STAGE_CONCURRENCY", default_value_t = 64)]
    pub concurrency: usize,
    /// First retry delay; doubles per delivery up to the maximum.
    #[arg(long, env = "SB_RETRY_BASE_MS", default_value_t = 250)]
    pub retry_base_ms: u64,
    /// Longest retry delay.
    #[arg(long, env = "SB_RETRY_MAX_MS", default_value_t = 10_000)]
    pub retry_max_ms: u64,
}

impl Default for RunnerConfig {
    fn default() -> Self {
        Self {
            concurrency: 64,
            retry_base_ms: 250,
            retry_max_ms: 10_000,
        }
    }
}

impl RunnerConfig {
    /// Exponential backoff with ±20 % jitter for the given delivery count.
    pub fn backoff(&self, delivered: u64) -> Duration {
        let exp = delivered.saturating_sub(1).min(20) as u32;
        let base = self
            .retry_base_ms
            .saturating_mul(1u64 << exp)
            .min(self.retry_max_ms);
        let jitter = rand::rng().random_range(0.8..1.2);
        Duration::from_millis((base as f64 * jitter) as u64)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("consumer {0} is not defined under nats/consumers")]
    UnknownConsumer(&'static str),
    #[error("cannot bind consumer {consumer}: {reason}")]
    Bind {
        consumer: &'static str,
        reason: String,
    },
    #[error("stage {stage} stopped on a fatal error: {reason}")]
    Fatal { stage: &'static str, reason: String },
}

/// Runs `stage` until shutdown. Returns after in-flight work is finished or handed back.
pub async fn run_stage<S: Stage>(
    stage: Arc<S>,
    js: &jetstream::Context,
    topology: &Topology,
    shutdown: &Shutdown,
    config: RunnerConfig,
) -> Result<(), RunnerError> {
    let outbox = Publisher::new(js.clone());
    run_stage_with(stage, outbox, topology, shutdown, config).await
}

/// [`run_stage`] publishing through `outbox` (the runtime's: tenants' retention as
/// `Nats-TTL`).
pub async fn run_stage_with<S: Stage>(
    stage: Arc<S>,
    outbox: Publisher,
    topology: &Topology,
    shutdown: &Shutdown,
    config: RunnerConfig,
) -> Result<(), RunnerError> {
    let js = outbox.jetstream().clone();
    let def = topology
        .consumer(S::CONSUMER)
        .ok_or(RunnerError::UnknownConsumer(S::CONSUMER))?;
    let bind = |e: &dyn std::fmt::Display| RunnerError::Bind {
        consumer: S::CONSUMER,
        reason: e.to_string(),
    };
    let consumer: PullConsumer = js
        .get_consumer_from_stream(S::CONSUMER, &def.stream)
        .await
        .map_err(|e| bind(&e))?;
    let mut messages = consumer
        .stream()
        .max_messages_per_batch(config.concurrency.max(1))
        .heartbeat(Duration::from_secs(5))
        .expires(Duration::from_secs(30))
        .messages()
        .await
        .map_err(|e| bind(&e))?;

    let ctx = Arc::new(Ctx {
        outbox: Arc::new(outbox),
        js: js.clone(),
        max_deliver: def.config.max_deliver.max(1) as u64,
        keep_alive_every: keep_alive_period(def.config.ack_wait),
        config: config.clone(),
        shutdown: shutdown.clone(),
        fatal: Mutex::new(None),
        meter: Arc::new(StageMeter::new(S::CONSUMER)),
    });
    let slots = Arc::new(Semaphore::new(config.concurrency.max(1)));
    tracing::info!(
        stage = S::CONSUMER,
        concurrency = config.concurrency,
        "stage running"
    );

    loop {
        let permit = tokio::select! {
            () = shutdown.stopping().cancelled() => break,
            permit = slots.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
        };
        let message = tokio::select! {
            () = shutdown.stopping().cancelled() => break,
            next = messages.next() => next,
        };
        match message {
            Some(Ok(message)) => {
                let (stage, ctx) = (stage.clone(), ctx.clone());
                shutdown.tracker().spawn(async move {
                    process(&*stage, &ctx, message).await;
                    drop(permit);
                });
            }
            Some(Err(error)) => {
                // Missed heartbeats and similar: the pull stream re-subscribes by itself.
                tracing::warn!(stage = S::CONSUMER, %error, "pull stream error");
            }
            None => {
                tracing::error!(stage = S::CONSUMER, "pull stream ended");
                shutdown.trigger();
                break;
            }
        }
    }

    // Hand back what was prefetched but not started, so another replica takes it now.
    while let Some(Some(Ok(message))) = messages.next().now_or_never() {
        let _ = message.ack_with(AckKind::Nak(None)).await;
    }
    drop(messages);
    metrics::gauge!(Metric::LifecycleDraining.name()).set(1.0);
    shutdown.drain().await;

    let fatal = ctx.fatal.lock().map(|mut f| f.take()).unwrap_or_default();
    match fatal {
        Some(reason) => Err(RunnerError::Fatal {
            stage: S::CONSUMER,
            reason,
        }),
        None => Ok(()),
    }
}

struct Ctx {
    outbox: Arc<dyn Outbox>,
    js: jetstream::Context,
    max_deliver: u64,
    /// How often a delivery being worked on is acked as in progress.
    keep_alive_every: Duration,
    config: RunnerConfig,
    shutdown: Shutdown,
    fatal: Mutex<Option<String>>,
    meter: Arc<StageMeter>,
}

async fn process<S: Stage>(stage: &S, ctx: &Ctx, message: jetstream::Message) {
    let started = Instant::now();
    let delivered = message
        .info()
        .map(|i| i.delivered.max(1) as u64)
        .unwrap_or(1);
    let name = S::CONSUMER;
    let m = &ctx.meter;
    m.in_flight.increment(1.0);
    if delivered > 1 {
        m.redeliveries.increment(1);
    }

    let outcome = match decode(&message.payload) {
        Err(error) => {
            m.undecodable.increment(1);
            let reason = error.to_string();
            reject(
                ctx,
                &message,
                name,
                error.kind(),
                &reason,
                Outcome::Rejected,
            )
            .await
        }
        Ok(input) => {
            m.received[input.kind().index()].increment(1);
            let span = tracing::info_span!(
                "handle",
                stage = name,
                tenant = %input.tenant,
                call_sid = %input.call_sid,
                kind = input.kind().as_str(),
                turn = input.turn,
            );
            let work = async {
                let abort = ctx.shutdown.abort().clone();
                let wiring = Wiring {
                    outbox: ctx.outbox.clone(),
                    meter: ctx.meter.clone(),
                    sessions: stage.sessions(),
                    first_output: S::FIRST_OUTPUT,
                    delivered,
                    abort: abort.clone(),
                };
                let mut out = Emitter::new(wiring, &input);
                let handled = tokio::select! {
                    result = stage.handle(input, &mut out) => Some(result),
                    () = abort.cancelled() => None,
                };
                settle(ctx, &message, name, delivered, handled, out).await
            };
            async {
                tokio::select! {
                    outcome = work => outcome,
                    never = keep_alive(&message, ctx.keep_alive_every) => match never {},
                }
            }
            .instrument(span)
            .await
        }
    };

    m.handle_seconds.record(started.elapsed().as_secs_f64());
    m.processed[outcome as usize].increment(1);
    m.in_flight.decrement(1.0);
}

/// A third of `ack_wait`: two keep-alives may be lost before the server gives up on us.
fn keep_alive_period(ack_wait: Duration) -> Duration {
    (ack_wait / 3).max(Duration::from_millis(10))
}

/// Acks the delivery as in progress every `every` until dropped (the work is done).
async fn keep_alive(message: &jetstream::Message, every: Duration) -> std::convert::Infallible {
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        if let Err(error) = message.ack_with(AckKind::Progress).await {
            tracing::debug!(%error, "in-progress ack failed; the next one may land");
        }
    }
}

/// Acks, NAKs, terminates or dead-letters the delivery according to the handle's result.
async fn settle(
    ctx: &Ctx,
    message: &jetstream::Message,
    name: &'static str,
    delivered: u64,
    handled: Option<Result<(), StageError>>,
    out: Emitter,
) -> Outcome {
    let error = match handled {
        None => {
            nak(message, None).await;
            return Outcome::HandedBack;
        }
        Some(Ok(())) => match out.finish().await {
            Ok(_) => {
                if let Err(error) = message.ack().await {
                    tracing::warn!(%error, "ack failed; the input will be redelivered");
                }
                return Outcome::Ok;
            }
            Err(error) => StageError::from(error),
        },
        Some(Err(error)) => error,
    };
    match error {
        StageError::Retry {
            kind,
            reason,
            after,
        } => {
            if delivered >= ctx.max_deliver {
                let reason = format!("gave up after {delivered} deliveries: {reason}");
                return reject(ctx, message, name, kind, &reason, Outcome::DeadLettered).await;
            }
            let delay = after.unwrap_or_else(|| ctx.config.backoff(delivered));
            tracing::info!(
                kind,
                reason,
                delivered,
                delay_ms = delay.as_millis() as u64,
                "retrying"
            );
            nak(message, Some(delay)).await;
            Outcome::Retried
        }
        StageError::Reject { kind, reason } => {
            reject(ctx, message, name, kind, &reason, Outcome::Rejected).await
        }
        StageError::Fatal { kind, reason } => {
            tracing::error!(kind, reason, "fatal stage error; shutting down");
            nak(message, None).await;
            if let Ok(mut fatal) = ctx.fatal.lock() {
                fatal.get_or_insert(reason);
            }
            ctx.shutdown.trigger();
            Outcome::Fatal
        }
    }
}

/// Dead-letters then terminates; if the dead letter cannot be stored, NAKs instead so
/// nothing is lost.
async fn reject(
    ctx: &Ctx,
    message: &jetstream::Message,
    name: &'static str,
    kind: &str,
    reason: &str,
    outcome: Outcome,
) -> Outcome {
    match dead_letter::publish(&ctx.js, message, name, kind, reason).await {
        Ok(()) => {
            if let Err(error) = message.ack_with(AckKind::Term).await {
                tracing::warn!(%error, "term failed; the input will be redelivered");
            }
            outcome
        }
        Err(error) => {
            tracing::error!(%error, "cannot store the dead letter; handing the input back");
            nak(message, Some(ctx.config.backoff(2))).await;
            Outcome::Retried
        }
    }
}

async fn nak(message: &jetstream::Message, delay: Option<Duration>) {
    if let Err(error) = message.ack_with(AckKind::Nak(delay)).await {
        tracing::warn!(%error, "nak failed; the input will be redelivered after ack_wait");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_alive_fires_three_times_per_ack_wait() {
        assert_eq!(
            keep_alive_period(Duration::from_secs(6)),
            Duration::from_secs(2)
        );
        assert_eq!(keep_alive_period(Duration::ZERO), Duration::from_millis(10));
    }

    #[test]
    fn backoff_doubles_with_jitter_and_caps() {
        let c = RunnerConfig {
            concurrency: 1,
            retry_base_ms: 100,
            retry_max_ms: 1_000,
        };
        for (delivered, base) in [
            (1u64, 100u64),
            (2, 200),
            (3, 400),
            (4, 800),
            (5, 1_000),
            (40, 1_000),
        ] {
            let d = c.backoff(delivered).as_millis() as u64;
            assert!(
                d >= base * 8 / 10 && d <= base * 12 / 10,
                "delivered {delivered}: {d} ms"
            );
        }
    }
}
