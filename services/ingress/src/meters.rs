//! Handles for the ingress' per-frame counters, resolved once per process instead of a
//! registry lookup per frame (the rare counters use the `metrics` macros where they count).
//!
//! Consumes the global recorder installed by the runtime; produces counter handles. State:
//! the handles (cheap clones of the recorder's atomics).

use metrics::Counter;
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
