//! The live-socket claim: `live:{call_sid}` names the one media socket serving a call.
//!
//! A socket that passed its call's checks claims the key with `SET NX` (value: a random
//! owner token of that socket, never anything the peer sent), refreshes it every
//! [`LIVE_SOCKET_REFRESH`] while it lives and deletes it at the end if it is still its own;
//! a socket that dies without ending leaves it for at most [`LIVE_SOCKET_TTL`]. Claiming and
//! refreshing also keep the call's admission record (`idem:{call_sid}`) alive for
//! [`IDEMPOTENCY_TTL`], so a status callback at the end of a long call still finds it.
//! Consumes call sids and owner tokens; produces verdicts. State: the keys, in Redis.

use std::time::Duration;

use redis::Script;
use sb_schemas::CallSid;

use super::idempotency::IDEMPOTENCY_TTL;
use super::{Redis, RedisError, failed};

/// How long a claim outlives its last refresh.
pub const LIVE_SOCKET_TTL: Duration = Duration::from_secs(30);
/// How often a live socket refreshes its claim.
pub const LIVE_SOCKET_REFRESH: Duration = Duration::from_secs(10);

/// Claims KEYS[1] for ARGV[1] unless anyone holds it; then keeps KEYS[2] alive.
const CLAIM: &str = r"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
";

/// Refreshes ARGV[1]'s claim on KEYS[1] (taking it again if it vanished) and KEYS[2]'s
/// TTL; 0 when another owner holds it.
const REFRESH: &str = r"
local owner = redis.call('GET', KEYS[1])
if owner and owner ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[3])
return 1
";

/// Deletes KEYS[1] if ARGV[1] still holds it.
const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";

impl Redis {
    /// Claims the call's live socket for `owner`: `false` when another socket holds it.
    pub async fn live_claim(&self, sid: &CallSid, owner: &str) -> Result<bool, RedisError> {
        self.live_script(CLAIM, sid, owner, "live_claim").await
    }

    /// Refreshes `owner`'s claim (re-taking it if it expired or Redis lost it): `false`
    /// when another socket holds it now.
    pub async fn live_refresh(&self, sid: &CallSid, owner: &str) -> Result<bool, RedisError> {
        self.live_script(REFRESH, sid, owner, "live_refresh").await
    }

    /// Releases `owner`'s claim; a claim someone else holds is left alone.
    pub async fn live_release(&self, sid: &CallSid, owner: &str) -> Result<(), RedisError> {
        Script::new(RELEASE)
            .key(self.keys.live_socket(sid))
            .arg(owner)
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(|_| ())
            .map_err(failed("live_release"))
    }

    async fn live_script(
        &self,
        script: &str,
        sid: &CallSid,
        owner: &str,
        op: &'static str,
    ) -> Result<bool, RedisError> {
        Script::new(script)
            .key(self.keys.live_socket(sid))
            .key(self.keys.idempotency(sid, None))
            .arg(owner)
            .arg(LIVE_SOCKET_TTL.as_secs())
            .arg(IDEMPOTENCY_TTL.as_secs())
            .invoke_async::<i64>(&mut self.conn())
            .await
            .map(|held| held == 1)
            .map_err(failed(op))
    }
}
