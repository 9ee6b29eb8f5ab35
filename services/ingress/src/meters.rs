//! Handles for the ingress' per-frame counters, resolved once per process instead of a
//! registry lookup per frame (the rare counters use the `metrics` macros where they count).
//!
//! Also the per-call gauge of calls live by tenant and direction ([`LiveGauge`]).
//!
//! Consumes the global recorder installed by the runtime; produces counter handles. State:
//! the handles (cheap clones of the recorder's atomics).

use metrics::{Counter, Gauge};
use sb_runtime::metrics::Metric;

/// The counters touched for every caller or bot frame.
#[derive(Clone)]
pub(crate) struct Meters {
    pub(crate) frames_in: Counter,
    pub(crate) frames_out: Counter,
    pub(crate) late_frames: Counter,
    pub(crate) acks_unchecked: Counter,
}

impl Meters {
    /// Resolves the handles against the installed recorder (no-ops without one).
    pub(crate) fn new() -> Self {
        Self {
            frames_in: metrics::counter!(Metric::IngressFramesIn.name()),
            frames_out: metrics::counter!(Metric::IngressFramesOut.name()),
            late_frames: metrics::counter!(Metric::IngressLateFrames.name()),
            acks_unchecked: metrics::counter!(Metric::IngressAcksUnchecked.name()),
        }
    }
}

/// One call in `switchboard_calls_live{tenant,direction}` for as long as it lives here.
pub(crate) struct LiveGauge(Gauge);

impl LiveGauge {
    pub(crate) fn new(tenant: &sb_schemas::TenantId, direction: &'static str) -> Self {
        let gauge = metrics::gauge!(Metric::CallsLive.name(), "tenant" => tenant.to_string(), "direction" => direction);
        gauge.increment(1.0);
        Self(gauge)
    }
}

impl Drop for LiveGauge {
    fn drop(&mut self) {
        self.0.decrement(1.0);
    }
}
