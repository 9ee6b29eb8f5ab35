//! The campaign priority queue: `queue:campaigns:{tenant}`, a ZSET KEDA scales dialers on.
//!
//! Score = −priority and member = `{seq:020}|{payload}`, so `ZPOPMIN` takes the highest
//! priority first and, within a priority, the lowest sequence number (FIFO). The sequence
//! comes from `queue:campaigns:{tenant}:seq`. Neither key has a TTL, so `volatile-lru`
//! never evicts them and AOF keeps them across restarts. Blocking pops run on a
//! [`QueuePopper`], a connection of their own without a response timeout.

use std::time::Duration;

use redis::{Script, aio::MultiplexedConnection};
use sb_schemas::TenantId;

use super::{Keys, Redis, RedisError, failed};

/// One outbound call waiting to be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CampaignJob {
    pub tenant: TenantId,
    pub priority: u16,
    pub seq: u64,
    /// Opaque to the queue (the dialer's JSON).
    pub payload: String,
}

const ENQUEUE: &str = r"
local seq = redis.call('INCR', KEYS[2])
redis.call('ZADD', KEYS[1], ARGV[1], string.format('%020d', seq) .. '|' .. ARGV[2])
return seq
";

impl Redis {
    /// Enqueues a job; higher `priority` is served first, FIFO within a priority.
    pub async fn queue_push(
        &self,
        tenant: &TenantId,
        priority: u16,
        payload: &str,
    ) -> Result<u64, RedisError> {
        Script::new(ENQUEUE)
            .key(self.keys.campaign_queue(tenant))
            .key(self.keys.campaign_seq(tenant))
            .arg(-i64::from(priority))
            .arg(payload)
            .invoke_async(&mut self.conn())
            .await
            .map_err(failed("queue_push"))
    }

    /// Jobs waiting for `tenant` (what KEDA's `redis` trigger reads with ZCARD).
    pub async fn queue_len(&self, tenant: &TenantId) -> Result<u64, RedisError> {
        redis::cmd("ZCARD")
            .arg(self.keys.campaign_queue(tenant))
            .query_async(&mut self.conn())
            .await
            .map_err(failed("queue_len"))
    }

    /// A dedicated connection for blocking pops (a blocking command would stall every
    /// other command queued on the shared connection).
    pub async fn queue_popper(&self) -> Result<QueuePopper, RedisError> {
        let config = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(2)))
            .set_response_timeout(None);
        let conn = self
            .client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(RedisError::Connect)?;
        Ok(QueuePopper {
            conn,
            keys: self.keys.clone(),
        })
    }
}

/// Blocking pops of campaign jobs, on a connection of its own.
pub struct QueuePopper {
    conn: MultiplexedConnection,
    keys: Keys,
}

impl QueuePopper {
    /// Waits up to `timeout` for the next job among `tenants` (earlier tenants first when
    /// several have jobs). `None` when the wait timed out.
    pub async fn pop(
        &mut self,
        tenants: &[TenantId],
        timeout: Duration,
    ) -> Result<Option<CampaignJob>, RedisError> {
        let keys: Vec<String> = tenants
            .iter()
            .map(|t| self.keys.campaign_queue(t))
            .collect();
        let popped: Option<(String, String, f64)> = redis::cmd("BZPOPMIN")
            .arg(&keys)
            .arg(timeout.as_secs_f64())
            .query_async(&mut self.conn)
            .await
            .map_err(failed("queue_pop"))?;
        let Some((key, member, score)) = popped else {
            return Ok(None);
        };
        let tenant = keys
            .iter()
            .position(|k| *k == key)
            .map(|i| tenants[i].clone())
            .ok_or_else(|| corrupt(format!("popped from unexpected key {key}")))?;
        let (seq, payload) = member
            .split_once('|')
            .ok_or_else(|| corrupt(format!("member without a sequence: {member:?}")))?;
        let seq = seq
            .parse()
            .map_err(|_| corrupt(format!("bad sequence in {member:?}")))?;
        Ok(Some(CampaignJob {
            tenant,
            priority: (-score) as u16,
            seq,
            payload: payload.to_owned(),
        }))
    }
}

fn corrupt(reason: String) -> RedisError {
    RedisError::Corrupt {
        what: "campaign queue",
        reason,
    }
}
