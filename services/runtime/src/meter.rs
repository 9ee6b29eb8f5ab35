//! A stage's metrics, labelled once with the stage's name.
//!
//! Consumes the stage's name (its consumer, [`crate::Stage::CONSUMER`]); produces metric
//! handles registered once per process and shared by every delivery: what the runner
//! counts (received, processed by outcome, handle time, redeliveries, in flight) and what
//! the stage's logic reports through its [`crate::Emitter`] (skips, fallbacks,
//! cancellations, first-output latency). A stage never writes its own `stage` label.
//! State: the handles.

use sb_schemas::Kind;

use crate::metrics::Metric;

/// What became of one delivery (the `outcome` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Retried,
    Rejected,
    DeadLettered,
    HandedBack,
    Fatal,
}

impl Outcome {
    /// In declaration order: `outcome as usize` indexes it.
    pub(crate) const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::Retried,
        Outcome::Rejected,
        Outcome::DeadLettered,
        Outcome::HandedBack,
        Outcome::Fatal,
    ];

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Retried => "retried",
            Outcome::Rejected => "rejected",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::HandedBack => "handed_back",
            Outcome::Fatal => "fatal",
        }
    }
}

/// One stage's metric handles. Resolved once: a labelled lookup per delivery would
/// allocate and hash several times on the hot path.
#[derive(Debug)]
pub struct StageMeter {
    stage: &'static str,
    pub(crate) received: [metrics::Counter; Kind::ALL.len()],
    pub(crate) undecodable: metrics::Counter,
    pub(crate) processed: [metrics::Counter; Outcome::ALL.len()],
    pub(crate) handle_seconds: metrics::Histogram,
    pub(crate) redeliveries: metrics::Counter,
    pub(crate) in_flight: metrics::Gauge,
    pub(crate) cancelled: metrics::Counter,
    pub(crate) first_output: metrics::Histogram,
}

impl StageMeter {
    pub fn new(stage: &'static str) -> Self {
        let received = |kind: &'static str| metrics::counter!(Metric::StageReceived.name(), "stage" => stage, "kind" => kind);
        Self {
            stage,
            received: Kind::ALL.map(|k| received(k.as_str())),
            undecodable: received("undecodable"),
            processed: Outcome::ALL.map(|o| {
                metrics::counter!(Metric::StageProcessed.name(), "stage" => stage, "outcome" => o.as_str())
            }),
            handle_seconds: metrics::histogram!(Metric::StageHandleSeconds.name(), "stage" => stage),
            redeliveries: metrics::counter!(Metric::StageRedeliveries.name(), "stage" => stage),
            in_flight: metrics::gauge!(Metric::StageInFlight.name(), "stage" => stage),
            cancelled: metrics::counter!(Metric::BargeInCancellations.name(), "stage" => stage),
            first_output: metrics::histogram!(Metric::StageLatencySeconds.name(), "stage" => stage),
        }
    }

    /// The stage's name (its `stage` label).
    pub fn stage(&self) -> &'static str {
        self.stage
    }

    /// Counts and logs an input skipped on purpose (empty, stale, already done, …).
    pub fn skipped(&self, reason: &'static str) {
        metrics::counter!(Metric::StageSkipped.name(), "stage" => self.stage, "reason" => reason)
            .increment(1);
        tracing::info!(reason, "skipped");
    }

    /// Counts a fallback the caller hears because a provider failed or was too slow.
    pub fn fallback(&self, reason: &'static str) {
        metrics::counter!(Metric::Fallbacks.name(), "stage" => self.stage, "reason" => reason)
            .increment(1);
        tracing::info!(reason, "fallback");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn outcome_table_is_in_declaration_order() {
        for (i, outcome) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(outcome as usize, i, "{}", outcome.as_str());
        }
    }
}
