//! Logging: JSON lines in containers, pretty output on a terminal.
//!
//! Consumes `RUST_LOG` (default `info`); produces log lines on stdout. Spans carry
//! `tenant` and `call_sid`, and the JSON format prints every span's fields on every line,
//! so each line of a call names its tenant and call. State: the global subscriber.

use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Json,
    Pretty,
    /// Pretty when stdout is a terminal, JSON otherwise.
    Auto,
}

/// Installs the global subscriber. A second call (tests) is a no-op.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Pretty => false,
        LogFormat::Auto => !std::io::stdout().is_terminal(),
    };
    let registry = tracing_subscriber::registry().with(filter);
    let result = if json {
        registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_span_list(true),
            )
            .try_init()
    } else {
        registry.with(fmt::layer().compact()).try_init()
    };
    // Already installed (several services in one test process): keep the first.
    let _ = result;
}
