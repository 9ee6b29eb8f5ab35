//! `stt`: parse the config, check the Deepgram settings, start the runtime, serve calls
//! until SIGTERM (then hand every call off).

use clap::Parser as _;
use sb_runtime::{Runtime, http::ReadyNeeds, telemetry};
use sb_stt::{Config, Deepgram};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let config = Config::parse();
    telemetry::init(config.runtime.log_format);
    let deepgram = Deepgram::new(&config.stt.deepgram)?;
    let runtime = Runtime::start("stt", config.runtime).await?;
    runtime.shutdown.listen_for_signals();
    // Redis is needed: without it no lease can read the call's session (the call loop
    // reconnects until it can) and no transcript can take a turn number (commit fails).
    let http = runtime
        .serve_http(axum::Router::new(), ReadyNeeds::NATS_AND_REDIS)
        .await?;
    let result = sb_stt::run(runtime, deepgram, config.stt).await;
    http.stop().await;
    Ok(result?)
}
