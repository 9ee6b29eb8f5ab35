//! `replay`: what one call did, from JetStream. Thin: parses the command, connects, prints.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Parser;
use sb_replay::{CallLog, latency, timeline, wav};
use sb_schemas::CallSid;

/// Replay one call from the CALLS and AUDIO streams.
#[derive(Debug, Parser)]
#[command(name = "replay", version)]
struct Cli {
    /// NATS: URL, user (default `replay`: read-only), password, TLS.
    #[command(flatten)]
    nats: sb_runtime::NatsConfig,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Print the call's timeline and per-turn latency waterfall.
    Show {
        /// The call sid (CA + 32 hex digits).
        call_sid: CallSid,
        /// Show every token and partial transcript too.
        #[arg(long)]
        full: bool,
    },
    /// Write the call as a stereo WAV (caller left, bot right).
    Wav {
        call_sid: CallSid,
        /// Where to write the WAV.
        out: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let client = sb_runtime::nats::connect(&cli.nats.login("replay")).await?;
    let js = async_nats::jetstream::new(client);
    match cli.command {
        Command::Show { call_sid, full } => {
            let log = CallLog::load(&js, &call_sid).await?;
            let detail = if full {
                timeline::Detail::Full
            } else {
                timeline::Detail::Summary
            };
            print!("{}", timeline::render(&log, detail));
            println!();
            print!("{}", latency::render(&latency::turns(&log)));
        }
        Command::Wav { call_sid, out } => {
            let log = CallLog::load(&js, &call_sid).await?;
            std::fs::write(&out, wav::render(&log))
                .with_context(|| format!("cannot write {}", out.display()))?;
            println!("wrote {}", out.display());
        }
    }
    Ok(())
}
