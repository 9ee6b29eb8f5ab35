//! The streaming speech providers besides Azure (PROTOCOLS §7.2, §7.3): OpenAI-compatible
//! `POST /v1/audio/speech` and Deepgram's `POST /v1/speak`, both read as the body arrives.
//!
//! Consumes a sentence and the tenant's voice; produces 8 kHz µ-law pieces. Deepgram is
//! asked for exactly that (`encoding=mulaw&sample_rate=8000&container=none`) and passed
//! through. OpenAI's `pcm` is 24 kHz 16-bit little-endian: each piece is resampled on the
//! fly ([`sb_audio::resample::Resampler`], the same filter as a whole-buffer conversion, so
//! piece edges change nothing) and encoded to µ-law; a sample split between two pieces is
//! carried over. Timeouts and failures are [`crate::http_audio`]'s. State: the HTTP
//! connection pool.

use bytes::Bytes;
use futures::StreamExt as _;
use futures::future::BoxFuture;
use sb_audio::mulaw;
use sb_audio::resample::Resampler;
use sb_runtime::Secret;
use serde_json::json;

use crate::http_audio::{self, Timeouts};
use crate::provider::{AudioStream, FORMAT, TextToSpeech, TtsError};

/// The rate of OpenAI's `pcm` format.
pub const OPENAI_PCM_HZ: u32 = 24_000;

/// OpenAI's (or a compatible server's) speech endpoint.
#[derive(Clone)]
pub struct OpenAiSpeech {
    http: reqwest::Client,
    url: String,
    key: Secret,
    model: String,
    timeouts: Timeouts,
}

impl std::fmt::Debug for OpenAiSpeech {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OpenAiSpeech")
            .field("url", &self.url)
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl OpenAiSpeech {
    pub fn new(
        url: String,
        key: Secret,
        model: String,
        timeouts: Timeouts,
    ) -> Result<Self, String> {
        Ok(Self {
            http: http_audio::client(timeouts)?,
            url,
            key,
            model,
            timeouts,
        })
    }

    async fn start(&self, text: &str, voice: &str) -> Result<AudioStream, TtsError> {
        let request = self
            .http
            .post(&self.url)
            .bearer_auth(self.key.expose())
            .json(&json!({
                "model": self.model,
                "input": text,
                "voice": voice,
                "response_format": "pcm",
            }));
        let pcm = http_audio::open(request, "openai", self.timeouts).await?;
        Ok(to_mulaw(pcm, OPENAI_PCM_HZ))
    }
}

impl TextToSpeech for OpenAiSpeech {
    fn name(&self) -> &'static str {
        "openai"
    }

    fn format(&self) -> &'static str {
        FORMAT
    }

    fn synthesize<'a>(
        &'a self,
        text: &'a str,
        voice: &'a str,
    ) -> BoxFuture<'a, Result<AudioStream, TtsError>> {
        Box::pin(self.start(text, voice))
    }
}

/// Deepgram's Aura speech endpoint; the tenant's voice is the model (`aura-2-thalia-en`).
#[derive(Clone)]
pub struct DeepgramSpeech {
    http: reqwest::Client,
    url: String,
    key: Secret,
    timeouts: Timeouts,
}

impl std::fmt::Debug for DeepgramSpeech {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeepgramSpeech")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl DeepgramSpeech {
    pub fn new(url: String, key: Secret, timeouts: Timeouts) -> Result<Self, String> {
        Ok(Self {
            http: http_audio::client(timeouts)?,
            url,
            key,
            timeouts,
        })
    }

    async fn start(&self, text: &str, voice: &str) -> Result<AudioStream, TtsError> {
        let request = self
            .http
            .post(&self.url)
            .query(&[
                ("model", voice),
                ("encoding", "mulaw"),
                ("sample_rate", "8000"),
                ("container", "none"),
            ])
            .header(
                reqwest::header::AUTHORIZATION,
                format!("Token {}", self.key.expose()),
            )
            .json(&json!({ "text": text }));
        http_audio::open(request, "deepgram", self.timeouts).await
    }
}

impl TextToSpeech for DeepgramSpeech {
    fn name(&self) -> &'static str {
        "deepgram"
    }

    fn format(&self) -> &'static str {
        FORMAT
    }

    fn synthesize<'a>(
        &'a self,
        text: &'a str,
        voice: &'a str,
    ) -> BoxFuture<'a, Result<AudioStream, TtsError>> {
        Box::pin(self.start(text, voice))
    }
}

/// 16-bit little-endian PCM pieces at `from_hz` → 8 kHz µ-law pieces.
struct PcmToMulaw {
    resampler: Resampler,
    /// A byte of a sample whose other byte is in the next piece.
    odd: Option<u8>,
}

impl PcmToMulaw {
    fn push(&mut self, piece: &[u8]) -> Bytes {
        let mut bytes = Vec::with_capacity(piece.len() + 1);
        bytes.extend(self.odd.take());
        bytes.extend_from_slice(piece);
        if bytes.len() % 2 == 1 {
            self.odd = bytes.pop();
        }
        let samples: Vec<i16> = bytes
            .chunks_exact(2)
            .map(|pair| i16::from_le_bytes([pair[0], pair[1]]))
            .collect();
        Bytes::from(mulaw::encode_slice(&self.resampler.push(&samples)))
    }

    fn finish(&mut self) -> Bytes {
        Bytes::from(mulaw::encode_slice(&self.resampler.finish()))
    }
}

/// The µ-law stream of a PCM stream; the resampler's tail comes after the last piece.
fn to_mulaw(pcm: AudioStream, from_hz: u32) -> AudioStream {
    let converter = PcmToMulaw {
        resampler: Resampler::new(from_hz, 8_000),
        odd: None,
    };
    let stream = futures::stream::unfold(Some((pcm, converter)), |state| async move {
        let (mut pcm, mut converter) = state?;
        loop {
            match pcm.next().await {
                Some(Ok(piece)) => {
                    let out = converter.push(&piece);
                    if !out.is_empty() {
                        return Some((Ok(out), Some((pcm, converter))));
                    }
                }
                Some(Err(error)) => return Some((Err(error), None)),
                None => {
                    let tail = converter.finish();
                    return (!tail.is_empty()).then_some((Ok(tail), None));
                }
            }
        }
    });
    Box::pin(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Converting a PCM body piece by piece (odd sizes split samples) gives the µ-law of the
    /// whole body converted at once.
    #[tokio::test]
    async fn pcm_pieces_convert_as_the_whole_body() {
        let samples: Vec<i16> = (0..2_400)
            .map(|i| {
                ((f64::from(i) / 24_000.0 * 2.0 * std::f64::consts::PI * 300.0).sin() * 9_000.0)
                    as i16
            })
            .collect();
        let body: Vec<u8> = samples.iter().flat_map(|s| s.to_le_bytes()).collect();
        let whole = mulaw::encode_slice(&sb_audio::resample::resample(&samples, 24_000, 8_000));
        for size in [1usize, 3, 641, 4_800] {
            let pieces: Vec<Result<Bytes, TtsError>> = body
                .chunks(size)
                .map(|c| Ok(Bytes::copy_from_slice(c)))
                .collect();
            let stream: AudioStream = Box::pin(futures::stream::iter(pieces));
            let out: Vec<u8> = to_mulaw(stream, 24_000)
                .map(|piece| piece.unwrap().to_vec())
                .concat()
                .await;
            assert_eq!(out, whole, "pieces of {size} bytes");
        }
    }
}
