//! [`Runtime`]: everything a service needs, connected and checked at start-up.
//!
//! Consumes the shared config; produces the NATS client and JetStream context (topology
//! applied, server version checked), the Redis handle, the tenants, the shutdown handle
//! and the metrics recorder. Misconfiguration fails here, with a message naming what is
//! wrong, never mid-call. State: the handles.

use std::sync::Arc;

use async_nats::jetstream;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;

use crate::{
    config::RuntimeConfig,
    http::{self, HealthState, HttpServer, ReadyNeeds},
    metrics,
    nats::{self, NatsError},
    publisher::Publisher,
    redis::{Keys, Redis, RedisError},
    runner::{RunnerConfig, RunnerError, run_stage},
    shutdown::Shutdown,
    stage::Stage,
    tenants::{Tenants, TenantsError},
    topology::{Topology, TopologyError},
};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error(transparent)]
    Redis(#[from] RedisError),
    #[error(transparent)]
    Tenants(#[from] TenantsError),
    #[error(transparent)]
    Topology(#[from] TopologyError),
    #[error("cannot serve http on {addr}: {source}")]
    Http {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error(transparent)]
    Runner(#[from] RunnerError),
}

/// A service's connections and shared handles. Clone freely.
#[derive(Clone)]
pub struct Runtime {
    pub service: &'static str,
    pub config: RuntimeConfig,
    pub nats: async_nats::Client,
    pub js: jetstream::Context,
    pub publisher: Publisher,
    pub redis: Redis,
    pub tenants: Arc<Tenants>,
    pub topology: Arc<Topology>,
    pub shutdown: Shutdown,
    pub metrics: PrometheusHandle,
}

impl Runtime {
    /// Loads tenants, connects to NATS (version check, topology applied) and Redis.
    pub async fn start(service: &'static str, config: RuntimeConfig) -> Result<Self, StartError> {
        let metrics = metrics::install();
        let tenants = Arc::new(Tenants::load(&config.tenants_file)?);
        let topology = Arc::new(Topology::embedded()?);
        let (nats, js) = nats::connect_jetstream(&config.nats_url, service, &topology).await?;
        let keys = Keys::new(config.redis_key_prefix.clone());
        let redis = Redis::connect(config.redis_url.expose(), keys, config.session_ttl()).await?;
        let shutdown = Shutdown::new(config.drain_deadline());
        tracing::info!(
            service,
            nats_server = %nats.server_info().version,
            tenants = tenants.len(),
            "runtime started"
        );
        Ok(Self {
            service,
            config,
            publisher: Publisher::new(js.clone()),
            nats,
            js,
            redis,
            tenants,
            topology,
            shutdown,
            metrics,
        })
    }

    /// The state behind `/health`, `/ready` and `/metrics`, for a service that `needs` this.
    pub fn health(&self, needs: ReadyNeeds) -> HealthState {
        HealthState::new(
            self.shutdown.clone(),
            self.nats.clone(),
            self.redis.clone(),
            self.metrics.clone(),
            needs,
        )
    }

    /// Serves the health endpoints merged with `routes` on the configured address; `/ready`
    /// asks for what the service `needs`.
    pub async fn serve_http(
        &self,
        routes: Router,
        needs: ReadyNeeds,
    ) -> Result<HttpServer, StartError> {
        let app = routes.merge(http::router(self.health(needs)));
        let addr = self.config.http_addr;
        HttpServer::start(addr, app, self.metrics.clone())
            .await
            .map_err(|source| StartError::Http { addr, source })
    }

    /// Runs a stage until SIGTERM: health server up, consume, drain, stop.
    pub async fn run_stage<S: Stage>(
        self,
        stage: S,
        runner: RunnerConfig,
    ) -> Result<(), StartError> {
        self.shutdown.listen_for_signals();
        let http = self.serve_http(Router::new(), S::READY_NEEDS).await?;
        let result = run_stage(
            Arc::new(stage),
            &self.js,
            &self.topology,
            &self.shutdown,
            runner,
        )
        .await;
        http.stop().await;
        result.map_err(StartError::from)
    }
}
