//! `sb-smoke`: checks a running local stack (`just up`) end to end, the way every service
//! starts: version gate and topology on NATS, tenants, Redis; then one event through
//! JetStream and one session through Redis. Prints what it did in a few lines.

use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use sb_runtime::{Runtime, RuntimeConfig};
use sb_schemas::{Body, CallSid, Envelope, Start, decode, subject};

#[derive(Debug, Parser)]
#[command(about = "Smoke-check the local stack started by `just up`")]
struct Cli {
    #[command(flatten)]
    runtime: RuntimeConfig,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // A command-line check: its own lines on stdout, no service logs.
    let cli = Cli::parse();
    let rt = Runtime::start("smoke", cli.runtime)
        .await
        .context("start-up failed")?;
    println!(
        "smoke: nats-server {} with streams {} applied; {} tenants loaded",
        rt.nats.server_info().version,
        rt.topology
            .streams
            .iter()
            .map(|s| s.name.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        rt.tenants.tenants().len()
    );

    let tenant = rt
        .tenants
        .tenants()
        .iter()
        .next()
        .context("no tenants")?
        .clone();
    let sid = CallSid::parse(&format!("CA{:032x}", uuid::Uuid::now_v7().as_u128()))?;
    let event = Envelope::new(
        tenant.id.clone(),
        sid.clone(),
        0,
        Body::Start(Start {
            stream_sid: format!("MZ{:032x}", 1),
            account_sid: format!("AC{:032x}", 1),
            from: "+14155551234".into(),
            to: tenant.numbers[0].clone(),
            custom_parameters: Default::default(),
        }),
    );
    let ack = rt.publisher.publish(&event).await?;
    let stream = rt.js.get_stream("CALLS").await?;
    let stored = stream.direct_get(ack.sequence).await?;
    anyhow::ensure!(
        decode(&stored.payload)? == event,
        "the stored event differs"
    );
    println!(
        "smoke: published and read back {} (stream CALLS, seq {})",
        subject::for_envelope(&event),
        ack.sequence
    );

    rt.redis
        .session_start(
            &sid,
            &tenant.id,
            &sb_runtime::redis::session::Parties::default(),
            0,
        )
        .await?;
    let session = rt
        .redis
        .session_load(&sid)
        .await?
        .context("session missing")?;
    anyhow::ensure!(
        session.tenant.as_ref() == Some(&tenant.id),
        "session has the wrong tenant"
    );
    rt.redis.session_end(&sid, Duration::from_secs(1)).await?;
    println!("smoke: redis session for {sid} written, read back and expired; all good");
    Ok(())
}
