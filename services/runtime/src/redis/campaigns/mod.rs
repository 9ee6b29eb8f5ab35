//! The campaign queue of outbound calls: what a dialer enqueues, pops under a lease,
//! completes, releases and reaps (ARCHITECTURE §6, "The campaign queue").
//!
//! Consumes contacts ([`NewContact`]), the caller's clock (`now_ms` on every operation,
//! so tests inject time) and call outcomes; produces [`Lease`]s, fair across tenants and
//! across a tenant's campaigns, highest priority first and FIFO within one, within the
//! concurrency caps. State, all in the state Redis without TTLs (so `volatile-lru` never
//! evicts it and AOF keeps it): per campaign a ready and a delayed ZSET, a hash of
//! contact records and a FIFO counter; per tenant a ring of campaigns, in-flight counts
//! and caps; globally the tenants ring, the due index, the leases and the depth per
//! tenant. Every change is one Lua script ([`scripts`]). The calls-per-second bucket is
//! in [`cps`]; ids, scores and the retry policy in [`model`].

mod admin;
mod attempts;
pub mod cps;
pub mod model;
mod scripts;

use std::time::Duration;

use redis::{ScriptInvocation, aio::ConnectionManager};
use sb_schemas::TenantId;

pub use admin::{ContactPage, ContactRow, Hold};
pub use attempts::{Attempt, AttemptId};
pub use model::{
    AccountSid, CampaignId, ContactId, ContactPayload, ContactRecord, ContactState, Decision,
    NewContact, Outcome, QueueIdError, RetryPolicy,
};
use scripts::{
    COMPLETE_SCRIPT, ENQUEUE_SCRIPT, POP_SCRIPT, REAP_SCRIPT, RELEASE_SCRIPT, RENEW_SCRIPT,
};

use super::{Keys, Redis, RedisError, failed};

/// Contacts per `ENQUEUE` call: big enough to amortise a round trip, small enough that
/// one script never blocks Redis for long (~1-2 ms).
const ENQUEUE_BATCH: usize = 500;
/// `ENQUEUE` calls per pipeline: one round trip stays well inside the 500 ms response
/// timeout of the shared connection.
const PIPELINE_DEPTH: usize = 8;
/// Tenants (and campaigns of a tenant) one pop looks at before it gives up.
const POP_SCAN: u32 = 16;

/// A popped contact: the caller's until it completes, releases, or the deadline passes
/// without a renewal (then any dialer's [`CampaignQueue::reap`] returns it to the queue).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub tenant: TenantId,
    pub campaign: CampaignId,
    pub contact: ContactId,
    /// Which pop of this contact this is: a late call from a holder whose lease was
    /// reaped is refused.
    pub token: u64,
    /// Attempts before this one.
    pub attempts: u32,
    pub deadline_ms: u64,
    pub payload: ContactPayload,
}

/// What `complete` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Completion {
    /// The lease was not the caller's any more (reaped, maybe popped again): nothing changed.
    Stale,
    Done {
        attempts: u32,
    },
    Retry {
        attempts: u32,
        not_before_ms: u64,
    },
    Failed {
        attempts: u32,
    },
}

impl Completion {
    /// The reply of the `COMPLETE` and `RESOLVE` scripts.
    fn decode(reply: &[u64]) -> Result<Self, RedisError> {
        let attempts = |n: u64| u32::try_from(n).unwrap_or(u32::MAX);
        Ok(match *reply {
            [0] => Completion::Stale,
            [1, n, _] => Completion::Done {
                attempts: attempts(n),
            },
            [2, n, at] => Completion::Retry {
                attempts: attempts(n),
                not_before_ms: at,
            },
            [3, n, _] => Completion::Failed {
                attempts: attempts(n),
            },
            _ => return Err(corrupt(format!("complete reply {reply:?}"))),
        })
    }
}

/// The campaign queue on the state Redis. Cheap to clone.
#[derive(Clone)]
pub struct CampaignQueue {
    conn: ConnectionManager,
    keys: Keys,
    /// Leases plus open attempts over every tenant above which `pop` gives nothing (0: none).
    global_cap: u32,
}

impl std::fmt::Debug for CampaignQueue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CampaignQueue").finish_non_exhaustive()
    }
}

impl Redis {
    /// The campaign queue on this handle's connection.
    pub fn campaign_queue(&self) -> CampaignQueue {
        CampaignQueue {
            conn: self.conn(),
            keys: self.keys.clone(),
            global_cap: 0,
        }
    }
}

fn corrupt(reason: String) -> RedisError {
    RedisError::Corrupt {
        what: "campaign queue",
        reason,
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl CampaignQueue {
    /// This queue, popping nothing while `cap` contacts (or more) are leased or calling
    /// over every tenant: the global cap on outbound calls, shared by every dialer.
    pub fn with_global_cap(mut self, cap: Option<u32>) -> Self {
        self.global_cap = cap.unwrap_or(0);
        self
    }

    /// A script call with the global keys and the key templates every queue script takes.
    fn invocation<'a>(&self, script: &'a redis::Script) -> ScriptInvocation<'a> {
        let mut inv = script.prepare_invoke();
        inv.key(self.keys.cq_tenants())
            .key(self.keys.cq_due())
            .key(self.keys.cq_leases())
            .key(self.keys.cq_depth())
            .key(self.keys.cq_attempts());
        for template in self.keys.cq_templates() {
            inv.arg(template);
        }
        inv
    }

    /// Adds `contacts` to `campaign` in scripts of 500, eight to a pipeline; an id the
    /// campaign already has, in any state, is skipped. Returns how many were added.
    pub async fn enqueue(
        &self,
        tenant: &TenantId,
        campaign: &CampaignId,
        contacts: &[NewContact],
        now_ms: u64,
    ) -> Result<u64, RedisError> {
        let mut conn = self.conn.clone();
        // Pipelined EVALSHA needs the script loaded (again after a restart of Redis).
        ENQUEUE_SCRIPT
            .prepare_invoke()
            .load_async(&mut conn)
            .await
            .map_err(failed("cq_enqueue"))?;
        let mut added = 0;
        for batches in contacts.chunks(ENQUEUE_BATCH * PIPELINE_DEPTH) {
            let mut pipe = redis::pipe();
            for batch in batches.chunks(ENQUEUE_BATCH) {
                let cmd = pipe.cmd("EVALSHA").arg(ENQUEUE_SCRIPT.get_hash()).arg(5);
                cmd.arg(self.keys.cq_tenants())
                    .arg(self.keys.cq_due())
                    .arg(self.keys.cq_leases())
                    .arg(self.keys.cq_depth())
                    .arg(self.keys.cq_attempts());
                for template in self.keys.cq_templates() {
                    cmd.arg(template);
                }
                cmd.arg(tenant.as_str()).arg(campaign.as_str()).arg(now_ms);
                for c in batch {
                    let payload = serde_json::to_string(&c.payload)
                        .map_err(|e| corrupt(format!("payload: {e}")))?;
                    cmd.arg(c.id.as_str())
                        .arg(c.priority)
                        .arg(c.not_before_ms)
                        .arg(payload);
                }
            }
            let counts: Vec<u64> = pipe
                .query_async(&mut conn)
                .await
                .map_err(failed("cq_enqueue"))?;
            added += counts.iter().sum::<u64>();
        }
        Ok(added)
    }

    /// Leases the next contact: due delayed contacts are promoted first, then the next
    /// tenant in the ring with a campaign under its caps gives its next campaign's
    /// highest-priority, oldest contact. `None` when nothing is ready (or all is capped).
    pub async fn pop(&self, now_ms: u64, lease: Duration) -> Result<Option<Lease>, RedisError> {
        type Reply = Option<(String, String, String, u64, u32, u64, String)>;
        let reply: Reply = self
            .invocation(&POP_SCRIPT)
            .arg(now_ms)
            .arg(millis(lease).max(1))
            .arg(POP_SCAN)
            .arg(self.global_cap)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_pop"))?;
        let Some((tenant, campaign, contact, token, attempts, deadline_ms, payload)) = reply else {
            return Ok(None);
        };
        let bad = |what: &str, e: &dyn std::fmt::Display| corrupt(format!("{what}: {e}"));
        Ok(Some(Lease {
            tenant: TenantId::parse(&tenant).map_err(|e| bad("tenant", &e))?,
            campaign: CampaignId::parse(&campaign).map_err(|e| bad("campaign", &e))?,
            contact: ContactId::parse(&contact).map_err(|e| bad("contact", &e))?,
            token,
            attempts,
            deadline_ms,
            payload: serde_json::from_str(&payload).map_err(|e| bad("payload", &e))?,
        }))
    }

    /// Pushes the lease's deadline to `now_ms + lease` (a call that runs long); `false`
    /// when the lease is no longer the caller's.
    pub async fn renew(
        &self,
        held: &Lease,
        now_ms: u64,
        lease: Duration,
    ) -> Result<bool, RedisError> {
        let ok: i64 = self
            .invocation(&RENEW_SCRIPT)
            .arg(held.tenant.as_str())
            .arg(held.campaign.as_str())
            .arg(held.contact.as_str())
            .arg(held.token)
            .arg(now_ms)
            .arg(millis(lease).max(1))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_renew"))?;
        Ok(ok == 1)
    }

    /// Gives a contact back unattempted (no call was placed: no CPS token, shutting
    /// down, outside its calling hours): its slot is freed and it returns to its old place,
    /// or with `not_before_ms` (non-zero) to the back of its priority, delayed until then.
    /// `false` when the lease was no longer the caller's.
    pub async fn release(
        &self,
        held: &Lease,
        now_ms: u64,
        not_before_ms: u64,
    ) -> Result<bool, RedisError> {
        let ok: i64 = self
            .invocation(&RELEASE_SCRIPT)
            .arg(held.tenant.as_str())
            .arg(held.campaign.as_str())
            .arg(held.contact.as_str())
            .arg(held.token)
            .arg(now_ms)
            .arg(not_before_ms)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_release"))?;
        Ok(ok == 1)
    }

    /// Records the end of the call: frees its slots, counts the attempt, and finishes
    /// the contact or queues it again per `policy` (not before `now_ms + spacing`).
    pub async fn complete(
        &self,
        held: &Lease,
        outcome: Outcome,
        policy: &RetryPolicy,
        now_ms: u64,
    ) -> Result<Completion, RedisError> {
        let reply: Vec<u64> = self
            .invocation(&COMPLETE_SCRIPT)
            .arg(held.tenant.as_str())
            .arg(held.campaign.as_str())
            .arg(held.contact.as_str())
            .arg(held.token)
            .arg(now_ms)
            .arg(outcome.as_str())
            .arg(policy.retry_limit(outcome))
            .arg(millis(policy.spacing))
            .arg(u8::from(outcome.is_success()))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_complete"))?;
        Completion::decode(&reply)
    }

    /// Returns up to `limit` leases whose deadline is at or before `now_ms` to the queue
    /// (their holders died or hung). Any dialer may call it; returns how many it moved.
    pub async fn reap(&self, now_ms: u64, limit: u32) -> Result<u64, RedisError> {
        self.invocation(&REAP_SCRIPT)
            .arg(now_ms)
            .arg(limit.max(1))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_reap"))
    }

    /// Sets (or with `None` lifts) the cap on `tenant`'s calls in flight.
    pub async fn set_tenant_cap(
        &self,
        tenant: &TenantId,
        cap: Option<u32>,
    ) -> Result<(), RedisError> {
        self.set_cap(tenant, "*", cap).await
    }

    /// Sets (or with `None` lifts) the cap on `campaign`'s calls in flight.
    pub async fn set_campaign_cap(
        &self,
        tenant: &TenantId,
        campaign: &CampaignId,
        cap: Option<u32>,
    ) -> Result<(), RedisError> {
        self.set_cap(tenant, campaign.as_str(), cap).await
    }

    async fn set_cap(
        &self,
        tenant: &TenantId,
        field: &str,
        cap: Option<u32>,
    ) -> Result<(), RedisError> {
        let key = self.keys.cq_caps(tenant);
        let cmd = match cap {
            Some(cap) => {
                let mut c = redis::cmd("HSET");
                c.arg(&key).arg(field).arg(cap);
                c
            }
            None => {
                let mut c = redis::cmd("HDEL");
                c.arg(&key).arg(field);
                c
            }
        };
        cmd.query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(failed("cq_set_cap"))
    }

    /// `tenant`'s queued contacts, ready and delayed (leased ones are not counted).
    pub async fn depth(&self, tenant: &TenantId) -> Result<u64, RedisError> {
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(self.keys.cq_depth())
            .arg(tenant.as_str())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_depth"))?;
        Ok(score.unwrap_or(0.0).max(0.0) as u64)
    }

    /// Calls in flight for `tenant` (`campaign: None`) or one of its campaigns.
    pub async fn active(
        &self,
        tenant: &TenantId,
        campaign: Option<&CampaignId>,
    ) -> Result<u64, RedisError> {
        let n: Option<u64> = redis::cmd("HGET")
            .arg(self.keys.cq_active(tenant))
            .arg(campaign.map_or("*", CampaignId::as_str))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_active"))?;
        Ok(n.unwrap_or(0))
    }

    /// A contact's record: its state, attempts and last outcome.
    pub async fn contact(
        &self,
        tenant: &TenantId,
        campaign: &CampaignId,
        contact: &ContactId,
    ) -> Result<Option<ContactRecord>, RedisError> {
        let raw: Option<String> = redis::cmd("HGET")
            .arg(self.keys.cq_contacts(tenant, campaign))
            .arg(contact.as_str())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_contact"))?;
        raw.map(|r| ContactRecord::decode(&r).ok_or_else(|| corrupt(format!("record {r:?}"))))
            .transpose()
    }
}
