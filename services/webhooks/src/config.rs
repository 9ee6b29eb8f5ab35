//! The webhooks worker's own settings (`SB_WEBHOOK_*`), checked at start-up.
//!
//! Consumes flags or environment variables (clap); produces a [`WebhooksConfig`] whose
//! errors name the variable to fix. State: none.

/// How webhooks are sent and retried.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhooksConfig {
    /// Time allowed for one attempt (connect to answer).
    #[arg(long, env = "SB_WEBHOOK_TIMEOUT_MS", default_value_t = 5_000)]
    pub webhook_timeout_ms: u64,

    /// The first retry's delay; each later one doubles, up to SB_WEBHOOK_RETRY_MAX_MS.
    #[arg(long, env = "SB_WEBHOOK_RETRY_BASE_MS", default_value_t = 1_000)]
    pub webhook_retry_base_ms: u64,

    /// The longest delay between two attempts.
    #[arg(long, env = "SB_WEBHOOK_RETRY_MAX_MS", default_value_t = 300_000)]
    pub webhook_retry_max_ms: u64,

    /// How long an undelivered webhook is retried before it is dead-lettered.
    #[arg(long, env = "SB_WEBHOOK_RETRY_WINDOW_SECS", default_value_t = 3_600)]
    pub webhook_retry_window_secs: u64,

    /// Requests one tenant may have in flight at once (from this replica); more wait
    /// their turn without holding the worker.
    #[arg(long, env = "SB_WEBHOOK_PER_TENANT", default_value_t = 16)]
    pub webhook_per_tenant: usize,
}

impl WebhooksConfig {
    /// The defaults, as `--help` shows them.
    pub fn defaults() -> Self {
        Self {
            webhook_timeout_ms: 5_000,
            webhook_retry_base_ms: 1_000,
            webhook_retry_max_ms: 300_000,
            webhook_retry_window_secs: 3_600,
            webhook_per_tenant: 16,
        }
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(100..=60_000).contains(&self.webhook_timeout_ms) {
            return Err("SB_WEBHOOK_TIMEOUT_MS must be between 100 and 60000".into());
        }
        if self.webhook_retry_base_ms == 0 || self.webhook_retry_base_ms > self.webhook_retry_max_ms
        {
            return Err(
                "SB_WEBHOOK_RETRY_BASE_MS must be above 0 and at most SB_WEBHOOK_RETRY_MAX_MS"
                    .into(),
            );
        }
        if self.webhook_retry_window_secs == 0 {
            return Err("SB_WEBHOOK_RETRY_WINDOW_SECS must be above 0".into());
        }
        if self.webhook_per_tenant == 0 {
            return Err("SB_WEBHOOK_PER_TENANT must be at least 1".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_names_the_variable() {
        assert_eq!(WebhooksConfig::defaults().validate(), Ok(()));
        type Change = fn(&mut WebhooksConfig);
        let cases: [(Change, &str); 4] = [
            (|c| c.webhook_timeout_ms = 10, "SB_WEBHOOK_TIMEOUT_MS"),
            (|c| c.webhook_retry_base_ms = 0, "SB_WEBHOOK_RETRY_BASE_MS"),
            (
                |c| c.webhook_retry_window_secs = 0,
                "SB_WEBHOOK_RETRY_WINDOW_SECS",
            ),
            (|c| c.webhook_per_tenant = 0, "SB_WEBHOOK_PER_TENANT"),
        ];
        for (change, var) in cases {
            let mut config = WebhooksConfig::defaults();
            change(&mut config);
            assert!(config.validate().unwrap_err().contains(var), "{var}");
        }
    }
}
