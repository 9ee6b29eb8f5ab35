//! `bench-campaign-api`: contacts enqueued per second through the campaigns API
//! (docs/campaigns-api.md) on this machine, for `just bench-dialer` (target ≥ 50,000/s).
//!
//! Per run, on a fresh redis-server (volatile-lru, persistence off) and the API served
//! in-process on a loopback port (`sb_dialer::api::router`):
//! - **csv**: one request uploading `--contacts` rows (`phone,name,ref`), from the first
//!   byte sent to the report received;
//! - **json**: the same number of contacts to a second campaign as JSON, in sequential
//!   requests of `--json-batch` contacts.
//!
//! The bodies are built before the clock starts. Each figure is the median of `--runs`
//! runs. State: the servers of the run in progress.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, ensure};
use clap::Parser;
use sb_dialer::api::auth::key_hash;
use sb_dialer::api::{ApiState, router};
use sb_dialer::clock::SystemClock;
use sb_runtime::Tenants;
use sb_runtime::redis::{Keys, Redis};
use sb_tests::{RedisServer, RedisSettings};
use serde_json::{Value, json};

/// Campaigns API upload benchmark (real redis-server).
#[derive(Debug, Parser)]
struct Args {
    /// Contacts per upload (CSV: one request; JSON: `--json-batch` per request).
    #[arg(long, default_value_t = 100_000)]
    contacts: usize,
    /// Contacts per JSON request.
    #[arg(long, default_value_t = 10_000)]
    json_batch: usize,
    /// Repetitions (each on a fresh server); medians are printed.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

const KEY: &str = "bench-key";

/// One tenant with the bench key (the bins do not get `TenantToml`, a test helper).
fn tenants() -> anyhow::Result<Tenants> {
    let text = format!(
        "[tiers.standard]\nllm_concurrency = 4\nwebhook_rate_limit = 60\n\n[[tenant]]\n\
         id = \"acme\"\nnumbers = [\"+15005550006\"]\nsystem_prompt = \"p\"\ngreeting = \"g\"\n\
         fallback_phrase = \"f\"\nvoice = \"v\"\nllm_model = \"m\"\ntier = \"standard\"\n\
         api_key_sha256 = [\"{}\"]\n",
        key_hash(KEY)
    );
    Tenants::parse(&text).map_err(anyhow::Error::msg)
}

fn phone(i: usize) -> String {
    format!("+1415{i:07}")
}

struct Run {
    csv_per_sec: f64,
    json_per_sec: f64,
}

async fn post(
    http: &reqwest::Client,
    url: &str,
    kind: &str,
    body: Vec<u8>,
) -> anyhow::Result<Value> {
    let res = http
        .post(url)
        .bearer_auth(KEY)
        .header("content-type", kind)
        .body(body)
        .send()
        .await?;
    let status = res.status();
    let value: Value = res.json().await?;
    ensure!(status.is_success(), "{url}: {status} {value}");
    Ok(value)
}

async fn one_run(args: &Args) -> anyhow::Result<Run> {
    let redis = RedisServer::start_with(RedisSettings {
        maxmemory: "2048mb".into(),
        policy: "volatile-lru",
        aof: false,
    })
    .await?;
    let handle = Redis::connect(&redis.url, Keys::new(""), Duration::from_secs(1800)).await?;
    let state = ApiState::new(
        handle.campaign_queue(),
        sb_runtime::LiveTenants::fixed(tenants()?),
        Arc::new(SystemClock),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!(
        "http://{}/v1/tenants/acme/campaigns",
        listener.local_addr()?
    );
    tokio::spawn(axum::serve(listener, router(state)).into_future());
    let http = reqwest::Client::new();
    let spec = json!({"name": "bench", "caller_id": "+15005550006", "max_concurrent_calls": 10,
        "calling_hours": {"days": ["mon"], "from": "09:00", "to": "17:00", "time_zone": "UTC"}});
    let campaign = || {
        let (http, base, spec) = (&http, &base, spec.to_string().into_bytes());
        async move {
            let c = post(http, base, "application/json", spec).await?;
            c["id"]
                .as_str()
                .map(str::to_owned)
                .context("no campaign id")
        }
    };

    let mut csv = String::from("phone,name,ref\n");
    for i in 0..args.contacts {
        csv.push_str(&format!("{},Ann,R{i}\n", phone(i)));
    }
    let id = campaign().await?;
    let started = Instant::now();
    let report = post(
        &http,
        &format!("{base}/{id}/contacts"),
        "text/csv",
        csv.into_bytes(),
    )
    .await?;
    let csv_secs = started.elapsed().as_secs_f64();
    ensure!(report["queued"] == args.contacts, "csv: {report}");

    let bodies: Vec<Vec<u8>> = (0..args.contacts)
        .collect::<Vec<_>>()
        .chunks(args.json_batch.max(1))
        .map(|chunk| {
            let contacts: Vec<Value> = chunk
                .iter()
                .map(|i| json!({"phone": phone(*i), "vars": {"name": "Ann", "ref": format!("R{i}")}}))
                .collect();
            json!({ "contacts": contacts }).to_string().into_bytes()
        })
        .collect();
    let id = campaign().await?;
    let url = format!("{base}/{id}/contacts");
    let started = Instant::now();
    let mut queued = 0;
    for body in bodies {
        queued += post(&http, &url, "application/json", body).await?["queued"]
            .as_u64()
            .unwrap_or(0);
    }
    let json_secs = started.elapsed().as_secs_f64();
    ensure!(queued == args.contacts as u64, "json: queued {queued}");
    Ok(Run {
        csv_per_sec: args.contacts as f64 / csv_secs,
        json_per_sec: args.contacts as f64 / json_secs,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let mut runs = Vec::new();
    for n in 1..=args.runs.max(1) {
        let run = one_run(&args).await?;
        println!(
            "run {n}: csv {:.0} contacts/s (one request of {}), json {:.0} contacts/s (requests of {})",
            run.csv_per_sec, args.contacts, run.json_per_sec, args.json_batch
        );
        runs.push(run);
    }
    println!(
        "median of {}: csv {:.0} contacts/s, json {:.0} contacts/s",
        runs.len(),
        median(runs.iter().map(|r| r.csv_per_sec).collect()),
        median(runs.iter().map(|r| r.json_per_sec).collect())
    );
    Ok(())
}
