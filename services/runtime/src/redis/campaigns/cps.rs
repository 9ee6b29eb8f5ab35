//! The calls-per-second limit of a Twilio account, shared by every dialer replica.
//!
//! Consumes an account sid, its [`CpsLimit`] and the caller's clock (`now_ms`); produces
//! a verdict: place the call now, or wait this long. State: `cq:cps:{account}`, a token
//! bucket hash (`tokens`, `at`) without a TTL, changed only by the `CPS` Lua script, so
//! any number of replicas together stay within the rate. A clock behind the stored `at`
//! (another replica's) refills nothing, so skew never grants extra calls. Losing the key
//! refills the bucket: at most one more burst.

use std::time::Duration;

use super::scripts::CPS_SCRIPT;
use super::{AccountSid, CampaignQueue};
use crate::redis::{RedisError, failed};

/// A token bucket: `per_second` calls on average, `burst` at once after a quiet spell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct CpsLimit {
    pub per_second: f64,
    pub burst: u32,
}

/// The verdict for one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpsVerdict {
    Go,
    /// No token: try again after this long.
    Wait(Duration),
}

impl CampaignQueue {
    /// Takes one token from `account`'s bucket if there is one.
    pub async fn cps_take(
        &self,
        account: &AccountSid,
        limit: CpsLimit,
        now_ms: u64,
    ) -> Result<CpsVerdict, RedisError> {
        let (go, wait_ms): (u8, u64) = CPS_SCRIPT
            .key(self.keys.cq_cps(account))
            .arg(limit.per_second.max(0.001))
            .arg(limit.burst.max(1))
            .arg(now_ms)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_cps"))?;
        Ok(if go == 1 {
            CpsVerdict::Go
        } else {
            CpsVerdict::Wait(Duration::from_millis(wait_ms))
        })
    }
}
