//! The stt worker: owns calls through `STT_ASSIGN` leases and turns their audio into
//! `speech`, `partial`, `preflight` and `transcript` events (ARCHITECTURE §2.3, §2g, §5).
//!
//! Not a per-message stage: a small supervisor over the runtime's pieces. [`lease`] pulls
//! one lease at a time while a slot is free and keeps, hands off or releases it, sharing a
//! [`ctx`] with its call tasks; [`call`] serves one call (live audio, caught up from
//! JetStream by [`audio`] → provider stream, reconnects from the checkpoint), [`commit`]
//! turns provider events into published results and checkpoints, [`finish`] ends a call;
//! [`utterance`] assembles final pieces into utterances, [`preflight`] decides when a
//! stable interim starts the answer early and which turn the final takes, and [`timeline`]
//! maps provider times back to call frames (all three pure); [`deepgram`] is the live client behind
//! [`SpeechToText`].
//! State: only what JetStream (the lease, the audio) and Redis (turn, checkpoint, epoch)
//! can rebuild; a replacement worker resumes from the checkpoint.

mod audio;
mod call;
mod commit;
pub mod config;
mod ctx;
pub mod deepgram;
mod finish;
mod lease;
pub mod preflight;
pub mod provider;
pub mod timeline;
pub mod utterance;

use clap::Parser;
use sb_runtime::RuntimeConfig;

pub use config::{DeepgramConfig, SttConfig};
pub use deepgram::Deepgram;
pub use lease::{CONSUMER, RunError, run};
pub use provider::{SpeechToText, StreamOptions, SttCommand, SttError, SttEvent, SttStream};

/// Entry points for the fuzz targets (`fuzz/`) into parsers that are not public API.
#[doc(hidden)]
pub mod fuzzing {
    /// Parses one Deepgram server text frame, as the live client does; the error as text.
    pub fn deepgram_frame(text: &str) -> Result<Option<crate::SttEvent>, String> {
        crate::deepgram::wire::parse(text).map_err(|e| e.to_string())
    }
}

/// Everything the `stt` binary reads from flags or `SB_*` environment variables.
#[derive(Debug, Parser)]
#[command(
    name = "stt",
    about = "Switchboard stt worker: owns calls through STT_ASSIGN leases and streams their \
             audio to Deepgram"
)]
pub struct Config {
    #[command(flatten)]
    pub runtime: RuntimeConfig,
    #[command(flatten)]
    pub stt: SttConfig,
}
