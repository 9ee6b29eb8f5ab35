//! `just bench-dialer` (the dialing half): outbound campaigns on this machine, with every
//! part real — nats-server and redis-server, two `dialer` processes, and the Twilio
//! stand-in (`sim twilio`, every callee busy, so each call sends its initiated, ringing and
//! busy callbacks to a dialer) — and no calls-per-second limit. Per run, on fresh servers:
//! - **dial**: `--contacts` contacts of one campaign queued, then the time until both
//!   dialers have popped and placed all of them (each contact left `queued`: its attempt
//!   recorded and `Calls.json` answered): contacts popped-and-dialled per second;
//! - **memory**: a `--big` contact campaign of another tenant queued while paused (two
//!   short variables each): Redis `used_memory` per queued contact;
//! - **fairness**: the big campaign resumed (the dialers now dial it flat out), then
//!   `--samples` times the small tenant queues one contact: the time until it is dialled.
//!
//! Each figure is the median of `--runs` runs, with the CPU each process spent per placed
//! call (callbacks included), since all of them share this machine's cores. Build first:
//! `cargo build --release --bins`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use sb_dialer::campaign::{CallingHours, Campaign, CampaignSpec, RetrySpec};
use sb_runtime::redis::campaigns::{CampaignId, CampaignQueue};
use sb_runtime::redis::{Keys, Redis};
use sb_schemas::TenantId;
use sb_stack::process::{Process, free_addr, usage};
use sb_stack::servers::workspace_root;
use sb_stack::service_env::dialer_env;
use sb_tests::{NatsServer, RedisServer, RedisSettings, bench_contacts as contacts, used_memory};

/// Dialer benchmark (real servers, two dialer processes, the Twilio stand-in).
#[derive(Debug, Parser)]
struct Args {
    /// Contacts dialled in the throughput phase.
    #[arg(long, default_value_t = 20_000)]
    contacts: usize,
    /// Contacts of the big campaign (memory and fairness phases).
    #[arg(long, default_value_t = 1_000_000)]
    big: usize,
    /// Small-tenant first calls measured per run.
    #[arg(long, default_value_t = 10)]
    samples: usize,
    /// Dial workers per dialer process.
    #[arg(long, default_value_t = 64)]
    workers: usize,
    /// Repetitions (fresh servers each); medians are printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const ACCOUNT: &str = "AC0000000000000000000000000000bec4";
const TOKEN: &str = "bench-dialer-auth-token";

fn spec() -> CampaignSpec {
    CampaignSpec {
        name: "bench".into(),
        caller_id: "+15005550006".into(),
        calling_hours: CallingHours::around_the_clock(chrono::Utc::now()),
        max_concurrent_calls: 1000,
        retry: RetrySpec {
            on: Vec::new(),
            max_attempts: 1,
            spacing_secs: 60,
        },
        priority: 1,
        starts_at: None,
        ends_at: None,
        greeting: None,
        prompt: None,
        voicemail: None,
        machine_detection: false,
    }
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

async fn create(q: &CampaignQueue, tenant: &TenantId, id: &str) -> anyhow::Result<CampaignId> {
    let id = CampaignId::parse(id)?;
    let def = Campaign::new(id.clone(), spec(), chrono::Utc::now());
    q.create_def(tenant, &id, &serde_json::to_string(&def)?)
        .await?;
    Ok(id)
}

/// Contacts of a campaign that have left `queued` and `leased` (dialled).
async fn dialled(q: &CampaignQueue, tenant: &TenantId, c: &CampaignId) -> anyhow::Result<u64> {
    let counts = q.counts(tenant, c).await?;
    Ok(counts["calling"] + counts["done"] + counts["failed"])
}

async fn memory(url: &str) -> anyhow::Result<f64> {
    let mut conn = redis::Client::open(url)?
        .get_multiplexed_async_connection()
        .await?;
    used_memory(&mut conn).await
}

#[derive(Debug, Default)]
struct Run {
    dials_per_s: f64,
    /// CPU per placed call (ms) of the dialers, the stand-in, redis-server, nats-server.
    cpu_per_call: Vec<(String, f64)>,
    bytes_per_contact: f64,
    first_call_ms_p50: f64,
    first_call_ms_max: f64,
}

fn bins() -> PathBuf {
    workspace_root().join("target/release")
}

async fn run(args: &Args, logs: &Path) -> anyhow::Result<Run> {
    let (nats, redis) = tokio::try_join!(
        NatsServer::start(),
        RedisServer::start_with(RedisSettings {
            maxmemory: "4096mb".into(),
            policy: "volatile-lru",
            aof: false,
        })
    )?;
    nats.apply_topology().await?;
    let callees = logs.join("callees.toml");
    std::fs::write(&callees, "default = \"busy\"\n")?;
    let sim_args: Vec<String> = [
        "twilio",
        "--account-sid",
        ACCOUNT,
        "--auth-token",
        TOKEN,
        "--callees",
    ]
    .map(String::from)
    .into_iter()
    .chain([callees.display().to_string()])
    .collect();
    let twilio = Process::stand_in("sim-twilio", &bins().join("sim"), &sim_args, logs).await?;
    let mut dialers = Vec::new();
    for i in 0..2 {
        let addr = free_addr()?;
        let extra = [
            ("RUST_LOG", "warn".to_owned()),
            ("SB_DIALER_CPS", "10000".into()),
            ("SB_DIALER_CPS_BURST", "10000".into()),
            ("SB_DIALER_WORKERS", args.workers.to_string()),
            ("SB_DIALER_IDLE_MS", "20".into()),
        ];
        let twilio_url = format!("http://{}", twilio.addr);
        let env = dialer_env(
            &nats,
            &redis.url,
            addr,
            &twilio_url,
            (ACCOUNT, TOKEN),
            &extra,
        );
        dialers.push(
            Process::service(
                &format!("dialer-{i}"),
                &bins().join("dialer"),
                &env,
                addr,
                logs,
            )
            .await?,
        );
    }
    let q = Redis::connect(&redis.url, Keys::new(""), Duration::from_secs(1800))
        .await?
        .campaign_queue();
    let (acme, globex) = (TenantId::parse("acme")?, TenantId::parse("globex")?);
    // The tiers cap acme at its outbound concurrency; the bench measures dialling, not caps.
    q.set_tenant_cap(&acme, None).await?;
    q.set_tenant_cap(&globex, None).await?;

    // Dial.
    let c = create(&q, &acme, "dial").await?;
    q.set_campaign_cap(&acme, &c, None).await?;
    let batch = contacts("d", args.contacts);
    q.pause(&acme, &c).await?;
    q.enqueue(&acme, &c, &batch, now_ms()).await?;
    let pids: Vec<(&str, u32)> = vec![
        ("dialers", dialers[0].pid()),
        ("dialers", dialers[1].pid()),
        ("stand-in", twilio.pid()),
        ("redis", redis.pid()),
        ("nats", nats.pid()),
    ];
    let cpu = |pids: &[(&str, u32)]| -> Vec<(String, Duration)> {
        let mut by: Vec<(String, Duration)> = Vec::new();
        for (name, pid) in pids {
            let used = usage(*pid).cpu;
            match by.iter_mut().find(|(n, _)| n == name) {
                Some((_, d)) => *d += used,
                None => by.push(((*name).to_owned(), used)),
            }
        }
        by
    };
    let before = cpu(&pids);
    let started = Instant::now();
    q.resume(&acme, &c).await?;
    while dialled(&q, &acme, &c).await? < args.contacts as u64 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let dials_per_s = args.contacts as f64 / started.elapsed().as_secs_f64();
    // Let the last calls' callbacks land, so their cost is counted too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let cpu_per_call: Vec<(String, f64)> = cpu(&pids)
        .into_iter()
        .zip(before)
        .map(|((name, after), (_, before))| {
            let ms = (after - before).as_secs_f64() * 1000.0 / args.contacts as f64;
            (name, ms)
        })
        .collect();

    // Memory: the big campaign queued while paused.
    let big = create(&q, &acme, "big").await?;
    q.set_campaign_cap(&acme, &big, None).await?;
    q.pause(&acme, &big).await?;
    let before = memory(&redis.url).await?;
    q.enqueue(&acme, &big, &contacts("b", args.big), now_ms())
        .await?;
    let bytes_per_contact = (memory(&redis.url).await? - before) / args.big as f64;

    // Fairness: the dialers busy on the big campaign, the small tenant's first call.
    q.resume(&acme, &big).await?;
    let mut waits = Vec::new();
    for i in 0..args.samples {
        let small = create(&q, &globex, &format!("small-{i}")).await?;
        let started = Instant::now();
        q.enqueue(&globex, &small, &contacts("s", 1), now_ms())
            .await?;
        while dialled(&q, &globex, &small).await? < 1 {
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        waits.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    waits.sort_by(f64::total_cmp);
    for d in dialers {
        d.stop(Duration::from_secs(5)).await;
    }
    twilio.stop(Duration::from_secs(5)).await;
    Ok(Run {
        dials_per_s,
        cpu_per_call,
        bytes_per_contact,
        first_call_ms_p50: waits[waits.len() / 2],
        first_call_ms_max: waits[waits.len() - 1],
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let logs = tempfile::Builder::new()
        .prefix("sb-bench-dialer-")
        .tempdir()?;
    println!(
        "bench-dialer: {} contacts dialled by two dialer processes ({} workers each), a {}-contact campaign beside a small tenant; {} runs",
        args.contacts, args.workers, args.big, args.runs
    );
    let mut runs = Vec::new();
    for i in 0..args.runs {
        let r = run(&args, logs.path()).await?;
        println!(
            "  run {}: {:.0} contacts popped-and-dialled/s, {:.0} B of Redis per queued contact, small tenant's first call {:.1} ms (max {:.1} ms)",
            i + 1,
            r.dials_per_s,
            r.bytes_per_contact,
            r.first_call_ms_p50,
            r.first_call_ms_max
        );
        let cpu: Vec<String> = r
            .cpu_per_call
            .iter()
            .map(|(n, ms)| format!("{n} {ms:.3}"))
            .collect();
        println!("         CPU per placed call (ms): {}", cpu.join(", "));
        runs.push(r);
    }
    let m = |f: fn(&Run) -> f64| median(runs.iter().map(f).collect());
    println!("medians of {} runs:", args.runs);
    println!(
        "  popped-and-dialled: {:.0} contacts/s (target ≥ 2,000/s)",
        m(|r| r.dials_per_s)
    );
    println!(
        "  Redis memory per queued contact: {:.0} B (target ≤ 256 B)",
        m(|r| r.bytes_per_contact)
    );
    println!(
        "  small tenant's first call beside {} queued: p50 {:.1} ms, max {:.1} ms (target ≤ 1,000 ms)",
        args.big,
        m(|r| r.first_call_ms_p50),
        m(|r| r.first_call_ms_max)
    );
    Ok(())
}
