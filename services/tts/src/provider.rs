//! The speech engine behind a small trait, and the local engine (espeak-ng).
//!
//! Consumes text and the tenant's voice; produces 8 kHz µ-law audio as a stream of byte
//! pieces (any sizes; the stage re-chunks them). [`Espeak`] runs `espeak-ng` through
//! `sb_audio::synth::speak` (real speech, offline, resampled to 8 kHz) and yields the
//! whole sentence as one piece; the Azure client lives in [`crate::azure`]. State: none.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use futures::future::BoxFuture;
use futures::stream::Stream;
use sb_audio::{mulaw, synth};
use sb_runtime::metrics::Metric;

/// Why speech could not be made.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtsError {
    #[error("cannot reach the tts provider: {0}")]
    Connect(String),
    #[error("no audio within {0:?}")]
    FirstByteTimeout(Duration),
    #[error("the audio stream stalled for {0:?}")]
    IdleTimeout(Duration),
    #[error("rate limited (retry after {retry_after:?})")]
    RateLimited { retry_after: Option<Duration> },
    #[error("tts provider answered {status}: {message}")]
    Status { status: u16, message: String },
    #[error("the audio stream broke off: {0}")]
    Cut(String),
    #[error("local synthesis failed: {0}")]
    Synth(String),
}

impl TtsError {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            TtsError::Connect(_) => "connect",
            TtsError::FirstByteTimeout(_) => "first_byte_timeout",
            TtsError::IdleTimeout(_) => "idle_timeout",
            TtsError::RateLimited { .. } => "rate_limited",
            TtsError::Status { status, .. } if *status >= 500 => "status_5xx",
            TtsError::Status { .. } => "status_4xx",
            TtsError::Cut(_) => "cut",
            TtsError::Synth(_) => "synth",
        }
    }
}

pub type AudioStream = Pin<Box<dyn Stream<Item = Result<Bytes, TtsError>> + Send>>;

/// A text-to-speech engine producing 8 kHz µ-law.
pub trait TextToSpeech: Send + Sync + 'static {
    /// The metric label (`azure`, `espeak`); also part of the audio's cache key.
    fn name(&self) -> &'static str;

    /// The exact audio format this engine produces (part of the cache key, so audio of one
    /// format is never served as another's).
    fn format(&self) -> &'static str;

    /// Starts synthesising; resolves once audio starts flowing (or failed).
    fn synthesize<'a>(
        &'a self,
        text: &'a str,
        voice: &'a str,
    ) -> BoxFuture<'a, Result<AudioStream, TtsError>>;
}

/// What espeak-ng's audio is turned into: 8 kHz, 8-bit µ-law, mono, no header.
pub const FORMAT: &str = "raw-8khz-8bit-mono-mulaw";

/// espeak-ng, the local engine.
#[derive(Debug, Clone, Copy, Default)]
pub struct Espeak;

impl Espeak {
    /// Whether espeak-ng is installed.
    pub fn available() -> bool {
        synth::espeak_available()
    }
}

impl TextToSpeech for Espeak {
    fn name(&self) -> &'static str {
        "espeak"
    }

    fn format(&self) -> &'static str {
        FORMAT
    }

    fn synthesize<'a>(
        &'a self,
        text: &'a str,
        voice: &'a str,
    ) -> BoxFuture<'a, Result<AudioStream, TtsError>> {
        Box::pin(async move {
            let started = std::time::Instant::now();
            let voice = espeak_voice(voice);
            let pcm = match synth::speak(text, &voice).await {
                Ok(pcm) => pcm,
                // An unknown locale: plain English beats silence.
                Err(synth::SynthError::Failed { .. }) if voice != "en" => synth::speak(text, "en")
                    .await
                    .map_err(|e| TtsError::Synth(e.to_string()))?,
                Err(e) => return Err(TtsError::Synth(e.to_string())),
            };
            metrics::histogram!(Metric::ProviderTtfbSeconds.name(), "provider" => "espeak")
                .record(started.elapsed().as_secs_f64());
            let audio = Bytes::from(mulaw::encode_slice(&pcm));
            let stream: AudioStream = Box::pin(futures::stream::iter([Ok(audio)]));
            Ok(stream)
        })
    }
}

/// The espeak-ng voice for a tenant's voice: an Azure voice name's locale
/// (`en-US-JennyNeural` → `en-us`, `hi-IN-SwaraNeural` → `hi-in`), a bare language code
/// as given (`hi`: espeak-ng's Hindi, which reads Devanagari), else English.
pub fn espeak_voice(voice: &str) -> String {
    let letters = |s: &str, n: std::ops::RangeInclusive<usize>| {
        n.contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphabetic())
    };
    let parts: Vec<&str> = voice.split('-').collect();
    match parts.as_slice() {
        [language, region, ..] if letters(language, 2..=2) && letters(region, 2..=2) => {
            format!("{language}-{region}").to_ascii_lowercase()
        }
        [language] if letters(language, 2..=3) => language.to_ascii_lowercase(),
        _ => "en".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use futures::StreamExt as _;

    use super::*;

    #[test]
    fn voices() {
        for (azure, espeak) in [
            ("en-US-JennyNeural", "en-us"),
            ("de-DE-KatjaNeural", "de-de"),
            ("hi-IN-SwaraNeural", "hi-in"),
            ("hi", "hi"),
            ("HI", "hi"),
            ("Jenny", "en"),
            ("alloy", "en"),
            ("", "en"),
            ("e1-US-X", "en"),
        ] {
            assert_eq!(espeak_voice(azure), espeak, "{azure:?}");
        }
    }

    /// espeak-ng (when installed) speaks real audio at 8 kHz µ-law: about as many bytes as
    /// samples, not silence; an unknown locale falls back to English.
    #[tokio::test]
    async fn espeak_speaks_mulaw() {
        if !Espeak::available() {
            return;
        }
        for voice in ["en-US-JennyNeural", "xx-YY-Nobody"] {
            let mut stream = Espeak
                .synthesize("Thanks for calling.", voice)
                .await
                .unwrap();
            let audio = stream.next().await.unwrap().unwrap();
            assert!(audio.len() > 4_000, "{} bytes", audio.len());
            assert!(audio.iter().any(|&b| b != 0xFF && b != 0x7F), "not silence");
            assert!(stream.next().await.is_none());
        }
    }

    /// With voice `hi` (or a Hindi Azure voice, when Azure fails) espeak-ng speaks
    /// Devanagari with its Hindi voice: over a second of sound, not silence.
    #[tokio::test]
    async fn espeak_speaks_hindi() {
        if !Espeak::available() {
            return;
        }
        let text = "नमस्ते। आप कैसे हैं? ठीक है।";
        for voice in ["hi", "hi-IN-SwaraNeural"] {
            assert!(voice == "hi" || espeak_voice(voice) == "hi-in");
            let mut stream = Espeak.synthesize(text, voice).await.unwrap();
            let audio = stream.next().await.unwrap().unwrap();
            // Over a second of speech: the words were read, not skipped.
            assert!(audio.len() > 8_000, "{voice}: {} bytes", audio.len());
            assert!(audio.iter().any(|&b| b != 0xFF && b != 0x7F), "not silence");
        }
    }
}
