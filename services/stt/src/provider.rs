//! The seam between the worker and a streaming speech-to-text provider.
//!
//! Consumes nothing itself; defines [`SpeechToText`] (open one live stream per call) and the
//! provider-neutral values that cross it: [`SttCommand`]s in (audio, finalize, close) and
//! [`SttEvent`]s out (speech started, results, utterance end, closed). Times are
//! milliseconds on the stream's own audio timeline (0 = the first byte sent on this
//! connection). The real client is [`crate::deepgram::Deepgram`]; tests may stand in.
//! State: none.

use std::future::Future;

use bytes::Bytes;
use tokio::sync::mpsc;

/// What a stream is opened with (per tenant).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamOptions {
    /// Silence that ends an utterance (`speech_final`), ms.
    pub endpointing_ms: u32,
    /// BCP-47 tag of the language to transcribe (`en`, `hi`).
    pub language: String,
    /// The model to use; `None`: the provider's configured one.
    pub model: Option<String>,
}

impl StreamOptions {
    /// English, the configured model, `endpointing_ms` of silence.
    pub fn english(endpointing_ms: u32) -> Self {
        Self {
            endpointing_ms,
            language: sb_runtime::tenants::DEFAULT_STT_LANGUAGE.to_owned(),
            model: None,
        }
    }

    /// What `tenant` is served with: its endpointing, language and model.
    pub fn for_tenant(tenant: &sb_runtime::Tenant) -> Self {
        Self {
            endpointing_ms: tenant.stt_endpointing_ms,
            language: tenant.language.stt_language.clone(),
            model: tenant.language.stt_model.clone(),
        }
    }
}

/// What the worker asks of an open stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SttCommand {
    /// Raw µ-law 8 kHz bytes (never empty: an empty frame would close a Deepgram stream).
    Audio(Bytes),
    /// Flush what has been heard into final results now.
    Finalize,
    /// Finish the stream: remaining results, then [`SttEvent::Closed`] with
    /// [`Closed::Normal`].
    Close,
}

/// One transcription result (interim or final) for a span of the stream's audio.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct SttResult {
    /// Start of the audio span this result covers, ms.
    pub start_ms: u64,
    /// End of that span, ms.
    pub end_ms: u64,
    /// The span is final and will not be revised.
    pub is_final: bool,
    /// An endpoint (pause) closes the utterance.
    pub speech_final: bool,
    /// Produced by a `Finalize` request.
    pub from_finalize: bool,
    pub transcript: String,
    pub confidence: f32,
    /// End of the last word, ms (absent when there are no words).
    pub last_word_end_ms: Option<u64>,
}

/// How a stream ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Closed {
    /// After our `Close`: everything has been delivered.
    Normal,
    /// The connection dropped or the provider closed it on its own.
    Dropped {
        /// A bounded label (metrics).
        kind: &'static str,
        detail: String,
    },
}

/// What a stream reports.
#[derive(Debug, Clone, PartialEq)]
pub enum SttEvent {
    /// The provider's VAD heard speech begin at `at_ms`.
    SpeechStarted {
        at_ms: u64,
    },
    Result(SttResult),
    /// A word gap ended the utterance (after the word ending at `last_word_end_ms`).
    UtteranceEnd {
        last_word_end_ms: Option<u64>,
    },
    /// The last event of a stream.
    Closed(Closed),
}

/// One live stream: send commands, receive events. Dropping it closes the connection.
#[derive(Debug)]
pub struct SttStream {
    pub commands: mpsc::Sender<SttCommand>,
    pub events: mpsc::Receiver<SttEvent>,
}

/// Why a stream could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum SttError {
    #[error("cannot connect to the stt provider: {0}")]
    Connect(String),
    #[error("the stt provider refused the stream ({status}): {reason}")]
    Refused { status: u16, reason: String },
    #[error("connecting to the stt provider timed out")]
    Timeout,
}

impl SttError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            SttError::Connect(_) => "connect",
            SttError::Refused { .. } => "refused",
            SttError::Timeout => "timeout",
        }
    }
}

/// A streaming speech-to-text provider.
pub trait SpeechToText: Send + Sync + 'static {
    /// The provider's name: the `provider` metric label.
    fn name(&self) -> &'static str;

    /// Opens one live stream (one per call and connection).
    fn open(
        &self,
        options: &StreamOptions,
    ) -> impl Future<Output = Result<SttStream, SttError>> + Send;
}
