//! The agent's own settings (`SB_LLM_*`, `SB_AGENT_*`, `SB_TWILIO_*`), checked at start-up.
//!
//! Consumes flags or environment variables (clap); produces a validated [`AgentConfig`]
//! whose errors name the variable to fix. Secrets are [`Secret`]s and never printed.
//! State: none.

use std::time::Duration;

use sb_runtime::Secret;

use crate::limits::{AimdBounds, SharedConfig};

/// How the agent talks to the LLM and to Twilio, and how it speaks.
#[derive(Debug, Clone, clap::Args)]
pub struct AgentConfig {
    /// Base URL of the OpenAI-compatible API; requests go to `{base}/chat/completions`.
    #[arg(
        long,
        env = "SB_LLM_BASE_URL",
        default_value = "https://api.groq.com/openai/v1"
    )]
    pub llm_base_url: String,

    /// API key, sent as `Authorization: Bearer`. Required unless the base URL is loopback.
    #[arg(long, env = "SB_LLM_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<Secret>,

    /// Time allowed to open a connection to the LLM.
    #[arg(long, env = "SB_LLM_CONNECT_TIMEOUT_MS", default_value_t = 1_000)]
    pub llm_connect_timeout_ms: u64,

    /// Time allowed from sending a request to its first token (per attempt).
    #[arg(long, env = "SB_LLM_FIRST_TOKEN_TIMEOUT_MS", default_value_t = 2_500)]
    pub llm_first_token_timeout_ms: u64,

    /// Longest silence between two chunks of a streaming answer.
    #[arg(long, env = "SB_LLM_IDLE_TIMEOUT_MS", default_value_t = 3_000)]
    pub llm_idle_timeout_ms: u64,

    /// Longest wait for the tenant's and the global LLM permits; then the fallback phrase.
    #[arg(long, env = "SB_LLM_QUEUE_DEADLINE_MS", default_value_t = 1_000)]
    pub llm_queue_deadline_ms: u64,

    /// A retry (after a 429, 5xx or connect error) only starts within this time of the
    /// transcript's arrival; otherwise the caller hears the fallback phrase now.
    #[arg(long, env = "SB_LLM_RETRY_BUDGET_MS", default_value_t = 1_500)]
    pub llm_retry_budget_ms: u64,

    /// Retries of one answer's request.
    #[arg(long, env = "SB_LLM_MAX_RETRIES", default_value_t = 1)]
    pub llm_max_retries: u32,

    /// `max_completion_tokens` of every request.
    #[arg(long, env = "SB_LLM_MAX_COMPLETION_TOKENS", default_value_t = 256)]
    pub llm_max_completion_tokens: u32,

    /// Sampling temperature.
    #[arg(long, env = "SB_LLM_TEMPERATURE", default_value_t = 0.6)]
    pub llm_temperature: f32,

    /// Starting global limit on concurrent LLM requests (AIMD: +1 per success, halved on 429).
    #[arg(long, env = "SB_LLM_AIMD_INITIAL", default_value_t = 32)]
    pub llm_aimd_initial: u32,

    /// Lowest the global limit goes.
    #[arg(long, env = "SB_LLM_AIMD_MIN", default_value_t = 2)]
    pub llm_aimd_min: u32,

    /// Highest the global limit goes.
    #[arg(long, env = "SB_LLM_AIMD_MAX", default_value_t = 256)]
    pub llm_aimd_max: u32,

    /// How long an LLM permit held in Redis outlives its last renewal. A permit is renewed
    /// every third of this while its request runs, so a replica that dies holding permits
    /// gives them back to the other replicas within this time.
    #[arg(long, env = "SB_LLM_LEASE_TTL_MS", default_value_t = 15_000)]
    pub llm_lease_ttl_ms: u64,

    /// Longest pause between two tries at a full LLM limit (the first pause is 5 ms, then
    /// doubling). A release by another replica is seen at most this late; one by this
    /// replica at once.
    #[arg(long, env = "SB_LLM_LIMITS_POLL_MS", default_value_t = 50)]
    pub llm_limits_poll_ms: u64,

    /// The first sentence of an answer is at least this many characters (one short opener
    /// such as "Sure." is merged with the next sentence).
    #[arg(long, env = "SB_AGENT_MIN_FIRST_SENTENCE_CHARS", default_value_t = 16)]
    pub min_first_sentence_chars: usize,

    /// LLM deltas grouped into one `token` event; the barge-in check runs before each event.
    #[arg(long, env = "SB_AGENT_TOKEN_BATCH", default_value_t = 4)]
    pub token_batch: usize,

    /// Longest a delta waits for its group to fill before the group is checked and sent.
    #[arg(long, env = "SB_AGENT_TOKEN_BATCH_MS", default_value_t = 20)]
    pub token_batch_ms: u64,

    /// Said before hanging up when the model ends the call without saying goodbye itself.
    #[arg(long, env = "SB_AGENT_GOODBYE_PHRASE", default_value = "Goodbye!")]
    pub goodbye_phrase: String,

    /// Said before a transfer when the model transfers without saying anything itself.
    #[arg(
        long,
        env = "SB_AGENT_TRANSFER_PHRASE",
        default_value = "Please hold while I transfer your call."
    )]
    pub transfer_phrase: String,

    /// How long an ended call's session is kept (for late events and replay).
    #[arg(long, env = "SB_AGENT_ENDED_SESSION_TTL_SECS", default_value_t = 60)]
    pub ended_session_ttl_secs: u64,

    /// Twilio account (`AC…`) for hanging up and transferring calls; without it the
    /// `end_call` and `transfer_call` tools are not offered to the model.
    #[arg(long, env = "SB_TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: Option<String>,

    /// Twilio auth token (HTTP Basic password of the REST API); not needed with an API key.
    #[arg(long, env = "SB_TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<Secret>,

    /// A Twilio API key (`SK…`) for the REST API instead of the auth token (with its secret).
    #[arg(long, env = "SB_TWILIO_API_KEY_SID")]
    pub twilio_api_key_sid: Option<String>,

    /// The API key's secret.
    #[arg(long, env = "SB_TWILIO_API_KEY_SECRET", hide_env_values = true)]
    pub twilio_api_key_secret: Option<Secret>,

    /// Twilio REST API base URL (a stand-in in tests).
    #[arg(
        long,
        env = "SB_TWILIO_API_URL",
        default_value = "https://api.twilio.com"
    )]
    pub twilio_api_url: String,

    /// Timeout of one Twilio REST request.
    #[arg(long, env = "SB_TWILIO_TIMEOUT_MS", default_value_t = 5_000)]
    pub twilio_timeout_ms: u64,
}

impl AgentConfig {
    /// Defaults (as `--help` shows them) for the LLM at `llm_base_url`; tests start here.
    pub fn for_llm(llm_base_url: impl Into<String>) -> Self {
        Self {
            llm_base_url: llm_base_url.into(),
            llm_api_key: None,
            llm_connect_timeout_ms: 1_000,
            llm_first_token_timeout_ms: 2_500,
            llm_idle_timeout_ms: 3_000,
            llm_queue_deadline_ms: 1_000,
            llm_retry_budget_ms: 1_500,
            llm_max_retries: 1,
            llm_max_completion_tokens: 256,
            llm_temperature: 0.6,
            llm_aimd_initial: 32,
            llm_aimd_min: 2,
            llm_aimd_max: 256,
            llm_lease_ttl_ms: 15_000,
            llm_limits_poll_ms: 50,
            min_first_sentence_chars: 16,
            token_batch: 4,
            token_batch_ms: 20,
            goodbye_phrase: "Goodbye!".into(),
            transfer_phrase: "Please hold while I transfer your call.".into(),
            ended_session_ttl_secs: 60,
            twilio_account_sid: None,
            twilio_auth_token: None,
            twilio_api_key_sid: None,
            twilio_api_key_secret: None,
            twilio_api_url: "https://api.twilio.com".into(),
            twilio_timeout_ms: 5_000,
        }
    }

    /// Checks the settings; the error names the variable.
    pub fn validate(&self) -> Result<(), String> {
        let base = url::Url::parse(&self.llm_base_url)
            .ok()
            .filter(|u| matches!(u.scheme(), "http" | "https"))
            .ok_or_else(|| {
                format!(
                    "SB_LLM_BASE_URL: {:?} is not an http(s) URL",
                    self.llm_base_url
                )
            })?;
        let has_key = self.llm_api_key.as_ref().is_some_and(|k| !k.is_empty());
        if !has_key && !is_loopback(&base) {
            return Err(format!(
                "SB_LLM_API_KEY is required for {} (only a loopback SB_LLM_BASE_URL may go without)",
                self.llm_base_url
            ));
        }
        if self.llm_aimd_min == 0
            || self.llm_aimd_min > self.llm_aimd_max
            || !(self.llm_aimd_min..=self.llm_aimd_max).contains(&self.llm_aimd_initial)
        {
            return Err(format!(
                "SB_LLM_AIMD_MIN ({}) ≤ SB_LLM_AIMD_INITIAL ({}) ≤ SB_LLM_AIMD_MAX ({}) must hold, with a minimum of at least 1",
                self.llm_aimd_min, self.llm_aimd_initial, self.llm_aimd_max
            ));
        }
        if self.llm_lease_ttl_ms < 300 {
            return Err(format!(
                "SB_LLM_LEASE_TTL_MS ({}) must be at least 300 (a permit renews every third of it)",
                self.llm_lease_ttl_ms
            ));
        }
        for (name, value) in [
            ("SB_LLM_LIMITS_POLL_MS", self.llm_limits_poll_ms),
            ("SB_LLM_CONNECT_TIMEOUT_MS", self.llm_connect_timeout_ms),
            (
                "SB_LLM_FIRST_TOKEN_TIMEOUT_MS",
                self.llm_first_token_timeout_ms,
            ),
            ("SB_LLM_IDLE_TIMEOUT_MS", self.llm_idle_timeout_ms),
            ("SB_TWILIO_TIMEOUT_MS", self.twilio_timeout_ms),
        ] {
            if value == 0 {
                return Err(format!("{name} must be greater than zero"));
            }
        }
        if self.token_batch == 0 {
            return Err("SB_AGENT_TOKEN_BATCH must be at least 1".into());
        }
        if self.goodbye_phrase.trim().is_empty() {
            return Err("SB_AGENT_GOODBYE_PHRASE must not be empty".into());
        }
        if self.transfer_phrase.trim().is_empty() {
            return Err("SB_AGENT_TRANSFER_PHRASE must not be empty".into());
        }
        self.twilio_rest().map(|_| ())
    }

    /// The account and how REST requests authenticate (an API key if set, else the auth
    /// token); `None` without Twilio credentials. The error names the variable.
    pub fn twilio_rest(&self) -> Result<Option<(String, sb_twilio::rest::RestAuth)>, String> {
        use sb_twilio::rest::{RestAuth, is_sid};
        let key = match (&self.twilio_api_key_sid, &self.twilio_api_key_secret) {
            (None, None) => None,
            (Some(sid), Some(secret)) => {
                if !is_sid(sid, "SK") {
                    return Err(format!(
                        "SB_TWILIO_API_KEY_SID: {sid:?} is not an API key sid (SK + 32 hex digits)"
                    ));
                }
                if secret.is_empty() {
                    return Err("SB_TWILIO_API_KEY_SECRET must not be empty".into());
                }
                Some(RestAuth::api_key(sid, secret.expose()))
            }
            (Some(_), None) => {
                return Err(
                    "SB_TWILIO_API_KEY_SECRET is required with SB_TWILIO_API_KEY_SID".into(),
                );
            }
            (None, Some(_)) => {
                return Err(
                    "SB_TWILIO_API_KEY_SID is required with SB_TWILIO_API_KEY_SECRET".into(),
                );
            }
        };
        let Some(sid) = &self.twilio_account_sid else {
            if key.is_some() || self.twilio_auth_token.is_some() {
                return Err("SB_TWILIO_ACCOUNT_SID is required with Twilio credentials".into());
            }
            return Ok(None);
        };
        if !is_sid(sid, "AC") {
            return Err(format!(
                "SB_TWILIO_ACCOUNT_SID: {sid:?} is not an account sid (AC + 32 hex digits)"
            ));
        }
        url::Url::parse(&self.twilio_api_url)
            .map_err(|e| format!("SB_TWILIO_API_URL: {:?}: {e}", self.twilio_api_url))?;
        let auth = match (key, &self.twilio_auth_token) {
            (Some(key), _) => key,
            (None, Some(token)) if !token.is_empty() => RestAuth::auth_token(sid, token.expose()),
            (None, Some(_)) => return Err("SB_TWILIO_AUTH_TOKEN must not be empty".into()),
            (None, None) => {
                return Err(
                    "SB_TWILIO_AUTH_TOKEN (or SB_TWILIO_API_KEY_SID and _SECRET) is required with SB_TWILIO_ACCOUNT_SID"
                        .into(),
                );
            }
        };
        Ok(Some((sid.clone(), auth)))
    }

    pub fn queue_deadline(&self) -> Duration {
        Duration::from_millis(self.llm_queue_deadline_ms)
    }

    pub fn retry_budget(&self) -> Duration {
        Duration::from_millis(self.llm_retry_budget_ms)
    }

    /// The global AIMD limit's bounds (`SB_LLM_AIMD_*`).
    pub fn aimd_bounds(&self) -> AimdBounds {
        AimdBounds {
            initial: self.llm_aimd_initial,
            min: self.llm_aimd_min,
            max: self.llm_aimd_max,
        }
    }

    /// How the limits shared with the other replicas are used.
    pub fn shared_limits(&self) -> SharedConfig {
        SharedConfig {
            lease: Duration::from_millis(self.llm_lease_ttl_ms),
            poll: Duration::from_millis(self.llm_limits_poll_ms),
        }
    }
}

fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(host)) => host.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (change, expected error fragment or None): each broken setting names its variable.
    #[test]
    fn validation_table() {
        type Change = fn(&mut AgentConfig);
        let cases: &[(Change, Option<&str>)] = &[
            (|_| {}, Some("SB_LLM_API_KEY is required")),
            (|c| c.llm_api_key = Some(Secret::new("k")), None),
            (|c| c.llm_base_url = "http://127.0.0.1:9/v1".into(), None),
            (|c| c.llm_base_url = "http://localhost:9/v1".into(), None),
            (|c| c.llm_base_url = "http://[::1]:9/v1".into(), None),
            (
                |c| c.llm_base_url = "not a url".into(),
                Some("SB_LLM_BASE_URL"),
            ),
            (
                |c| {
                    c.llm_base_url = "http://127.0.0.1:9".into();
                    c.llm_aimd_min = 0;
                },
                Some("SB_LLM_AIMD_MIN"),
            ),
            (
                |c| {
                    c.llm_base_url = "http://127.0.0.1:9".into();
                    c.llm_aimd_initial = 1_000;
                },
                Some("SB_LLM_AIMD_INITIAL"),
            ),
            (
                |c| {
                    c.llm_base_url = "http://127.0.0.1:9".into();
                    c.twilio_account_sid = Some("AC123".into());
                    c.twilio_auth_token = Some(Secret::new("t"));
                },
                Some("SB_TWILIO_ACCOUNT_SID"),
            ),
            (
                |c| {
                    c.llm_base_url = "http://127.0.0.1:9".into();
                    c.twilio_account_sid = Some(format!("AC{}", "0".repeat(32)));
                },
                Some("SB_TWILIO_AUTH_TOKEN (or SB_TWILIO_API_KEY_SID and _SECRET) is required"),
            ),
            (
                |c| {
                    c.llm_base_url = "http://127.0.0.1:9".into();
                    c.twilio_account_sid = Some(format!("AC{}", "0".repeat(32)));
                    c.twilio_auth_token = Some(Secret::new("t"));
                },
                None,
            ),
            (
                |c| {
                    c.llm_base_url = "http://127.0.0.1:9".into();
                    c.twilio_account_sid = Some(format!("AC{}", "0".repeat(32)));
                    c.twilio_api_key_sid = Some(format!("SK{}", "0".repeat(32)));
                    c.twilio_api_key_secret = Some(Secret::new("s"));
                },
                None,
            ),
            (
                |c| {
                    c.llm_base_url = "http://127.0.0.1:9".into();
                    c.twilio_account_sid = Some(format!("AC{}", "0".repeat(32)));
                    c.twilio_api_key_sid = Some(format!("AC{}", "0".repeat(32)));
                    c.twilio_api_key_secret = Some(Secret::new("s"));
                },
                Some("SB_TWILIO_API_KEY_SID: "),
            ),
            (
                |c| {
                    c.llm_base_url = "http://127.0.0.1:9".into();
                    c.twilio_account_sid = Some(format!("AC{}", "0".repeat(32)));
                    c.twilio_api_key_sid = Some(format!("SK{}", "0".repeat(32)));
                },
                Some("SB_TWILIO_API_KEY_SECRET is required"),
            ),
            (
                |c| {
                    c.llm_base_url = "http://127.0.0.1:9".into();
                    c.twilio_api_key_sid = Some(format!("SK{}", "0".repeat(32)));
                    c.twilio_api_key_secret = Some(Secret::new("s"));
                },
                Some("SB_TWILIO_ACCOUNT_SID is required"),
            ),
            (
                |c| {
                    c.llm_base_url = "http://127.0.0.1:9".into();
                    c.llm_first_token_timeout_ms = 0;
                },
                Some("SB_LLM_FIRST_TOKEN_TIMEOUT_MS"),
            ),
            (
                |c| {
                    c.llm_base_url = "http://127.0.0.1:9".into();
                    c.llm_lease_ttl_ms = 299;
                },
                Some("SB_LLM_LEASE_TTL_MS"),
            ),
            (
                |c| {
                    c.llm_base_url = "http://127.0.0.1:9".into();
                    c.llm_limits_poll_ms = 0;
                },
                Some("SB_LLM_LIMITS_POLL_MS"),
            ),
        ];
        for (i, (change, expected)) in cases.iter().enumerate() {
            let mut config = AgentConfig::for_llm("https://api.groq.com/openai/v1");
            change(&mut config);
            match (config.validate(), expected) {
                (Ok(()), None) => {}
                (Err(e), Some(fragment)) => assert!(e.contains(fragment), "case {i}: {e}"),
                (got, want) => panic!("case {i}: got {got:?}, want {want:?}"),
            }
        }
    }
}
