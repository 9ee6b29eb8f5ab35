//! Settings every service shares, read by clap from flags or `SB_*` environment variables.
//!
//! Each binary flattens [`RuntimeConfig`] into its own `Config`, so `--help` documents the
//! whole surface. Secrets are wrapped in [`Secret`] and never printed. State: none.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr, time::Duration};

/// How a process reaches NATS: URL(s), its user and password, TLS.
#[derive(Debug, Clone, clap::Args)]
pub struct NatsConfig {
    /// NATS server URL, or several comma-separated (a cluster's nodes). JetStream must be
    /// enabled; nats-server 2.11 or newer.
    #[arg(
        id = "nats_url",
        long = "nats-url",
        env = "SB_NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    pub url: String,

    /// NATS user (default: the service's name, its role in `nats/auth.conf`).
    #[arg(id = "nats_user", long = "nats-user", env = "SB_NATS_USER")]
    pub user: Option<String>,

    /// NATS password of that user; unset connects without auth (a server without users).
    #[arg(
        id = "nats_password",
        long = "nats-password",
        env = "SB_NATS_PASSWORD",
        hide_env_values = true
    )]
    pub password: Option<Secret>,

    /// CA certificate (PEM) to verify NATS with: TLS is then required.
    #[arg(id = "nats_tls_ca", long = "nats-tls-ca", env = "SB_NATS_TLS_CA")]
    pub tls_ca: Option<PathBuf>,
}

impl NatsConfig {
    pub fn anonymous(url: &str) -> Self {
        Self {
            url: url.to_owned(),
            user: None,
            password: None,
            tls_ca: None,
        }
    }

    /// The settings of `login` (a test server's user).
    pub fn from_login(login: &crate::nats::NatsLogin) -> Self {
        Self {
            url: login.url.clone(),
            user: login.user.as_ref().map(|(u, _)| u.clone()),
            password: login.user.as_ref().map(|(_, p)| p.clone()),
            tls_ca: login.tls_ca.clone(),
        }
    }

    /// How `service` logs in: as the configured user (or the service's name) when a
    /// password is set, anonymously otherwise.
    pub fn login(&self, service: &str) -> crate::nats::NatsLogin {
        let mut login =
            crate::nats::NatsLogin::anonymous(&self.url, service).with_tls_ca(self.tls_ca.clone());
        if let Some(password) = &self.password {
            let user = self.user.clone().unwrap_or_else(|| service.to_owned());
            login.user = Some((user, password.clone()));
        }
        login
    }
}

/// Connections, files and lifecycle settings shared by every service.
#[derive(Debug, Clone, clap::Args)]
pub struct RuntimeConfig {
    #[command(flatten)]
    pub nats: NatsConfig,

    /// Redis URL for sessions, idempotency keys, rate limits and the campaign queue: the
    /// instance that must never evict (AOF, volatile-lru). `redis://:PASSWORD@host:6379`,
    /// `rediss://` for TLS.
    #[arg(long, env = "SB_REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: Secret,

    /// Redis URL for the TTS cache: its own instance (allkeys-lru), so a burst of cached
    /// audio can never evict a live session. Unset: the TTS cache shares SB_REDIS_URL.
    #[arg(long, env = "SB_REDIS_CACHE_URL")]
    pub redis_cache_url: Option<Secret>,

    /// Prefix for every Redis key (lets several deployments or tests share one Redis).
    #[arg(long, env = "SB_REDIS_KEY_PREFIX", default_value = "")]
    pub redis_key_prefix: String,

    /// Tenant configuration file (ARCHITECTURE §2a).
    #[arg(
        long,
        env = "SB_TENANTS_FILE",
        default_value = "deploy/base/tenants.toml"
    )]
    pub tenants_file: PathBuf,

    /// Address of the HTTP server for /health, /ready and /metrics (and the ingress routes).
    #[arg(long, env = "SB_HTTP_ADDR", default_value = "127.0.0.1:9100")]
    pub http_addr: SocketAddr,

    /// Log format: json, pretty, or auto (pretty on a terminal, json otherwise).
    #[arg(long, env = "SB_LOG_FORMAT", value_enum, default_value = "auto")]
    pub log_format: crate::telemetry::LogFormat,

    /// After SIGTERM, how long in-flight work may take before the rest is handed back (NAK).
    #[arg(long, env = "SB_DRAIN_DEADLINE_SECS", default_value_t = 20)]
    pub drain_deadline_secs: u64,

    /// Session TTL, refreshed on every turn.
    #[arg(long, env = "SB_SESSION_TTL_SECS", default_value_t = 1800)]
    pub session_ttl_secs: u64,
}

impl RuntimeConfig {
    /// Defaults for tests: the given servers, everything else as in production.
    pub fn for_tests(nats_url: &str, redis_url: &str, key_prefix: &str) -> Self {
        Self {
            nats: NatsConfig::anonymous(nats_url),
            redis_url: Secret::new(redis_url),
            redis_cache_url: None,
            redis_key_prefix: key_prefix.to_owned(),
            tenants_file: PathBuf::from("deploy/base/tenants.toml"),
            http_addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            log_format: crate::telemetry::LogFormat::Json,
            drain_deadline_secs: 5,
            session_ttl_secs: 1800,
        }
    }

    pub fn drain_deadline(&self) -> Duration {
        Duration::from_secs(self.drain_deadline_secs)
    }

    pub fn session_ttl(&self) -> Duration {
        Duration::from_secs(self.session_ttl_secs)
    }
}

/// A string that must never reach a log line: `Debug` and `Display` print `***`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret value, for the one place that needs it.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

impl FromStr for Secret {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        runtime: RuntimeConfig,
    }

    #[test]
    fn secrets_are_not_printed() {
        let cli = Cli::parse_from([
            "x",
            "--redis-url",
            "redis://:hunter2@db:6379",
            "--nats-password",
            "swordfish",
        ]);
        let shown = format!("{cli:?} {:?}", cli.runtime.nats.login("agent"));
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("swordfish"), "{shown}");
        assert_eq!(cli.runtime.redis_url.expose(), "redis://:hunter2@db:6379");
    }

    #[test]
    fn defaults_parse() {
        let cli = Cli::parse_from(["x"]);
        assert_eq!(cli.runtime.drain_deadline(), Duration::from_secs(20));
        assert_eq!(cli.runtime.nats.url, "nats://127.0.0.1:4222");
    }
}
