//! The operational HTTP endpoints every service serves: `/health` (liveness), `/ready`
//! (not draining, NATS connected, and Redis reachable for a service that [`ReadyNeeds`] it)
//! and `/metrics` (Prometheus).
//!
//! Consumes the runtime's connections; produces an axum `Router` that a service may merge
//! with its own routes, and a server bound to the configured address; every readiness
//! check sets `switchboard_redis_up`. State: handles, and whether the last check reached
//! Redis (to log changes only).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::{net::SocketAddr, time::Duration};

use axum::serve::ListenerExt as _;
use axum::{Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use metrics_exporter_prometheus::PrometheusHandle;
use tokio_util::sync::CancellationToken;

use crate::{metrics::Metric, redis::Redis, shutdown::Shutdown};

/// What a service needs, besides not draining, to take new work. NATS always: every input
/// and output is an event. Redis only for a service that cannot work without it; one that
/// degrades without Redis stays ready while Redis is down (ARCHITECTURE §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadyNeeds {
    /// `/ready` is 503 while a Redis `PING` fails (or takes over 1 s).
    pub redis: bool,
}

impl ReadyNeeds {
    /// NATS and Redis: the default, for a service whose work fails without Redis.
    pub const NATS_AND_REDIS: Self = Self { redis: true };
    /// NATS only: the service degrades without Redis.
    pub const NATS_ONLY: Self = Self { redis: false };
}

/// What the health endpoints look at.
#[derive(Clone)]
pub struct HealthState {
    pub shutdown: Shutdown,
    pub nats: async_nats::Client,
    pub redis: Redis,
    pub metrics: PrometheusHandle,
    pub needs: ReadyNeeds,
    /// Whether the last readiness check reached Redis.
    redis_seen: Arc<AtomicBool>,
}

impl HealthState {
    pub fn new(
        shutdown: Shutdown,
        nats: async_nats::Client,
        redis: Redis,
        metrics: PrometheusHandle,
        needs: ReadyNeeds,
    ) -> Self {
        Self {
            shutdown,
            nats,
            redis,
            metrics,
            needs,
            redis_seen: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Sets `switchboard_redis_up` and logs when Redis comes or goes.
    fn record_redis(&self, up: bool) {
        metrics::gauge!(Metric::RedisUp.name()).set(if up { 1.0 } else { 0.0 });
        if self.redis_seen.swap(up, Ordering::Relaxed) == up {
            return;
        }
        match (up, self.needs.redis) {
            (true, _) => tracing::info!("redis reachable again"),
            (false, true) => tracing::warn!("redis unreachable: not ready"),
            (false, false) => tracing::warn!("redis unreachable: still ready, degraded"),
        }
    }
}

/// `/health`, `/ready`, `/metrics`.
pub fn router(state: HealthState) -> Router {
    Router::new()
        .route("/health", get(|| async { "ok" }))
        .route("/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .with_state(state)
}

async fn ready(State(state): State<HealthState>) -> impl IntoResponse {
    if state.shutdown.is_stopping() {
        return (StatusCode::SERVICE_UNAVAILABLE, "draining");
    }
    if state.nats.connection_state() != async_nats::connection::State::Connected {
        return (StatusCode::SERVICE_UNAVAILABLE, "nats unreachable");
    }
    let redis_up = matches!(
        tokio::time::timeout(Duration::from_secs(1), state.redis.ping()).await,
        Ok(Ok(()))
    );
    state.record_redis(redis_up);
    match (redis_up, state.needs.redis) {
        (true, _) => (StatusCode::OK, "ready"),
        (false, true) => (StatusCode::SERVICE_UNAVAILABLE, "redis unreachable"),
        (false, false) => (StatusCode::OK, "ready (degraded: redis unreachable)"),
    }
}

async fn render_metrics(State(state): State<HealthState>) -> impl IntoResponse {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4",
        )],
        state.metrics.render(),
    )
}

/// A running HTTP server.
#[derive(Debug)]
pub struct HttpServer {
    pub addr: SocketAddr,
    stop: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl HttpServer {
    /// Binds `addr` and serves `app` until [`HttpServer::stop`]. Runs metric upkeep.
    pub async fn start(
        addr: SocketAddr,
        app: Router,
        metrics: PrometheusHandle,
    ) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let stop = CancellationToken::new();
        let token = stop.clone();
        let task = tokio::spawn(async move {
            let upkeep = async {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    metrics.run_upkeep();
                }
            };
            // No Nagle: the ingress streams 20 ms media frames over these connections; with
            // the peer's delayed ACK, Nagle would hold small frames back ~40 ms.
            let listener = listener.tap_io(|tcp| {
                if let Err(error) = tcp.set_nodelay(true) {
                    tracing::debug!(%error, "cannot set TCP_NODELAY");
                }
            });
            let serve = axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(token.cancelled_owned());
            tokio::select! {
                result = serve => if let Err(error) = result {
                    tracing::error!(%error, "http server failed");
                },
                () = upkeep => {}
            }
        });
        tracing::info!(%addr, "http server listening");
        Ok(Self { addr, stop, task })
    }

    /// Stops accepting, finishes open requests.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}
