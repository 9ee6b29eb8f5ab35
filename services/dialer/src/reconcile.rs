//! Keeping the queue honest when dialers die or callbacks are lost: expired leases go
//! back, and every open attempt is checked with Twilio until it is resolved.
//!
//! Consumes the due open attempts (`cq:attempts`, each claimed for one recheck interval
//! so replicas share them) and Twilio's view of their calls (`GET Calls/{sid}.json`, or
//! `GET Calls.json?To=&From=` for an attempt whose sid was never recorded); produces the
//! same resolutions a status callback would ([`Dialer::conclude`]), adopted call sids, and
//! abandoned attempts (no call exists: the contact goes back unattempted). State: none
//! here; the attempts are in Redis.

use chrono::DateTime;
use sb_runtime::metrics::Metric;
use sb_runtime::redis::RedisError;
use sb_runtime::redis::campaigns::{Attempt, AttemptId};

use crate::dialer::Dialer;

/// Expired leases returned, and attempts looked at, per pass.
const BATCH: u32 = 200;
/// A call created this long before its attempt's record still counts as the attempt's
/// (replicas' clocks differ a little; the attempt is always recorded before the call).
const CLOCK_SLACK_MS: u64 = 5_000;

/// What reconciling one attempt found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reconciled {
    /// Its call had ended: resolved.
    Resolved,
    /// Its call is still going.
    Live,
    /// Twilio has a call of it nobody recorded: adopted (and resolved if it had ended).
    Adopted,
    /// No call exists: the contact went back unattempted.
    Abandoned,
    /// Not decided yet (too young to look up, or Twilio unreachable).
    Pending,
}

impl Reconciled {
    fn label(self) -> &'static str {
        match self {
            Self::Resolved => "resolved",
            Self::Live => "live",
            Self::Adopted => "adopted",
            Self::Abandoned => "abandoned",
            Self::Pending => "pending",
        }
    }
}

impl Dialer {
    /// One pass: expired leases back to the queue, then up to [`BATCH`] due attempts.
    /// Returns how many leases were reaped and what each attempt came to.
    pub async fn reconcile_once(&self) -> Result<(u64, Vec<Reconciled>), RedisError> {
        let now = self.clock.now_ms();
        let reaped = self.queue.reap(now, BATCH).await?;
        let due = self
            .queue
            .due_attempts(now, BATCH, self.settings.reconcile)
            .await?;
        let mut results = Vec::with_capacity(due.len());
        for attempt in due {
            let Some(record) = self.queue.attempt(&attempt).await? else {
                continue;
            };
            if !record.is_open() {
                continue;
            }
            let result = self.reconcile(&attempt, &record).await?;
            metrics::counter!(Metric::DialerReconciled.name(), "result" => result.label())
                .increment(1);
            results.push(result);
        }
        Ok((reaped, results))
    }

    async fn reconcile(
        &self,
        attempt: &AttemptId,
        record: &Attempt,
    ) -> Result<Reconciled, RedisError> {
        let rest = &self.settings.rest;
        if let Some(sid) = record.call_sid() {
            return Ok(match rest.fetch_call(sid).await {
                Ok(call) => {
                    if self.conclude(attempt, record, sid, call.status).await? {
                        Reconciled::Resolved
                    } else {
                        Reconciled::Live
                    }
                }
                Err(error) => {
                    tracing::warn!(attempt = %attempt, call_sid = sid, error = %error, "cannot check the call");
                    Reconciled::Pending
                }
            });
        }
        let now = self.clock.now_ms();
        let created: u64 = record
            .get("created_ms")
            .and_then(|c| c.parse().ok())
            .unwrap_or(0);
        let orphan_ms = u64::try_from(self.settings.orphan.as_millis()).unwrap_or(u64::MAX);
        if now < created.saturating_add(orphan_ms) {
            return Ok(Reconciled::Pending);
        }
        let (to, from) = (
            record.get("to").unwrap_or_default(),
            record.get("from").unwrap_or_default(),
        );
        let calls = match rest.list_calls(to, from).await {
            Ok(list) => list.calls,
            Err(error) => {
                tracing::warn!(attempt = %attempt, error = %error, "cannot look the attempt's call up");
                return Ok(Reconciled::Pending);
            }
        };
        let since = created.saturating_sub(CLOCK_SLACK_MS);
        let ours = calls.into_iter().find(|call| {
            call.date_created
                .as_deref()
                .and_then(|d| DateTime::parse_from_rfc2822(d).ok())
                .and_then(|d| u64::try_from(d.timestamp_millis()).ok())
                .is_some_and(|at| at >= since)
        });
        match ours {
            Some(call) => {
                tracing::info!(attempt = %attempt, call_sid = %call.sid, "adopted a call no dialer recorded");
                self.adopt(attempt, record, &call.sid).await?;
                self.conclude(attempt, record, &call.sid, call.status)
                    .await?;
                Ok(Reconciled::Adopted)
            }
            None => {
                tracing::info!(attempt = %attempt, "no call was placed for the attempt; the contact goes back");
                self.queue.abandon(attempt, now, now).await?;
                metrics::counter!(Metric::DialerOutcomes.name(), "outcome" => "abandoned")
                    .increment(1);
                Ok(Reconciled::Abandoned)
            }
        }
    }
}
