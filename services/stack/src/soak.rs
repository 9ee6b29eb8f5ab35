//! `just soak MINUTES`: a steady load for a long time, watching every process for growth.
//!
//! Keeps `calls` concurrent scripted calls (the load benchmark's call, ~30 s each) against
//! the stack, each replaced as it ends ([`CallPool`]); samples each process' RSS
//! (`VmRSS`) and open file descriptors (`/proc/PID/fd`) at the start, every minute and at
//! the end, and prints them as they come. After a warm-up ([`warm_up`]) each Switchboard
//! service is judged by [`judge`]: the line through its samples (Theil–Sen: robust to a
//! spike) must not rise more than noise. nats-server, redis-server and the stand-ins are shown beside
//! them. State: the stack, the pool and the samples.

use std::{fmt::Write as _, path::PathBuf, time::Duration};

use anyhow::Context as _;
use sb_sim::caller::{EndedBy, Scenario};

use crate::{
    demo::CALLER_LINES,
    load::{LOAD_REPLIES, SCENARIO},
    pool::CallPool,
    process::Usage,
    stack::{DEPLOYED_AUDIO_BATCH_MS, Delays, Stack, StackConfig},
};

/// RSS may rise by this share of its mean per 10 minutes …
pub const RSS_GROWTH_PER_10_MIN: f64 = 0.02;
/// … and by this much (KiB per 10 minutes), before it counts as growth. An allocator keeps
/// some of a burst's memory for a while (the tts held ~1 MiB for minutes after a spike in
/// the 30-minute soak of `tests/BENCHMARKS.md`); a leak of 1 KiB per call at 100 calls
/// (~250 calls a minute) is 2.5 MiB per 10 minutes and is caught.
pub const RSS_FLOOR_KB_PER_10_MIN: f64 = 2048.0;
/// Open descriptors follow the calls in flight, and an HTTP client's keep-alive pool (the
/// agent's to the LLM, the tts' to its engine) gains a connection whenever a burst outruns
/// it and keeps reusing it: +13 on the agent over 30 minutes, the same connections reused
/// for minutes. So the fitted line may rise this many over the judged window …
pub const FD_SLACK: f64 = 10.0;
/// … or this share of their mean, whichever is larger. A leak of one descriptor per 500
/// calls is 10 per 20 minutes at 100 calls, and is caught.
pub const FD_SLACK_SHARE: f64 = 0.10;

#[derive(Debug, Clone)]
pub struct SoakOptions {
    pub calls: usize,
    pub minutes: u64,
    pub run_dir: PathBuf,
    /// Time between samples (a minute; tests may shorten it).
    pub every: Duration,
}

/// One reading of every process.
#[derive(Debug, Clone)]
pub struct Sample {
    /// Minutes since the calls started.
    pub minute: f64,
    /// Calls that ended since the previous sample, completed or not.
    pub completed: usize,
    pub failed: usize,
    pub processes: Vec<(String, Usage)>,
}

/// The verdict on one process.
#[derive(Debug, Clone)]
pub struct Trend {
    pub name: String,
    /// Fitted RSS change per 10 minutes, KiB, and as a share of the mean.
    pub rss_kb_per_10_min: f64,
    pub rss_share_per_10_min: f64,
    /// Fitted change of open descriptors over the judged window, and the allowed slack.
    pub fd_rise: f64,
    pub fd_slack: f64,
    /// Judged (a Switchboard service) or only shown (servers, stand-ins).
    pub judged: bool,
}

impl Trend {
    pub fn grows(&self) -> bool {
        self.judged
            && ((self.rss_share_per_10_min > RSS_GROWTH_PER_10_MIN
                && self.rss_kb_per_10_min > RSS_FLOOR_KB_PER_10_MIN)
                || self.fd_rise > self.fd_slack)
    }
}

/// What a soak run measured.
#[derive(Debug)]
pub struct SoakResult {
    pub samples: Vec<Sample>,
    /// From the first sample after the warm-up on; empty when too few samples remain.
    pub trends: Vec<Trend>,
    pub warm_up_minutes: f64,
}

impl SoakResult {
    pub fn growing(&self) -> Vec<&Trend> {
        self.trends.iter().filter(|t| t.grows()).collect()
    }
}

/// The warm-up: the first third of the run, at least 2 minutes (caches fill, allocators
/// reach their working set, JetStream's and Redis' keys reach their TTL churn).
pub fn warm_up(minutes: f64) -> f64 {
    (minutes / 3.0).max(2.0)
}

pub async fn run(options: &SoakOptions) -> anyhow::Result<SoakResult> {
    let mut config = StackConfig::new(&options.run_dir);
    config.delays = Delays::TYPICAL;
    config.stt_script = CALLER_LINES.map(String::from).to_vec();
    config.llm_replies = LOAD_REPLIES.map(String::from).to_vec();
    config.service_env = vec![
        ("SB_STT_MAX_CALLS".into(), (options.calls + 10).to_string()),
        ("SB_STAGE_CONCURRENCY".into(), "256".into()),
        ("RUST_LOG".into(), "warn".into()),
        (
            "SB_AUDIO_BATCH_MS".into(),
            DEPLOYED_AUDIO_BATCH_MS.to_string(),
        ),
    ];
    let stack = Stack::start(config)
        .await
        .context("the stack did not start")?;
    let mut pool = CallPool::new(
        stack.caller_config(),
        Scenario::from_toml(SCENARIO)?,
        Duration::from_secs(180),
    );
    let names: Vec<String> = usage(&stack).into_iter().map(|(n, _)| n).collect();
    println!(
        "soak: {} calls for {} minutes",
        options.calls, options.minutes
    );
    println!("{}", header(&names));
    let mut samples = vec![sample(&stack, 0.0, &mut pool)];
    println!("{}", row(&samples[0]));
    pool.ramp(options.calls, Duration::from_secs(20));
    let minute = options.every.as_secs_f64() / 60.0;
    for i in 1..=options.minutes {
        pool.keep(options.calls, usize::MAX, tokio::time::sleep(options.every))
            .await;
        samples.push(sample(&stack, i as f64 * minute, &mut pool));
        println!("{}", row(samples.last().expect("just pushed")));
    }
    pool.drain().await;
    stack.stop().await;
    let warm = warm_up(options.minutes as f64) * minute;
    Ok(SoakResult {
        trends: judge(&samples, warm),
        samples,
        warm_up_minutes: warm,
    })
}

/// Every process of the stack: the Switchboard services, then in parentheses (shown, not
/// judged) the servers, whose memory is the data they hold by design (the TTS cache up to
/// Redis' `maxmemory`, JetStream's index up to the streams' `max_age` and `max_bytes`),
/// and the stand-ins.
fn usage(stack: &Stack) -> Vec<(String, Usage)> {
    let mut all = stack.service_usage();
    let others = stack
        .server_usage()
        .into_iter()
        .chain(stack.stand_in_usage());
    all.extend(others.map(|(name, u)| (format!("({name})"), u)));
    all
}

fn sample(stack: &Stack, minute: f64, pool: &mut CallPool) -> Sample {
    let finished = pool.take_finished();
    let completed = finished
        .iter()
        .filter(|f| {
            f.result.as_ref().is_ok_and(|r| {
                r.ended_by == EndedBy::Caller
                    && r.turns
                        .iter()
                        .skip(1)
                        .all(|t| t.first_bot_audio_ms.is_some())
            })
        })
        .count();
    Sample {
        minute,
        completed,
        failed: finished.len() - completed,
        processes: usage(stack),
    }
}

/// The Theil–Sen slope of `ys` over `xs` (per unit of x): the median of the slopes
/// between every two samples. A leak moves every pair; one spike (a transient allocation,
/// a burst of connections) moves a few pairs, not the median (it would tilt a least-squares
/// line).
fn slope(xs: &[f64], ys: &[f64]) -> f64 {
    let mut slopes = Vec::new();
    for i in 0..xs.len() {
        for j in i + 1..xs.len() {
            if xs[j] != xs[i] {
                slopes.push((ys[j] - ys[i]) / (xs[j] - xs[i]));
            }
        }
    }
    if slopes.is_empty() {
        return 0.0;
    }
    slopes.sort_by(f64::total_cmp);
    let mid = slopes.len() / 2;
    if slopes.len() % 2 == 1 {
        slopes[mid]
    } else {
        (slopes[mid - 1] + slopes[mid]) / 2.0
    }
}

/// Each process' trend over the samples taken at `warm_up` minutes or later; none when
/// fewer than three remain.
pub fn judge(samples: &[Sample], warm_up: f64) -> Vec<Trend> {
    let judged: Vec<&Sample> = samples.iter().filter(|s| s.minute >= warm_up).collect();
    if judged.len() < 3 {
        return Vec::new();
    }
    let xs: Vec<f64> = judged.iter().map(|s| s.minute).collect();
    let span = xs[xs.len() - 1] - xs[0];
    let names: Vec<&String> = judged[0].processes.iter().map(|(n, _)| n).collect();
    names
        .into_iter()
        .map(|name| {
            let series = |f: fn(&Usage) -> f64| -> Vec<f64> {
                judged
                    .iter()
                    .map(|s| {
                        s.processes
                            .iter()
                            .find(|(n, _)| n == name)
                            .map_or(0.0, |(_, u)| f(u))
                    })
                    .collect()
            };
            let (rss, fds) = (series(|u| u.rss_kb as f64), series(|u| u.fds as f64));
            let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
            let rss_per_10 = slope(&xs, &rss) * 10.0;
            Trend {
                name: name.clone(),
                rss_kb_per_10_min: rss_per_10,
                rss_share_per_10_min: rss_per_10 / mean(&rss).max(1.0),
                fd_rise: slope(&xs, &fds) * span,
                fd_slack: FD_SLACK.max(FD_SLACK_SHARE * mean(&fds)),
                judged: !name.starts_with('('),
            }
        })
        .collect()
}

fn header(names: &[String]) -> String {
    let mut out = format!("{:>6} {:>11}", "minute", "calls ok/✗");
    for name in names {
        let _ = write!(out, " {:>14}", name.chars().take(14).collect::<String>());
    }
    out + &format!("\n{:>6} {:>11}", "", "")
        + &names
            .iter()
            .map(|_| format!(" {:>14}", "RSS MB / fds"))
            .collect::<String>()
}

fn row(s: &Sample) -> String {
    let mut out = format!(
        "{:>6.1} {:>11}",
        s.minute,
        format!("{}/{}", s.completed, s.failed)
    );
    for (_, u) in &s.processes {
        let _ = write!(
            out,
            " {:>14}",
            format!("{:.1} / {}", u.rss_kb as f64 / 1024.0, u.fds)
        );
    }
    out
}

/// The per-process verdicts and the overall one.
pub fn verdict(result: &SoakResult) -> String {
    let mut out = String::new();
    if result.trends.is_empty() {
        return "soak: too short to judge (fewer than 3 samples after the warm-up)\n".into();
    }
    let _ = writeln!(
        out,
        "after {:.1} minutes of warm-up (RSS: growth > {:.0} % of the mean and > {:.0} MiB per 10 min; \
         fds: fitted rise > max({FD_SLACK:.0}, {:.0} % of the mean)):",
        result.warm_up_minutes,
        RSS_GROWTH_PER_10_MIN * 100.0,
        RSS_FLOOR_KB_PER_10_MIN / 1024.0,
        FD_SLACK_SHARE * 100.0
    );
    for t in &result.trends {
        let _ = writeln!(
            out,
            "  {:<16} RSS {:+8.0} KiB/10 min ({:+.2} %), fds {:+.1} (slack {:.0}){}",
            t.name,
            t.rss_kb_per_10_min,
            t.rss_share_per_10_min * 100.0,
            t.fd_rise,
            t.fd_slack,
            match (t.judged, t.grows()) {
                (false, _) => "  (not judged)",
                (true, true) => "  GROWS",
                (true, false) => "  ok",
            }
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn samples(rss: &[u64], fds: &[u64]) -> Vec<Sample> {
        rss.iter()
            .zip(fds)
            .enumerate()
            .map(|(i, (&rss_kb, &fds))| Sample {
                minute: i as f64,
                completed: 0,
                failed: 0,
                processes: vec![(
                    "ingress".into(),
                    Usage {
                        rss_kb,
                        fds,
                        ..Usage::default()
                    },
                )],
            })
            .collect()
    }

    #[test]
    fn a_flat_or_noisy_process_does_not_grow() {
        let noisy = samples(
            &[90_000, 100_000, 101_000, 99_500, 100_800, 99_900, 100_300],
            &[40, 52, 47, 55, 49, 51, 48],
        );
        let trends = judge(&noisy, 2.0);
        assert_eq!(trends.len(), 1);
        assert!(!trends[0].grows(), "{trends:?}");
    }

    #[test]
    fn a_steady_leak_of_memory_or_descriptors_grows() {
        // +500 KiB a minute on 100 MiB: ~5 % per 10 minutes.
        let rss: Vec<u64> = (0..8).map(|i| 100_000 + 500 * i).collect();
        let leak = samples(&rss, &[40; 8]);
        assert!(judge(&leak, 2.0)[0].grows());
        let fds: Vec<u64> = (0..8).map(|i| 40 + 3 * i).collect();
        let leak = samples(&[100_000; 8], &fds);
        assert!(judge(&leak, 2.0)[0].grows());
    }

    #[test]
    fn warm_up_is_a_third_but_at_least_two_minutes() {
        assert_eq!(warm_up(30.0), 10.0);
        assert_eq!(warm_up(3.0), 2.0);
        assert!(judge(&samples(&[1, 2, 3], &[1, 2, 3]), 2.0).is_empty());
    }

    #[test]
    fn slope_of_a_line() {
        assert!((slope(&[0.0, 1.0, 2.0], &[1.0, 3.0, 5.0]) - 2.0).abs() < 1e-9);
    }

    /// One transient spike late in the run (memory allocated and given back) is not growth.
    #[test]
    fn a_spike_is_not_growth() {
        let mut rss = vec![25_000; 12];
        rss[9] = 33_000;
        rss[10] = 28_000;
        let trends = judge(&samples(&rss, &[20; 12]), 2.0);
        assert!(!trends[0].grows(), "{trends:?}");
    }
}
