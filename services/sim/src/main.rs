//! `sim`: run a stand-in or the scripted caller from the command line. Thin: parses the
//! command, sets up logging and hands over to the library.

use clap::Parser;

/// Protocol-faithful stand-ins for Switchboard's vendors, and a scripted caller.
///
/// Every server binds to loopback, logs what it receives, and prints
/// `listening on <url>` as its first line of standard output.
#[derive(Debug, Parser)]
#[command(name = "sim", version)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Deepgram live STT stand-in (`/v1/listen` WebSocket).
    Deepgram(sb_sim::deepgram::Args),
    /// OpenAI-compatible (Groq-framed) chat-completions stand-in.
    Llm(sb_sim::llm::Args),
    /// Azure TTS stand-in (plus Deepgram `/v1/speak` and OpenAI `/v1/audio/speech` faces).
    Tts(sb_sim::tts::Args),
    /// Twilio REST API stand-in (create, update, fetch calls).
    Twilio(sb_sim::twilio::Args),
    /// A tenant's tool server: checks Switchboard's signatures, answers from a script.
    Tenant(sb_sim::tenant::Args),
    /// Place one scripted call against Switchboard's ingress, playing Twilio's side.
    Call(sb_sim::caller::Args),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Deepgram(args) => sb_sim::deepgram::run(args).await,
        Command::Llm(args) => sb_sim::llm::run(args).await,
        Command::Tts(args) => sb_sim::tts::run(args).await,
        Command::Twilio(args) => sb_sim::twilio::run(args).await,
        Command::Tenant(args) => sb_sim::tenant::run(args).await,
        Command::Call(args) => sb_sim::caller::run(args).await,
    }
}
