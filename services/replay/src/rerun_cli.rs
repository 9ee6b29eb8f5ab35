//! The `redrive` command: one stage of a recorded call run again, isolated, its outputs
//! stored under a prefix and printed beside the recorded ones.
//!
//! Consumes the arguments ([`RedriveArgs`]); the call's control events from the live
//! `CALLS` (and, for the tts, its bot audio from `AUDIO`); the tenants file with the
//! overrides applied to the call's tenant; and the stage's provider: the LLM (`--llm-url`,
//! the key from the variable `--llm-key-env` names) for the agent, the tts service's
//! engine settings (`SB_TTS_PROVIDER`, `SB_AZURE_TTS_*`, …) for the tts. Runs the stage's
//! real code ([`crate::rerun`]) with in-memory call state, no telephony provider and no
//! tenant tools; produces the inputs as fed and the new outputs, all with fresh ids,
//! stored under the prefix (`P_CALLS` / `P_AUDIO`, through [`crate::transfer::import`]),
//! and the report ([`crate::rerun_diff`]) on the writer. Logs in as `ops` (it writes a
//! prefixed copy). State: none; nothing live is written, in NATS or in Redis.

use std::{
    io::Write,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use anyhow::{Context as _, anyhow, bail};
use async_nats::jetstream;
use bytes::Bytes;
use futures::{StreamExt as _, future::BoxFuture};
use sb_agent::{
    Agent, AgentConfig,
    openai::{ChatRequest, Llm, LlmError, LlmStream, OpenAi, Timeouts},
};
use sb_runtime::{
    LiveTenants, NatsConfig, Secret, Tenants,
    state::Sessions,
    testing::{MemoryCache, MemorySessions},
};
use sb_schemas::{
    CallSid, Envelope, TenantId, encode, now_micros,
    subject::{self, AUDIO_STREAM, CALLS_STREAM},
};
use sb_tts::{Tts, TtsConfig};

use crate::{
    AudioScope, CallLog, Prefix, Streams,
    format::{Export, Header, Record},
    rerun::{self, Fed, StageName},
    rerun_diff,
    streams::read_raw,
    transfer::{self, Imported},
};

/// `replay redrive`'s arguments.
#[derive(Debug, clap::Args)]
pub struct RedriveArgs {
    /// The call sid (CA + 32 hex digits), read from the live streams.
    pub call_sid: CallSid,
    /// The stage to run again: the agent on the call's `start` and transcripts, or the tts
    /// on its sentences.
    #[arg(long, value_enum)]
    pub stage: StageName,
    /// Replace the tenant's system prompt with this file's text.
    #[arg(long, value_name = "FILE")]
    pub prompt: Option<PathBuf>,
    /// Replace the tenant's voice.
    #[arg(long)]
    pub voice: Option<String>,
    /// Replace the tenant's LLM model.
    #[arg(long)]
    pub model: Option<String>,
    /// The tenants file the stage reads; the overrides apply to the call's tenant in it.
    #[arg(
        long,
        value_name = "FILE",
        env = "SB_TENANTS_FILE",
        default_value = "deploy/base/tenants.toml"
    )]
    pub tenants: PathBuf,
    /// Store the inputs as fed and the new outputs under this prefix (streams P_CALLS,
    /// P_AUDIO); default `redrive-` and the sid's first 10 characters.
    #[arg(long)]
    pub prefix: Option<Prefix>,
    /// The OpenAI-compatible API the agent calls (`{URL}/chat/completions`).
    #[arg(
        long,
        value_name = "URL",
        env = "SB_LLM_BASE_URL",
        default_value = "https://api.groq.com/openai/v1"
    )]
    pub llm_url: String,
    /// The environment variable holding the LLM's API key (not needed for a loopback URL).
    #[arg(long, value_name = "VAR", default_value = "SB_LLM_API_KEY")]
    pub llm_key_env: String,
    /// One JSON object per turn (fields: docs/REPLAY.md).
    #[arg(long)]
    pub json: bool,
    #[command(
        flatten,
        next_help_heading = "Speech engine (--stage tts; the tts service's settings)"
    )]
    pub tts: TtsConfig,
}

/// Runs `redrive`, reading the LLM key from the process environment.
pub async fn run<W: Write>(
    nats: &NatsConfig,
    args: RedriveArgs,
    out: &mut W,
) -> anyhow::Result<()> {
    run_with_env(nats, args, |var| std::env::var(var).ok(), out).await
}

/// [`run`], reading the LLM key through `env`.
pub async fn run_with_env<W: Write>(
    nats: &NatsConfig,
    args: RedriveArgs,
    env: impl Fn(&str) -> Option<String>,
    out: &mut W,
) -> anyhow::Result<()> {
    let (sid, stage) = (&args.call_sid, args.stage);
    let prefix = args.prefix.clone().unwrap_or_else(|| default_prefix(sid));
    let streams = Streams::prefixed(prefix.clone());
    let js = jetstream::new(sb_runtime::nats::connect(&nats.login("ops")).await?);
    let audio = match stage {
        StageName::Agent => AudioScope::None,
        StageName::Tts => AudioScope::Bot,
    };
    let log = CallLog::load_in(&js, &Streams::live(), sid, audio)
        .await
        .context("reading the live streams CALLS and AUDIO")?;
    log.not_erased()?;
    let inputs = log.envelopes().filter(|e| stage.takes(e)).count();
    let Some(tenant) = log.envelopes().find(|e| stage.takes(e)).map(|e| &e.tenant) else {
        bail!(
            "call {sid} has no {} event to run the {} on",
            stage.inputs(),
            stage.as_str()
        );
    };
    refuse_used(&js, &streams, sid).await?;
    let tenants = LiveTenants::fixed(tenants_with_overrides(&args, tenant)?);
    let fed = match stage {
        StageName::Agent => agent(&args, &env, &log, tenants).await?,
        StageName::Tts => tts(&args.tts, &log, tenants).await?,
    };
    let turns = rerun_diff::turns(stage, &log, &fed);
    let stored = store(&js, &streams, sid, tenant, &fed).await?;
    let stored = format!(
        "stored {} events under prefix {prefix} ({}): replay show {sid} --prefix {prefix}",
        stored.stored,
        stored.streams.join(", ")
    );
    if args.json {
        for turn in &turns {
            writeln!(out, "{}", rerun_diff::json_line(turn))?;
        }
        eprintln!("{stored}");
        return Ok(());
    }
    writeln!(
        out,
        "redrive of call {sid} ({tenant}): the {} on {} ({}){}\n",
        stage.as_str(),
        rerun_diff::plural(inputs, "recorded input"),
        stage.inputs(),
        overridden(&args)
    )?;
    write!(out, "{}", rerun_diff::render(stage, &turns))?;
    writeln!(out, "{stored}")?;
    Ok(())
}

/// `redrive-CA0123abcd`: the sid's first 10 characters.
fn default_prefix(sid: &CallSid) -> Prefix {
    let short = sid.as_str().get(..10).unwrap_or(sid.as_str());
    Prefix::parse(&format!("redrive-{short}")).expect("a call sid's characters make a prefix")
}

/// Refuses a prefix that holds the call already: two runs' outputs would mix.
async fn refuse_used(
    js: &jetstream::Context,
    streams: &Streams,
    sid: &CallSid,
) -> anyhow::Result<()> {
    let filter = subject::call_events_filter(sid);
    let stored = read_raw(js, streams, CALLS_STREAM, &filter).await?;
    if let Some(prefix) = streams.prefix()
        && !stored.is_empty()
    {
        bail!(
            "prefix {prefix} already holds {} events of call {sid} (an earlier redrive or \
             import): pass another --prefix",
            stored.len()
        );
    }
    Ok(())
}

/// The tenants file with `--prompt`, `--voice` and `--model` applied to `tenant`.
fn tenants_with_overrides(args: &RedriveArgs, tenant: &TenantId) -> anyhow::Result<Tenants> {
    let path = &args.tenants;
    let missing = || anyhow!("tenant {tenant} of the call is not in {}", path.display());
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the tenants file {}", path.display()))?;
    let mut file: toml::Table = text
        .parse()
        .with_context(|| format!("the tenants file {} is not TOML", path.display()))?;
    let mut overrides = Vec::new();
    if let Some(prompt) = &args.prompt {
        overrides.push(("system_prompt", read_prompt(prompt)?));
    }
    overrides.extend(args.voice.clone().map(|v| ("voice", v)));
    overrides.extend(args.model.clone().map(|m| ("llm_model", m)));
    if !overrides.is_empty() {
        let entry = file
            .get_mut("tenant")
            .and_then(toml::Value::as_array_mut)
            .and_then(|all| {
                all.iter_mut()
                    .filter_map(toml::Value::as_table_mut)
                    .find(|t| t.get("id").and_then(toml::Value::as_str) == Some(tenant.as_str()))
            })
            .ok_or_else(missing)?;
        for (field, value) in overrides {
            entry.insert(field.to_owned(), toml::Value::String(value));
        }
    }
    let text = toml::to_string(&file).context("cannot write the tenants back as TOML")?;
    let tenants = Tenants::parse(&text)
        .map_err(|e| anyhow!("{} (with the overrides): {e}", path.display()))?;
    tenants.by_id(tenant).ok_or_else(missing)?;
    Ok(tenants)
}

fn read_prompt(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the prompt {}", path.display()))?;
    match text.trim() {
        "" => bail!("the prompt {} is empty", path.display()),
        text => Ok(text.to_owned()),
    }
}

/// What the run changed, for the heading (`, with the system prompt from new.txt`).
fn overridden(args: &RedriveArgs) -> String {
    let mut what = Vec::new();
    if let Some(prompt) = &args.prompt {
        what.push(format!("the system prompt from {}", prompt.display()));
    }
    if let Some(voice) = &args.voice {
        what.push(format!("voice {voice}"));
    }
    if let Some(model) = &args.model {
        what.push(format!("model {model}"));
    }
    match what.is_empty() {
        true => String::new(),
        false => format!(", with {}", what.join(", ")),
    }
}

/// The agent on the call's inputs, calling the LLM; stops at an unreachable LLM.
async fn agent(
    args: &RedriveArgs,
    env: &impl Fn(&str) -> Option<String>,
    log: &CallLog,
    tenants: Arc<LiveTenants>,
) -> anyhow::Result<Vec<Fed>> {
    let mut config = AgentConfig::for_llm(args.llm_url.clone());
    config.llm_api_key = env(&args.llm_key_env)
        .filter(|key| !key.trim().is_empty())
        .map(Secret::new);
    config.validate().map_err(|e| {
        anyhow!(
            "{e} (here: --llm-url {}, the key read from ${})",
            args.llm_url,
            args.llm_key_env
        )
    })?;
    let timeouts = Timeouts {
        connect: Duration::from_millis(config.llm_connect_timeout_ms),
        first_token: Duration::from_millis(config.llm_first_token_timeout_ms),
        idle: Duration::from_millis(config.llm_idle_timeout_ms),
    };
    let client = OpenAi::new(&config.llm_base_url, config.llm_api_key.clone(), timeouts)
        .context("cannot build the LLM client")?;
    let llm = Arc::new(Watched {
        inner: client,
        seen: Arc::default(),
    });
    let url = format!("{}/chat/completions", args.llm_url.trim_end_matches('/'));
    let build = |sessions: Arc<dyn Sessions>| {
        // No telephony (nothing hangs up or transfers the recorded call) and no tenant
        // tools (nothing is booked twice): the model is offered neither.
        Agent::with_providers(sessions, tenants.clone(), llm.clone(), None, config.clone())
    };
    rerun::agent(log, build, |fed| {
        for error in llm.take() {
            if let LlmError::Connect(reason) = &error {
                bail!("cannot reach the LLM at {url} (--llm-url): {reason}");
            }
            fed.notes.push(format!("llm: {error}"));
        }
        Ok(())
    })
    .await
}

/// The tts on the call's sentences, with the engines `config` chooses.
async fn tts(
    config: &TtsConfig,
    log: &CallLog,
    tenants: Arc<LiveTenants>,
) -> anyhow::Result<Vec<Fed>> {
    let engines = config
        .engines()
        .map_err(|e| anyhow!("no speech engine: {e}"))?;
    let tts = Tts::with_providers(
        Arc::new(MemorySessions::default()),
        Arc::new(MemoryCache::default()),
        tenants,
        engines.primary,
        engines.backup,
        config.tts_chunk_bytes,
    )
    .with_engines(engines.others);
    tts.check_tenants().map_err(|e| anyhow!(e))?;
    Ok(rerun::tts(log, &tts).await)
}

/// Stores every input as fed and every output under `streams`' prefix.
async fn store(
    js: &jetstream::Context,
    streams: &Streams,
    sid: &CallSid,
    tenant: &TenantId,
    fed: &[Fed],
) -> anyhow::Result<Imported> {
    let records: Vec<Record> = fed
        .iter()
        .flat_map(|f| std::iter::once(&f.input).chain(&f.outputs))
        .map(record)
        .collect();
    let audio = records.iter().filter(|r| r.stream == AUDIO_STREAM).count() as u64;
    let header = Header {
        switchboard_version: env!("CARGO_PKG_VERSION").to_owned(),
        call_sid: sid.clone(),
        tenant: tenant.clone(),
        events: records.len() as u64,
        calls_events: records.len() as u64 - audio,
        audio_events: audio,
        exported_at: now_micros(),
    };
    transfer::import(js, streams, &Export { header, records })
        .await
        .context("storing the re-run under the prefix")
}

fn record(event: &Envelope) -> Record {
    Record {
        stream: match event.kind().is_audio() {
            true => AUDIO_STREAM,
            false => CALLS_STREAM,
        },
        subject: subject::for_envelope(event),
        msg_id: Some(event.id.to_string()),
        payload: Bytes::from(encode(event)),
        event: event.clone(),
    }
}

/// The LLM client, keeping the errors it saw: the agent covers a failed request with its
/// fallback phrase, and redrive reports it (and stops at an unreachable LLM).
struct Watched {
    inner: OpenAi,
    seen: Arc<Mutex<Vec<LlmError>>>,
}

impl Watched {
    /// The errors since the last call.
    fn take(&self) -> Vec<LlmError> {
        std::mem::take(&mut *lock(&self.seen))
    }
}

impl Llm for Watched {
    fn stream<'a>(
        &'a self,
        request: &'a ChatRequest,
    ) -> BoxFuture<'a, Result<LlmStream, LlmError>> {
        Box::pin(async move {
            match self.inner.stream(request).await {
                Ok(stream) => {
                    let seen = self.seen.clone();
                    let watched = stream.inspect(move |item| {
                        if let Err(error) = item {
                            lock(&seen).push(error.clone());
                        }
                    });
                    Ok(Box::pin(watched) as LlmStream)
                }
                Err(error) => {
                    lock(&self.seen).push(error.clone());
                    Err(error)
                }
            }
        })
    }
}

/// A poisoned lock only means a panic elsewhere; the list is still usable.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}
