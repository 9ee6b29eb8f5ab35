//! The dialer's life: its workers, the reconciler, the queue gauges and the HTTP routes
//! (callbacks, and whatever API the binary merges), until SIGTERM; then a drain.
//!
//! Consumes a started [`Runtime`] and a [`Dialer`]; produces running tasks: `workers`
//! loops that pop and dial, one reconciler pass a second (any replica may run it: it
//! claims what it looks at), and a gauge refresh a second
//! (`switchboard_campaign_queue_depth{tenant}`, `switchboard_campaign_contacts_dialable`,
//! `switchboard_dialer_open_attempts`). On
//! SIGTERM the workers stop popping and finish the dial in hand; placed calls stay open
//! attempts that any replica's callbacks and reconciler resolve. State: the task handles.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use sb_runtime::http::{HttpServer, ReadyNeeds};
use sb_runtime::metrics::Metric;
use sb_runtime::{Runtime, Shutdown, StartError};
use tokio_util::sync::CancellationToken;

use crate::callbacks;
use crate::dialer::Dialer;

/// Campaigns the dialable gauge looks at, at most.
const DIALABLE_SCAN: u32 = 10_000;

/// How often the reconciler and the gauges run.
const TICK: Duration = Duration::from_secs(1);

/// A running dialer.
#[derive(Debug)]
pub struct Running {
    /// Where its HTTP routes listen.
    pub addr: SocketAddr,
    http: HttpServer,
    shutdown: Shutdown,
}

impl Running {
    /// Stops popping, waits for the dials in hand (up to the drain deadline), stops serving.
    pub async fn shutdown(self) -> bool {
        self.shutdown.trigger();
        let drained = self.shutdown.drain().await;
        self.http.stop().await;
        drained
    }
}

/// Starts the workers, the reconciler, the gauges and the HTTP routes (`api` merged with
/// the callbacks and the runtime's health endpoints).
pub async fn start(runtime: &Runtime, dialer: Dialer, api: Router) -> Result<Running, StartError> {
    let shutdown = runtime.shutdown.clone();
    let stopping = shutdown.stopping().clone();
    for _ in 0..dialer.settings.workers {
        let (dialer, stopping) = (dialer.clone(), stopping.clone());
        shutdown.tracker().spawn(work(dialer, stopping));
    }
    shutdown.tracker().spawn(every_tick(
        stopping.clone(),
        dialer.clone(),
        |d| async move {
            if let Err(error) = d.reconcile_once().await {
                tracing::warn!(error = %error, "reconciling failed");
            }
        },
    ));
    let mut reported = BTreeSet::new();
    let gauges = dialer.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                () = stopping.cancelled() => return,
                _ = tick.tick() => refresh_gauges(&gauges, &mut reported).await,
            }
        }
    });
    let routes = api.merge(callbacks::router(dialer));
    let http = runtime
        .serve_http(routes, ReadyNeeds::NATS_AND_REDIS)
        .await?;
    Ok(Running {
        addr: http.addr,
        http,
        shutdown,
    })
}

/// Runs `pass` once a tick until shutdown (a pass in progress finishes).
async fn every_tick<F, Fut>(stopping: CancellationToken, dialer: Dialer, pass: F)
where
    F: Fn(Dialer) -> Fut,
    Fut: Future<Output = ()>,
{
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            () = stopping.cancelled() => return,
            _ = tick.tick() => pass(dialer.clone()).await,
        }
    }
}

/// One worker: pop and dial while there is work, look again after `idle` when there is none.
async fn work(dialer: Dialer, stopping: CancellationToken) {
    let idle = dialer.settings.idle;
    while !stopping.is_cancelled() {
        let wait = match dialer.dial_next().await {
            Ok(Some(_)) => continue,
            Ok(None) => idle,
            Err(error) => {
                tracing::warn!(error = %error, "dialling failed");
                idle
            }
        };
        tokio::select! {
            () = stopping.cancelled() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Sets the depth gauge of every tenant with queued contacts, and back to 0 for those
/// that had some at the last refresh; and the open attempts.
async fn refresh_gauges(dialer: &Dialer, reported: &mut BTreeSet<String>) {
    match dialer.queue.depths().await {
        Ok(depths) => {
            let now: BTreeSet<String> = depths.iter().map(|(t, _)| t.clone()).collect();
            for gone in reported.difference(&now) {
                metrics::gauge!(Metric::CampaignQueueDepth.name(), "tenant" => gone.clone())
                    .set(0.0);
            }
            for (tenant, depth) in depths {
                metrics::gauge!(Metric::CampaignQueueDepth.name(), "tenant" => tenant)
                    .set(depth as f64);
            }
            *reported = now;
        }
        Err(error) => tracing::warn!(error = %error, "queue depths unreadable"),
    }
    if let Ok(open) = dialer.queue.open_attempts().await {
        metrics::gauge!(Metric::DialerOpenAttempts.name()).set(open as f64);
    }
    if let Ok(n) = dialer
        .queue
        .dialable(dialer.clock.now_ms(), DIALABLE_SCAN)
        .await
    {
        metrics::gauge!(Metric::CampaignContactsDialable.name()).set(n as f64);
    }
}

/// The binary's life: serve until SIGTERM (or Ctrl-C), then drain and stop.
pub async fn run(runtime: Runtime, dialer: Dialer, api: Router) -> Result<(), StartError> {
    runtime.shutdown.listen_for_signals();
    let running = start(&runtime, dialer, api).await?;
    tracing::info!(addr = %running.addr, "dialer serving");
    runtime.shutdown.stopping().cancelled().await;
    tracing::info!("draining: finishing the dials in hand");
    let drained = running.shutdown().await;
    tracing::info!(drained, "dialer stopped");
    Ok(())
}
