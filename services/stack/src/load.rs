//! `just bench-load N`: N concurrent scripted calls against the whole stack on this machine.
//!
//! Consumes the stack (every service a process, stand-ins with fixed delays) and N callers
//! ramped in over a few seconds; produces a table and an SVG plot of voice-to-voice latency,
//! Switchboard's own overhead (latency minus the stand-ins' configured delays and the
//! endpointing silence), barge-in onset → `clear`, frames late or lost each way, calls
//! completed/failed, and CPU and peak RSS per process. State: the reports of the calls.

use std::{
    collections::HashMap,
    path::PathBuf,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use futures::stream::FuturesUnordered;
use indicatif::{ProgressBar, ProgressStyle};
use sb_sim::caller::{CallReport, CallerConfig, Scenario, place_call};

use crate::{
    breakdown,
    demo::CALLER_LINES,
    frames, plot,
    process::Usage,
    stack::{AUTH_TOKEN, Delays, PUBLIC_URL, Stack, StackConfig},
};

/// The call every load caller places (globex: VAD-speech barge-in, 300 ms endpointing).
pub const SCENARIO: &str = r#"
from = "+14155551234"
to = "+15005550007"
tones = true
[[steps]]
wait_for_bot = 30000
[[steps]]
say = "What are your opening hours?"
[[steps]]
wait_for_bot = 30000
[[steps]]
say = "Do you have any offers at the moment?"
[[steps]]
say = "Sorry, could you just email them to me?"
barge_in_after_ms = 1200
[[steps]]
wait_for_bot = 30000
[[steps]]
hangup = true
"#;

/// What the LLM stand-in answers: `{n}` makes every answer unique, so every TTS request
/// misses the cache (as varied, real answers do) and pays the stand-in's first-byte delay.
pub const LOAD_REPLIES: [&str; 3] = [
    "We're open from nine to five on weekdays, ticket {n}. On Saturdays we open at ten.",
    "Yes, order {n} gets half price on every second item. Members also get free delivery \
     on orders over fifty dollars. Would you like to hear more about membership?",
    "Of course, I'll email offer {n} to you right away. Is there anything else?",
];

/// Tokens the LLM stand-in streams before the first sentence of `reply` is complete.
fn first_sentence_tokens(reply: &str) -> u64 {
    let end = reply.find(['.', '?', '!']).map_or(reply.len(), |i| i + 1);
    sb_sim::llm::reply::tokenize(&reply[..end]).len() as u64
}

/// The tenant's endpointing silence (deploy/tenants.toml, globex: the default).
const ENDPOINTING_MS: u64 = 300;
/// The Deepgram stand-in's VAD needs this much voiced audio before `SpeechStarted`.
const VAD_MIN_SPEECH_MS: u64 = 60;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub calls: usize,
    pub delays: Delays,
    pub run_dir: PathBuf,
    /// Callers start over this long.
    pub ramp: Duration,
    /// The ingress' `SB_AUDIO_BATCH_MS`: caller frames per stored batch × 20 ms.
    pub audio_batch_ms: u64,
}

/// What one load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    pub calls: usize,
    pub completed: usize,
    pub failed: Vec<String>,
    pub voice_to_voice_ms: Vec<f64>,
    pub overhead_ms: Vec<f64>,
    pub barge_in_ms: Vec<f64>,
    /// Where the time of each answer went ([`breakdown::STEPS`]).
    pub steps: breakdown::Samples,
    pub frames_sent: u64,
    pub frames_stored: u64,
    /// Caller frames missing between stored batches (also counted as lost).
    pub frame_gaps: u64,
    pub bot_late_frames: u64,
    pub bot_underrun_ms: u64,
    pub call_minutes: f64,
    /// Per process: name, CPU seconds used during the run, peak RSS (KiB), idle RSS before.
    pub processes: Vec<(String, f64, u64, u64)>,
    pub servers: Vec<(String, f64, u64, u64)>,
}

impl LoadResult {
    /// Caller frames sent but not stored (missing batches included).
    pub fn lost_frames(&self) -> u64 {
        self.frames_sent.saturating_sub(self.frames_stored)
    }
}

/// Switchboard's share of a voice-to-voice latency: the stand-ins' configured delays and
/// the endpointing silence subtracted (the first sentence's tokens all stream before it
/// is complete and can be spoken: the first after the first-token delay, each later one
/// `llm_token_ms` after the one before).
fn overhead(v2v_ms: u64, d: &Delays, first_sentence_tokens: u64) -> f64 {
    let providers = ENDPOINTING_MS
        + d.stt_final_ms
        + d.llm_ttft_ms
        + first_sentence_tokens.saturating_sub(1) * d.llm_token_ms
        + d.tts_first_byte_ms;
    v2v_ms as f64 - providers as f64
}

pub async fn run(options: &LoadOptions) -> anyhow::Result<LoadResult> {
    let mut config = StackConfig::new(&options.run_dir);
    config.delays = options.delays;
    config.stt_script = CALLER_LINES.map(String::from).to_vec();
    config.llm_replies = LOAD_REPLIES.map(String::from).to_vec();
    config.service_env = vec![
        ("SB_STT_MAX_CALLS".into(), (options.calls + 10).to_string()),
        ("SB_STAGE_CONCURRENCY".into(), "256".into()),
        ("RUST_LOG".into(), "warn".into()),
        (
            "SB_AUDIO_BATCH_MS".into(),
            options.audio_batch_ms.to_string(),
        ),
    ];
    let stack = Stack::start(config)
        .await
        .context("the stack did not start")?;
    let idle: HashMap<String, Usage> = stack
        .service_usage()
        .into_iter()
        .chain(stack.server_usage())
        .collect();
    let scenario = Scenario::from_toml(SCENARIO)?;

    let bar = ProgressBar::new(options.calls as u64);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:40} {pos}/{len} calls done {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let step = options.ramp / options.calls.max(1) as u32;
    let mut calls = FuturesUnordered::new();
    for i in 0..options.calls {
        let caller = CallerConfig::new(stack.ingress_url(), PUBLIC_URL, AUTH_TOKEN);
        let scenario = scenario.clone();
        calls.push(tokio::spawn(async move {
            tokio::time::sleep(step * i as u32).await;
            place_call(caller, &scenario).await
        }));
    }
    let mut reports: Vec<CallReport> = Vec::new();
    let mut result = LoadResult {
        calls: options.calls,
        ..Default::default()
    };
    while let Some(joined) = futures::StreamExt::next(&mut calls).await {
        match joined {
            Ok(Ok(report)) => reports.push(report),
            Ok(Err(e)) => result.failed.push(e.to_string()),
            Err(e) => result.failed.push(e.to_string()),
        }
        bar.inc(1);
        bar.set_message(format!("({} failed)", result.failed.len()));
    }
    bar.finish();
    let elapsed = started.elapsed();

    let d = options.delays;
    let js = stack.jetstream().await?;
    let stored = frames::stored(&js).await?;
    for report in &reports {
        let healthy = report.protocol_errors.is_empty()
            && report
                .turns
                .iter()
                .skip(1)
                .all(|t| t.first_bot_audio_ms.is_some());
        if healthy {
            result.completed += 1;
        } else {
            result
                .failed
                .push(format!("call {} incomplete: {report}", report.call_sid));
        }
        for (i, turn) in report.turns.iter().enumerate().skip(1) {
            if let Some(v2v) = turn.voice_to_voice_ms {
                let tokens = LOAD_REPLIES
                    .get(i - 1)
                    .map_or(0, |r| first_sentence_tokens(r));
                result.voice_to_voice_ms.push(v2v as f64);
                result.overhead_ms.push(overhead(v2v, &d, tokens));
            }
            if let Some(ms) = turn.barge_in.as_ref().and_then(|b| b.latency_ms) {
                result.barge_in_ms.push(ms as f64);
            }
        }
        if healthy {
            let expected = breakdown::Expected {
                delays: d,
                endpointing_ms: ENDPOINTING_MS,
            };
            let tokens = |i: usize| {
                LOAD_REPLIES
                    .get(i - 1)
                    .map_or(0, |r| first_sentence_tokens(r))
            };
            breakdown::add_call(&js, report, &expected, tokens, &mut result.steps)
                .await
                .with_context(|| format!("reading back call {}", report.call_sid))?;
        }
        result.frames_sent += report.frames_sent;
        let call = stored.get(&report.call_sid).copied().unwrap_or_default();
        result.frames_stored += call.frames;
        result.frame_gaps += call.gaps;
        result.bot_late_frames += report.late_frames;
        result.bot_underrun_ms += report.underrun_ms;
        result.call_minutes += report.duration_ms as f64 / 60_000.0;
    }
    let account = |usage: Vec<(String, Usage)>| {
        usage
            .into_iter()
            .map(|(name, u)| {
                let before = idle.get(&name).copied().unwrap_or_default();
                (
                    name,
                    (u.cpu - before.cpu).as_secs_f64(),
                    u.peak_rss_kb,
                    before.rss_kb,
                )
            })
            .collect::<Vec<_>>()
    };
    result.processes = account(stack.service_usage());
    result.servers = account(stack.server_usage());
    stack.stop().await;
    println!("{} calls in {:.1} s", options.calls, elapsed.as_secs_f64());
    Ok(result)
}

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
    row(&mut out, "barge-in onset → clear", &r.barge_in_ms);
    let beyond: Vec<f64> = r
        .barge_in_ms
        .iter()
        .map(|ms| ms - VAD_MIN_SPEECH_MS as f64)
        .collect();
    row(
        &mut out,
        "barge-in beyond the stand-in's VAD (60 ms)",
        &beyond,
    );
    let lost_in = r.lost_frames();
    let _ = writeln!(
        out,
        "  calls: {} completed, {} failed of {}; caller→Switchboard frames: {} sent, {} lost \
         ({} in gaps between stored batches); Switchboard→caller: {} late frames (> 40 ms), \
         {} ms of playback gaps",
        r.completed,
        r.failed.len(),
        r.calls,
        r.frames_sent,
        lost_in,
        r.frame_gaps,
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
    for (name, cpu, peak, idle) in r.processes.iter().chain(r.servers.iter()) {
        let per_min = cpu / r.call_minutes.max(1e-9);
        let per_call = peak.saturating_sub(*idle) as f64 / r.calls.max(1) as f64;
        let _ = writeln!(
            out,
            "  {name:<14} {cpu:>12.1} {per_min:>14.2} {:>12.1} {per_call:>16.0}",
            *peak as f64 / 1024.0
        );
        if r.processes.iter().any(|p| &p.0 == name) {
            total_peak += peak;
            total_idle += idle;
        }
    }
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
        "medians of {} runs: voice-to-voice p50 {:.1} / p99 {:.1} ms; overhead p50 {:.1} / p99 {:.1} ms; \
         barge-in → clear p99 {:.1} ms; lost caller frames {}; late bot frames {}\n",
        results.len(),
        p50(|r| &r.voice_to_voice_ms),
        p99(|r| &r.voice_to_voice_ms),
        p50(|r| &r.overhead_ms),
        p99(|r| &r.overhead_ms),
        p99(|r| &r.barge_in_ms),
        median(results.iter().map(|r| r.lost_frames() as f64).collect()),
        median(results.iter().map(|r| r.bot_late_frames as f64).collect()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_sentences_are_counted_in_stand_in_tokens() {
        assert_eq!(first_sentence_tokens("Hi there. More."), 3);
        // "We" "'" "re" " open" " from" " nine" " to" " five" " on" " weekdays" "," " ticket" " {n}" "."
        assert_eq!(first_sentence_tokens(LOAD_REPLIES[0]), 14);
    }

    #[test]
    fn overhead_removes_every_configured_delay() {
        let d = Delays {
            stt_final_ms: 150,
            llm_ttft_ms: 200,
            llm_token_ms: 2,
            tts_first_byte_ms: 150,
        };
        // 300 endpointing + 150 + 200 + 9 × 2 + 150 = 818.
        assert_eq!(overhead(835, &d, 10), 17.0);
    }
}
