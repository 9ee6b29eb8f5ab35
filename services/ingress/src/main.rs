//! `ingress`: the Twilio-facing service. Parses the config, starts the runtime, serves until
//! SIGTERM, drains the media sockets.

use clap::Parser;
use sb_ingress::IngressConfig;
use sb_runtime::{Runtime, RuntimeConfig, telemetry};

/// Switchboard ingress: Twilio webhooks, the Media Streams WebSocket, playback and barge-in.
#[derive(Debug, Parser)]
#[command(name = "ingress", version)]
struct Config {
    #[command(flatten)]
    runtime: RuntimeConfig,
    #[command(flatten)]
    ingress: IngressConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(config.runtime.log_format);
    // Fail on bad ingress settings before connecting to anything.
    sb_ingress::Settings::from_config(&config.ingress)?;
    let runtime = Runtime::start("ingress", config.runtime).await?;
    sb_ingress::run(runtime, &config.ingress).await?;
    Ok(())
}
