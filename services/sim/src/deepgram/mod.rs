//! (being written)

/// Command-line options (being written).
#[derive(Debug, clap::Args)]
pub struct Args {}

/// Runs from the command line (being written).
pub async fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("not written yet")
}
