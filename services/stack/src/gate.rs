//! The performance gate: a load run's figures kept as JSON, and two such summaries (the
//! base commit's and the change's, measured alternately on one machine) compared with
//! allowances for run-to-run noise.
//!
//! Consumes [`LoadResult`]s (medians over runs) and two summary files; produces the
//! summary (`switchboard load --json`) and the comparison table with its verdict
//! (`switchboard bench-compare`, exit 1 on a regression). State: none.

use serde::{Deserialize, Serialize};

use crate::load::LoadResult;
use crate::report::{cpu_per_call_second, percentiles};

/// A load run's figures the gate compares: medians over the runs.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub runs: usize,
    pub voice_to_voice_p50_ms: f64,
    pub voice_to_voice_p99_ms: f64,
    pub overhead_p99_ms: f64,
    pub onset_to_clear_p99_ms: f64,
    /// ms of CPU per call-second in Switchboard's processes and its servers.
    pub cpu_ms_per_call_second: f64,
    pub lost_frames: f64,
    pub failed_calls: f64,
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

impl Summary {
    /// The medians of `results`' figures.
    pub fn of(results: &[LoadResult]) -> Self {
        let each = |f: &dyn Fn(&LoadResult) -> f64| median(results.iter().map(f).collect());
        Self {
            runs: results.len(),
            voice_to_voice_p50_ms: each(&|r| percentiles(&r.voice_to_voice_ms).0),
            voice_to_voice_p99_ms: each(&|r| percentiles(&r.voice_to_voice_ms).2),
            overhead_p99_ms: each(&|r| percentiles(&r.overhead_ms).2),
            onset_to_clear_p99_ms: each(&|r| percentiles(&r.barge_in_ms).2),
            cpu_ms_per_call_second: each(&|r| cpu_per_call_second(r)),
            lost_frames: each(&|r| r.lost_frames() as f64),
            failed_calls: each(&|r| r.failed.len() as f64),
        }
    }
}

/// One compared figure: how far the change may exceed the base before it is a regression
/// (the larger of an absolute and a relative allowance, both above this box's noise).
struct Allowance {
    name: &'static str,
    value: fn(&Summary) -> f64,
    absolute: f64,
    relative: f64,
}

/// The figures and their allowances. Run to run on a quiet 2-core box, medians of 3 move
/// by ~2 ms at p50, ~10 ms at p99 and ~8 % in CPU (tests/BENCHMARKS.md).
const ALLOWANCES: &[Allowance] = &[
    Allowance {
        name: "voice-to-voice p50 (ms)",
        value: |s| s.voice_to_voice_p50_ms,
        absolute: 10.0,
        relative: 0.02,
    },
    Allowance {
        name: "voice-to-voice p99 (ms)",
        value: |s| s.voice_to_voice_p99_ms,
        absolute: 30.0,
        relative: 0.05,
    },
    Allowance {
        name: "overhead p99 (ms)",
        value: |s| s.overhead_p99_ms,
        absolute: 15.0,
        relative: 0.5,
    },
    Allowance {
        name: "caller onset → clear p99 (ms)",
        value: |s| s.onset_to_clear_p99_ms,
        absolute: 15.0,
        relative: 0.05,
    },
    Allowance {
        name: "CPU per call-second (ms)",
        value: |s| s.cpu_ms_per_call_second,
        absolute: 0.3,
        relative: 0.15,
    },
    Allowance {
        name: "lost caller frames",
        value: |s| s.lost_frames,
        absolute: 0.0,
        relative: 0.0,
    },
    Allowance {
        name: "failed calls",
        value: |s| s.failed_calls,
        absolute: 0.0,
        relative: 0.0,
    },
];

/// The comparison of `head` against `base`: the table, and whether every figure is
/// within its allowance.
pub fn compare(base: &Summary, head: &Summary) -> (String, bool) {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "  {:<32} {:>10} {:>10} {:>10} {:>10}",
        "figure (medians)", "base", "change", "allowed", "verdict"
    );
    let mut pass = true;
    for a in ALLOWANCES {
        let (b, h) = ((a.value)(base), (a.value)(head));
        let allowed = b + a.absolute.max(a.relative * b.abs());
        let ok = h <= allowed;
        pass &= ok;
        let _ = writeln!(
            out,
            "  {:<32} {b:>10.2} {h:>10.2} {allowed:>10.2} {:>10}",
            a.name,
            if ok { "ok" } else { "REGRESSED" }
        );
    }
    (out, pass)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> Summary {
        Summary {
            runs: 3,
            voice_to_voice_p50_ms: 837.0,
            voice_to_voice_p99_ms: 847.0,
            overhead_p99_ms: 21.0,
            onset_to_clear_p99_ms: 273.0,
            cpu_ms_per_call_second: 7.9,
            lost_frames: 0.0,
            failed_calls: 0.0,
        }
    }

    /// Noise passes: a few ms and a few per cent either way.
    #[test]
    fn noise_is_not_a_regression() {
        let head = Summary {
            voice_to_voice_p50_ms: 845.0,
            overhead_p99_ms: 33.0,
            cpu_ms_per_call_second: 8.9,
            ..base()
        };
        let (table, pass) = compare(&base(), &head);
        assert!(pass, "{table}");
        assert!(!table.contains("REGRESSED"));
    }

    /// Each figure beyond its allowance fails the gate and is named.
    #[test]
    fn each_regression_fails_the_gate() {
        let worse: [fn(&mut Summary); 5] = [
            |s| s.voice_to_voice_p50_ms += 40.0,
            |s| s.onset_to_clear_p99_ms += 30.0,
            |s| s.cpu_ms_per_call_second *= 1.3,
            |s| s.lost_frames = 1.0,
            |s| s.failed_calls = 1.0,
        ];
        for (i, make_worse) in worse.iter().enumerate() {
            let mut head = base();
            make_worse(&mut head);
            let (table, pass) = compare(&base(), &head);
            assert!(!pass, "case {i}: {table}");
            assert_eq!(table.matches("REGRESSED").count(), 1, "case {i}: {table}");
        }
    }

    /// Better figures pass.
    #[test]
    fn improvements_pass() {
        let head = Summary {
            voice_to_voice_p50_ms: 586.0,
            cpu_ms_per_call_second: 6.0,
            ..base()
        };
        assert!(compare(&base(), &head).1);
    }
}
