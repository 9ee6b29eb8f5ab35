//! `switchboard`: the whole system on this machine. Thin: parses the command and hands
//! over to the library.

use std::path::PathBuf;

use std::time::Duration;

use clap::Parser;
use sb_stack::{
    Delays,
    chaos::{self, ChaosOptions, Fault},
    load::{self, LoadOptions},
    report, soak,
};

/// Run Switchboard end to end on this machine.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Start everything on loopback (stand-ins for the vendors), place one scripted call,
    /// show what happened, write a WAV, stop.
    Demo {
        /// Where logs and the WAV go.
        #[arg(long, default_value = ".run/demo")]
        run_dir: PathBuf,
    },
    /// Run against the real vendors (Twilio, Deepgram, Groq or another OpenAI-compatible
    /// LLM, Azure TTS or espeak-ng) with a running NATS + Redis (`just up`); settings come
    /// from SB_* environment variables (`<service> --help` lists them all).
    Run {
        /// Where the ingress listens (put a TLS proxy or tunnel in front: SB_PUBLIC_URL).
        #[arg(long, env = "SB_INGRESS_ADDR", default_value = "127.0.0.1:8080")]
        ingress_addr: std::net::SocketAddr,
        /// Where logs go.
        #[arg(long, default_value = ".run/live")]
        run_dir: PathBuf,
    },
    /// Load benchmark: N concurrent scripted calls against the whole stack, fixed stand-in
    /// delays; prints a latency, loss and resource table and writes an SVG plot.
    Load {
        /// Concurrent calls.
        calls: usize,
        /// Repetitions (each on a fresh stack); medians are printed at the end.
        #[arg(long, default_value_t = 1)]
        runs: usize,
        /// Stand-in delays: `typical` (realistic vendors) or `zero`.
        #[arg(long, default_value = "typical")]
        delays: String,
        /// Seconds over which the calls start.
        #[arg(long, default_value_t = 10)]
        ramp_secs: u64,
        /// The ingress' `SB_AUDIO_BATCH_MS`, as deployed (deploy/base/k8s/config.yaml): silence
        /// between turns stored in batches of this many ms; voice and the endpointing
        /// silence after it go frame by frame. 20 = every frame its own event.
        #[arg(long, default_value_t = sb_stack::stack::DEPLOYED_AUDIO_BATCH_MS)]
        audio_batch_ms: u64,
        /// NATS clients over TLS (as in prod).
        #[arg(long)]
        nats_tls: bool,
        /// NATS without users and permissions (to measure what they cost; never deployed).
        #[arg(long)]
        nats_no_auth: bool,
        /// The tenant called: `globex` (speech barge-in) or `acme` (words barge-in).
        #[arg(long, default_value = "globex")]
        tenant: String,
        /// Preemptive generation for that tenant, set through the console before the calls:
        /// `on` or `off` (default: as the tenants file says).
        #[arg(long)]
        preemptive: Option<String>,
        /// Where logs and the plot go.
        #[arg(long, default_value = ".run/load")]
        run_dir: PathBuf,
        /// Also write the runs' medians as JSON here (for `bench-compare`).
        #[arg(long)]
        json: Option<PathBuf>,
    },
    /// The performance gate: compares two `load --json` summaries (the base commit's, then
    /// the change's) and exits 1 when a figure of the change is worse than the base's
    /// beyond run-to-run noise.
    BenchCompare { base: PathBuf, change: PathBuf },
    /// Chaos: scripted calls against two replicas of every service while faults are
    /// injected, one kind per round; prints a table per fault and exits 1 if a round dropped
    /// a call, left a question unanswered or lost an event.
    Chaos {
        /// Calls in flight during each round (default 50; 4 with --quick).
        #[arg(long)]
        calls: Option<usize>,
        /// Faults, comma-separated, one round each: kill-ingress, kill-stt, kill-agent,
        /// kill-tts, kill-dialer, kill-all, restart-nats, restart-redis-aof,
        /// restart-redis-empty, roll (default: all but kill-all).
        #[arg(long, value_delimiter = ',')]
        faults: Vec<String>,
        /// One fault of each kind (kill-all, restart-redis-aof, restart-redis-empty, roll),
        /// 4 calls of 4 questions.
        #[arg(long)]
        quick: bool,
        /// Where logs go.
        #[arg(long, default_value = ".run/chaos")]
        run_dir: PathBuf,
    },
    /// Soak: N concurrent scripted calls, each replaced as it ends, for M minutes; prints
    /// every process' RSS and open descriptors each minute and exits 1 if one grows beyond
    /// noise after the warm-up.
    Soak {
        #[arg(long, default_value_t = 30)]
        minutes: u64,
        #[arg(long, default_value_t = 100)]
        calls: usize,
        /// Where logs go.
        #[arg(long, default_value = ".run/soak")]
        run_dir: PathBuf,
    },
    /// Create or update the JetStream streams and consumers of `nats/` (as the `ops` user),
    /// or only report how the live ones differ. Services never change them.
    Topology {
        #[arg(value_enum)]
        action: TopologyAction,
        /// The environment's stream settings (replicas, storage, max age, max bytes), e.g.
        /// deploy/overlays/prod/streams.toml.
        #[arg(long, env = "SB_STREAM_OVERRIDES")]
        overrides: Option<PathBuf>,
        #[command(flatten)]
        login: sb_stack::ops::OpsLogin,
    },
    /// Print nats-server's `accounts` block: one user per service with exactly its
    /// permissions (nats/auth.conf is this output; with --helm, deploy/nats/auth-values.yaml).
    NatsAuth {
        /// As values for the official NATS Helm chart.
        #[arg(long)]
        helm: bool,
    },
    /// Outbound campaigns through the campaigns API (the key in SB_CAMPAIGNS_API_KEY).
    Campaign(sb_stack::campaign_cli::CampaignArgs),
    /// Check a tenants file as the services will (validate), or see what a change does (diff).
    Tenants(sb_stack::tenants_cli::TenantsArgs),
    /// Serve the campaigns API alone (no NATS, no dialling): conformance runs, benchmarks.
    CampaignsApi(sb_stack::campaigns_api::ServeArgs),
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum TopologyAction {
    /// Create what is missing, update the configured fields that differ.
    Apply,
    /// Report differences; exit 1 if there are any.
    Check,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // The load generator is measuring apparatus on the same two cores as what it
    // measures: one worker thread plays 500 callers without stealing work across cores
    // (measured, single runs at 300 calls: Switchboard's overhead p99 64 → 20–31 ms).
    // It only ever delays what it observes, so it cannot flatter a figure.
    let workers = match cli.command {
        Command::Load { .. } => 1,
        _ => std::thread::available_parallelism().map_or(2, |n| n.get()),
    };
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Campaign(args) => {
            let key = std::env::var(sb_stack::campaign_cli::KEY_VARIABLE).map_err(|_| {
                anyhow::anyhow!(
                    "set {} to the tenant's API key",
                    sb_stack::campaign_cli::KEY_VARIABLE
                )
            })?;
            sb_stack::campaign_cli::run(args, &key, &mut std::io::stdout()).await?;
        }
        Command::CampaignsApi(args) => sb_stack::campaigns_api::serve(args).await?,
        Command::Tenants(args) => {
            if !sb_stack::tenants_cli::run(args).await? {
                std::process::exit(1);
            }
        }
        Command::NatsAuth { helm: false } => print!("{}", sb_runtime::nats_auth::server_config()),
        Command::NatsAuth { helm: true } => print!("{}", sb_runtime::nats_auth::helm_values()),
        Command::Topology {
            action,
            overrides,
            login,
        } => {
            let write = matches!(action, TopologyAction::Apply);
            let differences = sb_stack::ops::topology(&login, overrides, write).await?;
            if !write && differences > 0 {
                std::process::exit(1);
            }
        }
        Command::Chaos {
            calls,
            faults,
            quick,
            run_dir,
        } => chaos(calls, &faults, quick, run_dir).await?,
        Command::Soak {
            minutes,
            calls,
            run_dir,
        } => {
            let options = soak::SoakOptions {
                calls,
                minutes,
                run_dir,
                every: Duration::from_secs(60),
            };
            let result = soak::run(&options).await?;
            print!("{}", soak::verdict(&result));
            let growing: Vec<&str> = result.growing().iter().map(|t| t.name.as_str()).collect();
            if !growing.is_empty() {
                anyhow::bail!("soak: {} grew beyond noise", growing.join(", "));
            }
            println!("soak: no process grew beyond noise");
        }
        Command::Demo { run_dir } => {
            sb_stack::demo::run(run_dir).await?;
        }
        Command::Run {
            ingress_addr,
            run_dir,
        } => {
            sb_stack::run::run(run_dir, ingress_addr).await?;
        }
        Command::Load {
            calls,
            runs,
            delays,
            ramp_secs,
            audio_batch_ms,
            nats_tls,
            nats_no_auth,
            tenant,
            preemptive,
            run_dir,
            json,
        } => {
            let preemptive = match preemptive.as_deref() {
                None => None,
                Some("on") => Some(true),
                Some("off") => Some(false),
                Some(other) => anyhow::bail!("--preemptive takes on or off, not {other:?}"),
            };
            let delays = match delays.as_str() {
                "zero" => Delays::ZERO,
                _ => Delays::TYPICAL,
            };
            let options = LoadOptions {
                calls,
                delays,
                run_dir: run_dir.clone(),
                ramp: Duration::from_secs(ramp_secs),
                audio_batch_ms,
                nats: sb_stack::nats_server::NatsOptions {
                    tls: nats_tls,
                    auth: !nats_no_auth,
                },
                tenant,
                preemptive,
            };
            let mut results = Vec::new();
            for run in 1..=runs.max(1) {
                println!(
                    "bench-load: run {run} of {runs}, {calls} concurrent calls (NATS auth {}, TLS {})",
                    if nats_no_auth { "off" } else { "on" },
                    if nats_tls { "on" } else { "off" }
                );
                let result = load::run(&options).await?;
                print!("{}", report::table(&result, &delays));
                println!("plot: {}", report::write_plot(&result, &run_dir)?.display());
                results.push(result);
            }
            if results.len() > 1 {
                print!("{}", report::medians(&results));
            }
            if let Some(path) = json {
                let summary = sb_stack::gate::Summary::of(&results);
                std::fs::write(&path, serde_json::to_string_pretty(&summary)?)?;
                println!("summary: {}", path.display());
            }
        }
        Command::BenchCompare { base, change } => {
            let read = |path: &PathBuf| -> anyhow::Result<sb_stack::gate::Summary> {
                let text = std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
                serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
            };
            let (table, pass) = sb_stack::gate::compare(&read(&base)?, &read(&change)?);
            print!("{table}");
            if !pass {
                println!("performance gate: the change is slower than its base beyond noise");
                std::process::exit(1);
            }
            println!("performance gate: ok");
        }
    }
    Ok(())
}

async fn chaos(
    calls: Option<usize>,
    faults: &[String],
    quick: bool,
    run_dir: PathBuf,
) -> anyhow::Result<()> {
    let mut options = if quick {
        ChaosOptions::quick(run_dir)
    } else {
        ChaosOptions::full(calls.unwrap_or(50), run_dir)
    };
    if let Some(calls) = calls {
        options.calls = calls;
        options.ramp = chaos::ramp_for(calls);
    }
    if !faults.is_empty() {
        options.faults = faults
            .iter()
            .map(|name| Fault::parse(name).ok_or_else(|| anyhow::anyhow!("unknown fault {name:?}")))
            .collect::<anyhow::Result<_>>()?;
    }
    let result = chaos::run(&options).await?;
    print!("{}", chaos::table::render(&result));
    let failed = result.failed().len();
    if failed > 0 {
        anyhow::bail!("chaos: {failed} of {} rounds failed", result.rounds.len());
    }
    Ok(())
}
