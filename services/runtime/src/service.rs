//! [`Runtime`]: everything a service needs, connected and checked at start-up.
//!
//! Consumes the shared config; produces the NATS client (logged in as the service's user) and JetStream
//! context (its streams found, server version checked), the Redis handles (state; the TTS cache's own instance), the tenants, the shutdown handle
//! and the metrics recorder. Misconfiguration fails here, with a message naming what is
//! wrong, never mid-call. State: the handles.

use std::sync::Arc;

use async_nats::jetstream;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use sb_schemas::roles::Role;

use crate::{
    config::RuntimeConfig,
    http::{self, HealthState, HttpServer, ReadyNeeds},
    metrics,
    nats::{self, NatsError},
    publisher::Publisher,
    redis::{Keys, Redis, RedisError},
    runner::{RunnerConfig, RunnerError, run_stage_with},
    shutdown::Shutdown,
    stage::Stage,
    tenants::{LiveTenants, Tenants, TenantsError},
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
    /// The TTS cache's Redis (`SB_REDIS_CACHE_URL`), or `redis` when it has none of its own.
    pub cache: Redis,
    /// The tenants, following the live `TENANTS` bucket.
    pub tenants: Arc<LiveTenants>,
    pub topology: Arc<Topology>,
    pub shutdown: Shutdown,
    pub metrics: PrometheusHandle,
}

impl Runtime {
    /// Loads tenants, connects to NATS (its user, version check, its streams found) and Redis.
    pub async fn start(service: &'static str, config: RuntimeConfig) -> Result<Self, StartError> {
        let metrics = metrics::install();
        let file = Tenants::load(&config.tenants_file)?;
        let topology = Arc::new(Topology::embedded()?);
        let login = config.nats.login(service);
        // A service checks the streams its role needs; an unknown name (a test, a tool) as ops.
        let role = login
            .user
            .as_ref()
            .and_then(|(user, _)| Role::parse(user))
            .or_else(|| Role::parse(service))
            .unwrap_or(Role::Ops);
        let (nats, js) = nats::connect_service(&login, role, &topology).await?;
        let keys = Keys::new(config.redis_key_prefix.clone());
        let redis = Redis::connect(
            config.redis_url.expose(),
            keys.clone(),
            config.session_ttl(),
        )
        .await?;
        let cache = match &config.redis_cache_url {
            Some(url) => Redis::connect(url.expose(), keys, config.session_ttl()).await?,
            None => redis.clone(),
        };
        let tenants = LiveTenants::follow(&js, redis.clone(), file).await?;
        let shutdown = Shutdown::new(config.drain_deadline());
        tracing::info!(
            service,
            nats_server = %nats.server_info().version,
            tenants = tenants.tenants().len(),
            tenants_revision = tenants.revision(),
            "runtime started"
        );
        Ok(Self {
            service,
            config,
            publisher: Publisher::new(js.clone()).with_retention(tenants.clone()),
            nats,
            js,
            redis,
            cache,
            tenants,
            topology,
            shutdown,
            metrics,
        })
    }

    /// Rebuilds this service's lost sessions from the call's events.
    pub fn session_log(&self) -> crate::session_log::SessionLog {
        crate::session_log::SessionLog {
            js: self.js.clone(),
            redis: self.redis.clone(),
            service: self.service,
        }
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
        let result = run_stage_with(
            Arc::new(stage),
            self.publisher.clone(),
            &self.topology,
            &self.shutdown,
            runner,
        )
        .await;
        http.stop().await;
        result.map_err(StartError::from)
    }
}
