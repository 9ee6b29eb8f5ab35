//! `switchboard`: the whole system on this machine. Thin: parses the command and hands
//! over to the library.

use std::path::PathBuf;

use clap::Parser;

/// Run Switchboard end to end on this machine.
#[derive(Debug, Parser)]
#[command(name = "switchboard", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Start everything on loopback (stand-ins for the vendors), place one scripted call,
    /// show what happened, write a WAV, stop.
    Demo {
        /// Where logs and the WAV go.
        #[arg(long, default_value = ".run/demo")]
        run_dir: PathBuf,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Demo { run_dir } => {
            sb_stack::demo::run(run_dir).await?;
        }
    }
    Ok(())
}
