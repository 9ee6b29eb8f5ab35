//! Per-tenant rate limits: `rl:{tenant}:{window}`, a fixed-window counter.
//!
//! `INCR` and `EXPIRE … NX` run in one MULTI, so the count is exact under any number of
//! concurrent callers and the key dies with its window. Admitted when the count is within
//! the limit. An evicted counter just resets the window (ARCHITECTURE §6).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sb_schemas::TenantId;

use super::{Redis, RedisError, failed};

/// The verdict for one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateDecision {
    pub admitted: bool,
    /// Requests counted in this window, this one included.
    pub count: u64,
    /// Until the window resets.
    pub retry_after: Duration,
}

impl Redis {
    /// Counts one request of `tenant` in the window containing `now`.
    pub async fn rate_limit(
        &self,
        tenant: &TenantId,
        limit: u32,
        window: Duration,
        now: SystemTime,
    ) -> Result<RateDecision, RedisError> {
        let window_secs = window.as_secs().max(1);
        let now_secs = now
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0);
        let index = now_secs / window_secs;
        let key = self.keys.rate_limit(tenant, index);
        let (count,): (u64,) = redis::pipe()
            .atomic()
            .incr(&key, 1)
            .cmd("EXPIRE")
            .arg(&key)
            .arg(window_secs + 1)
            .arg("NX")
            .ignore()
            .query_async(&mut self.conn())
            .await
            .map_err(failed("rate_limit"))?;
        let retry_after = Duration::from_secs((index + 1) * window_secs - now_secs);
        Ok(RateDecision {
            admitted: count <= u64::from(limit),
            count,
            retry_after,
        })
    }
}
