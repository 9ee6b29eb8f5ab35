//! The dialer's own settings, read by clap from flags or `SB_*` environment variables, and
//! their validated form.
//!
//! Consumes [`DialerConfig`] (flattened into the binary's `Config` next to the runtime's
//! settings); produces [`Settings`]: the Twilio client and account, the URLs Twilio is
//! given, the signature validator for its callbacks, and the loop's limits. Invalid values
//! fail at start-up with a message naming the variable. State: none.

use std::time::Duration;

use sb_runtime::Secret;
use sb_runtime::redis::campaigns::AccountSid;
use sb_runtime::redis::campaigns::cps::CpsLimit;
use sb_twilio::RequestValidator;
use sb_twilio::rest::{RestAuth, is_sid};

use crate::twilio::TwilioRest;

/// Settings of the dialer.
#[derive(Debug, Clone, clap::Args)]
pub struct DialerConfig {
    /// Twilio account (`AC…`) the calls are placed on; its calls-per-second limit is shared
    /// by every dialer replica. Required.
    #[arg(long, env = "SB_TWILIO_ACCOUNT_SID")]
    pub twilio_account_sid: Option<String>,

    /// Twilio auth token: the key of the callbacks' signatures, and the REST password
    /// unless an API key is set. Required.
    #[arg(long, env = "SB_TWILIO_AUTH_TOKEN", hide_env_values = true)]
    pub twilio_auth_token: Option<Secret>,

    /// A Twilio API key (`SK…`) the REST requests use instead of the auth token.
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

    /// Timeout of one Twilio REST request, in ms.
    #[arg(long, env = "SB_TWILIO_TIMEOUT_MS", default_value_t = 10_000)]
    pub twilio_timeout_ms: u64,

    /// Public base URL of the ingress: a placed call's `Url` is `{this}/twilio/voice?attempt=…`.
    #[arg(long, env = "SB_PUBLIC_URL")]
    pub ingress_public_url: Option<String>,

    /// Public base URL of this dialer: Twilio's status and machine-detection callbacks
    /// go to `{this}/twilio/dial/status` and `/twilio/dial/amd`, and their signatures are
    /// checked against it.
    #[arg(long, env = "SB_DIALER_PUBLIC_URL")]
    pub dialer_public_url: Option<String>,

    /// Calls per second on the Twilio account, over every dialer (Twilio's default: 1).
    #[arg(long, env = "SB_DIALER_CPS", default_value_t = 1.0)]
    pub cps: f64,

    /// Calls placed at once after a quiet spell, over every dialer.
    #[arg(long, env = "SB_DIALER_CPS_BURST", default_value_t = 1)]
    pub cps_burst: u32,

    /// Outbound calls being placed or live at once over every tenant and dialer (0: none).
    #[arg(long, env = "SB_DIALER_GLOBAL_CAP", default_value_t = 0)]
    pub global_cap: u32,

    /// Calls this replica places at once (REST requests in flight).
    #[arg(long, env = "SB_DIALER_WORKERS", default_value_t = 16)]
    pub workers: usize,

    /// Twilio's ring timeout for a placed call, in seconds.
    #[arg(long, env = "SB_DIALER_RING_SECS", default_value_t = 30)]
    pub ring_secs: u32,

    /// An open attempt is checked with Twilio this long after it began and as often again
    /// while it stays open, in seconds (the status callback normally closes it first).
    #[arg(long, env = "SB_DIALER_RECONCILE_SECS", default_value_t = 120)]
    pub reconcile_secs: u64,

    /// An attempt with no call sid this old is looked up at Twilio by its numbers; none
    /// found means no call was placed, and the contact goes back. In seconds; well above
    /// the REST timeout.
    #[arg(long, env = "SB_DIALER_ORPHAN_SECS", default_value_t = 60)]
    pub orphan_secs: u64,

    /// How long a popped contact is leased before a dialer that died is presumed dead, in seconds.
    #[arg(long, env = "SB_DIALER_LEASE_SECS", default_value_t = 30)]
    pub lease_secs: u64,

    /// Idle dialers look for work this often, in ms.
    #[arg(long, env = "SB_DIALER_IDLE_MS", default_value_t = 200)]
    pub idle_ms: u64,

    /// Twilio answered 429 or 5xx: the contact is tried again this much later, in seconds
    /// (not counted as an attempt).
    #[arg(long, env = "SB_DIALER_BACKOFF_SECS", default_value_t = 5)]
    pub backoff_secs: u64,
}

/// Why the dialer's settings are unusable.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("{0} is required")]
    Missing(&'static str),
    #[error("{var}: {reason}")]
    Invalid { var: &'static str, reason: String },
}

/// The validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub account: AccountSid,
    pub rest: TwilioRest,
    pub validator: RequestValidator,
    pub ingress_url: String,
    pub dialer_url: String,
    pub cps: CpsLimit,
    pub global_cap: Option<u32>,
    pub workers: usize,
    pub ring_secs: u32,
    pub reconcile: Duration,
    pub orphan: Duration,
    pub lease: Duration,
    pub idle: Duration,
    pub backoff: Duration,
}

fn base_url(var: &'static str, raw: Option<&String>) -> Result<String, ConfigError> {
    let raw = raw.ok_or(ConfigError::Missing(var))?;
    let parsed = reqwest::Url::parse(raw).map_err(|e| ConfigError::Invalid {
        var,
        reason: e.to_string(),
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.query().is_some() {
        return Err(ConfigError::Invalid {
            var,
            reason: "must be an http(s) URL without a query".into(),
        });
    }
    Ok(raw.trim_end_matches('/').to_owned())
}

impl Settings {
    pub fn from_config(config: &DialerConfig) -> Result<Self, ConfigError> {
        let sid = config
            .twilio_account_sid
            .as_deref()
            .ok_or(ConfigError::Missing("SB_TWILIO_ACCOUNT_SID"))?;
        let account = AccountSid::parse(sid).map_err(|e| ConfigError::Invalid {
            var: "SB_TWILIO_ACCOUNT_SID",
            reason: e.to_string(),
        })?;
        let token = config
            .twilio_auth_token
            .clone()
            .ok_or(ConfigError::Missing("SB_TWILIO_AUTH_TOKEN"))?;
        if !(config.cps > 0.0 && config.cps <= 10_000.0) {
            return Err(ConfigError::Invalid {
                var: "SB_DIALER_CPS",
                reason: "must be above 0 and at most 10000".into(),
            });
        }
        let auth = match (&config.twilio_api_key_sid, &config.twilio_api_key_secret) {
            (None, None) => RestAuth::auth_token(sid, token.expose()),
            (Some(key), Some(secret)) if is_sid(key, "SK") && !secret.is_empty() => {
                RestAuth::api_key(key, secret.expose())
            }
            (Some(_), Some(_)) => {
                return Err(ConfigError::Invalid {
                    var: "SB_TWILIO_API_KEY_SID",
                    reason: "must be SK + 32 hex digits, with a non-empty secret".into(),
                });
            }
            (Some(_), None) => return Err(ConfigError::Missing("SB_TWILIO_API_KEY_SECRET")),
            (None, Some(_)) => return Err(ConfigError::Missing("SB_TWILIO_API_KEY_SID")),
        };
        let rest = TwilioRest::new(
            &config.twilio_api_url,
            sid,
            auth,
            Duration::from_millis(config.twilio_timeout_ms),
        )
        .map_err(|e| ConfigError::Invalid {
            var: "SB_TWILIO_API_URL",
            reason: e.to_string(),
        })?;
        Ok(Self {
            account,
            rest,
            validator: RequestValidator::new(token.expose()),
            ingress_url: base_url("SB_PUBLIC_URL", config.ingress_public_url.as_ref())?,
            dialer_url: base_url("SB_DIALER_PUBLIC_URL", config.dialer_public_url.as_ref())?,
            cps: CpsLimit {
                per_second: config.cps,
                burst: config.cps_burst.max(1),
            },
            global_cap: (config.global_cap > 0).then_some(config.global_cap),
            workers: config.workers.max(1),
            ring_secs: config.ring_secs.clamp(5, 600),
            reconcile: Duration::from_secs(config.reconcile_secs.max(1)),
            orphan: Duration::from_secs(config.orphan_secs.max(1)),
            lease: Duration::from_secs(config.lease_secs.max(5)),
            idle: Duration::from_millis(config.idle_ms.clamp(10, 5_000)),
            backoff: Duration::from_secs(config.backoff_secs),
        })
    }
}
