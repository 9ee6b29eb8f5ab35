//! `tts`: parse the config, pick the speech engine, start the runtime, pre-warm the cache
//! (waiting a bounded time before serving), speak sentences until SIGTERM.

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use sb_runtime::{RunnerConfig, Runtime, RuntimeConfig, Stage, telemetry};
use sb_tts::{Tts, TtsConfig};

/// Switchboard tts: speaks each sentence as 8 kHz µ-law chunks (Azure TTS or espeak-ng).
#[derive(Debug, Parser)]
#[command(name = "tts", version)]
struct Config {
    #[command(flatten)]
    runtime: RuntimeConfig,
    #[command(flatten)]
    runner: RunnerConfig,
    #[command(flatten)]
    tts: TtsConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(config.runtime.log_format);
    // Fail on bad engine settings before connecting to anything.
    config
        .tts
        .provider(sb_tts::provider::Espeak::available())
        .map_err(anyhow::Error::msg)?;
    let runtime = Runtime::start(Tts::CONSUMER, config.runtime).await?;
    let tts = Tts::new(&runtime, &config.tts)
        .map_err(anyhow::Error::msg)
        .context("tts set-up")?;
    if config.tts.tts_prewarm {
        let warm = tts.clone();
        let prewarm = tokio::spawn(async move { warm.prewarm().await });
        let wait = Duration::from_millis(config.tts.tts_prewarm_wait_ms);
        if tokio::time::timeout(wait, prewarm).await.is_err() {
            tracing::warn!(
                wait_ms = wait.as_millis() as u64,
                "pre-warm goes on in the background"
            );
        }
    }
    runtime.run_stage(tts, config.runner).await?;
    Ok(())
}
