//! The stt worker's own settings (flags or `SB_*` environment variables).
//!
//! Consumes the command line / environment through clap; produces [`SttConfig`] and the
//! Deepgram client settings, validated at start-up so a missing key or a bad URL fails
//! before any call is taken, with a message naming the variable. State: none.

use std::time::Duration;

use sb_runtime::Secret;
use url::Url;

/// Deepgram models this worker is tuned for (phone audio).
pub const MODELS: [&str; 2] = ["nova-3", "nova-2-phonecall"];

/// How the worker takes and serves calls.
#[derive(Debug, Clone, clap::Args)]
pub struct SttConfig {
    /// Calls one replica serves at once; a lease is pulled only when a slot is free.
    #[arg(long, env = "SB_STT_MAX_CALLS", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_calls: u32,

    /// A call with no caller audio for this long is over (its `end` event was missed).
    #[arg(long, env = "SB_STT_IDLE_TIMEOUT_SECS", default_value_t = 60)]
    pub idle_timeout_secs: u64,

    /// Longest wait for the provider's last results after Finalize/CloseStream at call end.
    #[arg(long, env = "SB_STT_FINISH_TIMEOUT_MS", default_value_t = 5_000)]
    pub finish_timeout_ms: u64,

    /// Longest pause between provider reconnect attempts (backoff doubles up to this).
    #[arg(long, env = "SB_STT_RECONNECT_MAX_MS", default_value_t = 5_000)]
    pub reconnect_max_ms: u64,

    #[command(flatten)]
    pub deepgram: DeepgramConfig,
}

impl SttConfig {
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs.max(1))
    }

    pub fn finish_timeout(&self) -> Duration {
        Duration::from_millis(self.finish_timeout_ms.max(1))
    }

    pub fn reconnect_max(&self) -> Duration {
        Duration::from_millis(self.reconnect_max_ms.max(100))
    }

    /// Defaults with the given Deepgram endpoint and key (tests).
    pub fn for_tests(deepgram_url: &str, api_key: Option<&str>) -> Self {
        Self {
            max_calls: 50,
            idle_timeout_secs: 60,
            finish_timeout_ms: 5_000,
            reconnect_max_ms: 1_000,
            deepgram: DeepgramConfig {
                url: deepgram_url.to_owned(),
                api_key: api_key.map(Secret::new),
                model: MODELS[0].to_owned(),
                keepalive_ms: 4_000,
            },
        }
    }
}

/// The Deepgram live-streaming endpoint.
#[derive(Debug, Clone, clap::Args)]
pub struct DeepgramConfig {
    /// Deepgram base URL (ws:// or wss://); `/v1/listen` is appended.
    #[arg(
        long = "deepgram-url",
        env = "SB_DEEPGRAM_URL",
        default_value = "wss://api.deepgram.com"
    )]
    pub url: String,

    /// Deepgram API key (`Authorization: Token …`); required unless the URL is loopback.
    #[arg(
        long = "deepgram-api-key",
        env = "SB_DEEPGRAM_API_KEY",
        hide_env_values = true
    )]
    pub api_key: Option<Secret>,

    /// Deepgram model.
    #[arg(long = "deepgram-model", env = "SB_DEEPGRAM_MODEL", default_value = MODELS[0],
          value_parser = MODELS)]
    pub model: String,

    /// KeepAlive interval while no audio flows (Deepgram closes after ~10 s of nothing).
    #[arg(
        long = "deepgram-keepalive-ms",
        env = "SB_DEEPGRAM_KEEPALIVE_MS",
        default_value_t = 4_000
    )]
    pub keepalive_ms: u64,
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("SB_DEEPGRAM_URL {url:?} is not a ws:// or wss:// URL: {reason}")]
    Url { url: String, reason: String },
    #[error("SB_DEEPGRAM_API_KEY is required for {host} (only a loopback URL may go without)")]
    MissingKey { host: String },
    #[error("SB_DEEPGRAM_MODEL {0:?} is not one of {MODELS:?}")]
    Model(String),
    #[error("SB_DEEPGRAM_KEEPALIVE_MS must be between 1000 and 9000 (Deepgram closes after 10 s)")]
    KeepAlive,
}

impl DeepgramConfig {
    /// Checks the settings; returns the `…/v1/listen` URL without a query.
    pub fn validate(&self) -> Result<Url, ConfigError> {
        let bad = |reason: &str| ConfigError::Url {
            url: self.url.clone(),
            reason: reason.to_owned(),
        };
        let mut url = Url::parse(&self.url).map_err(|e| bad(&e.to_string()))?;
        if !matches!(url.scheme(), "ws" | "wss") {
            return Err(bad("the scheme must be ws or wss"));
        }
        let host = url.host_str().ok_or_else(|| bad("no host"))?.to_owned();
        if url.query().is_some() {
            return Err(bad("no query string, please: the worker builds it"));
        }
        let no_key = self.api_key.as_ref().is_none_or(Secret::is_empty);
        if no_key && !is_loopback(&host) {
            return Err(ConfigError::MissingKey { host });
        }
        if !MODELS.contains(&self.model.as_str()) {
            return Err(ConfigError::Model(self.model.clone()));
        }
        if !(1_000..=9_000).contains(&self.keepalive_ms) {
            return Err(ConfigError::KeepAlive);
        }
        let path = format!("{}/v1/listen", url.path().trim_end_matches('/'));
        url.set_path(&path);
        Ok(url)
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, key: Option<&str>) -> DeepgramConfig {
        SttConfig::for_tests(url, key).deepgram
    }

    /// URLs, keys and models are checked up front, each error naming its variable.
    #[test]
    fn validates_settings() {
        let cases = [
            (
                "wss://api.deepgram.com",
                Some("k"),
                Ok("wss://api.deepgram.com/v1/listen"),
            ),
            (
                "wss://proxy.example/dg/",
                Some("k"),
                Ok("wss://proxy.example/dg/v1/listen"),
            ),
            (
                "ws://127.0.0.1:9000",
                None,
                Ok("ws://127.0.0.1:9000/v1/listen"),
            ),
            ("ws://[::1]:9000", None, Ok("ws://[::1]:9000/v1/listen")),
            (
                "ws://localhost:9000",
                None,
                Ok("ws://localhost:9000/v1/listen"),
            ),
            ("wss://api.deepgram.com", None, Err("SB_DEEPGRAM_API_KEY")),
            (
                "wss://api.deepgram.com",
                Some(""),
                Err("SB_DEEPGRAM_API_KEY"),
            ),
            (
                "https://api.deepgram.com",
                Some("k"),
                Err("SB_DEEPGRAM_URL"),
            ),
            ("not a url", Some("k"), Err("SB_DEEPGRAM_URL")),
            (
                "wss://api.deepgram.com/?model=x",
                Some("k"),
                Err("SB_DEEPGRAM_URL"),
            ),
        ];
        for (url, key, expected) in cases {
            let got = config(url, key).validate();
            match (got, expected) {
                (Ok(u), Ok(e)) => assert_eq!(u.as_str(), e, "{url}"),
                (Err(err), Err(var)) => assert!(err.to_string().contains(var), "{url}: {err}"),
                (got, expected) => panic!("{url}: got {got:?}, expected {expected:?}"),
            }
        }
        let mut bad_model = config("ws://127.0.0.1:1", None);
        bad_model.model = "whisper".into();
        assert!(
            bad_model
                .validate()
                .unwrap_err()
                .to_string()
                .contains("SB_DEEPGRAM_MODEL")
        );
    }

    /// The key never reaches Debug output.
    #[test]
    fn key_is_secret() {
        let shown = format!("{:?}", config("wss://x", Some("dg-secret-123")));
        assert!(!shown.contains("dg-secret-123"), "{shown}");
    }
}
