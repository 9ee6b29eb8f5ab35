//! Text-to-speech stand-in: Azure TTS REST (`POST /cognitiveservices/v1`, PROTOCOLS §7.1),
//! plus Deepgram's `POST /v1/speak` and OpenAI's `POST /v1/audio/speech` (§7.2) faces.
//!
//! Consumes SSML or JSON text requests with each vendor's auth and format headers; produces
//! audio in the requested format (raw or RIFF µ-law, 8/16/24 kHz PCM), streamed as a chunked
//! body after a configurable first-byte latency: espeak-ng speech when installed, else (or
//! when `deterministic`) a speech-like signal whose length follows the text. Faults (400,
//! 401, 429, 503) are injectable; `GET /sim/stats` counts requests so a test can prove a
//! cache hit never reached the provider, and Azure's requests by `<voice name>` and
//! `xml:lang` (which voice and language a tenant was spoken in). State: counters and fault
//! dice of one server.
//!
//! Code map: [`handlers`] checks the three faces' requests, [`respond`] answers them
//! (envelopes, faults, streamed audio), [`ssml`] parses Azure's body, [`format`] names
//! output formats and renders PCM into them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::SimServer;
pub use crate::support::ApiKey;
use crate::support::{FaultDice, Tally, announce_and_serve};

pub mod format;
mod handlers;
mod respond;
pub mod ssml;

/// Injected failures: shares of requests (0.0–1.0, summing to at most 1), picked
/// deterministically from `seed`, after the request passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// 400 in the face's envelope.
    pub bad_request_share: f64,
    /// 401 (as if the key had been revoked).
    pub unauthorized_share: f64,
    /// 429 with `retry-after`.
    pub rate_limit_share: f64,
    /// 503.
    pub unavailable_share: f64,
    /// `retry-after` sent with a 429, in seconds.
    pub retry_after_secs: u64,
    /// Seed of the fault sequence.
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            bad_request_share: 0.0,
            unauthorized_share: 0.0,
            rate_limit_share: 0.0,
            unavailable_share: 0.0,
            retry_after_secs: 1,
            seed: 0,
        }
    }
}

/// A fault picked for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fault {
    BadRequest,
    Unauthorized,
    RateLimit,
    Unavailable,
}

/// How the stand-in behaves. Tests build this directly.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free one.
    pub addr: SocketAddr,
    /// The key clients must present (Azure `Ocp-Apim-Subscription-Key` or Bearer, Deepgram
    /// `Token`, OpenAI Bearer); `None` accepts any non-empty key.
    pub api_key: Option<ApiKey>,
    /// Always use the speech-like signal, never espeak-ng (fast and byte-for-byte
    /// reproducible, for tests and benchmarks).
    pub deterministic: bool,
    /// Delay before the first audio byte (synthesis runs meanwhile).
    pub first_byte_ms: u64,
    /// Size of each body chunk (800 bytes = 100 ms of 8 kHz µ-law).
    pub chunk_bytes: usize,
    /// Pause between chunks (0 sends as fast as the client reads).
    pub chunk_interval_ms: u64,
    /// Injected failures.
    pub faults: Faults,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: None,
            deterministic: false,
            first_byte_ms: 0,
            chunk_bytes: 800,
            chunk_interval_ms: 0,
            faults: Faults::default(),
        }
    }
}

/// Counters served at `GET /sim/stats`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Every synthesis request on any face, whatever its outcome.
    pub requests: AtomicU64,
    /// Requests per face: Azure, Deepgram, OpenAI.
    pub by_face: [AtomicU64; 3],
    /// Requests refused (validation or injected faults).
    pub errors: AtomicU64,
    /// Characters of text synthesised.
    pub characters: AtomicU64,
    /// Audio bytes produced.
    pub audio_bytes: AtomicU64,
    /// Valid Azure requests per `<voice name>`.
    pub azure_voices: Tally,
    /// Valid Azure requests per `xml:lang` of `<speak>` (`-` when absent).
    pub azure_langs: Tally,
}

/// Shared by every request of one server.
#[derive(Debug)]
pub struct Shared {
    config: Config,
    stats: Stats,
    dice: FaultDice,
}

impl Shared {
    /// Server state for `config`.
    pub fn new(config: Config) -> Arc<Self> {
        let dice = FaultDice::new(config.faults.seed);
        Arc::new(Self {
            config,
            stats: Stats::default(),
            dice,
        })
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Counts a request on face `face` and returns its request id.
    fn begin(&self, face: usize) -> String {
        self.stats.requests.fetch_add(1, Ordering::Relaxed);
        if let Some(counter) = self.stats.by_face.get(face) {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        uuid::Uuid::now_v7().to_string()
    }

    fn pick_fault(&self) -> Option<Fault> {
        let f = &self.config.faults;
        let shares = [
            f.bad_request_share,
            f.unauthorized_share,
            f.rate_limit_share,
            f.unavailable_share,
        ];
        let kinds = [
            Fault::BadRequest,
            Fault::Unauthorized,
            Fault::RateLimit,
            Fault::Unavailable,
        ];
        self.dice
            .pick(&shares)
            .and_then(|index| kinds.get(index).copied())
    }
}

/// The routes: the three faces and `GET /sim/stats`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/cognitiveservices/v1", post(handlers::azure))
        .route("/v1/speak", post(handlers::deepgram_speak))
        .route("/v1/audio/speech", post(handlers::openai_speech))
        .route("/sim/stats", get(stats))
        .with_state(shared)
}

async fn stats(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    let s = &shared.stats;
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    axum::Json(json!({
        "requests": load(&s.requests),
        "azure": load(&s.by_face[0]),
        "deepgram": load(&s.by_face[1]),
        "openai": load(&s.by_face[2]),
        "errors": load(&s.errors),
        "characters": load(&s.characters),
        "audio_bytes": load(&s.audio_bytes),
        "azure_voices": s.azure_voices.counts(),
        "azure_langs": s.azure_langs.counts(),
    }))
}

/// Starts the stand-in in the background.
pub async fn spawn(config: Config) -> std::io::Result<SimServer> {
    let addr = config.addr;
    SimServer::spawn(addr, router(Shared::new(config))).await
}

/// `sim tts`: Azure TTS stand-in, with Deepgram /v1/speak and OpenAI /v1/audio/speech faces.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port, printed on the first line).
    #[arg(long, env = "SIM_TTS_ADDR", default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// API key clients must present (Azure Ocp-Apim-Subscription-Key or Bearer, Deepgram
    /// Token, OpenAI Bearer); any non-empty key is accepted when unset.
    #[arg(long, env = "SIM_TTS_API_KEY")]
    pub api_key: Option<ApiKey>,
    /// Never use espeak-ng: answer with the deterministic speech-like signal (fast,
    /// reproducible).
    #[arg(long)]
    pub deterministic: bool,
    /// Delay before the first audio byte, in ms (synthesis runs meanwhile).
    #[arg(long, default_value_t = 0)]
    pub first_byte_ms: u64,
    /// Bytes per body chunk (800 = 100 ms of 8 kHz mu-law).
    #[arg(long, default_value_t = 800)]
    pub chunk_bytes: usize,
    /// Pause between body chunks, in ms (0 = as fast as the client reads).
    #[arg(long, default_value_t = 0)]
    pub chunk_interval_ms: u64,
    /// Share of valid requests (0.0-1.0) answered 400.
    #[arg(long, default_value_t = 0.0)]
    pub bad_request_share: f64,
    /// Share of valid requests answered 401.
    #[arg(long, default_value_t = 0.0)]
    pub unauthorized_share: f64,
    /// Share of valid requests answered 429 with retry-after.
    #[arg(long, default_value_t = 0.0)]
    pub rate_limit_share: f64,
    /// Share of valid requests answered 503.
    #[arg(long, default_value_t = 0.0)]
    pub unavailable_share: f64,
    /// retry-after sent with an injected 429, in seconds.
    #[arg(long, default_value_t = 1)]
    pub retry_after_secs: u64,
    /// Seed of the deterministic fault sequence.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl Args {
    /// The server configuration these options describe.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let faults = Faults {
            bad_request_share: self.bad_request_share,
            unauthorized_share: self.unauthorized_share,
            rate_limit_share: self.rate_limit_share,
            unavailable_share: self.unavailable_share,
            retry_after_secs: self.retry_after_secs,
            seed: self.seed,
        };
        let shares = [
            faults.bad_request_share,
            faults.unauthorized_share,
            faults.rate_limit_share,
            faults.unavailable_share,
        ];
        if shares.iter().any(|s| !(0.0..=1.0).contains(s)) {
            anyhow::bail!("fault shares must be between 0.0 and 1.0");
        }
        Ok(Config {
            addr: self.addr,
            api_key: self.api_key,
            deterministic: self.deterministic,
            first_byte_ms: self.first_byte_ms,
            chunk_bytes: self.chunk_bytes,
            chunk_interval_ms: self.chunk_interval_ms,
            faults,
        })
    }
}

/// Runs the stand-in until Ctrl-C or SIGTERM; the first stdout line is `listening on …`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let server = spawn(args.into_config()?).await?;
    announce_and_serve(server).await
}
