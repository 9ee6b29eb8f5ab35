//! `dialer`: the campaigns API and the dial loop. Parses the config, starts the runtime,
//! serves until SIGTERM, drains.

use std::sync::Arc;

use clap::Parser;
use sb_dialer::api::{self, ApiState};
use sb_dialer::clock::SystemClock;
use sb_dialer::{Dialer, DialerConfig, Settings};
use sb_runtime::{Runtime, RuntimeConfig, telemetry};

/// Switchboard dialer: places outbound campaign calls through Twilio and serves the campaigns API.
#[derive(Debug, Parser)]
#[command(name = "dialer", version)]
struct Config {
    #[command(flatten)]
    runtime: RuntimeConfig,
    #[command(flatten)]
    dialer: DialerConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(config.runtime.log_format);
    // Fail on bad dialer settings before connecting to anything.
    let settings = Settings::from_config(&config.dialer)?;
    let runtime = Runtime::start("dialer", config.runtime).await?;
    let queue = runtime.redis.campaign_queue();
    let outbox = Arc::new(runtime.publisher.clone());
    let clock = Arc::new(SystemClock);
    let api = api::router(ApiState::new(
        queue.clone(),
        runtime.tenants.clone(),
        clock.clone(),
    ));
    let dialer = Dialer::new(queue, outbox, settings, clock);
    dialer.apply_tenant_caps(&runtime.tenants.tenants()).await?;
    sb_dialer::run::run(runtime, dialer, api).await?;
    Ok(())
}
