//! `console`: the operators' console (the tenant admin API and the call inspector). Parses
//! the config, starts the runtime, serves until SIGTERM.

use anyhow::Context as _;
use clap::Parser;
use sb_console::{ConsoleConfig, ConsoleState};
use sb_runtime::http::ReadyNeeds;
use sb_runtime::{Runtime, RuntimeConfig, telemetry};

/// Switchboard console: the tenant admin API over the live tenants bucket, and the call
/// inspector (pages under /console, JSON under /v1/calls).
#[derive(Debug, Parser)]
#[command(name = "console", version)]
struct Config {
    #[command(flatten)]
    runtime: RuntimeConfig,
    #[command(flatten)]
    console: ConsoleConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(config.runtime.log_format);
    anyhow::ensure!(
        !config.console.operator_token.is_empty(),
        "SB_OPERATOR_TOKEN must not be empty"
    );
    let file = std::fs::read_to_string(&config.runtime.tenants_file)
        .with_context(|| format!("cannot read {}", config.runtime.tenants_file.display()))?;
    let runtime = Runtime::start("console", config.runtime).await?;
    let state = ConsoleState::open(&runtime, config.console.operator_token, file).await?;
    runtime.shutdown.listen_for_signals();
    let http = runtime
        .serve_http(sb_console::router(state), ReadyNeeds::NATS_ONLY)
        .await?;
    runtime.shutdown.stopping().cancelled().await;
    http.stop().await;
    Ok(())
}
