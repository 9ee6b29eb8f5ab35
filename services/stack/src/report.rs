//! How a load run is shown: the table of latencies (with where each answer's time went),
//! losses and per-process CPU and memory, the SVG plot, and the medians over runs.
//!
//! Consumes [`LoadResult`]s; produces text and an SVG file. State: none.

use std::path::PathBuf;

use crate::{
    breakdown,
    load::{ENDPOINTING_MS, LoadResult},
    plot,
    stack::Delays,
};

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// (p50, p95, p99) of `values`.
pub fn percentiles(values: &[f64]) -> (f64, f64, f64) {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    (
        percentile(&v, 0.50),
        percentile(&v, 0.95),
        percentile(&v, 0.99),
    )
}

/// The table printed at the end.
pub fn table(r: &LoadResult, d: &Delays) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let row = |out: &mut String, name: &str, values: &[f64]| {
        let (p50, p95, p99) = percentiles(values);
        let _ = writeln!(
            out,
            "  {name:<50} {p50:>8.1} {p95:>8.1} {p99:>8.1}   (n={})",
            values.len()
        );
    };
    let _ = writeln!(out, "{}", r.setup);
    let _ = writeln!(
        out,
        "stand-in delays: stt final +{} ms, LLM first token {} ms then {} ms/token, TTS first byte {} ms; endpointing {} ms",
        d.stt_final_ms, d.llm_ttft_ms, d.llm_token_ms, d.tts_first_byte_ms, ENDPOINTING_MS
    );
    let _ = writeln!(
        out,
        "  {:<50} {:>8} {:>8} {:>8}",
        "latency (ms)", "p50", "p95", "p99"
    );
    row(
        &mut out,
        "voice-to-voice (end of speech → bot audio)",
        &r.voice_to_voice_ms,
    );
    row(
        &mut out,
        "Switchboard overhead (stand-in delays removed)",
        &r.overhead_ms,
    );
    for (step, samples) in breakdown::STEPS.iter().zip(&r.steps) {
        row(&mut out, &format!("  {step}"), samples);
    }
    row(
        &mut out,
        "caller onset → clear (the bot stops; target ≤ 280)",
        &r.barge_in_ms,
    );
    if !r.preflights.is_empty() {
        let counts: Vec<String> = r
            .preflights
            .iter()
            .map(|(outcome, n)| format!("{outcome} {n:.0}"))
            .collect();
        let started = r
            .preflights
            .iter()
            .find(|(o, _)| o == "started")
            .map_or(0.0, |(_, n)| *n);
        let discarded = r
            .preflights
            .iter()
            .find(|(o, _)| o == "discarded")
            .map_or(0.0, |(_, n)| *n);
        let _ = writeln!(
            out,
            "  preemptive answers: {} ({:.1} % discarded)",
            counts.join(", "),
            100.0 * discarded / started.max(1.0)
        );
    }
    let lost_in = r.lost_frames();
    let _ = writeln!(
        out,
        "  calls: {} completed, {} failed of {}; caller→Switchboard frames: {} sent, {} lost \
         ({} in gaps between stored batches), stored in {} messages; Switchboard→caller: {} \
         late frames (> 40 ms), {} ms of playback gaps",
        r.completed,
        r.failed.len(),
        r.calls,
        r.frames_sent,
        lost_in,
        r.frame_gaps,
        r.audio_messages,
        r.bot_late_frames,
        r.bot_underrun_ms
    );
    let _ = writeln!(
        out,
        "  {:<14} {:>12} {:>14} {:>12} {:>16}",
        "process", "cpu s", "cpu s/call-min", "peak RSS MB", "RSS/call KB"
    );
    let mut total_peak = 0u64;
    let mut total_idle = 0u64;
    let mut total_cpu = 0.0;
    let mut switchboard_cpu = 0.0;
    let rows = r.processes.iter().chain(&r.servers).chain(&r.others);
    for (i, (name, cpu, peak, idle)) in rows.enumerate() {
        if i == r.processes.len() + r.servers.len() {
            let _ = writeln!(out, "  not Switchboard, on the same cores:");
        }
        let per_min = cpu / r.call_minutes.max(1e-9);
        let per_call = peak.saturating_sub(*idle) as f64 / r.calls.max(1) as f64;
        let _ = writeln!(
            out,
            "  {name:<14} {cpu:>12.1} {per_min:>14.2} {:>12.1} {per_call:>16.0}",
            *peak as f64 / 1024.0
        );
        total_cpu += cpu;
        if i < r.processes.len() + r.servers.len() {
            switchboard_cpu += cpu;
        }
        if i < r.processes.len() {
            total_peak += peak;
            total_idle += idle;
        }
    }
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let _ = writeln!(
        out,
        "  the box: {total_cpu:.1} CPU-s used of {:.1} ({cores} cores × {:.1} s)",
        cores as f64 * r.wall_secs,
        r.wall_secs
    );
    let budget = Budget::of(total_cpu, switchboard_cpu, r.call_minutes);
    let _ = writeln!(
        out,
        "  CPU per call-second: {:.2} ms on the box, {:.2} ms of it in Switchboard and its servers",
        budget.box_ms, budget.switchboard_ms
    );
    let _ = writeln!(
        out,
        "  Switchboard processes: {:.1} MB peak RSS in all, {:.0} KB per concurrent call above idle",
        total_peak as f64 / 1024.0,
        total_peak.saturating_sub(total_idle) as f64 / r.calls.max(1) as f64
    );
    for failure in r.failed.iter().take(5) {
        let _ = writeln!(
            out,
            "  failed: {}",
            failure.chars().take(300).collect::<String>()
        );
    }
    out
}

/// ms of CPU per call-second in Switchboard's processes and its servers over run `r`.
pub fn cpu_per_call_second(r: &LoadResult) -> f64 {
    let cpu: f64 = r.processes.iter().chain(&r.servers).map(|p| p.1).sum();
    Budget::of(cpu, cpu, r.call_minutes).switchboard_ms
}

/// What one second of one call cost in CPU over the run. It falls as load rises (fixed
/// costs spread over more calls, more work per wake-up), so it does not extrapolate.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Budget {
    /// Milliseconds of CPU per call-second, every process on the box.
    box_ms: f64,
    /// The same for Switchboard's processes and its servers (NATS, Redis) only.
    switchboard_ms: f64,
}

impl Budget {
    fn of(box_cpu_s: f64, switchboard_cpu_s: f64, call_minutes: f64) -> Self {
        let call_seconds = (call_minutes * 60.0).max(1e-9);
        Self {
            box_ms: box_cpu_s * 1e3 / call_seconds,
            switchboard_ms: switchboard_cpu_s * 1e3 / call_seconds,
        }
    }
}

/// Writes the plot next to the logs; returns its path.
pub fn write_plot(r: &LoadResult, dir: &std::path::Path) -> anyhow::Result<PathBuf> {
    let path = dir.join(format!("bench-load-{}.svg", r.calls));
    let series = [
        ("voice-to-voice", &r.voice_to_voice_ms),
        ("Switchboard overhead", &r.overhead_ms),
        ("barge-in → clear", &r.barge_in_ms),
    ];
    std::fs::write(
        &path,
        plot::cdf_svg(&format!("{} concurrent calls", r.calls), &series),
    )?;
    Ok(path)
}

/// The medians over several runs of the headline figures.
pub fn medians(results: &[LoadResult]) -> String {
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
    };
    let p99 = |f: fn(&LoadResult) -> &Vec<f64>| {
        median(results.iter().map(|r| percentiles(f(r)).2).collect())
    };
    let p50 = |f: fn(&LoadResult) -> &Vec<f64>| {
        median(results.iter().map(|r| percentiles(f(r)).0).collect())
    };
    format!(
        "medians of {} runs ({}): voice-to-voice p50 {:.1} / p99 {:.1} ms; overhead p50 {:.1} / p99 {:.1} ms; \
         onset → clear p50 {:.1} / p99 {:.1} ms; lost caller frames {}; late bot frames {}\n",
        results.len(),
        results.first().map_or("", |r| r.setup.as_str()),
        p50(|r| &r.voice_to_voice_ms),
        p99(|r| &r.voice_to_voice_ms),
        p50(|r| &r.overhead_ms),
        p99(|r| &r.overhead_ms),
        p50(|r| &r.barge_in_ms),
        p99(|r| &r.barge_in_ms),
        median(results.iter().map(|r| r.lost_frames() as f64).collect()),
        median(results.iter().map(|r| r.bot_late_frames as f64).collect()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 83 CPU-s over 200 call-minutes (12,000 call-seconds) is 6.92 ms per call-second,
    /// 57 of them 4.75 ms.
    #[test]
    fn budget_per_call_second() {
        let budget = Budget::of(83.0, 57.0, 200.0);
        assert!((budget.box_ms - 83_000.0 / 12_000.0).abs() < 1e-9);
        assert!((budget.switchboard_ms - 4.75).abs() < 1e-9);
    }
}
