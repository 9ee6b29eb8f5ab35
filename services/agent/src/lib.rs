//! The agent stage: answers the caller with a streaming LLM, sentence by sentence.
//!
//! Consumes the durable consumer `agent` on `CALLS` (`start`, `answered_by`,
//! `transcript`, `preflight`, `keypad`, `silence`, `max_duration`, `bargein`, `played`,
//! `end`); produces `token` and `sentence` events of the same call and turn: the tenant's
//! greeting on `start` (turn 0), an answer per final transcript or keypad entry (started
//! ahead on a preflight, kept aside until its transcript confirms it), a prompt or goodbye on
//! the caller's silence and the call's length, the fallback phrase whenever the LLM fails
//! or is too slow (the caller never hears silence). It stops generating the moment the
//! caller barges in (the token in Redis is checked before every event), stores the
//! interrupted answer truncated to what was heard, and carries out the model's `end_call` /
//! `transfer_call` (and a keypad transfer, a goodbye's hang-up) once the last sentence was
//! played. State: none of its own; the conversation lives in the session (Redis in
//! production, behind `sb_runtime::state::Sessions`; ARCHITECTURE §6), the concurrency limits
//! ([`limits`]) in Redis too, shared by every replica (in process memory when Redis fails,
//! or for an agent built without it).
//!
//! Code map: [`answer`] (a transcript → an answer), [`preflight`] (an answer started on a
//! stable interim, confirmed by its transcript), [`prompts`] (keypad entries, silence,
//! the call's length), [`speaker`] (events with barge-in checks), [`splitter`]
//! (sentences), [`openai`] + [`sse`] (the LLM client), [`limits`] + [`permit`] + [`aimd`]
//! (concurrency), [`actions`] + [`telephony`] (built-in tools), [`tool_round`] + [`tools`]
//! (the tenant's own tools over HTTP), [`events`] (start, bargein, played, end), [`config`].

pub mod actions;
pub mod aimd;
mod answer;
pub mod config;
mod events;
pub mod limits;
pub mod openai;
pub mod permit;
mod preflight;
mod prompts;
pub mod speaker;
pub mod splitter;
pub mod sse;
pub mod telephony;
pub mod tool_round;
pub mod tools;

use std::sync::Arc;
use std::time::Duration;

use sb_runtime::http::ReadyNeeds;
use sb_runtime::redis::RedisError;
use sb_runtime::session_log::LoggedSessions;
use sb_runtime::state::Sessions;
use sb_runtime::{Emitter, LiveTenants, Runtime, Stage, StageError, StageMain};
use sb_schemas::{Body, Envelope, Kind};

pub use config::AgentConfig;

use crate::limits::Limits;
use crate::openai::{Llm, OpenAi, Timeouts};
use crate::telephony::{Telephony, TwilioRest};
use crate::tools::{TenantTools, ToolsError};

/// Why the agent cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("{0}")]
    Config(String),
    #[error("cannot build the http client: {0}")]
    Http(#[from] reqwest::Error),
    #[error("{0}")]
    Tools(#[from] ToolsError),
}

/// The agent stage. Build it with [`Agent::new`] (real providers from the config) or
/// [`Agent::with_providers`].
pub struct Agent {
    sessions: Arc<dyn Sessions>,
    tenants: Arc<LiveTenants>,
    llm: Arc<dyn Llm>,
    telephony: Option<Arc<dyn Telephony>>,
    /// The tenants' own tools (`None`: every tenant tool call ends in the fallback).
    tools: Option<TenantTools>,
    limits: Limits,
    config: AgentConfig,
}

impl Agent {
    /// The agent with the OpenAI-compatible client and, when configured, Twilio's REST API;
    /// the tenants' signing secrets come from the process environment.
    pub fn new(runtime: &Runtime, config: AgentConfig) -> Result<Self, SetupError> {
        Self::new_with_env(runtime, config, |var| std::env::var(var).ok())
    }

    /// [`Agent::new`], reading the tenants' signing secrets through `env`.
    pub fn new_with_env(
        runtime: &Runtime,
        config: AgentConfig,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, SetupError> {
        config.validate().map_err(SetupError::Config)?;
        let timeouts = Timeouts {
            connect: Duration::from_millis(config.llm_connect_timeout_ms),
            first_token: Duration::from_millis(config.llm_first_token_timeout_ms),
            idle: Duration::from_millis(config.llm_idle_timeout_ms),
        };
        let llm = OpenAi::new(&config.llm_base_url, config.llm_api_key.clone(), timeouts)?;
        let telephony: Option<Arc<dyn Telephony>> = match config.twilio_rest() {
            Ok(Some((sid, auth))) => Some(Arc::new(TwilioRest::new(
                &config.twilio_api_url,
                sid,
                auth,
                Duration::from_millis(config.twilio_timeout_ms),
            )?)),
            Ok(None) => {
                tracing::warn!("no twilio credentials: end_call and transfer_call are off");
                None
            }
            Err(error) => return Err(SetupError::Config(error)),
        };
        let limits = Limits::shared(
            &runtime.tenants.tenants(),
            config.aimd_bounds(),
            Arc::new(runtime.redis.clone()),
            config.shared_limits(),
        );
        let tools = TenantTools::new(&runtime.tenants.tenants(), env)?;
        let agent = Self::with_providers(
            Arc::new(LoggedSessions(runtime.session_log())),
            runtime.tenants.clone(),
            Arc::new(llm),
            telephony,
            config,
        );
        Ok(agent.with_limits(limits).with_tools(tools))
    }

    /// The agent with the given providers (tests, other LLMs) and limits of this process
    /// alone ([`Agent::with_limits`] replaces them).
    pub fn with_providers(
        sessions: Arc<dyn Sessions>,
        tenants: Arc<LiveTenants>,
        llm: Arc<dyn Llm>,
        telephony: Option<Arc<dyn Telephony>>,
        config: AgentConfig,
    ) -> Self {
        Self {
            limits: Limits::new(&tenants.tenants(), config.aimd_bounds()),
            sessions,
            tenants,
            llm,
            telephony,
            tools: None,
            config,
        }
    }

    /// The agent calling the tenants' tools through `tools`.
    pub fn with_tools(mut self, tools: TenantTools) -> Self {
        self.tools = Some(tools);
        self
    }

    /// The agent with these limits (e.g. [`Limits::shared`] over a store of a test's own).
    pub fn with_limits(mut self, limits: Limits) -> Self {
        self.limits = limits;
        self
    }

    /// The concurrency limits (the AIMD limit is observable here).
    pub fn limits(&self) -> &Limits {
        &self.limits
    }
}

impl Stage for Agent {
    const CONSUMER: &'static str = "agent";
    /// The agent's latency is to its first sentence (what the tts can start on).
    const FIRST_OUTPUT: Option<Kind> = Some(Kind::Sentence);
    /// Redis is needed: every answer starts from the call's session (conversation, turn),
    /// and a failed read or write is retried, then dead-lettered (`redis_retry`).
    const READY_NEEDS: ReadyNeeds = ReadyNeeds::NATS_AND_REDIS;

    fn sessions(&self) -> Option<Arc<dyn Sessions>> {
        Some(self.sessions.clone())
    }

    async fn handle(&self, input: Envelope, out: &mut Emitter) -> Result<(), StageError> {
        // The tenant as the call started with it (a live change applies to the next call).
        let tenant = self.tenants.for_call(&input).await?;
        // The runner's span already names the tenant, call and turn.
        match &input.body {
            Body::Start(_) => self.greet(&input, &tenant, out).await,
            Body::AnsweredBy(answered) => self.answered_by(&input, answered, &tenant, out).await,
            Body::Transcript(transcript) => self.answer(&input, transcript, &tenant, out).await,
            Body::Preflight(preflight) => self.preflight(&input, preflight, &tenant, out).await,
            Body::BargeIn(bargein) => self.barged_in(&input, bargein, out).await,
            Body::Played(played) => self.played(&input, played).await,
            Body::End(_) => self.ended(&input).await,
            Body::Keypad(keypad) => self.keypad(&input, keypad, &tenant, out).await,
            Body::Silence(silence) => self.silence(&input, silence, &tenant, out).await,
            Body::MaxDuration(max) => self.max_duration(&input, max, &tenant, out).await,
            other => Err(StageError::reject(
                "unexpected_kind",
                format!("the agent does not handle {}", other.kind().as_str()),
            )),
        }
    }
}

impl StageMain for Agent {
    type Config = AgentConfig;
    const ABOUT: &'static str =
        "Switchboard agent: answers callers with a streaming LLM, sentence by sentence.";

    fn check(config: &AgentConfig) -> Result<(), String> {
        config.validate()
    }

    async fn build(runtime: &Runtime, config: AgentConfig) -> Result<Self, String> {
        Agent::new(runtime, config).map_err(|e| e.to_string())
    }
}

/// A Redis failure: retried (the runner backs off), never a crash.
fn redis_retry(error: RedisError) -> StageError {
    StageError::retry("redis", error)
}
