//! `just bench-load N`: N concurrent scripted calls against the whole stack on this machine.
//!
//! Consumes the stack (every service a process, stand-ins with fixed delays) and N callers
//! ramped in over a few seconds; produces a `LoadResult` (which `report` shows as a table
//! and an SVG plot): voice-to-voice latency, Switchboard's own overhead (latency minus the
//! stand-ins' configured delays and the endpointing silence), the caller's onset → `clear`,
//! frames late or lost each way, calls completed/failed, preemptive answers by outcome, and
//! CPU and peak RSS per process. A run calls one tenant (speech or words barge-in) and can
//! switch its preemptive generation on or off first (through the console, as live config).
//! State: the reports of the calls.

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
    frames,
    process::Usage,
    stack::{AUTH_TOKEN, Delays, PUBLIC_URL, Stack, StackConfig},
};

/// The call every load caller places, to the tenant's number (`{to}`): globex (speech
/// barge-in) or acme (words barge-in), both with 300 ms endpointing.
pub const SCENARIO: &str = r#"
from = "+14155551234"
to = "{to}"
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

/// The tenants a load run can call (deploy/base/tenants.toml): id, number, barge-in mode.
pub const TENANTS: [(&str, &str, &str); 2] = [
    ("globex", "+15005550007", "speech"),
    ("acme", "+15005550006", "words"),
];

/// The tenants' endpointing silence (deploy/base/tenants.toml, globex and acme: 300 ms).
pub(crate) const ENDPOINTING_MS: u64 = 300;

#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub calls: usize,
    pub delays: Delays,
    pub run_dir: PathBuf,
    /// Callers start over this long.
    pub ramp: Duration,
    /// The ingress' `SB_AUDIO_BATCH_MS`: caller frames per stored batch × 20 ms.
    pub audio_batch_ms: u64,
    /// NATS auth (users and permissions) and TLS: both on is the production setting.
    pub nats: crate::nats_server::NatsOptions,
    /// Which tenant the callers call (one of [`TENANTS`]).
    pub tenant: String,
    /// Preemptive generation set for the tenant through the console before the calls
    /// (`None`: as the tenants file says).
    pub preemptive: Option<bool>,
}

/// What one load run measured.
#[derive(Debug, Clone, Default)]
pub struct LoadResult {
    /// The tenant, its barge-in mode and whether preemptive generation was on.
    pub setup: String,
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
    /// Messages the stored caller frames took (`AUDIO_BATCH_MS` batches).
    pub audio_messages: u64,
    pub bot_late_frames: u64,
    pub bot_underrun_ms: u64,
    pub call_minutes: f64,
    /// Per process: name, CPU seconds used during the run, peak RSS (KiB), idle RSS before.
    pub processes: Vec<(String, f64, u64, u64)>,
    pub servers: Vec<(String, f64, u64, u64)>,
    /// The stand-ins and the load generator (this process): not Switchboard, but on the
    /// same two cores.
    pub others: Vec<(String, f64, u64, u64)>,
    /// From the first call placed to the stack stopped.
    pub wall_secs: f64,
    /// Preemptive answers by outcome (started, used, discarded), from the stt's metrics.
    pub preflights: Vec<(String, f64)>,
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
    v2v_ms as f64 - expected(d).total_ms(first_sentence_tokens)
}

/// The configured delays of the load benchmark's turns.
fn expected(d: &Delays) -> breakdown::Expected {
    breakdown::Expected {
        delays: *d,
        endpointing_ms: ENDPOINTING_MS,
    }
}

/// Stand-in tokens of the first sentence answering caller turn `i` (1-based).
fn reply_tokens(i: usize) -> u64 {
    LOAD_REPLIES
        .get(i - 1)
        .map_or(0, |r| first_sentence_tokens(r))
}

/// The stand-ins' and the load generator's (this process') usage.
fn other_usage(stack: &Stack) -> Vec<(String, Usage)> {
    let mut others = stack.stand_in_usage();
    others.push((
        "load generator".to_owned(),
        crate::process::usage(std::process::id()),
    ));
    others
}

pub async fn run(options: &LoadOptions) -> anyhow::Result<LoadResult> {
    let mut config = StackConfig::new(&options.run_dir);
    config.delays = options.delays;
    config.nats = options.nats.clone();
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
    let (tenant, number, mode) = TENANTS
        .into_iter()
        .find(|(id, _, _)| *id == options.tenant)
        .with_context(|| format!("no load tenant {:?}", options.tenant))?;
    let stack = Stack::start(config)
        .await
        .context("the stack did not start")?;
    if let Some(on) = options.preemptive {
        crate::live_tenant::set(&stack, tenant, "turn_taking.preemptive", on.into())
            .await
            .context("setting preemptive generation")?;
    }
    let idle: HashMap<String, Usage> = stack
        .service_usage()
        .into_iter()
        .chain(stack.server_usage())
        .chain(other_usage(&stack))
        .collect();
    let scenario = Scenario::from_toml(&SCENARIO.replace("{to}", number))?;

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
        setup: format!(
            "tenant {tenant} ({mode} barge-in), preemptive generation {}",
            match options.preemptive {
                Some(true) => "on",
                Some(false) => "off",
                None => "as configured",
            }
        ),
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
                result.voice_to_voice_ms.push(v2v as f64);
                result.overhead_ms.push(overhead(v2v, &d, reply_tokens(i)));
            }
            if let Some(ms) = turn.barge_in.as_ref().and_then(|b| b.latency_ms) {
                result.barge_in_ms.push(ms as f64);
            }
        }
        if healthy {
            breakdown::add_call(&js, report, &expected(&d), reply_tokens, &mut result.steps)
                .await
                .with_context(|| format!("reading back call {}", report.call_sid))?;
        }
        result.frames_sent += report.frames_sent;
        let call = stored.get(&report.call_sid).copied().unwrap_or_default();
        result.frames_stored += call.frames;
        result.frame_gaps += call.gaps;
        result.audio_messages += call.messages;
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
    result.others = account(other_usage(&stack));
    result.wall_secs = started.elapsed().as_secs_f64();
    result.preflights = preflights(&stack).await;
    stack.stop().await;
    println!("{} calls in {:.1} s", options.calls, elapsed.as_secs_f64());
    Ok(result)
}

/// `switchboard_stt_preflights_total` summed by outcome over the services' `/metrics`.
async fn preflights(stack: &Stack) -> Vec<(String, f64)> {
    let mut by_outcome: std::collections::BTreeMap<String, f64> = Default::default();
    for (_, addr) in stack.service_addrs() {
        let Ok(response) = reqwest::get(format!("http://{addr}/metrics")).await else {
            continue;
        };
        let Ok(text) = response.text().await else {
            continue;
        };
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("switchboard_stt_preflights_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.split_once("} ") else {
                continue;
            };
            let outcome = labels
                .split(',')
                .find_map(|l| l.strip_prefix("outcome=\""))
                .map(|o| o.trim_end_matches('"').to_owned());
            if let (Some(outcome), Ok(value)) = (outcome, value.trim().parse::<f64>()) {
                *by_outcome.entry(outcome).or_default() += value;
            }
        }
    }
    by_outcome.into_iter().collect()
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
