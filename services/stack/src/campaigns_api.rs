//! `switchboard campaigns-api`: the campaigns API alone (`sb_dialer::api::router`), without
//! NATS or the dial loop, for the schemathesis conformance run, the benchmark and local
//! tries. The `dialer` binary serves the same router beside its dial loop.
//!
//! Consumes the state Redis' URL (with its password), the tenants file and an address;
//! produces an HTTP server and one stdout line, `listening on http://{addr}`, once it
//! accepts connections. State: none of its own (Redis holds everything); stops on Ctrl-C
//! or SIGTERM.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use sb_dialer::api::{ApiState, router};
use sb_dialer::clock::SystemClock;
use sb_runtime::redis::{Keys, Redis};
use sb_runtime::{LiveTenants, Tenants};

/// Serve the campaigns API alone (no NATS, no dialling).
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// The state Redis, password included (redis://:pw@host:port or redis+unix://…?pass=…).
    #[arg(long, env = "SB_REDIS_URL", hide_env_values = true)]
    pub redis_url: String,
    /// Prefix of every Redis key (empty in production).
    #[arg(long, env = "SB_REDIS_KEY_PREFIX", default_value = "")]
    pub redis_key_prefix: String,
    /// The tenants file (tiers, tenants, their API key hashes).
    #[arg(long, env = "SB_TENANTS_FILE")]
    pub tenants: PathBuf,
    /// Where to listen; port 0 picks a free one (printed).
    #[arg(long, env = "SB_CAMPAIGNS_ADDR", default_value = "127.0.0.1:8090")]
    pub addr: SocketAddr,
}

/// The router's state from a Redis URL and a tenants file.
pub async fn state(
    redis_url: &str,
    prefix: &str,
    tenants: Arc<LiveTenants>,
) -> anyhow::Result<ApiState> {
    let redis = Redis::connect(redis_url, Keys::new(prefix), Duration::from_secs(1800))
        .await
        .context("cannot connect to the state Redis")?;
    Ok(ApiState::new(
        redis.campaign_queue(),
        tenants,
        Arc::new(SystemClock),
    ))
}

/// Serves until Ctrl-C or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let tenants = LiveTenants::fixed(Tenants::load(&args.tenants)?);
    let state = state(&args.redis_url, &args.redis_key_prefix, tenants).await?;
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .with_context(|| format!("cannot listen on {}", args.addr))?;
    println!("listening on http://{}", listener.local_addr()?);
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("a SIGTERM handler can be installed");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        })
        .await?;
    Ok(())
}
