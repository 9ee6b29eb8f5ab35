//! The ingress: the only Switchboard service Twilio talks to (ARCHITECTURE §2 steps 1, 2, 6, 7,
//! 8; PROTOCOLS §1–3).
//!
//! Consumes Twilio's incoming-call webhooks (`POST /twilio/voice`), status callbacks
//! (`POST /twilio/status`) and Media Streams WebSockets (`GET /twilio/media`), plus each live
//! call's bot audio (`audio.{t}.{sid}.out`) and STT `speech`/`partial` events from NATS.
//! Produces TwiML, the call's events (`webhook`, `start` and the STT lease, caller audio on
//! `audio.{t}.{sid}.in`, `dtmf`, `played`, `bargein`, `end`), paced bot audio, marks and
//! `clear`s to Twilio, and Redis writes (idempotency, rate limits, sessions, the barge-in
//! token, the admission record, the live-socket claim). A socket serves a call only with
//! the credential its webhook issued (`media::gate`). State: per socket, in its task (the
//! playback buffer, the audio batch); nothing that outlives a call. The routes are [`app`]; [`start`] serves them in-process (tests,
//! benchmarks) and [`run`] is the binary's life cycle, draining sockets on SIGTERM.

pub mod backend;
pub mod bargein;
pub mod call_clock;
pub mod config;
pub mod keypad;
pub mod media;
mod meters;
pub mod migrate;
pub mod playback;
mod stream_ended;
#[cfg(feature = "testing")]
pub mod testing;
pub mod turns;
mod webhook;

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use sb_runtime::{
    LiveTenants, Runtime, Shutdown, StartError,
    http::{HttpServer, ReadyNeeds},
};

pub use backend::{Admission, Backend, BackendError, LastHeard, Live, Outbound, OutboundCall};
pub use config::{ConfigError, IngressConfig, Settings};
pub use media::{Incoming, Outgoing};

/// Everything a request or socket handler needs. Cheap to clone.
pub struct IngressState<B: Backend> {
    inner: Arc<Shared<B>>,
}

/// The shared part of [`IngressState`].
pub struct Shared<B: Backend> {
    pub backend: B,
    pub tenants: Arc<LiveTenants>,
    pub settings: Settings,
    /// Sockets are tracked here; `abort` closes them at the drain deadline.
    pub shutdown: Shutdown,
    meters: meters::Meters,
    /// The process' ack checker, started on first use (it needs a runtime).
    acks: OnceLock<media::AckQueue<B::Ack>>,
}

impl<B: Backend> Clone for IngressState<B> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<B: Backend> std::ops::Deref for IngressState<B> {
    type Target = Shared<B>;
    fn deref(&self) -> &Shared<B> {
        &self.inner
    }
}

impl<B: Backend> IngressState<B> {
    pub fn new(
        backend: B,
        tenants: Arc<LiveTenants>,
        settings: Settings,
        shutdown: Shutdown,
    ) -> Self {
        Self {
            inner: Arc::new(Shared {
                backend,
                tenants,
                settings,
                shutdown,
                meters: meters::Meters::new(),
                acks: OnceLock::new(),
            }),
        }
    }

    pub(crate) fn meters(&self) -> &meters::Meters {
        &self.inner.meters
    }

    /// The ack checker of pipelined publishes.
    pub(crate) fn acks(&self) -> &media::AckQueue<B::Ack> {
        self.inner.acks.get_or_init(|| {
            media::AckQueue::spawn(
                self.settings.audio_acks_in_flight,
                self.inner.meters.acks_unchecked.clone(),
            )
        })
    }
}

/// The `direction` label of a call's metrics.
pub(crate) fn direction(outbound: bool) -> &'static str {
    if outbound { "outbound" } else { "inbound" }
}

/// The Twilio-facing routes (without `/health`, `/ready`, `/metrics`, which the runtime adds).
pub fn app<B: Backend>(state: IngressState<B>) -> Router {
    let settings = &state.settings;
    Router::new()
        .route(
            &settings.voice_path,
            post(webhook::handle::<B, sb_twilio::IncomingCall>),
        )
        .route(
            &settings.status_callback_path,
            post(webhook::handle::<B, sb_twilio::StatusCallback>),
        )
        .route(
            migrate::STREAM_ENDED_PATH,
            post(webhook::handle::<B, stream_ended::StreamEnded>),
        )
        .route(&settings.media_path, get(media::upgrade::<B>))
        .layer(DefaultBodyLimit::max(settings.max_form_bytes))
        .with_state(state)
}

/// Why the ingress could not start.
#[derive(Debug, thiserror::Error)]
pub enum IngressError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Start(#[from] StartError),
    #[error(transparent)]
    Backend(#[from] BackendError),
}

/// A running ingress (routes plus the runtime's health endpoints).
#[derive(Debug)]
pub struct Ingress {
    /// Where it listens (the runtime's `http_addr`; port 0 picks a free one).
    pub addr: SocketAddr,
    http: HttpServer,
    shutdown: Shutdown,
}

impl Ingress {
    /// Shutdown: `/ready` turns 503 at once; live sockets keep playing until they end or
    /// the drain deadline passes (then they are closed); then the server stops. Returns
    /// whether every socket ended inside the deadline.
    pub async fn shutdown(self) -> bool {
        self.shutdown.trigger();
        let drained = self.shutdown.drain().await;
        self.http.stop().await;
        drained
    }
}

/// Validates `config` and serves the ingress on the runtime's HTTP address.
pub async fn start(runtime: &Runtime, config: &IngressConfig) -> Result<Ingress, IngressError> {
    let settings = Settings::from_config(config)?;
    let token = config
        .twilio_auth_token
        .clone()
        .unwrap_or_else(|| sb_runtime::Secret::new(""));
    let twilio = migrate::TwilioCalls::new(&config.twilio_api_url, token)
        .map_err(|e| BackendError::Redirect(e.to_string()))?;
    let state = IngressState::new(
        Live::connect(runtime).await?.with_twilio(twilio),
        runtime.tenants.clone(),
        settings,
        runtime.shutdown.clone(),
    );
    // Ready without Redis: the ingress degrades instead. Webhooks admit the call when the
    // idempotency claim or the rate limit fails (ids derived from the call dedupe a retry),
    // the `end` claim fails open to the stream's dedup, a socket without a session still
    // streams, and a barge-in without a stored token still clears and publishes `bargein`.
    // Were it unready, a Redis restart would take every ingress out of the Service and
    // Twilio's webhooks would get 503.
    let http = runtime
        .serve_http(app(state), ReadyNeeds::NATS_ONLY)
        .await?;
    Ok(Ingress {
        addr: http.addr,
        http,
        shutdown: runtime.shutdown.clone(),
    })
}

/// The binary's life: serve until SIGTERM (or Ctrl-C), then drain and stop.
pub async fn run(runtime: Runtime, config: &IngressConfig) -> Result<(), IngressError> {
    runtime.shutdown.listen_for_signals();
    let ingress = start(&runtime, config).await?;
    tracing::info!(addr = %ingress.addr, "ingress listening");
    runtime.shutdown.stopping().cancelled().await;
    tracing::info!("draining media sockets");
    metrics::gauge!(sb_runtime::metrics::Metric::LifecycleDraining.name()).set(1.0);
    let drained = ingress.shutdown().await;
    tracing::info!(drained, "ingress stopped");
    Ok(())
}
