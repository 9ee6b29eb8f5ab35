//! Idempotency keys: `idem:{call_sid}[:{scope}]`, claimed with `SET NX EX`.
//!
//! The first caller to claim a key gets `true`; every repeat inside the TTL (5 min by
//! default) gets `false`. Used for Twilio webhook retries and status callbacks. If the key
//! is evicted the duplicate passes, which the handlers tolerate (ARCHITECTURE §6).
//!
//! `idem:{call_sid}` itself is also the call's admission record ([`AdmissionRecord`]): the
//! ingress' webhook claims it with its answer (`admitted:{tenant}` or `0`), the media socket
//! and the status callback read it back, and the live-socket claim
//! ([`super::live_socket`]) keeps it alive while the call's socket lives.

use std::time::Duration;

use sb_schemas::{CallSid, TenantId};

use super::{Redis, RedisError, failed};

/// How long a claim lasts by default (and an admission record without a live socket).
pub const IDEMPOTENCY_TTL: Duration = Duration::from_secs(300);

/// What `idem:{call_sid}` says about an incoming call once its webhook was answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdmissionRecord {
    /// `admitted:{tenant}`: connected for this tenant; its media socket and its `end`
    /// belong to it.
    Admitted(TenantId),
    /// `0`: declined (over the tenant's rate limit); nothing of the call is published.
    Declined,
    /// Anything else (`1`, as [`Redis::claim_once`] stores): claimed, tenant unknown.
    Unattributed,
}

const ADMITTED: &str = "admitted:";

impl AdmissionRecord {
    /// The value stored in `idem:{call_sid}`.
    pub fn encode(&self) -> String {
        match self {
            Self::Admitted(tenant) => format!("{ADMITTED}{tenant}"),
            Self::Declined => "0".to_owned(),
            Self::Unattributed => "1".to_owned(),
        }
    }

    /// Reads a stored value (never fails: unknown values are [`Self::Unattributed`]).
    pub fn decode(raw: &str) -> Self {
        if raw == "0" {
            return Self::Declined;
        }
        raw.strip_prefix(ADMITTED)
            .and_then(|tenant| TenantId::parse(tenant).ok())
            .map_or(Self::Unattributed, Self::Admitted)
    }

    /// Whether the webhook connected the call (every record but [`Self::Declined`]).
    pub fn connected(&self) -> bool {
        !matches!(self, Self::Declined)
    }
}

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

    /// Whether `idem:{sid}[:{scope}]` was claimed (and has not expired).
    pub async fn claimed(&self, sid: &CallSid, scope: Option<&str>) -> Result<bool, RedisError> {
        redis::cmd("EXISTS")
            .arg(self.keys.idempotency(sid, scope))
            .query_async(&mut self.conn())
            .await
            .map_err(failed("claimed"))
    }

    /// The call's admission record; `None` when no webhook of it was answered (or the
    /// record expired).
    pub async fn admission(&self, sid: &CallSid) -> Result<Option<AdmissionRecord>, RedisError> {
        let raw: Option<String> = redis::cmd("GET")
            .arg(self.keys.idempotency(sid, None))
            .query_async(&mut self.conn())
            .await
            .map_err(failed("admission"))?;
        Ok(raw.as_deref().map(AdmissionRecord::decode))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records round-trip; `0` is declined; `1` (claim_once) and junk are unattributed,
    /// never a tenant (a tenant may be called `1`, but it is stored as `admitted:1`).
    #[test]
    fn records_round_trip() {
        let acme = AdmissionRecord::Admitted(TenantId::parse("acme").unwrap());
        let one = AdmissionRecord::Admitted(TenantId::parse("1").unwrap());
        for record in [acme, one, AdmissionRecord::Declined] {
            assert_eq!(AdmissionRecord::decode(&record.encode()), record);
        }
        assert_eq!(AdmissionRecord::encode(&AdmissionRecord::Declined), "0");
        for raw in ["1", "acme", "admitted:", "admitted:ACME", ""] {
            assert_eq!(
                AdmissionRecord::decode(raw),
                AdmissionRecord::Unattributed,
                "{raw}"
            );
        }
        assert!(AdmissionRecord::Unattributed.connected());
        assert!(!AdmissionRecord::Declined.connected());
    }
}
