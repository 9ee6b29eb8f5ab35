//! `stt`: parse the config, check the Deepgram settings, start the runtime, serve calls
//! until SIGTERM (then hand every call off).

use clap::Parser as _;
use sb_runtime::{Runtime, telemetry};
use sb_stt::{Config, Deepgram};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(config.runtime.log_format);
    let deepgram = Deepgram::new(&config.stt.deepgram)?;
    let runtime = Runtime::start("stt", config.runtime).await?;
    runtime.shutdown.listen_for_signals();
    let http = runtime.serve_http(axum::Router::new()).await?;
    let result = sb_stt::run(runtime, deepgram, config.stt).await;
    http.stop().await;
    Ok(result?)
}
