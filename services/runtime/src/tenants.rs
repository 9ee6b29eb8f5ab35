//! Tenant configuration (ARCHITECTURE §2a): who the customers are and how each is served.
//!
//! Consumes `tenants.toml` (a ConfigMap in Kubernetes) or a revision of it from the live
//! `TENANTS` bucket ([`live`]); produces validated [`Tenant`]s, looked up by id, by the
//! called number or by an API key ([`keys`]). Errors name the tenant and the field.
//! State: one parsed revision, immutable ([`LiveTenants`] swaps whole revisions). Tests
//! write the file with `testing::TenantToml` (cargo feature `testing`).

use std::{collections::BTreeMap, collections::HashMap, path::Path, sync::Arc};

use sb_schemas::TenantId;
use serde::Deserialize;

pub mod backchannel;
pub mod keys;
mod language;
mod live;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
mod tools;
mod turns;

pub use language::{DEFAULT_STT_LANGUAGE, Language, default_sentence_ends};
pub use live::{KEPT_REVISIONS, LiveTenants, Snapshot};
pub use tools::{
    BUILTIN_TOOLS, BuiltinTools, DEFAULT_TOOL_TIMEOUT_MS, TenantTool, TenantWebhooks,
    WEBHOOK_EVENTS,
};
pub use turns::{KEYS, KeyAction, Keypad, TurnTaking};

#[derive(Debug, thiserror::Error)]
#[error("{path}: {message}")]
pub struct TenantsError {
    pub path: String,
    pub message: String,
}

/// Service levels: LLM concurrency and webhook rate limit.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tier {
    /// Concurrent LLM requests for one tenant.
    pub llm_concurrency: u32,
    /// Incoming-call webhooks admitted per window.
    pub webhook_rate_limit: u32,
    #[serde(default = "default_window")]
    pub rate_window_secs: u64,
    /// Outbound campaign calls of one tenant in flight at once, over all dialers.
    #[serde(default = "default_outbound")]
    pub outbound_concurrency: u32,
}

fn default_window() -> u64 {
    60
}

fn default_outbound() -> u32 {
    10
}

/// When the caller's speech interrupts the bot.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BargeInPolicy {
    pub mode: BargeInMode,
    /// With `mode = "words"`: how many words of a partial transcript interrupt.
    #[serde(default = "default_min_words")]
    pub min_words: u32,
    /// Words that never interrupt ("uh-huh", "okay", …), compared case-insensitively.
    #[serde(default)]
    pub backchannel: Vec<String>,
}

fn default_min_words() -> u32 {
    2
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BargeInMode {
    /// The STT provider's VAD `speech` event interrupts.
    Speech,
    /// `min_words` words of a partial transcript (backchannel words excluded) interrupt.
    Words,
}

impl Default for BargeInPolicy {
    fn default() -> Self {
        Self {
            mode: BargeInMode::Words,
            min_words: 2,
            backchannel: [
                "uh-huh", "mm-hmm", "okay", "ok", "yeah", "yes", "right", "sure",
            ]
            .map(String::from)
            .to_vec(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTenant {
    id: String,
    numbers: Vec<String>,
    system_prompt: String,
    greeting: String,
    fallback_phrase: String,
    voice: String,
    llm_model: String,
    tier: String,
    #[serde(default)]
    barge_in: Option<BargeInPolicy>,
    #[serde(default)]
    prewarm: Vec<String>,
    #[serde(default)]
    transfer_number: Option<String>,
    #[serde(default = "default_endpointing")]
    stt_endpointing_ms: u32,
    #[serde(default)]
    api_key_sha256: Vec<String>,
    #[serde(default = "default_media_idle")]
    media_idle_secs: u32,
    #[serde(default)]
    tools: Vec<tools::RawTool>,
    #[serde(default)]
    builtin_tools: Option<Vec<String>>,
    #[serde(default)]
    signing_secret_env: Option<String>,
    #[serde(default)]
    tts_provider: Option<String>,
    #[serde(default)]
    webhooks: Option<tools::RawWebhooks>,
    #[serde(default)]
    retention: Option<Retention>,
    #[serde(default)]
    language: Option<language::RawLanguage>,
    #[serde(default)]
    turn_taking: TurnTaking,
    #[serde(default)]
    keypad: Keypad,
}

/// How long the tenant's calls are kept, shorter than the streams keep everything: each
/// event and audio message is published with a `Nats-TTL` of these many seconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    /// Control events (transcripts, sentences, tool calls, …).
    pub events_secs: Option<u64>,
    /// Caller and bot audio.
    pub audio_secs: Option<u64>,
}

impl Retention {
    /// The time to live of a message of `kind` (`None`: the stream's own limits).
    pub fn ttl(&self, kind: sb_schemas::Kind) -> Option<std::time::Duration> {
        let secs = if kind.is_audio() {
            self.audio_secs
        } else {
            self.events_secs
        };
        secs.map(std::time::Duration::from_secs)
    }
}

/// How long a media socket may go without a message before the ingress closes it, unless
/// a tenant says otherwise.
pub const DEFAULT_MEDIA_IDLE_SECS: u32 = 15;

fn default_media_idle() -> u32 {
    DEFAULT_MEDIA_IDLE_SECS
}

fn default_endpointing() -> u32 {
    300
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    tiers: BTreeMap<String, Tier>,
    #[serde(rename = "tenant")]
    tenants: Vec<RawTenant>,
}

/// One validated tenant.
#[derive(Debug, Clone, PartialEq)]
pub struct Tenant {
    pub id: TenantId,
    pub numbers: Vec<String>,
    pub system_prompt: String,
    pub greeting: String,
    /// Spoken when the LLM fails or is too slow: the caller never hears silence.
    pub fallback_phrase: String,
    pub voice: String,
    pub llm_model: String,
    pub tier_name: String,
    pub tier: Tier,
    pub barge_in: BargeInPolicy,
    /// Phrases synthesised into the TTS cache at start-up.
    pub prewarm: Vec<String>,
    pub transfer_number: Option<String>,
    pub stt_endpointing_ms: u32,
    /// SHA-256 (hex) of each API key of the tenant's campaigns API; the keys themselves
    /// are never stored.
    pub api_key_sha256: Vec<String>,
    /// A media socket with no message for this long is closed (`end` reason `IdleTimeout`).
    pub media_idle_secs: u32,
    /// The tenant's own tools, served by its HTTP endpoints.
    pub tools: Vec<TenantTool>,
    /// Which of `end_call` and `transfer_call` the model is offered.
    pub builtin_tools: BuiltinTools,
    /// The environment variable holding the HMAC secret that tool requests are signed
    /// with (required once there are tools); the value is never in the file.
    pub signing_secret_env: Option<String>,
    /// The speech engine that speaks for this tenant (one of [`TTS_PROVIDERS`]); `None`:
    /// the deployment's default. `voice` is that engine's voice.
    pub tts_provider: Option<String>,
    /// Where the tenant's call webhooks go (`None`: none are sent).
    pub webhooks: Option<TenantWebhooks>,
    /// How long its calls' events and audio are kept (default: the streams' limits).
    pub retention: Retention,
    /// What the STT listens for and where sentences end (`[tenant.language]`).
    pub language: Language,
    /// Pausing and resuming the bot, preemptive answers, silence and the call's length.
    pub turn_taking: TurnTaking,
    /// How key presses are read and which keys are actions.
    pub keypad: Keypad,
}

/// The speech engines a tenant may choose.
pub const TTS_PROVIDERS: [&str; 4] = ["azure", "openai", "deepgram", "espeak"];

/// Every tenant, by id and by phone number.
#[derive(Debug, Default)]
pub struct Tenants {
    by_id: HashMap<TenantId, Arc<Tenant>>,
    by_number: HashMap<String, Arc<Tenant>>,
}

impl Tenants {
    pub fn load(path: &Path) -> Result<Self, TenantsError> {
        let text = std::fs::read_to_string(path).map_err(|e| TenantsError {
            path: path.display().to_string(),
            message: format!("cannot read: {e}"),
        })?;
        Self::parse(&text).map_err(|message| TenantsError {
            path: path.display().to_string(),
            message,
        })
    }

    /// Parses and validates the file's text; the error names the tenant and the field.
    pub fn parse(text: &str) -> Result<Self, String> {
        let raw: RawFile = toml::from_str(text).map_err(|e| e.to_string())?;
        for (name, tier) in &raw.tiers {
            if tier.llm_concurrency == 0
                || tier.webhook_rate_limit == 0
                || tier.rate_window_secs == 0
                || tier.outbound_concurrency == 0
            {
                return Err(format!("tier {name:?}: limits must be greater than zero"));
            }
        }
        let mut tenants = Tenants::default();
        for raw_tenant in raw.tenants {
            let tenant = Arc::new(validate(raw_tenant, &raw.tiers)?);
            for number in &tenant.numbers {
                if let Some(other) = tenants.by_number.insert(number.clone(), tenant.clone()) {
                    return Err(format!(
                        "tenant {:?}: field `numbers`: {number} already belongs to tenant {:?}",
                        tenant.id.as_str(),
                        other.id.as_str()
                    ));
                }
            }
            if tenants
                .by_id
                .insert(tenant.id.clone(), tenant.clone())
                .is_some()
            {
                return Err(format!(
                    "tenant {:?}: field `id`: defined twice",
                    tenant.id.as_str()
                ));
            }
        }
        Ok(tenants)
    }

    pub fn by_id(&self, id: &TenantId) -> Option<&Arc<Tenant>> {
        self.by_id.get(id)
    }

    /// The tenant of a stage's input; an unknown one is poison input (dead-lettered), since
    /// no redelivery will make it known.
    pub fn for_input(&self, id: &TenantId) -> Result<Arc<Tenant>, crate::StageError> {
        self.by_id(id).cloned().ok_or_else(|| {
            crate::StageError::reject("unknown_tenant", format!("no tenant {:?}", id.as_str()))
        })
    }

    /// The tenant owning the called number (`To`).
    pub fn by_number(&self, number: &str) -> Option<&Arc<Tenant>> {
        self.by_number.get(number)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Tenant>> {
        self.by_id.values()
    }

    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

fn validate(raw: RawTenant, tiers: &BTreeMap<String, Tier>) -> Result<Tenant, String> {
    let who = raw.id.clone();
    let field = |name: &str, why: String| format!("tenant {who:?}: field `{name}`: {why}");
    let id = TenantId::parse(&raw.id).map_err(|e| field("id", e.to_string()))?;
    if raw.numbers.is_empty() {
        return Err(field("numbers", "at least one number is required".into()));
    }
    for (i, number) in raw.numbers.iter().enumerate() {
        if !is_e164(number) {
            return Err(field(
                &format!("numbers[{i}]"),
                format!("{number:?} is not an E.164 number"),
            ));
        }
    }
    if let Some(number) = &raw.transfer_number
        && !is_e164(number)
    {
        return Err(field(
            "transfer_number",
            format!("{number:?} is not an E.164 number"),
        ));
    }
    for (name, value) in [
        ("system_prompt", &raw.system_prompt),
        ("greeting", &raw.greeting),
        ("fallback_phrase", &raw.fallback_phrase),
        ("voice", &raw.voice),
        ("llm_model", &raw.llm_model),
    ] {
        if value.trim().is_empty() {
            return Err(field(name, "must not be empty".into()));
        }
    }
    let tier = tiers.get(&raw.tier).cloned().ok_or_else(|| {
        let known: Vec<&str> = tiers.keys().map(String::as_str).collect();
        field(
            "tier",
            format!("unknown tier {:?} (known: {})", raw.tier, known.join(", ")),
        )
    })?;
    let barge_in = raw.barge_in.unwrap_or_default();
    if barge_in.mode == BargeInMode::Words && barge_in.min_words == 0 {
        return Err(field("barge_in.min_words", "must be at least 1".into()));
    }
    for (i, hash) in raw.api_key_sha256.iter().enumerate() {
        if hash.len() != 64 || !hash.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
            return Err(field(
                &format!("api_key_sha256[{i}]"),
                "must be 64 lowercase hex digits (sha256 of the key)".into(),
            ));
        }
    }
    if let Some(provider) = &raw.tts_provider
        && !TTS_PROVIDERS.contains(&provider.as_str())
    {
        return Err(field(
            "tts_provider",
            format!("{provider:?} is not one of {}", TTS_PROVIDERS.join(", ")),
        ));
    }
    let builtin_tools = tools::builtins(raw.builtin_tools.as_deref(), &field)?;
    let webhooks = tools::webhooks(raw.webhooks, &field)?;
    let tools = tools::validate(
        raw.tools,
        raw.signing_secret_env.as_deref(),
        webhooks.is_some(),
        &field,
    )?;
    turns::validate(&raw.turn_taking, &raw.keypad, &field)?;
    let language = language::validate(raw.language, &field)?;
    let retention = raw.retention.unwrap_or_default();
    for (name, secs) in [
        ("retention.events_secs", retention.events_secs),
        ("retention.audio_secs", retention.audio_secs),
    ] {
        if secs == Some(0) {
            return Err(field(
                name,
                "must be at least 1 (leave it out to keep what the streams keep)".into(),
            ));
        }
    }
    if !(1..=600).contains(&raw.media_idle_secs) {
        return Err(field("media_idle_secs", "must be between 1 and 600".into()));
    }
    if !(10..=5000).contains(&raw.stt_endpointing_ms) {
        return Err(field(
            "stt_endpointing_ms",
            "must be between 10 and 5000".into(),
        ));
    }
    Ok(Tenant {
        id,
        numbers: raw.numbers,
        system_prompt: raw.system_prompt,
        greeting: raw.greeting,
        fallback_phrase: raw.fallback_phrase,
        voice: raw.voice,
        llm_model: raw.llm_model,
        tier_name: raw.tier,
        tier,
        barge_in,
        prewarm: raw.prewarm,
        transfer_number: raw.transfer_number,
        stt_endpointing_ms: raw.stt_endpointing_ms,
        api_key_sha256: raw.api_key_sha256,
        media_idle_secs: raw.media_idle_secs,
        tools,
        builtin_tools,
        signing_secret_env: raw.signing_secret_env,
        tts_provider: raw.tts_provider,
        webhooks,
        retention,
        language,
        turn_taking: raw.turn_taking,
        keypad: raw.keypad,
    })
}

/// `+` then 8 to 15 digits, the first not zero.
fn is_e164(number: &str) -> bool {
    let Some(digits) = number.strip_prefix('+') else {
        return false;
    };
    (8..=15).contains(&digits.len())
        && digits.bytes().all(|b| b.is_ascii_digit())
        && !digits.starts_with('0')
}

#[cfg(test)]
#[path = "tenants_tests.rs"]
mod tests;
