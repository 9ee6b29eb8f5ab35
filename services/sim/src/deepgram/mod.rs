//! Deepgram live speech-to-text stand-in: `GET /v1/listen` (WebSocket), PROTOCOLS §5.
//!
//! Consumes a WebSocket of µ-law/linear16 audio plus `KeepAlive`/`Finalize`/`CloseStream`
//! text frames; produces `SpeechStarted`, interim and final `Results`, `UtteranceEnd` and
//! `Metadata` exactly as Deepgram frames them. Speech is found by a real energy VAD on the
//! received audio; the words come from a script (one line per utterance, per connection),
//! in any script (Devanagari as well as Latin). `GET /sim/stats` reports connection and
//! audio counters and the connections per `language` asked for. State: per-connection
//! sessions (see [`session`]) and the server's counters; nothing persists.
//!
//! Code map: [`params`] parses the query, [`input`] decodes audio and holds the script,
//! [`protocol`] builds messages, [`session`] is the per-stream state machine, [`socket`]
//! drives a WebSocket through it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::get;
use serde_json::json;

use crate::SimServer;
pub use crate::support::ApiKey;
use crate::support::{Tally, announce_and_serve, script_lines};

mod input;
pub mod params;
mod protocol;
mod session;
mod socket;

/// How the stand-in behaves. Tests build this directly.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free one.
    pub addr: SocketAddr,
    /// The key clients must present (`Authorization: Token <key>`); `None` accepts any
    /// non-empty key, as a test that does not care about auth wants.
    pub api_key: Option<ApiKey>,
    /// One transcript per utterance, in order, per connection (`sim_script` in the query
    /// overrides it for one connection). A line `interim|final` says `interim` in its
    /// interims and `final` in its final (a caller whose last words change the sentence).
    pub script: Vec<String>,
    /// Transcript once the script is exhausted; `None` repeats the last line.
    pub fallback_transcript: Option<String>,
    /// Extra latency before each final result, modelling provider processing time.
    pub final_delay_ms: u64,
    /// Close 1011 `NET-0001` after this long without a binary or text frame (Deepgram: 10 s).
    pub idle_timeout_ms: u64,
    /// Speech detection on the received audio. The hangover is taken from `endpointing`.
    pub vad: sb_audio::vad::Config,
    /// Silence that ends an utterance when the client sets `endpointing=false` (its final
    /// then has `speech_final:false`).
    pub segment_hangover_ms: u32,
    /// Send an empty final after this much audio without speech, as Deepgram does during
    /// long silences (0 disables).
    pub silence_final_ms: u64,
    /// Once the caller's voice has paused this long inside an utterance (before the
    /// endpointing's final), one interim with the whole line whose last word ends where
    /// the voice stopped: what lets Switchboard start an answer before the final (0
    /// disables).
    pub pause_interim_ms: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: None,
            script: Vec::new(),
            fallback_transcript: None,
            final_delay_ms: 0,
            idle_timeout_ms: 10_000,
            vad: sb_audio::vad::Config::default(),
            segment_hangover_ms: 1_000,
            silence_final_ms: 3_000,
            pause_interim_ms: DEFAULT_PAUSE_INTERIM_MS,
        }
    }
}

/// [`Config::pause_interim_ms`] by default: inside the 300 ms endpointing Switchboard asks
/// for, past its 150 ms preflight pause.
pub const DEFAULT_PAUSE_INTERIM_MS: u64 = 200;

/// Counters a test or a load run reads from `GET /sim/stats`.
#[derive(Debug, Default)]
pub struct Stats {
    /// WebSocket connections accepted.
    pub connections: AtomicU64,
    /// Connections currently open.
    pub active: AtomicI64,
    /// Audio bytes received over all connections.
    pub audio_bytes: AtomicU64,
    /// Connections accepted per `language` query parameter (`en` when absent), so a test
    /// sees which language a client asked for.
    pub languages: Tally,
}

/// Shared by every connection of one server.
#[derive(Debug)]
pub struct Shared {
    config: Config,
    stats: Stats,
}

impl Shared {
    /// Server state for `config`.
    pub fn new(config: Config) -> Arc<Self> {
        Arc::new(Self {
            config,
            stats: Stats::default(),
        })
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }
}

/// The routes: `GET /v1/listen` and `GET /sim/stats`.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/listen", get(socket::listen))
        .route("/sim/stats", get(stats))
        .with_state(shared)
}

async fn stats(State(shared): State<Arc<Shared>>) -> axum::Json<serde_json::Value> {
    let stats = &shared.stats;
    axum::Json(json!({
        "connections": stats.connections.load(Ordering::Relaxed),
        "active": stats.active.load(Ordering::Relaxed),
        "audio_bytes": stats.audio_bytes.load(Ordering::Relaxed),
        "languages": stats.languages.counts(),
    }))
}

/// Starts the stand-in in the background.
pub async fn spawn(config: Config) -> std::io::Result<SimServer> {
    let addr = config.addr;
    SimServer::spawn(addr, router(Shared::new(config))).await
}

/// `sim deepgram`: Deepgram live STT stand-in (`GET /v1/listen`).
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port, printed on the first line).
    #[arg(long, env = "SIM_DEEPGRAM_ADDR", default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// API key clients must send as `Authorization: Token <key>`; any non-empty key is
    /// accepted when unset.
    #[arg(long, env = "SIM_DEEPGRAM_API_KEY")]
    pub api_key: Option<ApiKey>,
    /// A transcript line for the next utterance; repeat for several (in order, per
    /// connection). `interim|final`: the interims say `interim`, the final says `final`.
    #[arg(long = "script", value_name = "TEXT")]
    pub script: Vec<String>,
    /// File with one transcript line per utterance (blank lines and `#` comments skipped),
    /// after any --script lines.
    #[arg(long, value_name = "PATH")]
    pub script_file: Option<PathBuf>,
    /// Transcript once the script is exhausted (default: repeat the last line).
    #[arg(long, value_name = "TEXT")]
    pub fallback_transcript: Option<String>,
    /// Extra latency before each final result, in ms (models provider processing time).
    #[arg(long, default_value_t = 0)]
    pub final_delay_ms: u64,
    /// Close with 1011 NET-0001 after this many ms without a frame (Deepgram: 10 s).
    #[arg(long, default_value_t = 10_000)]
    pub idle_timeout_ms: u64,
    /// A 20 ms frame at or above this RMS level (dBFS) counts as speech.
    #[arg(long, default_value_t = -40.0, allow_negative_numbers = true)]
    pub threshold_dbfs: f32,
    /// Voiced audio needed before speech starts, in ms (debounces clicks).
    #[arg(long, default_value_t = 60)]
    pub min_speech_ms: u32,
    /// Silence that ends an utterance when the client sends endpointing=false, in ms.
    #[arg(long, default_value_t = 1_000)]
    pub segment_hangover_ms: u32,
    /// Send an empty final after this many ms of audio without speech (0 = never).
    #[arg(long, default_value_t = 3_000)]
    pub silence_final_ms: u64,
    /// Once the voice has paused this many ms inside an utterance, an interim with the
    /// whole line (0 = never).
    #[arg(long, default_value_t = DEFAULT_PAUSE_INTERIM_MS)]
    pub pause_interim_ms: u64,
}

impl Args {
    /// The server configuration these options describe.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let script = script_lines(&self.script, self.script_file.as_deref())?;
        Ok(Config {
            addr: self.addr,
            api_key: self.api_key,
            script,
            fallback_transcript: self.fallback_transcript,
            final_delay_ms: self.final_delay_ms,
            idle_timeout_ms: self.idle_timeout_ms,
            vad: sb_audio::vad::Config {
                threshold_dbfs: self.threshold_dbfs,
                min_speech_ms: self.min_speech_ms,
                ..sb_audio::vad::Config::default()
            },
            segment_hangover_ms: self.segment_hangover_ms,
            silence_final_ms: self.silence_final_ms,
            pause_interim_ms: self.pause_interim_ms,
        })
    }
}

/// Runs the stand-in until Ctrl-C or SIGTERM; the first stdout line is `listening on …`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let server = spawn(args.into_config()?).await?;
    announce_and_serve(server).await
}
