//! LLM limits shared by every agent replica: leased slots per tenant and the global AIMD
//! limit (ARCHITECTURE §7).
//!
//! Consumes an [`LlmClaim`] (tenant, a random holder id, the tenant's tier, the lease, the
//! AIMD bounds) and request outcomes; produces verdicts ([`Attempt`]) and the limit as it
//! stands. State, all in Redis: `llm:slots:{tenant}` and `llm:aimd:slots`, ZSETs of the
//! holders in flight scored by their lease's expiry (ms on Redis' own clock, so replicas'
//! clocks never matter), and `llm:aimd`, a hash with the limit, the congestion epoch and
//! the `retry-after` gate. Every step is one Lua script: an acquire drops expired leases,
//! then takes a tenant slot and a global slot together or neither; a held claim renews
//! its lease; a release gives both back (+1 on success); a 429 halves the limit once per
//! epoch and raises the gate. A replica that dies without releasing loses its slots when
//! their leases run out. The slot sets have no TTL (an empty ZSET deletes itself), so
//! `volatile-lru` never evicts a slot in use; losing `llm:aimd` restarts the limit from
//! its initial value. The arithmetic is `sb_agent::aimd::Window`'s, transcribed; a ring-3
//! test replays its table against these scripts.

use std::sync::LazyLock;
use std::time::Duration;

use redis::Script;
use sb_schemas::TenantId;

use super::{Redis, RedisError, failed};

/// Bounds and starting point of the global AIMD limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AimdBounds {
    pub initial: u32,
    pub min: u32,
    pub max: u32,
}

impl AimdBounds {
    /// The bounds as applied: `min` at least 1, `max` at least `min`, `initial` between.
    pub fn normalised(self) -> Self {
        let min = self.min.max(1);
        let max = self.max.max(min);
        Self {
            initial: self.initial.clamp(min, max),
            min,
            max,
        }
    }
}

/// One LLM request's claim on a tenant slot and a global slot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LlmClaim {
    pub tenant: TenantId,
    /// Names this request in both slot sets; unique ([`holder_id`]).
    pub holder: String,
    /// The tenant's tier: requests in flight on all replicas together.
    pub tenant_limit: u32,
    /// How long the slots outlive the last acquire or renewal.
    pub lease: Duration,
    pub bounds: AimdBounds,
}

/// What one try at the slots found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    /// Both slots are the claim's now.
    Granted,
    /// The tenant's tier is in use.
    TenantFull,
    /// The global limit is in use.
    GlobalFull,
    /// A 429's `retry-after` keeps every request out for this long.
    Gated(Duration),
}

/// A verdict and the AIMD limit and epoch it was made under.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attempt {
    pub admission: Admission,
    pub limit: u32,
    pub epoch: u64,
}

/// The AIMD limit and its congestion epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AimdState {
    pub limit: u32,
    pub epoch: u64,
}

/// A fresh holder id: 128 random bits, hex.
pub fn holder_id() -> String {
    format!("{:032x}", rand::random::<u128>())
}

/// Shared by every script: Redis' clock in ms, and the AIMD hash read within the bounds
/// ARGV[1..3] (initial, min, max).
const PRELUDE: &str = r"
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function window(hash)
  local v = redis.call('HMGET', hash, 'limit', 'epoch', 'gate')
  local min, max = tonumber(ARGV[2]), tonumber(ARGV[3])
  local limit = math.max(min, math.min(max, tonumber(v[1] or ARGV[1])))
  return limit, tonumber(v[2] or '0'), tonumber(v[3] or '0')
end
";

/// KEYS: tenant slots, aimd hash, aimd slots. ARGV[4..6]: holder, tenant limit, lease ms.
/// Returns {verdict (0 granted, 1 tenant full, 2 global full, 3 gated), limit, epoch,
/// gate ms left}.
const ACQUIRE: &str = r"
local now = now_ms()
local limit, epoch, gate = window(KEYS[2])
if gate > now then return {3, limit, epoch, gate - now} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[5]) then return {1, limit, epoch, 0} end
if redis.call('ZCARD', KEYS[3]) >= limit then return {2, limit, epoch, 0} end
local expiry = now + tonumber(ARGV[6])
redis.call('ZADD', KEYS[1], expiry, ARGV[4])
redis.call('ZADD', KEYS[3], expiry, ARGV[4])
return {0, limit, epoch, 0}
";

/// KEYS: tenant slots, aimd slots. ARGV[4..5]: holder, lease ms. Pushes the expiry of
/// each lease the holder still has (an expired one is not taken back); returns how many.
const RENEW: &str = r"
local now = now_ms()
local held = 0
for _, key in ipairs(KEYS) do
  local score = redis.call('ZSCORE', key, ARGV[4])
  if score and tonumber(score) > now then
    redis.call('ZADD', key, now + tonumber(ARGV[5]), ARGV[4])
    held = held + 1
  end
end
return held
";

/// KEYS: tenant slots, aimd hash, aimd slots. ARGV[4..5]: holder, success (1 or 0).
/// Returns {limit, epoch}.
const RELEASE: &str = r"
redis.call('ZREM', KEYS[1], ARGV[4])
redis.call('ZREM', KEYS[3], ARGV[4])
local limit, epoch = window(KEYS[2])
if ARGV[5] == '1' then
  limit = math.min(limit + 1, tonumber(ARGV[3]))
  redis.call('HSET', KEYS[2], 'limit', limit)
end
return {limit, epoch}
";

/// KEYS: aimd hash. ARGV[4..5]: the epoch the request started in, retry-after ms (0:
/// none). Halves once per epoch, raises the gate. Returns {limit, epoch}.
const RATE_LIMITED: &str = r"
local now = now_ms()
local limit, epoch, gate = window(KEYS[1])
if tonumber(ARGV[4]) == epoch then
  limit = math.max(math.floor(limit / 2), tonumber(ARGV[2]))
  epoch = epoch + 1
  redis.call('HSET', KEYS[1], 'limit', limit, 'epoch', epoch)
end
local after = tonumber(ARGV[5])
if after > 0 and now + after > gate then redis.call('HSET', KEYS[1], 'gate', now + after) end
return {limit, epoch}
";

fn script(body: &str) -> Script {
    Script::new(&[PRELUDE, body].concat())
}

static ACQUIRE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(ACQUIRE));
static RENEW_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(RENEW));
static RELEASE_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(RELEASE));
static RATE_LIMITED_SCRIPT: LazyLock<Script> = LazyLock::new(|| script(RATE_LIMITED));

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn corrupt(reply: &[i64]) -> RedisError {
    RedisError::Corrupt {
        what: "llm limits reply",
        reason: format!("{reply:?}"),
    }
}

fn state(reply: &[i64]) -> Result<AimdState, RedisError> {
    match *reply {
        [limit, epoch] => Ok(AimdState {
            limit: u32::try_from(limit).map_err(|_| corrupt(reply))?,
            epoch: u64::try_from(epoch).map_err(|_| corrupt(reply))?,
        }),
        _ => Err(corrupt(reply)),
    }
}

impl Redis {
    /// One try at a tenant slot and a global slot (both or neither); never waits.
    pub async fn llm_acquire(&self, claim: &LlmClaim) -> Result<Attempt, RedisError> {
        let b = claim.bounds.normalised();
        let reply: Vec<i64> = ACQUIRE_SCRIPT
            .key(self.keys.llm_slots(&claim.tenant))
            .key(self.keys.llm_aimd())
            .key(self.keys.llm_aimd_slots())
            .arg(b.initial)
            .arg(b.min)
            .arg(b.max)
            .arg(&claim.holder)
            .arg(claim.tenant_limit)
            .arg(millis(claim.lease).max(1))
            .invoke_async(&mut self.conn())
            .await
            .map_err(failed("llm_acquire"))?;
        let [verdict, limit, epoch, gate] = reply[..] else {
            return Err(corrupt(&reply));
        };
        let admission = match verdict {
            0 => Admission::Granted,
            1 => Admission::TenantFull,
            2 => Admission::GlobalFull,
            3 => Admission::Gated(Duration::from_millis(gate.max(0) as u64)),
            _ => return Err(corrupt(&reply)),
        };
        let AimdState { limit, epoch } = state(&[limit, epoch])?;
        Ok(Attempt {
            admission,
            limit,
            epoch,
        })
    }

    /// Extends the claim's leases by `claim.lease` from now; `false` when a lease had
    /// already run out (another replica may hold that slot now).
    pub async fn llm_renew(&self, claim: &LlmClaim) -> Result<bool, RedisError> {
        let b = claim.bounds.normalised();
        let held: i64 = RENEW_SCRIPT
            .key(self.keys.llm_slots(&claim.tenant))
            .key(self.keys.llm_aimd_slots())
            .arg(b.initial)
            .arg(b.min)
            .arg(b.max)
            .arg(&claim.holder)
            .arg(millis(claim.lease).max(1))
            .invoke_async(&mut self.conn())
            .await
            .map_err(failed("llm_renew"))?;
        Ok(held == 2)
    }

    /// Gives both slots back; a `success` grows the limit by one.
    pub async fn llm_release(
        &self,
        claim: &LlmClaim,
        success: bool,
    ) -> Result<AimdState, RedisError> {
        let b = claim.bounds.normalised();
        let reply: Vec<i64> = RELEASE_SCRIPT
            .key(self.keys.llm_slots(&claim.tenant))
            .key(self.keys.llm_aimd())
            .key(self.keys.llm_aimd_slots())
            .arg(b.initial)
            .arg(b.min)
            .arg(b.max)
            .arg(&claim.holder)
            .arg(u8::from(success))
            .invoke_async(&mut self.conn())
            .await
            .map_err(failed("llm_release"))?;
        state(&reply)
    }

    /// A 429 for a request that started in `started_epoch`: the limit halves unless this
    /// congestion event was already answered, and `retry_after` closes the gate for
    /// everyone.
    pub async fn llm_rate_limited(
        &self,
        bounds: AimdBounds,
        started_epoch: u64,
        retry_after: Option<Duration>,
    ) -> Result<AimdState, RedisError> {
        let b = bounds.normalised();
        let reply: Vec<i64> = RATE_LIMITED_SCRIPT
            .key(self.keys.llm_aimd())
            .arg(b.initial)
            .arg(b.min)
            .arg(b.max)
            .arg(started_epoch)
            .arg(retry_after.map_or(0, millis))
            .invoke_async(&mut self.conn())
            .await
            .map_err(failed("llm_rate_limited"))?;
        state(&reply)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (bounds, as applied): the minimum is at least 1, the maximum at least the minimum,
    /// the start between them.
    #[test]
    fn bounds_table() {
        let b = |initial, min, max| AimdBounds { initial, min, max };
        for (given, applied) in [
            (b(32, 2, 256), b(32, 2, 256)),
            (b(0, 0, 0), b(1, 1, 1)),
            (b(500, 2, 64), b(64, 2, 64)),
            (b(1, 4, 2), b(4, 4, 4)),
        ] {
            assert_eq!(given.normalised(), applied, "{given:?}");
        }
    }

    #[test]
    fn holders_are_unique_hex() {
        let (a, b) = (holder_id(), holder_id());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit()));
    }
}
