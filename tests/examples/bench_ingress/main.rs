//! `just bench-ingress` (an example, so it can use the services, which are dev-dependencies
//! of sb-tests): the ingress' webhook throughput and latency, and media frame →
//! JetStream latency, on this machine.
//!
//! Each run starts a real nats-server and redis-server (the sb-tests harness), serves the
//! ingress in-process on its own tokio runtime (2 worker threads) and drives it over
//! loopback from a second runtime with hand-rolled, allocation-light HTTP/1.1 and WebSocket
//! clients (keep-alive connections; Twilio itself opens a TLS connection per webhook). Phases:
//! 1. breakdown: the sequential cost of each webhook step (signature, Redis admission,
//!    publish with ack) and of a whole webhook;
//! 2. webhooks, closed loop: throughput with `--connections` busy connections, and latency;
//! 3. webhooks, open loop at each of `--rates`: latency from each request's scheduled time
//!    (so a stall counts against every request queued behind it);
//! 4. media: `--sockets` concurrent Media Streams sockets at 50 frames/s each; latency from
//!    a frame's send to a core subscriber on `audio.{t}.{sid}.in` seeing it (JetStream
//!    stores a message as it routes it), with the send time carried in the payload, for
//!    every `--sample-every`th call.
//!
//! Every webhook is a new call (signature + idempotency claim + rate limit + `webhook`
//! event stored). CPU time per webhook and per frame is printed for the ingress' threads,
//! the load generator, nats-server and redis-server: on a shared machine it holds up where
//! wall-clock rates do not. Medians of `--runs` runs on fresh servers are printed at the end.

mod clients;
mod media;
mod stack;
mod webhooks;

use std::time::Duration;

use clap::Parser;
use sb_runtime::tenants::testing::TenantToml;

use stack::run_once;

pub(crate) const TOKEN: &str = "bench-auth-token";
/// Media sockets sharing one 20 ms clock in the load generator.
pub(crate) const SOCKETS_PER_CLOCK: usize = 5;
/// Name of the ingress runtime's threads, for CPU accounting.
pub(crate) const INGRESS_THREADS: &str = "ingress-rt";
pub(crate) const PUBLIC: &str = "https://agent.example.com";
pub(crate) const ACCOUNT: &str = "AC0123456789abcdef0123456789abcdef";
pub(crate) const CALLER: &str = "+14155551234";
pub(crate) const NUMBER: &str = "+15005550006";
/// The tenants file: `acme` on `NUMBER`, with a webhook limit the benchmark never reaches.
pub(crate) fn tenants_toml() -> TenantToml {
    TenantToml::new()
        .tier("bench", 8, 1_000_000_000)
        .tenant("acme", NUMBER, "bench")
}

/// Ingress benchmark (real nats-server and redis-server, in-process ingress).
#[derive(Debug, Parser)]
pub(crate) struct Args {
    /// Webhooks sent in the closed-loop throughput phase.
    #[arg(long, default_value_t = 40_000)]
    pub(crate) webhooks: usize,
    /// Concurrent keep-alive connections for the webhook phases.
    #[arg(long, default_value_t = 64)]
    pub(crate) connections: usize,
    /// Target rates (webhooks/s) of the open-loop latency phases, one phase each.
    #[arg(long, value_delimiter = ',', default_value = "20000,5000")]
    pub(crate) rates: Vec<u64>,
    /// Length of the open-loop phase, seconds.
    #[arg(long, default_value_t = 4)]
    pub(crate) seconds: u64,
    /// Concurrent media sockets.
    #[arg(long, default_value_t = 500)]
    pub(crate) sockets: usize,
    /// Observe every Nth call's frames (each observed frame costs nats-server and this
    /// process a delivery, which would otherwise be measured as load).
    #[arg(long, default_value_t = 10)]
    pub(crate) sample_every: usize,
    /// Length of the media phase, seconds (the first second is warm-up, not measured).
    #[arg(long, default_value_t = 8)]
    pub(crate) media_seconds: u64,
    /// The ingress' `SB_AUDIO_ACK_EVERY`: every Nth audio event of a call asks for a store
    /// ack (1: every event, as before sampling).
    #[arg(long, default_value_t = 10)]
    pub(crate) audio_ack_every: u32,
    /// Worker threads of the ingress' runtime.
    #[arg(long, default_value_t = 2)]
    pub(crate) ingress_threads: usize,
    /// Worker threads of the load generator's runtime.
    #[arg(long, default_value_t = 2)]
    pub(crate) client_threads: usize,
    /// Repetitions (each on fresh servers); medians are printed at the end.
    #[arg(long, default_value_t = 3)]
    pub(crate) runs: usize,
    /// Which phases: all, webhooks, media.
    #[arg(long, default_value = "all")]
    pub(crate) only: String,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.client_threads)
        .thread_name("load-rt")
        .enable_all()
        .build()?
        .block_on(bench(args))
}

#[derive(Debug, Default, Clone)]
pub(crate) struct RunResult {
    pub(crate) sig_us: f64,
    pub(crate) admit_us: f64,
    pub(crate) publish_us: f64,
    pub(crate) sequential_us: f64,
    pub(crate) throughput: f64,
    closed_p50_ms: f64,
    closed_p99_ms: f64,
    /// Per `--rates` entry: (achieved rate, p50 ms, p99 ms).
    pub(crate) open: Vec<(f64, f64, f64)>,
    pub(crate) media_frames: usize,
    pub(crate) media_lost: usize,
    media_p50_ms: f64,
    media_p99_ms: f64,
    pub(crate) media_max_ms: f64,
    /// CPU µs per webhook (closed loop) and per frame (media): ingress, load, nats, redis.
    pub(crate) webhook_cpu: [f64; 4],
    pub(crate) frame_cpu: [f64; 4],
}

async fn bench(args: Args) -> anyhow::Result<()> {
    println!(
        "bench-ingress: {} runs; webhooks: {} closed-loop on {} connections, {} s at each of {:?}/s; media: {} sockets x {} s, a store ack every {} audio events",
        args.runs,
        args.webhooks,
        args.connections,
        args.seconds,
        args.rates,
        args.sockets,
        args.media_seconds,
        args.audio_ack_every
    );
    let mut results = Vec::new();
    for run in 0..args.runs {
        let result = run_once(&args, run as u128).await?;
        print_run(run, &result, &args);
        results.push(result);
    }
    let med = |f: fn(&RunResult) -> f64| median(results.iter().map(f).collect());
    println!("\nmedians of {} runs", results.len());
    if args.only != "media" {
        println!(
            "  webhook steps (sequential): signature {:.1} µs, redis admission {:.0} µs, publish+ack {:.0} µs; whole webhook {:.0} µs",
            med(|r| r.sig_us),
            med(|r| r.admit_us),
            med(|r| r.publish_us),
            med(|r| r.sequential_us)
        );
        println!(
            "  webhooks closed loop: {:.0}/s, p50 {:.2} ms, p99 {:.2} ms",
            med(|r| r.throughput),
            med(|r| r.closed_p50_ms),
            med(|r| r.closed_p99_ms)
        );
        let cpu = |i: usize| median(results.iter().map(|r| r.webhook_cpu[i]).collect());
        println!(
            "  cpu per webhook: {}",
            cpu_line([cpu(0), cpu(1), cpu(2), cpu(3)])
        );
        for (i, rate) in args.rates.iter().enumerate() {
            let open = |f: fn(&(f64, f64, f64)) -> f64| {
                median(
                    results
                        .iter()
                        .filter_map(|r| r.open.get(i).map(f))
                        .collect(),
                )
            };
            println!(
                "  webhooks open loop at {rate}/s: {:.0}/s achieved, p50 {:.2} ms, p99 {:.2} ms",
                open(|o| o.0),
                open(|o| o.1),
                open(|o| o.2)
            );
        }
    }
    if args.only != "webhooks" {
        println!(
            "  media frame -> JetStream ({} sockets): p50 {:.3} ms, p99 {:.3} ms, max {:.1} ms, lost {}",
            args.sockets,
            med(|r| r.media_p50_ms),
            med(|r| r.media_p99_ms),
            med(|r| r.media_max_ms),
            med(|r| r.media_lost as f64)
        );
        let cpu = |i: usize| median(results.iter().map(|r| r.frame_cpu[i]).collect());
        println!(
            "  cpu per frame: {}",
            cpu_line([cpu(0), cpu(1), cpu(2), cpu(3)])
        );
    }
    Ok(())
}

fn cpu_line(cpu: [f64; 4]) -> String {
    format!(
        "ingress {:.1} µs, load generator {:.1} µs, nats-server {:.1} µs, redis {:.1} µs",
        cpu[0], cpu[1], cpu[2], cpu[3]
    )
}

fn print_run(run: usize, r: &RunResult, args: &Args) {
    if args.only != "media" {
        println!(
            "run {run}: steps sig {:.1} µs admit {:.0} µs publish {:.0} µs whole {:.0} µs | closed {:.0}/s p50 {:.2} p99 {:.2} ms",
            r.sig_us,
            r.admit_us,
            r.publish_us,
            r.sequential_us,
            r.throughput,
            r.closed_p50_ms,
            r.closed_p99_ms,
        );
        for (rate, (achieved, p50, p99)) in args.rates.iter().zip(&r.open) {
            println!(
                "run {run}: open loop at {rate}/s: {achieved:.0}/s p50 {p50:.2} p99 {p99:.2} ms"
            );
        }
    }
    if args.only != "media" {
        println!("run {run}: cpu/webhook {}", cpu_line(r.webhook_cpu));
    }
    if args.only != "webhooks" {
        println!(
            "run {run}: media {} sampled frames, lost {}, p50 {:.3} p99 {:.3} max {:.1} ms | cpu/frame {}",
            r.media_frames,
            r.media_lost,
            r.media_p50_ms,
            r.media_p99_ms,
            r.media_max_ms,
            cpu_line(r.frame_cpu)
        );
    }
}

/// (p50, p99, max) in ms.
pub(crate) fn percentiles(mut latencies: Vec<Duration>) -> (f64, f64, f64) {
    if latencies.is_empty() {
        return (f64::NAN, f64::NAN, f64::NAN);
    }
    latencies.sort_unstable();
    let at = |q: f64| {
        let i = ((latencies.len() - 1) as f64 * q).round() as usize;
        latencies[i].as_secs_f64() * 1e3
    };
    (at(0.50), at(0.99), at(1.0))
}

pub(crate) fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values.get(values.len() / 2).copied().unwrap_or(f64::NAN)
}

pub(crate) fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}
