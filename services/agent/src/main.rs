//! `agent`: parse the config, check the LLM and Twilio settings, start the runtime, answer
//! calls until SIGTERM.

use anyhow::Context as _;
use clap::Parser;
use sb_agent::{Agent, AgentConfig};
use sb_runtime::{RunnerConfig, Runtime, RuntimeConfig, telemetry};

/// Switchboard agent: answers callers with a streaming LLM, sentence by sentence.
#[derive(Debug, Parser)]
#[command(name = "agent", version)]
struct Config {
    #[command(flatten)]
    runtime: RuntimeConfig,
    #[command(flatten)]
    runner: RunnerConfig,
    #[command(flatten)]
    agent: AgentConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(config.runtime.log_format);
    // Fail on bad provider settings before connecting to anything.
    config.agent.validate().map_err(anyhow::Error::msg)?;
    let runtime = Runtime::start("agent", config.runtime).await?;
    let agent = Agent::new(&runtime, config.agent).context("agent set-up")?;
    runtime.run_stage(agent, config.runner).await?;
    Ok(())
}
