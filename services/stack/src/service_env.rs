//! The environment each Switchboard process of the local [`crate::Stack`] gets: where the
//! servers and stand-ins are, the shared local credentials, and each service's own
//! settings.
//!
//! Consumes the stack's addresses; produces `(name, value)` pairs for a child process.
//! State: none.

use std::net::SocketAddr;

use sb_schemas::roles::Role;

use crate::nats_server::NatsCluster;
use crate::servers::{RedisServer, workspace_root};

/// The local stack's campaigns API key for every tenant (not a secret: loopback only).
pub const CAMPAIGNS_API_KEY: &str = "local-stack-campaigns-key";

/// The local tenant `acme`'s own tools, served by the tenant-server stand-in (`{tenant}`
/// is its address): a booking the call waits for (with a filler phrase), and an email
/// sent without waiting.
const ACME_TOOLS: &str = r#"
signing_secret_env = "SB_TENANT_SECRET_ACME"
webhooks = { url = "http://{tenant}/webhooks/acme" }

[[tools]]
name = "book_visit"
description = "Book a visit to the store for the caller. Ask for the day first."
url = "http://{tenant}/tools/book_visit"
timeout_ms = 3000
filler = "One moment while I check that."
[tools.parameters]
type = "object"
required = ["day"]
properties.day = { type = "string", description = "The day, e.g. friday." }
properties.time = { type = "string", description = "morning or afternoon" }

[[tools]]
name = "email_offers"
description = "Email this month's offers to the caller."
url = "http://{tenant}/tools/email_offers"
wait = false
"#;

/// A local tenant spoken by a streaming engine (OpenAI's speech face of the TTS
/// stand-in), for the tests of per-tenant engines.
const STREAMING_TENANT: &str = r#"
id = "initech"
numbers = ["+15005550009"]
system_prompt = "You are Initech's phone line. Be brief."
greeting = "Initech, how can I help?"
fallback_phrase = "Sorry, could you say that again?"
voice = "alloy"
tts_provider = "openai"
llm_model = "llama-3.1-8b-instant"
tier = "standard"
"#;

/// `globex`'s webhooks, to the same stand-in (its own path, so a test can slow one
/// tenant's endpoint and not the other's).
const GLOBEX_WEBHOOKS: &str = r#"
signing_secret_env = "SB_TENANT_SECRET_GLOBEX"
webhooks = { url = "http://{tenant}/webhooks/globex" }
"#;

/// The number of [`STREAMING_TENANT`].
pub const STREAMING_TENANT_NUMBER: &str = "+15005550009";

/// The variables holding the local tenants' signing secrets, and their one value (the
/// tenant-server stand-in checks every request with it).
pub const TENANT_SECRET_ENVS: [&str; 2] = ["SB_TENANT_SECRET_ACME", "SB_TENANT_SECRET_GLOBEX"];
pub const TENANT_SECRET: &str = "local-stack-tenant-signing-secret";

/// Writes `dir/tenants.toml`: the shipped tenants file with [`CAMPAIGNS_API_KEY`]'s
/// sha256 as every tenant's API key, so the demo and tests can use the campaigns API,
/// and, with a tenant-server stand-in at `tenant_server`, `acme`'s own tools served by it.
/// `preemptive: false` turns every tenant's `turn_taking.preemptive` off (answers wait
/// for the final transcript; the other half of an A/B latency run).
pub fn local_tenants_file(
    dir: &std::path::Path,
    tenant_server: Option<std::net::SocketAddr>,
    preemptive: bool,
) -> anyhow::Result<std::path::PathBuf> {
    use sha2::Digest as _;
    let shipped = std::fs::read_to_string(workspace_root().join("deploy/base/tenants.toml"))?;
    let mut doc: toml::Table = toml::from_str(&shipped)?;
    let hash = hex::encode(sha2::Sha256::digest(CAMPAIGNS_API_KEY.as_bytes()));
    let table = |text: &str| -> anyhow::Result<Option<toml::Table>> {
        tenant_server
            .map(|addr| toml::from_str(&text.replace("{tenant}", &addr.to_string())))
            .transpose()
            .map_err(Into::into)
    };
    let (tools, globex) = (table(ACME_TOOLS)?, table(GLOBEX_WEBHOOKS)?);
    if let Some(toml::Value::Array(tenants)) = doc.get_mut("tenant") {
        for tenant in tenants.iter_mut().filter_map(toml::Value::as_table_mut) {
            tenant.insert(
                "api_key_sha256".into(),
                toml::Value::Array(vec![toml::Value::String(hash.clone())]),
            );
            let extra = match tenant.get("id").and_then(toml::Value::as_str) {
                Some("acme") => &tools,
                Some("globex") => &globex,
                _ => &None,
            };
            if let Some(extra) = extra {
                tenant.extend(extra.clone());
            }
            if !preemptive {
                let turns = tenant
                    .entry("turn_taking")
                    .or_insert_with(|| toml::Value::Table(toml::Table::new()));
                if let Some(turns) = turns.as_table_mut() {
                    turns.insert("preemptive".into(), toml::Value::Boolean(false));
                }
            }
        }
        tenants.push(toml::Value::Table(toml::from_str(STREAMING_TENANT)?));
    }
    let path = dir.join("tenants.toml");
    std::fs::write(&path, toml::to_string(&doc)?)?;
    Ok(path)
}
use crate::stack::{
    ACCOUNT_SID, AUTH_TOKEN, CALL_CREDENTIAL_SECRET, OPERATOR_TOKEN, PUBLIC_URL, VENDOR_KEY,
};

/// The environment each service gets: the stack's servers and stand-ins.
pub(crate) struct Env<'a> {
    pub(crate) nats: &'a NatsCluster,
    pub(crate) redis: &'a RedisServer,
    pub(crate) deepgram: SocketAddr,
    pub(crate) llm: SocketAddr,
    pub(crate) tts: SocketAddr,
    pub(crate) twilio: SocketAddr,
    /// The tenants file every service reads (the shipped one plus local API keys).
    pub(crate) tenants: &'a std::path::Path,
    pub(crate) extra: &'a [(String, String)],
}

impl Env<'_> {
    pub(crate) fn for_service(&self, service: &str, http: SocketAddr) -> Vec<(String, String)> {
        let tenants = self.tenants;
        let mut env: Vec<(String, String)> = vec![
            ("SB_REDIS_URL".into(), self.redis.url.clone()),
            ("SB_TENANTS_FILE".into(), tenants.display().to_string()),
            ("SB_HTTP_ADDR".into(), http.to_string()),
            ("SB_LOG_FORMAT".into(), "json".into()),
            ("SB_DRAIN_DEADLINE_SECS".into(), "5".into()),
        ];
        let specific: Vec<(&str, String)> = match service {
            "ingress" => vec![
                ("SB_TWILIO_AUTH_TOKEN", AUTH_TOKEN.into()),
                // Live calls move to another replica on drain through its redirects.
                ("SB_TWILIO_API_URL", format!("http://{}", self.twilio)),
                ("SB_PUBLIC_URL", PUBLIC_URL.into()),
                ("SB_CALL_CREDENTIAL_SECRET", CALL_CREDENTIAL_SECRET.into()),
            ],
            "stt" => vec![
                ("SB_DEEPGRAM_URL", format!("ws://{}", self.deepgram)),
                ("SB_DEEPGRAM_API_KEY", VENDOR_KEY.into()),
            ],
            "agent" => vec![
                (TENANT_SECRET_ENVS[0], TENANT_SECRET.into()),
                (TENANT_SECRET_ENVS[1], TENANT_SECRET.into()),
                ("SB_LLM_BASE_URL", format!("http://{}/v1", self.llm)),
                ("SB_LLM_API_KEY", VENDOR_KEY.into()),
                ("SB_TWILIO_API_URL", format!("http://{}", self.twilio)),
                ("SB_TWILIO_ACCOUNT_SID", ACCOUNT_SID.into()),
                ("SB_TWILIO_AUTH_TOKEN", AUTH_TOKEN.into()),
            ],
            "dialer" => vec![
                ("SB_TWILIO_API_URL", format!("http://{}", self.twilio)),
                ("SB_TWILIO_ACCOUNT_SID", ACCOUNT_SID.into()),
                ("SB_TWILIO_AUTH_TOKEN", AUTH_TOKEN.into()),
                ("SB_PUBLIC_URL", PUBLIC_URL.into()),
                // Twilio's callbacks reach the dialer itself on loopback.
                ("SB_DIALER_PUBLIC_URL", format!("http://{http}")),
                ("SB_DIALER_CPS", "20".into()),
                ("SB_DIALER_CPS_BURST", "5".into()),
                ("SB_DIALER_RECONCILE_SECS", "30".into()),
                ("SB_DIALER_IDLE_MS", "100".into()),
            ],
            "tts" => vec![
                ("SB_TTS_PROVIDER", "azure".into()),
                (
                    "SB_OPENAI_TTS_URL",
                    format!("http://{}/v1/audio/speech", self.tts),
                ),
                ("SB_OPENAI_TTS_KEY", VENDOR_KEY.into()),
                (
                    "SB_DEEPGRAM_TTS_URL",
                    format!("http://{}/v1/speak", self.tts),
                ),
                ("SB_DEEPGRAM_TTS_KEY", VENDOR_KEY.into()),
                (
                    "SB_AZURE_TTS_URL",
                    format!("http://{}/cognitiveservices/v1", self.tts),
                ),
                ("SB_AZURE_TTS_KEY", VENDOR_KEY.into()),
            ],
            "console" => vec![("SB_OPERATOR_TOKEN", OPERATOR_TOKEN.into())],
            "webhooks" => vec![
                (TENANT_SECRET_ENVS[0], TENANT_SECRET.into()),
                (TENANT_SECRET_ENVS[1], TENANT_SECRET.into()),
                // Fast retries: a test sees a failed delivery retried within a second.
                ("SB_WEBHOOK_RETRY_BASE_MS", "200".into()),
                ("SB_WEBHOOK_RETRY_MAX_MS", "2000".into()),
                ("SB_WEBHOOK_TIMEOUT_MS", "2000".into()),
            ],
            _ => vec![],
        };
        env.extend(specific.into_iter().map(|(k, v)| (k.to_owned(), v)));
        if let Some(role) = Role::parse(service) {
            env.extend(self.nats.service_env(role));
        }
        env.extend(self.extra.iter().cloned());
        env
    }
}

/// A dialer process outside a [`crate::Stack`] (the dialer benchmark and ring-3 tests):
/// its servers, the shipped tenants file, its address (also its public URL, for Twilio's
/// callbacks), the Twilio account at `twilio` and the NATS user `dialer`; `extra` settings
/// go on top (`SB_DIALER_CPS`, …).
pub fn dialer_env(
    nats: &crate::nats_server::NatsServer,
    redis_url: &str,
    http: SocketAddr,
    twilio: &str,
    (account, token): (&str, &str),
    extra: &[(&str, String)],
) -> Vec<(String, String)> {
    let tenants = workspace_root().join("deploy/base/tenants.toml");
    let mut env: Vec<(String, String)> = [
        ("SB_REDIS_URL", redis_url.to_owned()),
        ("SB_TENANTS_FILE", tenants.display().to_string()),
        ("SB_HTTP_ADDR", http.to_string()),
        ("SB_LOG_FORMAT", "json".into()),
        ("SB_TWILIO_API_URL", twilio.to_owned()),
        ("SB_TWILIO_ACCOUNT_SID", account.to_owned()),
        ("SB_TWILIO_AUTH_TOKEN", token.to_owned()),
        ("SB_PUBLIC_URL", PUBLIC_URL.to_owned()),
        ("SB_DIALER_PUBLIC_URL", format!("http://{http}")),
    ]
    .map(|(k, v)| (k.to_owned(), v))
    .to_vec();
    env.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
    env.extend(nats.service_env(Role::Dialer));
    env
}
