//! Every metric name Switchboard exports, in one enum, and the Prometheus recorder.
//!
//! Names follow `switchboard_<area>_<what>_<unit>[_total]`; labels come from closed sets
//! (stage, outcome, kind, reason) and never carry a call sid. Produces the global recorder
//! and its render handle. State: the process-wide recorder (installed once).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// A metric of Switchboard. `name()` is the only place the strings exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    /// Deliveries a stage received. Labels: stage, kind.
    StageReceived,
    /// Deliveries a stage finished, by outcome (ok, retried, rejected, dead_lettered,
    /// handed_back, fatal). Labels: stage, outcome.
    StageProcessed,
    /// Time inside `handle` plus waiting for the outputs' publish acks. Labels: stage.
    StageHandleSeconds,
    /// Deliveries that arrived for the second time or later. Labels: stage.
    StageRedeliveries,
    /// Inputs written to the DLQ. Labels: stage, reason.
    StageDeadLetters,
    /// Deliveries being handled right now. Labels: stage.
    StageInFlight,
    /// Events published, by kind. Labels: kind.
    EventsPublished,
    /// Publishes that failed. Labels: kind, reason.
    PublishFailures,
    /// Redis operations that failed. Labels: op.
    RedisErrors,
    /// Whether the process is draining (1) or serving (0).
    LifecycleDraining,
}

impl Metric {
    pub const fn name(self) -> &'static str {
        match self {
            Metric::StageReceived => "switchboard_stage_received_total",
            Metric::StageProcessed => "switchboard_stage_processed_total",
            Metric::StageHandleSeconds => "switchboard_stage_handle_seconds",
            Metric::StageRedeliveries => "switchboard_stage_redeliveries_total",
            Metric::StageDeadLetters => "switchboard_stage_dead_letters_total",
            Metric::StageInFlight => "switchboard_stage_in_flight",
            Metric::EventsPublished => "switchboard_events_published_total",
            Metric::PublishFailures => "switchboard_publish_failures_total",
            Metric::RedisErrors => "switchboard_redis_errors_total",
            Metric::LifecycleDraining => "switchboard_lifecycle_draining",
        }
    }
}

/// Latency buckets (seconds) for every `_seconds` histogram: 100 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the global Prometheus recorder (once per process) and returns its handle.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)
                .expect("the bucket list is non-empty");
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            if metrics::set_global_recorder(recorder).is_err() {
                tracing::warn!("a metrics recorder was already installed; /metrics stays empty");
            }
            handle
        })
        .clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_convention() {
        let all = [
            Metric::StageReceived,
            Metric::StageProcessed,
            Metric::StageHandleSeconds,
            Metric::StageRedeliveries,
            Metric::StageDeadLetters,
            Metric::StageInFlight,
            Metric::EventsPublished,
            Metric::PublishFailures,
            Metric::RedisErrors,
            Metric::LifecycleDraining,
        ];
        for m in all {
            let name = m.name();
            assert!(name.starts_with("switchboard_"), "{name}");
            assert!(
                name.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{name}"
            );
        }
    }

    #[test]
    fn histograms_render_with_buckets() {
        let handle = install();
        metrics::histogram!(Metric::StageHandleSeconds.name(), "stage" => "unit").record(0.002);
        let text = handle.render();
        assert!(
            text.contains(
                "switchboard_stage_handle_seconds_bucket{stage=\"unit\",le=\"0.0025\"} 1"
            ),
            "{text}"
        );
    }
}
