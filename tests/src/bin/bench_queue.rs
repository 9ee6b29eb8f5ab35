//! `just bench-queue`: the campaign queue (ARCHITECTURE §6) on this machine.
//!
//! Starts a real redis-server (volatile-lru, persistence off, `--maxmemory-mb` so a big
//! queue fits), then per run, on a fresh server:
//! - **enqueue**: `--contacts` contacts (two short variables each) of one tenant,
//!   pipelined, per second; and Redis memory per queued contact (`used_memory` before
//!   and after, so every key the queue adds is counted);
//! - **pop**: those contacts popped by two poppers (two connections, `--tasks` pops in
//!   flight each, no caps, no CPS limit), per second;
//! - **fairness**: `--big` contacts of a big tenant queued (its enqueue rate printed too),
//!   the same two poppers popping it non-stop, then `--samples` times a small tenant
//!   enqueues one contact: the time from that enqueue to the small contact's pop, and the
//!   big tenant's pops seen after the enqueue returned and before the small one (pops in
//!   flight when it ran count too: up to 2 × `--tasks` beyond the ring's bound of one).
//!
//! Each figure is the median of `--runs` runs. The clock is the wall's (`now_ms`).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use clap::Parser;
use futures::future::join_all;
use sb_runtime::redis::campaigns::{CampaignId, CampaignQueue};
use sb_runtime::redis::{Keys, Redis};
use sb_schemas::TenantId;
use sb_tests::{RedisServer, RedisSettings, bench_contacts as contacts, used_memory};
use tokio::sync::mpsc;

/// Campaign queue benchmark (real redis-server).
#[derive(Debug, Parser)]
struct Args {
    /// Contacts enqueued, then popped, in the throughput phases.
    #[arg(long, default_value_t = 100_000)]
    contacts: usize,
    /// Contacts of the big tenant in the fairness phase.
    #[arg(long, default_value_t = 1_000_000)]
    big: usize,
    /// Small-tenant first pops measured per run.
    #[arg(long, default_value_t = 50)]
    samples: usize,
    /// Pops in flight per popper.
    #[arg(long, default_value_t = 4)]
    tasks: usize,
    /// Redis maxmemory (MB).
    #[arg(long, default_value_t = 4096)]
    maxmemory_mb: u64,
    /// Repetitions (each on a fresh server); medians are printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const LEASE: Duration = Duration::from_secs(600);

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Two poppers with `tasks` pops in flight each, until `stop` (or, with `until_empty`,
/// until a pop finds nothing). Every lease's tenant goes to `seen`; returns the pops.
async fn poppers(
    queues: [CampaignQueue; 2],
    tasks: usize,
    until_empty: bool,
    stop: Arc<AtomicBool>,
    seen: Option<mpsc::UnboundedSender<TenantId>>,
) -> u64 {
    let pops = Arc::new(AtomicU64::new(0));
    let workers = (0..2 * tasks).map(|i| {
        let q = queues[i % 2].clone();
        let (stop, seen, pops) = (stop.clone(), seen.clone(), pops.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                match q.pop(now_ms(), LEASE).await.expect("pop") {
                    Some(lease) => {
                        pops.fetch_add(1, Ordering::Relaxed);
                        if let Some(seen) = &seen {
                            let _ = seen.send(lease.tenant);
                        }
                    }
                    None if until_empty => break,
                    None => tokio::task::yield_now().await,
                }
            }
        })
    });
    join_all(workers).await;
    pops.load(Ordering::Relaxed)
}

#[derive(Debug, Default)]
struct Run {
    enqueue_per_s: f64,
    bytes_per_contact: f64,
    pops_per_s: f64,
    big_enqueue_per_s: f64,
    first_pop_ms_p50: f64,
    first_pop_ms_max: f64,
    big_pops_between_max: f64,
}

async fn run(args: &Args) -> anyhow::Result<Run> {
    let server = RedisServer::start_with(RedisSettings {
        maxmemory: format!("{}mb", args.maxmemory_mb),
        policy: "volatile-lru",
        aof: false,
    })
    .await?;
    let connect = || Redis::connect(&server.url, Keys::new(""), Duration::from_secs(1800));
    let (one, two) = (
        connect().await?.campaign_queue(),
        connect().await?.campaign_queue(),
    );
    let mut raw = redis::Client::open(server.url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let mut out = Run::default();
    let campaign = CampaignId::parse("bench")?;

    let tenant = TenantId::parse("steady")?;
    let batch = contacts("c", args.contacts);
    let before = used_memory(&mut raw).await?;
    let started = Instant::now();
    one.enqueue(&tenant, &campaign, &batch, now_ms()).await?;
    out.enqueue_per_s = args.contacts as f64 / started.elapsed().as_secs_f64();
    out.bytes_per_contact = (used_memory(&mut raw).await? - before) / args.contacts as f64;

    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    let popped = poppers([one.clone(), two.clone()], args.tasks, true, stop, None).await;
    out.pops_per_s = popped as f64 / started.elapsed().as_secs_f64();
    anyhow::ensure!(popped == args.contacts as u64, "popped {popped}");

    let big = TenantId::parse("big")?;
    let started = Instant::now();
    one.enqueue(&big, &campaign, &contacts("b", args.big), now_ms())
        .await?;
    out.big_enqueue_per_s = args.big as f64 / started.elapsed().as_secs_f64();
    let (seen_tx, mut seen) = mpsc::unbounded_channel();
    let stop = Arc::new(AtomicBool::new(false));
    let background = tokio::spawn(poppers(
        [one.clone(), two.clone()],
        args.tasks,
        false,
        stop.clone(),
        Some(seen_tx),
    ));
    let small = TenantId::parse("small")?;
    let (mut latencies, mut between) = (Vec::new(), Vec::new());
    for i in 0..args.samples {
        while seen.try_recv().is_ok() {}
        let started = Instant::now();
        one.enqueue(&small, &campaign, &contacts(&format!("s{i}-"), 1), now_ms())
            .await?;
        // Pops whose replies arrived during the enqueue ran (in Redis) before it: not counted.
        let mut early = false;
        while let Ok(tenant) = seen.try_recv() {
            early |= tenant == small;
        }
        let mut pops = 0;
        while !early && let Some(tenant) = seen.recv().await {
            if tenant == small {
                break;
            }
            pops += 1;
        }
        latencies.push(started.elapsed().as_secs_f64() * 1e3);
        between.push(f64::from(pops));
    }
    stop.store(true, Ordering::Relaxed);
    background.await?;
    out.first_pop_ms_p50 = median(latencies.clone());
    out.first_pop_ms_max = latencies.iter().copied().fold(0.0, f64::max);
    out.big_pops_between_max = between.iter().copied().fold(0.0, f64::max);
    Ok(out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runs = Vec::new();
    for i in 0..args.runs {
        let r = run(&args).await?;
        println!("run {}: {r:?}", i + 1);
        runs.push(r);
    }
    let m = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    println!("medians of {} runs:", args.runs);
    println!(
        "  enqueue, pipelined ({} contacts): {:.0} contacts/s",
        args.contacts,
        m(|r| r.enqueue_per_s)
    );
    println!(
        "  redis memory per queued contact: {:.0} bytes",
        m(|r| r.bytes_per_contact)
    );
    println!(
        "  pops, two poppers x {} in flight: {:.0} pops/s",
        args.tasks,
        m(|r| r.pops_per_s)
    );
    println!(
        "  enqueue of the big tenant ({} contacts): {:.0} contacts/s",
        args.big,
        m(|r| r.big_enqueue_per_s)
    );
    println!(
        "  small tenant's first pop with the big tenant queued: p50 {:.2} ms, max {:.2} ms, big pops in between max {:.0}",
        m(|r| r.first_pop_ms_p50),
        m(|r| r.first_pop_ms_max),
        m(|r| r.big_pops_between_max)
    );
    Ok(())
}
