//! Idempotency keys: `idem:{call_sid}[:{scope}]`, claimed with `SET NX EX`.
//!
//! The first caller to claim a key gets `true`; every repeat inside the TTL (5 min by
//! default) gets `false`. Used for Twilio webhook retries and status callbacks. If the key
//! is evicted the duplicate passes, which the handlers tolerate (ARCHITECTURE §6).

use std::time::Duration;

use sb_schemas::CallSid;

use super::{Redis, RedisError, failed};

/// How long a claim lasts by default.
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(300);

impl Redis {
    /// Claims `idem:{sid}[:{scope}]` for `ttl`. `true` for the first caller only.
    pub async fn claim_once(
        &self,
        sid: &CallSid,
        scope: Option<&str>,
        ttl: Duration,
    ) -> Result<bool, RedisError> {
        let claimed: Option<String> = redis::cmd("SET")
            .arg(self.keys.idempotency(sid, scope))
            .arg(1)
            .arg("NX")
            .arg("EX")
            .arg(ttl.as_secs().max(1))
            .query_async(&mut self.conn())
            .await
            .map_err(failed("claim_once"))?;
        Ok(claimed.is_some())
    }
}
