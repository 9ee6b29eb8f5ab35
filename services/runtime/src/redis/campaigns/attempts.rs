//! Dial attempts: the step between a lease and a finished contact, which is what makes a
//! dialer's death safe at any point (ARCHITECTURE §6, "Dial attempts").
//!
//! Consumes a [`Lease`] and the attempt's facts (rendered prompts, numbers); produces an
//! open attempt in `cq:attempt:{id}` (a hash) and `cq:attempts` (a ZSET: when to
//! reconcile it). The contact is `c` (calling) and keeps its slot until the attempt is
//! resolved by its final status ([`CampaignQueue::resolve`]) or proven never placed
//! ([`CampaignQueue::abandon`]). The lease's reaper never touches a calling contact, so a
//! dialer that dies after dialling can never cause a second call. State: those keys, in
//! the state Redis; the hash expires a day after the attempt closes.

use std::collections::HashMap;
use std::time::Duration;

use redis::ScriptInvocation;
use sb_schemas::TenantId;

use super::scripts::{
    ABANDON_SCRIPT, BEGIN_SCRIPT, CALL_SID_SCRIPT, DUE_ATTEMPTS_SCRIPT, RESOLVE_SCRIPT,
};
use super::{CampaignQueue, Completion, Lease, Outcome, RetryPolicy, corrupt, millis};
use crate::redis::session::OutboundSession;
use crate::redis::{RedisError, failed};

/// An attempt id: 32 lowercase hex digits of a random UUID. It is in the `Url` Twilio
/// fetches when the callee answers, so it must not be guessable.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct AttemptId(String);

impl AttemptId {
    pub fn random() -> Self {
        Self(uuid::Uuid::new_v4().simple().to_string())
    }

    /// Parses an id from a URL; `None` unless it is 32 lowercase hex digits.
    pub fn parse(raw: &str) -> Option<Self> {
        (raw.len() == 32 && raw.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
            .then(|| Self(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for AttemptId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// An attempt as stored: `tenant`, `campaign`, `contact`, `token`, `call_sid` (once
/// known), `outcome` (once closed) and whatever the dialer stored with it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Attempt {
    pub fields: HashMap<String, String>,
}

impl Attempt {
    pub fn get(&self, field: &str) -> Option<&str> {
        self.fields.get(field).map(String::as_str)
    }

    pub fn call_sid(&self) -> Option<&str> {
        self.get("call_sid")
    }

    /// Closed attempts carry their outcome (`abandoned` when no call was placed).
    pub fn is_open(&self) -> bool {
        self.get("outcome").is_none()
    }

    pub fn tenant(&self) -> Option<TenantId> {
        self.get("tenant").and_then(|t| TenantId::parse(t).ok())
    }

    /// What the agent must know about the call: the rendered greeting and prompt (empty
    /// means the tenant's own), whether machine detection runs, and the campaign, contact
    /// and the contact's variables (JSON) for the tenant's tools.
    pub fn outbound_session(&self) -> OutboundSession {
        let text = |field: &str| self.get(field).filter(|v| !v.is_empty()).map(str::to_owned);
        OutboundSession {
            greeting: text("greeting"),
            prompt: text("prompt"),
            amd: self.get("amd") == Some("1"),
            campaign: text("campaign"),
            contact: text("contact"),
            vars: text("vars"),
        }
    }
}

impl CampaignQueue {
    fn attempt_invocation<'a>(
        &self,
        script: &'a redis::Script,
        attempt: &AttemptId,
    ) -> ScriptInvocation<'a> {
        let mut inv = self.invocation(script);
        inv.key(self.keys.cq_attempt(attempt.as_str()));
        inv
    }

    /// Opens an attempt for a leased contact, before the call is placed: the contact is
    /// `calling`, and the attempt is reconciled at `now + check_after` unless resolved
    /// first. `fields` are stored with it (for the ingress and the callbacks). `false`
    /// (nothing written) when the lease was no longer the caller's.
    pub async fn begin(
        &self,
        held: &Lease,
        attempt: &AttemptId,
        now_ms: u64,
        check_after: Duration,
        fields: &[(&str, &str)],
    ) -> Result<bool, RedisError> {
        let mut inv = self.attempt_invocation(&BEGIN_SCRIPT, attempt);
        inv.arg(held.tenant.as_str())
            .arg(held.campaign.as_str())
            .arg(held.contact.as_str())
            .arg(held.token)
            .arg(attempt.as_str())
            .arg(now_ms + millis(check_after));
        for (name, value) in fields {
            inv.arg(*name).arg(*value);
        }
        let ok: i64 = inv
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_begin"))?;
        Ok(ok == 1)
    }

    /// Stores the call sid Twilio gave the attempt (first one wins) and adds it to the
    /// contact's call sids; `true` while the attempt is open.
    pub async fn set_call_sid(
        &self,
        attempt: &AttemptId,
        call_sid: &str,
    ) -> Result<bool, RedisError> {
        let ok: i64 = self
            .attempt_invocation(&CALL_SID_SCRIPT, attempt)
            .arg(call_sid)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_call_sid"))?;
        Ok(ok == 1)
    }

    /// The call of an attempt ended with `outcome`: frees the slot, counts the attempt and
    /// finishes or re-queues the contact per `policy`. `Stale` if it was already resolved.
    pub async fn resolve(
        &self,
        attempt: &AttemptId,
        outcome: Outcome,
        policy: &RetryPolicy,
        now_ms: u64,
    ) -> Result<Completion, RedisError> {
        let reply: Vec<u64> = self
            .attempt_invocation(&RESOLVE_SCRIPT, attempt)
            .arg(attempt.as_str())
            .arg(now_ms)
            .arg(outcome.as_str())
            .arg(policy.retry_limit(outcome))
            .arg(millis(policy.spacing))
            .arg(u8::from(outcome.is_success()))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_resolve"))?;
        Completion::decode(&reply)
    }

    /// No call was placed for the attempt (Twilio answered 429 or 5xx, or reconciling
    /// found no call): the contact goes back unattempted, not before `not_before_ms`.
    /// `false` if the attempt was not open.
    pub async fn abandon(
        &self,
        attempt: &AttemptId,
        now_ms: u64,
        not_before_ms: u64,
    ) -> Result<bool, RedisError> {
        let ok: i64 = self
            .attempt_invocation(&ABANDON_SCRIPT, attempt)
            .arg(attempt.as_str())
            .arg(now_ms)
            .arg(not_before_ms)
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_abandon"))?;
        Ok(ok == 1)
    }

    /// Up to `limit` open attempts due for reconciling at `now_ms`; each is pushed back by
    /// `recheck`, so the dialers share them without looking at one twice at once.
    pub async fn due_attempts(
        &self,
        now_ms: u64,
        limit: u32,
        recheck: Duration,
    ) -> Result<Vec<AttemptId>, RedisError> {
        let ids: Vec<String> = self
            .invocation(&DUE_ATTEMPTS_SCRIPT)
            .arg(now_ms)
            .arg(limit.max(1))
            .arg(millis(recheck).max(1))
            .invoke_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_due_attempts"))?;
        ids.iter()
            .map(|id| AttemptId::parse(id).ok_or_else(|| corrupt(format!("attempt id {id:?}"))))
            .collect()
    }

    /// An attempt's hash (open or closed within the last day); `None` if unknown.
    pub async fn attempt(&self, attempt: &AttemptId) -> Result<Option<Attempt>, RedisError> {
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(self.keys.cq_attempt(attempt.as_str()))
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_attempt"))?;
        Ok((!fields.is_empty()).then_some(Attempt { fields }))
    }

    /// Sets fields of an attempt's hash that only the dialer reads (the last status seen).
    pub async fn note_attempt(
        &self,
        attempt: &AttemptId,
        fields: &[(&str, &str)],
    ) -> Result<(), RedisError> {
        let mut cmd = redis::cmd("HSET");
        cmd.arg(self.keys.cq_attempt(attempt.as_str()));
        for (name, value) in fields {
            cmd.arg(*name).arg(*value);
        }
        cmd.query_async::<()>(&mut self.conn.clone())
            .await
            .map_err(failed("cq_note_attempt"))
    }

    /// How many attempts are open (the dialer's gauge).
    pub async fn open_attempts(&self) -> Result<u64, RedisError> {
        redis::cmd("ZCARD")
            .arg(self.keys.cq_attempts())
            .query_async(&mut self.conn.clone())
            .await
            .map_err(failed("cq_open_attempts"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempt_ids_are_random_hex_and_parse_strictly() {
        let a = AttemptId::random();
        assert_eq!(a.as_str().len(), 32);
        assert_eq!(AttemptId::parse(a.as_str()), Some(a.clone()));
        assert_ne!(AttemptId::random(), a);
        for bad in ["", "ABCDEF0123456789abcdef0123456789", "0123", "../../x"] {
            assert!(AttemptId::parse(bad).is_none(), "{bad:?}");
        }
    }
}
