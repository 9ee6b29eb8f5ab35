//! `replay`: what one call did, from JetStream. Thin: parses the command and runs it
//! ([`sb_replay::cli`]), printing to stdout.

use clap::Parser;
use sb_replay::cli::{Cli, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    run(Cli::parse(), &mut std::io::stdout()).await
}
