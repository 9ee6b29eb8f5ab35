//! The whole `main` of a stage binary: [`stage_main`].
//!
//! Consumes flags and `SB_*` environment variables: the shared [`RuntimeConfig`] and
//! [`RunnerConfig`] plus the stage's own [`StageMain::Config`], all in one `--help`;
//! produces a running stage: settings checked before anything connects, logging, the
//! [`Runtime`] (NATS, topology, Redis, tenants), the stage built on it, consumed until
//! SIGTERM and drained. A stage binary's `main.rs` is one call. State: none.

use std::future::Future;

use anyhow::Context as _;
use clap::{CommandFactory as _, FromArgMatches as _};

use crate::{RunnerConfig, Runtime, RuntimeConfig, Stage, telemetry};

/// A stage that runs as its own binary.
pub trait StageMain: Stage + Sized {
    /// The stage's own settings (a clap `Args` struct with `env = "SB_…"` fields).
    type Config: clap::Args + std::fmt::Debug + Send + 'static;

    /// One line for `--help`: what the binary does.
    const ABOUT: &'static str;

    /// Checks the stage's own settings before anything connects; the error names the
    /// variable to fix.
    fn check(_config: &Self::Config) -> Result<(), String> {
        Ok(())
    }

    /// Builds the stage on a started runtime (and may warm what it needs first).
    fn build(
        runtime: &Runtime,
        config: Self::Config,
    ) -> impl Future<Output = Result<Self, String>> + Send;
}

/// Every setting of a stage binary.
#[derive(Debug, clap::Parser)]
struct Settings<C: clap::Args> {
    #[command(flatten)]
    runtime: RuntimeConfig,
    #[command(flatten)]
    runner: RunnerConfig,
    #[command(flatten)]
    stage: C,
}

/// Parses the settings, checks them, starts the runtime, builds `S` and runs it until
/// SIGTERM. Errors name what is wrong (a setting, an unreachable server).
pub fn stage_main<S: StageMain>() -> anyhow::Result<()> {
    let command = Settings::<S::Config>::command()
        .name(S::CONSUMER)
        .about(S::ABOUT)
        .version(env!("CARGO_PKG_VERSION"));
    let settings = Settings::<S::Config>::from_arg_matches(&command.get_matches())?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(run::<S>(settings))
}

async fn run<S: StageMain>(settings: Settings<S::Config>) -> anyhow::Result<()> {
    telemetry::init(settings.runtime.log_format);
    S::check(&settings.stage).map_err(anyhow::Error::msg)?;
    let runtime = Runtime::start(S::CONSUMER, settings.runtime).await?;
    let stage = S::build(&runtime, settings.stage)
        .await
        .map_err(anyhow::Error::msg)
        .with_context(|| format!("{} set-up", S::CONSUMER))?;
    runtime.run_stage(stage, settings.runner).await?;
    Ok(())
}
