//! Redis: every hot-path key pattern of ARCHITECTURE §6 behind one handle.
//!
//! Consumes a Redis URL; produces typed operations for sessions ([`session`]), idempotency
//! keys and admission records ([`idempotency`]), the live-socket claim ([`live_socket`]),
//! per-tenant rate limits ([`rate_limit`]), answers started on interim transcripts
//! ([`preflight`]), the TTS audio cache ([`tts_cache`]), the
//! minimal campaign priority queue ([`queue`]), the campaign queue of outbound calls with
//! leases, caps and fairness ([`campaigns`]) and the LLM limits every agent replica
//! shares ([`llm_limits`]). Key names come only from [`keys`]. State: a `ConnectionManager`
//! (reconnects in the background); blocking pops use a connection of their own.

pub mod campaigns;
pub mod handoff;
pub mod idempotency;
pub mod keys;
pub mod live_socket;
pub mod llm_limits;
pub mod paused;
pub mod preflight;
pub mod rate_limit;
pub mod session;
pub mod session_restore;
pub mod tts_cache;

use std::time::Duration;

use redis::aio::ConnectionManager;

pub use keys::Keys;

use crate::metrics::Metric;

#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    #[error("redis {op} failed: {source}")]
    Command {
        op: &'static str,
        source: redis::RedisError,
    },
    #[error("cannot connect to redis: {0}")]
    Connect(redis::RedisError),
    #[error("corrupt {what} in redis: {reason}")]
    Corrupt { what: &'static str, reason: String },
}

impl RedisError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            RedisError::Command { op, .. } => op,
            RedisError::Connect(_) => "connect",
            RedisError::Corrupt { .. } => "corrupt",
        }
    }
}

/// Wraps a command error with the operation's name and counts it.
pub(crate) fn failed(op: &'static str) -> impl FnOnce(redis::RedisError) -> RedisError {
    move |source| {
        metrics::counter!(Metric::RedisErrors.name(), "op" => op).increment(1);
        RedisError::Command { op, source }
    }
}

/// The shared Redis handle. Cheap to clone.
#[derive(Clone)]
pub struct Redis {
    conn: ConnectionManager,
    keys: Keys,
    session_ttl: Duration,
}

impl std::fmt::Debug for Redis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Redis")
            .field("keys", &self.keys)
            .finish_non_exhaustive()
    }
}

impl Redis {
    /// Connects; commands time out after 500 ms (redis-rs default) and reconnect in the background.
    pub async fn connect(url: &str, keys: Keys, session_ttl: Duration) -> Result<Self, RedisError> {
        let client = redis::Client::open(url).map_err(RedisError::Connect)?;
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(Some(Duration::from_millis(500)))
            .set_number_of_retries(6);
        let conn = client
            .get_connection_manager_with_config(config)
            .await
            .map_err(RedisError::Connect)?;
        Ok(Self {
            conn,
            keys,
            session_ttl,
        })
    }

    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// A connection for ordinary commands (multiplexed; clone freely).
    pub(crate) fn conn(&self) -> ConnectionManager {
        self.conn.clone()
    }

    /// `PING`, for `/ready`.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut conn = self.conn();
        redis::cmd("PING")
            .query_async::<String>(&mut conn)
            .await
            .map(|_| ())
            .map_err(failed("ping"))
    }
}
