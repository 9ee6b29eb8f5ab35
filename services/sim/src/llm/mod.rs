//! OpenAI-compatible chat-completions stand-in, framed as Groq frames it (PROTOCOLS §6).
//!
//! Consumes `POST /v1/chat/completions` and `/openai/v1/chat/completions` (Bearer auth, JSON
//! body); produces SSE streams (`stream:true`) or whole `chat.completion` objects with
//! deterministic replies: the configured script in order (or by conversation turn), else an
//! echo of the caller; a request ending in tool results is answered from them (their `say`
//! fields), and a `tool` message that answers no call is refused as OpenAI refuses it. Time-to-first-token, inter-token delay and faults (429, 500, 503,
//! cut streams, stalls, `x_groq.error`) are configurable; `GET /sim/stats` counts requests so
//! a test can prove the provider was, or was not, called, and how many it generated at
//! once, per model ([`in_flight`]). State: the reply cursor, fault dice and counters of one
//! server; nothing persists.
//!
//! Code map: [`handler`] serves a request, [`reply`] picks and tokenises the answer,
//! [`sse`] builds the JSON chunks, [`in_flight`] counts concurrent generations, [`support`]
//! holds what all stand-ins share.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use axum::Router;
use axum::extract::State;
use axum::routing::{get, post};
use http::{Method, StatusCode, Uri};
use serde_json::{Value, json};

use crate::SimServer;
use crate::support::{ApiKey, FaultDice, announce_and_serve, script_lines};
use in_flight::InFlight;

mod handler;
pub mod in_flight;
pub mod reply;
mod sse;

/// Injected failures. Shares are fractions of requests (0.0–1.0, summing to at most 1),
/// picked deterministically from `seed`.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// 429 with Groq's `rate_limit_exceeded` body and `retry-after`.
    pub rate_limit_share: f64,
    /// 500 `internal_server_error`.
    pub internal_error_share: f64,
    /// 503 over capacity.
    pub unavailable_share: f64,
    /// Stream dropped half-way: no finish chunk, no `[DONE]`.
    pub cut_share: f64,
    /// Stream pauses half-way for `stall_ms`, then completes.
    pub stall_share: f64,
    /// Stream ends half-way with a chunk carrying `x_groq.error`.
    pub groq_error_share: f64,
    /// Length of an injected stall.
    pub stall_ms: u64,
    /// `retry-after` sent with a 429, in seconds.
    pub retry_after_secs: u64,
    /// Seed of the fault sequence.
    pub seed: u64,
}

impl Default for Faults {
    fn default() -> Self {
        Self {
            rate_limit_share: 0.0,
            internal_error_share: 0.0,
            unavailable_share: 0.0,
            cut_share: 0.0,
            stall_share: 0.0,
            groq_error_share: 0.0,
            stall_ms: 5_000,
            retry_after_secs: 2,
            seed: 0,
        }
    }
}

/// A fault picked for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fault {
    RateLimit,
    Internal,
    Unavailable,
    Cut,
    Stall,
    GroqError,
}

/// How the stand-in behaves. Tests build this directly.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where to listen; port 0 picks a free one.
    pub addr: SocketAddr,
    /// The key clients must send as `Authorization: Bearer <key>`; `None` accepts any
    /// non-empty key.
    pub api_key: Option<ApiKey>,
    /// Replies in order, cycling; a line `tool:<name> <json args>` is a tool call. Empty:
    /// echo the last user message (`You said: <text>.`).
    pub replies: Vec<String>,
    /// Pick reply *n* for the caller's *n*-th utterance (counting user messages from 0), instead of the
    /// server-wide order (keeps concurrent conversations deterministic).
    pub reply_by_turn: bool,
    /// Delay before the first chunk.
    pub ttft_ms: u64,
    /// Delay between content chunks.
    pub inter_token_ms: u64,
    /// Injected failures.
    pub faults: Faults,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            api_key: None,
            replies: Vec::new(),
            reply_by_turn: false,
            ttft_ms: 0,
            inter_token_ms: 0,
            faults: Faults::default(),
        }
    }
}

/// Counters served at `GET /sim/stats`.
#[derive(Debug, Default)]
pub struct Stats {
    /// Every chat-completions request, whatever its outcome.
    pub requests: AtomicU64,
    /// Requests answered with a completion (streamed or whole).
    pub completions: AtomicU64,
    /// Refused with 401.
    pub unauthorized: AtomicU64,
    /// Refused with 400 (bad JSON, no model or messages).
    pub bad_requests: AtomicU64,
    /// Injected 429s.
    pub rate_limited: AtomicU64,
    /// Injected 500s and 503s.
    pub server_errors: AtomicU64,
    /// Injected connection drops.
    pub cut: AtomicU64,
    /// Injected stalls.
    pub stalled: AtomicU64,
    /// Injected `x_groq.error` endings.
    pub groq_errors: AtomicU64,
}

/// Shared by every request of one server.
#[derive(Debug)]
pub struct Shared {
    config: Config,
    stats: Stats,
    /// Requests being generated now, and the most at once (per model).
    in_flight: Arc<InFlight>,
    dice: FaultDice,
    next_reply: AtomicUsize,
    /// Feeds `{n}` in replies.
    unique: AtomicUsize,
}

impl Shared {
    /// Server state for `config`.
    pub fn new(config: Config) -> Arc<Self> {
        let dice = FaultDice::new(config.faults.seed);
        Arc::new(Self {
            config,
            stats: Stats::default(),
            in_flight: Arc::default(),
            dice,
            next_reply: AtomicUsize::new(0),
            unique: AtomicUsize::new(0),
        })
    }

    /// The counters.
    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    fn pick_fault(&self) -> Option<Fault> {
        let f = &self.config.faults;
        let shares = [
            f.rate_limit_share,
            f.internal_error_share,
            f.unavailable_share,
            f.cut_share,
            f.stall_share,
            f.groq_error_share,
        ];
        let kinds = [
            Fault::RateLimit,
            Fault::Internal,
            Fault::Unavailable,
            Fault::Cut,
            Fault::Stall,
            Fault::GroqError,
        ];
        self.dice
            .pick(&shares)
            .and_then(|index| kinds.get(index).copied())
    }

    fn next_reply(&self, messages: &[Value]) -> reply::Reply {
        let replies = &self.config.replies;
        if let Some(reply) = reply::Reply::after_tools(messages) {
            // With reply-by-turn, the turn's tool line may say what follows (` => text`).
            if self.config.reply_by_turn && !replies.is_empty() {
                let line = &replies[reply::user_turn(messages) % replies.len()];
                if let reply::Reply::Tools {
                    then: Some(then), ..
                } = reply::Reply::from_script(line)
                {
                    return reply::Reply::Text(then);
                }
            }
            return reply;
        }
        if replies.is_empty() {
            return reply::Reply::echo(messages);
        }
        let index = if self.config.reply_by_turn {
            reply::user_turn(messages)
        } else {
            self.next_reply.fetch_add(1, Ordering::Relaxed)
        };
        // `{n}` in a reply becomes a number unique to this request (varied answers, so a
        // load test's TTS requests miss the cache as real conversations do).
        let unique = self.unique.fetch_add(1, Ordering::Relaxed);
        let text = replies[index % replies.len()].replace("{n}", &unique.to_string());
        // `{system}` repeats the request's system prompt (which revision of a tenant's
        // prompt a call was answered with); `{user}` the caller's last message (what the
        // request carried, in whatever language it was said).
        let text = if text.contains("{system}") {
            text.replace("{system}", &reply::system_prompt(messages))
        } else {
            text
        };
        let text = if text.contains("{user}") {
            text.replace(
                "{user}",
                &reply::last_user_text(messages).unwrap_or_default(),
            )
        } else {
            text
        };
        reply::Reply::from_script(&text)
    }
}

/// The routes: both chat-completions paths, `GET /sim/stats`, and OpenAI's 404 envelope
/// for anything else.
pub fn router(shared: Arc<Shared>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(handler::chat))
        .route("/openai/v1/chat/completions", post(handler::chat))
        .route("/sim/stats", get(stats))
        .fallback(unknown_url)
        .with_state(shared)
}

async fn unknown_url(method: Method, uri: Uri) -> axum::response::Response {
    let message = format!(
        "Unknown request URL: {method} {}. Please check the URL for typos.",
        uri.path()
    );
    handler::error(
        StatusCode::NOT_FOUND,
        &message,
        "invalid_request_error",
        Some("unknown_url"),
        0,
    )
}

/// The counters, and `in_flight`, `max_in_flight` and `models` from [`InFlight::json`].
async fn stats(State(shared): State<Arc<Shared>>) -> axum::Json<Value> {
    let s = &shared.stats;
    let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
    let mut stats = json!({
        "requests": load(&s.requests),
        "completions": load(&s.completions),
        "unauthorized": load(&s.unauthorized),
        "bad_requests": load(&s.bad_requests),
        "rate_limited": load(&s.rate_limited),
        "server_errors": load(&s.server_errors),
        "cut": load(&s.cut),
        "stalled": load(&s.stalled),
        "groq_errors": load(&s.groq_errors),
    });
    if let (Value::Object(stats), Value::Object(in_flight)) = (&mut stats, shared.in_flight.json())
    {
        stats.extend(in_flight);
    }
    axum::Json(stats)
}

/// Starts the stand-in in the background.
pub async fn spawn(config: Config) -> std::io::Result<SimServer> {
    let addr = config.addr;
    SimServer::spawn(addr, router(Shared::new(config))).await
}

/// `sim llm`: OpenAI-compatible (Groq-framed) chat-completions stand-in.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Address to listen on (port 0 picks a free port, printed on the first line).
    #[arg(long, env = "SIM_LLM_ADDR", default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// API key clients must send as `Authorization: Bearer <key>`; any non-empty key is
    /// accepted when unset.
    #[arg(long, env = "SIM_LLM_API_KEY")]
    pub api_key: Option<ApiKey>,
    /// A reply, used in order and cycling; repeat for several. `{n}` in it becomes a number
    /// unique to the request, `{system}` the request's system prompt, `{user}` the caller's
    /// last message. `tool:<name> <json>` makes a
    /// tool call, e.g. `tool:end_call {"reason":"done"}`. Without replies the stand-in
    /// echoes: `You said: <last user message>.`
    #[arg(long = "reply", value_name = "TEXT")]
    pub replies: Vec<String>,
    /// File with one reply per line (blank lines and `#` comments skipped), after any --reply.
    #[arg(long, value_name = "PATH")]
    pub reply_file: Option<PathBuf>,
    /// Choose reply n for the caller's n-th utterance, counting user messages from 0 (deterministic under
    /// concurrency) instead of server-wide order.
    #[arg(long)]
    pub reply_by_turn: bool,
    /// Delay before the first chunk, in ms (time to first token).
    #[arg(long, default_value_t = 0)]
    pub ttft_ms: u64,
    /// Delay between content chunks, in ms.
    #[arg(long, default_value_t = 0)]
    pub inter_token_ms: u64,
    /// Share of requests (0.0-1.0) answered 429 rate_limit_exceeded with retry-after.
    #[arg(long, default_value_t = 0.0)]
    pub rate_limit_share: f64,
    /// Share of requests answered 500.
    #[arg(long, default_value_t = 0.0)]
    pub internal_error_share: f64,
    /// Share of requests answered 503.
    #[arg(long, default_value_t = 0.0)]
    pub unavailable_share: f64,
    /// Share of streams whose connection drops half-way (no finish chunk, no [DONE]).
    #[arg(long, default_value_t = 0.0)]
    pub cut_share: f64,
    /// Share of streams that stall half-way for --stall-ms, then complete.
    #[arg(long, default_value_t = 0.0)]
    pub stall_share: f64,
    /// Share of streams that end half-way with a chunk carrying x_groq.error.
    #[arg(long, default_value_t = 0.0)]
    pub groq_error_share: f64,
    /// Length of an injected stall, in ms.
    #[arg(long, default_value_t = 5_000)]
    pub stall_ms: u64,
    /// retry-after sent with an injected 429, in seconds.
    #[arg(long, default_value_t = 2)]
    pub retry_after_secs: u64,
    /// Seed of the deterministic fault sequence.
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
}

impl Args {
    /// The server configuration these options describe.
    pub fn into_config(self) -> anyhow::Result<Config> {
        let faults = Faults {
            rate_limit_share: self.rate_limit_share,
            internal_error_share: self.internal_error_share,
            unavailable_share: self.unavailable_share,
            cut_share: self.cut_share,
            stall_share: self.stall_share,
            groq_error_share: self.groq_error_share,
            stall_ms: self.stall_ms,
            retry_after_secs: self.retry_after_secs,
            seed: self.seed,
        };
        let shares = [
            faults.rate_limit_share,
            faults.internal_error_share,
            faults.unavailable_share,
        ];
        let stream_shares = [
            faults.cut_share,
            faults.stall_share,
            faults.groq_error_share,
        ];
        if shares
            .iter()
            .chain(&stream_shares)
            .any(|s| !(0.0..=1.0).contains(s))
        {
            anyhow::bail!("fault shares must be between 0.0 and 1.0");
        }
        Ok(Config {
            addr: self.addr,
            api_key: self.api_key,
            replies: script_lines(&self.replies, self.reply_file.as_deref())?,
            reply_by_turn: self.reply_by_turn,
            ttft_ms: self.ttft_ms,
            inter_token_ms: self.inter_token_ms,
            faults,
        })
    }
}

/// Runs the stand-in until Ctrl-C or SIGTERM; the first stdout line is `listening on …`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let server = spawn(args.into_config()?).await?;
    announce_and_serve(server).await
}
