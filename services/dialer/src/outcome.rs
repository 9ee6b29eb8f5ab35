//! The end of a dial attempt, whoever learns it: the status callback, or the reconciler
//! asking Twilio. Both go through [`Dialer::conclude`], so an outcome is counted once.
//!
//! Consumes an open attempt's record and a call status (with Twilio's machine-detection
//! verdict); produces the queue's resolution (done, retry, failed) and the call's
//! `dial_result` event, and the `dial` event of a call whose placing dialer died before
//! logging it ([`Dialer::adopt`]). State: the attempt in Redis.

use sb_runtime::metrics::Metric;
use sb_runtime::redis::RedisError;
use sb_runtime::redis::campaigns::{Attempt, AttemptId, CampaignId, Completion, Outcome};
use sb_schemas::{Body, Dial, DialResult};
use sb_twilio::CallStatus;

use crate::dialer::Dialer;

/// The outcome of a final call status; `None` while the call is not over.
pub fn outcome_of(status: CallStatus, answered_by: Option<&str>) -> Option<Outcome> {
    Some(match status {
        CallStatus::Completed if answered_by.is_some_and(is_machine) => Outcome::Voicemail,
        CallStatus::Completed => Outcome::Completed,
        CallStatus::Busy => Outcome::Busy,
        CallStatus::NoAnswer => Outcome::NoAnswer,
        CallStatus::Failed => Outcome::Failed,
        CallStatus::Canceled => Outcome::Canceled,
        CallStatus::Queued
        | CallStatus::Initiated
        | CallStatus::Ringing
        | CallStatus::InProgress => return None,
    })
}

/// Twilio's `AnsweredBy` values that are not a person.
pub fn is_machine(answered_by: &str) -> bool {
    answered_by.starts_with("machine_") || answered_by == "fax"
}

impl Dialer {
    /// Stores a call sid learned for an attempt; when it was not known yet (the placing
    /// dialer died before recording it), logs the call's `dial` event too.
    pub async fn adopt(
        &self,
        attempt: &AttemptId,
        record: &Attempt,
        call_sid: &str,
    ) -> Result<(), RedisError> {
        if record.call_sid().is_some() {
            return Ok(());
        }
        self.queue.set_call_sid(attempt, call_sid).await?;
        let Some(tenant) = record.tenant() else {
            return Ok(());
        };
        let field = |name: &str| record.get(name).unwrap_or_default().to_owned();
        let dial = Dial {
            attempt: attempt.to_string(),
            campaign: field("campaign"),
            contact: field("contact"),
            to: field("to"),
            from: field("from"),
            attempt_number: field("attempt_number").parse().unwrap_or(1),
        };
        self.publish(&tenant, call_sid, Body::Dial(dial)).await;
        Ok(())
    }

    /// The call of an open attempt ended with `status`: resolves the attempt per its
    /// campaign's retry policy and logs `dial_result`. `false` if it was resolved already
    /// (a repeated callback) or the status is not final.
    pub async fn conclude(
        &self,
        attempt: &AttemptId,
        record: &Attempt,
        call_sid: &str,
        status: CallStatus,
    ) -> Result<bool, RedisError> {
        let Some(outcome) = outcome_of(status, record.get("answered_by")) else {
            return Ok(false);
        };
        let (Some(tenant), Some(campaign)) = (
            record.tenant(),
            record
                .get("campaign")
                .and_then(|c| CampaignId::parse(c).ok()),
        ) else {
            return Ok(false);
        };
        let policy = self.policy(&tenant, &campaign).await;
        let now = self.clock.now_ms();
        let completion = self.queue.resolve(attempt, outcome, &policy, now).await?;
        let (attempts, decision, retry_at_ms) = match completion {
            Completion::Stale => return Ok(false),
            Completion::Done { attempts } => (attempts, "done", 0),
            Completion::Retry {
                attempts,
                not_before_ms,
            } => (attempts, "retry", not_before_ms),
            Completion::Failed { attempts } => (attempts, "failed", 0),
        };
        metrics::counter!(Metric::DialerOutcomes.name(), "outcome" => outcome.as_str())
            .increment(1);
        tracing::info!(tenant = %tenant, call_sid, attempt = %attempt, outcome = outcome.as_str(), decision, "dial attempt ended");
        let result = DialResult {
            attempt: attempt.to_string(),
            campaign: campaign.to_string(),
            contact: record.get("contact").unwrap_or_default().to_owned(),
            outcome: outcome.as_str().to_owned(),
            attempts,
            decision: decision.to_owned(),
            retry_at_ms,
        };
        self.publish(&tenant, call_sid, Body::DialResult(result))
            .await;
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn final_statuses_map_to_outcomes() {
        use CallStatus as S;
        assert_eq!(outcome_of(S::Completed, None), Some(Outcome::Completed));
        assert_eq!(
            outcome_of(S::Completed, Some("human")),
            Some(Outcome::Completed)
        );
        assert_eq!(
            outcome_of(S::Completed, Some("machine_end_beep")),
            Some(Outcome::Voicemail)
        );
        assert_eq!(outcome_of(S::Busy, None), Some(Outcome::Busy));
        assert_eq!(outcome_of(S::NoAnswer, None), Some(Outcome::NoAnswer));
        assert_eq!(outcome_of(S::Failed, None), Some(Outcome::Failed));
        assert_eq!(outcome_of(S::Canceled, None), Some(Outcome::Canceled));
        for live in [S::Queued, S::Initiated, S::Ringing, S::InProgress] {
            assert_eq!(outcome_of(live, None), None);
        }
        assert!(is_machine("fax") && is_machine("machine_start") && !is_machine("unknown"));
    }
}
