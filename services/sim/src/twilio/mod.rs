//! Twilio REST stand-in: the Calls API (create, update, fetch) of `api.twilio.com`, so the
//! dialer and the ingress can place, hang up and redirect calls without Twilio.
//!
//! Consumes a [`Config`]; produces a loopback server ([`SimServer`]) answering
//! `POST /2010-04-01/Accounts/{AccountSid}/Calls.json`,
//! `POST|GET /2010-04-01/Accounts/{AccountSid}/Calls/{CallSid}.json` with Twilio's JSON and
//! error bodies (PROTOCOLS §4). State: [`TwilioState`] in memory — every call and every
//! request, for tests to assert on; optionally created calls are answered by the scripted
//! caller against Switchboard's ingress.

mod routes;
mod state;

use std::io::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context as _;

pub use routes::Answer;
pub use state::{CallRecord, RecordedRequest, TwilioState};

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
    /// Answer created calls with the scripted caller.
    pub answer: Option<Answer>,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("addr", &self.addr)
            .field("account_sid", &self.account_sid)
            .field("auth_token", &"<redacted>")
            .field("rate_limit_share", &self.rate_limit_share)
            .field("answer", &self.answer.is_some())
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
            answer: None,
        }
    }
}

/// Starts the stand-in; it stops when the returned [`SimServer`] is dropped.
pub async fn spawn(config: Config) -> std::io::Result<(SimServer, TwilioState)> {
    let state = TwilioState::new(
        config.account_sid,
        config.auth_token,
        config.rate_limit_share,
    );
    let server =
        SimServer::spawn(config.addr, routes::router(state.clone(), config.answer)).await?;
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
    /// Share of requests (0.0–1.0) answered with 429 / code 20429, spread evenly.
    #[arg(long, default_value_t = 0.0)]
    pub rate_limit_share: f64,
    /// Answer created calls by running the scripted caller against this ingress base URL.
    #[arg(long, requires = "answer_scenario")]
    pub answer_ingress: Option<String>,
    /// Scenario TOML the answering party plays.
    #[arg(long, requires = "answer_ingress")]
    pub answer_scenario: Option<PathBuf>,
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
    let answer = match (&args.answer_ingress, &args.answer_scenario) {
        (Some(ingress), Some(path)) => {
            let scenario =
                Scenario::load(path).with_context(|| format!("scenario {}", path.display()))?;
            let caller =
                CallerConfig::new(ingress.clone(), ingress.clone(), args.auth_token.clone());
            Some(Answer { caller, scenario })
        }
        _ => None,
    };
    let mut config = Config::new(args.account_sid, args.auth_token);
    config.addr = args.addr;
    config.rate_limit_share = args.rate_limit_share.clamp(0.0, 1.0);
    config.answer = answer;
    let (server, _state) = spawn(config).await.context("binding the twilio stand-in")?;
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
