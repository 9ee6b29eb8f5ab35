//! Twilio REST stand-in: the Calls API (create, list, update, fetch) of `api.twilio.com`,
//! so the dialer and the ingress can place, list, hang up and redirect calls without Twilio.
//!
//! Consumes a [`Config`]; produces a loopback server ([`SimServer`]) answering
//! `POST|GET /2010-04-01/Accounts/{AccountSid}/Calls.json`,
//! `POST|GET /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with Twilio's JSON and
//! error bodies (PROTOCOLS §4). State: [`TwilioState`] in memory — every call, its status
//! history and callbacks, and every request, for tests to assert on.
//!
//! Calls live only when [`Config::callees`] or [`Config::answer`] is set: then each created
//! call goes `initiated` → `ringing` → its [`Callee`]'s outcome in the background, with
//! signed status and AMD callbacks ([`life`]); a human or voicemail callee is played by the
//! scripted caller against the ingress of `answer`, or, without one, the call simply lasts
//! (a human its scenario's spoken length, a voicemail until hung up or `max_call`).
//! Without either, calls stay `queued` until updated, as before.

mod callback;
mod callee;
mod life;
mod record;
mod routes;
mod state;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;

use std::time::Duration;

pub use callee::{Callee, Callees, CalleesError, DEFAULT_GREETING, empty_scenario, spoken_length};
pub use record::{CallRecord, CallbackKind, CallbackRecord, RecordedRequest, StatusChange};
pub use routes::Answer;
pub use state::TwilioState;

use crate::SimServer;
use crate::caller::{CallerConfig, DEFAULT_ACCOUNT_SID, Scenario};

/// How the stand-in behaves.
#[derive(Clone)]
pub struct Config {
    /// Loopback address to bind; port 0 picks a free one.
    pub addr: SocketAddr,
    /// The only account served (`AC…`): basic-auth user and path segment.
    pub account_sid: String,
    /// Basic-auth password.
    pub auth_token: String,
    /// Share (0.0–1.0) of requests answered 429 / 20429, spread evenly.
    pub rate_limit_share: f64,
    /// Share (0.0–1.0) of creates answered 500 / 20500, spread evenly.
    pub server_error_share: f64,
    /// Answer created calls with the scripted caller against this ingress; also the
    /// default callee (a human playing its scenario) when `callees` is not set.
    pub answer: Option<Answer>,
    /// Who picks up, per number. Setting this (or `answer`) makes calls live.
    pub callees: Option<Callees>,
    pub timing: Timing,
}

/// How long the simulated network takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// How long a `NoAnswer` callee rings before `no-answer` (Twilio rings `Timeout`).
    pub ring: Duration,
    /// How long AMD takes to recognise a human (or, with `Enable`, a machine).
    pub amd_delay: Duration,
    /// The longest an answered call lasts when nobody hangs up (a voicemail records until
    /// then), then it completes anyway.
    pub max_call: Duration,
}

impl Default for Timing {
    fn default() -> Self {
        Self {
            ring: Duration::from_millis(300),
            amd_delay: Duration::from_millis(800),
            max_call: Duration::from_secs(120),
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .field("rate_limit_share", &self.rate_limit_share)
            .field("server_error_share", &self.server_error_share)
            .field("answer", &self.answer.is_some())
            .field("callees", &self.callees)
            .field("timing", &self.timing)
            .finish()
    }
}

impl Config {
    /// A stand-in on a free loopback port for `account_sid:auth_token`, no 429s, no answering.
    pub fn new(account_sid: impl Into<String>, auth_token: impl Into<String>) -> Self {
        Self {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            account_sid: account_sid.into(),
            auth_token: auth_token.into(),
            rate_limit_share: 0.0,
            server_error_share: 0.0,
            answer: None,
            callees: None,
            timing: Timing::default(),
        }
    }
}

/// Starts the stand-in; it stops when the returned [`SimServer`] is dropped.
pub async fn spawn(config: Config) -> std::io::Result<(SimServer, TwilioState)> {
    let state = TwilioState::new(
        config.account_sid,
        config.auth_token.clone(),
        config.rate_limit_share,
    );
    state.set_server_error_share(config.server_error_share);
    let callees = match (config.callees, &config.answer) {
        (Some(callees), _) => Some(callees),
        (None, Some(answer)) => Some(Callees::new(Callee::Human(answer.scenario.clone()))),
        (None, None) => None,
    };
    let own_url = Arc::new(OnceLock::new());
    let lives = callees.map(|callees| {
        let ingress = config.answer.as_ref().map(|a| a.caller.ingress_url.clone());
        let settings = life::Settings {
            delivery: callback::Delivery::new(config.auth_token, ingress),
            answer: config.answer,
            timing: config.timing,
            own_url: own_url.clone(),
        };
        (settings, callees)
    });
    let server = SimServer::spawn(config.addr, routes::router(state.clone(), lives)).await?;
    // Answered calls register their media line here, so updates (a redirect, a hang-up)
    // reach them as they reach the callers a test places itself.
    let _ = own_url.set(format!("http://{}", server.addr()));
    Ok((server, state))
}

/// Command-line options of `sim twilio`.
#[derive(clap::Args)]
pub struct Args {
    /// Address to listen on (loopback; port 0 picks a free port, printed on the first line).
    #[arg(long, env = "SIM_TWILIO_ADDR", default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// The account served: basic-auth user name and `{AccountSid}` in the paths.
    #[arg(long, env = "TWILIO_ACCOUNT_SID", default_value = DEFAULT_ACCOUNT_SID)]
    pub account_sid: String,
    /// The account's auth token: basic-auth password, and the key signing webhooks of answered calls.
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub auth_token: String,
    /// `SK…:secret`: an API key the REST API also accepts (Basic user and password).
    #[arg(long = "api-key", value_name = "SID:SECRET")]
    pub api_keys: Vec<String>,
    /// Share of requests (0.0–1.0) answered with 429 / code 20429, spread evenly.
    #[arg(long, default_value_t = 0.0)]
    pub rate_limit_share: f64,
    /// Answer created calls by running the scripted caller against this ingress base URL.
    #[arg(long)]
    pub answer_ingress: Option<String>,
    /// Scenario TOML the answering party plays (the default human callee).
    #[arg(long)]
    pub answer_scenario: Option<PathBuf>,
    /// Callee scripts per number (TOML; format in services/sim/src/twilio/callee.rs,
    /// example services/sim/examples/callees.toml). Makes created calls live.
    #[arg(long)]
    pub callees: Option<PathBuf>,
    /// Share of creates (0.0–1.0) answered with 500 / code 20500, spread evenly.
    #[arg(long, default_value_t = 0.0)]
    pub server_error_share: f64,
    /// How long a no-answer callee rings, milliseconds.
    #[arg(long, default_value_t = 300)]
    pub ring_ms: u64,
    /// How long answering machine detection takes, milliseconds.
    #[arg(long, default_value_t = 800)]
    pub amd_delay_ms: u64,
    /// The longest an answered call lasts when nobody hangs up, milliseconds.
    #[arg(long, default_value_t = 120_000)]
    pub max_call_ms: u64,
}

impl std::fmt::Debug for Args {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Args")
            .field("addr", &self.addr)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .field("rate_limit_share", &self.rate_limit_share)
            .finish_non_exhaustive()
    }
}

/// `sim twilio`: serves until Ctrl-C or SIGTERM. First stdout line: `listening on <url>`.
pub async fn run(args: Args) -> anyhow::Result<()> {
    let scenario = match &args.answer_scenario {
        Some(path) => {
            Scenario::load(path).with_context(|| format!("scenario {}", path.display()))?
        }
        None => empty_scenario(),
    };
    let callees = match &args.callees {
        Some(path) => Some(
            Callees::load(path, &scenario)
                .with_context(|| format!("callees {}", path.display()))?,
        ),
        None => None,
    };
    let answer = args.answer_ingress.as_ref().map(|ingress| {
        let caller = CallerConfig::new(ingress.clone(), ingress.clone(), args.auth_token.clone());
        Answer { caller, scenario }
    });
    let mut config = Config::new(args.account_sid, args.auth_token);
    config.addr = args.addr;
    config.rate_limit_share = args.rate_limit_share.clamp(0.0, 1.0);
    config.server_error_share = args.server_error_share.clamp(0.0, 1.0);
    config.answer = answer;
    config.callees = callees;
    config.timing = Timing {
        ring: Duration::from_millis(args.ring_ms),
        amd_delay: Duration::from_millis(args.amd_delay_ms),
        max_call: Duration::from_millis(args.max_call_ms),
    };
    let (server, state) = spawn(config).await.context("binding the twilio stand-in")?;
    for key in &args.api_keys {
        let (sid, secret) = key
            .split_once(':')
            .context("--api-key must be SID:SECRET")?;
        state.add_api_key(sid, secret);
    }
    println!("listening on {}", server.http_url());
    std::io::stdout().flush()?;
    shutdown_signal().await?;
    server.stop().await;
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
async fn shutdown_signal() -> std::io::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result,
        _ = terminate.recv() => Ok(()),
    }
}
